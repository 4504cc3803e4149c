/** A hand-written SVG bar chart: median msgs/s per contender with min–max whiskers. */
import type { BenchReport } from "./report.ts";

const WIDTH = 560;
const HEIGHT = 340;
const PLOT = { left: 70, right: 20, top: 50, bottom: 50 };
const COLORS: Record<string, string> = { ceiling: "#9aa5b1", octorelay: "#2f7ed8", peer: "#e8833a" };

const round = (v: number) => Math.round(v * 10) / 10;
const xmlText = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** A round axis maximum: 1, 2 or 5 × 10^k just above `value`. */
function niceMax(value: number): number {
  const power = 10 ** Math.floor(Math.log10(Math.max(1, value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

export function throughputSvg(report: BenchReport): string {
  const bars = (["ceiling", "octorelay", "peer"] as const).flatMap((kind) => {
    const s = report.main.summary[kind];
    return s && Number.isFinite(s.msgsPerSec.median) ? [{ kind, ...s.msgsPerSec }] : [];
  });
  const top = niceMax(Math.max(1, ...bars.map((b) => b.max)) * 1.05);
  const plotWidth = WIDTH - PLOT.left - PLOT.right;
  const plotHeight = HEIGHT - PLOT.top - PLOT.bottom;
  const y = (v: number) => round(PLOT.top + plotHeight - (v / top) * plotHeight);
  const slot = plotWidth / Math.max(1, bars.length);
  const barWidth = round(slot * 0.5);
  const t = report.settings.traffic;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#fff"/>`,
    `<text x="${WIDTH / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">Messages per second (median, min–max whiskers)</text>`,
    `<text x="${WIDTH / 2}" y="40" text-anchor="middle" fill="#555">${xmlText(
      `${report.settings.messages.toLocaleString("en-US")} msgs, ${t.sizeBytes} B, ${t.accounts.toLocaleString("en-US")} accounts, ${report.settings.rounds} rounds, ${report.machine.cores} cores, Node ${report.machine.node}`,
    )}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const v = (top / 5) * i;
    parts.push(
      `<line x1="${PLOT.left}" x2="${WIDTH - PLOT.right}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e5e5"/>`,
      `<text x="${PLOT.left - 8}" y="${y(v) + 4}" text-anchor="end" fill="#555">${Math.round(v).toLocaleString("en-US")}</text>`,
    );
  }
  bars.forEach((b, i) => {
    const cx = round(PLOT.left + slot * i + slot / 2);
    const x = round(cx - barWidth / 2);
    parts.push(
      `<rect x="${x}" y="${y(b.median)}" width="${barWidth}" height="${y(0) - y(b.median)}" fill="${COLORS[b.kind]}"/>`,
      `<line x1="${cx}" x2="${cx}" y1="${y(b.min)}" y2="${y(b.max)}" stroke="#222" stroke-width="1.5"/>`,
      `<line x1="${cx - 8}" x2="${cx + 8}" y1="${y(b.min)}" y2="${y(b.min)}" stroke="#222" stroke-width="1.5"/>`,
      `<line x1="${cx - 8}" x2="${cx + 8}" y1="${y(b.max)}" y2="${y(b.max)}" stroke="#222" stroke-width="1.5"/>`,
      `<text x="${cx + barWidth / 2 + 4}" y="${y(b.median) + 4}" fill="#222">${Math.round(b.median).toLocaleString("en-US")}</text>`,
      `<text x="${cx}" y="${HEIGHT - PLOT.bottom + 20}" text-anchor="middle" font-weight="bold">${b.kind}</text>`,
    );
  });
  const ceiling = bars.find((b) => b.kind === "ceiling");
  if (ceiling) {
    // The target: octorelay at 80% of the ceiling or more.
    const target = y(ceiling.median * 0.8);
    parts.push(
      `<line x1="${PLOT.left}" x2="${WIDTH - PLOT.right}" y1="${target}" y2="${target}" stroke="#2f7ed8" stroke-dasharray="6 4"/>`,
      `<text x="${WIDTH - PLOT.right}" y="${target - 5}" text-anchor="end" fill="#2f7ed8">target: 80% of ceiling</text>`,
    );
  }
  parts.push(
    `<line x1="${PLOT.left}" x2="${WIDTH - PLOT.right}" y1="${y(0)}" y2="${y(0)}" stroke="#222"/>`,
    `<text x="${WIDTH / 2}" y="${HEIGHT - 10}" text-anchor="middle" fill="#777">${xmlText(report.startedAt.slice(0, 10))} · ${xmlText(report.machine.cpu)}</text>`,
    "</svg>",
  );
  return `${parts.join("\n")}\n`;
}

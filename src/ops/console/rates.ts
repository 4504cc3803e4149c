/**
 * Rates over the last minutes, from the same relay counters /metrics reads: a ring of one sample a
 * second per queue (a few KB per queue, whatever the traffic), turned into per-second rates and a
 * small server-rendered SVG chart.
 */
import type { RelayCounters } from "../../pipeline/counters.ts";

/** The counters the overview shows as rates, named as the console shows them. */
export const RATE_SERIES = [
  { key: "received", label: "received", pick: (s: Readonly<RelayCounters>) => s.received },
  { key: "delivered", label: "delivered (deleted)", pick: (s: Readonly<RelayCounters>) => s.deleted },
  { key: "deadLettered", label: "dead-lettered", pick: (s: Readonly<RelayCounters>) => s.deadLettered },
  { key: "released", label: "released", pick: (s: Readonly<RelayCounters>) => s.released },
] as const;

export type RateKey = (typeof RATE_SERIES)[number]["key"];
export type Rates = Record<RateKey, number>;

interface Sample {
  atMs: number;
  counts: number[];
}

/** One queue's ring of samples, oldest first once full. */
class Ring {
  readonly #samples: (Sample | undefined)[];
  #next = 0;
  #size = 0;

  constructor(capacity: number) {
    this.#samples = new Array(capacity);
  }

  push(sample: Sample): void {
    this.#samples[this.#next] = sample;
    this.#next = (this.#next + 1) % this.#samples.length;
    this.#size = Math.min(this.#size + 1, this.#samples.length);
  }

  /** Oldest first. */
  all(): Sample[] {
    const out: Sample[] = [];
    const cap = this.#samples.length;
    for (let i = 0; i < this.#size; i++) {
      const s = this.#samples[(this.#next - this.#size + i + cap) % cap];
      if (s) out.push(s);
    }
    return out;
  }
}

export interface RateSource {
  readonly relays: readonly { options: { name: string }; stats: Readonly<RelayCounters> }[];
}

/** Samples every relay's counters each `intervalMs`, keeping `historySec` seconds. */
export class RateHistory {
  readonly #source: RateSource;
  readonly #intervalMs: number;
  readonly #rings = new Map<string, Ring>();
  readonly #capacity: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(source: RateSource, options: { intervalMs?: number; historySec?: number } = {}) {
    this.#source = source;
    this.#intervalMs = options.intervalMs ?? 1000;
    this.#capacity = Math.ceil(((options.historySec ?? 300) * 1000) / this.#intervalMs) + 1;
  }

  start(): void {
    if (this.#timer) return;
    this.sample();
    // Unref'd: the sampler never keeps a stopping process alive.
    this.#timer = setInterval(() => this.sample(), this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  sample(nowMs = Date.now()): void {
    for (const relay of this.#source.relays) {
      let ring = this.#rings.get(relay.options.name);
      if (!ring) {
        ring = new Ring(this.#capacity);
        this.#rings.set(relay.options.name, ring);
      }
      ring.push({ atMs: nowMs, counts: RATE_SERIES.map((s) => s.pick(relay.stats)) });
    }
  }

  /** Per-second rates over the last `windowSec` (or what history there is); undefined before two samples. */
  ratesNow(queue: string, windowSec = 5): Rates | undefined {
    const samples = this.#rings.get(queue)?.all() ?? [];
    const last = samples.at(-1);
    if (!last || samples.length < 2) return undefined;
    const from =
      samples.find((s) => s.atMs >= last.atMs - windowSec * 1000 - this.#intervalMs / 2) ?? samples[0];
    if (!from || from === last) return undefined;
    const seconds = (last.atMs - from.atMs) / 1000;
    const rates = {} as Rates;
    RATE_SERIES.forEach((s, i) => {
      rates[s.key] = Math.max(0, ((last.counts[i] ?? 0) - (from.counts[i] ?? 0)) / seconds);
    });
    return rates;
  }

  /** Each series' per-second rate between consecutive samples, oldest first, with the span covered. */
  series(queue: string): { spanSec: number; values: Record<RateKey, number[]> } {
    const samples = this.#rings.get(queue)?.all() ?? [];
    const values = Object.fromEntries(RATE_SERIES.map((s) => [s.key, [] as number[]])) as Record<
      RateKey,
      number[]
    >;
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1] as Sample;
      const b = samples[i] as Sample;
      const seconds = Math.max(0.001, (b.atMs - a.atMs) / 1000);
      RATE_SERIES.forEach((s, j) => {
        values[s.key].push(Math.max(0, ((b.counts[j] ?? 0) - (a.counts[j] ?? 0)) / seconds));
      });
    }
    const first = samples[0];
    const last = samples.at(-1);
    return { spanSec: first && last ? (last.atMs - first.atMs) / 1000 : 0, values };
  }

  get historySec(): number {
    return ((this.#capacity - 1) * this.#intervalMs) / 1000;
  }
}

export interface Chart {
  width: number;
  height: number;
  /** Plot area inside the axes. */
  plot: { x: number; y: number; width: number; height: number };
  yMax: number;
  grid: { y: number; label: string }[];
  xLabels: { x: number; anchor: "start" | "middle" | "end"; label: string }[];
  lines: { key: RateKey; label: string; points: string; last: number }[];
  empty: boolean;
}

/** 1, 2, 5 × 10^k at or above `value`: axis maxima a reader can read. */
export function niceCeiling(value: number): number {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

const compact = (n: number) =>
  n >= 1e6 ? `${+(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${+(n / 1e3).toFixed(1)}k` : `${+n.toFixed(1)}`;

/**
 * The SVG geometry of a rate chart: the newest point at the right edge, the history so far (whole
 * minutes, at most `historySec`) across, y from 0 to a round maximum. Pure: the template only draws
 * what this returns.
 */
export function rateChart(
  series: { spanSec: number; values: Record<RateKey, number[]> },
  options: { historySec: number; width?: number; height?: number },
): Chart {
  const width = options.width ?? 640;
  const height = options.height ?? 150;
  const plot = { x: 44, y: 8, width: width - 52, height: height - 30 };
  const all = RATE_SERIES.flatMap((s) => series.values[s.key]);
  const yMax = niceCeiling(Math.max(0, ...all));
  const toY = (v: number) => plot.y + plot.height - (v / yMax) * plot.height;
  // The window grows with the history, a minute at a time: a fresh start is not a sliver at the edge.
  const windowSec = Math.min(options.historySec, Math.max(60, Math.ceil(series.spanSec / 60) * 60));
  const stepX = plot.width / windowSec;
  const lines = RATE_SERIES.map((s) => {
    const values = series.values[s.key];
    const points = values
      .map((v, i) => {
        const x = plot.x + plot.width - (values.length - 1 - i) * stepX;
        return `${x.toFixed(1)},${toY(v).toFixed(1)}`;
      })
      .join(" ");
    return { key: s.key, label: s.label, points, last: values.at(-1) ?? 0 };
  });
  const grid = [0, 0.5, 1].map((f) => ({ y: toY(yMax * f), label: `${compact(yMax * f)}/s` }));
  const minutes = windowSec / 60;
  const xLabels = [0, 0.5, 1].map((f) => ({
    x: plot.x + plot.width * f,
    anchor: (f === 0 ? "start" : f === 1 ? "end" : "middle") as "start" | "middle" | "end",
    label: f === 1 ? "now" : `−${+(minutes * (1 - f)).toFixed(1)} min`,
  }));
  return { width, height, plot, yMax, grid, xLabels, lines, empty: all.length === 0 };
}

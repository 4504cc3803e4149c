/**
 * deploy/grafana-dashboard.json queries only what octorelay exports: every metric name in its
 * queries (and its variables) is in a real /metrics scrape of a running service that relayed
 * traffic, and every label it filters or groups by is on that metric.
 */
import { readFileSync } from "node:fs";
import { S3Client } from "@aws-sdk/client-s3";
import { SQSClient } from "@aws-sdk/client-sqs";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Metrics } from "../../src/ops/metrics.ts";
import { type OpsServer, startOpsServer } from "../../src/ops/ops-server.ts";
import { Service } from "../../src/service.ts";
import {
  createBucket,
  createQueue,
  type Emulator,
  sendBodies,
  startEmulator,
  waitFor,
} from "../helpers/emulator.ts";
import { sampleHandler, testConfig } from "../helpers/service.ts";

const DASHBOARD = new URL("../../deploy/grafana-dashboard.json", import.meta.url);
/** Grafana's datasource variable, as panels reference it. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's syntax, not a JavaScript template
const DATASOURCE = "${datasource}";

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid: string };
  targets?: { expr: string; datasource?: { uid: string } }[];
  gridPos: { x: number; y: number; w: number; h: number };
}

interface Dashboard {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: string | { query: string } }[] };
}

/** Every query of the dashboard, with where it is (for the failure message). */
function queries(d: Dashboard): { where: string; expr: string }[] {
  const out = d.panels.flatMap((p) =>
    (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr })),
  );
  for (const v of d.templating.list) {
    if (v.type !== "query") continue;
    out.push({ where: `variable $${v.name}`, expr: typeof v.query === "string" ? v.query : v.query.query });
  }
  return out;
}

/** Label names per metric name, from the samples of a scrape. */
function scrapedLabels(text: string): Map<string, Set<string>> {
  const metrics = new Map<string, Set<string>>();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+$/.exec(line);
    if (!m) continue;
    const labels = metrics.get(m[1] as string) ?? new Set<string>();
    for (const l of (m[2] ?? "").matchAll(/(\w+)="/g)) labels.add(l[1] as string);
    metrics.set(m[1] as string, labels);
  }
  return metrics;
}

let emu: Emulator;
let service: Service;
let ops: OpsServer;

beforeAll(async () => {
  emu = await startEmulator();
  const queue = await createQueue(emu);
  const bucket = await createBucket(emu);
  const config = testConfig(emu, {
    destination: { bucket },
    queues: [
      {
        queue: queue.name,
        handler: sampleHandler("passthrough.ts"),
        waitTimeSec: 1,
        deadLetterQueue: queue.dlqName,
      },
    ],
  });
  // Clients of its own: the metrics middleware must not count the test's own calls.
  const sqs = new SQSClient({ region: emu.region, endpoint: emu.endpoint, useQueueUrlAsEndpoint: false });
  const s3 = new S3Client({ region: emu.region, endpoint: emu.endpoint, forcePathStyle: true });
  const log = pino({ level: "silent" });
  service = new Service({ sqs, s3, log, env: {} }, config);
  const metrics = new Metrics(service, config.ops);
  metrics.instrument(sqs, "sqs");
  metrics.instrument(s3, "s3");
  await service.start();
  ops = await startOpsServer({ service, metrics, log }, { host: "127.0.0.1", port: 0 });
  // Traffic through every stage the dashboard shows: handled, delivered (a flush), and dead-lettered.
  await sendBodies(emu, queue.url, [{ account: "acme" }, { account: "globex" }, { no: "account" }]);
  await waitFor("traffic relayed", () => service.relays[0]?.stats.deleted === 3);
});

afterAll(async () => {
  await ops?.close();
  await service?.stop(AbortSignal.timeout(10_000));
  await emu?.stop();
});

describe("deploy/grafana-dashboard.json", () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as Dashboard;

  it("queries only metrics and labels a running service exports", async () => {
    const scraped = scrapedLabels(await (await fetch(`${ops.url}/metrics`)).text());
    const all = queries(dashboard);
    expect(all.length).toBeGreaterThan(20);
    const problems: string[] = [];
    for (const { where, expr } of all) {
      const names = [...expr.matchAll(/\b(octorelay_[a-zA-Z0-9_]+)\b/g)].map((m) => m[1] as string);
      if (names.length === 0) problems.push(`${where}: queries no octorelay metric: ${expr}`);
      for (const name of names) if (!scraped.has(name)) problems.push(`${where}: ${name} is not in /metrics`);
      // Labels filtered on must be on that metric.
      for (const m of expr.matchAll(/\b(octorelay_[a-zA-Z0-9_]+)\{([^}]*)\}/g)) {
        for (const l of (m[2] as string).matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) {
          if (!scraped.get(m[1] as string)?.has(l[1] as string)) {
            problems.push(`${where}: ${m[1]} has no label ${l[1]}`);
          }
        }
      }
      // Labels grouped by must be on at least one metric of the query.
      const onAny = new Set(names.flatMap((n) => [...(scraped.get(n) ?? [])]));
      for (const m of expr.matchAll(/\bby\s*\(([^)]*)\)/g)) {
        for (const label of (m[1] as string)
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean)) {
          if (!onAny.has(label)) problems.push(`${where}: no metric of the query has the label ${label}`);
        }
      }
      const variable = /label_values\((\w+),\s*(\w+)\)/.exec(expr);
      if (variable && !scraped.get(variable[1] as string)?.has(variable[2] as string)) {
        problems.push(`${where}: ${variable[1]} has no label ${variable[2]}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it("is a dashboard Grafana imports: unique panel ids, the datasource variable everywhere, no overlapping panels", () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(["datasource", "queue"]);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      if (p.type !== "row") {
        expect(p.datasource?.uid, p.title).toBe(DATASOURCE);
        for (const t of p.targets ?? []) expect(t.datasource?.uid, p.title).toBe(DATASOURCE);
      }
      const { x, y, w, h } = p.gridPos;
      expect(x + w, p.title).toBeLessThanOrEqual(24);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          expect(cells.has(`${i},${j}`), `${p.title} overlaps another panel at ${i},${j}`).toBe(false);
          cells.add(`${i},${j}`);
        }
      }
    }
  });
});

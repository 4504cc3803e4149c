/**
 * The overview's numbers, per queue. Everything octorelay counts is read where /metrics reads it
 * (the relay's stats and gauges, src/ops/metrics.ts), and each number carries the metric name it equals,
 * so the page and a scrape can be compared. Queue depths come from SQS (GetQueueAttributes), cached
 * for a few seconds so that a console left open, or many, cost SQS almost nothing.
 */
import { GetQueueAttributesCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { RelayCounters } from "../../pipeline/counters.ts";
import { type Chart, RATE_SERIES, type RateHistory, type Rates, rateChart } from "./rates.ts";

export type QueueDepth =
  | { ok: true; visible: number; inFlight: number; delayed: number; atMs: number }
  | { ok: false; error: string; atMs: number };

/** GetQueueAttributes per queue URL, at most once per `ttlMs`, one call in flight per URL. */
export class QueueDepths {
  readonly #sqs: SQSClient;
  readonly #ttlMs: number;
  readonly #cache = new Map<string, { atMs: number; depth: Promise<QueueDepth> }>();

  constructor(sqs: SQSClient, options: { ttlMs?: number } = {}) {
    this.#sqs = sqs;
    this.#ttlMs = options.ttlMs ?? 5000;
  }

  get(queueUrl: string, nowMs = Date.now()): Promise<QueueDepth> {
    const cached = this.#cache.get(queueUrl);
    if (cached && nowMs - cached.atMs < this.#ttlMs) return cached.depth;
    const depth = this.#read(queueUrl, nowMs);
    this.#cache.set(queueUrl, { atMs: nowMs, depth });
    return depth;
  }

  /** After an action changed the queue (a redrive), the next look asks SQS again. */
  forget(queueUrl: string): void {
    this.#cache.delete(queueUrl);
  }

  async #read(queueUrl: string, atMs: number): Promise<QueueDepth> {
    try {
      const out = await this.#sqs.send(
        new GetQueueAttributesCommand({
          QueueUrl: queueUrl,
          AttributeNames: [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
          ],
        }),
        { abortSignal: AbortSignal.timeout(5000) },
      );
      const a = out.Attributes ?? {};
      return {
        ok: true,
        visible: Number(a.ApproximateNumberOfMessages ?? 0),
        inFlight: Number(a.ApproximateNumberOfMessagesNotVisible ?? 0),
        delayed: Number(a.ApproximateNumberOfMessagesDelayed ?? 0),
        atMs,
      };
    } catch (err) {
      return { ok: false, error: (err as Error).name || "error", atMs };
    }
  }
}

/** What the overview reads of one relay: the members /metrics reads. */
export interface RelayView {
  options: { name: string; concurrency: number; maxUnacked: number };
  stats: Readonly<RelayCounters>;
  unacked: number;
  unackedBytes: number;
  maxUnackedBytes: number;
  handlersRunning: number;
  activeDispatchers: number;
  oldestUnackedAtMs(): number | undefined;
}

/** One number on the page and the Prometheus series it equals. */
export interface MetricCell {
  label: string;
  metric: string;
  value: number;
  shown: string;
}

export interface QueueOverview {
  name: string;
  depth: QueueDepth | undefined;
  deadLetter: { name: string; depth: QueueDepth } | undefined;
  rates: Rates | undefined;
  totals: MetricCell[];
  unacked: MetricCell & { budget: number; pct: number };
  unackedBytes: MetricCell & { budget: number; budgetShown: string; pct: number };
  oldestUnacked: MetricCell;
  pool: MetricCell & { running: number; concurrency: number; pct: number };
  dispatchers: MetricCell;
  chart: Chart;
}

const TOTALS: [label: string, metric: string, pick: (s: Readonly<RelayCounters>) => number][] = [
  ["received", "octorelay_messages_received_total", (s) => s.received],
  ["delivered (deleted)", "octorelay_messages_deleted_total", (s) => s.deleted],
  ["dead-lettered", "octorelay_messages_dead_lettered_total", (s) => s.deadLettered],
  ["released", "octorelay_messages_released_total", (s) => s.released],
  ["shed", "octorelay_messages_shed_total", (s) => s.shed],
  ["handler failures", "octorelay_messages_failed_total", (s) => s.handlerFailures],
  ["outputs", "octorelay_outputs_total", (s) => s.outputs],
  ["records parked", "octorelay_records_parked_total", (s) => s.parkedRecords],
];

export const count = (n: number): string => Math.round(n).toLocaleString("en-US");

export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export const rate = (perSec: number | undefined): string =>
  perSec === undefined ? "—" : perSec >= 100 ? count(perSec) : perSec.toFixed(1);

const pct = (part: number, whole: number) =>
  whole > 0 ? Math.min(100, Math.round((part / whole) * 100)) : 0;

export function queueOverview(
  relay: RelayView,
  extra: {
    depth: QueueDepth | undefined;
    deadLetter: { name: string; depth: QueueDepth } | undefined;
    history: RateHistory;
    nowMs: number;
  },
): QueueOverview {
  const s = relay.stats;
  const oldest = relay.oldestUnackedAtMs();
  // As metrics.ts computes it: 0 when nothing is held.
  const oldestSec = oldest === undefined ? 0 : (extra.nowMs - oldest) / 1000;
  const poolRatio = relay.handlersRunning / relay.options.concurrency;
  return {
    name: relay.options.name,
    depth: extra.depth,
    deadLetter: extra.deadLetter,
    rates: extra.history.ratesNow(relay.options.name),
    totals: TOTALS.map(([label, metric, pick]) => ({ label, metric, value: pick(s), shown: count(pick(s)) })),
    unacked: {
      label: "un-acked",
      metric: "octorelay_unacked_messages",
      value: relay.unacked,
      shown: count(relay.unacked),
      budget: relay.options.maxUnacked,
      pct: pct(relay.unacked, relay.options.maxUnacked),
    },
    unackedBytes: {
      label: "un-acked bytes",
      metric: "octorelay_unacked_bytes",
      value: relay.unackedBytes,
      shown: bytes(relay.unackedBytes),
      budget: relay.maxUnackedBytes,
      budgetShown: bytes(relay.maxUnackedBytes),
      pct: pct(relay.unackedBytes, relay.maxUnackedBytes),
    },
    oldestUnacked: {
      label: "oldest un-acked",
      metric: "octorelay_oldest_unacked_age_seconds",
      value: oldestSec,
      shown: oldest === undefined ? "none held" : duration(oldestSec * 1000),
    },
    pool: {
      label: "handler pool",
      metric: "octorelay_pool_utilization",
      value: poolRatio,
      shown: `${relay.handlersRunning} / ${relay.options.concurrency}`,
      running: relay.handlersRunning,
      concurrency: relay.options.concurrency,
      pct: pct(relay.handlersRunning, relay.options.concurrency),
    },
    dispatchers: {
      label: "dispatchers",
      metric: "octorelay_dispatchers_active",
      value: relay.activeDispatchers,
      shown: count(relay.activeDispatchers),
    },
    chart: rateChart(extra.history.series(relay.options.name), { historySec: extra.history.historySec }),
  };
}

export const RATE_LEGEND = RATE_SERIES.map((s) => ({ key: s.key, label: s.label }));

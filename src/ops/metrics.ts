import type { S3Client } from "@aws-sdk/client-s3";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { AwsClients } from "../aws-clients.ts";
import type { OpsConfig } from "../config.ts";
import type { RelayCounters } from "../pipeline/counters.ts";
import type { Service } from "../service.ts";

type Read = () => Iterable<[Record<string, string>, number]>;
const OTHER = "_other";

/**
 * Prometheus metrics for a running service, from each relay's events (src/pipeline/events.ts). The
 * per-queue totals are the relay's counters (a subscriber kept since the relay was built, so they are
 * whole however late this is built, and equal to what the console shows), read when scraped; the
 * labelled flush counter and the histograms are updated by this object's own listeners. AWS calls
 * are counted by SDK middleware, per client: a client serves every queue. Per-partner series are bounded: the top N partners by what they hold, plus the listed
 * ones, get their own `account` label; all others are summed under account="_other".
 */
export class Metrics {
  readonly registry = new Registry();
  readonly #awsCalls: Counter;
  readonly #awsSeconds: Histogram;
  /** Errors of the partner limits store's client (set by observeLimitsStore; none in memory). */
  #limitsErrors: () => number = () => 0;

  constructor(service: Service, options: Pick<OpsConfig, "partnerMetricsTop" | "partnerMetricsAccounts">) {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: "octorelay_process_" });
    const perQueue = (pick: (s: Readonly<RelayCounters>) => number): Read =>
      function* () {
        for (const relay of service.relays) yield [{ queue: relay.options.name }, pick(relay.stats)];
      };
    const counters: [string, string, (s: Readonly<RelayCounters>) => number][] = [
      ["messages_received_total", "Messages received from SQS.", (s) => s.received],
      ["messages_handled_total", "Messages whose handler returned.", (s) => s.handled],
      [
        "messages_failed_total",
        "Handler failures (thrown, timed out, crashed, poison).",
        (s) => s.handlerFailures,
      ],
      [
        "messages_dead_lettered_total",
        "Messages sent to the dead-letter queue by octorelay.",
        (s) => s.deadLettered,
      ],
      [
        "dead_letters_trimmed_total",
        "Dead-lettered copies whose reason was shortened or sender attributes dropped to fit SQS's limits.",
        (s) => s.deadLetterTrimmed,
      ],
      [
        "dead_letters_without_reason_total",
        "Dead-lettered without octorelay attributes (the body left no room); the reason is only in the log.",
        (s) => s.deadLetterWithoutReason,
      ],
      ["messages_deleted_total", "Messages deleted after delivery.", (s) => s.deleted],
      ["messages_released_total", "Messages given back to SQS (retry, shed, shutdown).", (s) => s.released],
      ["messages_shed_total", "Messages released because their partner held its share.", (s) => s.shed],
      [
        "messages_released_after_stop_total",
        "Messages long polls returned after the stop began, released at once.",
        (s) => s.releasedAfterStop,
      ],
      ["messages_duplicate_receives_total", "Copies of messages already held.", (s) => s.duplicatesHeld],
      ["delete_failures_total", "Messages whose delete failed for good.", (s) => s.deleteFailures],
      ["outputs_total", "Handler outputs routed to dispatchers.", (s) => s.outputs],
      ["records_parked_total", "Records parked in S3 for a partner that was down.", (s) => s.parkedRecords],
      ["visibility_extensions_total", "Visibility heartbeats sent.", (s) => s.visibilityExtended],
      ["dispatchers_spawned_total", "Dispatchers spawned.", (s) => s.dispatchersSpawned],
    ];
    for (const [name, help, pick] of counters) counter(r, name, help, ["queue"], perQueue(pick));
    gauge(r, "unacked_messages", "Received and not yet deleted.", ["queue"], function* () {
      for (const relay of service.relays) yield [{ queue: relay.options.name }, relay.unacked];
    });
    gauge(
      r,
      "unacked_bytes",
      "Body bytes (UTF-8) of the messages received and not yet deleted or released.",
      ["queue"],
      function* () {
        for (const relay of service.relays) yield [{ queue: relay.options.name }, relay.unackedBytes];
      },
    );
    gauge(
      r,
      "unacked_bytes_budget",
      "maxUnackedBytes: no receive while unacked_bytes is at it.",
      ["queue"],
      function* () {
        for (const relay of service.relays) yield [{ queue: relay.options.name }, relay.maxUnackedBytes];
      },
    );
    gauge(
      r,
      "oldest_unacked_age_seconds",
      "Age of the oldest un-acknowledged message.",
      ["queue"],
      function* () {
        const now = Date.now();
        for (const relay of service.relays) {
          const oldest = relay.oldestUnackedAtMs();
          yield [{ queue: relay.options.name }, oldest === undefined ? 0 : (now - oldest) / 1000];
        }
      },
    );
    gauge(r, "pool_utilization", "Running handlers / concurrency.", ["queue"], function* () {
      for (const relay of service.relays)
        yield [{ queue: relay.options.name }, relay.handlersRunning / relay.options.concurrency];
    });
    gauge(r, "dispatchers_active", "Dispatchers alive now.", ["queue"], function* () {
      for (const relay of service.relays) yield [{ queue: relay.options.name }, relay.activeDispatchers];
    });

    const handlerSeconds = new Histogram({
      name: "octorelay_handler_duration_seconds",
      help: "Handler run time.",
      labelNames: ["queue", "outcome"],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [r],
    });
    const flushes = new Counter({
      name: "octorelay_flushes_total",
      help: "Flushes by destination and outcome.",
      labelNames: ["queue", "destination", "outcome"],
      registers: [r],
    });
    const flushSeconds = new Histogram({
      name: "octorelay_flush_duration_seconds",
      help: "Flush time by destination and outcome (limits and breaker waits included).",
      labelNames: ["destination", "outcome"],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [r],
    });
    const flushRecords = new Histogram({
      name: "octorelay_flush_records",
      help: "Records per delivered flush.",
      labelNames: ["destination"],
      buckets: [1, 5, 10, 50, 100, 500, 1000, 5000],
      registers: [r],
    });
    const flushBytes = new Histogram({
      name: "octorelay_flush_bytes",
      help: "Uncompressed bytes per delivered flush.",
      labelNames: ["destination"],
      buckets: [1e3, 1e4, 1e5, 1e6, 5e6],
      registers: [r],
    });
    for (const relay of service.relays) {
      const queue = relay.options.name;
      relay.events.on("handled", (e) => handlerSeconds.observe({ queue, outcome: e.outcome }, e.seconds));
      relay.events.on("flushed", (e) => {
        const { destination, outcome } = e;
        flushes.inc({ queue, destination, outcome });
        flushSeconds.observe({ destination, outcome }, e.seconds);
        if (outcome !== "failed") {
          flushRecords.observe({ destination }, e.records);
          flushBytes.observe({ destination }, e.bytes);
        }
      });
    }

    // One snapshot of the partners serves every partner metric of a scrape (they are collected one
    // after the other within a few milliseconds), not one pass over thousands of partners each.
    type Row = { held: number; oldestSec: number; breakerOpen: number; parked: number };
    let scrape: { atMs: number; states: Map<string, number>; rows: Map<string, Row> } | undefined;
    const partnerRows = () => {
      const now = Date.now();
      if (scrape && now - scrape.atMs < 1000) return scrape;
      const snapshots = service.partnerSnapshots(now);
      const listed = new Set(options.partnerMetricsAccounts);
      const top = new Set(
        [...snapshots]
          .sort((a, b) => b.buffered + b.inFlight - (a.buffered + a.inFlight))
          .slice(0, options.partnerMetricsTop)
          .map((s) => s.account),
      );
      const states = new Map<string, number>([
        ["active", 0],
        ["idle", 0],
        ["breaker-open", 0],
        ["parked", 0],
      ]);
      const rows = new Map<string, Row>();
      for (const s of snapshots) {
        states.set(s.state, (states.get(s.state) ?? 0) + 1);
        const account = top.has(s.account) || listed.has(s.account) ? s.account : OTHER;
        const row = rows.get(account) ?? { held: 0, oldestSec: 0, breakerOpen: 0, parked: 0 };
        row.held += s.buffered + s.inFlight;
        row.oldestSec = Math.max(row.oldestSec, (s.oldestBufferedAgeMs ?? 0) / 1000);
        row.breakerOpen += s.state === "breaker-open" ? 1 : 0;
        row.parked += s.parkedBatches;
        rows.set(account, row);
      }
      scrape = { atMs: now, states, rows };
      return scrape;
    };
    gauge(r, "partners", "Partners known to this process, by state.", ["state"], function* () {
      for (const [state, n] of partnerRows().states) yield [{ state }, n];
    });
    const perPartner: [string, string, (row: Row) => number][] = [
      ["partner_held_records", "Records buffered or in flight for a partner.", (x) => x.held],
      [
        "partner_oldest_buffered_age_seconds",
        "Age of a partner's oldest buffered record.",
        (x) => x.oldestSec,
      ],
      ["partner_breaker_open", "Partners whose breaker is open (1 per partner).", (x) => x.breakerOpen],
      ["partner_parked_batches", "Batches parked by this process and not yet replayed.", (x) => x.parked],
    ];
    for (const [name, help, pick] of perPartner) {
      gauge(r, name, help, ["account"], function* () {
        for (const [account, row] of partnerRows().rows) yield [{ account }, pick(row)];
      });
    }

    // The partner limits: whether they can be granted (cluster mode: Redis reachable), and its errors.
    gauge(
      r,
      "partner_limits_up",
      "1 while the partner limits can be granted; 0 while their store (Redis, in cluster mode) is unreachable and rate-limited partners wait.",
      [],
      function* () {
        yield [{}, service.partners.limits.health().ok ? 1 : 0];
      },
    );
    const limitsErrors = () => this.#limitsErrors();
    counter(
      r,
      "partner_limits_errors_total",
      "Errors of the partner limits store's connection (failed connects, connections lost); 0 with in-memory limits.",
      [],
      function* () {
        yield [{}, limitsErrors()];
      },
    );

    this.#awsCalls = new Counter({
      name: "octorelay_aws_calls_total",
      help: "AWS calls by service, operation and outcome.",
      labelNames: ["service", "operation", "outcome"],
      registers: [r],
    });
    this.#awsSeconds = new Histogram({
      name: "octorelay_aws_call_duration_seconds",
      help: "AWS call time (long polls included).",
      labelNames: ["service", "operation"],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 20],
      registers: [r],
    });
  }

  /** Reads `octorelay_partner_limits_errors_total` from the limits layer (src/partners/cluster.ts). */
  observeLimitsStore(store: { readonly errors: number }): void {
    this.#limitsErrors = () => store.errors;
  }

  /** Counts every call of the service's clients; both SQS clients count as service "sqs". */
  instrumentClients(clients: AwsClients): void {
    this.instrument(clients.sqs, "sqs");
    this.instrument(clients.sqsPolls, "sqs");
    this.instrument(clients.s3, "s3");
  }

  /** Counts every call a client makes, through the SDK's middleware stack. */
  instrument(client: SQSClient | S3Client, service: "sqs" | "s3"): void {
    const calls = this.#awsCalls;
    const seconds = this.#awsSeconds;
    (client as SQSClient).middlewareStack.add(
      (next, context) => async (args) => {
        const operation = (context.commandName ?? "unknown").replace(/Command$/, "");
        const started = performance.now();
        try {
          const result = await next(args);
          calls.inc({ service, operation, outcome: "ok" });
          return result;
        } catch (err) {
          calls.inc({
            service,
            operation,
            outcome: (err as Error).name === "AbortError" ? "aborted" : "error",
          });
          throw err;
        } finally {
          seconds.observe({ service, operation }, (performance.now() - started) / 1000);
        }
      },
      { step: "initialize", name: "octorelayMetrics" },
    );
  }
}

function counter(registry: Registry, name: string, help: string, labelNames: string[], read: Read): void {
  new Counter({
    name: `octorelay_${name}`,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.inc(labels, value);
    },
  });
}

function gauge(registry: Registry, name: string, help: string, labelNames: string[], read: Read): void {
  new Gauge({
    name: `octorelay_${name}`,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.set(labels, value);
    },
  });
}

/**
 * octorelay itself, through the real service code path: loadConfig (no file on disk, the bench's
 * settings as overrides), the production AWS clients (with the bench's meter added to their
 * middleware stacks), the partner limits layer `octorelay start` builds (src/partners/cluster.ts: in memory,
 * or Redis in the cluster runs), and Service with the passthrough handler in its piscina pool,
 * per-account dispatchers, gzip NDJSON objects to S3, and deletes after delivery. Runs from source.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHistogram } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import type { Cluster, Redis } from "ioredis";
import { pino } from "pino";
import { createAwsClients } from "../../src/aws-clients.ts";
import { loadConfig } from "../../src/config.ts";
import { buildLimitsLayer } from "../../src/partners/cluster.ts";
import type { PartnerLimits } from "../../src/partners/partner-limits.ts";
import { Service } from "../../src/service.ts";
import { runContender } from "../lib/contender.ts";
import type { OctorelayLimits } from "../lib/protocol.ts";

const PASSTHROUGH = fileURLToPath(new URL("../../handlers/passthrough.ts", import.meta.url));

await runContender(async (spec, meter) => {
  const { limits: limitsSpec, ...queueSettings } = spec.octorelay;
  const config = loadConfig({
    env: { AWS_ENDPOINT_URL: spec.endpoint, AWS_REGION: spec.region },
    configDir: mkdtempSync(join(tmpdir(), "octorelay-bench-config-")),
    files: [],
    overrides: {
      log: { level: spec.logLevel },
      destination: { bucket: spec.bucket },
      ...limitOverrides(limitsSpec),
      queues: [{ queue: spec.queueName, handler: PASSTHROUGH, ...queueSettings }],
    },
  });
  const clients = createAwsClients(config.aws);
  meter.attachSqs(clients.sqs);
  meter.attachSqs(clients.sqsPolls);
  meter.attachS3(clients.s3);
  const log = pino({ level: config.logLevel, base: { contender: "octorelay" } }, pino.destination(2));
  const layer = buildLimitsLayer({ log }, config.cluster);
  if (!(await layer.connected(10_000))) throw new Error(`partner limits: ${layer.description} not reachable`);
  const sent = layer.redis ? countCommands(layer.redis) : undefined;
  const acquireNs = createHistogram();
  const service = new Service({ ...clients, log, limits: timed(layer.limits, acquireNs) }, config);
  await service.start();
  const relay = service.relays[0];
  if (!relay) throw new Error("the bench config declares one queue; the service has none");
  return {
    async stop() {
      await service.stop(AbortSignal.timeout(config.shutdownDeadlineMs));
      await layer.close();
    },
    activeDispatchers: () => relay.activeDispatchers,
    unacked: () => relay.unacked,
    figures: () => ({
      dispatchersSpawned: relay.stats.dispatchersSpawned,
      objects: relay.stats.flushes,
      flushedRecords: relay.stats.flushedRecords,
      flushedBytes: relay.stats.flushedBytes,
      handlerFailures: relay.stats.handlerFailures,
      deadLettered: relay.stats.deadLettered,
      released: relay.stats.released,
      ...(acquireNs.count > 0
        ? {
            limitsAcquire: {
              count: acquireNs.count,
              p50Ms: acquireNs.percentile(50) / 1e6,
              p99Ms: acquireNs.percentile(99) / 1e6,
              maxMs: acquireNs.max / 1e6,
            },
          }
        : {}),
      ...(sent ? { redisCommands: { ...sent } } : {}),
    }),
  };
});

/** Counts every command the client writes: each is one round trip (scripts go as EVALSHA, EVAL once per connection). */
function countCommands(redis: Redis | Cluster): { total: number; scripts: number } {
  const counts = { total: 0, scripts: 0 };
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
    counts.total++;
    if (command.name === "evalsha" || command.name === "eval") counts.scripts++;
    return (send as (...args: unknown[]) => unknown)(command, ...rest);
  }) as typeof redis.sendCommand;
  return counts;
}

/** The config keys of a cluster run: the store, every partner's rate limit, one HTTP partner. */
function limitOverrides(limits: OctorelayLimits | undefined): Record<string, unknown> {
  if (!limits) return {};
  const partner = limits.partner;
  return {
    dispatch: {
      ...(limits.rateLimit ? { rateLimit: limits.rateLimit } : {}),
      ...(limits.maxConcurrentFlushes ? { maxConcurrentFlushes: limits.maxConcurrentFlushes } : {}),
    },
    ...(limits.store === "redis"
      ? { cluster: { redis: { url: limits.redisUrl, keyPrefix: limits.keyPrefix } } }
      : {}),
    ...(partner
      ? {
          partners: {
            accounts: {
              [partner.account]: {
                rateLimit: partner.rateLimit,
                maxRecords: partner.maxRecords,
                destination: { type: "http", url: partner.url },
              },
            },
          },
        }
      : {}),
  };
}

/**
 * The limits, with the time each granted acquisition took recorded (ns). A proxy, so every other
 * method of the contract (whatever it grows) goes to the limits themselves.
 */
function timed(inner: PartnerLimits, histogram: ReturnType<typeof createHistogram>): PartnerLimits {
  const acquire: PartnerLimits["acquire"] = async (account, spec, records, signal) => {
    const startedNs = process.hrtime.bigint();
    const permit = await inner.acquire(account, spec, records, signal);
    histogram.record(Math.max(1, Number(process.hrtime.bigint() - startedNs)));
    return permit;
  };
  return new Proxy(inner, {
    get(target, property) {
      if (property === "acquire") return acquire;
      const value: unknown = Reflect.get(target, property, target);
      // Bound to the limits: their private fields are not reachable through the proxy.
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

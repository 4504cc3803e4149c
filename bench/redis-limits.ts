/**
 * RedisPartnerLimits against a real redis-server on loopback. Prints, asserts nothing:
 *
 *   1. one instance, many accounts, no waiting: acquisitions/s, p50/p99 acquisition latency, and
 *      Redis round trips per acquisition (every command the client sends is counted);
 *   2. three instances ("replicas", a connection each) against one HTTP partner allowed 4 requests
 *      per second: the most requests the partner saw in any 1-s window, and the fraction of the
 *      limit achieved (goal >= 80%), with the round trips each granted acquisition cost (polls included);
 *   3. the same three replicas as today, each with its own in-process WindowLimiter: what the partner saw.
 *
 *   node bench/redis-limits.ts [--seconds 10] [--accounts 1000] [--concurrency 64] [--throughput-seconds 5]
 */
import { createHash } from "node:crypto";
import { createHistogram } from "node:perf_hooks";
import { parseArgs } from "node:util";
import type { Cluster, Redis } from "ioredis";
import { pino } from "pino";
import type { LimitSpec, PartnerLimits } from "../src/partners/partner-limits.ts";
import { WindowLimiter } from "../src/partners/rate-limiter.ts";
import { createRedisClient, RedisPartnerLimits } from "../src/partners/redis-limits.ts";
import { ACQUIRE, PAUSE, PAUSE_OF, RELEASE, RENEW, RESUME } from "../src/partners/redis-scripts.ts";
import { startPartnerServer } from "../test/helpers/partner-server.ts";
import { startRedis } from "../test/helpers/redis.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    "throughput-seconds": { type: "string", default: "5" },
    accounts: { type: "string", default: "1000" },
    concurrency: { type: "string", default: "64" },
  },
});
const seconds = Number(values.seconds);
const throughputSeconds = Number(values["throughput-seconds"]);
const accounts = Number(values.accounts);
const concurrency = Number(values.concurrency);

const sha = (lua: string) => createHash("sha1").update(lua).digest("hex");
const SCRIPT_NAMES = new Map([
  [sha(ACQUIRE), "acquire"],
  [sha(RELEASE), "release"],
  [sha(RENEW), "renew"],
  [sha(PAUSE), "pause"],
  [sha(RESUME), "resume"],
  [sha(PAUSE_OF), "pauseOf"],
]);

/** Counts every command the client writes, by script name (EVALSHA/EVAL) or command name. */
function countCommands(redis: Redis | Cluster): Map<string, number> {
  const counts = new Map<string, number>();
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((command: { name: string; args: unknown[] }, ...rest: unknown[]) => {
    const name =
      command.name === "evalsha" || command.name === "eval"
        ? (SCRIPT_NAMES.get(String(command.args[0])) ?? command.name)
        : command.name;
    counts.set(name, (counts.get(name) ?? 0) + 1);
    return (send as (...args: unknown[]) => unknown)(command, ...rest);
  }) as typeof redis.sendCommand;
  return counts;
}

const log = pino({ level: "silent" });
const server = await startRedis();
const clients: (Redis | Cluster)[] = [];
const instances: RedisPartnerLimits[] = [];

async function instance(
  prefix: string,
): Promise<{ limits: RedisPartnerLimits; counts: Map<string, number> }> {
  const redis = createRedisClient(server.url);
  if (redis.status !== "ready") await new Promise((resolve) => redis.once("ready", resolve));
  clients.push(redis);
  const counts = countCommands(redis);
  const limits = new RedisPartnerLimits({ redis, log }, { keyPrefix: prefix });
  instances.push(limits);
  return { limits, counts };
}

const forever = new AbortController().signal;
const ms = (ns: number) => (ns / 1e6).toFixed(3);

try {
  // 1. Throughput and latency, nothing ever waits: the cost of the store itself.
  {
    const { limits, counts } = await instance("bench-throughput");
    const spec: LimitSpec = { requests: 1_000_000, records: 0, intervalMs: 1000, maxConcurrent: 1_000 };
    const latency = createHistogram();
    let acquisitions = 0;
    const endAt = performance.now() + throughputSeconds * 1000;
    const startedAt = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async (_, worker) => {
        for (let i = worker; performance.now() < endAt; i += concurrency) {
          const t0 = process.hrtime.bigint();
          const permit = await limits.acquire(`account-${i % accounts}`, spec, 1, forever);
          latency.record(Math.max(1, Number(process.hrtime.bigint() - t0)));
          acquisitions++;
          permit.release();
        }
      }),
    );
    const elapsedSec = (performance.now() - startedAt) / 1000;
    const acquireCalls = counts.get("acquire") ?? 0;
    const all = [...counts.values()].reduce((a, b) => a + b, 0);
    console.log(
      `1. one instance, ${accounts} accounts, ${concurrency} concurrent acquire→release loops, ${throughputSeconds} s:`,
    );
    console.log(`   acquisitions/s            ${(acquisitions / elapsedSec).toFixed(0)}`);
    console.log(
      `   acquisition latency       p50 ${ms(latency.percentile(50))} ms, p99 ${ms(latency.percentile(99))} ms`,
    );
    console.log(`   round trips / acquisition ${(acquireCalls / acquisitions).toFixed(3)} (acquire script)`);
    console.log(
      `   commands / permit         ${(all / acquisitions).toFixed(3)} (acquire + release + renewals: ${JSON.stringify(Object.fromEntries(counts))})`,
    );
  }

  // 2. Three replicas, one partner at 4 requests per second.
  const spec: LimitSpec = { requests: 4, records: 0, intervalMs: 1000, maxConcurrent: 2 };
  const runReplicas = async (label: string, replicas: { name: string; limits: PartnerLimits }[]) => {
    const partner = await startPartnerServer();
    const startAt = performance.timeOrigin + performance.now();
    const endAt = startAt + seconds * 1000;
    // Waiters still queued at the end give up then: only what arrived within the run counts.
    const stop = AbortSignal.timeout(seconds * 1000);
    let sent = 0;
    await Promise.all(
      replicas.flatMap((r) =>
        Array.from({ length: 4 }, async () => {
          while (!stop.aborted) {
            const permit = await r.limits.acquire("acme", spec, 1, stop).catch(() => undefined);
            if (!permit) continue;
            try {
              const line = JSON.stringify({ id: `m${sent++}`, account: "acme", payload: r.name });
              const res = await fetch(partner.url, { method: "POST", body: line });
              await res.arrayBuffer();
            } finally {
              permit.release();
            }
          }
        }),
      ),
    );
    const arrivals = partner.arrivals.filter((at) => at >= startAt && at < endAt).length;
    const max = partner.maxInWindow(spec.intervalMs);
    await partner.close();
    console.log(`${label}`);
    console.log(`   requests the partner got  ${arrivals} in ${seconds} s`);
    console.log(`   most in any 1-s window    ${max} (limit ${spec.requests})`);
    console.log(`   fraction of the limit     ${((100 * arrivals) / (spec.requests * seconds)).toFixed(1)}%`);
    return arrivals;
  };
  {
    const replicas = await Promise.all(
      ["r1", "r2", "r3"].map(async (name) => ({ name, ...(await instance("bench-replicas")) })),
    );
    const granted = await runReplicas(
      `2. three RedisPartnerLimits replicas × 4 senders, one partner at ${spec.requests} req/s, ${seconds} s:`,
      replicas,
    );
    const acquireCalls = replicas.reduce((sum, r) => sum + (r.counts.get("acquire") ?? 0), 0);
    console.log(
      `   round trips / acquisition ${(acquireCalls / granted).toFixed(2)} (acquire script calls per granted request, waits included)`,
    );
  }

  // 3. Today: each replica holds its own copy of the limit.
  {
    const replicas = ["r1", "r2", "r3"].map((name) => {
      const limiter = new WindowLimiter(spec.requests, spec.intervalMs);
      const limits = {
        acquire: async (_account: string, _spec: LimitSpec, records: number, signal: AbortSignal) => {
          const done = await limiter.acquire(records, signal);
          return { release: done };
        },
      } as unknown as PartnerLimits;
      return { name, limits };
    });
    await runReplicas(
      `3. before: three replicas, each its own WindowLimiter, same partner, ${seconds} s:`,
      replicas,
    );
  }
} finally {
  for (const limits of instances) await limits.close();
  for (const redis of clients) redis.disconnect();
  await server.stop();
}

/**
 * The partners' limits layer a service runs with, chosen by `cluster.redis.url`: without it, kept
 * in this process (one replica: the embedded default and the demo); with it, shared by every replica
 * through Redis (cluster mode), so a partner sees its limit, not its limit times the replicas.
 *
 * Redis being down never stops the service: partners with a rate limit wait (they are not called),
 * the others flow, and the client reconnects by itself (see RedisPartnerLimits).
 */
import type { Cluster, Redis } from "ioredis";
import type { Logger } from "pino";
import type { ClusterConfig } from "../config.ts";
import { InMemoryPartnerLimits } from "./in-memory-limits.ts";
import type { PartnerLimits } from "./partner-limits.ts";
import { createRedisClient, type LimitsHealth, RedisPartnerLimits, redactRedisUrl } from "./redis-limits.ts";

/** How long a quit may take at shutdown before the connection is simply dropped, ms. */
const QUIT_TIMEOUT_MS = 2_000;

export interface LimitsLayer {
  readonly limits: PartnerLimits;
  readonly store: "memory" | "redis";
  /** Where the limits are kept, for the start-up line; a Redis URL with its password as `***`. */
  readonly description: string;
  /** Errors the store's client reported since start (failed connects, connections lost). */
  readonly errors: number;
  /** The Redis connection in cluster mode, for instrumentation (the bench counts its commands); the layer owns it. */
  readonly redis: Redis | Cluster | undefined;
  /** Resolves true once the store answers (at once in memory), false if `timeoutMs` passed first. */
  connected(timeoutMs: number): Promise<boolean>;
  /** Calls `listener` on every change of `limits.health()`; returns the unsubscribe. */
  onHealthChange(listener: (health: LimitsHealth) => void): () => void;
  /** Closes the limits (idempotent: the service closes them after its drain), then the connection. */
  close(): Promise<void>;
}

/**
 * `cluster.redisUrl` "" keeps the limits in this process; otherwise a client of their own
 * (`cluster.mode` "cluster": a Redis Cluster client) and the lease `cluster.leaseMs`.
 */
export function buildLimitsLayer(deps: { log: Logger }, cluster: ClusterConfig): LimitsLayer {
  if (!cluster.redisUrl) {
    const limits = new InMemoryPartnerLimits();
    return {
      limits,
      store: "memory",
      description: "in this process (one replica)",
      errors: 0,
      redis: undefined,
      connected: async () => true,
      onHealthChange: () => () => {},
      close: () => limits.close(),
    };
  }
  const redis = createRedisClient(cluster.redisUrl, { log: deps.log, cluster: cluster.mode === "cluster" });
  let errors = 0;
  redis.on("error", () => {
    errors++;
  });
  // Built before the first connect, so it sees the "ready" event that makes it usable.
  const limits = new RedisPartnerLimits(
    { redis, log: deps.log },
    { keyPrefix: cluster.keyPrefix, leaseMs: cluster.leaseMs },
  );
  return {
    limits,
    store: "redis",
    description: `shared through ${redactRedisUrl(cluster.redisUrl)}${cluster.mode === "cluster" ? " (Redis Cluster)" : ""} (prefix ${cluster.keyPrefix})`,
    get errors() {
      return errors;
    },
    redis,
    connected: (timeoutMs) => whenReady(redis, timeoutMs),
    onHealthChange: (listener) => limits.onHealthChange(listener),
    async close() {
      await limits.close();
      await quit(redis);
    },
  };
}

function whenReady(redis: Redis | Cluster, timeoutMs: number): Promise<boolean> {
  if (redis.status === "ready") return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ready: boolean) => {
      clearTimeout(timer);
      redis.off("ready", onReady);
      resolve(ready);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    redis.on("ready", onReady);
  });
}

/** QUIT if connected (bounded), then drop the connection and stop reconnecting either way. */
async function quit(redis: Redis | Cluster): Promise<void> {
  if (redis.status === "ready") {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      redis.quit().catch(() => undefined),
      new Promise((resolve) => {
        timer = setTimeout(resolve, QUIT_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
  }
  redis.disconnect();
}

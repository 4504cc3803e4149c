/** The messages the orchestrator exchanges with the emulator process and the contender processes. */
import type { TrafficSpec } from "./traffic.ts";

export type ContenderKind = "ceiling" | "work-ceiling" | "octorelay" | "peer";

// ── emulator process ────────────────────────────────────────────────────────────────────────────

export type EmulatorRequest =
  | { op: "setup"; queueName: string; bucket: string }
  /** Enqueues `count` messages at once (through fauxqs's in-process API, not HTTP). */
  | { op: "fill"; queueName: string; traffic: TrafficSpec; count: number; returnIds: boolean }
  /**
   * Enqueues `count` messages over time: at `ratePerSec`, or as fast as the queue's visible backlog
   * stays under `maxBacklog`. Answers when the last one is sent.
   */
  | {
      op: "produce";
      queueName: string;
      traffic: TrafficSpec;
      count: number;
      ratePerSec?: number;
      maxBacklog?: number;
    }
  | { op: "depth"; queueName: string }
  | { op: "usage" }
  | { op: "cleanup"; queueName: string; bucket: string };

export interface EmulatorResults {
  setup: { queueUrl: string };
  fill: { count: number; ms: number; ids: string[] };
  produce: { count: number; ms: number };
  depth: { visible: number; inFlight: number; delayed: number };
  usage: { cpuSec: number; rssBytes: number };
  cleanup: Record<string, never>;
}

export type EmulatorReply =
  | { kind: "ready"; endpoint: string }
  | { kind: "reply"; id: number; ok: true; result: unknown }
  | { kind: "reply"; id: number; ok: false; error: string };

// ── contender processes ─────────────────────────────────────────────────────────────────────────

/** Octorelay's per-queue settings for the bench; printed in the report. */
export interface OctorelaySettings {
  concurrency: number;
  threads: number;
  prefetch: number;
  maxUnacked: number;
  maxParallelReceives: number;
  waitTimeSec: number;
  visibilityTimeoutSec: number;
  /** The queue's partnerShare, when not the default (the replica runs: one partner holds everything). */
  partnerShare?: number;
  dispatch: {
    flushIntervalMs: number;
    maxRecords: number;
    maxBytes: number;
    emptyFlushLimit: number;
  };
  /** The cluster runs: where the partner limits are kept, and the limits that make them work. */
  limits?: OctorelayLimits;
}

export interface OctorelayLimits {
  /** "memory": in the process (one replica); "redis": shared through `redisUrl` (cluster mode). */
  store: "memory" | "redis";
  redisUrl?: string;
  keyPrefix?: string;
  /** Every partner's rate limit (the top-level `dispatch.rateLimit`), so each flush acquires a permit. */
  rateLimit?: { requests: number; intervalMs: number };
  /** Every partner's `dispatch.maxConcurrentFlushes` (cluster-wide in Redis), when not the default. */
  maxConcurrentFlushes?: number;
  /** One partner delivered over HTTP instead of S3, with limits of its own. */
  partner?: {
    account: string;
    url: string;
    rateLimit: { requests: number; intervalMs: number };
    maxRecords: number;
  };
}

export interface ContenderSpec {
  kind: ContenderKind;
  endpoint: string;
  region: string;
  queueName: string;
  queueUrl: string;
  bucket: string;
  /**
   * "drain": done once `expected` messages are deleted. "idle": octorelay answers measure requests
   * until stop. "serve": runs until stop (a replica among others: the orchestrator knows when the
   * queue is drained, no single replica does).
   */
  mode: "drain" | "idle" | "serve";
  expected: number;
  /** The run fails when no message is deleted for this long. */
  stallTimeoutMs: number;
  sampleIntervalMs: number;
  /** Keep the periodic samples in the result (the soak). */
  keepSamples: boolean;
  logLevel: string;
  ceiling: { loops: number };
  peer: { consumers: number; deleteMode: "batch" | "message" };
  octorelay: OctorelaySettings;
  /**
   * Write a sampled allocation profile of the main thread (every allocation, collected or not)
   * from ready to the last delete to this path (.heapprofile, for DevTools).
   */
  heapProfilePath?: string;
}

export interface Sample {
  atSec: number;
  rssBytes: number;
  heapUsedBytes: number;
  /** Main-thread V8 heap committed (used or not): what the heap holds of the RSS. */
  heapTotalBytes: number;
  /** Memory of Buffers and other C++ objects tied to main-thread JS objects. */
  externalBytes: number;
  eventLoopDelayP50Ms: number;
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
  deletedPerSec: number;
  activeDispatchers: number | undefined;
}

export interface OctorelayFigures {
  peakActiveDispatchers: number;
  dispatchersSpawned: number;
  objects: number;
  flushedRecords: number;
  flushedBytes: number;
  peakUnacked: number;
  handlerFailures: number;
  deadLettered: number;
  released: number;
  stopMs: number;
  /** Time from asking the partner limits for a permit to holding it (the cluster runs). */
  limitsAcquire?: { count: number; p50Ms: number; p99Ms: number; maxMs: number };
  /** Commands the limits' Redis client sent (each one round trip; the scripts are EVALSHA/EVAL). */
  redisCommands?: { total: number; scripts: number };
}

export interface ContenderResult {
  kind: ContenderKind;
  ok: boolean;
  failure: string | undefined;
  expected: number;
  received: number;
  deleted: number;
  emptyReceives: number;
  /** Messages deleted / drainSec: the whole drain, ramp-up and last flush included. */
  msgsPerSec: number;
  /**
   * Deletes per second between the 10th and the 90th percentile of the run's deletes. Kept for
   * reference: a contender that deletes in bursts (octorelay, once per flush tick) can put both
   * percentiles in one burst on a short run, which overstates it.
   */
  steadyMsgsPerSec: number;
  /** First ReceiveMessage sent → last delete answered. */
  drainSec: number;
  calls: Record<string, number>;
  errors: Record<string, number>;
  sqsRequests: number;
  s3Puts: number;
  latencyMs: { p50: number; p99: number; max: number };
  maxRssBytes: number;
  /** User + system CPU of the whole process (worker threads included), start to exit. */
  cpuSec: number;
  /** The same from ready to the last delete. */
  drainCpuSec: number;
  /** The main thread's own CPU from ready to the last delete. */
  drainMainCpuSec: number;
  /** Share of that time the main thread's event loop was busy (not waiting for I/O), 0–1. */
  drainLoopBusy: number;
  peakHeapUsedBytes: number;
  octorelay: OctorelayFigures | undefined;
  samples: Sample[];
}

export type ToContender =
  | { type: "start"; spec: ContenderSpec }
  /** Once `deletedAtLeast` messages are deleted and `settleMs` passed: collect garbage, report the heap. */
  | { type: "measure"; deletedAtLeast: number; settleMs: number }
  | { type: "stop" };

export interface HeapMeasure {
  deleted: number;
  heapUsedBytes: number;
  activeDispatchers: number;
}

export type FromContender =
  | { type: "listening" }
  | { type: "ready" }
  | { type: "measured"; measure: HeapMeasure }
  | { type: "result"; result: ContenderResult };

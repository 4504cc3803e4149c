/**
 * The benchmark: fauxqs in its own process, each contender in its own process, the same pre-filled
 * messages for every contender, rounds in alternation, medians with min–max.
 *
 *   npm run bench                                   ceiling vs octorelay vs peer, latency, idle dispatchers
 *   npm run bench -- --sweep all --soak             and the sweeps (accounts, flush, sizes) and the
 *                                                   million-message soak
 *   npm run bench -- --only soak                    just the named sections (main, latency, idle,
 *                                                   accounts, flush, sizes, soak, cluster)
 *   npm run bench -- --cluster                      and cluster mode: octorelay with its partner limits in
 *                                                   memory vs in Redis (msgs/s, CPU µs/msg, Redis commands
 *                                                   per flush, acquisition p99), and three replicas on one
 *                                                   limited HTTP partner (most in a window, fraction of the
 *                                                   limit), in memory (before) and through Redis
 *   npm run bench -- --vs-work                      and octorelay vs the work ceiling (the same AWS work done
 *                                                   bare: bench/contenders/work-ceiling.ts) and the ceiling,
 *                                                   alternated in each round at each of --work-accounts:
 *                                                   msgs/s, ratio, CPU µs per message (process, threads
 *                                                   included); `--only work` for just that
 *   npm run bench -- --cpu-prof                     one octorelay run under --cpu-prof, top self time per
 *                                                   thread and µs per message (--contenders work-ceiling:
 *                                                   profile that one instead; --heap-prof: and the main
 *                                                   thread's allocations, sampled)
 *   npm run bench:smoke                             a few thousand messages, 1 round; exits 1 on a loss
 *   npm run bench -- --render bench/results/latest.json   re-render the markdown and chart, no runs
 *
 * Sizes: --messages (100,000; smoke 3,000) --rounds (3) --accounts (2,900) --size (300 B)
 * --sweep-messages (= --messages) --sweep-accounts (1,100,2900,50000) --soak-messages (1,000,000)
 * --latency-sec (15) --latency-rate (half the contender's median) --idle-dispatchers (10,000).
 * Contenders: --contenders (ceiling,octorelay,peer) --ceiling-loops (32) --peer-consumers (8)
 * --peer-delete batch|message. octorelay: --threads (2) --prefetch (40) --flush-interval-ms (1,000)
 * --max-unacked (5,000). Cluster: --cluster-rate (20 requests/s for the replicas' partner)
 * --cluster-seconds (15: the replica runs last about this long through Redis) --cluster-max-records (10).
 * The cluster section needs redis-server (REDIS_SERVER, default /usr/bin/redis-server); --smoke skips it.
 * Work ceiling: --work-accounts (1,100,2900,50000) --work-messages (20,000; smoke 2,000) per run, --rounds rounds;
 * --partner-concurrency N gives octorelay's partners N flushes in flight (default 2; the work ceiling has 32);
 * --concurrency N sets octorelay's handlers at once per queue (default 32).
 * Other: --no-verify (skip reading buckets back) --verbose (children's output, octorelay logs at info).
 *
 * Writes bench/results/latest.{md,json} and throughput.svg (smoke: smoke.{md,json}); --out PATH writes
 * PATH.{md,json} instead (relative to the repository), e.g. for a partial run: --only cluster --out /tmp/cluster.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, totalmem } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startPartnerServer } from "../test/helpers/partner-server.ts";
import { type RedisServer, startRedis } from "../test/helpers/redis.ts";
import { topSelfTime } from "./lib/cpu-profile.ts";
import { topAllocations } from "./lib/heap-profile.ts";
import { ContenderProcess, EmulatorProcess } from "./lib/processes.ts";
import type {
  ContenderKind,
  ContenderResult,
  ContenderSpec,
  HeapMeasure,
  OctorelaySettings,
} from "./lib/protocol.ts";
import {
  type BenchReport,
  type ClusterReplicas,
  type ClusterReport,
  type ClusterThroughput,
  evaluateTargets,
  type IdleDispatchers,
  type RunRecord,
  renderMarkdown,
  type SoakSummary,
  summarize,
} from "./lib/report.ts";
import { median } from "./lib/stats.ts";
import { throughputSvg } from "./lib/svg.ts";
import type { TrafficSpec } from "./lib/traffic.ts";
import { readBucket } from "./lib/verify.ts";

const RESULTS_DIR = fileURLToPath(new URL("./results/", import.meta.url));
const REPO_DIR = fileURLToPath(new URL("..", import.meta.url));
const CONTENDERS: ContenderKind[] = ["ceiling", "work-ceiling", "octorelay", "peer"];
/** The --vs-work runs, alternated in this order in each round. */
const WORK_CONTENDERS: ContenderKind[] = ["ceiling", "work-ceiling", "octorelay"];
const SIZES = [300, 10 * 1024, 200 * 1024];
const ACCOUNT_SWEEP = [1, 100, 2_900, 50_000];
/** Flush intervals; past 1 s, room for ~6,000 msg/s × (interval + 1 s) un-acked messages. */
const FLUSH_SWEEP = [
  { flushIntervalMs: 1_000, maxUnacked: 5_000 },
  { flushIntervalMs: 5_000, maxUnacked: 36_000 },
  { flushIntervalMs: 10_000, maxUnacked: 66_000 },
];
/** Every partner's rate limit in the cluster throughput runs: high enough never to hold a flush back. */
const UNREACHED_RATE_LIMIT = 1_000_000;
/** And their concurrency: an acquisition then measures the store, not a wait for a slot. */
const UNREACHED_CONCURRENCY = 1_000;
/** Bytes of bodies one sized run may hold in the emulator (the 200 KB run gets fewer messages). */
const SIZED_RUN_BYTES = 400 * 1024 * 1024;

const { values: args } = parseArgs({
  options: {
    smoke: { type: "boolean", default: false },
    rounds: { type: "string" },
    messages: { type: "string" },
    accounts: { type: "string", default: "2900" },
    size: { type: "string", default: "300" },
    sweep: { type: "string", default: "" },
    only: { type: "string" },
    contenders: { type: "string", default: "ceiling,octorelay,peer" },
    "sweep-accounts": { type: "string", default: ACCOUNT_SWEEP.join(",") },
    "sweep-messages": { type: "string" },
    soak: { type: "boolean", default: false },
    "soak-messages": { type: "string", default: "1000000" },
    "latency-sec": { type: "string", default: "15" },
    "latency-rate": { type: "string" },
    "idle-dispatchers": { type: "string", default: "10000" },
    "ceiling-loops": { type: "string", default: "32" },
    "peer-consumers": { type: "string", default: "8" },
    "peer-delete": { type: "string", default: "batch" },
    threads: { type: "string", default: "2" },
    prefetch: { type: "string", default: "40" },
    "flush-interval-ms": { type: "string", default: "1000" },
    "max-unacked": { type: "string", default: "5000" },
    "vs-work": { type: "boolean", default: false },
    "work-accounts": { type: "string", default: ACCOUNT_SWEEP.join(",") },
    "work-messages": { type: "string" },
    "partner-concurrency": { type: "string" },
    concurrency: { type: "string" },
    cluster: { type: "boolean", default: false },
    "cluster-rate": { type: "string", default: "20" },
    "cluster-seconds": { type: "string", default: "15" },
    "cluster-max-records": { type: "string", default: "10" },
    "cpu-prof": { type: "boolean", default: false },
    "heap-prof": { type: "boolean", default: false },
    "no-verify": { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
    render: { type: "string" },
    out: { type: "string" },
  },
});

const smoke = args.smoke;
const int = (value: string | undefined, fallback: number): number => {
  const n = Number(value ?? fallback);
  if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive whole number: ${value}`);
  return n;
};
// 100,000: at 50,000 the ceiling's whole run lasted ~7 s, much of it before the JIT had warmed up.
const messages = int(args.messages, smoke ? 3_000 : 100_000);
const rounds = int(args.rounds, smoke ? 1 : 3);
const sweeps = args.sweep.split(",").filter(Boolean);
for (const sweep of sweeps) {
  if (!["accounts", "flush", "sizes", "all"].includes(sweep))
    throw new Error(`--sweep: accounts, flush, sizes or all; got ${sweep}`);
}
const SECTIONS = [
  "main",
  "latency",
  "idle",
  "work",
  "accounts",
  "flush",
  "sizes",
  "soak",
  "cluster",
] as const;
type Section = (typeof SECTIONS)[number];
const sections = new Set<Section>(
  args.only
    ? args.only.split(",").map((name) => {
        if (!SECTIONS.includes(name as Section))
          throw new Error(`--only: no section ${name}; one of ${SECTIONS}`);
        return name as Section;
      })
    : [
        "main",
        ...(smoke ? [] : (["latency", "idle"] as const)),
        ...(args["vs-work"] ? (["work"] as const) : []),
        ...(sweeps.includes("all") ? (["accounts", "flush", "sizes"] as const) : []),
        ...(sweeps.filter((s) => s === "accounts" || s === "flush" || s === "sizes") as Section[]),
        ...(args.soak ? (["soak"] as const) : []),
        ...((args.cluster || sweeps.includes("all")) && !smoke ? (["cluster"] as const) : []),
      ],
);
if (args["peer-delete"] !== "batch" && args["peer-delete"] !== "message") {
  throw new Error(`--peer-delete: batch or message; got ${args["peer-delete"]}`);
}
const peerDelete = args["peer-delete"];
const ceilingLoops = int(args["ceiling-loops"], 32);
const peerConsumers = int(args["peer-consumers"], 8);
const verify = !args["no-verify"];

const octorelay: OctorelaySettings = {
  concurrency: int(args.concurrency, 32),
  threads: int(args.threads, 2),
  prefetch: int(args.prefetch, 40),
  maxUnacked: int(args["max-unacked"], 5000),
  maxParallelReceives: 8,
  waitTimeSec: 20,
  visibilityTimeoutSec: 60,
  dispatch: {
    flushIntervalMs: int(args["flush-interval-ms"], 1000),
    maxRecords: 1000,
    maxBytes: 5 * 1024 * 1024,
    emptyFlushLimit: 5,
  },
};

const mainTraffic: TrafficSpec = {
  accounts: int(args.accounts, 2900),
  distribution: "zipf",
  accountPrefix: "acct",
  sizeBytes: int(args.size, 300),
  seed: 2900,
};

const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
const startedAt = new Date();
const codeAtStart = codeVersion();
if (args.render) {
  // Only the rendering changed: rewrite the markdown (and chart) from a saved JSON, no runs.
  const saved = JSON.parse(readFileSync(args.render, "utf8")) as BenchReport;
  // Summaries are derived from the runs: recompute them so new columns fill in.
  saved.main.summary = summarize(saved.main.runs, CONTENDERS);
  writeReport(saved);
  process.exit(0);
}
const emulator = await EmulatorProcess.start(args.verbose);
log(`emulator up at ${emulator.endpoint} (pid of its own)`);
let runSeq = 0;
let failures = 0;

try {
  if (args["cpu-prof"]) await profile(args.contenders.includes(",") ? "octorelay" : contenderKinds()[0]);
  else await benchmark();
} finally {
  await emulator.stop();
}
process.exit(failures > 0 ? 1 : 0);

// ── the runs ────────────────────────────────────────────────────────────────────────────────────

interface RunOptions {
  kind: ContenderKind;
  label: string;
  traffic: TrafficSpec;
  count: number;
  /** Fill the queue before the contender starts, or feed it while it runs. */
  feed: { prefill: true } | { ratePerSec: number } | { maxBacklog: number };
  settings?: OctorelaySettings;
  execArgv?: string[];
  keepSamples?: boolean;
  sampleIntervalMs?: number;
  heapProfilePath?: string;
  /** Read the bucket afterwards and match records to the ids sent (prefilled octorelay/peer runs). */
  verify?: boolean;
  round?: number;
}

function spec(kind: ContenderKind, queueName: string, queueUrl: string, bucket: string): ContenderSpec {
  return {
    kind,
    endpoint: emulator.endpoint,
    region: "us-east-1",
    queueName,
    queueUrl,
    bucket,
    mode: "drain",
    expected: 0,
    stallTimeoutMs: 30_000,
    sampleIntervalMs: 1000,
    keepSamples: false,
    logLevel: args.verbose ? "info" : "warn",
    ceiling: { loops: ceilingLoops },
    peer: { consumers: peerConsumers, deleteMode: peerDelete },
    octorelay,
  };
}

async function run(o: RunOptions): Promise<RunRecord> {
  const id = `${++runSeq}-${o.kind}-${randomBytes(3).toString("hex")}`;
  const queueName = `bench-${id}`;
  const bucket = `bench-${id}`;
  const { queueUrl } = await emulator.request({ op: "setup", queueName, bucket });
  const wantIds = Boolean(o.verify) && "prefill" in o.feed && o.kind !== "ceiling";
  let fillMs = 0;
  let sentIds: string[] = [];
  if ("prefill" in o.feed) {
    const filled = await emulator.request({
      op: "fill",
      queueName,
      traffic: o.traffic,
      count: o.count,
      returnIds: wantIds,
    });
    fillMs = filled.ms;
    sentIds = filled.ids;
  }
  const before = await emulator.request({ op: "usage" });
  const contender = new ContenderProcess(o.kind, o.execArgv ?? [], args.verbose);
  let feeding: Promise<unknown> = Promise.resolve();
  let result: ContenderResult;
  try {
    await contender.start({
      ...spec(o.kind, queueName, queueUrl, bucket),
      expected: o.count,
      octorelay: o.settings ?? octorelay,
      keepSamples: o.keepSamples ?? false,
      sampleIntervalMs: o.sampleIntervalMs ?? 1000,
      ...(o.heapProfilePath ? { heapProfilePath: o.heapProfilePath } : {}),
    });
    if (!("prefill" in o.feed)) {
      feeding = emulator.request({ op: "produce", queueName, traffic: o.traffic, count: o.count, ...o.feed });
    }
    result = await contender.result(Math.max(180_000, o.count * 5));
    await feeding;
  } catch (err) {
    contender.kill();
    result = crashed(o.kind, o.count, (err as Error).message);
  }
  try {
    const problems: string[] = [];
    const after = await emulator.request({ op: "usage" });
    const depth = await emulator.request({ op: "depth", queueName });
    const leftInQueue = depth.visible + depth.inFlight + depth.delayed;
    if (!result.ok) problems.push(result.failure ?? "failed");
    if (result.deleted < o.count) problems.push(`deleted ${result.deleted} of ${o.count}`);
    if (leftInQueue > 0) problems.push(`${leftInQueue} messages left in the queue`);
    const delivered = wantIds ? await readBucket(emulator.endpoint, bucket, sentIds) : undefined;
    if (delivered && delivered.missing > 0) {
      problems.push(`${delivered.missing} of ${o.count} messages deleted from SQS but in no S3 object`);
    }
    const record: RunRecord = {
      kind: o.kind,
      label: o.label,
      round: o.round,
      messages: o.count,
      traffic: o.traffic,
      feedRatePerSec: "ratePerSec" in o.feed ? o.feed.ratePerSec : undefined,
      result,
      emulatorCpuSec: after.cpuSec - before.cpuSec,
      emulatorRssBytes: after.rssBytes,
      fillMs,
      leftInQueue,
      delivered,
      ok: problems.length === 0,
      problems,
      ...(o.settings ? { settings: o.settings } : {}),
    };
    report(record);
    return record;
  } finally {
    // Deleting the queue also ends a producer still feeding it (its next send fails).
    await emulator.request({ op: "cleanup", queueName, bucket });
    await feeding.catch(() => undefined);
  }
}

/** The result of a contender that crashed or hung: nothing measured, the reason kept. */
function crashed(kind: ContenderKind, expected: number, failure: string): ContenderResult {
  return {
    kind,
    ok: false,
    failure: failure.length > 2000 ? `${failure.slice(0, 2000)}…` : failure,
    expected,
    received: 0,
    deleted: 0,
    emptyReceives: 0,
    msgsPerSec: Number.NaN,
    steadyMsgsPerSec: Number.NaN,
    drainSec: Number.NaN,
    calls: {},
    errors: {},
    sqsRequests: 0,
    s3Puts: 0,
    latencyMs: { p50: Number.NaN, p99: Number.NaN, max: Number.NaN },
    maxRssBytes: Number.NaN,
    cpuSec: Number.NaN,
    drainCpuSec: Number.NaN,
    drainMainCpuSec: Number.NaN,
    drainLoopBusy: Number.NaN,
    peakHeapUsedBytes: Number.NaN,
    octorelay: undefined,
    samples: [],
  };
}

function report(r: RunRecord): void {
  const x = r.result;
  const mb = (b: number) => (b / 1024 / 1024).toFixed(0);
  log(
    `${r.label.padEnd(28)} ${x.msgsPerSec.toFixed(0).padStart(6)} msg/s  sqs/msg ${(x.sqsRequests / r.messages).toFixed(3)}  ` +
      `s3/msg ${(x.s3Puts / r.messages).toFixed(3)}  p50/p99 ${x.latencyMs.p50.toFixed(0)}/${x.latencyMs.p99.toFixed(0)} ms  ` +
      `rss ${mb(x.maxRssBytes)} MB  cpu ${x.cpuSec.toFixed(1)} s  emu cpu ${r.emulatorCpuSec.toFixed(1)} s  ` +
      `main ${((x.drainMainCpuSec * 1e6) / r.messages).toFixed(0)} µs/msg, busy ${(x.drainLoopBusy * 100).toFixed(0)}%` +
      (r.ok ? "" : `  FAILED: ${r.problems.join("; ")}`),
  );
  if (!r.ok) failures++;
}

async function benchmark(): Promise<void> {
  const kinds = contenderKinds();
  const main: RunRecord[] = [];
  if (sections.has("main")) {
    log(
      `main: ${messages} messages × ${rounds} round(s), ${mainTraffic.accounts} accounts, ${mainTraffic.sizeBytes} B`,
    );
  }
  for (let round = 1; sections.has("main") && round <= rounds; round++) {
    for (const kind of kinds) {
      main.push(
        await run({
          kind,
          label: `round ${round} ${kind}`,
          traffic: mainTraffic,
          count: messages,
          feed: { prefill: true },
          verify: verify && (smoke || kind === "octorelay"),
          round,
        }),
      );
    }
  }
  const summary = summarize(main, kinds);

  const latency: RunRecord[] = [];
  const latencySec = int(args["latency-sec"], 15);
  if (sections.has("latency")) {
    for (const kind of kinds) {
      const median = summary[kind]?.msgsPerSec.median;
      const half = median !== undefined && Number.isFinite(median) ? median / 2 : 1000;
      const rate = args["latency-rate"]
        ? int(args["latency-rate"], 1)
        : Math.max(50, Math.round(half / 50) * 50);
      latency.push(
        await run({
          kind,
          label: `latency ${kind} @${rate}/s`,
          traffic: { ...mainTraffic, seed: 7 },
          count: rate * latencySec,
          feed: { ratePerSec: rate },
        }),
      );
    }
  }

  const idle = !sections.has("idle")
    ? undefined
    : await idleDispatchers(int(args["idle-dispatchers"], 10_000)).catch((err: unknown) => {
        failures++;
        log(`idle dispatchers FAILED: ${(err as Error).message}`);
        return undefined;
      });

  const work = sections.has("work") ? await workRuns() : [];

  const sweepMessages = int(args["sweep-messages"], messages);
  const accounts: RunRecord[] = [];
  if (sections.has("accounts")) {
    for (const n of (args["sweep-accounts"] ?? "").split(",").map((s) => int(s, 1))) {
      accounts.push(
        await run({
          kind: "octorelay",
          label: `accounts ${n}`,
          traffic: { ...mainTraffic, accounts: n },
          count: sweepMessages,
          feed: { prefill: true },
          verify,
        }),
      );
    }
  }
  const flush: RunRecord[] = [];
  if (sections.has("flush")) {
    for (const { flushIntervalMs, maxUnacked } of FLUSH_SWEEP) {
      flush.push(
        await run({
          kind: "octorelay",
          label: `flush ${flushIntervalMs} ms`,
          traffic: mainTraffic,
          count: sweepMessages,
          feed: { prefill: true },
          settings: { ...octorelay, maxUnacked, dispatch: { ...octorelay.dispatch, flushIntervalMs } },
          verify,
        }),
      );
    }
  }
  const sizes: RunRecord[] = [];
  if (sections.has("sizes")) {
    for (const sizeBytes of SIZES) {
      const count = Math.min(sweepMessages, Math.floor(SIZED_RUN_BYTES / sizeBytes));
      for (const kind of ["ceiling", "octorelay"] as const) {
        sizes.push(
          await run({
            kind,
            label: `size ${sizeBytes} B ${kind}`,
            traffic: { ...mainTraffic, sizeBytes },
            count,
            feed: { prefill: true },
          }),
        );
      }
    }
  }
  const soak = sections.has("soak") ? await soakRun(int(args["soak-messages"], 1_000_000)) : undefined;
  const cluster = sections.has("cluster")
    ? await clusterRuns().catch((err: unknown) => {
        failures++;
        log(`cluster FAILED: ${(err as Error).stack ?? err}`);
        return undefined;
      })
    : undefined;

  const finishedAt = new Date();
  const benchReport: BenchReport = {
    machine: {
      cpu: cpus()[0]?.model ?? "unknown",
      cores: availableParallelism(),
      memoryGb: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
      node: process.version,
      platform: `${process.platform} ${process.arch}`,
    },
    code:
      codeVersion() === codeAtStart
        ? codeAtStart
        : `${codeAtStart}, changed during the run to ${codeVersion()}`,
    command: commandLine(),
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationSec: Math.round((finishedAt.getTime() - startedAt.getTime()) / 1000),
    smoke,
    settings: {
      messages,
      rounds,
      traffic: mainTraffic,
      octorelay,
      ceiling: { loops: ceilingLoops },
      peer: { consumers: peerConsumers, deleteMode: peerDelete },
      latencySec,
    },
    main: { runs: main, summary },
    latency,
    idle,
    work,
    accounts,
    flush,
    sizes,
    soak,
    cluster,
    targets: [],
  };
  writeReport(benchReport);
  if (failures > 0) log(`${failures} run(s) failed`);
}

/**
 * results/latest.{md,json} and throughput.svg (smoke: smoke.{md,json}), or <--out>.{md,json} (a
 * partial run, `--only cluster` say, need not replace the full report), and the markdown on stdout.
 */
function writeReport(report: BenchReport): void {
  report.targets = evaluateTargets(report);
  mkdirSync(RESULTS_DIR, { recursive: true });
  const base = args.out ? resolve(REPO_DIR, args.out) : join(RESULTS_DIR, report.smoke ? "smoke" : "latest");
  mkdirSync(dirname(base), { recursive: true });
  const markdown = renderMarkdown(report);
  writeFileSync(`${base}.md`, markdown);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  const chart = !args.out && !report.smoke && report.main.runs.length > 0;
  if (chart) writeFileSync(join(RESULTS_DIR, "throughput.svg"), throughputSvg(report));
  process.stdout.write(markdown);
  const shown = relative(REPO_DIR, base).startsWith("..") ? base : relative(REPO_DIR, base);
  log(`wrote ${shown}.md and ${shown}.json${chart ? " and throughput.svg" : ""}`);
}

/**
 * octorelay against the work ceiling (and the ceiling) at each account count: in every round the
 * three drain the same pre-filled messages one after the other, so a machine that slows down for a
 * while slows all three.
 */
async function workRuns(): Promise<RunRecord[]> {
  const counts = (args["work-accounts"] ?? "").split(",").map((x) => int(x, 1));
  const count = int(args["work-messages"], smoke ? 2_000 : 20_000);
  const partnerConcurrency = args["partner-concurrency"] ? int(args["partner-concurrency"], 2) : undefined;
  log(`work ceiling: ${count} messages × ${rounds} round(s) at ${counts.join(", ")} accounts`);
  const runs: RunRecord[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const accounts of counts) {
      for (const kind of WORK_CONTENDERS) {
        runs.push(
          await run({
            kind,
            label: `work ${accounts} accounts round ${round} ${kind}`,
            traffic: { ...mainTraffic, accounts, seed: 1500 + accounts },
            count,
            feed: { prefill: true },
            // The work ceiling keeps up to 32 objects in flight; octorelay's partners 2 each by default.
            ...(kind === "octorelay" && partnerConcurrency
              ? {
                  settings: {
                    ...octorelay,
                    limits: { store: "memory" as const, maxConcurrentFlushes: partnerConcurrency },
                  },
                }
              : {}),
            verify,
            round,
          }),
        );
      }
    }
  }
  return runs;
}

function contenderKinds(): ContenderKind[] {
  return args.contenders.split(",").map((name) => {
    if (!CONTENDERS.includes(name as ContenderKind)) throw new Error(`--contenders: no contender ${name}`);
    return name as ContenderKind;
  });
}

/** The commit benchmarked, and whether src/ differs from it. */
function codeVersion(): string {
  const git = (...gitArgs: string[]) =>
    execFileSync("git", gitArgs, {
      cwd: REPO_DIR,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  try {
    const dirty = git("status", "--porcelain", "--", "src", "handlers") !== "";
    return `${git("rev-parse", "--short", "HEAD")}${dirty ? " + uncommitted changes in src/ or handlers/" : ""}`;
  } catch {
    return "unknown (not a git checkout)";
  }
}

/** How this run was started, as one would type it. */
function commandLine(): string {
  const rest = process.argv.slice(2).filter((a) => a !== "--smoke");
  return `npm run ${smoke ? "bench:smoke" : "bench"}${rest.length > 0 ? ` -- ${rest.join(" ")}` : ""}`;
}

/**
 * Heap per idle-but-alive dispatcher. Settings make each dispatcher flush its record at once
 * (maxRecords 1) and then sit idle, alive (a 10-minute flush interval, emptyFlushLimit 1000).
 * Warm-up: W outputs to W accounts. Control: N outputs to those same W accounts (all the work of a
 * message, no dispatcher spawned). Then N outputs to N new accounts: N dispatchers spawned.
 * Main-thread heap after forced GC at each step; bytecode flushing is off so code that merely
 * goes cold does not shrink the heap between steps.
 */
async function idleDispatchers(n: number): Promise<IdleDispatchers> {
  const warm = 2000;
  const settings: OctorelaySettings = {
    ...octorelay,
    dispatch: { ...octorelay.dispatch, maxRecords: 1, flushIntervalMs: 600_000, emptyFlushLimit: 1000 },
  };
  const id = `${++runSeq}-idle-${randomBytes(3).toString("hex")}`;
  const queueName = `bench-${id}`;
  const bucket = `bench-${id}`;
  const { queueUrl } = await emulator.request({ op: "setup", queueName, bucket });
  const contender = new ContenderProcess("octorelay", ["--expose-gc", "--no-flush-bytecode"], args.verbose);
  try {
    await contender.start({
      ...spec("octorelay", queueName, queueUrl, bucket),
      mode: "idle",
      expected: warm + 2 * n,
      octorelay: settings,
    });
    let total = 0;
    const step = async (accountPrefix: string, accounts: number, count: number): Promise<HeapMeasure> => {
      const traffic: TrafficSpec = { ...mainTraffic, distribution: "distinct", accounts, accountPrefix };
      await emulator.request({ op: "fill", queueName, traffic, count, returnIds: false });
      total += count;
      return contender.measure(total, 2000, 120_000);
    };
    const warmed = await step("warm", warm, warm);
    const beforeSpawn = await step("warm", warm, n);
    const afterSpawn = await step("idle", n, n);
    contender.stop();
    const result = await contender.result(60_000);
    const out: IdleDispatchers = {
      dispatchers: n,
      warm,
      settings: settings.dispatch,
      warmed,
      beforeSpawn,
      afterSpawn,
      bytesPerDispatcher: (afterSpawn.heapUsedBytes - beforeSpawn.heapUsedBytes) / n,
      controlBytesPerMessage: (beforeSpawn.heapUsedBytes - warmed.heapUsedBytes) / n,
      maxRssBytes: result.maxRssBytes,
    };
    log(
      `idle dispatchers: ${n} spawned (${beforeSpawn.activeDispatchers} → ${afterSpawn.activeDispatchers} alive), ` +
        `${out.bytesPerDispatcher.toFixed(0)} B heap each; control ${out.controlBytesPerMessage.toFixed(0)} B per message`,
    );
    return out;
  } catch (err) {
    contender.kill();
    throw err;
  } finally {
    await emulator.request({ op: "cleanup", queueName, bucket });
  }
}

/** A million messages (by default) through one octorelay process, fed while it drains. */
async function soakRun(count: number): Promise<SoakSummary> {
  const record = await run({
    kind: "octorelay",
    label: `soak ${count}`,
    traffic: { ...mainTraffic, seed: 11 },
    count,
    feed: { maxBacklog: 20_000 },
    keepSamples: true,
    sampleIntervalMs: 5000,
  });
  const samples = record.result.samples;
  const quarter = Math.max(1, Math.floor(samples.length / 4));
  const first = samples.slice(0, quarter);
  const last = samples.slice(-quarter);
  const med = (xs: typeof samples, pick: (s: (typeof samples)[number]) => number) => median(xs.map(pick));
  const rss = { first: med(first, (s) => s.rssBytes), last: med(last, (s) => s.rssBytes) };
  const heap = { first: med(first, (s) => s.heapUsedBytes), last: med(last, (s) => s.heapUsedBytes) };
  const eld = {
    first: med(first, (s) => s.eventLoopDelayP99Ms),
    last: med(last, (s) => s.eventLoopDelayP99Ms),
  };
  return {
    record,
    samples: samples.length,
    rssFirstQuarterBytes: rss.first,
    rssLastQuarterBytes: rss.last,
    heapFirstQuarterBytes: heap.first,
    heapLastQuarterBytes: heap.last,
    eventLoopP99FirstQuarterMs: eld.first,
    eventLoopP99LastQuarterMs: eld.last,
    eventLoopP99WorstMs: Math.max(...samples.map((s) => s.eventLoopDelayP99Ms)),
    // Flat: the last quarter within 10% (and 20 MB) of the first; event-loop p99 within 1.5× + 5 ms.
    rssFlat: rss.last <= rss.first * 1.1 + 20 * 1024 * 1024,
    eventLoopFlat: eld.last <= eld.first * 1.5 + 5,
  };
}

// ── cluster mode ────────────────────────────────────────────────────────────────────────────────

/**
 * The partner limits in memory vs in Redis, one process at the main traffic (rounds alternate), and
 * three replicas on one queue whose every message is for one limited HTTP partner: before (each
 * replica its own copy of the limit) and in cluster mode.
 */
async function clusterRuns(): Promise<ClusterReport> {
  const redis = await startRedis();
  try {
    const info = await redis.command("INFO", "server");
    const redisVersion = /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
    log(`cluster: redis-server ${redisVersion} on 127.0.0.1:${redis.port}`);
    const throughput: ClusterThroughput[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const store of ["memory", "redis"] as const) {
        const before = await redisCpuSec(redis);
        const record = await run({
          kind: "octorelay",
          label: `cluster ${store} limits`,
          traffic: mainTraffic,
          count: messages,
          feed: { prefill: true },
          settings: {
            ...octorelay,
            limits: {
              store,
              redisUrl: redis.url,
              keyPrefix: `bench-${randomBytes(3).toString("hex")}`,
              rateLimit: { requests: UNREACHED_RATE_LIMIT, intervalMs: 1000 },
              maxConcurrentFlushes: UNREACHED_CONCURRENCY,
            },
          },
          verify,
          round,
        });
        const figures = record.result.octorelay;
        const x: ClusterThroughput = {
          store,
          record,
          redisCommands: figures?.redisCommands?.total,
          redisScriptCalls: figures?.redisCommands?.scripts,
          redisCpuSec: store === "redis" ? (await redisCpuSec(redis)) - before : undefined,
        };
        throughput.push(x);
        const a = figures?.limitsAcquire;
        log(
          `  ${store} limits: ${figures?.objects ?? 0} flushes, acquisition p50/p99 ${a?.p50Ms.toFixed(2)}/${a?.p99Ms.toFixed(2)} ms` +
            (x.redisCommands === undefined
              ? ""
              : `, ${(x.redisCommands / (figures?.objects ?? Number.NaN)).toFixed(2)} redis commands per flush`),
        );
      }
    }
    const replicas: ClusterReplicas[] = [];
    for (const store of ["memory", "redis"] as const) replicas.push(await replicaRun(store, redis));
    return {
      redisVersion,
      rateLimitRequests: UNREACHED_RATE_LIMIT,
      maxConcurrentFlushes: UNREACHED_CONCURRENCY,
      throughput,
      replicas,
    };
  } finally {
    await redis.stop();
  }
}

async function redisCpuSec(redis: RedisServer): Promise<number> {
  const cpu = await redis.command("INFO", "cpu");
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(cpu)?.[1] ?? Number.NaN);
  return field("used_cpu_sys") + field("used_cpu_user");
}

/** Three replicas ("serve" mode: the orchestrator decides when the queue is drained) on one limited partner. */
async function replicaRun(store: "memory" | "redis", redis: RedisServer): Promise<ClusterReplicas> {
  const replicaCount = 3;
  const limit = { requests: int(args["cluster-rate"], 20), intervalMs: 1000 };
  const maxRecords = int(args["cluster-max-records"], 10);
  const count = limit.requests * maxRecords * int(args["cluster-seconds"], 15);
  const partner = await startPartnerServer();
  const id = `${++runSeq}-replicas-${store}-${randomBytes(3).toString("hex")}`;
  const queueName = `bench-${id}`;
  const bucket = `bench-${id}`;
  const { queueUrl } = await emulator.request({ op: "setup", queueName, bucket });
  const traffic: TrafficSpec = {
    ...mainTraffic,
    accounts: 1,
    distribution: "distinct",
    accountPrefix: "partner",
  };
  const { ids } = await emulator.request({ op: "fill", queueName, traffic, count, returnIds: true });
  const settings: OctorelaySettings = {
    ...octorelay,
    // Small, so that no replica takes the whole queue: all three hold the partner's work at once.
    maxUnacked: 200,
    partnerShare: 1,
    limits: {
      store,
      redisUrl: redis.url,
      keyPrefix: `bench-${id}`,
      partner: { account: "partner-00000", url: partner.url, rateLimit: limit, maxRecords },
    },
  };
  log(
    `replicas ${store}: ${replicaCount} replicas, ${count} messages for one partner at ${limit.requests} requests/${limit.intervalMs} ms`,
  );
  const contenders = Array.from(
    { length: replicaCount },
    () => new ContenderProcess("octorelay", [], args.verbose),
  );
  const problems: string[] = [];
  const results: ContenderResult[] = [];
  try {
    await Promise.all(
      contenders.map((c) =>
        c.start({ ...spec("octorelay", queueName, queueUrl, bucket), mode: "serve", octorelay: settings }),
      ),
    );
    const want = new Set(ids);
    const deadline = Date.now() + (count / limit.requests / maxRecords) * 3000 + 60_000;
    for (;;) {
      const seen = new Set(partner.records().map((r) => r.id));
      const depth = await emulator.request({ op: "depth", queueName });
      if ([...want].every((x) => seen.has(x)) && depth.visible + depth.inFlight + depth.delayed === 0) break;
      if (Date.now() > deadline) {
        problems.push(`not drained in time: ${seen.size} of ${count} records at the partner`);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    for (const c of contenders) c.stop();
    for (const c of contenders) results.push(await c.result(60_000));
  } catch (err) {
    for (const c of contenders) c.kill();
    problems.push((err as Error).message);
  } finally {
    await partner.close();
  }
  try {
    const depth = await emulator.request({ op: "depth", queueName });
    const leftInQueue = depth.visible + depth.inFlight + depth.delayed;
    const received = partner.records().map((r) => r.id);
    const distinct = new Set(received);
    const missing = ids.filter((x) => !distinct.has(x)).length;
    const arrivals = [...partner.arrivals].sort((a, b) => a - b);
    const spanMs = arrivals.length > 0 ? (arrivals.at(-1) as number) - (arrivals[0] as number) : Number.NaN;
    const maxInWindow = partner.maxInWindow(limit.intervalMs);
    const fractionOfLimit =
      arrivals.length / ((limit.requests * (spanMs + limit.intervalMs)) / limit.intervalMs);
    if (missing > 0) problems.push(`${missing} of ${count} messages never reached the partner`);
    if (leftInQueue > 0) problems.push(`${leftInQueue} messages left in the queue`);
    for (const [i, r] of results.entries()) if (!r.ok) problems.push(`replica ${i + 1}: ${r.failure}`);
    // Before cluster mode the replicas exceed the limit: that is the figure, not a failure.
    if (store === "redis" && maxInWindow > limit.requests) {
      problems.push(`${maxInWindow} requests in one window, over the limit of ${limit.requests}`);
    }
    const out: ClusterReplicas = {
      store,
      replicas: replicaCount,
      limit,
      maxRecords,
      messages: count,
      requests: arrivals.length,
      spanMs,
      maxInWindow,
      fractionOfLimit,
      distinctIds: distinct.size,
      duplicates: received.length - distinct.size,
      missing,
      leftInQueue,
      deletedPerReplica: results.map((r) => r.deleted),
      cpuSecPerReplica: results.map((r) => r.cpuSec),
      ok: problems.length === 0,
      problems,
    };
    log(
      `  ${store}: ${out.requests} requests in ${(spanMs / 1000).toFixed(1)} s, most ${maxInWindow} in one window (limit ${limit.requests}), ` +
        `${(fractionOfLimit * 100).toFixed(0)}% of the limit; deleted ${out.deletedPerReplica.join("/")}` +
        (out.ok ? "" : `  FAILED: ${problems.join("; ")}`),
    );
    if (!out.ok) failures++;
    return out;
  } finally {
    await emulator.request({ op: "cleanup", queueName, bucket });
  }
}

/**
 * One run under --cpu-prof; prints where each thread spent its time, by origin and by function, in
 * ms and in µs per message; with --heap-prof, what the main thread allocated, by origin and function.
 */
async function profile(kind: ContenderKind = "octorelay"): Promise<void> {
  const dir = join(RESULTS_DIR, "profile");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const heapProfilePath = args["heap-prof"] ? join(dir, `${kind}.heapprofile`) : undefined;
  const record = await run({
    kind,
    label: `${kind} --cpu-prof`,
    traffic: mainTraffic,
    count: messages,
    feed: { prefill: true },
    execArgv: ["--cpu-prof", `--cpu-prof-dir=${dir}`],
    verify,
    ...(heapProfilePath ? { heapProfilePath } : {}),
  });
  const usPerMsg = (ms: number) => ((ms * 1000) / messages).toFixed(1);
  const x = record.result;
  const lines = [
    `# ${kind} under --cpu-prof`,
    "",
    `\`${commandLine()}\` — ${codeVersion()}. ${messages} messages, ${mainTraffic.accounts} accounts, ` +
      `${x.msgsPerSec.toFixed(0)} msg/s (profiling slows it down); process CPU ${x.cpuSec.toFixed(1)} s ` +
      `(${usPerMsg(x.cpuSec * 1000)} µs/msg, ${usPerMsg(x.drainCpuSec * 1000)} from ready to the last delete); ` +
      `S3 PUT/msg ${(x.s3Puts / messages).toFixed(3)}, SQS req/msg ${(x.sqsRequests / messages).toFixed(3)}` +
      `${record.ok ? "" : `; FAILED: ${record.problems.join("; ")}`}.`,
    "",
  ];
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".cpuprofile"))
    .map((f) => ({ file: f, ...topSelfTime(join(dir, f), 25) }))
    .sort((a, b) => b.busyMs - a.busyMs);
  for (const [i, p] of files.entries()) {
    const thread = i === 0 ? "busiest thread (the main thread)" : "worker thread";
    lines.push(
      `## ${thread}: ${p.file}`,
      "",
      `${(p.totalMs / 1000).toFixed(1)} s sampled, ${(p.busyMs / 1000).toFixed(1)} s busy = ${usPerMsg(p.busyMs)} µs per message.`,
      "",
      "By origin (self time, share of busy time):",
      "",
      "| origin | self ms | µs/msg | share |",
      "|---|---:|---:|---:|",
      ...p.origins
        .slice(0, 15)
        .map(
          (o) =>
            `| ${o.origin} | ${o.selfMs.toFixed(0)} | ${usPerMsg(o.selfMs)} | ${(o.share * 100).toFixed(1)}% |`,
        ),
      "",
      "Top functions by self time:",
      "",
      "| self ms | µs/msg | share of sampled | function | at |",
      "|---:|---:|---:|---|---|",
      ...p.top.map(
        (t) =>
          `| ${t.selfMs.toFixed(0)} | ${usPerMsg(t.selfMs)} | ${(t.share * 100).toFixed(1)}% | ${t.fn} | ${t.at} |`,
      ),
      "",
    );
  }
  if (heapProfilePath) {
    const h = topAllocations(heapProfilePath, 25);
    const kbPerMsg = (bytes: number) => (bytes / 1024 / messages).toFixed(2);
    lines.push(
      "## main thread allocations (sampled, collected objects included)",
      "",
      `${(h.totalBytes / 1024 / 1024).toFixed(0)} MB allocated from ready to the last delete = ${kbPerMsg(h.totalBytes)} KB per message.`,
      "",
      "| origin | MB | KB/msg | share |",
      "|---|---:|---:|---:|",
      ...h.origins
        .slice(0, 12)
        .map(
          (o) =>
            `| ${o.origin} | ${(o.bytes / 1024 / 1024).toFixed(0)} | ${kbPerMsg(o.bytes)} | ${(o.share * 100).toFixed(1)}% |`,
        ),
      "",
      "| MB | KB/msg | share | function | at |",
      "|---:|---:|---:|---|---|",
      ...h.top.map(
        (t) =>
          `| ${(t.bytes / 1024 / 1024).toFixed(0)} | ${kbPerMsg(t.bytes)} | ${(t.share * 100).toFixed(1)}% | ${t.fn} | ${t.at} |`,
      ),
      "",
    );
  }
  const markdown = `${lines.join("\n")}\n`;
  writeFileSync(join(RESULTS_DIR, `profile-${kind}.md`), markdown);
  process.stdout.write(markdown);
  if (!record.ok) failures++;
}

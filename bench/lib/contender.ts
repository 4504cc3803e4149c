/**
 * The part every contender process shares: take the spec from the orchestrator, build and start the
 * contender with a WireMeter on its clients, sample memory and event-loop delay while it drains, and
 * send back one ContenderResult (peak RSS and CPU are this process's own, worker threads included).
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { BIN_MS, WireMeter } from "./metrics.ts";
import type {
  ContenderResult,
  ContenderSpec,
  FromContender,
  OctorelayFigures,
  Sample,
  ToContender,
} from "./protocol.ts";
import { latencyFigures } from "./stats.ts";

export interface RunningContender {
  /** Stops receiving and lets in-flight work finish (bounded by the caller). */
  stop(): Promise<void>;
  /** Sampled with the process's own figures. */
  activeDispatchers?(): number;
  /** Octorelay's own counters, read after stop. */
  figures?(): Omit<OctorelayFigures, "stopMs" | "peakActiveDispatchers" | "peakUnacked">;
  unacked?(): number;
}

export type StartContender = (spec: ContenderSpec, meter: WireMeter) => Promise<RunningContender>;

const STOP_BUDGET_MS = 20_000;

function send(message: FromContender): Promise<void> {
  return new Promise((resolve, reject) =>
    process.send?.(message, undefined, {}, (err) => (err ? reject(err) : resolve())),
  );
}

/** Messages from the orchestrator, queued from the moment this module is evaluated. */
const inbox: ToContender[] = [];
const inboxWaiters: (() => void)[] = [];
process.on("message", (m: ToContender) => {
  inbox.push(m);
  for (const wake of inboxWaiters.splice(0)) wake();
});
// An orchestrator that dies takes its contenders with it: none is left draining on its own.
process.on("disconnect", () => process.exit(1));

async function nextMessage(): Promise<ToContender> {
  while (inbox.length === 0) await new Promise<void>((resolve) => inboxWaiters.push(resolve));
  return inbox.shift() as ToContender;
}

/** Runs one contender under the orchestrator's control; never returns (the process exits). */
export async function runContender(start: StartContender): Promise<never> {
  // The orchestrator sends the spec only once it knows someone is listening.
  await send({ type: "listening" });
  const first = await nextMessage();
  if (first.type !== "start") throw new Error(`expected a start message, got ${first.type}`);
  const spec = first.spec;
  const meter = new WireMeter();
  const marks = [
    meter.deletedAt(Math.ceil(spec.expected * 0.1)),
    meter.deletedAt(Math.floor(spec.expected * 0.9)),
  ];
  const eventLoopDelay = monitorEventLoopDelay({ resolution: 10 });
  eventLoopDelay.enable();

  let failure: string | undefined;
  let contender: RunningContender;
  try {
    contender = await start(spec, meter);
  } catch (err) {
    process.stderr.write(`${spec.kind}: could not start: ${(err as Error).stack}\n`);
    process.exit(1);
  }
  const heapProfile = spec.heapProfilePath ? await startAllocationSampling() : undefined;
  const readyCpu = process.cpuUsage();
  // The main thread is where a contender saturates first on a small machine: its own CPU and how
  // busy its event loop was, apart from the process's (worker and libuv threads included).
  const readyMainCpu = process.threadCpuUsage();
  const readyLoop = performance.eventLoopUtilization();
  const readyAtMs = Date.now();
  const samples: Sample[] = [];
  let peakHeapUsedBytes = 0;
  let peakActiveDispatchers = 0;
  let peakUnacked = 0;
  let deletedAtLastSample = 0;
  let lastSampleAtMs = readyAtMs;
  const sampler = setInterval(() => {
    const nowMs = Date.now();
    const memory = process.memoryUsage();
    peakHeapUsedBytes = Math.max(peakHeapUsedBytes, memory.heapUsed);
    const sample: Sample = {
      atSec: (nowMs - readyAtMs) / 1000,
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
      heapTotalBytes: memory.heapTotal,
      externalBytes: memory.external,
      eventLoopDelayP50Ms: eventLoopDelay.percentile(50) / 1e6,
      eventLoopDelayP99Ms: eventLoopDelay.percentile(99) / 1e6,
      eventLoopDelayMaxMs: eventLoopDelay.max / 1e6,
      deletedPerSec: ((meter.deleted - deletedAtLastSample) * 1000) / Math.max(1, nowMs - lastSampleAtMs),
      activeDispatchers: contender.activeDispatchers?.(),
    };
    eventLoopDelay.reset();
    deletedAtLastSample = meter.deleted;
    lastSampleAtMs = nowMs;
    if (spec.keepSamples) samples.push(sample);
  }, spec.sampleIntervalMs);
  // Dispatchers come and go within seconds: watch them (and the unacked ledger) more closely.
  const peaks = setInterval(() => {
    peakActiveDispatchers = Math.max(peakActiveDispatchers, contender.activeDispatchers?.() ?? 0);
    peakUnacked = Math.max(peakUnacked, contender.unacked?.() ?? 0);
  }, 100);
  await send({ type: "ready" });

  if (spec.mode === "idle") await answerMeasures(meter, contender);
  else if (spec.mode === "serve") await untilStopped();
  else failure = await untilDrained(spec, meter);
  const drainCpu = process.cpuUsage(readyCpu);
  const drainMainCpu = process.threadCpuUsage(readyMainCpu);
  const drainLoop = performance.eventLoopUtilization(readyLoop);
  if (heapProfile && spec.heapProfilePath) await heapProfile.stop(spec.heapProfilePath);

  clearInterval(sampler);
  clearInterval(peaks);
  const stopStartedAtMs = Date.now();
  const stopped = await Promise.race([
    contender.stop().then(() => true),
    sleep(STOP_BUDGET_MS, false, { ref: false }),
  ]);
  if (!stopped) failure ??= `did not stop within ${STOP_BUDGET_MS} ms`;
  const stopMs = Date.now() - stopStartedAtMs;

  const [t10, t90] = failure ? [Number.NaN, Number.NaN] : await Promise.all(marks);
  const span = (t90 as number) - (t10 as number);
  const counted = Math.floor(spec.expected * 0.9) - Math.ceil(spec.expected * 0.1);
  const drainSec = ((meter.lastDeleteAtMs ?? Number.NaN) - (meter.firstReceiveAtMs ?? Number.NaN)) / 1000;
  const cpu = process.cpuUsage();
  const figures = contender.figures?.();
  const result: ContenderResult = {
    kind: spec.kind,
    ok: failure === undefined,
    failure,
    expected: spec.expected,
    received: meter.received,
    deleted: meter.deleted,
    emptyReceives: meter.emptyReceives,
    msgsPerSec: drainSec > 0 ? meter.deleted / drainSec : Number.NaN,
    steadyMsgsPerSec: span > 0 ? (counted * 1000) / span : Number.NaN,
    drainSec,
    calls: Object.fromEntries(meter.calls),
    errors: Object.fromEntries(meter.errors),
    sqsRequests: meter.sqsCalls(),
    s3Puts: meter.s3Puts(),
    latencyMs: latencyFigures(meter.latencyMs),
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
    cpuSec: (cpu.user + cpu.system) / 1e6,
    drainCpuSec: (drainCpu.user + drainCpu.system) / 1e6,
    drainMainCpuSec: (drainMainCpu.user + drainMainCpu.system) / 1e6,
    drainLoopBusy: drainLoop.utilization,
    peakHeapUsedBytes,
    octorelay: figures ? { ...figures, peakActiveDispatchers, peakUnacked, stopMs } : undefined,
    samples,
  };
  await send({ type: "result", result });
  process.exit(0);
}

/**
 * V8's sampling heap profiler on this thread, keeping the samples of objects already collected:
 * what the run allocated, not only what was still alive at the end (`--heap-prof` keeps only that).
 */
async function startAllocationSampling(): Promise<{ stop(path: string): Promise<void> }> {
  const session = new Session();
  session.connect();
  await session.post("HeapProfiler.startSampling", {
    samplingInterval: 32 * 1024,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  return {
    async stop(path: string) {
      const { profile } = await session.post("HeapProfiler.stopSampling");
      writeFileSync(path, JSON.stringify(profile));
      session.disconnect();
    },
  };
}

/** Resolves with a failure, or undefined once `expected` messages are deleted. */
async function untilDrained(spec: ContenderSpec, meter: WireMeter): Promise<string | undefined> {
  let lastDeleted = -1;
  let lastProgressAtMs = Date.now();
  const stalled = new Promise<string>((resolve) => {
    const watchdog = setInterval(() => {
      if (meter.deleted !== lastDeleted) {
        lastDeleted = meter.deleted;
        lastProgressAtMs = Date.now();
      } else if (Date.now() - lastProgressAtMs > spec.stallTimeoutMs) {
        clearInterval(watchdog);
        resolve(
          `stalled: ${meter.deleted} of ${spec.expected} deleted, none for ${spec.stallTimeoutMs} ms (${meter.outstanding} received and not deleted)`,
        );
      }
    }, BIN_MS);
    watchdog.unref();
    void meter.deletedAt(spec.expected).then(() => clearInterval(watchdog));
  });
  return Promise.race([meter.deletedAt(spec.expected).then(() => undefined), stalled]);
}

/** Serve mode: until the orchestrator says stop. */
async function untilStopped(): Promise<void> {
  while ((await nextMessage()).type !== "stop") {}
}

/** Idle mode: answers heap measurements until told to stop. */
async function answerMeasures(meter: WireMeter, contender: RunningContender): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("idle mode needs --expose-gc");
  for (;;) {
    const message = await nextMessage();
    if (message.type === "stop") return;
    if (message.type !== "measure") continue;
    await meter.deletedAt(message.deletedAtLeast);
    await sleep(message.settleMs);
    for (let i = 0; i < 3; i++) {
      gc();
      await sleep(50);
    }
    await send({
      type: "measured",
      measure: {
        deleted: meter.deleted,
        heapUsedBytes: process.memoryUsage().heapUsed,
        activeDispatchers: contender.activeDispatchers?.() ?? 0,
      },
    });
  }
}

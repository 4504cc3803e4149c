import { EventEmitter } from "node:events";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { Piscina } from "piscina";
import type { RelayEventSink } from "./events.ts";
import {
  type BatchOutcomes,
  type BatchTask,
  type HandlerOutcome,
  type HandlerTask,
  type ProbeTask,
  packTasks,
  type TimedOutcome,
  unpackOutcomes,
} from "./handler-hop.ts";
import type { HandlerWorkerData } from "./handler-worker.ts";

/** Past its timeout, a handler gets this long to notice its aborted signal before its thread is killed. */
const HARD_TIMEOUT_GRACE_MS = 5000;
/**
 * Most messages sent to a thread in one hop. A group also takes at most its thread's share of the
 * concurrency, so one group never leaves the other threads idle.
 */
const MAX_BATCH = 32;
/** Short of slots, a group waits for this many (or all it needs, or half the concurrency). */
const MIN_GROUP = 5;
/**
 * Handlers this fast on average (ms) go to their threads in groups: for them the hop itself (a
 * postMessage each way, a wake-up, piscina's bookkeeping: tens of µs) is most of the cost. A group's
 * outcomes come back together, so slower handlers go one by one: a slow one must not hold its
 * group-mates back. The average is a mean, so rare slow runs (a timeout, a cache miss) lift it and
 * turn grouping off until they are rare again.
 */
const GROUP_BELOW_MS = 1;
/** Weight of each handler's time in the running mean: about the last 20 runs. */
const TYPICAL_WEIGHT = 0.05;

/** The worker entry beside this file, .ts when running from source, .js when built. */
const WORKER_FILE = fileURLToPath(
  new URL(`./handler-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url),
);

export interface HandlerPoolOptions {
  queue: string;
  handlerPath: string;
  /** Handlers running at once, across all threads; never exceeded. */
  concurrency: number;
  threads: number;
  /** Tasks accepted beyond `concurrency`, waiting for a slot. */
  prefetch: number;
  handlerTimeoutMs: number;
}

export type PoolOutcome = HandlerOutcome | { kind: "cancelled" };

interface Waiting {
  task: HandlerTask;
  done: (outcome: PoolOutcome) => void;
}

/**
 * Bounded piscina pool for one queue. It gates tasks itself so exactly `concurrency` handlers run at
 * once whatever the thread count, and emits "free" whenever a slot opens, which is what drives demand.
 */
export class HandlerPool extends EventEmitter<{ free: [] }> {
  readonly #options: HandlerPoolOptions;
  readonly #log: Logger;
  readonly #events: RelayEventSink;
  #piscina: Piscina<BatchTask | ProbeTask, BatchOutcomes | HandlerOutcome>;
  readonly #waiting: Waiting[] = [];
  #running = 0;
  #idle: (() => void)[] = [];
  #nextQueued = false;
  /** Running mean handler time, ms; unknown (so one by one) until a handler has run. */
  #typicalMs = Number.POSITIVE_INFINITY;

  /** `events` hears how long each handler ran and how it ended ("handled"). */
  constructor(deps: { log: Logger; events: RelayEventSink }, options: HandlerPoolOptions) {
    super();
    this.#options = options;
    this.#log = deps.log.child({ component: "handler-pool" });
    this.#events = deps.events;
    this.#piscina = this.#createPiscina();
  }

  #createPiscina(): Piscina<BatchTask | ProbeTask, BatchOutcomes | HandlerOutcome> {
    const o = this.#options;
    const workerData: HandlerWorkerData = {
      handlerPath: o.handlerPath,
      queue: o.queue,
      handlerTimeoutMs: o.handlerTimeoutMs,
    };
    const piscina = new Piscina<BatchTask | ProbeTask, BatchOutcomes | HandlerOutcome>({
      filename: WORKER_FILE,
      minThreads: o.threads,
      maxThreads: o.threads,
      concurrentTasksPerWorker: Math.ceil(o.concurrency / o.threads),
      // Handlers are async and may keep I/O open between tasks; sync atomics would freeze them.
      atomics: "disabled",
      // Its run and wait time histograms: nobody reads them (the handler's time is measured in the worker).
      recordTiming: false,
      idleTimeout: Number.POSITIVE_INFINITY,
      workerData,
    });
    piscina.on("error", (err: unknown) =>
      this.#log.error({ err }, "worker thread error; piscina replaces it"),
    );
    return piscina;
  }

  /** Loads the handler module in a worker; rejects with a clear error when it cannot serve. */
  async start(): Promise<void> {
    await this.#piscina.run({ probe: true });
  }

  /** Running plus waiting tasks; demand is `capacity - occupied`. */
  get occupied(): number {
    return this.#running + this.#waiting.length;
  }

  get capacity(): number {
    return this.#options.concurrency + this.#options.prefetch;
  }

  get running(): number {
    return this.#running;
  }

  /**
   * Runs the handler on `task`; `done` hears its outcome, once (a crash or a timeout is a "failed"
   * outcome, never a throw). A callback, not a promise: per message, a promise and its reactions were
   * a good part of the main thread's bookkeeping.
   */
  submit(task: HandlerTask, done: (outcome: PoolOutcome) => void): void {
    this.#waiting.push({ task, done });
    // After this turn of the event loop's I/O: the messages of every receive answered in it go out
    // together, in few hops (at the end of the tick, each receive's went as a group of its own).
    if (this.#nextQueued) return;
    this.#nextQueued = true;
    setImmediate(() => {
      this.#nextQueued = false;
      this.#next();
    });
  }

  /** Cancels tasks not yet started (shutdown): they end "cancelled" so their messages are released. */
  cancelWaiting(): number {
    const cancelled = this.#waiting.splice(0);
    for (const w of cancelled) this.#done(w, { kind: "cancelled" });
    return cancelled.length;
  }

  /** Resolves once no handler is running. */
  idle(): Promise<void> {
    if (this.#running === 0 && this.#waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async close(): Promise<void> {
    this.cancelWaiting();
    await this.#piscina.destroy();
  }

  /**
   * Starts waiting tasks while slots are free: one by one, or, for fast handlers, in groups of up to
   * a thread's share of the concurrency (piscina spreads the groups over the threads).
   */
  #next(): void {
    const { concurrency } = this.#options;
    const grouped = this.#typicalMs < GROUP_BELOW_MS;
    const maxGroup = Math.min(MAX_BATCH, Math.ceil(concurrency / this.#options.threads));
    // Short of slots, a group waits for a few to free rather than go out one message per completion
    // (GenStage's min_demand): a group's completion frees a group's worth.
    const minGroup = Math.min(MIN_GROUP, Math.ceil(concurrency / 2));
    while (this.#running < concurrency && this.#waiting.length > 0) {
      let size = 1;
      if (grouped) {
        const free = concurrency - this.#running;
        const wanted = Math.min(maxGroup, this.#waiting.length);
        if (free < Math.min(wanted, minGroup) && this.#running > 0) return;
        size = Math.min(wanted, free);
      }
      const group = this.#waiting.splice(0, size);
      this.#running += group.length;
      void this.#execute(group.map((w) => w.task)).then((outcomes) => {
        this.#running -= group.length;
        for (let i = 0; i < group.length; i++) this.#done(group[i] as Waiting, outcomes[i] as HandlerOutcome);
        this.#next();
        if (this.#running === 0 && this.#waiting.length === 0) {
          for (const resolve of this.#idle.splice(0)) resolve();
        }
        this.emit("free");
      });
    }
  }

  /** One message's outcome to its caller: a throw there must not cost its group-mates theirs. */
  #done(waiting: Waiting, outcome: PoolOutcome): void {
    try {
      waiting.done(outcome);
    } catch (err) {
      this.#log.error({ err, messageId: waiting.task.id }, "acting on a handler's outcome threw");
    }
  }

  /** Runs a group of tasks and reports how long each handler took and how it ended. */
  async #execute(tasks: HandlerTask[]): Promise<HandlerOutcome[]> {
    const timed = await this.#run(tasks);
    return timed.map(({ outcome, seconds }) => {
      const ms = seconds * 1000;
      this.#typicalMs = Number.isFinite(this.#typicalMs)
        ? this.#typicalMs + (ms - this.#typicalMs) * TYPICAL_WEIGHT
        : ms;
      this.#events.emit("handled", {
        outcome: outcome.kind,
        seconds,
        outputs: outcome.kind === "ok" ? outcome.outputs.length : 0,
      });
      return outcome;
    });
  }

  /**
   * The worker enforces the handler timeout itself (piscina's per-task abort would allow only one
   * task per thread). A handler that blocks its thread past the timeout plus a grace period cannot
   * be stopped from inside, so the whole pool is replaced: its threads are terminated and their
   * messages retried, the queue's other handlers carry on in the fresh pool.
   */
  async #run(tasks: HandlerTask[]): Promise<TimedOutcome[]> {
    const piscina = this.#piscina;
    const startedMs = performance.now();
    const allFailed = (reason: string): TimedOutcome[] => {
      const seconds = (performance.now() - startedMs) / 1000;
      return tasks.map(() => ({ outcome: { kind: "failed", reason }, seconds }));
    };
    let hardTimer: NodeJS.Timeout | undefined;
    const wedged = new Promise<TimedOutcome[]>((resolve) => {
      hardTimer = setTimeout(() => {
        this.#log.error(
          { messageIds: tasks.map((t) => t.id), handlerTimeoutMs: this.#options.handlerTimeoutMs },
          "handler blocked its worker thread past its timeout; replacing the pool's threads",
        );
        this.#replace(piscina);
        resolve(allFailed(`handler blocked its thread past ${this.#options.handlerTimeoutMs} ms`));
      }, this.#options.handlerTimeoutMs + HARD_TIMEOUT_GRACE_MS);
    });
    try {
      const ran = (piscina.run(packTasks(tasks)) as Promise<BatchOutcomes>).then(unpackOutcomes);
      return await Promise.race([ran, wedged]);
    } catch (err) {
      // A thread that died (uncaught error, process.exit, out of memory) is replaced by piscina.
      this.#log.warn(
        { err, messageIds: tasks.map((t) => t.id) },
        "worker thread failed while running a handler",
      );
      return allFailed(`worker thread failed: ${(err as Error).message}`);
    } finally {
      clearTimeout(hardTimer);
    }
  }

  #replace(wedged: Piscina<BatchTask | ProbeTask, BatchOutcomes | HandlerOutcome>): void {
    if (this.#piscina !== wedged) return;
    this.#piscina = this.#createPiscina();
    void wedged
      .destroy()
      .catch((err: unknown) => this.#log.warn({ err }, "could not destroy the wedged pool"));
  }
}

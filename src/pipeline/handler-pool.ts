import { EventEmitter } from "node:events";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { Piscina } from "piscina";
import type { RelayEventSink } from "./events.ts";
import type { HandlerOutcome, HandlerTask, HandlerWorkerData, ProbeTask } from "./handler-worker.ts";

/** Past its timeout, a handler gets this long to notice its aborted signal before its thread is killed. */
const HARD_TIMEOUT_GRACE_MS = 5000;

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
  resolve: (outcome: PoolOutcome) => void;
}

/**
 * Bounded piscina pool for one queue. It gates tasks itself so exactly `concurrency` handlers run at
 * once whatever the thread count, and emits "free" whenever a slot opens, which is what drives demand.
 */
export class HandlerPool extends EventEmitter<{ free: [] }> {
  readonly #options: HandlerPoolOptions;
  readonly #log: Logger;
  readonly #events: RelayEventSink;
  #piscina: Piscina<HandlerTask | ProbeTask, HandlerOutcome>;
  readonly #waiting: Waiting[] = [];
  #running = 0;
  #idle: (() => void)[] = [];

  /** `events` hears how long each handler ran and how it ended ("handled"). */
  constructor(deps: { log: Logger; events: RelayEventSink }, options: HandlerPoolOptions) {
    super();
    this.#options = options;
    this.#log = deps.log.child({ component: "handler-pool" });
    this.#events = deps.events;
    this.#piscina = this.#createPiscina();
  }

  #createPiscina(): Piscina<HandlerTask | ProbeTask, HandlerOutcome> {
    const o = this.#options;
    const workerData: HandlerWorkerData = {
      handlerPath: o.handlerPath,
      queue: o.queue,
      handlerTimeoutMs: o.handlerTimeoutMs,
    };
    const piscina = new Piscina<HandlerTask | ProbeTask, HandlerOutcome>({
      filename: WORKER_FILE,
      minThreads: o.threads,
      maxThreads: o.threads,
      concurrentTasksPerWorker: Math.ceil(o.concurrency / o.threads),
      // Handlers are async and may keep I/O open between tasks; sync atomics would freeze them.
      atomics: "disabled",
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

  /** Resolves with the handler's outcome; never rejects (a crash or timeout is a "failed" outcome). */
  run(task: HandlerTask): Promise<PoolOutcome> {
    return new Promise((resolve) => {
      this.#waiting.push({ task, resolve });
      this.#next();
    });
  }

  /** Cancels tasks not yet started (shutdown): they resolve "cancelled" so their messages are released. */
  cancelWaiting(): number {
    const cancelled = this.#waiting.splice(0);
    for (const w of cancelled) w.resolve({ kind: "cancelled" });
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

  #next(): void {
    while (this.#running < this.#options.concurrency && this.#waiting.length > 0) {
      const next = this.#waiting.shift() as Waiting;
      this.#running++;
      void this.#execute(next.task).then((outcome) => {
        this.#running--;
        next.resolve(outcome);
        this.#next();
        if (this.#running === 0 && this.#waiting.length === 0) {
          for (const resolve of this.#idle.splice(0)) resolve();
        }
        this.emit("free");
      });
    }
  }

  /** Runs one task and reports how long it took and how it ended. */
  async #execute(task: HandlerTask): Promise<HandlerOutcome> {
    const startedMs = performance.now();
    const outcome = await this.#run(task);
    this.#events.emit("handled", {
      outcome: outcome.kind,
      seconds: (performance.now() - startedMs) / 1000,
      outputs: outcome.kind === "ok" ? outcome.outputs.length : 0,
    });
    return outcome;
  }

  /**
   * The worker enforces the handler timeout itself (piscina's per-task abort would allow only one
   * task per thread). A handler that blocks its thread past the timeout plus a grace period cannot
   * be stopped from inside, so the whole pool is replaced: its threads are terminated and their
   * messages retried, the queue's other handlers carry on in the fresh pool.
   */
  async #run(task: HandlerTask): Promise<HandlerOutcome> {
    const piscina = this.#piscina;
    let hardTimer: NodeJS.Timeout | undefined;
    const wedged = new Promise<HandlerOutcome>((resolve) => {
      hardTimer = setTimeout(() => {
        this.#log.error(
          { messageId: task.id, handlerTimeoutMs: this.#options.handlerTimeoutMs },
          "handler blocked its worker thread past its timeout; replacing the pool's threads",
        );
        this.#replace(piscina);
        resolve({
          kind: "failed",
          reason: `handler blocked its thread past ${this.#options.handlerTimeoutMs} ms`,
        });
      }, this.#options.handlerTimeoutMs + HARD_TIMEOUT_GRACE_MS);
    });
    try {
      return await Promise.race([piscina.run(task), wedged]);
    } catch (err) {
      // A thread that died (uncaught error, process.exit, out of memory) is replaced by piscina.
      this.#log.warn({ err, messageId: task.id }, "worker thread failed while running a handler");
      return { kind: "failed", reason: `worker thread failed: ${(err as Error).message}` };
    } finally {
      clearTimeout(hardTimer);
    }
  }

  #replace(wedged: Piscina<HandlerTask | ProbeTask, HandlerOutcome>): void {
    if (this.#piscina !== wedged) return;
    this.#piscina = this.#createPiscina();
    void wedged
      .destroy()
      .catch((err: unknown) => this.#log.warn({ err }, "could not destroy the wedged pool"));
  }
}

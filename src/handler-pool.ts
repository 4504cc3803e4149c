import { EventEmitter } from "node:events";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { Piscina } from "piscina";
import type { HandlerOutcome, HandlerTask, HandlerWorkerData, ProbeTask } from "./handler-worker.ts";

/** The worker entry beside this file, .ts when running from source, .js when built. */
const WORKER_FILE = fileURLToPath(new URL(`./handler-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

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
  readonly #piscina: Piscina<HandlerTask | ProbeTask, HandlerOutcome>;
  readonly #waiting: Waiting[] = [];
  #running = 0;
  #idle: (() => void)[] = [];

  constructor(deps: { log: Logger }, options: HandlerPoolOptions) {
    super();
    this.#options = options;
    this.#log = deps.log.child({ component: "handler-pool" });
    const workerData: HandlerWorkerData = { handlerPath: options.handlerPath, queue: options.queue };
    this.#piscina = new Piscina({
      filename: WORKER_FILE,
      name: "default",
      minThreads: options.threads,
      maxThreads: options.threads,
      concurrentTasksPerWorker: Math.ceil(options.concurrency / options.threads),
      // Handlers are async and may keep I/O open between tasks; sync atomics would freeze them.
      atomics: "disabled",
      idleTimeout: Number.POSITIVE_INFINITY,
      workerData,
    });
    this.#piscina.on("error", (err: unknown) => this.#log.error({ err }, "worker thread error; piscina replaces it"));
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
    await this.#piscina.close({ force: true });
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

  async #execute(task: HandlerTask): Promise<HandlerOutcome> {
    const signal = AbortSignal.timeout(this.#options.handlerTimeoutMs);
    try {
      return await this.#piscina.run(task, { signal });
    } catch (err) {
      // Piscina terminates the worker of an aborted task and replaces any thread that died.
      if (signal.aborted) {
        return { kind: "failed", reason: `handler timed out after ${this.#options.handlerTimeoutMs} ms` };
      }
      this.#log.warn({ err, messageId: task.id }, "worker thread failed while running a handler");
      return { kind: "failed", reason: `worker thread failed: ${(err as Error).message}` };
    }
  }
}

import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhen,
} from "cockatiel";
import type { Logger } from "pino";
import type { DispatchConfig } from "./config.ts";
import type { Batch, Destination } from "./destinations/destination.ts";
import { BreakerOpenError, DeliveryError } from "./errors.ts";
import { WindowLimiter } from "./rate-limiter.ts";
import { sleep } from "./sleep.ts";

export type PartnerLimits = Pick<DispatchConfig, "rateLimit" | "breaker" | "maxConcurrentFlushes">;

export type PartnerState = "active" | "idle" | "breaker-open" | "parked";

/** A batch the partner refuses for good says nothing about its health; nor does our own abort. */
const countsAsFailure = (err: unknown) =>
  !(err instanceof DeliveryError && !err.retryable) && (err as Error | undefined)?.name !== "AbortError";

/**
 * One partner account's limits, shared by every dispatcher of that account in this process (one per
 * queue): at most `maxConcurrentFlushes` flushes at once, at most `rateLimit` requests and records in
 * any window of `intervalMs` as the partner sees them (WindowLimiter), a circuit breaker (cockatiel)
 * that stops calling a failing partner and probes it after a cool-down, and Retry-After.
 *
 * There is one per active account (thousands), so what a healthy partner does not use is not built:
 * the breaker appears with the first failure, the logger with the first line, the wait queue with
 * the first flush that has to wait.
 */
export class Partner {
  readonly account: string;
  readonly #parentLog: Logger;
  readonly #limits: PartnerLimits;
  readonly #requests: WindowLimiter | undefined;
  readonly #records: WindowLimiter | undefined;
  #breaker: CircuitBreakerPolicy | undefined;
  #log: Logger | undefined;
  #flushing = 0;
  #waiting: (() => void)[] | undefined;
  /** No call before this: the partner's Retry-After. */
  #pausedUntilMs = 0;
  /** Dispatchers of this account alive now, across queues. */
  dispatchers = 0;
  parkedBatches = 0;
  lastError: { message: string; atMs: number } | undefined;

  constructor(deps: { log: Logger; startedAtMs: number }, account: string, limits: PartnerLimits) {
    this.account = account;
    this.#parentLog = deps.log;
    this.#limits = limits;
    const { requests, records, intervalMs } = limits.rateLimit;
    // Counted as full until start: what a previous process sent just before a restart still counts.
    this.#requests = requests > 0 ? new WindowLimiter(requests, intervalMs, deps.startedAtMs) : undefined;
    this.#records = records > 0 ? new WindowLimiter(records, intervalMs, deps.startedAtMs) : undefined;
  }

  get breakerOpen(): boolean {
    return this.#breaker?.state === CircuitState.Open;
  }

  state(): PartnerState {
    const breaker = this.#breaker?.state;
    if (breaker === CircuitState.Open || breaker === CircuitState.HalfOpen) return "breaker-open";
    if (this.parkedBatches > 0) return "parked";
    return this.dispatchers > 0 ? "active" : "idle";
  }

  /**
   * Delivers one batch within the partner's limits. Rejects with BreakerOpenError without calling
   * the partner while its breaker is open, or with the destination's DeliveryError.
   */
  async deliver(destination: Destination, batch: Batch, signal: AbortSignal): Promise<void> {
    await this.#slot();
    try {
      const call = () => this.#call(destination, batch, signal);
      await (this.#breaker ? this.#breaker.execute(call) : call());
      this.lastError = undefined;
    } catch (err) {
      if (err instanceof BrokenCircuitError) throw new BreakerOpenError(this.account, { cause: err });
      if (err instanceof DeliveryError && err.retryAfterMs !== undefined) {
        this.#pausedUntilMs = Math.max(this.#pausedUntilMs, Date.now() + err.retryAfterMs);
      }
      this.lastError = { message: (err as Error).message, atMs: Date.now() };
      if (!this.#breaker && countsAsFailure(err)) await this.#startBreaker(err);
      throw err;
    } finally {
      this.#release();
    }
  }

  async #call(destination: Destination, batch: Batch, signal: AbortSignal): Promise<void> {
    await sleep(this.#pausedUntilMs - Date.now(), signal);
    signal.throwIfAborted();
    // A request slot is held while records are awaited: conservative, never over either limit.
    const requestDone = await this.#requests?.acquire(1, signal);
    try {
      const recordsDone = await this.#records?.acquire(batch.lines.length, signal);
      try {
        await destination.deliver(batch, signal);
      } finally {
        recordsDone?.();
      }
    } finally {
      requestDone?.();
    }
  }

  /** The first failure builds the breaker and is fed to it, so it counts like every later one. */
  async #startBreaker(first: unknown): Promise<void> {
    const { failures, cooldownMs } = this.#limits.breaker;
    const breaker = circuitBreaker(handleWhen(countsAsFailure), {
      halfOpenAfter: cooldownMs,
      breaker: new ConsecutiveBreaker(failures),
    });
    breaker.onStateChange((state) => {
      const log = this.#logger();
      const name = CircuitState[state];
      if (state === CircuitState.Open) log.warn({ breaker: name }, "partner breaker opened");
      else log.info({ breaker: name }, "partner breaker state changed");
    });
    this.#breaker = breaker;
    await breaker.execute(() => Promise.reject(first)).catch(() => {});
  }

  #logger(): Logger {
    this.#log ??= this.#parentLog.child({ component: "partner", account: this.account });
    return this.#log;
  }

  /** Waits for one of the partner's `maxConcurrentFlushes` slots. */
  #slot(): Promise<void> {
    if (this.#flushing < this.#limits.maxConcurrentFlushes) {
      this.#flushing++;
      return Promise.resolve();
    }
    this.#waiting ??= [];
    const waiting = this.#waiting;
    return new Promise((resolve) => waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting?.shift();
    if (next) next();
    else this.#flushing--;
  }
}

import { BrokenCircuitError, CircuitState, ConsecutiveBreaker, circuitBreaker, handleWhen } from "cockatiel";
import pLimit, { type LimitFunction } from "p-limit";
import type { Logger } from "pino";
import type { DispatchConfig } from "./config.ts";
import type { Batch, Destination } from "./destinations/destination.ts";
import { BreakerOpenError, DeliveryError } from "./errors.ts";
import { WindowLimiter } from "./rate-limiter.ts";
import { sleep } from "./sleep.ts";

export type PartnerLimits = Pick<DispatchConfig, "rateLimit" | "breaker" | "maxConcurrentFlushes">;

export type PartnerState = "active" | "idle" | "breaker-open" | "parked";

/**
 * One partner account's limits, shared by every dispatcher of that account in this process (one per
 * queue): at most `maxConcurrentFlushes` flushes at once (p-limit), at most `rateLimit` requests and
 * records in any window of `intervalMs` as the partner sees them (WindowLimiter), a circuit breaker
 * (cockatiel) that stops calling a failing partner and probes it after a cool-down, and Retry-After.
 */
export class Partner {
  readonly account: string;
  readonly #log: Logger;
  readonly #concurrency: LimitFunction;
  readonly #requests: WindowLimiter | undefined;
  readonly #records: WindowLimiter | undefined;
  readonly #breaker;
  /** No call before this: the partner's Retry-After. */
  #pausedUntilMs: number;
  /** Dispatchers of this account alive now, across queues. */
  dispatchers = 0;
  parkedBatches = 0;
  lastError: { message: string; atMs: number } | undefined;

  constructor(deps: { log: Logger; startedAtMs: number }, account: string, limits: PartnerLimits) {
    this.account = account;
    this.#log = deps.log;
    this.#concurrency = pLimit(limits.maxConcurrentFlushes);
    const { requests, records, intervalMs } = limits.rateLimit;
    // Counted as full until start: what a previous process sent just before a restart still counts.
    this.#requests = requests > 0 ? new WindowLimiter(requests, intervalMs, deps.startedAtMs) : undefined;
    this.#records = records > 0 ? new WindowLimiter(records, intervalMs, deps.startedAtMs) : undefined;
    this.#pausedUntilMs = 0;
    // A batch the partner refuses for good says nothing about the partner's health.
    // Nor does our own abort at shutdown.
    const countsAsFailure = (err: unknown) =>
      !(err instanceof DeliveryError && !err.retryable) && (err as Error | undefined)?.name !== "AbortError";
    this.#breaker = circuitBreaker(handleWhen(countsAsFailure), {
      halfOpenAfter: limits.breaker.cooldownMs,
      breaker: new ConsecutiveBreaker(limits.breaker.failures),
    });
    this.#breaker.onStateChange((state) => {
      const name = CircuitState[state];
      if (state === CircuitState.Open) this.#log.warn({ account, breaker: name }, "partner breaker opened");
      else this.#log.info({ account, breaker: name }, "partner breaker state changed");
    });
  }

  get breakerOpen(): boolean {
    return this.#breaker.state === CircuitState.Open;
  }

  state(): PartnerState {
    if (this.#breaker.state === CircuitState.Open || this.#breaker.state === CircuitState.HalfOpen)
      return "breaker-open";
    if (this.parkedBatches > 0) return "parked";
    return this.dispatchers > 0 ? "active" : "idle";
  }

  /**
   * Delivers one batch within the partner's limits. Rejects with BreakerOpenError without calling
   * the partner while its breaker is open, or with the destination's DeliveryError.
   */
  deliver(destination: Destination, batch: Batch, signal: AbortSignal): Promise<void> {
    return this.#concurrency(async () => {
      try {
        await this.#breaker.execute(async () => {
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
        });
        this.lastError = undefined;
      } catch (err) {
        if (err instanceof BrokenCircuitError) throw new BreakerOpenError(this.account, { cause: err });
        if (err instanceof DeliveryError && err.retryAfterMs !== undefined) {
          this.#pausedUntilMs = Math.max(this.#pausedUntilMs, Date.now() + err.retryAfterMs);
        }
        this.lastError = { message: (err as Error).message, atMs: Date.now() };
        throw err;
      }
    });
  }
}

import { BrokenCircuitError, CircuitState, ConsecutiveBreaker, circuitBreaker, handleWhen } from "cockatiel";
import pLimit, { type LimitFunction } from "p-limit";
import pThrottle from "p-throttle";
import type { Logger } from "pino";
import type { DispatchConfig } from "./config.ts";
import type { Batch, Destination } from "./destinations/destination.ts";
import { BreakerOpenError, DeliveryError } from "./errors.ts";

/**
 * Sliding-window slack. The limiter controls when a request starts; the partner counts when it
 * arrives, and a busy event loop or a slow connection can delay one request more than the next.
 * Windows 10% + 50 ms longer than configured keep arrivals within the limit at ~90% of it.
 */
const WINDOW_MARGIN = 1.1;
const WINDOW_MARGIN_MS = 50;

export type PartnerLimits = Pick<DispatchConfig, "rateLimit" | "breaker" | "maxConcurrentFlushes">;

export type PartnerState = "active" | "idle" | "breaker-open" | "parked";

/**
 * One partner account's limits, shared by every dispatcher of that account in this process (one per
 * queue): at most `maxConcurrentFlushes` flushes at once, at most `rateLimit` requests and records in
 * any window of `intervalMs` (a sliding window, p-throttle's strict mode), a circuit breaker
 * (cockatiel) that stops calling a failing partner and probes it after a cool-down, and Retry-After.
 */
export class Partner {
  readonly account: string;
  readonly #log: Logger;
  readonly #concurrency: LimitFunction;
  readonly #requests: (() => Promise<void>) | undefined;
  readonly #records: ((n: number) => Promise<void>) | undefined;
  readonly #breaker;
  /** No call before this: Retry-After, and one window after start so a restart cannot double a window. */
  #pausedUntilMs: number;
  /** Dispatchers of this account alive now, across queues. */
  dispatchers = 0;
  buffered = 0;
  oldestBufferedAtMs: number | undefined;
  parkedBatches = 0;
  lastError: { message: string; atMs: number } | undefined;

  constructor(deps: { log: Logger; startedAtMs: number }, account: string, limits: PartnerLimits) {
    this.account = account;
    this.#log = deps.log;
    this.#concurrency = pLimit(limits.maxConcurrentFlushes);
    const { requests, records, intervalMs } = limits.rateLimit;
    const interval = Math.ceil(intervalMs * WINDOW_MARGIN + WINDOW_MARGIN_MS);
    this.#requests =
      requests > 0 ? pThrottle({ limit: requests, interval, strict: true })(async () => {}) : undefined;
    this.#records =
      records > 0
        ? pThrottle({ limit: records, interval, strict: true, weight: (n: number) => n })(
            async (_n: number) => {},
          )
        : undefined;
    this.#pausedUntilMs = requests > 0 || records > 0 ? deps.startedAtMs + interval : 0;
    // A batch the partner refuses for good says nothing about the partner's health.
    const countsAsFailure = (err: unknown) => !(err instanceof DeliveryError && !err.retryable);
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
          await sleepUntil(this.#pausedUntilMs, signal);
          await this.#requests?.();
          await this.#records?.(batch.lines.length);
          await destination.deliver(batch, signal);
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

function sleepUntil(atMs: number, signal: AbortSignal): Promise<void> {
  const ms = atMs - Date.now();
  if (ms <= 0 || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/**
 * The limits layer of a partner's delivery stack: concurrency, both rate limits, pauses (Retry-After,
 * an open breaker, an operator's) and the circuit breaker, around every single try of a batch.
 */
import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleWhen,
} from "cockatiel";
import type { Logger } from "pino";
import type { DispatchConfig } from "../config.ts";
import type { Batch, Destination } from "../destinations/destination.ts";
import { BreakerOpenError, DeliveryError, LimitsUnavailableError, PartnerPausedError } from "../errors.ts";
import type { LimitSpec, PartnerLimits, Pause } from "../partners/partner-limits.ts";
import { timerMs } from "../sleep.ts";

/** What a partner's profile sets of its shared limits. */
export type LimitsProfile = Pick<DispatchConfig, "rateLimit" | "breaker" | "maxConcurrentFlushes">;

/**
 * The longest pause a Retry-After can impose: 15 minutes, SQS's own longest message delay. A
 * partner's explicit "come back later" is honoured past our own retry backoff (`retryMaxMs`), but a
 * `Retry-After: 86400` (or a garbage 99999999) does not silence it for a day: after 15 minutes one
 * request finds out whether it is back. A batch still gives up at `giveUpAfterMs`, whichever is first.
 */
export const MAX_RETRY_AFTER_MS = 15 * 60_000;

/**
 * A wait for the limits longer than this asks whether an operator paused the partner: it is then
 * refused with PartnerPausedError (its batches then fail, and give up, as in an outage). Healthy
 * waits (a rate window, a slot) rarely last this long, so the check costs nothing on the hot path.
 */
export const PAUSE_CHECK_AFTER_MS = 1_000;

/** The spec the limits layer enforces for a profile. */
export function limitSpec(profile: LimitsProfile): LimitSpec {
  const { requests, records, intervalMs } = profile.rateLimit;
  return { requests, records, intervalMs, maxConcurrent: profile.maxConcurrentFlushes };
}

/** Neither our own abort nor a limits store that is down says anything about the partner. */
const notThePartners = (err: unknown) =>
  err instanceof LimitsUnavailableError || (err as Error | undefined)?.name === "AbortError";

/** A batch the partner refuses for good says nothing about its health either. */
const countsAsFailure = (err: unknown) =>
  !(err instanceof DeliveryError && !err.retryable) && !notThePartners(err);

/**
 * One partner account's limits, shared by every dispatcher of that account in this process (one per
 * queue): limits → breaker → destination, once per try. The limits themselves live in the injected
 * PartnerLimits, keyed by account, so they outlive this object and, with a shared implementation,
 * hold across replicas. The circuit breaker (cockatiel) is local; when it opens it publishes a pause,
 * so every replica waits out the cool-down.
 *
 * There is one per active account (thousands), so what a healthy partner does not use is not built:
 * the breaker appears with the first failure, the logger with the first line.
 */
export class LimitsLayer {
  readonly account: string;
  readonly #parentLog: Logger;
  readonly #limits: PartnerLimits;
  readonly #profile: LimitsProfile;
  readonly #spec: LimitSpec;
  #breaker: CircuitBreakerPolicy | undefined;
  /** While the breaker is open, its cool-down ends here. */
  #openUntilMs = 0;
  #log: Logger | undefined;
  /** The partner's own last failure, cleared by a success (not our aborts or a limits outage). */
  lastError: { message: string; atMs: number } | undefined;

  constructor(deps: { log: Logger; limits: PartnerLimits }, account: string, profile: LimitsProfile) {
    this.account = account;
    this.#parentLog = deps.log;
    this.#limits = deps.limits;
    this.#profile = profile;
    this.#spec = limitSpec(profile);
  }

  /** It has a rate limit (requests or records): while the shared limits are down, it is not called. */
  get rateLimited(): boolean {
    return this.#spec.requests > 0 || this.#spec.records > 0;
  }

  get breakerOpen(): boolean {
    return this.#breaker?.state === CircuitState.Open;
  }

  /** Open, or half-open with a probe allowed: the partner is not taking batches as usual. */
  get breakerTripped(): boolean {
    const state = this.#breaker?.state;
    return state === CircuitState.Open || state === CircuitState.HalfOpen;
  }

  /**
   * Delivers one batch within the partner's limits. Rejects with BreakerOpenError without calling
   * the partner while its breaker is open, with LimitsUnavailableError when the limits cannot be
   * granted (retry later; the partner is not called), or with the destination's DeliveryError.
   * `waitSignal` bounds only the wait for the limits (a pause, a window, a slot), not a call under way.
   */
  async deliver(
    destination: Destination,
    batch: Batch,
    signal: AbortSignal,
    waitSignal?: AbortSignal,
  ): Promise<void> {
    // Refused at once while cooling down, rather than after waiting for a slot and a window.
    if (this.breakerOpen && Date.now() < this.#openUntilMs) throw new BreakerOpenError(this.account);
    // Outside the breaker: a limits outage or our own abort is no verdict on the partner, and
    // cockatiel would count it as a success of a half-open probe.
    const permit = await this.#acquire(batch.lines.length, signal, waitSignal);
    try {
      signal.throwIfAborted();
      const call = () => destination.deliver(batch, signal);
      await (this.#breaker ? this.#breaker.execute(call) : call());
      this.lastError = undefined;
    } catch (err) {
      if (err instanceof BrokenCircuitError) throw new BreakerOpenError(this.account, { cause: err });
      if (notThePartners(err)) throw err;
      // Recorded before the permit is released, so no request waiting for it goes out first.
      if (err instanceof DeliveryError && err.retryAfterMs !== undefined) {
        const pauseMs = Math.min(err.retryAfterMs, MAX_RETRY_AFTER_MS);
        await this.#pause({ reason: "retry-after", untilMs: Date.now() + pauseMs });
      }
      this.lastError = { message: (err as Error).message, atMs: Date.now() };
      if (!this.#breaker && countsAsFailure(err)) await this.#startBreaker(err);
      throw err;
    } finally {
      permit.release();
    }
  }

  /** Waits for the limits; a wait that outlasts PAUSE_CHECK_AFTER_MS under an operator pause is refused. */
  async #acquire(records: number, signal: AbortSignal, waitSignal: AbortSignal | undefined) {
    const paused = new AbortController();
    const timer = setTimeout(() => {
      this.#limits.pauseOf(this.account).then(
        (pause) => {
          // An operator's pause is an outage by decision; a Retry-After or a breaker's cool-down is
          // the partner's own short "not now", waited out as it is (its failing batch is already
          // on the give-up clock).
          if (pause?.reason === "operator" && pause.untilMs > Date.now())
            paused.abort(new PartnerPausedError(this.account, pause));
        },
        () => {}, // A store that cannot say keeps the wait as it is: never a call past a limit.
      );
    }, timerMs(PAUSE_CHECK_AFTER_MS));
    const signals = waitSignal ? [signal, waitSignal, paused.signal] : [signal, paused.signal];
    try {
      return await this.#limits.acquire(this.account, this.#spec, records, AbortSignal.any(signals));
    } catch (err) {
      if (paused.signal.aborted && !signal.aborted) throw paused.signal.reason;
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Publishes a pause; a store that cannot take it is logged, never fatal to the delivery path. */
  async #pause(pause: Pause): Promise<void> {
    try {
      await this.#limits.pause(this.account, pause);
    } catch (err) {
      this.#logger().warn({ err, pause }, "could not record the partner's pause; other replicas may call it");
    }
  }

  /** The first failure builds the breaker and is fed to it, so it counts like every later one. */
  async #startBreaker(first: unknown): Promise<void> {
    const { failures, cooldownMs } = this.#profile.breaker;
    const breaker = circuitBreaker(handleWhen(countsAsFailure), {
      halfOpenAfter: cooldownMs,
      breaker: new ConsecutiveBreaker(failures),
    });
    breaker.onStateChange((state) => {
      const log = this.#logger();
      const name = CircuitState[state];
      if (state === CircuitState.Open) {
        log.warn({ breaker: name }, "partner breaker opened");
        this.#openUntilMs = Date.now() + cooldownMs;
        // Shared limits make every replica (and this account's next Partner) wait out the cool-down.
        void this.#pause({ reason: "breaker", untilMs: this.#openUntilMs });
      } else log.info({ breaker: name }, "partner breaker state changed");
    });
    this.#breaker = breaker;
    await breaker.execute(() => Promise.reject(first)).catch(() => {});
  }

  #logger(): Logger {
    this.#log ??= this.#parentLog.child({ component: "partner", account: this.account });
    return this.#log;
  }
}

/**
 * The retry layer of a delivery stack: tries a batch, and after each failure does what `classify`
 * says: wait and try again (the whole batch, or only what failed of it), refuse it, or give up.
 */
import { backoffMs } from "../backoff.ts";
import type { Batch } from "../destinations/destination.ts";
import {
  BreakerOpenError,
  DeliveryError,
  LimitsUnavailableError,
  OctorelayError,
  PartnerPausedError,
} from "../errors.ts";
import { sleep, timerMs } from "../sleep.ts";
import { classify } from "./classify.ts";

/**
 * What the retry layer wraps: one try of a batch (a destination, or the limits layer around one).
 * `waitSignal` bounds only a wait before the call (for the partner's limits), not a call under way.
 */
export interface BatchService {
  readonly kind: string;
  deliver(batch: Batch, signal: AbortSignal, waitSignal?: AbortSignal): Promise<void>;
}

export interface RetryPolicy {
  retryBaseMs: number;
  retryMaxMs: number;
  /**
   * Once the batch has failed, it is given up on this long after its first failure: a hard bound
   * that neither a backoff, a Retry-After nor a wait for the partner's limits carries it past.
   */
  giveUpAfterMs?: number;
  /** At most this many tries; a refusal by an open breaker (which ends with its cool-down) is none. */
  maxAttempts?: number;
}

export type RetryOutcome =
  | { outcome: "delivered" }
  | { outcome: "rejected"; error: DeliveryError }
  /** `batch`: what was still undelivered when it gave up (only the failed entries after a partial success). */
  | { outcome: "given-up"; error: DeliveryError; batch: Batch }
  /** `signal` aborted (shutdown) before the batch was delivered. */
  | { outcome: "stopped"; error?: DeliveryError };

/** Every event is about the batch handed to `retry`, whatever part of it a try carried. */
export interface RetryEvents {
  /** A try reached the service and ended; refusals before any call (breaker, limits store) are not tries. */
  tried?(batch: Batch, result: "delivered" | "failed", seconds: number): void;
  /**
   * A try failed; `retryInMs` is set when another follows. `quiet`: a condition already logged
   * elsewhere (an open breaker) or again (a limits store still down).
   */
  failed?(
    batch: Batch,
    error: DeliveryError,
    info: { attempt: number; retryInMs?: number; quiet: boolean },
  ): void;
}

/** Refused before any call: an open breaker, a pause, or limits that could not be granted. Not a failed flush. */
const refusedBeforeCall = (err: unknown) =>
  err instanceof BreakerOpenError ||
  err instanceof LimitsUnavailableError ||
  err instanceof PartnerPausedError;

/** Delivers `batch` through `service`, retrying as `classify` says; the same batch id on every try. */
export async function retry(
  service: BatchService,
  batch: Batch,
  signal: AbortSignal,
  policy: RetryPolicy,
  events: RetryEvents = {},
): Promise<RetryOutcome> {
  let current = batch;
  let failingSinceMs: number | undefined;
  let lastFailure: DeliveryError | undefined;
  let attempts = 0;
  for (let attempt = 1; ; attempt++) {
    if (signal.aborted)
      return lastFailure ? { outcome: "stopped", error: lastFailure } : { outcome: "stopped" };
    const giveUpAtMs =
      failingSinceMs === undefined || policy.giveUpAfterMs === undefined
        ? undefined
        : failingSinceMs + policy.giveUpAfterMs;
    if (giveUpAtMs !== undefined && lastFailure && Date.now() >= giveUpAtMs)
      return { outcome: "given-up", error: lastFailure, batch: current };
    const startedMs = performance.now();
    try {
      await tryOnce(service, current, signal, giveUpAtMs);
      events.tried?.(batch, "delivered", (performance.now() - startedMs) / 1000);
      return { outcome: "delivered" };
    } catch (err) {
      const nowMs = Date.now();
      if (!(err instanceof BreakerOpenError || err instanceof PartnerPausedError)) attempts++;
      // This failure may be the first: the bound then counts from now.
      const boundMs =
        policy.giveUpAfterMs === undefined ? undefined : (failingSinceMs ?? nowMs) + policy.giveUpAfterMs;
      const action = classify(err, {
        batch: current,
        nowMs,
        attempts,
        ...(boundMs === undefined ? {} : { giveUpAtMs: boundMs }),
        ...(policy.maxAttempts === undefined ? {} : { maxAttempts: policy.maxAttempts }),
      });
      // The wait for the partner's limits ran into the give-up bound: the last failure stands.
      const cutShort = giveUpAtMs !== undefined && nowMs >= giveUpAtMs && !signal.aborted;
      if (cutShort && lastFailure && !(err instanceof DeliveryError))
        return { outcome: "given-up", error: lastFailure, batch: current };
      if (!refusedBeforeCall(err)) events.tried?.(batch, "failed", (performance.now() - startedMs) / 1000);
      const error = asDeliveryError(err, service.kind, current.account);
      const quiet =
        err instanceof BreakerOpenError ||
        (err instanceof PartnerPausedError && attempt > 1) ||
        (err instanceof LimitsUnavailableError && attempt > 1);
      if (action.action === "reject" || action.action === "give-up") {
        events.failed?.(batch, error, { attempt, quiet });
        return action.action === "reject"
          ? { outcome: "rejected", error }
          : { outcome: "given-up", error, batch: current };
      }
      lastFailure = error;
      failingSinceMs ??= nowMs;
      const backoff = backoffMs(attempt, policy.retryBaseMs, policy.retryMaxMs);
      // A pause says when to look again itself; backing off on top would miss a resume.
      const waitMs =
        err instanceof PartnerPausedError && action.action === "retry"
          ? (action.afterMs ?? backoff)
          : Math.max(backoff, action.action === "retry" ? (action.afterMs ?? 0) : 0);
      const retryInMs = boundMs === undefined ? waitMs : Math.min(boundMs - nowMs, waitMs);
      events.failed?.(batch, error, { attempt, retryInMs, quiet });
      if (action.action === "retry-partial") current = action.remaining;
      await sleep(retryInMs, signal);
    }
  }
}

/** One try. Once the batch is failing, its wait for the partner's limits ends at `giveUpAtMs`. */
async function tryOnce(
  service: BatchService,
  batch: Batch,
  signal: AbortSignal,
  giveUpAtMs: number | undefined,
): Promise<void> {
  if (giveUpAtMs === undefined) return service.deliver(batch, signal);
  const giveUp = new AbortController();
  const timer = setTimeout(() => giveUp.abort(), timerMs(giveUpAtMs - Date.now()));
  try {
    await service.deliver(batch, signal, giveUp.signal);
  } finally {
    clearTimeout(timer);
  }
}

/** What is not a DeliveryError already (a socket error, an open breaker, a limits outage) may pass later. */
function asDeliveryError(err: unknown, destination: string, account: string): DeliveryError {
  if (err instanceof DeliveryError) return err;
  // Our own typed refusals say all there is in their message; as a cause pino would print it twice.
  const cause = err instanceof OctorelayError ? undefined : { cause: err };
  return new DeliveryError((err as Error).message, { destination, account, retryable: true }, cause);
}

/**
 * The retry layer's one decision, as data (Vector's `RetryLogic`): what a failed try of a batch
 * means for the next one. A pure function of the error and where the batch stands; the loop in
 * retry.ts only carries it out.
 */
import type { Batch } from "../destinations/destination.ts";
import { BatchEntryError, DeliveryError, PartnerPausedError } from "../errors.ts";
import { MAX_RETRY_AFTER_MS } from "./limits.ts";

/** How long a batch refused by a pause waits before it looks again (a resume is seen within this). */
export const PAUSE_RECHECK_MS = 5_000;

export type RetryAction =
  /** Try the same batch again, not before `afterMs` (the partner's Retry-After, capped) if it asked. */
  | { action: "retry"; reason: string; afterMs?: number }
  /** Part of the batch went through: try again with only what failed. */
  | { action: "retry-partial"; remaining: Batch; reason: string }
  /** Trying again cannot help: the batch is refused for good. */
  | { action: "reject"; reason: string }
  /** Past the give-up bound or out of attempts: stop trying (park or release). */
  | { action: "give-up"; reason: string };

export interface RetryState {
  /** The batch of the try that failed. */
  batch: Batch;
  nowMs: number;
  /** When the batch is given up on (its first failure + `giveUpAfterMs`); none for replay. */
  giveUpAtMs?: number;
  /** Tries that counted against `maxAttempts` so far, the failed one included. */
  attempts: number;
  maxAttempts?: number;
}

export function classify(error: unknown, state: RetryState): RetryAction {
  if (error instanceof DeliveryError && !error.retryable) return { action: "reject", reason: error.message };
  if (state.giveUpAtMs !== undefined && state.nowMs >= state.giveUpAtMs)
    return { action: "give-up", reason: "failing for giveUpAfterMs" };
  if (state.maxAttempts !== undefined && state.attempts >= state.maxAttempts)
    return { action: "give-up", reason: `failed ${state.attempts} attempt(s)` };
  const reason = (error as Error | undefined)?.message ?? String(error);
  // Look again soon: a resume should be noticed within seconds, not after the whole pause.
  if (error instanceof PartnerPausedError)
    return {
      action: "retry",
      reason,
      afterMs: Math.max(0, Math.min(error.untilMs - state.nowMs, PAUSE_RECHECK_MS)),
    };
  if (!(error instanceof DeliveryError)) return { action: "retry", reason };
  const remaining = failedPart(state.batch, error);
  if (remaining) return { action: "retry-partial", remaining, reason };
  return error.retryAfterMs === undefined
    ? { action: "retry", reason }
    : { action: "retry", reason, afterMs: Math.min(error.retryAfterMs, MAX_RETRY_AFTER_MS) };
}

/**
 * The batch rebuilt from the entries that failed, when a batch destination says which (a
 * DeliveryError caused by a BatchEntryError whose entry ids are line indexes). Undefined when every
 * line failed, or when an id names no line: then the whole batch goes again, so nothing is lost.
 */
function failedPart(batch: Batch, error: DeliveryError): Batch | undefined {
  if (!(error.cause instanceof BatchEntryError)) return undefined;
  const failed = new Set<number>();
  for (const { id } of error.cause.failures) {
    const index = Number(id);
    if (!Number.isInteger(index) || index < 0 || index >= batch.lines.length || id === "") return undefined;
    failed.add(index);
  }
  if (failed.size === 0 || failed.size === batch.lines.length) return undefined;
  const lines = batch.lines.filter((_, i) => failed.has(i));
  return { ...batch, lines, bytes: lines.reduce((sum, l) => sum + Buffer.byteLength(l), 0) };
}

import { backoffMs } from "../backoff.ts";
import type { PoolOutcome } from "./handler-pool.ts";

/**
 * What happened to a received message: its handler's outcome from the pool, or, once its outputs
 * were routed, the destination refusing them for good ("rejected") or delivery given up on
 * ("abandoned": at the stop deadline, or after the partner kept failing for `giveUpAfterMs`).
 */
export type MessageOutcome =
  | PoolOutcome
  | { kind: "rejected"; reason: string }
  | { kind: "abandoned"; cause: "stopping" | "giving-up" };

type OkOutcome = Extract<PoolOutcome, { kind: "ok" }>;

/** Why a message goes back to SQS; the relay logs by it. */
export type ReleaseCause = "cancelled" | "stopping" | "giving-up" | "handler-failed" | "no-dead-letter-queue";

/** What the relay does with the message. A delay is a visibility timeout in seconds (0 = at once). */
export type Decision =
  /** Route every output to its account's dispatcher; delete once all are delivered (at once if none). */
  | { action: "route"; outputs: OkOutcome["outputs"] }
  /** `account` holds its share of the queue's budget: give the message back, all outputs unrouted. */
  | { action: "shed"; account: string; delaySec: number }
  | { action: "release"; cause: ReleaseCause; delaySec: number; reason?: string }
  /** Send to the dead-letter queue, then delete; if that cannot be done now, release after `retryDelaySec`. */
  | { action: "dead-letter"; reason: string; retryDelaySec: number };

/** A queue's fixed inputs to the policy. */
export interface QueuePolicy {
  /** The redrive policy's maxReceiveCount; undefined when the queue has none. */
  maxReceiveCount: number | undefined;
  deadLetterConfigured: boolean;
  maxUnacked: number;
  /**
   * Fraction of maxUnacked one account's undelivered outputs may always hold; one that keeps up may
   * also borrow what nobody holds (see `accountLimit`).
   */
  partnerShare: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** A shed message comes back no sooner than one flush, when its partner may have room again. */
  flushIntervalMs: number;
  /** The backoff's jitter; Math.random unless a test fixes it. */
  random?: () => number;
}

/** What the queue's accounts hold now (the router's view). */
export interface Holding {
  /** Outputs an account has buffered or in flight now, across the queue's dispatchers. */
  held(account: string): number;
  /** Outputs all accounts together have buffered or in flight. */
  readonly heldTotal: number;
  /**
   * The account keeps up: it has delivered since its dispatcher started (or its first batch is on its
   * way), none of its batches is failing, and none has been in flight past a flush interval.
   */
  delivering(account: string): boolean;
}

export interface MessageState {
  /** The message's ApproximateReceiveCount. */
  receiveCount: number;
  queue: QueuePolicy;
  holding: Holding;
}

/** The decision for a message: a function of its outcome and state only. */
export function decide(outcome: MessageOutcome, state: MessageState): Decision {
  const { queue, receiveCount } = state;
  switch (outcome.kind) {
    case "ok": {
      const account = overShare(outcome.outputs, state);
      if (account === undefined) return { action: "route", outputs: outcome.outputs };
      // Each shed is a receive: shed on its last one, SQS's redrive would move it without a reason.
      const max = queue.maxReceiveCount;
      if (max !== undefined && receiveCount >= max) {
        const stuck = overShare(outcome.outputs, state, true);
        // Every partner past its limit keeps up: it takes the message, later than its share allows.
        if (stuck === undefined) return { action: "route", outputs: outcome.outputs };
        if (queue.deadLetterConfigured) {
          return deadLetter(
            `shed on receive ${receiveCount} of ${max}: partner ${JSON.stringify(stuck)} held its share of the queue's budget and was not keeping up (failing, paused or hanging); redrive it once the partner is back`,
            state,
          );
        }
      }
      return {
        action: "shed",
        account,
        delaySec: Math.max(retryDelaySec(state), queue.flushIntervalMs / 1000),
      };
    }
    case "cancelled":
      return { action: "release", cause: "cancelled", delaySec: 0 };
    case "poison":
    case "rejected":
      return deadLetter(outcome.reason, state);
    case "failed": {
      const max = queue.maxReceiveCount;
      // On its last receive, dead-letter it ourselves: SQS's redrive would move it without the reason.
      if (max !== undefined && receiveCount >= max && queue.deadLetterConfigured) {
        return deadLetter(`handler failed on receive ${receiveCount} of ${max}: ${outcome.reason}`, state);
      }
      return {
        action: "release",
        cause: "handler-failed",
        delaySec: retryDelaySec(state),
        reason: outcome.reason,
      };
    }
    case "abandoned":
      // At shutdown another replica should take it at once; from a failing partner, later.
      return outcome.cause === "stopping"
        ? { action: "release", cause: "stopping", delaySec: 0 }
        : { action: "release", cause: "giving-up", delaySec: retryDelaySec(state) };
  }
}

/** Backoff by receive count: each receive of a failing message waits about twice as long. */
export function retryDelaySec(state: Pick<MessageState, "receiveCount" | "queue">): number {
  const { retryBaseMs, retryMaxMs, random } = state.queue;
  return backoffMs(state.receiveCount, retryBaseMs, retryMaxMs, random) / 1000;
}

/** The most outputs one account may hold: `partnerShare` of maxUnacked, at least one. */
export function shareLimit(queue: Pick<QueuePolicy, "maxUnacked" | "partnerShare">): number {
  return Math.max(1, Math.floor(queue.maxUnacked * queue.partnerShare));
}

/**
 * The most outputs `account` may hold now. A partner that fails, hangs or waits behind its limits:
 * its share. One that keeps up may borrow room nobody else holds, always leaving one share for the
 * others: a lone partner is not shed at a quarter of the budget, and one that stops keeping up while
 * it borrows still leaves the others room. It is back to its share from then on, and what it
 * borrowed drains or is given up on.
 */
export function accountLimit(account: string, state: Pick<MessageState, "queue" | "holding">): number {
  const share = shareLimit(state.queue);
  const { holding } = state;
  if (!holding.delivering(account)) return share;
  const heldByOthers = holding.heldTotal - holding.held(account);
  return Math.max(share, state.queue.maxUnacked - share - heldByOthers);
}

function deadLetter(reason: string, state: MessageState): Decision {
  if (!state.queue.deadLetterConfigured) {
    return { action: "release", cause: "no-dead-letter-queue", delaySec: retryDelaySec(state), reason };
  }
  return { action: "dead-letter", reason, retryDelaySec: retryDelaySec(state) };
}

/**
 * Fairness: one partner may hold at most `accountLimit` of maxUnacked, so a slow or down partner
 * cannot take the whole budget. All or nothing: routing some outputs and releasing the message would
 * duplicate those. An account holding nothing may always take one message, however many outputs.
 * Returns the first account these outputs would push past its limit (with `notKeepingUp`, the first
 * such account that is not keeping up).
 */
function overShare(
  outputs: readonly { account: string }[],
  state: MessageState,
  notKeepingUp = false,
): string | undefined {
  const only = outputs.length === 1 ? outputs[0] : undefined;
  if (only) return pastLimit(only.account, 1, state, notKeepingUp) ? only.account : undefined;
  const adding = new Map<string, number>();
  for (const o of outputs) adding.set(o.account, (adding.get(o.account) ?? 0) + 1);
  for (const [account, n] of adding) if (pastLimit(account, n, state, notKeepingUp)) return account;
  return undefined;
}

function pastLimit(account: string, n: number, state: MessageState, notKeepingUp: boolean): boolean {
  const held = state.holding.held(account);
  // The limit is asked for only past the share: the common case costs one lookup.
  if (held === 0 || held + n <= shareLimit(state.queue) || held + n <= accountLimit(account, state))
    return false;
  return !(notKeepingUp && state.holding.delivering(account));
}

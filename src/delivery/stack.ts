/**
 * One partner's delivery stack, outermost first: retry(classify) → limits (concurrency, rate,
 * pauses, breaker) → the destination. Vector puts its rate limit outside the retry; here the limits
 * hold every try, retries included, so a partner never sees more requests than its profile allows.
 * The dispatcher, the park path and replay all deliver through it.
 */
import type { DispatchConfig } from "../config.ts";
import type { Batch, Destination } from "../destinations/destination.ts";
import type { DeliveryError } from "../errors.ts";
import type { LimitsLayer } from "./limits.ts";
import { type BatchService, type RetryEvents, type RetryPolicy, retry } from "./retry.ts";

/** Tries at parking a given-up batch in S3 before its messages are released instead. */
const PARK_ATTEMPTS = 5;

export type DeliveryOutcome =
  | { outcome: "delivered" }
  | { outcome: "rejected"; error: DeliveryError }
  /** Given up on, and `batch` (what was still undelivered of it) is durably parked. */
  | { outcome: "parked"; error: DeliveryError; batch: Batch }
  /** Not delivered: the caller releases the messages. `error` is set when it was given up on. */
  | { outcome: "released"; cause: "stopping" | "giving-up"; error?: DeliveryError };

export interface DeliveryEvents extends RetryEvents {
  /** A try at parking the batch failed. */
  parkFailed?(batch: Batch, error: DeliveryError, attempt: number): void;
}

export interface DeliveryStackDeps {
  /** The account's limits layer (its Partner); any object with its `deliver`, e.g. no limits in a test. */
  limits: Pick<LimitsLayer, "deliver">;
  destination: Destination;
  /** Where a batch given up on goes (`onOutage: "park"`); without it, its messages are released. */
  park?: Destination;
}

export type DeliveryPolicy = Pick<DispatchConfig, "retryBaseMs" | "retryMaxMs"> &
  Pick<RetryPolicy, "giveUpAfterMs" | "maxAttempts">;

export class DeliveryStack {
  readonly kind: string;
  readonly #service: BatchService;
  readonly #park: Destination | undefined;
  readonly #policy: DeliveryPolicy;

  constructor(deps: DeliveryStackDeps, policy: DeliveryPolicy) {
    const { limits, destination } = deps;
    this.kind = destination.kind;
    this.#service = {
      kind: destination.kind,
      deliver: (batch, signal, waitSignal) => limits.deliver(destination, batch, signal, waitSignal),
    };
    this.#park = deps.park;
    this.#policy = policy;
  }

  async deliver(batch: Batch, signal: AbortSignal, events: DeliveryEvents = {}): Promise<DeliveryOutcome> {
    const result = await retry(this.#service, batch, signal, this.#policy, events);
    switch (result.outcome) {
      case "delivered":
      case "rejected":
        return result;
      case "stopped":
        return { outcome: "released", cause: "stopping" };
    }
    const { error } = result;
    if (this.#park && !signal.aborted) {
      const { retryBaseMs, retryMaxMs } = this.#policy;
      // The same stack without limits or a give-up bound: our own bucket, a few tries.
      const parked = await retry(
        this.#park,
        result.batch,
        signal,
        { retryBaseMs, retryMaxMs, maxAttempts: PARK_ATTEMPTS },
        { failed: (b, err, info) => events.parkFailed?.(b, err, info.attempt) },
      );
      if (parked.outcome === "delivered") return { outcome: "parked", error, batch: result.batch };
    }
    return { outcome: "released", cause: signal.aborted ? "stopping" : "giving-up", error };
  }
}

/** Every error octorelay raises carries a stable `code` so logs and alerts can match on it. */
export abstract class OctorelayError extends Error {
  abstract readonly code: string;
}

/** Startup refuses to go on: one line per problem, each naming the key, the value and the fix. */
export class ConfigError extends OctorelayError {
  readonly code = "CONFIG_INVALID";
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** A destination refused or failed a batch. `retryable` is decided once, where the failure is seen. */
export class DeliveryError extends OctorelayError {
  readonly code = "DELIVERY_FAILED";
  readonly destination: string;
  readonly account: string;
  readonly retryable: boolean;
  /** The partner asked to wait this long (Retry-After) before trying again. */
  readonly retryAfterMs: number | undefined;
  /** HTTP status, when the destination speaks HTTP. */
  readonly status: number | undefined;
  constructor(
    message: string,
    context: {
      destination: string;
      account: string;
      retryable: boolean;
      retryAfterMs?: number;
      status?: number;
    },
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "DeliveryError";
    this.destination = context.destination;
    this.account = context.account;
    this.retryable = context.retryable;
    this.retryAfterMs = context.retryAfterMs;
    this.status = context.status;
  }
}

/** The partner's circuit breaker is open: the flush was not attempted. */
export class BreakerOpenError extends OctorelayError {
  readonly code = "BREAKER_OPEN";
  readonly account: string;
  constructor(account: string, options?: ErrorOptions) {
    super(`circuit breaker open for partner ${account}; not calling it until its cool-down ends`, options);
    this.name = "BreakerOpenError";
    this.account = account;
  }
}

/** Some entries of an SQS batch call failed; each failed entry is listed, none is ignored. */
export class BatchEntryError extends OctorelayError {
  readonly code = "SQS_BATCH_ENTRY_FAILED";
  readonly operation: string;
  readonly failures: readonly { id: string; code: string; message: string; senderFault: boolean }[];
  constructor(operation: string, failures: BatchEntryError["failures"]) {
    super(`${operation}: ${failures.length} entr${failures.length === 1 ? "y" : "ies"} failed`);
    this.name = "BatchEntryError";
    this.operation = operation;
    this.failures = failures;
  }
}

/** The shared store of partner limits (Redis) cannot be reached: limited partners wait, never overrun. */
export class LimitsUnavailableError extends OctorelayError {
  readonly code = "LIMITS_UNAVAILABLE";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LimitsUnavailableError";
  }
}

/**
 * An operator paused the partner and it was not called. Like an outage it starts the batch's give-up clock, so a long pause ends in the partner's outage policy
 * (release or park) instead of holding messages for as long as the pause lasts.
 */
export class PartnerPausedError extends OctorelayError {
  readonly code = "PARTNER_PAUSED";
  readonly account: string;
  readonly reason: string;
  readonly untilMs: number;
  constructor(account: string, pause: { reason: string; untilMs: number }) {
    super(
      `partner ${account} is paused (${pause.reason}) until ${new Date(pause.untilMs).toISOString()}; not calling it`,
    );
    this.name = "PartnerPausedError";
    this.account = account;
    this.reason = pause.reason;
    this.untilMs = pause.untilMs;
  }
}

/**
 * The limits layer of a partner's delivery stack, as a contract: a request to a partner starts only
 * once this says so, and reports when it completed. One implementation keeps the state in this
 * process (`InMemoryPartnerLimits`); another keeps it in Redis so that every replica shares one
 * partner's limit, pause and breaker (`RedisPartnerLimits`).
 *
 * Both key their state by account and keep it only while it matters (a request in flight, a window
 * not yet expired, a pause not yet over), so 50,000 idle partners cost nothing, and a partner whose
 * dispatchers stop and start again is still held to the window it used before.
 */

/** A partner's limits as its profile sets them; 0 = unlimited for `requests` and `records`. */
export interface LimitSpec {
  /** Requests the partner accepts in any window of `intervalMs`. */
  requests: number;
  /** Records the partner accepts in any window of `intervalMs`. */
  records: number;
  intervalMs: number;
  /** Requests in flight to the partner at once (across queues, and across replicas in cluster mode). */
  maxConcurrent: number;
}

/** A granted request: `release()` once the request completed, whatever its outcome. Idempotent. */
export interface Permit {
  release(): void;
}

/** Why a partner is not to be called until a time: it said so, its breaker opened, or an operator paused it. */
export type PauseReason = "retry-after" | "breaker" | "operator";

export interface Pause {
  untilMs: number;
  reason: PauseReason;
}

export interface PartnerLimits {
  /**
   * Resolves once one request carrying `records` records may start for `account`: no pause is in
   * force, a concurrency slot is free and both windows have room, counting a request from its start
   * until `intervalMs` after it completes. FIFO per account within a process. Rejects with
   * `signal.reason` when aborted, or with a LimitsUnavailableError when the shared store cannot be
   * reached (a limited partner is then not called: a limit is never exceeded because the store is down).
   */
  acquire(account: string, spec: LimitSpec, records: number, signal: AbortSignal): Promise<Permit>;
  /** No request to `account` before `untilMs` (keeps the later of two pauses of the same reason). */
  pause(account: string, pause: Pause): Promise<void>;
  /**
   * Lifts an operator pause early (resume); a Retry-After or breaker pause runs its course, so
   * pauses are kept per reason, and `pauseOf` reports the one ending last.
   */
  resume(account: string): Promise<void>;
  /** The pause in force for `account` now, if any. May be served from a short local cache. */
  pauseOf(account: string): Promise<Pause | undefined>;
  /**
   * Every account under an operator pause now, with that pause (a Retry-After or breaker pause is
   * short and not listed), wherever the limits are shared: a pause made on another replica is
   * listed too. May be served from a short local cache; rejects with a LimitsUnavailableError when
   * the shared store cannot be read.
   */
  pausedAccounts(): Promise<{ account: string; pause: Pause }[]>;
  /**
   * Whether limits can be granted now. When the shared store is down, the reason says so for an
   * operator (RedisPartnerLimits: "redis unreachable: <last error>", e.g. "redis unreachable: connect
   * ECONNREFUSED 10.0.0.5:6379"); /readyz shows it as "partner limits: <reason>".
   */
  health(): { ok: true } | { ok: false; reason: string };
  close(): Promise<void>;
}

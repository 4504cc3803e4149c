/**
 * PartnerLimits kept in Redis, so that every replica of octorelay holds a partner to one limit, one
 * concurrency bound and one pause between them (cluster mode). The guarantee is WindowLimiter's: a
 * request counts from its start until `intervalMs` after it completes, so the partner never sees more
 * than the limit in any window, as it counts them. All times are the Redis server's (TIME in the
 * scripts), so the replicas' clocks never meet; one acquisition is one round trip (EVALSHA).
 *
 * A permit holds a lease (`leaseMs`), renewed while the request is in flight and dropped on release:
 * a replica killed while holding one frees it when the lease runs out.
 *
 * When Redis cannot be reached, a partner with a rate limit is not called (acquire rejects with
 * LimitsUnavailableError at once), while a partner without one keeps flowing within a local count of
 * its concurrency: in this process at most `maxConcurrent`, so across N replicas at most N times it.
 */
import { randomBytes } from "node:crypto";
import type { ConnectionOptions } from "node:tls";
import { Cluster, Redis, type RedisOptions } from "ioredis";
import type { Logger } from "pino";
import { backoffMs } from "../backoff.ts";
import { ConfigError, LimitsUnavailableError } from "../errors.ts";
import type { LimitSpec, PartnerLimits, Pause, PauseReason, Permit } from "./partner-limits.ts";
import {
  ACQUIRE,
  PAUSE,
  PAUSE_OF,
  PAUSED_ADD,
  PAUSED_LIST,
  PAUSED_REMOVE,
  PROBE,
  RELEASE,
  RENEW,
  RESUME,
} from "./redis-scripts.ts";

export type LimitsHealth = { ok: true } | { ok: false; reason: string };

export interface RedisPartnerLimitsDeps {
  /**
   * A client of its own is best (createRedisClient): its offline queue off, so a dead Redis fails
   * fast. The limits reset its connection (`disconnect(true)`, it reconnects) when it stops
   * answering: a connection to a node that vanished without closing it would otherwise hang for
   * hours (TCP keepalive), while a new one reaches whatever answers now (a failover's new primary).
   */
  redis: Redis | Cluster;
  log: Logger;
}

export interface RedisPartnerLimitsOptions {
  /**
   * Every key of an account is `<keyPrefix>:{<account>}:<log|sum|run|pause>`, and the index of
   * operator pauses is `<keyPrefix>:paused`. No braces: they would move the slot.
   */
  keyPrefix: string;
  /**
   * How long a permit holds its slot unless renewed, ms (default 30,000). Renewed every third of it
   * while the request is in flight; a replica that dies frees its slots after at most this. Keep it
   * above the destination's timeout: a request still running when its lease lapsed (its replica cut
   * off from Redis) is no longer counted.
   */
  leaseMs?: number;
  /** Longest sleep between two tries of a waiting acquisition, ms (default 1,000): bounds how late a release by another replica is seen. */
  maxWaitMs?: number;
  /** How soon a waiter asks again while every concurrency slot is taken, ms (default 50). */
  busyPollMs?: number;
  /** A Redis call not answered within this fails as unavailable, ms (default 2,000). */
  callTimeoutMs?: number;
  /** How long pauseOf and pausedAccounts answer from their local cache, ms (default 500, at most 1,000). */
  pauseCacheMs?: number;
  /** Releases that failed while Redis was down, kept to retry once it is back (default 10,000; past it, leases run out). */
  maxPendingReleases?: number;
  /**
   * How often the store is probed while connected, ms (default 2,000): a Redis that hangs with its
   * connection open (stopped, overloaded, a dead node behind a live socket) answers nothing, and
   * only a call notices; the probe is one small script, so an ACL refusal (NOPERM) shows too.
   */
  probeIntervalMs?: number;
  /**
   * Calls or probes in a row left unanswered for callTimeoutMs after which the store counts as
   * unreachable and its connection is reset (default 2).
   */
  unansweredLimit?: number;
}

/** The scripts as commands on the client: ioredis sends EVALSHA (EVAL once per connection). */
interface ScriptCommands {
  octorelayLimitsAcquire(
    log: string,
    sum: string,
    run: string,
    pause: string,
    id: string,
    records: number,
    requestsLimit: number,
    recordsLimit: number,
    intervalMs: number,
    maxConcurrent: number,
    leaseMs: number,
    busyPollMs: number,
  ): Promise<[number, number, string?]>;
  octorelayLimitsRenew(
    log: string,
    sum: string,
    run: string,
    id: string,
    records: number,
    intervalMs: number,
    leaseMs: number,
    inRun: number,
    inLog: number,
  ): Promise<number>;
  octorelayLimitsRelease(
    log: string,
    sum: string,
    run: string,
    id: string,
    records: number,
    intervalMs: number,
    inRun: number,
    inLog: number,
  ): Promise<number>;
  octorelayLimitsPause(pause: string, reason: PauseReason, durationMs: number): Promise<number>;
  octorelayLimitsResume(pause: string): Promise<number>;
  octorelayLimitsPauseOf(pause: string): Promise<[number, string]>;
  octorelayLimitsPausedAdd(
    paused: string,
    account: string,
    durationMs: number,
    slackMs: number,
  ): Promise<number>;
  octorelayLimitsPausedRemove(paused: string, account: string): Promise<number>;
  octorelayLimitsPausedList(paused: string, max: number): Promise<string[]>;
  octorelayLimitsProbe(zset: string, string: string, hash: string): Promise<number>;
}

const SCRIPTS: [keyof ScriptCommands, number, string][] = [
  ["octorelayLimitsAcquire", 4, ACQUIRE],
  ["octorelayLimitsRenew", 3, RENEW],
  ["octorelayLimitsRelease", 3, RELEASE],
  ["octorelayLimitsPause", 1, PAUSE],
  ["octorelayLimitsResume", 1, RESUME],
  ["octorelayLimitsPauseOf", 1, PAUSE_OF],
  ["octorelayLimitsPausedAdd", 1, PAUSED_ADD],
  ["octorelayLimitsPausedRemove", 1, PAUSED_REMOVE],
  ["octorelayLimitsPausedList", 1, PAUSED_LIST],
  ["octorelayLimitsProbe", 3, PROBE],
];

/** Operator pauses listed at most (soonest end first): people pause partners, not scripts by the thousand. */
export const MAX_PAUSED_LISTED = 10_000;
/**
 * How much later than its pause an index entry ends: the index is written just before the pause
 * (another slot, another call), so its own clock reading is a little earlier; the listing checks
 * each entry against the pause itself, so the slack never shows a pause that is over.
 */
const PAUSED_INDEX_SLACK_MS = 1_000;

/** A permit this process holds: what its renewals and its release need. */
interface Held {
  account: string;
  id: string;
  records: number;
  intervalMs: number;
  /** Counted in the account's `run` set (it has a concurrency bound). */
  inRun: boolean;
  /** Counted in the account's window `log` (it has a rate limit). */
  inLog: boolean;
  timer: NodeJS.Timeout;
  released: boolean;
}

interface Waiter {
  spec: LimitSpec;
  records: number;
  signal: AbortSignal;
  resolve: (permit: Permit) => void;
  reject: (err: unknown) => void;
  onAbort: () => void;
  settled: boolean;
}

/** One account's waiters in this process, FIFO; only the head asks Redis. */
interface Queue {
  waiters: Waiter[];
  wake: (() => void) | undefined;
  /** The head was refused for concurrency: a release here may free its slot, so it wakes the head. */
  wakeOnRelease: boolean;
}

type Outcome = { permit: Permit } | { waitMs: number; busy?: boolean } | { error: Error };

/**
 * Why the store is not used although its connection may be up: it stopped answering (cleared when
 * it answers again: a probe, or the ready check of a new connection), or it refused our commands
 * (cleared only by a probe that runs them all: a reconnect does not change an ACL).
 */
type Fault = { kind: "unanswered" | "refused"; reason: string };

/** A Redis error that is an ACL refusal: NOPERM, or (Redis 7.0) a command refused inside a script. */
const isRefusal = (err: unknown) =>
  err instanceof Error &&
  (/^NOPERM\b/.test(err.message) || /can't run this command or subcommand/.test(err.message));

/** ioredis's commandTimeout, or ours: the store did not answer (as opposed to answering with an error). */
class UnansweredError extends Error {}
const isUnanswered = (err: unknown) =>
  err instanceof UnansweredError || (err instanceof Error && err.message === "Command timed out");

const isLimited = (spec: LimitSpec) => spec.requests > 0 || spec.records > 0;

/**
 * The hash tag of an account's keys: the account itself with `%`, `{` and `}` escaped (%25, %7B,
 * %7D), so the tag is exactly the account and two accounts never share a key; lone UTF-16
 * surrogates (which UTF-8 cannot carry apart) become %uXXXX; the empty account is `%`.
 */
export function accountTag(account: string): string {
  if (account === "") return "%";
  return account.replace(
    /[%{}]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
    (c) =>
      c === "%"
        ? "%25"
        : c === "{"
          ? "%7B"
          : c === "}"
            ? "%7D"
            : `%u${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}`,
  );
}

/**
 * An account as a member of the paused index: its JSON text, which carries any JS string (a lone
 * surrogate included, as an escape) through UTF-8 and back exactly.
 */
const pausedMember = (account: string) => JSON.stringify(account);

function accountOfMember(member: string): string | undefined {
  try {
    const account: unknown = JSON.parse(member);
    return typeof account === "string" ? account : undefined;
  } catch {
    return undefined;
  }
}

export class RedisPartnerLimits implements PartnerLimits {
  readonly #redis: Redis | Cluster;
  readonly #scripts: ScriptCommands;
  readonly #log: Logger;
  readonly #prefix: string;
  readonly #leaseMs: number;
  readonly #maxWaitMs: number;
  readonly #busyPollMs: number;
  readonly #callTimeoutMs: number;
  readonly #pauseCacheMs: number;
  readonly #maxPendingReleases: number;
  readonly #unansweredLimit: number;
  /** Permit ids are `<instance>.<n>`: unique across replicas without asking anyone. */
  readonly #instanceId = randomBytes(6).toString("base64url");
  #seq = 0;

  /** Usable: connected and no fault. Only #update changes it, so each change logs one line. */
  #up: boolean;
  #everUp: boolean;
  /** The client's status is "ready". */
  #connected: boolean;
  #fault: Fault | undefined;
  /** Calls and probes in a row not answered within callTimeoutMs. */
  #unanswered = 0;
  readonly #probeTimer: NodeJS.Timeout;
  #probing = false;
  #lastError: string | undefined;
  /**
   * When Redis came back after an outage (local clock). Redis may have restarted empty, forgetting
   * the windows: a rate-limited partner waits one window after this, as WindowLimiter does after a
   * process restart, so what was sent before the outage still counts.
   */
  #recoveredAtMs = Number.NEGATIVE_INFINITY;
  #closed = false;

  readonly #queues = new Map<string, Queue>();
  /** Permits held by this process per account: the concurrency bound while Redis is down. */
  readonly #inFlight = new Map<string, number>();
  readonly #held = new Set<Held>();
  #pendingReleases: Held[] = [];
  readonly #healthListeners = new Set<(health: LimitsHealth) => void>();
  #pauseCache = new Map<string, Pause | undefined>();
  #pauseCacheBornMs = 0;
  #pausedCache: { bornMs: number; list: Promise<{ account: string; pause: Pause }[]> } | undefined;
  /** Pauses set through this process, honoured while Redis is down (unlimited partners still flow). */
  readonly #localPauses = new Map<string, { untilMs: Map<PauseReason, number>; timer: NodeJS.Timeout }>();

  readonly #onReady = () => {
    this.#connected = true;
    // A new connection answered its ready check; a refusal is the ACL's, which a reconnect does not change.
    if (this.#fault?.kind === "unanswered") this.#fault = undefined;
    this.#unanswered = 0;
    this.#update();
    if (this.#fault) this.#probe();
  };
  readonly #onClose = () => {
    this.#connected = false;
    this.#update();
  };
  readonly #onError = (err: Error) => {
    this.#lastError = err.message;
  };

  constructor(deps: RedisPartnerLimitsDeps, options: RedisPartnerLimitsOptions) {
    const problems: string[] = [];
    if (!options.keyPrefix || /[{}]/.test(options.keyPrefix)) {
      problems.push(
        `redis keyPrefix: must be a non-empty string without "{" or "}" (they would set the Redis Cluster hash slot); got ${JSON.stringify(options.keyPrefix)}`,
      );
    }
    const positive = (name: keyof RedisPartnerLimitsOptions, value: number, min = 1, unit = " ms") => {
      if (!Number.isInteger(value) || value < min)
        problems.push(
          `redis ${name}: must be an integer of at least ${min}${unit}; got ${JSON.stringify(value)}`,
        );
      return value;
    };
    this.#leaseMs = positive("leaseMs", options.leaseMs ?? 30_000, 30);
    this.#maxWaitMs = positive("maxWaitMs", options.maxWaitMs ?? 1_000);
    this.#busyPollMs = positive("busyPollMs", options.busyPollMs ?? 50);
    this.#callTimeoutMs = positive("callTimeoutMs", options.callTimeoutMs ?? 2_000);
    this.#pauseCacheMs = Math.min(1_000, positive("pauseCacheMs", options.pauseCacheMs ?? 500, 0));
    this.#maxPendingReleases = positive("maxPendingReleases", options.maxPendingReleases ?? 10_000, 0, "");
    const probeIntervalMs = positive("probeIntervalMs", options.probeIntervalMs ?? 2_000);
    this.#unansweredLimit = positive("unansweredLimit", options.unansweredLimit ?? 2, 1, "");
    if (problems.length > 0) throw new ConfigError(problems);

    this.#redis = deps.redis;
    this.#log = deps.log.child({ component: "partner-limits", store: "redis" });
    this.#prefix = options.keyPrefix;
    for (const [name, numberOfKeys, lua] of SCRIPTS) this.#redis.defineCommand(name, { numberOfKeys, lua });
    this.#scripts = this.#redis as unknown as ScriptCommands;
    this.#connected = this.#redis.status === "ready";
    this.#up = this.#connected;
    this.#everUp = this.#up;
    // Unref'd: probing must not keep the process alive.
    this.#probeTimer = setInterval(() => this.#probe(), probeIntervalMs).unref();
    this.#redis.on("ready", this.#onReady);
    this.#redis.on("close", this.#onClose);
    this.#redis.on("end", this.#onClose);
    this.#redis.on("error", this.#onError);
  }

  acquire(account: string, spec: LimitSpec, records: number, signal: AbortSignal): Promise<Permit> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.#closed) return Promise.reject(new LimitsUnavailableError("partner limits are closed"));
    if (isLimited(spec) && !this.#up) return Promise.reject(this.#unavailable(account));
    return new Promise<Permit>((resolve, reject) => {
      let queue = this.#queues.get(account);
      const start = !queue;
      if (!queue) {
        queue = { waiters: [], wake: undefined, wakeOnRelease: false };
        this.#queues.set(account, queue);
      }
      const q = queue;
      const waiter: Waiter = {
        spec,
        records: Math.max(0, Math.floor(records)),
        signal,
        resolve,
        reject,
        settled: false,
        onAbort: () => {
          if (waiter.settled) return;
          const i = q.waiters.indexOf(waiter);
          if (i >= 0) q.waiters.splice(i, 1);
          this.#settle(waiter, () => reject(signal.reason));
          if (i === 0) q.wake?.();
        },
      };
      signal.addEventListener("abort", waiter.onAbort, { once: true });
      q.waiters.push(waiter);
      if (start) void this.#drain(account, q);
    });
  }

  async pause(account: string, pause: Pause): Promise<void> {
    const durationMs = Math.ceil(pause.untilMs - Date.now());
    if (durationMs <= 0) return;
    this.#pauseLocally(account, pause);
    this.#pauseCache.delete(account);
    if (!this.#up) throw this.#operatorUnavailable("paused in this replica only");
    try {
      if (pause.reason === "operator") {
        // Indexed first: a pause in force is always listed; an entry left by a failed pause is not,
        // as the listing checks the pause itself.
        this.#pausedCache = undefined;
        await this.#bounded(
          this.#scripts.octorelayLimitsPausedAdd(
            this.#pausedKey(),
            pausedMember(account),
            durationMs,
            PAUSED_INDEX_SLACK_MS,
          ),
        );
      }
      await this.#bounded(
        this.#scripts.octorelayLimitsPause(this.#key(account, "pause"), pause.reason, durationMs),
      );
    } catch (err) {
      throw this.#operatorUnavailable("paused in this replica only", err);
    }
  }

  async resume(account: string): Promise<void> {
    const local = this.#localPauses.get(account);
    local?.untilMs.delete("operator");
    if (local?.untilMs.size === 0) this.#dropLocalPause(account);
    this.#pauseCache.delete(account);
    if (!this.#up) throw this.#operatorUnavailable("resumed in this replica only");
    this.#pausedCache = undefined;
    try {
      await this.#bounded(this.#scripts.octorelayLimitsResume(this.#key(account, "pause")));
    } catch (err) {
      throw this.#operatorUnavailable("resumed in this replica only", err);
    }
    this.#queues.get(account)?.wake?.();
    // Resumed everywhere already; an entry this leaves behind is not listed (the listing checks the pause).
    await this.#bounded(
      this.#scripts.octorelayLimitsPausedRemove(this.#pausedKey(), pausedMember(account)),
    ).catch((err: unknown) =>
      this.#log.debug({ account, err }, "could not drop the resumed account from the paused index"),
    );
  }

  async pauseOf(account: string): Promise<Pause | undefined> {
    const now = Date.now();
    if (now - this.#pauseCacheBornMs > this.#pauseCacheMs) {
      this.#pauseCache = new Map();
      this.#pauseCacheBornMs = now;
    }
    if (this.#pauseCache.has(account)) return this.#pauseCache.get(account);
    if (!this.#up) return this.#localPauseOf(account);
    try {
      const [msLeft, reason] = await this.#bounded(
        this.#scripts.octorelayLimitsPauseOf(this.#key(account, "pause")),
      );
      const pause = msLeft > 0 ? { untilMs: Date.now() + msLeft, reason: reason as PauseReason } : undefined;
      this.#pauseCache.set(account, pause);
      return pause;
    } catch {
      return this.#localPauseOf(account);
    }
  }

  /**
   * The operator pauses in force across every replica: the `<prefix>:paused` index (one call), each
   * entry checked against the account's pause (one call per listed account, so a resume whose index
   * update failed does not list it). At most MAX_PAUSED_LISTED, soonest end first.
   */
  pausedAccounts(): Promise<{ account: string; pause: Pause }[]> {
    const nowMs = Date.now();
    const cached = this.#pausedCache;
    if (cached && nowMs - cached.bornMs <= this.#pauseCacheMs && nowMs >= cached.bornMs) {
      return cached.list.then((list) => list.slice());
    }
    const entry = { bornMs: nowMs, list: this.#listPaused() };
    this.#pausedCache = entry;
    entry.list.catch(() => {
      if (this.#pausedCache === entry) this.#pausedCache = undefined;
    });
    return entry.list.then((list) => list.slice());
  }

  async #listPaused(): Promise<{ account: string; pause: Pause }[]> {
    const failed = (why: string, cause?: unknown) =>
      new LimitsUnavailableError(
        `could not list the partners paused by an operator (${why}); each partner's own pause still holds`,
        cause === undefined ? undefined : { cause },
      );
    if (this.#closed) throw failed("partner limits are closed");
    if (!this.#up) throw failed((this.health() as { reason: string }).reason);
    try {
      const [nowText, ...flat] = await this.#bounded(
        this.#scripts.octorelayLimitsPausedList(this.#pausedKey(), MAX_PAUSED_LISTED),
      );
      const serverNowMs = Number(nowText);
      const accounts: string[] = [];
      for (let i = 0; i < flat.length; i += 2) {
        const account = accountOfMember(flat[i] as string);
        if (account !== undefined) accounts.push(account);
      }
      const untils = await this.#bounded(
        Promise.all(accounts.map((account) => this.#redis.hget(this.#key(account, "pause"), "operator"))),
      );
      const localNowMs = Date.now();
      const paused: { account: string; pause: Pause }[] = [];
      accounts.forEach((account, i) => {
        const untilMs = Number(untils[i] ?? 0);
        if (untilMs > serverNowMs) {
          paused.push({
            account,
            pause: { reason: "operator", untilMs: localNowMs + untilMs - serverNowMs },
          });
        }
      });
      return paused;
    } catch (err) {
      throw failed(err instanceof Error ? err.message : String(err), err);
    }
  }

  health(): LimitsHealth {
    if (this.#up) return { ok: true };
    if (this.#fault) return { ok: false, reason: this.#fault.reason };
    const why = this.#lastError ?? (this.#everUp ? "connection lost" : "not connected yet");
    return { ok: false, reason: `redis unreachable: ${why}` };
  }

  /** Calls `listener` on every change of health(); returns the unsubscribe. */
  onHealthChange(listener: (health: LimitsHealth) => void): () => void {
    this.#healthListeners.add(listener);
    return () => this.#healthListeners.delete(listener);
  }

  /** What this process keeps now; all zero when no partner is busy (for metrics and tests). */
  localState(): {
    accountsWaiting: number;
    permitsHeld: number;
    pendingReleases: number;
    localPauses: number;
  } {
    return {
      accountsWaiting: this.#queues.size,
      permitsHeld: this.#held.size,
      pendingReleases: this.#pendingReleases.length,
      localPauses: this.#localPauses.size,
    };
  }

  /**
   * Stops waiting and renewing: waiters reject, held permits keep their slot until released or
   * until their lease runs out. The Redis client is the caller's to quit.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#probeTimer);
    this.#redis.off("ready", this.#onReady);
    this.#redis.off("close", this.#onClose);
    this.#redis.off("end", this.#onClose);
    this.#redis.off("error", this.#onError);
    for (const held of this.#held) clearInterval(held.timer);
    for (const account of [...this.#localPauses.keys()]) this.#dropLocalPause(account);
    for (const queue of this.#queues.values()) {
      for (const waiter of queue.waiters.splice(0)) {
        this.#settle(waiter, () => waiter.reject(new LimitsUnavailableError("partner limits are closed")));
      }
      queue.wake?.();
    }
  }

  /** The head of an account's queue asks until it is granted, then the next; the queue goes when empty. */
  async #drain(account: string, queue: Queue): Promise<void> {
    try {
      await this.#serve(account, queue);
    } catch (err) {
      // A bug here must not strand the waiters (nor crash the process): they fail, the dispatcher retries.
      this.#log.error({ err, account }, "partner limits queue failed");
      const error = new LimitsUnavailableError(`partner limits failed for ${JSON.stringify(account)}`, {
        cause: err,
      });
      for (const waiter of queue.waiters.splice(0)) this.#settle(waiter, () => waiter.reject(error));
      if (this.#queues.get(account) === queue) this.#queues.delete(account);
    }
  }

  async #serve(account: string, queue: Queue): Promise<void> {
    for (;;) {
      const head = queue.waiters[0];
      if (!head) {
        // In the same tick as the check: a waiter arriving later finds no queue and starts its own.
        this.#queues.delete(account);
        return;
      }
      const outcome = await this.#try(account, head.spec, head.records);
      if (head.settled) {
        // Aborted (or closed) while Redis answered: a slot granted meanwhile goes back at once.
        if ("permit" in outcome) outcome.permit.release();
        continue;
      }
      if ("permit" in outcome) {
        queue.waiters.shift();
        this.#settle(head, () => head.resolve(outcome.permit));
      } else if ("error" in outcome) {
        this.#rejectLimited(queue, outcome.error);
      } else {
        queue.wakeOnRelease = outcome.busy === true;
        await this.#nap(queue, Math.min(outcome.waitMs, this.#maxWaitMs));
      }
    }
  }

  async #try(account: string, spec: LimitSpec, records: number): Promise<Outcome> {
    const limited = isLimited(spec);
    if (this.#closed) return { error: new LimitsUnavailableError("partner limits are closed") };
    if (limited) {
      if (!this.#up) return { error: this.#unavailable(account) };
      const holdMs = this.#recoveredAtMs + spec.intervalMs + 1 - Date.now();
      if (holdMs > 0) return { waitMs: holdMs };
    } else if (!this.#up) {
      return this.#tryLocally(account, spec, records);
    }
    const id = `${this.#instanceId}.${(this.#seq++).toString(36)}`;
    const call = this.#scripts.octorelayLimitsAcquire(
      this.#key(account, "log"),
      this.#key(account, "sum"),
      this.#key(account, "run"),
      this.#key(account, "pause"),
      id,
      records,
      Math.max(0, spec.requests),
      Math.max(0, spec.records),
      spec.intervalMs,
      Math.max(0, spec.maxConcurrent),
      this.#leaseMs,
      this.#busyPollMs,
    );
    let reply: [number, number, string?];
    try {
      reply = await this.#bounded(call, (late) => {
        // Granted after we gave up on the answer: hand the slot back rather than let its lease run.
        if (late[0] === 1) this.#grant(account, spec, records, id).release();
      });
    } catch (err) {
      if (!limited) return this.#tryLocally(account, spec, records);
      return { error: this.#unavailable(account, err) };
    }
    if (reply[0] === 1) return { permit: this.#grant(account, spec, records, id) };
    return { waitMs: Math.max(1, reply[1]), busy: reply[2] === "concurrency" };
  }

  /** Redis is down and the partner has no rate limit: this process's own count of its concurrency. */
  #tryLocally(account: string, spec: LimitSpec, records: number): Outcome {
    const pausedMs = (this.#localPauseOf(account)?.untilMs ?? 0) - Date.now();
    if (pausedMs > 0) return { waitMs: pausedMs };
    if (spec.maxConcurrent > 0 && (this.#inFlight.get(account) ?? 0) >= spec.maxConcurrent) {
      return { waitMs: this.#maxWaitMs, busy: true };
    }
    return {
      permit: this.#grant(account, spec, records, `${this.#instanceId}.${(this.#seq++).toString(36)}`),
    };
  }

  #grant(account: string, spec: LimitSpec, records: number, id: string): Permit {
    const held: Held = {
      account,
      id,
      records,
      intervalMs: spec.intervalMs,
      inRun: spec.maxConcurrent > 0,
      inLog: isLimited(spec),
      // A renewal per live permit; unref'd, a lease must not keep the process alive.
      timer: setInterval(() => this.#renew(held), Math.max(1, Math.floor(this.#leaseMs / 3))).unref(),
      released: false,
    };
    this.#held.add(held);
    this.#inFlight.set(account, (this.#inFlight.get(account) ?? 0) + 1);
    return { release: () => this.#release(held) };
  }

  #renew(held: Held): void {
    if (!this.#up || held.released || (!held.inRun && !held.inLog)) return;
    this.#bounded(
      this.#scripts.octorelayLimitsRenew(
        this.#key(held.account, "log"),
        this.#key(held.account, "sum"),
        this.#key(held.account, "run"),
        held.id,
        held.records,
        held.intervalMs,
        this.#leaseMs,
        held.inRun ? 1 : 0,
        held.inLog ? 1 : 0,
      ),
    ).then(
      (missing) => {
        if (missing === 1 && !held.released) {
          this.#log.debug({ account: held.account }, "permit was missing from redis; counted again");
        }
      },
      (err: unknown) =>
        this.#log.debug({ account: held.account, err }, "lease renewal failed; retried on the next tick"),
    );
  }

  #release(held: Held): void {
    if (held.released) return;
    held.released = true;
    clearInterval(held.timer);
    this.#held.delete(held);
    const left = (this.#inFlight.get(held.account) ?? 1) - 1;
    if (left > 0) this.#inFlight.set(held.account, left);
    else this.#inFlight.delete(held.account);
    const queue = this.#queues.get(held.account);
    if (queue?.wakeOnRelease) queue.wake?.();
    if (!held.inRun && !held.inLog) return;
    if (!this.#up) {
      this.#keepRelease(held);
      return;
    }
    this.#sendRelease(held).catch(() => this.#keepRelease(held));
  }

  #sendRelease(held: Held): Promise<number> {
    return this.#bounded(
      this.#scripts.octorelayLimitsRelease(
        this.#key(held.account, "log"),
        this.#key(held.account, "sum"),
        this.#key(held.account, "run"),
        held.id,
        held.records,
        held.intervalMs,
        held.inRun ? 1 : 0,
        held.inLog ? 1 : 0,
      ),
    );
  }

  /** A release that failed is sent again once Redis is back; past the bound, its lease runs out. */
  #keepRelease(held: Held): void {
    if (this.#closed) return;
    this.#pendingReleases.push(held);
    if (this.#pendingReleases.length > this.#maxPendingReleases) this.#pendingReleases.shift();
  }

  /** Recomputes whether the store is usable; on a change, one log line and the listeners told. */
  #update(): void {
    const up = this.#connected && this.#fault === undefined;
    if (up === this.#up || this.#closed) return;
    if (up) this.#becameReachable();
    else this.#becameUnreachable();
  }

  #becameReachable(): void {
    this.#up = true;
    if (this.#everUp) {
      this.#recoveredAtMs = Date.now();
      this.#log.info("partner limits store reachable again");
    } else {
      this.#log.info("partner limits store connected");
    }
    this.#everUp = true;
    this.#lastError = undefined;
    this.#unanswered = 0;
    // Permits in flight through the outage are counted again before any new grant (same connection, in order).
    for (const held of this.#held) this.#renew(held);
    const pending = this.#pendingReleases;
    this.#pendingReleases = [];
    for (const held of pending) this.#sendRelease(held).catch(() => {});
    this.#emitHealth();
    for (const queue of this.#queues.values()) queue.wake?.();
  }

  #becameUnreachable(): void {
    this.#up = false;
    const { reason } = this.health() as { reason: string };
    this.#log.warn(
      { reason },
      this.#fault?.kind === "refused"
        ? "partner limits store refused the command (NOPERM): rate-limited partners are not called, the others keep a local concurrency bound"
        : "partner limits store unreachable: rate-limited partners are not called, the others keep a local concurrency bound",
    );
    for (const queue of this.#queues.values()) {
      this.#rejectLimited(queue, this.#unavailable("*"));
      queue.wake?.();
    }
    this.#emitHealth();
  }

  /** One small script while connected: whether the store answers, and runs every command we need. */
  #probe(): void {
    if (this.#closed || this.#probing || !this.#connected) return;
    this.#probing = true;
    const key = (part: string) => `${this.#prefix}:{%probe}:${part}`;
    this.#bounded(this.#scripts.octorelayLimitsProbe(key("zset"), key("string"), key("hash")))
      .then(
        () => {
          if (!this.#fault) return;
          this.#fault = undefined;
          this.#update();
        },
        // Counted by #bounded (unanswered, refused); a lost connection shows as its close.
        () => {},
      )
      .finally(() => {
        this.#probing = false;
      });
  }

  /**
   * A call or probe not answered within callTimeoutMs. After unansweredLimit in a row the store is
   * unreachable, and the connection is reset: one whose other end vanished without closing it
   * would hang until TCP keepalive gives up (hours), while a new one reaches whatever answers now.
   */
  #noAnswer(): void {
    this.#unanswered++;
    if (this.#closed || this.#fault || !this.#connected || this.#unanswered < this.#unansweredLimit) return;
    this.#fault = {
      kind: "unanswered",
      reason: `redis unreachable: no answer within ${this.#callTimeoutMs} ms to ${this.#unanswered} calls in a row with the connection open; reconnecting`,
    };
    this.#update();
    this.#redis.disconnect(true);
  }

  /** The store answered, refusing our command (ACL): unusable until a probe finds every command allowed. */
  #refused(err: Error): void {
    if (this.#closed) return;
    const said = err.message.replace(/^NOPERM\s*/, "");
    this.#fault = {
      kind: "refused",
      reason: `redis refused the command (NOPERM): the ACL user needs +@all (or the script commands) on ${this.#prefix}:*; redis said ${JSON.stringify(said)}`,
    };
    this.#update();
  }

  #emitHealth(): void {
    const health = this.health();
    for (const listener of this.#healthListeners) {
      try {
        listener(health);
      } catch (err) {
        this.#log.warn({ err }, "partner limits health listener threw");
      }
    }
  }

  /** Rejects the waiters of rate-limited partners; those without a rate limit go on locally. */
  #rejectLimited(queue: Queue, error: Error): void {
    queue.waiters = queue.waiters.filter((waiter) => {
      if (!isLimited(waiter.spec)) return true;
      this.#settle(waiter, () => waiter.reject(error));
      return false;
    });
  }

  #settle(waiter: Waiter, settle: () => void): void {
    waiter.settled = true;
    waiter.signal.removeEventListener("abort", waiter.onAbort);
    settle();
  }

  #nap(queue: Queue, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        queue.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      queue.wake = done;
    });
  }

  /**
   * `call`, or a rejection once callTimeoutMs passed; `late` sees an answer that came after that.
   * Every outcome tells the health: answered, not answered, or refused (NOPERM).
   */
  #bounded<T>(call: Promise<T>, late?: (value: T) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        this.#noAnswer();
        reject(new UnansweredError(`redis did not answer within ${this.#callTimeoutMs} ms`));
      }, this.#callTimeoutMs);
      call.then(
        (value) => {
          clearTimeout(timer);
          this.#unanswered = 0;
          if (timedOut) late?.(value);
          else resolve(value);
        },
        (err: unknown) => {
          clearTimeout(timer);
          if (timedOut) return;
          if (isUnanswered(err)) this.#noAnswer();
          else if (isRefusal(err)) this.#refused(err as Error);
          reject(err);
        },
      );
    });
  }

  /** Why a call cannot be made now: the cause's message, or the health's reason; a refusal is explained. */
  #why(cause?: unknown): string {
    if (cause instanceof Error && !isRefusal(cause)) return cause.message;
    return (this.health() as { reason?: string }).reason ?? "redis unreachable";
  }

  /** What a partner's acquisition gets: it is retried by its dispatcher. */
  #unavailable(account: string, cause?: unknown): LimitsUnavailableError {
    const who = account === "*" ? "rate-limited partners" : `partner ${JSON.stringify(account)}`;
    const retried =
      this.#fault?.kind === "refused" || isRefusal(cause)
        ? "it is retried once redis allows the commands"
        : "it is retried once redis answers again";
    return new LimitsUnavailableError(
      `partner limits unavailable for ${who} (${this.#why(cause)}); ${retried}`,
      cause === undefined ? undefined : { cause },
    );
  }

  /** What a pause or resume gets (an operator's, often): done in this replica only, not retried. */
  #operatorUnavailable(consequence: string, cause?: unknown): LimitsUnavailableError {
    const retry =
      this.#fault?.kind === "refused" || isRefusal(cause)
        ? "try again once the ACL user is allowed the commands"
        : "try again when Redis answers";
    return new LimitsUnavailableError(
      `partner limits unavailable: ${this.#why(cause)}; ${consequence}; ${retry}`,
      cause === undefined ? undefined : { cause },
    );
  }

  #key(account: string, part: "log" | "sum" | "run" | "pause"): string {
    return `${this.#prefix}:{${accountTag(account)}}:${part}`;
  }

  #pausedKey(): string {
    return `${this.#prefix}:paused`;
  }

  #pauseLocally(account: string, pause: Pause): void {
    const local = this.#localPauses.get(account);
    if (local) clearTimeout(local.timer);
    const untilMs = local?.untilMs ?? new Map<PauseReason, number>();
    untilMs.set(pause.reason, Math.max(untilMs.get(pause.reason) ?? 0, pause.untilMs));
    const latest = Math.max(...untilMs.values());
    // Forgotten once over, so paused-then-idle partners cost nothing here either.
    const timer = setTimeout(() => this.#dropLocalPause(account), Math.max(0, latest - Date.now())).unref();
    this.#localPauses.set(account, { untilMs, timer });
  }

  #localPauseOf(account: string): Pause | undefined {
    let found: Pause | undefined;
    for (const [reason, untilMs] of this.#localPauses.get(account)?.untilMs ?? []) {
      if (untilMs > Date.now() && untilMs > (found?.untilMs ?? 0)) found = { untilMs, reason };
    }
    return found;
  }

  #dropLocalPause(account: string): void {
    const local = this.#localPauses.get(account);
    if (!local) return;
    clearTimeout(local.timer);
    this.#localPauses.delete(account);
  }
}

export interface RedisClientOptions {
  /** Logs the URL it connects to, the password as `***`. */
  log?: Logger;
  /** Redis Cluster: the URL names one node, the others are discovered. */
  cluster?: boolean;
  /** Connect timeout and command timeout, ms (default 2,000): a dead Redis fails fast. */
  timeoutMs?: number;
  /** Extra TLS settings for `rediss://` (a private CA, say). */
  tls?: ConnectionOptions;
  connectionName?: string;
}

/**
 * A Redis client for the partner limits from `redis://[user:password@]host[:port][/db]` or
 * `rediss://…` (TLS; AUTH from the URL). Commands fail at once while disconnected (no offline
 * queue, no retry of a command cut by a disconnect) and the client reconnects by itself, forever,
 * with jittered backoff up to 2 s.
 */
export function createRedisClient(url: string, options: RedisClientOptions = {}): Redis | Cluster {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError([
      `redis url: not a URL (${redactRedisUrl(url)}); expected redis://[user:password@]host[:port][/db] or rediss://… for TLS`,
    ]);
  }
  const problems: string[] = [];
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    problems.push(`redis url: scheme must be redis:// or rediss:// (TLS); got ${redactRedisUrl(url)}`);
  }
  const dbText = parsed.pathname.replace(/^\//, "");
  const db = dbText === "" ? 0 : Number(dbText);
  if (!Number.isInteger(db) || db < 0) {
    problems.push(`redis url: the path must be a database number like /0; got ${redactRedisUrl(url)}`);
  }
  if (options.cluster && db !== 0) {
    problems.push(`redis url: Redis Cluster has only database 0; got ${redactRedisUrl(url)}`);
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const host = parsed.hostname.replace(/^\[|\]$/g, "");
  const port = parsed.port ? Number(parsed.port) : 6379;
  const tls = parsed.protocol === "rediss:" ? { servername: host, ...options.tls } : undefined;
  const timeoutMs = options.timeoutMs ?? 2_000;
  const retry = (attempt: number) => backoffMs(attempt, 100, 2_000);
  const connection: RedisOptions = {
    username: parsed.username ? decodeURIComponent(parsed.username) : undefined,
    password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
    tls,
    connectionName: options.connectionName ?? "octorelay-limits",
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    retryStrategy: retry,
  };
  options.log?.info(
    { redis: redactRedisUrl(url), cluster: options.cluster === true },
    "connecting to the partner limits store",
  );
  // Errors show in health() and in one log line per outage; unheard, ioredis would print each retry.
  const quiet = () => {};
  if (options.cluster) {
    return new Cluster([{ host, port }], {
      redisOptions: connection,
      enableOfflineQueue: false,
      clusterRetryStrategy: retry,
      // Behind TLS the certificate names the host, not the addresses it resolves to.
      ...(tls ? { dnsLookup: (address, callback) => callback(null, address) } : {}),
    }).on("error", quiet);
  }
  return new Redis({ ...connection, host, port, db }).on("error", quiet);
}

/** The URL with its password as `***`, for logs and errors. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable URL, not shown)";
  }
}

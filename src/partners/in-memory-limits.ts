import { LimitsUnavailableError } from "../errors.ts";
import { timerMs } from "../sleep.ts";
import type { LimitSpec, PartnerLimits, Pause, PauseReason, Permit } from "./partner-limits.ts";
import { type WindowDone, WindowLimiter } from "./rate-limiter.ts";

/** One account's limits while they matter; dropped once nothing is in flight, counted or paused. */
interface AccountState {
  /** Acquires begun and not yet released or failed: the state is not dropped under them. */
  busy: number;
  /** Concurrency slots taken, and the acquires waiting for one (FIFO). */
  slots: number;
  readonly slotWaiters: (() => void)[];
  /** Built by the first acquire, with its spec: a profile is fixed for the life of the process. */
  windows: { requests: WindowLimiter | undefined; records: WindowLimiter | undefined } | undefined;
  /** End of each kind of pause in force, so lifting an operator pause leaves a Retry-After one. */
  readonly pauses: Map<PauseReason, number>;
  /** Acquires waiting out a pause, woken early by resume(). */
  readonly pauseWaiters: Set<() => void>;
  /** Drops the state once its window and pause are over; unref'd, it never keeps the process up. */
  dropTimer: NodeJS.Timeout | undefined;
}

/**
 * The limits layer kept in this process: per account, at most `maxConcurrent` requests at once
 * (FIFO), at most `requests` requests and `records` records in any window of `intervalMs` as the
 * partner counts them (WindowLimiter: a request counts from its start until `intervalMs` after it
 * completes), and no request while a pause is in force.
 *
 * State is keyed by account, not held by a Partner object, and is kept only while it matters: a
 * request waiting or in flight, a window not yet expired, a pause not over. So a partner whose
 * dispatchers stop between messages is still held to the window it used, and idle accounts cost
 * nothing. The window before `startedAtMs` counts as full, so a restart never doubles a window.
 */
export class InMemoryPartnerLimits implements PartnerLimits {
  readonly #startedAtMs: number;
  readonly #accounts = new Map<string, AccountState>();
  #closed = false;

  /** `startedAtMs`: when this process started (default now); the window before it counts as full. */
  constructor(options: { startedAtMs?: number } = {}) {
    this.#startedAtMs = options.startedAtMs ?? Date.now();
  }

  /** Accounts whose limits are remembered now (for tests and metrics: it follows active accounts). */
  get accounts(): number {
    return this.#accounts.size;
  }

  async acquire(account: string, spec: LimitSpec, records: number, signal: AbortSignal): Promise<Permit> {
    if (this.#closed) throw new LimitsUnavailableError("partner limits are closed (the process is stopping)");
    signal.throwIfAborted();
    const state = this.#state(account);
    state.busy++;
    let requestDone: WindowDone | undefined;
    let recordsDone: WindowDone | undefined;
    let slot = false;
    try {
      await this.#slot(state, spec.maxConcurrent, signal);
      slot = true;
      await this.#unpaused(state, signal);
      state.windows ??= {
        requests:
          spec.requests > 0
            ? new WindowLimiter(spec.requests, spec.intervalMs, this.#startedAtMs)
            : undefined,
        records:
          spec.records > 0 ? new WindowLimiter(spec.records, spec.intervalMs, this.#startedAtMs) : undefined,
      };
      // A request slot is held while records are awaited: conservative, never over either limit.
      requestDone = await state.windows.requests?.acquire(1, signal);
      recordsDone = await state.windows.records?.acquire(records, signal);
      // A pause that began while this waited for the windows still holds it back.
      await this.#unpaused(state, signal);
    } catch (err) {
      requestDone?.(false);
      recordsDone?.(false);
      if (slot) this.#freeSlot(state);
      state.busy--;
      this.#settle(account, state);
      throw err;
    }
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        requestDone?.();
        recordsDone?.();
        this.#freeSlot(state);
        state.busy--;
        this.#settle(account, state);
      },
    };
  }

  async pause(account: string, pause: Pause): Promise<void> {
    if (pause.untilMs <= Date.now()) return;
    const state = this.#state(account);
    state.pauses.set(pause.reason, Math.max(state.pauses.get(pause.reason) ?? 0, pause.untilMs));
    this.#settle(account, state);
  }

  async resume(account: string): Promise<void> {
    const state = this.#accounts.get(account);
    if (!state?.pauses.delete("operator")) return;
    for (const wake of [...state.pauseWaiters]) wake();
    this.#settle(account, state);
  }

  async pauseOf(account: string): Promise<Pause | undefined> {
    const state = this.#accounts.get(account);
    return state ? pauseIn(state, Date.now()) : undefined;
  }

  async pausedAccounts(): Promise<{ account: string; pause: Pause }[]> {
    const nowMs = Date.now();
    const paused: { account: string; pause: Pause }[] = [];
    for (const [account, state] of this.#accounts) {
      const untilMs = state.pauses.get("operator");
      if (untilMs !== undefined && untilMs > nowMs)
        paused.push({ account, pause: { reason: "operator", untilMs } });
    }
    return paused;
  }

  health(): { ok: true } | { ok: false; reason: string } {
    return this.#closed ? { ok: false, reason: "unavailable: partner limits are closed" } : { ok: true };
  }

  /** Forgets every account; later acquires reject with LimitsUnavailableError. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const state of this.#accounts.values()) clearTimeout(state.dropTimer);
    this.#accounts.clear();
  }

  #state(account: string): AccountState {
    let state = this.#accounts.get(account);
    if (!state) {
      state = {
        busy: 0,
        slots: 0,
        slotWaiters: [],
        windows: undefined,
        pauses: new Map(),
        pauseWaiters: new Set(),
        dropTimer: undefined,
      };
      this.#accounts.set(account, state);
    }
    clearTimeout(state.dropTimer);
    state.dropTimer = undefined;
    return state;
  }

  /** Waits for one of the account's `maxConcurrent` slots, in arrival order. */
  #slot(state: AccountState, maxConcurrent: number, signal: AbortSignal): Promise<void> {
    if (state.slots < maxConcurrent && state.slotWaiters.length === 0) {
      state.slots++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const granted = () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = () => {
        const i = state.slotWaiters.indexOf(granted);
        if (i >= 0) state.slotWaiters.splice(i, 1);
        reject(signal.reason);
      };
      state.slotWaiters.push(granted);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** A slot is handed straight to the next in line, so a newcomer cannot jump the queue. */
  #freeSlot(state: AccountState): void {
    const next = state.slotWaiters.shift();
    if (next) next();
    else state.slots--;
  }

  /** Resolves once no pause is in force (a pause ends at `untilMs`); rejects when aborted. */
  async #unpaused(state: AccountState, signal: AbortSignal): Promise<void> {
    for (let pause = pauseIn(state, Date.now()); pause; pause = pauseIn(state, Date.now())) {
      const untilMs = pause.untilMs;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(wake, timerMs(untilMs - Date.now()));
        signal.addEventListener("abort", wake, { once: true });
        state.pauseWaiters.add(wake);
        function wake() {
          clearTimeout(timer);
          signal.removeEventListener("abort", wake);
          state.pauseWaiters.delete(wake);
          resolve();
        }
      });
      signal.throwIfAborted();
    }
  }

  /** Drops the account's state now if nothing of it matters, or arms a timer for when nothing will. */
  #settle(account: string, state: AccountState): void {
    if (this.#accounts.get(account) !== state || state.busy > 0) return;
    const nowMs = Date.now();
    for (const [reason, untilMs] of state.pauses) if (untilMs <= nowMs) state.pauses.delete(reason);
    let keepUntilMs = Math.max(0, ...state.pauses.values());
    if (state.windows?.requests) keepUntilMs = Math.max(keepUntilMs, state.windows.requests.quietAtMs());
    if (state.windows?.records) keepUntilMs = Math.max(keepUntilMs, state.windows.records.quietAtMs());
    clearTimeout(state.dropTimer);
    state.dropTimer = undefined;
    if (keepUntilMs <= nowMs) {
      this.#accounts.delete(account);
      return;
    }
    state.dropTimer = setTimeout(() => this.#settle(account, state), timerMs(keepUntilMs - nowMs));
    state.dropTimer.unref();
  }
}

/** The pause in force at `nowMs`: the one ending last. */
function pauseIn(state: AccountState, nowMs: number): Pause | undefined {
  let found: Pause | undefined;
  for (const [reason, untilMs] of state.pauses) {
    if (untilMs > nowMs && (!found || untilMs > found.untilMs)) found = { reason, untilMs };
  }
  return found;
}

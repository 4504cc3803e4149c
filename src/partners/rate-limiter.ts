/**
 * A sliding-window limit that holds at the receiving end: at most `limit` units (requests, or
 * records) in any window of `intervalMs` as the partner counts them. A throttle that only spaces out
 * request starts cannot promise that, because one request may be delayed on its way (a busy event
 * loop, a slow connection) and land in the same window as a later one. Here a request counts from
 * its start until `intervalMs` after it completes, so wherever it arrived in between, no window at
 * the partner can hold more than `limit`. The cost is the request latency on top of each window.
 */
import { timerMs } from "../sleep.ts";

/** Call once the request completed; `sent: false` when it was never sent, so it does not count. */
export type WindowDone = (sent?: boolean) => void;

interface Waiter {
  weight: number;
  grant: (done: WindowDone) => void;
}

export class WindowLimiter {
  readonly #limit: number;
  readonly #intervalMs: number;
  /** Requests counted now: in flight (endMs = Infinity) or completed within the last window. */
  #entries: { weight: number; endMs: number }[];
  readonly #waiting: Waiter[] = [];
  #timer: NodeJS.Timeout | undefined;

  /** `startFullAtMs`: count the window before this instant as full (a restart cannot double it). */
  constructor(limit: number, intervalMs: number, startFullAtMs?: number) {
    this.#limit = limit;
    this.#intervalMs = intervalMs;
    this.#entries = startFullAtMs === undefined ? [] : [{ weight: limit, endMs: startFullAtMs }];
  }

  /**
   * Resolves, in FIFO order, once `weight` more units fit in the window, with the function to call
   * when the request completes. A weight above the limit is let through alone, or it never could be.
   */
  acquire(weight: number, signal?: AbortSignal): Promise<WindowDone> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.#waiting.indexOf(waiter);
        if (i < 0) return;
        this.#waiting.splice(i, 1);
        reject(signal?.reason);
        // The head of the line may have been what held the others back.
        this.#pump();
      };
      const waiter: Waiter = {
        weight,
        grant: (done) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(done);
        },
      };
      this.#waiting.push(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#pump();
    });
  }

  #pump(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const now = Date.now();
    // A request stays counted through intervalMs after it completed, both ends included, so even
    // a partner counting closed windows [t, t + intervalMs] never sees more than the limit.
    this.#entries = this.#entries.filter((e) => e.endMs >= now - this.#intervalMs);
    let used = this.#entries.reduce((sum, e) => sum + e.weight, 0);
    while (this.#waiting.length > 0) {
      const next = this.#waiting[0] as Waiter;
      if (used > 0 && used + next.weight > this.#limit) break;
      this.#waiting.shift();
      const entry = { weight: next.weight, endMs: Number.POSITIVE_INFINITY };
      this.#entries.push(entry);
      used += next.weight;
      let done = false;
      next.grant((sent = true) => {
        if (done) return;
        done = true;
        if (sent) entry.endMs = Date.now();
        else this.#entries.splice(this.#entries.indexOf(entry), 1);
        this.#pump();
      });
    }
    if (this.#waiting.length === 0) return;
    // Otherwise wake when the earliest completed request leaves the window; a completion also wakes us.
    const expiry = Math.min(...this.#entries.map((e) => e.endMs + this.#intervalMs + 1));
    if (Number.isFinite(expiry))
      this.#timer = setTimeout(() => this.#pump(), Math.max(1, timerMs(expiry - now)));
  }

  /**
   * From when on this limiter remembers nothing: every request counted has left the window and none
   * waits. Infinity while one is in flight or waiting; at or before now when it is quiet already.
   */
  quietAtMs(): number {
    if (this.#waiting.length > 0) return Number.POSITIVE_INFINITY;
    let last = Number.NEGATIVE_INFINITY;
    for (const e of this.#entries) last = Math.max(last, e.endMs);
    return last + this.#intervalMs + 1;
  }
}

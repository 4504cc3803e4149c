/**
 * The longest delay setTimeout takes (2^31 − 1 ms, about 24.8 days). Node turns anything longer into
 * 1 ms (with a TimeoutOverflowWarning), so an unclamped "wait 99999999 s" becomes a hot loop.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A delay setTimeout honours: 0 for anything not above 0 (NaN included), at most MAX_TIMER_MS. */
export function timerMs(ms: number): number {
  return ms > 0 ? Math.min(ms, MAX_TIMER_MS) : 0;
}

/**
 * setTimeout as a promise that an abort cuts short (resolves, never rejects); fake-timer friendly.
 * A delay past MAX_TIMER_MS is waited out in steps of at most that, never cut to 1 ms.
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (!(ms > 0) || signal.aborted) return Promise.resolve();
  if (ms <= MAX_TIMER_MS) return sleepOnce(ms, signal);
  return sleepOnce(MAX_TIMER_MS, signal).then(() => sleep(ms - MAX_TIMER_MS, signal));
}

function sleepOnce(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

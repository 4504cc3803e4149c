import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LimitsUnavailableError } from "../../src/errors.ts";
import { InMemoryPartnerLimits } from "../../src/partners/in-memory-limits.ts";
import type { LimitSpec, Permit } from "../../src/partners/partner-limits.ts";

const START_MS = Date.parse("2025-03-01T12:00:00Z");

const spec = (over: Partial<LimitSpec> = {}): LimitSpec => ({
  requests: 0,
  records: 0,
  intervalMs: 1000,
  maxConcurrent: 1000,
  ...over,
});

const signal = () => new AbortController().signal;

/** Starts an acquire and records when (fake clock) it was granted. */
function track(promise: Promise<Permit>) {
  const entry: { permit?: Permit; atMs?: number; error?: unknown } = {};
  promise.then(
    (permit) => {
      entry.permit = permit;
      entry.atMs = Date.now();
    },
    (error: unknown) => {
      entry.error = error;
    },
  );
  return entry;
}

let limits: InMemoryPartnerLimits;

beforeEach(() => {
  vi.useFakeTimers({ now: START_MS });
  // Started long enough ago that the start-up window is over, unless a test says otherwise.
  limits = new InMemoryPartnerLimits({ startedAtMs: START_MS - 3_600_000 });
});

afterEach(() => {
  vi.useRealTimers();
});

describe("InMemoryPartnerLimits: concurrency", () => {
  it("grants at most maxConcurrent permits at once, in arrival order", async () => {
    const s = spec({ maxConcurrent: 2 });
    const grants = Array.from({ length: 5 }, () => track(limits.acquire("acme", s, 1, signal())));
    await vi.advanceTimersByTimeAsync(0);
    expect(grants.map((g) => g.permit !== undefined)).toEqual([true, true, false, false, false]);

    grants[1]?.permit?.release();
    await vi.advanceTimersByTimeAsync(0);
    expect(grants.map((g) => g.permit !== undefined)).toEqual([true, true, true, false, false]);
    // Releasing twice frees one slot, not two.
    grants[1]?.permit?.release();
    await vi.advanceTimersByTimeAsync(0);
    expect(grants[3]?.permit).toBeUndefined();

    grants[0]?.permit?.release();
    await vi.advanceTimersByTimeAsync(0);
    expect(grants.map((g) => g.permit !== undefined)).toEqual([true, true, true, true, false]);
  });

  it("keeps accounts apart", async () => {
    const s = spec({ maxConcurrent: 1 });
    const a = track(limits.acquire("acme", s, 1, signal()));
    const b = track(limits.acquire("globex", s, 1, signal()));
    await vi.advanceTimersByTimeAsync(0);
    expect(a.permit).toBeDefined();
    expect(b.permit).toBeDefined();
  });

  it("an aborted wait rejects with the signal's reason and gives its place to the next", async () => {
    const s = spec({ maxConcurrent: 1 });
    const first = track(limits.acquire("acme", s, 1, signal()));
    const controller = new AbortController();
    const aborted = track(limits.acquire("acme", s, 1, controller.signal));
    const third = track(limits.acquire("acme", s, 1, signal()));
    await vi.advanceTimersByTimeAsync(0);
    const reason = new Error("stopping");
    controller.abort(reason);
    await vi.advanceTimersByTimeAsync(0);
    expect(aborted.error).toBe(reason);
    first.permit?.release();
    await vi.advanceTimersByTimeAsync(0);
    expect(third.permit).toBeDefined();
  });
});

describe("InMemoryPartnerLimits: rate limits", () => {
  it("counts a request from its start until intervalMs after it completes", async () => {
    const s = spec({ requests: 1, intervalMs: 1000 });
    const first = await limits.acquire("acme", s, 1, signal());
    const second = track(limits.acquire("acme", s, 1, signal()));
    // In flight for 5 s: nothing else may start, however long ago it started.
    await vi.advanceTimersByTimeAsync(5000);
    expect(second.permit).toBeUndefined();
    first.release();
    await vi.advanceTimersByTimeAsync(1000);
    expect(second.permit).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(second.atMs).toBe(START_MS + 5000 + 1001);
  });

  it("never grants more than `records` records in a window; a batch above the limit goes alone", async () => {
    const s = spec({ records: 10, intervalMs: 1000 });
    const a = await limits.acquire("acme", s, 6, signal());
    const b = track(limits.acquire("acme", s, 6, signal()));
    a.release();
    await vi.advanceTimersByTimeAsync(1001);
    expect(b.atMs).toBe(START_MS + 1001);
    b.permit?.release();
    const big = track(limits.acquire("acme", s, 25, signal()));
    await vi.advanceTimersByTimeAsync(1001);
    expect(big.atMs).toBe(START_MS + 2002);
  });

  it("counts the window before startedAtMs as full (a restart cannot double a window)", async () => {
    const fresh = new InMemoryPartnerLimits({ startedAtMs: Date.now() });
    const first = track(fresh.acquire("acme", spec({ requests: 5, intervalMs: 1000 }), 1, signal()));
    await vi.advanceTimersByTimeAsync(1000);
    expect(first.permit).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(first.atMs).toBe(START_MS + 1001);
    // Unlimited partners are not held back by it.
    const unlimited = track(fresh.acquire("globex", spec(), 1, signal()));
    await vi.advanceTimersByTimeAsync(0);
    expect(unlimited.atMs).toBe(START_MS + 1001);
  });

  it("a wait aborted after its request window was granted does not use up that window", async () => {
    const s = spec({ requests: 2, records: 10, intervalMs: 1000 });
    const holder = await limits.acquire("acme", s, 10, signal());
    holder.release();
    // Granted the second request of the window, then held back by the records window.
    const controller = new AbortController();
    const waiting = track(limits.acquire("acme", s, 5, controller.signal));
    await vi.advanceTimersByTimeAsync(500);
    controller.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect(waiting.error).toBeDefined();
    // That request was never sent, so the window still has room for one.
    const next = track(limits.acquire("acme", s, 0, signal()));
    await vi.advanceTimersByTimeAsync(0);
    expect(next.atMs).toBe(START_MS + 500);
  });
});

describe("InMemoryPartnerLimits: pauses", () => {
  it("grants nothing before a pause ends, and keeps the later of two pauses", async () => {
    await limits.pause("acme", { reason: "retry-after", untilMs: START_MS + 5000 });
    await limits.pause("acme", { reason: "retry-after", untilMs: START_MS + 1000 });
    expect(await limits.pauseOf("acme")).toEqual({ reason: "retry-after", untilMs: START_MS + 5000 });
    const waiting = track(limits.acquire("acme", spec(), 1, signal()));
    await vi.advanceTimersByTimeAsync(4999);
    expect(waiting.permit).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(waiting.atMs).toBe(START_MS + 5000);
    expect(await limits.pauseOf("acme")).toBeUndefined();
  });

  it("holds back a request whose windows were granted before the pause began", async () => {
    const s = spec({ maxConcurrent: 1 });
    const first = await limits.acquire("acme", s, 1, signal());
    const second = track(limits.acquire("acme", s, 1, signal()));
    await limits.pause("acme", { reason: "retry-after", untilMs: START_MS + 3000 });
    first.release();
    await vi.advanceTimersByTimeAsync(2999);
    expect(second.permit).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(second.atMs).toBe(START_MS + 3000);
  });

  it("resume lifts an operator pause early, but a Retry-After pause runs its course", async () => {
    await limits.pause("acme", { reason: "operator", untilMs: START_MS + 60_000 });
    await limits.pause("acme", { reason: "retry-after", untilMs: START_MS + 2000 });
    expect(await limits.pauseOf("acme")).toEqual({ reason: "operator", untilMs: START_MS + 60_000 });
    const waiting = track(limits.acquire("acme", spec(), 1, signal()));
    await vi.advanceTimersByTimeAsync(1000);
    await limits.resume("acme");
    expect(await limits.pauseOf("acme")).toEqual({ reason: "retry-after", untilMs: START_MS + 2000 });
    await vi.advanceTimersByTimeAsync(999);
    expect(waiting.permit).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(waiting.atMs).toBe(START_MS + 2000);
  });

  it("an aborted wait for a pause rejects at once", async () => {
    await limits.pause("acme", { reason: "breaker", untilMs: START_MS + 60_000 });
    const controller = new AbortController();
    const waiting = track(limits.acquire("acme", spec(), 1, controller.signal));
    await vi.advanceTimersByTimeAsync(10);
    controller.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect((waiting.error as Error).name).toBe("AbortError");
  });

  it("lists the accounts under an operator pause with that pause, until resumed or over", async () => {
    await limits.pause("acme", { reason: "operator", untilMs: START_MS + 60_000 });
    await limits.pause("acme", { reason: "retry-after", untilMs: START_MS + 90_000 });
    await limits.pause("globex", { reason: "operator", untilMs: START_MS + 5_000 });
    // Retry-After and breaker pauses are short and not an operator's: not listed.
    await limits.pause("initech", { reason: "retry-after", untilMs: START_MS + 60_000 });
    await limits.pause("umbrella", { reason: "breaker", untilMs: START_MS + 60_000 });
    const listed = async () =>
      (await limits.pausedAccounts()).sort((a, b) => (a.account < b.account ? -1 : 1));
    expect(await listed()).toEqual([
      { account: "acme", pause: { reason: "operator", untilMs: START_MS + 60_000 } },
      { account: "globex", pause: { reason: "operator", untilMs: START_MS + 5_000 } },
    ]);

    await vi.advanceTimersByTimeAsync(5_000);
    expect(await listed()).toEqual([
      { account: "acme", pause: { reason: "operator", untilMs: START_MS + 60_000 } },
    ]);
    await limits.resume("acme");
    expect(await listed()).toEqual([]);
    // Its Retry-After pause still holds it; only the operator's was lifted.
    expect(await limits.pauseOf("acme")).toEqual({ reason: "retry-after", untilMs: START_MS + 90_000 });
  });

  it("waits out a pause longer than setTimeout's largest delay instead of waking in 1 ms", async () => {
    await limits.pause("acme", { reason: "operator", untilMs: START_MS + 99_999_999_000 });
    const timers = vi.spyOn(globalThis, "setTimeout");
    const waiting = track(limits.acquire("acme", spec(), 1, signal()));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(waiting.permit).toBeUndefined();
    // Fake timers overflow like Node's (to 1 ms): unclamped, this would be 60,000 wake-ups.
    expect(timers.mock.calls.length).toBeLessThanOrEqual(2);
    timers.mockRestore();
  });
});

describe("InMemoryPartnerLimits: memory follows active accounts", () => {
  it("keeps an account's state while a request is in flight, a window counts it or a pause runs, then drops it", async () => {
    const s = spec({ requests: 2, intervalMs: 1000 });
    const permit = await limits.acquire("acme", s, 1, signal());
    expect(limits.accounts).toBe(1);
    await vi.advanceTimersByTimeAsync(5000);
    permit.release();
    await vi.advanceTimersByTimeAsync(1000);
    expect(limits.accounts).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(limits.accounts).toBe(0);

    await limits.pause("acme", { reason: "retry-after", untilMs: Date.now() + 3000 });
    expect(limits.accounts).toBe(1);
    await vi.advanceTimersByTimeAsync(3000);
    expect(limits.accounts).toBe(0);
  });

  it("drops an unlimited account's state as soon as its last request completes", async () => {
    const permit = await limits.acquire("acme", spec(), 1, signal());
    expect(limits.accounts).toBe(1);
    permit.release();
    expect(limits.accounts).toBe(0);
  });

  it("10,000 accounts served once hold nothing once their windows are over", async () => {
    const s = spec({ requests: 1, records: 100, intervalMs: 1000 });
    for (let i = 0; i < 10_000; i++) (await limits.acquire(`acct-${i}`, s, 3, signal())).release();
    expect(limits.accounts).toBe(10_000);
    await vi.advanceTimersByTimeAsync(1001);
    expect(limits.accounts).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("a window outlives the caller that used it: the next request of the account still waits for it", async () => {
    const s = spec({ requests: 1, intervalMs: 20_000 });
    (await limits.acquire("acme", s, 1, signal())).release();
    await vi.advanceTimersByTimeAsync(7000);
    const next = track(limits.acquire("acme", s, 1, signal()));
    await vi.advanceTimersByTimeAsync(13_000);
    expect(next.permit).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(next.atMs).toBe(START_MS + 20_001);
  });
});

describe("InMemoryPartnerLimits: close", () => {
  it("refuses later acquires with LimitsUnavailableError and reports itself unhealthy", async () => {
    expect(limits.health()).toEqual({ ok: true });
    await limits.close();
    await expect(limits.acquire("acme", spec(), 1, signal())).rejects.toBeInstanceOf(LimitsUnavailableError);
    expect(limits.health()).toMatchObject({ ok: false });
  });
});

import type { S3Client } from "@aws-sdk/client-s3";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { DispatchConfig } from "../../src/config.ts";
import type { Batch, Destination } from "../../src/destinations/destination.ts";
import { BreakerOpenError, DeliveryError, LimitsUnavailableError } from "../../src/errors.ts";
import { PartnerDirectory } from "../../src/partners/directory.ts";
import { InMemoryPartnerLimits } from "../../src/partners/in-memory-limits.ts";
import { MAX_RETRY_AFTER_MS, Partner, type PartnerProfile } from "../../src/partners/partner.ts";
import type { PartnerLimits } from "../../src/partners/partner-limits.ts";

const log = pino({ level: "silent" });
const START_MS = Date.parse("2025-03-01T12:00:00Z");

function limits(over: {
  rateLimit?: Partial<PartnerProfile["rateLimit"]>;
  breaker?: Partial<PartnerProfile["breaker"]>;
  maxConcurrentFlushes?: number;
}): PartnerProfile {
  return {
    rateLimit: { requests: 0, records: 0, intervalMs: 1000, ...over.rateLimit },
    breaker: { failures: 1000, cooldownMs: 30_000, ...over.breaker },
    maxConcurrentFlushes: over.maxConcurrentFlushes ?? 1000,
  };
}

function newPartner(over: Parameters<typeof limits>[0] = {}): Partner {
  return new Partner(
    { log, limits: new InMemoryPartnerLimits({ startedAtMs: Date.now() }) },
    "acme",
    limits(over),
  );
}

let batchNo = 0;
function batch(records = 1): Batch {
  const lines = Array.from({ length: records }, (_, i) => `{"n":${i}}\n`);
  return {
    queue: "orders",
    account: "acme",
    batchId: `batch-${++batchNo}`,
    createdAt: new Date(),
    lines,
    bytes: lines.join("").length,
  };
}

interface Call {
  atMs: number;
  batch: Batch;
  settled: boolean;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * A destination recording the fake-clock time and batch of every call. Calls succeed at once, unless
 * `outcome` returns an error to reject with, or "hold" to leave the call pending until the test settles it.
 */
function fakeDestination(outcome: (index: number) => unknown = () => undefined) {
  const calls: Call[] = [];
  let active = 0;
  let maxActive = 0;
  const deliver = vi.fn(
    (b: Batch, _signal: AbortSignal) =>
      new Promise<void>((resolve, reject) => {
        active++;
        maxActive = Math.max(maxActive, active);
        const call: Call = {
          atMs: Date.now(),
          batch: b,
          settled: false,
          resolve: () => {
            call.settled = true;
            active--;
            resolve();
          },
          reject: (err) => {
            call.settled = true;
            active--;
            reject(err);
          },
        };
        calls.push(call);
        const result = outcome(calls.length - 1);
        if (result === "hold") return;
        if (result) call.reject(result);
        else call.resolve();
      }),
  );
  const destination: Destination = { kind: "fake", deliver };
  return {
    destination,
    deliver,
    calls,
    pending: () => calls.filter((c) => !c.settled),
    maxActive: () => maxActive,
  };
}

const retryable = (extra: { retryAfterMs?: number; status?: number } = {}) =>
  new DeliveryError("POST https://partner.example/acme answered 503", {
    destination: "fake",
    account: "acme",
    retryable: true,
    status: 503,
    ...extra,
  });

const refused = () =>
  new DeliveryError("POST https://partner.example/acme answered 400", {
    destination: "fake",
    account: "acme",
    retryable: false,
    status: 400,
  });

/** The largest `weightOf` total of calls falling in any closed window [t, t + windowMs]. */
function maxInWindow(calls: Call[], windowMs: number, weightOf: (c: Call) => number = () => 1): number {
  let max = 0;
  for (const first of calls) {
    const inWindow = calls.filter((c) => c.atMs >= first.atMs && c.atMs <= first.atMs + windowMs);
    max = Math.max(
      max,
      inWindow.reduce((sum, c) => sum + weightOf(c), 0),
    );
  }
  return max;
}

/** Advances the fake clock 1 ms at a time (running timers and promise callbacks) until `done()`. */
async function advanceUntil(done: () => boolean, limitMs = 60_000): Promise<void> {
  for (let elapsed = 0; !done(); elapsed++) {
    if (elapsed > limitMs) throw new Error(`condition not met within ${limitMs} ms of fake time`);
    await vi.advanceTimersByTimeAsync(1);
  }
}

const signal = () => new AbortController().signal;

beforeEach(() => {
  vi.useFakeTimers({ now: START_MS });
});

afterEach(() => {
  vi.useRealTimers();
});

describe("Partner: rate limit", () => {
  it("never lets more than `requests` calls into any window of intervalMs, and keeps close to that rate", async () => {
    const requests = 4;
    const intervalMs = 1000;
    const partner = newPartner({ rateLimit: { requests, intervalMs } });
    const fake = fakeDestination();

    const all = Promise.all(
      Array.from({ length: 5 * requests }, () => partner.deliver(fake.destination, batch(), signal())),
    );
    await advanceUntil(() => fake.calls.length === 5 * requests);
    await all;

    expect(maxInWindow(fake.calls, intervalMs)).toBeLessThanOrEqual(requests);

    // Throughput: a request counts until intervalMs after it completes; with instant calls that is
    // the full limit, and at least 80% of it.
    const first = fake.calls[0]?.atMs as number;
    const last = fake.calls.at(-1)?.atMs as number;
    // Calls go out in bursts, one window apart: count the last burst's window too.
    const perInterval = (fake.calls.length / (last - first + intervalMs)) * intervalMs;
    expect(perInterval).toBeGreaterThanOrEqual(0.8 * requests);
    expect(perInterval).toBeLessThanOrEqual(requests);
  });

  it("never sends more than `records` records in any window, whatever the batch sizes", async () => {
    const records = 20;
    const intervalMs = 1000;
    const partner = newPartner({ rateLimit: { records, intervalMs } });
    const fake = fakeDestination();
    const sizes = [7, 3, 12, 1, 20, 5, 9, 9, 2, 14, 6, 1, 1, 18, 4, 11, 20, 3, 8, 10];
    const total = sizes.reduce((a, b) => a + b, 0);

    const all = Promise.all(sizes.map((n) => partner.deliver(fake.destination, batch(n), signal())));
    await advanceUntil(() => fake.calls.length === sizes.length);
    await all;

    const sent = fake.calls.reduce((sum, c) => sum + c.batch.lines.length, 0);
    expect(sent).toBe(total);
    expect(maxInWindow(fake.calls, intervalMs, (c) => c.batch.lines.length)).toBeLessThanOrEqual(records);
    // And it is not starved: the records went out in about total / records windows.
    const spanMs = (fake.calls.at(-1)?.atMs as number) - (fake.calls[0]?.atMs as number);
    expect(spanMs).toBeLessThanOrEqual(Math.ceil(total / records) * intervalMs * 1.5);
  });

  // Regression: with start-time throttles, the requests limiter stamped a call when it let it go, but
  // the records limiter could then hold it for another window, so it landed beside the requests let go
  // in that later window. Requests now count from their start until a window after they complete.
  it("keeps the requests limit when the records limit also delays batches", async () => {
    const requests = 2;
    const intervalMs = 1000;
    const partner = newPartner({ rateLimit: { requests, records: 10, intervalMs } });
    const fake = fakeDestination();
    const sizes = [10, 1, 1, 1, 1, 1];

    const all = Promise.all(sizes.map((n) => partner.deliver(fake.destination, batch(n), signal())));
    await advanceUntil(() => fake.calls.length === sizes.length);
    await all;

    expect(maxInWindow(fake.calls, intervalMs, (c) => c.batch.lines.length)).toBeLessThanOrEqual(10);
    expect(
      maxInWindow(fake.calls, intervalMs),
      `calls at ${fake.calls.map((c) => c.atMs - START_MS).join(", ")} ms`,
    ).toBeLessThanOrEqual(requests);
  });

  it("sends nothing until one interval after construction when a limit is set (restart safety)", async () => {
    const intervalMs = 1000;
    const partner = newPartner({ rateLimit: { requests: 5, intervalMs } });
    const fake = fakeDestination();

    const sent = partner.deliver(fake.destination, batch(), signal());
    // The window before start counts as full, its end included.
    await vi.advanceTimersByTimeAsync(intervalMs);
    expect(fake.deliver).not.toHaveBeenCalled();

    await vi.advanceTimersByTimeAsync(1);
    await sent;
    expect(fake.deliver).toHaveBeenCalledTimes(1);
    expect(fake.calls[0]?.atMs).toBe(START_MS + intervalMs + 1);
  });

  it("counts the start-up pause from startedAtMs, not from the partner's creation", async () => {
    const intervalMs = 1000;
    const startedAtMs = Date.now();
    await vi.advanceTimersByTimeAsync(600);
    const partner = new Partner(
      { log, limits: new InMemoryPartnerLimits({ startedAtMs }) },
      "acme",
      limits({ rateLimit: { records: 10, intervalMs } }),
    );
    const fake = fakeDestination();

    const sent = partner.deliver(fake.destination, batch(3), signal());
    await advanceUntil(() => fake.calls.length === 1);
    await sent;
    expect(fake.calls[0]?.atMs).toBe(startedAtMs + intervalMs + 1);
  });

  it("sends the first batch at once when no rate limit is set", async () => {
    const partner = newPartner();
    const fake = fakeDestination();

    await partner.deliver(fake.destination, batch(), signal());
    expect(fake.deliver).toHaveBeenCalledTimes(1);
    expect(fake.calls[0]?.atMs).toBe(START_MS);
  });
});

describe("Partner: concurrency", () => {
  it("never has more than maxConcurrentFlushes destination calls in flight", async () => {
    const partner = newPartner({ maxConcurrentFlushes: 2 });
    const fake = fakeDestination(() => "hold");

    const all = Promise.all(
      Array.from({ length: 7 }, () => partner.deliver(fake.destination, batch(), signal())),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(fake.pending()).toHaveLength(2);

    // Settle one at a time; the next waiting batch takes the free slot, never a third.
    while (fake.calls.length < 7 || fake.pending().length > 0) {
      fake.pending()[0]?.resolve();
      await vi.advanceTimersByTimeAsync(0);
      expect(fake.pending().length).toBeLessThanOrEqual(2);
    }
    await all;
    expect(fake.calls).toHaveLength(7);
    expect(fake.maxActive()).toBe(2);
  });

  it("shares the bound between destinations of the same partner", async () => {
    const partner = newPartner({ maxConcurrentFlushes: 3 });
    const a = fakeDestination(() => "hold");
    const b = fakeDestination(() => "hold");

    const all = Promise.all(
      Array.from({ length: 6 }, (_, i) => partner.deliver((i % 2 ? a : b).destination, batch(), signal())),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(a.pending().length + b.pending().length).toBe(3);
    for (const call of [...a.pending(), ...b.pending()]) call.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(a.pending().length + b.pending().length).toBe(3);
    for (const call of [...a.pending(), ...b.pending()]) call.resolve();
    await all;
    expect(a.calls.length + b.calls.length).toBe(6);
  });
});

describe("Partner: circuit breaker", () => {
  async function openBreaker(partner: Partner, failures: number) {
    const fake = fakeDestination(() => retryable());
    for (let i = 0; i < failures; i++) {
      await expect(partner.deliver(fake.destination, batch(), signal())).rejects.toBeInstanceOf(
        DeliveryError,
      );
    }
    return fake;
  }

  it("opens after `failures` retryable errors in a row and then refuses without calling the destination", async () => {
    const partner = newPartner({ breaker: { failures: 3, cooldownMs: 10_000 } });
    const failing = await openBreaker(partner, 3);
    expect(failing.deliver).toHaveBeenCalledTimes(3);
    expect(partner.breakerOpen).toBe(true);
    expect(partner.state()).toBe("breaker-open");
    expect(partner.lastError?.message).toBe("POST https://partner.example/acme answered 503");
    expect(partner.lastError?.atMs).toBe(START_MS);

    const healthy = fakeDestination();
    const refusedCall = partner.deliver(healthy.destination, batch(), signal());
    await expect(refusedCall).rejects.toBeInstanceOf(BreakerOpenError);
    await expect(refusedCall).rejects.toMatchObject({ code: "BREAKER_OPEN", account: "acme" });
    expect(healthy.deliver).not.toHaveBeenCalled();
    expect(failing.deliver).toHaveBeenCalledTimes(3);
    // The partner's own last failure is kept, not the breaker's refusal.
    expect(partner.lastError?.message).toBe("POST https://partner.example/acme answered 503");
  });

  it("lets one probe through after cooldownMs; its success closes the breaker", async () => {
    const partner = newPartner({ breaker: { failures: 2, cooldownMs: 10_000 } });
    await openBreaker(partner, 2);
    const fake = fakeDestination(() => "hold");

    await vi.advanceTimersByTimeAsync(9_999);
    await expect(partner.deliver(fake.destination, batch(), signal())).rejects.toBeInstanceOf(
      BreakerOpenError,
    );
    expect(fake.deliver).not.toHaveBeenCalled();

    await vi.advanceTimersByTimeAsync(1);
    const probe = partner.deliver(fake.destination, batch(), signal());
    const second = partner.deliver(fake.destination, batch(), signal());
    await vi.advanceTimersByTimeAsync(0);
    // Only the probe reaches the partner while it is half-open; the second call waits for its verdict.
    expect(fake.deliver).toHaveBeenCalledTimes(1);
    expect(partner.state()).toBe("breaker-open");

    fake.pending()[0]?.resolve();
    await probe;
    expect(partner.breakerOpen).toBe(false);
    expect(partner.lastError).toBeUndefined();
    expect(partner.state()).toBe("idle");
    partner.dispatchers = 1;
    expect(partner.state()).toBe("active");

    await vi.advanceTimersByTimeAsync(0);
    expect(fake.deliver).toHaveBeenCalledTimes(2);
    fake.pending()[0]?.resolve();
    await second;
  });

  it("re-opens when the probe fails, refusing the calls that waited on it", async () => {
    const partner = newPartner({ breaker: { failures: 2, cooldownMs: 10_000 } });
    await openBreaker(partner, 2);
    await vi.advanceTimersByTimeAsync(10_000);
    const fake = fakeDestination((i) => (i === 0 ? "hold" : undefined));

    const probe = partner.deliver(fake.destination, batch(), signal());
    const waiting = partner.deliver(fake.destination, batch(), signal());
    await vi.advanceTimersByTimeAsync(0);
    fake.pending()[0]?.reject(retryable());

    await expect(probe).rejects.toBeInstanceOf(DeliveryError);
    await expect(waiting).rejects.toBeInstanceOf(BreakerOpenError);
    expect(fake.deliver).toHaveBeenCalledTimes(1);
    expect(partner.state()).toBe("breaker-open");

    // A new cool-down starts from the failed probe.
    await vi.advanceTimersByTimeAsync(9_999);
    await expect(partner.deliver(fake.destination, batch(), signal())).rejects.toBeInstanceOf(
      BreakerOpenError,
    );
    await vi.advanceTimersByTimeAsync(1);
    await partner.deliver(fake.destination, batch(), signal());
    expect(partner.state()).toBe("idle");
  });

  it("does not count batches the partner refuses for good (non-retryable, e.g. 400)", async () => {
    const partner = newPartner({ breaker: { failures: 3, cooldownMs: 10_000 } });
    const fake = fakeDestination(() => refused());

    for (let i = 0; i < 10; i++) {
      await expect(partner.deliver(fake.destination, batch(), signal())).rejects.toMatchObject({
        retryable: false,
        status: 400,
      });
    }
    expect(fake.deliver).toHaveBeenCalledTimes(10);
    expect(partner.breakerOpen).toBe(false);
    expect(partner.state()).toBe("idle");
    expect(partner.lastError?.message).toBe("POST https://partner.example/acme answered 400");

    // Two retryable failures after them are still below the threshold of three.
    await openBreaker(partner, 2);
    expect(partner.state()).toBe("idle");
  });

  it("a success in between resets the count of failures in a row", async () => {
    const partner = newPartner({ breaker: { failures: 3, cooldownMs: 10_000 } });
    await openBreaker(partner, 2);
    await partner.deliver(fakeDestination().destination, batch(), signal());
    expect(partner.lastError).toBeUndefined();
    await openBreaker(partner, 2);
    expect(partner.breakerOpen).toBe(false);
    await openBreaker(partner, 1);
    expect(partner.breakerOpen).toBe(true);
  });
});

describe("Partner: Retry-After", () => {
  it("pauses every later call to the partner, whatever its destination, until the time asked", async () => {
    const partner = newPartner();
    const first = fakeDestination((i) =>
      i === 0 ? retryable({ retryAfterMs: 5000, status: 429 }) : undefined,
    );
    const other = fakeDestination();

    await expect(partner.deliver(first.destination, batch(), signal())).rejects.toMatchObject({
      retryAfterMs: 5000,
    });
    const later = [
      partner.deliver(first.destination, batch(), signal()),
      partner.deliver(other.destination, batch(), signal()),
    ];
    await vi.advanceTimersByTimeAsync(4_999);
    expect(first.deliver).toHaveBeenCalledTimes(1);
    expect(other.deliver).not.toHaveBeenCalled();

    await vi.advanceTimersByTimeAsync(1);
    await Promise.all(later);
    expect(first.calls[1]?.atMs).toBe(START_MS + 5000);
    expect(other.calls[0]?.atMs).toBe(START_MS + 5000);
  });

  it("does not shorten a pause already running when a later Retry-After is shorter", async () => {
    const partner = newPartner({ maxConcurrentFlushes: 2 });
    const fake = fakeDestination((i) => {
      return i === 0 ? "hold" : i === 1 ? retryable({ retryAfterMs: 5000 }) : undefined;
    });
    const a = partner.deliver(fake.destination, batch(), signal());
    await expect(partner.deliver(fake.destination, batch(), signal())).rejects.toBeInstanceOf(DeliveryError);
    fake.pending()[0]?.reject(retryable({ retryAfterMs: 1000 }));
    await expect(a).rejects.toBeInstanceOf(DeliveryError);

    const later = partner.deliver(fake.destination, batch(), signal());
    await vi.advanceTimersByTimeAsync(4_999);
    expect(fake.deliver).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1);
    await later;
    expect(fake.calls[2]?.atMs).toBe(START_MS + 5000);
  });
});

describe("Partner: limits layer", () => {
  it("publishes an opened breaker as a pause, so the account's next Partner (or another replica) waits out the cool-down", async () => {
    const shared = new InMemoryPartnerLimits({ startedAtMs: Date.now() });
    const profile = limits({ breaker: { failures: 2, cooldownMs: 10_000 } });
    const first = new Partner({ log, limits: shared }, "acme", profile);
    const failing = fakeDestination(() => retryable());
    for (let i = 0; i < 2; i++) {
      await expect(first.deliver(failing.destination, batch(), signal())).rejects.toBeInstanceOf(
        DeliveryError,
      );
    }
    expect(first.breakerOpen).toBe(true);
    expect(await shared.pauseOf("acme")).toEqual({ reason: "breaker", untilMs: START_MS + 10_000 });

    // A fresh Partner has a closed breaker of its own, yet the cool-down holds it too.
    const second = new Partner({ log, limits: shared }, "acme", profile);
    const fake = fakeDestination();
    const sent = second.deliver(fake.destination, batch(), signal());
    await vi.advanceTimersByTimeAsync(9_999);
    expect(fake.deliver).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    await sent;
    expect(fake.calls[0]?.atMs).toBe(START_MS + 10_000);
  });

  it("holds a new Partner of the account to the window a forgotten one used", async () => {
    const shared = new InMemoryPartnerLimits({ startedAtMs: Date.now() - 60_000 });
    const profile = limits({ rateLimit: { requests: 1, intervalMs: 20_000 } });
    const fake = fakeDestination();
    await new Partner({ log, limits: shared }, "acme", profile).deliver(fake.destination, batch(), signal());
    await vi.advanceTimersByTimeAsync(7000);
    const next = new Partner({ log, limits: shared }, "acme", profile).deliver(
      fake.destination,
      batch(),
      signal(),
    );
    await advanceUntil(() => fake.calls.length === 2);
    await next;
    expect(fake.calls.map((c) => c.atMs - START_MS)).toEqual([0, 20_001]);
  });

  it("a LimitsUnavailableError from acquire is passed on: the partner is not called, its breaker and last error are untouched", async () => {
    let down = true;
    const inner = new InMemoryPartnerLimits({ startedAtMs: Date.now() - 60_000 });
    const flaky: PartnerLimits = {
      acquire: (...args) =>
        down
          ? Promise.reject(new LimitsUnavailableError("redis: connect ECONNREFUSED"))
          : inner.acquire(...args),
      pause: (...args) => inner.pause(...args),
      resume: (...args) => inner.resume(...args),
      pauseOf: (...args) => inner.pauseOf(...args),
      pausedAccounts: () => inner.pausedAccounts(),
      health: () => (down ? { ok: false, reason: "unavailable: redis down" } : { ok: true }),
      close: () => inner.close(),
    };
    const partner = new Partner({ log, limits: flaky }, "acme", limits({ breaker: { failures: 2 } }));
    const fake = fakeDestination((i) => (i === 0 ? retryable() : undefined));
    down = false;
    await expect(partner.deliver(fake.destination, batch(), signal())).rejects.toBeInstanceOf(DeliveryError);
    const failure = partner.lastError;
    down = true;
    for (let i = 0; i < 5; i++) {
      await expect(partner.deliver(fake.destination, batch(), signal())).rejects.toBeInstanceOf(
        LimitsUnavailableError,
      );
    }
    expect(fake.deliver).toHaveBeenCalledTimes(1);
    expect(partner.breakerOpen).toBe(false);
    expect(partner.lastError).toEqual(failure);
    down = false;
    await partner.deliver(fake.destination, batch(), signal());
    expect(partner.lastError).toBeUndefined();
  });

  it("caps a Retry-After pause at MAX_RETRY_AFTER_MS (15 min)", async () => {
    const partner = newPartner();
    const fake = fakeDestination((i) =>
      i === 0 ? retryable({ retryAfterMs: 3_600_000, status: 429 }) : undefined,
    );
    await expect(partner.deliver(fake.destination, batch(), signal())).rejects.toBeInstanceOf(DeliveryError);
    const later = partner.deliver(fake.destination, batch(), signal());
    await vi.advanceTimersByTimeAsync(MAX_RETRY_AFTER_MS - 1);
    expect(fake.deliver).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    await later;
    expect(fake.calls[1]?.atMs).toBe(START_MS + 15 * 60_000);
  });

  it("records a Retry-After before freeing the slot, so the batch waiting for it does not go out at once", async () => {
    const partner = newPartner({ maxConcurrentFlushes: 1 });
    const fake = fakeDestination((i) => (i === 0 ? "hold" : undefined));
    const first = partner.deliver(fake.destination, batch(), signal());
    const second = partner.deliver(fake.destination, batch(), signal());
    await vi.advanceTimersByTimeAsync(0);
    fake.pending()[0]?.reject(retryable({ retryAfterMs: 5000, status: 429 }));
    await expect(first).rejects.toBeInstanceOf(DeliveryError);
    await vi.advanceTimersByTimeAsync(4_999);
    expect(fake.deliver).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    await second;
    expect(fake.calls[1]?.atMs).toBe(START_MS + 5000);
  });

  it("waitSignal cuts short the wait for the limits, never a call under way", async () => {
    const partner = newPartner({ maxConcurrentFlushes: 1 });
    const fake = fakeDestination(() => "hold");
    const wait = new AbortController();
    const running = partner.deliver(fake.destination, batch(), signal(), wait.signal);
    await vi.advanceTimersByTimeAsync(0);
    const waitingWait = new AbortController();
    const waiting = partner.deliver(fake.destination, batch(), signal(), waitingWait.signal);
    await vi.advanceTimersByTimeAsync(0);
    wait.abort();
    waitingWait.abort();
    await expect(waiting).rejects.toMatchObject({ name: "AbortError" });
    expect(fake.calls).toHaveLength(1);
    expect(fake.calls[0]?.settled).toBe(false);
    fake.pending()[0]?.resolve();
    await running;
    expect(partner.lastError).toBeUndefined();
  });
});

describe("PartnerDirectory", () => {
  const dispatch: DispatchConfig = {
    flushIntervalMs: 1000,
    maxRecords: 100,
    maxBytes: 1_000_000,
    emptyFlushLimit: 2,
    maxConcurrentFlushes: 2,
    retryBaseMs: 100,
    retryMaxMs: 1000,
    giveUpAfterMs: 60_000,
    rateLimit: { requests: 0, records: 0, intervalMs: 1000 },
    breaker: { failures: 3, cooldownMs: 10_000 },
    onOutage: "release",
  };

  function directory(options: { limits?: PartnerLimits; recentErrors?: number } = {}) {
    return new PartnerDirectory(
      {
        sqs: {} as SQSClient,
        s3: {} as S3Client,
        log,
        env: {},
        ...(options.limits ? { limits: options.limits } : {}),
      },
      { dispatch, partners: { overrides: new Map(), park: { bucket: "parked", prefix: "parked/" } } },
      options.recentErrors === undefined ? {} : { recentErrors: options.recentErrors },
    );
  }

  it("forgets every partner whose dispatchers stopped, even with a last error; recent errors stay bounded", async () => {
    const partners = directory();
    const refusing = fakeDestination(() => refused());
    for (let i = 0; i < 1500; i++) {
      const account = `acct-${i}`;
      const partner = partners.attach(account);
      await expect(partner.deliver(refusing.destination, batch(), signal())).rejects.toMatchObject({
        status: 400,
      });
      partners.detach(account);
    }
    expect([...partners.partners()]).toHaveLength(0);
    expect([...partners.recentErrors()]).toHaveLength(1000);
    // The oldest fell out; the most recent ones are still there for /partners to show.
    expect(partners.recentError("acct-0")).toBeUndefined();
    expect(partners.recentError("acct-1499")).toEqual({
      message: "POST https://partner.example/acme answered 400",
      atMs: START_MS,
    });
  });

  it("forgets a partner with an open breaker too: the cool-down lives on in the limits", async () => {
    const partners = directory();
    const partner = partners.attach("acme");
    const failing = fakeDestination(() => retryable());
    for (let i = 0; i < 3; i++) {
      await expect(partner.deliver(failing.destination, batch(), signal())).rejects.toBeInstanceOf(
        DeliveryError,
      );
    }
    expect(partner.state()).toBe("breaker-open");
    partners.detach("acme");
    expect([...partners.partners()]).toHaveLength(0);

    const healthy = fakeDestination();
    const sent = partners.attach("acme").deliver(healthy.destination, batch(), signal());
    await advanceUntil(() => healthy.calls.length === 1);
    await sent;
    expect(healthy.calls[0]?.atMs).toBe(START_MS + 10_000);
  });

  it("keeps a live partner's last error, and gives a partner seen again its remembered one until a success", async () => {
    const partners = directory();
    const partner = partners.attach("acme");
    await expect(
      partner.deliver(fakeDestination(() => refused()).destination, batch(), signal()),
    ).rejects.toBeInstanceOf(DeliveryError);
    expect(partners.recentError("acme")?.message).toMatch(/answered 400/);
    partners.detach("acme");
    expect(partners.recentError("acme")?.message).toMatch(/answered 400/);

    const again = partners.attach("acme");
    expect(again).not.toBe(partner);
    expect(again.lastError?.message).toMatch(/answered 400/);
    expect([...partners.recentErrors()]).toHaveLength(0);
    await again.deliver(fakeDestination().destination, batch(), signal());
    expect(again.lastError).toBeUndefined();
    expect(partners.recentError("acme")).toBeUndefined();
  });

  it("keeps a partner with parked batches (they are counted for /partners and metrics)", () => {
    const partners = directory();
    partners.attach("acme").parkedBatches++;
    partners.detach("acme");
    expect([...partners.partners()].map((p) => p.account)).toEqual(["acme"]);
  });

  it("runs every partner through the limits it is given, with maxConcurrentFlushes as maxConcurrent", async () => {
    const inner = new InMemoryPartnerLimits();
    const specs: unknown[] = [];
    const spy: PartnerLimits = {
      acquire: (account, spec, records, sig) => {
        specs.push({ account, spec, records });
        return inner.acquire(account, spec, records, sig);
      },
      pause: (...args) => inner.pause(...args),
      resume: (...args) => inner.resume(...args),
      pauseOf: (...args) => inner.pauseOf(...args),
      pausedAccounts: () => inner.pausedAccounts(),
      health: () => inner.health(),
      close: () => inner.close(),
    };
    const partners = directory({ limits: spy });
    expect(partners.limits).toBe(spy);
    await partners.attach("acme").deliver(fakeDestination().destination, batch(3), signal());
    expect(specs).toEqual([
      { account: "acme", spec: { requests: 0, records: 0, intervalMs: 1000, maxConcurrent: 2 }, records: 3 },
    ]);
  });
});

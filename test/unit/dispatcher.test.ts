import type { S3Client } from "@aws-sdk/client-s3";
import type { SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { DispatchConfig } from "../../src/config.ts";
import type { Batch, Destination } from "../../src/destinations/destination.ts";
import { renderKey } from "../../src/destinations/s3.ts";
import { SqsDestination } from "../../src/destinations/sqs.ts";
import { DeliveryError, LimitsUnavailableError } from "../../src/errors.ts";
import { PartnerDirectory } from "../../src/partners/directory.ts";
import { InMemoryPartnerLimits } from "../../src/partners/in-memory-limits.ts";
import { Partner } from "../../src/partners/partner.ts";
import { Dispatcher, type DispatcherDeps, type DispatcherOptions } from "../../src/pipeline/dispatcher.ts";
import { Router } from "../../src/pipeline/router.ts";
import { MAX_TIMER_MS, sleep } from "../../src/sleep.ts";
import { countedEvents } from "../helpers/relay-events.ts";

const log = pino({ level: "silent" });

interface DeliverCall {
  batch: Batch;
  signal: AbortSignal;
  settled: boolean;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * A destination that records every deliver call. It succeeds at once, unless told to fail the next
 * `failures` calls, or to hold calls (`hold`) until the test settles them by hand; a held call is
 * rejected when its signal aborts, as the SDK does.
 */
class FakeDestination implements Destination {
  readonly kind = "fake";
  readonly calls: DeliverCall[] = [];
  failures = 0;
  failWith: (batch: Batch) => unknown = () => new Error("socket hang up");
  hold = false;
  active = 0;
  maxActive = 0;

  deliver(batch: Batch, signal: AbortSignal): Promise<void> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    return new Promise<void>((resolve, reject) => {
      const call: DeliverCall = {
        batch,
        signal,
        settled: false,
        resolve: () => {
          call.settled = true;
          resolve();
        },
        reject: (err) => {
          call.settled = true;
          reject(err);
        },
      };
      this.calls.push(call);
      if (this.failures > 0) {
        this.failures--;
        call.reject(this.failWith(batch));
      } else if (this.hold) {
        signal.addEventListener("abort", () => call.reject(new Error("aborted")), { once: true });
      } else {
        call.resolve();
      }
    }).finally(() => {
      this.active--;
    });
  }

  get pending(): DeliverCall[] {
    return this.calls.filter((c) => !c.settled);
  }
}

const baseOptions: DispatchConfig = {
  flushIntervalMs: 1000,
  maxRecords: 3,
  maxBytes: 1_000_000,
  emptyFlushLimit: 3,
  maxConcurrentFlushes: 2,
  retryBaseMs: 100,
  retryMaxMs: 1000,
  giveUpAfterMs: 600_000,
  rateLimit: { requests: 0, records: 0, intervalMs: 1000 },
  breaker: { failures: 1000, cooldownMs: 1000 },
  onOutage: "release",
};

/** No limits: the dispatcher's own behaviour, apart from its partner's (tested in partner.test.ts). */
const unlimited = {
  dispatchers: 0,
  deliver: (destination: Destination, batch: Batch, signal: AbortSignal) =>
    destination.deliver(batch, signal),
};

const line = (n: number) => `${JSON.stringify({ n })}\n`;

function setup(
  options: Partial<DispatchConfig> = {},
  destination = new FakeDestination(),
  partner: DispatcherOptions["partner"] = unlimited,
) {
  const { events, stats } = countedEvents();
  const delivered: number[][] = [];
  const onDelivered = vi.fn((tickets: number[]) => {
    delivered.push(tickets);
  });
  const onRejected = vi.fn<DispatcherDeps<number>["outcomes"]["rejected"]>();
  const onAbandoned = vi.fn<DispatcherDeps<number>["outcomes"]["abandoned"]>();
  const onStopped = vi.fn<DispatcherDeps<number>["onStopped"]>();
  const held = { records: 0 };
  const dispatcher = new Dispatcher<number>(
    {
      park: new FakeDestination(),
      log,
      events,
      outcomes: { delivered: onDelivered, rejected: onRejected, abandoned: onAbandoned },
      onStopped,
      held,
    },
    {
      queue: "orders",
      account: "acme",
      dispatch: { ...baseOptions, ...options },
      destination,
      partner,
    },
  );
  const add = (...tickets: number[]) => {
    for (const t of tickets) dispatcher.add({ line: line(t), ticket: t });
  };
  return {
    dispatcher,
    destination,
    stats,
    delivered,
    onDelivered,
    onRejected,
    onAbandoned,
    onStopped,
    add,
    held,
  };
}

/** Lets every pending promise callback run without moving the fake clock. */
const settle = () => vi.advanceTimersByTimeAsync(0);

/** Moves the fake clock a millisecond at a time until `done()`; returns the milliseconds it took. */
async function msUntil(done: () => boolean, limitMs = 60_000): Promise<number> {
  for (let ms = 0; ms <= limitMs; ms++) {
    if (done()) return ms;
    await vi.advanceTimersByTimeAsync(1);
  }
  throw new Error(`condition not met within ${limitMs} ms`);
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("Dispatcher", () => {
  describe("flushes", () => {
    it("as soon as maxRecords are buffered, without waiting for the timer", async () => {
      const { destination, delivered, add } = setup({ maxRecords: 3 });
      add(1, 2);
      await settle();
      expect(destination.calls).toHaveLength(0);
      add(3);
      expect(destination.calls).toHaveLength(1);
      const batch = destination.calls[0]?.batch as Batch;
      expect(batch).toMatchObject({ queue: "orders", account: "acme", lines: [line(1), line(2), line(3)] });
      expect(batch.bytes).toBe(Buffer.byteLength(line(1) + line(2) + line(3)));
      await settle();
      expect(delivered).toEqual([[1, 2, 3]]);
    });

    it("as soon as maxBytes are buffered, keeping each batch within maxBytes", async () => {
      const size = Buffer.byteLength(line(1));
      const { destination, delivered, add } = setup({ maxRecords: 100, maxBytes: size * 2 + 1 });
      add(1, 2);
      await settle();
      expect(destination.calls).toHaveLength(0);
      add(3);
      expect(destination.calls).toHaveLength(1);
      expect(destination.calls[0]?.batch.lines).toEqual([line(1), line(2)]);
      expect(destination.calls[0]?.batch.bytes).toBe(size * 2);
      await settle();
      expect(delivered).toEqual([[1, 2]]);
      // The record that did not fit waits for the timer.
      await vi.advanceTimersByTimeAsync(1000);
      expect(delivered).toEqual([[1, 2], [3]]);
    });

    it("flushes a record larger than maxBytes on its own", async () => {
      const { destination, delivered, add } = setup({ maxRecords: 100, maxBytes: 4 });
      add(1);
      expect(destination.calls).toHaveLength(1);
      expect(destination.calls[0]?.batch.lines).toEqual([line(1)]);
      await settle();
      expect(delivered).toEqual([[1]]);
    });

    it("on the timer: records below the limits go out only after flushIntervalMs", async () => {
      const { destination, delivered, add } = setup({ maxRecords: 3, flushIntervalMs: 1000 });
      add(1, 2);
      await vi.advanceTimersByTimeAsync(999);
      expect(destination.calls).toHaveLength(0);
      expect(delivered).toEqual([]);
      await vi.advanceTimersByTimeAsync(1);
      expect(destination.calls).toHaveLength(1);
      expect(delivered).toEqual([[1, 2]]);
    });

    it("gives onDelivered exactly the tickets of each batch", async () => {
      const { destination, delivered, stats, add } = setup({ maxRecords: 2 });
      add(1, 2, 3, 4, 5);
      await vi.advanceTimersByTimeAsync(1000);
      expect(destination.calls.map((c) => c.batch.lines)).toEqual([
        [line(1), line(2)],
        [line(3), line(4)],
        [line(5)],
      ]);
      expect(delivered).toEqual([[1, 2], [3, 4], [5]]);
      expect(new Set(destination.calls.map((c) => c.batch.batchId)).size).toBe(3);
      expect(stats).toMatchObject({ flushes: 3, flushedRecords: 5, flushFailures: 0 });
    });
  });

  describe("failed flushes", () => {
    it("are retried with backoff under the same batchId (so the same S3 key), acknowledged only on success", async () => {
      const destination = new FakeDestination();
      destination.failures = 2;
      const { delivered, onDelivered, stats, add } = setup(
        { maxRecords: 2, retryBaseMs: 100, retryMaxMs: 1000 },
        destination,
      );
      add(1, 2);
      expect(destination.calls).toHaveLength(1);
      await settle();
      expect(onDelivered).not.toHaveBeenCalled();

      // Attempt 1 failed: the retry waits between retryBaseMs/2 and retryBaseMs.
      const firstWaitMs = await msUntil(() => destination.calls.length === 2);
      expect(firstWaitMs).toBeGreaterThanOrEqual(50);
      expect(firstWaitMs).toBeLessThanOrEqual(100);
      expect(onDelivered).not.toHaveBeenCalled();

      // Attempt 2 failed: now between 100 and 200 ms.
      const secondWaitMs = await msUntil(() => destination.calls.length === 3);
      expect(secondWaitMs).toBeGreaterThanOrEqual(100);
      expect(secondWaitMs).toBeLessThanOrEqual(200);
      await settle();

      expect(delivered).toEqual([[1, 2]]);
      const template = "{queue}/{account}/{yyyy}/{MM}/{dd}/{HH}/{batchId}.ndjson.gz";
      const keys = destination.calls.map((c) => renderKey(template, c.batch));
      expect(new Set(destination.calls.map((c) => c.batch.batchId)).size).toBe(1);
      expect(new Set(keys).size).toBe(1);
      expect(destination.calls.every((c) => c.batch.lines.join("") === line(1) + line(2))).toBe(true);
      expect(stats).toMatchObject({ flushes: 1, flushFailures: 2, flushedRecords: 2 });

      // Nothing is sent again afterwards.
      await vi.advanceTimersByTimeAsync(10_000);
      expect(destination.calls).toHaveLength(3);
      expect(onDelivered).toHaveBeenCalledTimes(1);
    });

    it("keep the dispatcher alive while they are retried", async () => {
      const destination = new FakeDestination();
      destination.failures = 20;
      const { dispatcher, onStopped, add, delivered } = setup(
        { maxRecords: 1, emptyFlushLimit: 2, retryBaseMs: 1000, retryMaxMs: 1000 },
        destination,
      );
      add(1);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(onStopped).not.toHaveBeenCalled();
      expect(dispatcher.lastError).toContain("socket hang up");
      destination.failures = 0;
      await vi.advanceTimersByTimeAsync(20_000);
      expect(delivered).toEqual([[1]]);
      expect(dispatcher.lastError).toBeUndefined();
    });

    it("a non-retryable DeliveryError calls onRejected once with the tickets and is not retried", async () => {
      const destination = new FakeDestination();
      destination.failures = 1;
      const refusal = new DeliveryError("AccessDenied", {
        destination: "fake",
        account: "acme",
        retryable: false,
      });
      destination.failWith = () => refusal;
      const { onRejected, onDelivered, stats, add } = setup({ maxRecords: 2 }, destination);
      add(1, 2);
      await settle();
      expect(onRejected).toHaveBeenCalledTimes(1);
      expect(onRejected).toHaveBeenCalledWith([1, 2], refusal);
      await vi.advanceTimersByTimeAsync(60_000);
      expect(destination.calls).toHaveLength(1);
      expect(onRejected).toHaveBeenCalledTimes(1);
      expect(onDelivered).not.toHaveBeenCalled();
      expect(stats.flushFailures).toBe(1);
    });

    it('are given up after giveUpAfterMs of failing: onAbandoned with "giving-up", once', async () => {
      const destination = new FakeDestination();
      destination.failures = Number.POSITIVE_INFINITY;
      const { onAbandoned, onDelivered, onRejected, add } = setup(
        { maxRecords: 2, retryBaseMs: 1000, retryMaxMs: 1000, giveUpAfterMs: 5000 },
        destination,
      );
      add(1, 2);
      await vi.advanceTimersByTimeAsync(4999);
      expect(onAbandoned).not.toHaveBeenCalled();
      // The next failure at or after 5 s gives up; retries come at most 1 s apart.
      await vi.advanceTimersByTimeAsync(1001);
      expect(onAbandoned).toHaveBeenCalledTimes(1);
      expect(onAbandoned).toHaveBeenCalledWith([1, 2], "giving-up");
      const attempts = destination.calls.length;
      await vi.advanceTimersByTimeAsync(60_000);
      expect(destination.calls).toHaveLength(attempts);
      expect(onDelivered).not.toHaveBeenCalled();
      expect(onRejected).not.toHaveBeenCalled();
    });

    it("a retryable DeliveryError is retried", async () => {
      const destination = new FakeDestination();
      destination.failures = 1;
      destination.failWith = () =>
        new DeliveryError("SlowDown", { destination: "fake", account: "acme", retryable: true });
      const { onRejected, delivered, add } = setup({ maxRecords: 1 }, destination);
      add(1);
      await vi.advanceTimersByTimeAsync(1000);
      expect(destination.calls).toHaveLength(2);
      expect(onRejected).not.toHaveBeenCalled();
      expect(delivered).toEqual([[1]]);
    });
  });

  describe("stopping itself", () => {
    it("stops after emptyFlushLimit empty ticks in a row, not before", async () => {
      const { dispatcher, onStopped } = setup({ emptyFlushLimit: 3, flushIntervalMs: 1000 });
      await vi.advanceTimersByTimeAsync(2999);
      expect(onStopped).not.toHaveBeenCalled();
      expect(dispatcher.stopped).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(onStopped).toHaveBeenCalledTimes(1);
      expect(onStopped).toHaveBeenCalledWith(dispatcher);
      expect(dispatcher.stopped).toBe(true);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(onStopped).toHaveBeenCalledTimes(1);
      expect(vi.getTimerCount()).toBe(0);
    });

    it("a tick that flushes resets the count", async () => {
      const { onStopped, delivered, add } = setup({
        emptyFlushLimit: 3,
        flushIntervalMs: 1000,
        maxRecords: 10,
      });
      await vi.advanceTimersByTimeAsync(2000); // two empty ticks
      add(1);
      await vi.advanceTimersByTimeAsync(1000); // a tick that flushes
      expect(delivered).toEqual([[1]]);
      await vi.advanceTimersByTimeAsync(2999); // two more empty ticks: would be four in all
      expect(onStopped).not.toHaveBeenCalled();
      await vi.advanceTimersByTimeAsync(1); // the third empty tick in a row
      expect(onStopped).toHaveBeenCalledTimes(1);
    });

    it("a tick with a flush still in flight is not empty", async () => {
      const destination = new FakeDestination();
      destination.hold = true;
      const { onStopped, delivered, add } = setup({ emptyFlushLimit: 2, maxRecords: 1 }, destination);
      add(1);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(onStopped).not.toHaveBeenCalled();
      destination.pending[0]?.resolve();
      await settle();
      expect(delivered).toEqual([[1]]);
      await vi.advanceTimersByTimeAsync(1999);
      expect(onStopped).not.toHaveBeenCalled();
      await vi.advanceTimersByTimeAsync(1);
      expect(onStopped).toHaveBeenCalledTimes(1);
    });

    it("refuses add once stopped", async () => {
      const { dispatcher, add } = setup({ emptyFlushLimit: 1 });
      await vi.advanceTimersByTimeAsync(1000);
      expect(dispatcher.stopped).toBe(true);
      expect(() => add(1)).toThrow(/stopped/);
      expect(dispatcher.buffered).toBe(0);
    });
  });

  it("never has more than maxConcurrentFlushes deliveries in flight", async () => {
    const destination = new FakeDestination();
    destination.hold = true;
    const { dispatcher, delivered, add } = setup({ maxRecords: 1, maxConcurrentFlushes: 2 }, destination);
    const tickets = Array.from({ length: 12 }, (_, i) => i + 1);
    add(...tickets);
    expect(destination.active).toBe(2);
    expect(dispatcher.inFlight).toBe(2);
    expect(dispatcher.buffered).toBe(10);
    // Ticks while both slots are busy start nothing.
    await vi.advanceTimersByTimeAsync(3000);
    expect(destination.active).toBe(2);

    let rounds = 0;
    while (destination.pending.length > 0) {
      // Finish the oldest; every other round let a timer tick land in between.
      destination.pending[0]?.resolve();
      await (rounds++ % 2 === 0 ? settle() : vi.advanceTimersByTimeAsync(1000));
      expect(destination.active).toBeLessThanOrEqual(2);
    }
    expect(destination.maxActive).toBe(2);
    expect(delivered.flat()).toEqual(tickets);
  });

  describe("drain", () => {
    it("sends what is buffered at once and resolves when nothing is buffered or in flight", async () => {
      const destination = new FakeDestination();
      destination.hold = true;
      const { dispatcher, delivered, add } = setup({ maxRecords: 2, maxConcurrentFlushes: 1 }, destination);
      add(1, 2, 3, 4, 5);
      expect(destination.calls).toHaveLength(1);
      let drained = false;
      void dispatcher.drain().then(() => {
        drained = true;
      });

      for (const expected of [[1, 2], [3, 4], [5]]) {
        await settle();
        expect(drained).toBe(false);
        expect(destination.pending).toHaveLength(1);
        expect(destination.pending[0]?.batch.lines).toEqual(expected.map(line));
        destination.pending[0]?.resolve();
      }
      await settle();
      expect(drained).toBe(true);
      expect(delivered).toEqual([[1, 2], [3, 4], [5]]);
      expect(dispatcher.buffered).toBe(0);
      expect(dispatcher.inFlight).toBe(0);
    });

    it("does not wait for the timer", async () => {
      const { dispatcher, delivered, add } = setup({ maxRecords: 10, flushIntervalMs: 60_000 });
      add(1, 2);
      await dispatcher.drain();
      expect(delivered).toEqual([[1, 2]]);
    });

    it("waits for a failing flush to be retried until it succeeds", async () => {
      const destination = new FakeDestination();
      destination.failures = 3;
      const { dispatcher, delivered, add } = setup({ maxRecords: 10 }, destination);
      add(1);
      let drained = false;
      void dispatcher.drain().then(() => {
        drained = true;
      });
      await settle();
      expect(drained).toBe(false);
      await vi.advanceTimersByTimeAsync(5000);
      expect(drained).toBe(true);
      expect(delivered).toEqual([[1]]);
    });

    it("resolves at once when there is nothing to send", async () => {
      const { dispatcher } = setup();
      await expect(dispatcher.drain()).resolves.toBeUndefined();
    });
  });

  describe("abandon", () => {
    it("hands the buffered tickets to onAbandoned and stops", async () => {
      const { dispatcher, destination, onAbandoned, onStopped, add } = setup({ maxRecords: 10 });
      add(1, 2, 3);
      dispatcher.abandon();
      expect(onAbandoned).toHaveBeenCalledTimes(1);
      expect(onAbandoned).toHaveBeenCalledWith([1, 2, 3], "stopping");
      expect(onStopped).toHaveBeenCalledTimes(1);
      expect(dispatcher.buffered).toBe(0);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(destination.calls).toHaveLength(0);
      expect(onAbandoned).toHaveBeenCalledTimes(1);
    });

    it("does not call onAbandoned with nothing buffered", () => {
      const { dispatcher, onAbandoned, onStopped } = setup();
      dispatcher.abandon();
      expect(onAbandoned).not.toHaveBeenCalled();
      expect(onStopped).toHaveBeenCalledTimes(1);
    });

    it("cuts a retry backoff short and abandons that batch too", async () => {
      const destination = new FakeDestination();
      destination.failures = 1;
      const { dispatcher, onAbandoned, onDelivered, add } = setup(
        { maxRecords: 2, retryBaseMs: 30_000, retryMaxMs: 30_000 },
        destination,
      );
      add(1, 2); // flushed, fails, now waiting 15-30 s to retry
      add(3); // buffered
      await settle();
      dispatcher.abandon();
      expect(onAbandoned).toHaveBeenCalledWith([3], "stopping");
      await settle();
      expect(onAbandoned).toHaveBeenCalledWith([1, 2], "stopping");
      expect(destination.calls).toHaveLength(1);
      expect(onDelivered).not.toHaveBeenCalled();
    });

    // Regression: sleep() in dispatcher.ts listens for "abort" on a signal that has already aborted, so a
    // delivery that fails *because of* the abort waits out a full backoff before it is abandoned.
    it("abandons an in-flight batch as soon as its delivery is aborted", async () => {
      const destination = new FakeDestination();
      destination.hold = true;
      const { dispatcher, onAbandoned, stats, add } = setup(
        { maxRecords: 2, retryBaseMs: 30_000, retryMaxMs: 30_000 },
        destination,
      );
      add(1, 2);
      expect(destination.pending).toHaveLength(1);
      dispatcher.abandon();
      expect(destination.calls[0]?.signal.aborted).toBe(true);
      await settle();
      expect(onAbandoned).toHaveBeenCalledWith([1, 2], "stopping");
      expect(stats.flushes).toBe(0);
    });
  });
});

describe("Router", () => {
  const routerDispatch: DispatchConfig = { ...baseOptions, retryMaxMs: 400 };

  function setupRouter(destination = new FakeDestination(), ticker?: null) {
    const { events, stats } = countedEvents();
    const delivered: number[] = [];
    const onRejected = vi.fn();
    const onAbandoned = vi.fn();
    const router = new Router<number>(
      {
        resolve: () => ({ dispatch: routerDispatch, destination, partner: { ...unlimited } }),
        park: new FakeDestination(),
        log,
        events,
        outcomes: {
          delivered: (tickets) => {
            delivered.push(...tickets);
          },
          rejected: onRejected,
          abandoned: onAbandoned,
        },
        ...(ticker === null ? { ticker } : {}),
      },
      { queue: "orders" },
    );
    return { router, destination, stats, delivered, onRejected, onAbandoned };
  }

  it("spawns a dispatcher on the first output for an account", () => {
    const { router, stats } = setupRouter();
    expect(router.active).toBe(0);
    router.route("acme", line(1), 1);
    expect(router.active).toBe(1);
    router.route("acme", line(2), 2);
    expect(router.active).toBe(1);
    expect(stats.dispatchersSpawned).toBe(1);
    expect([...router.dispatchers()].map((d) => d.account)).toEqual(["acme"]);
  });

  it("sends each account's outputs through its own dispatcher", async () => {
    const { router, destination, delivered } = setupRouter();
    router.route("acme", line(1), 1);
    router.route("globex", line(2), 2);
    router.route("acme", line(3), 3);
    expect(router.active).toBe(2);
    await vi.advanceTimersByTimeAsync(1000);
    const byAccount = Object.fromEntries(destination.calls.map((c) => [c.batch.account, c.batch.lines]));
    expect(byAccount).toEqual({ acme: [line(1), line(3)], globex: [line(2)] });
    expect(delivered.sort()).toEqual([1, 2, 3]);
  });

  it("forgets a dispatcher that stopped, and spawns a fresh one for the next output", async () => {
    const { router, stats, delivered } = setupRouter();
    router.route("acme", line(1), 1);
    const first = [...router.dispatchers()][0];
    // Tick 1 flushes; ticks 2, 3 and 4 are empty; the third empty tick stops it.
    await vi.advanceTimersByTimeAsync(3999);
    expect(router.active).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(router.active).toBe(0);
    expect(first?.stopped).toBe(true);

    router.route("acme", line(2), 2);
    expect(router.active).toBe(1);
    expect(stats.dispatchersSpawned).toBe(2);
    expect([...router.dispatchers()][0]).not.toBe(first);
    await vi.advanceTimersByTimeAsync(1000);
    expect(delivered).toEqual([1, 2]);
  });

  /**
   * Outputs routed around each dispatcher's stop, over many rounds; returns how often an output
   * landed in the very tick of a stop, before and after it. With `ticker: null` every dispatcher
   * has its own timer, so the stop tick is exact and those races are hit on purpose; with the
   * shared tick wheel (production) ticks land within a slot of it.
   */
  async function handOvers(ticker?: null) {
    const destination = new FakeDestination();
    const { router, stats, delivered, onRejected, onAbandoned } = setupRouter(destination, ticker);
    const interval = routerDispatch.flushIntervalMs;
    // A dispatcher spawned at S flushes at S+I and stops on its last empty tick, at S+(L+1)·I.
    const stopAfter = (routerDispatch.emptyFlushLimit + 1) * interval;
    const routed: number[] = [];
    let next = 1;
    const route = (account: string, count = 1) => {
      for (let i = 0; i < count; i++) {
        routed.push(next);
        router.route(account, line(next), next);
        next++;
      }
    };
    let sameTickBefore = 0;
    let sameTickAfter = 0;

    for (let round = 0; round < 60; round++) {
      const account = round % 3 === 0 ? "globex" : "acme";
      // Every fourth round the destination fails a few times, so flushes are retried mid-hand-over.
      if (round % 4 === 1) destination.failures = 2;
      expect(router.active).toBe(0);
      route(account);
      switch (round % 6) {
        case 0:
          // Scheduled before the dispatcher re-arms for its last tick: runs first in that same tick.
          setTimeout(() => {
            const before = stats.dispatchersSpawned;
            route(account);
            if (stats.dispatchersSpawned === before) sameTickBefore++;
          }, stopAfter);
          break;
        case 1:
          // Scheduled after the dispatcher re-armed for its last tick: runs right after it, same tick.
          setTimeout(
            () =>
              setTimeout(() => {
                const before = stats.dispatchersSpawned;
                route(account);
                if (stats.dispatchersSpawned === before + 1) sameTickAfter++;
              }, interval / 2),
            stopAfter - interval / 2,
          );
          break;
        case 2:
          setTimeout(() => route(account, 4), stopAfter - 1);
          break;
        case 3:
          setTimeout(() => route(account, 2), stopAfter + 1);
          break;
        case 4:
          // A burst in the hand-over tick: the first spawns, the rest join it (one is a size flush).
          setTimeout(() => setTimeout(() => route(account, 5), interval / 2), stopAfter - interval / 2);
          break;
        default:
          // Outputs spread over the dispatcher's life.
          for (const at of [1, interval, interval + 1, stopAfter - interval, stopAfter]) {
            setTimeout(() => route(account), at);
          }
      }
      // Long enough for every dispatcher of this round to flush, retry and stop.
      await vi.advanceTimersByTimeAsync(stopAfter * 4);
    }

    expect(router.active).toBe(0);
    expect(onRejected).not.toHaveBeenCalled();
    expect(onAbandoned).not.toHaveBeenCalled();
    expect(delivered).toHaveLength(routed.length);
    expect(new Set(delivered).size).toBe(routed.length);
    expect([...delivered].sort((a, b) => a - b)).toEqual(routed);
    return { sameTickBefore, sameTickAfter };
  }

  it("delivers every output exactly once across dispatcher hand-overs, including outputs in the stop tick", async () => {
    const races = await handOvers(null);
    expect(races.sameTickBefore).toBeGreaterThan(0);
    expect(races.sameTickAfter).toBeGreaterThan(0);
  });

  it("delivers every output exactly once across hand-overs with the shared tick wheel", async () => {
    await handOvers();
  });
});

/** The account's real delivery stack (limits → breaker → destination) on limits started an hour ago. */
function realPartner(
  options: Partial<DispatchConfig> = {},
  limits = new InMemoryPartnerLimits({ startedAtMs: Date.now() - 3_600_000 }),
) {
  const dispatch = { ...baseOptions, ...options };
  return { limits, partner: new Partner({ log, limits }, "acme", dispatch) };
}

const tooManyRequests = (retryAfterMs: number) =>
  new DeliveryError("POST https://partner.example/acme answered 429", {
    destination: "fake",
    account: "acme",
    retryable: true,
    status: 429,
    retryAfterMs,
  });

describe("Dispatcher: the give-up bound wins over any wait", () => {
  it("gives a batch up at giveUpAfterMs, not after a Retry-After of an hour", async () => {
    const options = { maxRecords: 2, giveUpAfterMs: 5000 };
    const destination = new FakeDestination();
    destination.failures = Number.POSITIVE_INFINITY;
    destination.failWith = () => tooManyRequests(3_600_000);
    const { partner } = realPartner(options);
    const { onAbandoned, add } = setup(options, destination, partner);
    add(1, 2);
    const ms = await msUntil(() => onAbandoned.mock.calls.length > 0, 60_000);
    expect(ms).toBe(5000);
    expect(onAbandoned).toHaveBeenCalledWith([1, 2], "giving-up");
    expect(destination.calls).toHaveLength(1);
  });

  it("a Retry-After of 99999999 s is no hot loop: one request, then the batch is given up at giveUpAfterMs", async () => {
    const options = { maxRecords: 2, giveUpAfterMs: 5000 };
    const destination = new FakeDestination();
    destination.failures = Number.POSITIVE_INFINITY;
    destination.failWith = () => tooManyRequests(99_999_999_000);
    const { partner } = realPartner(options);
    const { onAbandoned, add } = setup(options, destination, partner);
    add(1, 2);
    await vi.advanceTimersByTimeAsync(5000);
    expect(destination.calls.length).toBeLessThanOrEqual(2);
    expect(onAbandoned).toHaveBeenCalledWith([1, 2], "giving-up");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(destination.calls.length).toBeLessThanOrEqual(2);
  });

  it("gives up at giveUpAfterMs while its retry waits for the partner's limits (a pause set elsewhere)", async () => {
    const options = { maxRecords: 2, giveUpAfterMs: 5000, retryBaseMs: 100, retryMaxMs: 100 };
    const destination = new FakeDestination();
    destination.failures = 1;
    const { limits, partner } = realPartner(options);
    const { onAbandoned, onDelivered, add } = setup(options, destination, partner);
    add(1, 2);
    await settle();
    // Another replica's breaker (or an operator) pauses the partner for an hour.
    await limits.pause("acme", { reason: "operator", untilMs: Date.now() + 3_600_000 });
    const ms = await msUntil(() => onAbandoned.mock.calls.length > 0, 60_000);
    expect(ms).toBe(5000);
    expect(onAbandoned).toHaveBeenCalledWith([1, 2], "giving-up");
    expect(destination.calls).toHaveLength(1);
    expect(onDelivered).not.toHaveBeenCalled();
  });

  it("a wait for a rate window is not failing time: a batch that never failed is not given up", async () => {
    const options = {
      maxRecords: 2,
      giveUpAfterMs: 5000,
      rateLimit: { requests: 1, records: 0, intervalMs: 20_000 },
    };
    const { partner } = realPartner(options);
    const { onAbandoned, delivered, add } = setup(options, new FakeDestination(), partner);
    add(1, 2);
    await settle();
    add(3, 4);
    // The second batch waits ~20 s for the window, four times giveUpAfterMs, and still goes.
    await vi.advanceTimersByTimeAsync(25_000);
    expect(onAbandoned).not.toHaveBeenCalled();
    expect(delivered).toEqual([
      [1, 2],
      [3, 4],
    ]);
  });

  it("a pause is an outage: a batch waiting out an operator pause is released at giveUpAfterMs", async () => {
    const options = { maxRecords: 2, giveUpAfterMs: 5000 };
    const { limits, partner } = realPartner(options);
    await limits.pause("acme", { reason: "operator", untilMs: Date.now() + 3_600_000 });
    const { onAbandoned, delivered, add } = setup(options, new FakeDestination(), partner);
    add(1, 2);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(delivered).toEqual([]);
    expect(onAbandoned).toHaveBeenCalledWith([1, 2], "giving-up");
  });
});

describe("Dispatcher: giving up on a partly delivered batch", () => {
  it("parks only the entries an SQS partner never took, so a replay sends none of them twice", async () => {
    // The partner's queue takes every entry but the first, on every call.
    const send = async (command: SendMessageBatchCommand) => {
      const entries = command.input.Entries ?? [];
      return {
        Successful: entries
          .filter((e) => e.Id !== "0")
          .map((e) => ({ Id: e.Id, MessageId: "m", MD5OfMessageBody: "" })),
        Failed: entries
          .filter((e) => e.Id === "0")
          .map((e) => ({ Id: e.Id, Code: "InternalError", SenderFault: false })),
      };
    };
    const destination = new SqsDestination(
      { sqs: { send } as unknown as SQSClient },
      { type: "sqs", queueUrl: "https://sqs.us-east-1.amazonaws.com/123456789012/partner" },
    );
    const park = new FakeDestination();
    const { events, stats } = countedEvents();
    const onDelivered = vi.fn();
    const onAbandoned = vi.fn();
    const dispatcher = new Dispatcher<number>(
      {
        park,
        log,
        events,
        outcomes: { delivered: onDelivered, rejected: vi.fn(), abandoned: onAbandoned },
        onStopped: vi.fn(),
        held: { records: 0 },
      },
      {
        queue: "orders",
        account: "acme",
        dispatch: { ...baseOptions, maxRecords: 4, giveUpAfterMs: 5000, onOutage: "park" },
        destination,
        partner: unlimited,
      },
    );
    for (const t of [1, 2, 3, 4]) dispatcher.add({ line: line(t), ticket: t });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(onAbandoned).not.toHaveBeenCalled();
    expect(onDelivered).toHaveBeenCalledWith([1, 2, 3, 4]);
    expect(park.calls.map((c) => c.batch.lines)).toEqual([[line(1)]]);
    expect(stats.parkedRecords).toBe(4);
  });
});

describe("Dispatcher: limits that cannot be granted", () => {
  it("retries on LimitsUnavailableError without counting a failed flush, and delivers once the store is back", async () => {
    let refusals = 3;
    const partner = {
      deliver: (destination: Destination, batch: Batch, signal: AbortSignal) => {
        if (refusals-- > 0) return Promise.reject(new LimitsUnavailableError("redis: connect ECONNREFUSED"));
        return destination.deliver(batch, signal);
      },
    };
    const { destination, delivered, stats, onAbandoned, onRejected, dispatcher, add } = setup(
      { maxRecords: 2 },
      new FakeDestination(),
      partner,
    );
    add(1, 2);
    await settle();
    expect(dispatcher.lastError).toMatch(/ECONNREFUSED/);
    await vi.advanceTimersByTimeAsync(5000);
    expect(delivered).toEqual([[1, 2]]);
    expect(destination.calls).toHaveLength(1);
    expect(stats.flushFailures).toBe(0);
    expect(onAbandoned).not.toHaveBeenCalled();
    expect(onRejected).not.toHaveBeenCalled();
  });
});

describe("Router: what a partner holds", () => {
  /** A router batching 3 records, each account to its own destination; outcomes are ignored. */
  function holdingRouter(destinationOf: (account: string) => FakeDestination) {
    return new Router<number>(
      {
        resolve: (account) => ({
          dispatch: { ...baseOptions, maxRecords: 3 },
          destination: destinationOf(account),
          partner: { ...unlimited },
        }),
        park: new FakeDestination(),
        log,
        events: countedEvents().events,
        outcomes: { delivered: () => {}, rejected: () => {}, abandoned: () => {} },
      },
      { queue: "orders" },
    );
  }

  it("held() counts records in flight and being retried, not only buffered ones", async () => {
    const destination = new FakeDestination();
    destination.hold = true;
    const router = holdingRouter(() => destination);
    for (let i = 1; i <= 8; i++) router.route("acme", line(i), i);
    // Two batches of 3 in flight (maxConcurrentFlushes 2), 2 buffered.
    expect(router.get("acme")?.inFlightRecords).toBe(6);
    expect(router.held("acme")).toBe(8);

    // A batch that fails is held while it waits for its retry.
    destination.hold = false;
    destination.failures = 1;
    destination.pending[0]?.reject(new Error("socket hang up"));
    await settle();
    expect(router.held("acme")).toBe(8);

    for (const call of destination.pending) call.resolve();
    await vi.advanceTimersByTimeAsync(2000);
    expect(router.held("acme")).toBe(0);
  });

  it("heldTotal is what every account holds; delivering means answering within a flush interval, no batch failing", async () => {
    const destinations = new Map([
      ["acme", new FakeDestination()],
      ["globex", new FakeDestination()],
    ]);
    for (const d of destinations.values()) d.hold = true;
    const router = holdingRouter((account) => destinations.get(account) as FakeDestination);
    const acme = destinations.get("acme") as FakeDestination;
    for (let i = 1; i <= 4; i++) router.route("acme", line(i), i);
    for (let i = 5; i <= 6; i++) router.route("globex", line(i), i);
    expect(router.heldTotal).toBe(6);
    // acme's first batch is on its way; globex has sent nothing yet, so nothing shows it takes anything.
    expect(router.delivering("acme")).toBe(true);
    expect(router.delivering("globex")).toBe(false);
    expect(router.delivering("nobody")).toBe(false);

    // A flush interval without an answer: acme is not keeping up.
    await vi.advanceTimersByTimeAsync(1001);
    expect(router.delivering("acme")).toBe(false);

    // Its first batch answered; the one cut at the tick is young.
    acme.pending[0]?.resolve();
    await settle();
    expect(router.heldTotal).toBe(3);
    expect(router.delivering("acme")).toBe(true);
    acme.pending[0]?.resolve();
    await settle();
    expect(router.heldTotal).toBe(2);

    // acme's next batch fails: not delivering while it waits for its retry, though it delivered before.
    acme.hold = false;
    acme.failures = 1;
    for (let i = 7; i <= 9; i++) router.route("acme", line(i), i);
    await settle();
    expect(router.delivering("acme")).toBe(false);
    expect(router.heldTotal).toBe(5);

    // Its retry goes through: delivering again, and what it held is no longer counted.
    await vi.advanceTimersByTimeAsync(1500);
    expect(router.held("acme")).toBe(0);
    expect(router.delivering("acme")).toBe(true);
    expect(router.heldTotal).toBe(2);
  });
});

describe("Router with a PartnerDirectory: a partner's rate limit across idle gaps", () => {
  /** Largest number of calls in any closed window [t, t + windowMs]. */
  const maxInWindow = (times: number[], windowMs: number) =>
    Math.max(0, ...times.map((t) => times.filter((u) => u >= t && u <= t + windowMs).length));

  it("holds `requests` per window although the partner's dispatchers stop (and it is forgotten) between messages", async () => {
    // As measured: 1 request per 20 s, flush 500 ms, emptyFlushLimit 2, one message every 7 s.
    const dispatch: DispatchConfig = {
      ...baseOptions,
      flushIntervalMs: 500,
      emptyFlushLimit: 2,
      rateLimit: { requests: 1, records: 0, intervalMs: 20_000 },
    };
    const partners = new PartnerDirectory(
      { sqs: {} as SQSClient, s3: {} as S3Client, log, env: {} },
      { dispatch, partners: { overrides: new Map(), park: { bucket: "parked", prefix: "parked/" } } },
    );
    const destination = new FakeDestination();
    const callTimes: number[] = [];
    const deliver = destination.deliver.bind(destination);
    destination.deliver = (batch, signal) => {
      callTimes.push(Date.now());
      return deliver(batch, signal);
    };
    const delivered: number[] = [];
    const router = new Router<number>(
      {
        resolve: (account) => ({ dispatch, destination, partner: partners.attach(account) }),
        onForgotten: (account) => partners.detach(account),
        park: new FakeDestination(),
        log,
        events: countedEvents().events,
        outcomes: {
          delivered: (tickets) => {
            delivered.push(...tickets);
          },
          rejected: () => {},
          abandoned: () => {},
        },
      },
      { queue: "orders" },
    );
    const startMs = Date.now();
    // After the start-up window (counted as full), one message every 7 s.
    const messages = 6;
    for (let i = 0; i < messages; i++) setTimeout(() => router.route("acme", line(i), i), 21_000 + i * 7000);

    // Between the first two messages the dispatcher stopped and the partner was forgotten.
    await vi.advanceTimersByTimeAsync(27_000);
    expect(delivered).toEqual([0]);
    expect(router.active).toBe(0);
    expect([...partners.partners()]).toHaveLength(0);

    await vi.advanceTimersByTimeAsync(120_000);
    expect([...delivered].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(
      maxInWindow(callTimes, 20_000),
      `calls at ${callTimes.map((t) => t - startMs).join(", ")} ms`,
    ).toBeLessThanOrEqual(1);
  });
});

describe("sleep", () => {
  it("waits out a delay longer than setTimeout's largest, instead of firing after 1 ms", async () => {
    let woke = false;
    void sleep(MAX_TIMER_MS + 10_000, new AbortController().signal).then(() => {
      woke = true;
    });
    await vi.advanceTimersByTimeAsync(1000);
    expect(woke).toBe(false);
    await vi.advanceTimersByTimeAsync(MAX_TIMER_MS + 10_000 - 1 - 1000);
    expect(woke).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(woke).toBe(true);
  });
});

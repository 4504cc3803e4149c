import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DeliveryStack } from "../../src/delivery/stack.ts";
import type { Batch, Destination } from "../../src/destinations/destination.ts";
import { BatchEntryError, DeliveryError } from "../../src/errors.ts";
import { InMemoryPartnerLimits } from "../../src/partners/in-memory-limits.ts";
import { Partner } from "../../src/partners/partner.ts";

const log = pino({ level: "silent" });

function batch(count: number): Batch {
  const lines = Array.from({ length: count }, (_, i) => `{"n":${i}}\n`);
  return {
    queue: "orders",
    account: "acme",
    batchId: "b-1",
    createdAt: new Date(),
    lines,
    bytes: lines.join("").length,
  };
}

/** A destination failing its first `failures` calls (all of them by default) with `error()`. */
function destination(
  kind: string,
  failures = Number.POSITIVE_INFINITY,
  error = () => new Error("socket hang up"),
) {
  const calls: Batch[] = [];
  const dest: Destination = {
    kind,
    deliver: async (b) => {
      calls.push(b);
      if (calls.length <= failures) throw error();
    },
  };
  return { dest, calls };
}

const unlimited = { deliver: (d: Destination, b: Batch, s: AbortSignal) => d.deliver(b, s) };
const policy = { retryBaseMs: 100, retryMaxMs: 100, giveUpAfterMs: 1000 };
const signal = () => new AbortController().signal;

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("delivery stack", () => {
  it("goes through the partner's limits on every try, retries included", async () => {
    const limits = new InMemoryPartnerLimits({ startedAtMs: Date.now() - 3_600_000 });
    const profile = {
      rateLimit: { requests: 1, records: 0, intervalMs: 10_000 },
      breaker: { failures: 1000, cooldownMs: 1000 },
      maxConcurrentFlushes: 1,
    };
    const partner = new Partner({ log, limits }, "acme", profile);
    const { dest, calls } = destination("fake", 1);
    const stack = new DeliveryStack(
      { limits: partner, destination: dest },
      { retryBaseMs: 100, retryMaxMs: 100 },
    );
    const startMs = Date.now();
    const at: number[] = [];
    const done = stack.deliver(batch(1), signal(), { tried: () => at.push(Date.now() - startMs) });
    await vi.runAllTimersAsync();
    await expect(done).resolves.toEqual({ outcome: "delivered" });
    expect(calls).toHaveLength(2);
    // One request per 10 s window, counted from the first call's end: the retry waits for it.
    expect(at[1]).toBeGreaterThanOrEqual(10_000);
  });

  it("parks a batch given up on when it has a park destination, and says so", async () => {
    const { dest } = destination("http");
    const park = destination("s3", 0);
    const stack = new DeliveryStack({ limits: unlimited, destination: dest, park: park.dest }, policy);
    const done = stack.deliver(batch(3), signal());
    await vi.runAllTimersAsync();
    await expect(done).resolves.toMatchObject({ outcome: "parked", error: { message: "socket hang up" } });
    expect(park.calls.map((b) => b.lines.length)).toEqual([3]);
  });

  it("releases a batch given up on when parking keeps failing, after five tries at it", async () => {
    const { dest } = destination("http");
    const park = destination("s3");
    const parkFailed = vi.fn();
    const stack = new DeliveryStack({ limits: unlimited, destination: dest, park: park.dest }, policy);
    const done = stack.deliver(batch(3), signal(), { parkFailed });
    await vi.runAllTimersAsync();
    await expect(done).resolves.toMatchObject({ outcome: "released", cause: "giving-up" });
    expect(park.calls).toHaveLength(5);
    expect(parkFailed).toHaveBeenCalledTimes(5);
  });

  it("releases a batch given up on without a park destination", async () => {
    const stack = new DeliveryStack({ limits: unlimited, destination: destination("http").dest }, policy);
    const done = stack.deliver(batch(1), signal());
    await vi.runAllTimersAsync();
    await expect(done).resolves.toMatchObject({
      outcome: "released",
      cause: "giving-up",
      error: { message: "socket hang up" },
    });
  });

  it("releases as stopping, without parking, when aborted", async () => {
    const park = destination("s3", 0);
    const controller = new AbortController();
    const stack = new DeliveryStack(
      { limits: unlimited, destination: destination("http").dest, park: park.dest },
      policy,
    );
    const done = stack.deliver(batch(1), controller.signal);
    await vi.advanceTimersByTimeAsync(0);
    controller.abort();
    await expect(done).resolves.toEqual({ outcome: "released", cause: "stopping" });
    expect(park.calls).toHaveLength(0);
  });

  it("hands a refusal for good back as rejected, without parking", async () => {
    const refusal = new DeliveryError("400", { destination: "http", account: "acme", retryable: false });
    const park = destination("s3", 0);
    const stack = new DeliveryStack(
      { limits: unlimited, destination: destination("http", 1, () => refusal).dest, park: park.dest },
      policy,
    );
    await expect(stack.deliver(batch(1), signal())).resolves.toEqual({ outcome: "rejected", error: refusal });
    expect(park.calls).toHaveLength(0);
  });

  it("parks only the lines a batch destination never took, so a replay sends none of them twice", async () => {
    // Like SqsDestination: the first line of every call fails, the others go through.
    const calls: Batch[] = [];
    const partial: Destination = {
      kind: "sqs",
      deliver: async (b) => {
        calls.push(b);
        const failed = [{ id: "0", code: "InternalError", message: "", senderFault: false }];
        throw new DeliveryError(
          "SendMessageBatch: 1 failure(s)",
          { destination: "sqs", account: "acme", retryable: true },
          { cause: new BatchEntryError("SendMessageBatch", failed) },
        );
      },
    };
    const park = destination("s3", 0);
    const b = batch(4);
    const stack = new DeliveryStack({ limits: unlimited, destination: partial, park: park.dest }, policy);
    const done = stack.deliver(b, signal());
    await vi.runAllTimersAsync();
    await expect(done).resolves.toMatchObject({
      outcome: "parked",
      batch: { batchId: "b-1", lines: [b.lines[0]] },
    });
    expect(calls[0]?.lines).toHaveLength(4);
    expect(calls.slice(1).every((c) => c.lines.length === 1)).toBe(true);
    expect(park.calls.map((p) => p.lines)).toEqual([[b.lines[0]]]);
  });
});

import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LimitsLayer } from "../../src/delivery/limits.ts";
import type { Batch, Destination } from "../../src/destinations/destination.ts";
import { BatchEntryError, BreakerOpenError, DeliveryError } from "../../src/errors.ts";
import { InMemoryPartnerLimits } from "../../src/partners/in-memory-limits.ts";

// The layer's full behaviour (windows, concurrency, Retry-After, limits outages) is in partner.test.ts,
// through Partner, which is this layer plus the directory's bookkeeping.

const log = pino({ level: "silent" });
const profile = {
  rateLimit: { requests: 0, records: 0, intervalMs: 1000 },
  breaker: { failures: 2, cooldownMs: 30_000 },
  maxConcurrentFlushes: 10,
};
const batch: Batch = {
  queue: "orders",
  account: "acme",
  batchId: "b-1",
  createdAt: new Date(),
  lines: ["a\n", "b\n"],
  bytes: 4,
};
const signal = () => new AbortController().signal;

/** What SqsDestination rejects with when one entry of two failed. */
const partial = () =>
  new DeliveryError(
    "SendMessageBatch: 1 failure(s)",
    { destination: "sqs", account: "acme", retryable: true },
    {
      cause: new BatchEntryError("SendMessageBatch", [
        { id: "1", code: "InternalError", message: "", senderFault: false },
      ]),
    },
  );

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("limits layer", () => {
  it("counts a partial failure of a batch toward the breaker, and publishes the open breaker as a pause", async () => {
    const limits = new InMemoryPartnerLimits({ startedAtMs: Date.now() - 60_000 });
    const layer = new LimitsLayer({ log, limits }, "acme", profile);
    const deliver = vi.fn(async () => {
      throw partial();
    });
    const failing: Destination = { kind: "sqs", deliver };
    for (let i = 0; i < 2; i++)
      await expect(layer.deliver(failing, batch, signal())).rejects.toBeInstanceOf(DeliveryError);
    expect(layer.breakerOpen).toBe(true);
    expect(layer.lastError?.message).toContain("1 failure(s)");
    await expect(limits.pauseOf("acme")).resolves.toMatchObject({ reason: "breaker" });
    await expect(layer.deliver(failing, batch, signal())).rejects.toBeInstanceOf(BreakerOpenError);
    expect(deliver).toHaveBeenCalledTimes(2);
  });

  it("rejects with the destination's own error, untouched, so the retry layer can read which entries failed", async () => {
    const layer = new LimitsLayer(
      { log, limits: new InMemoryPartnerLimits({ startedAtMs: 0 }) },
      "acme",
      profile,
    );
    const error = partial();
    const failing: Destination = { kind: "sqs", deliver: () => Promise.reject(error) };
    await expect(layer.deliver(failing, batch, signal())).rejects.toBe(error);
  });
});

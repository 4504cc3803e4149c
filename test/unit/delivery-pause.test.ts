import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DeliveryStack } from "../../src/delivery/stack.ts";
import type { Batch, Destination } from "../../src/destinations/destination.ts";
import { InMemoryPartnerLimits } from "../../src/partners/in-memory-limits.ts";
import { Partner } from "../../src/partners/partner.ts";

const log = pino({ level: "silent" });
const profile = {
  rateLimit: { requests: 0, records: 0, intervalMs: 1000 },
  breaker: { failures: 5, cooldownMs: 30_000 },
  maxConcurrentFlushes: 2,
};

function batch(): Batch {
  return {
    queue: "orders",
    account: "acme",
    batchId: "b-1",
    createdAt: new Date(),
    lines: ['{"n":1}\n'],
    bytes: 8,
  };
}

function counting(): { dest: Destination; calls: number[] } {
  const calls: number[] = [];
  return { calls, dest: { kind: "http", deliver: async () => void calls.push(Date.now()) } };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("a paused partner", () => {
  it("follows its outage policy: a batch waiting out an operator pause is given up at giveUpAfterMs, never sent", async () => {
    const limits = new InMemoryPartnerLimits({ startedAtMs: Date.now() - 3_600_000 });
    await limits.pause("acme", { reason: "operator", untilMs: Date.now() + 3_600_000 });
    const { dest, calls } = counting();
    const stack = new DeliveryStack(
      { limits: new Partner({ log, limits }, "acme", profile), destination: dest },
      { retryBaseMs: 500, retryMaxMs: 30_000, giveUpAfterMs: 10_000 },
    );
    const startMs = Date.now();
    const done = stack.deliver(batch(), new AbortController().signal);
    let settledAtMs: number | undefined;
    void done.then(() => {
      settledAtMs = Date.now() - startMs;
    });
    await vi.advanceTimersByTimeAsync(60_000);
    const result = await done;
    expect(result.outcome).toBe("released");
    expect(calls).toHaveLength(0);
    // Refused after the first pause check (1 s), then given up 10 s later: not after the hour.
    expect(settledAtMs).toBeLessThanOrEqual(12_000);
  });

  it("is called again within seconds of a resume, not when the pause would have ended", async () => {
    const limits = new InMemoryPartnerLimits({ startedAtMs: Date.now() - 3_600_000 });
    await limits.pause("acme", { reason: "operator", untilMs: Date.now() + 3_600_000 });
    const { dest, calls } = counting();
    const stack = new DeliveryStack(
      { limits: new Partner({ log, limits }, "acme", profile), destination: dest },
      { retryBaseMs: 500, retryMaxMs: 30_000, giveUpAfterMs: 300_000 },
    );
    const startMs = Date.now();
    const done = stack.deliver(batch(), new AbortController().signal);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(calls).toHaveLength(0);
    await limits.resume("acme");
    await vi.advanceTimersByTimeAsync(10_000);
    await expect(done).resolves.toEqual({ outcome: "delivered" });
    expect(calls).toHaveLength(1);
    expect((calls[0] as number) - startMs).toBeLessThanOrEqual(120_000 + 6_000);
  });
});

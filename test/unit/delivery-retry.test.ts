import type {
  SendMessageBatchCommand,
  SendMessageBatchCommandInput,
  SendMessageBatchCommandOutput,
  SQSClient,
} from "@aws-sdk/client-sqs";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type BatchService, type RetryEvents, retry } from "../../src/delivery/retry.ts";
import type { Batch } from "../../src/destinations/destination.ts";
import { SqsDestination } from "../../src/destinations/sqs.ts";
import { BreakerOpenError, DeliveryError, LimitsUnavailableError } from "../../src/errors.ts";

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

/** A service answering try n (from 0) with `outcome(n)`: an error to reject with, or undefined to pass. */
function service(outcome: (n: number) => unknown = () => undefined) {
  const tries: { batch: Batch; atMs: number }[] = [];
  const svc: BatchService = {
    kind: "fake",
    deliver: async (b) => {
      tries.push({ batch: b, atMs: Date.now() });
      const err = outcome(tries.length - 1);
      if (err) throw err;
    },
  };
  return { svc, tries };
}

function recorder() {
  const tried: string[] = [];
  const failed: { message: string; retryInMs: number | undefined; quiet: boolean }[] = [];
  const events: RetryEvents = {
    tried: (_b, result) => {
      tried.push(result);
    },
    failed: (_b, error, info) => {
      failed.push({ message: error.message, retryInMs: info.retryInMs, quiet: info.quiet });
    },
  };
  return { events, tried, failed };
}

const transient = () => new DeliveryError("503", { destination: "fake", account: "acme", retryable: true });
const policy = { retryBaseMs: 100, retryMaxMs: 1000 };
const signal = () => new AbortController().signal;

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("retry layer", () => {
  it("tries again with backoff until the batch passes, reporting each try", async () => {
    const { svc, tries } = service((n) => (n < 2 ? transient() : undefined));
    const { events, tried, failed } = recorder();
    const done = retry(svc, batch(2), signal(), policy, events);
    await vi.runAllTimersAsync();
    await expect(done).resolves.toEqual({ outcome: "delivered" });
    expect(tried).toEqual(["failed", "failed", "delivered"]);
    expect(tries.every((t) => t.batch.batchId === "b-1" && t.batch.lines.length === 2)).toBe(true);
    // Attempt 1 waits 50-100 ms, attempt 2 waits 100-200 ms ("equal jitter").
    const [first, second] = failed.map((f) => f.retryInMs as number);
    expect(first).toBeGreaterThanOrEqual(50);
    expect(first).toBeLessThanOrEqual(100);
    expect(second).toBeGreaterThanOrEqual(100);
    expect(second).toBeLessThanOrEqual(200);
  });

  it("rejects at once, without another try, on an error that cannot pass later", async () => {
    const refusal = new DeliveryError("400", { destination: "fake", account: "acme", retryable: false });
    const { svc, tries } = service(() => refusal);
    await expect(retry(svc, batch(1), signal(), policy)).resolves.toEqual({
      outcome: "rejected",
      error: refusal,
    });
    expect(tries).toHaveLength(1);
  });

  it("gives up at giveUpAfterMs after the first failure, however long the partner asks to wait", async () => {
    const { svc, tries } = service(
      () =>
        new DeliveryError("429", {
          destination: "fake",
          account: "acme",
          retryable: true,
          retryAfterMs: 3_600_000,
        }),
    );
    const startMs = Date.now();
    const done = retry(svc, batch(1), signal(), { ...policy, giveUpAfterMs: 5000 });
    await vi.runAllTimersAsync();
    await expect(done).resolves.toMatchObject({ outcome: "given-up", error: { message: "429" } });
    expect(Date.now() - startMs).toBe(5000);
    expect(tries).toHaveLength(1);
  });

  it("gives up after maxAttempts tries; refusals by an open breaker are not tries", async () => {
    const { svc, tries } = service((n) => (n % 2 === 0 ? new BreakerOpenError("acme") : transient()));
    const done = retry(svc, batch(1), signal(), { ...policy, maxAttempts: 3 });
    await vi.runAllTimersAsync();
    await expect(done).resolves.toMatchObject({ outcome: "given-up" });
    // Breaker, 503, breaker, 503, breaker, 503: three tries that reached the partner.
    expect(tries).toHaveLength(6);
  });

  it("does not report a refusal before any call as a try, and logs a limits outage only once", async () => {
    const { svc } = service((n) =>
      n < 2 ? new LimitsUnavailableError("redis down") : n < 3 ? new BreakerOpenError("acme") : undefined,
    );
    const { events, tried, failed } = recorder();
    const done = retry(svc, batch(1), signal(), policy, events);
    await vi.runAllTimersAsync();
    await expect(done).resolves.toEqual({ outcome: "delivered" });
    expect(tried).toEqual(["delivered"]);
    expect(failed.map((f) => f.quiet)).toEqual([false, true, true]);
  });

  it("stops without another try when the signal aborts during a backoff", async () => {
    const { svc, tries } = service(() => transient());
    const controller = new AbortController();
    const done = retry(svc, batch(1), controller.signal, { retryBaseMs: 30_000, retryMaxMs: 30_000 });
    await vi.advanceTimersByTimeAsync(0);
    controller.abort();
    await expect(done).resolves.toMatchObject({ outcome: "stopped", error: { message: "503" } });
    expect(tries).toHaveLength(1);
  });

  it("retry-partial: after a partial SQS success the next try sends only what failed, each line once in all", async () => {
    type Entry = NonNullable<SendMessageBatchCommandInput["Entries"]>[number];
    const sent: Entry[][] = [];
    // The first call (entries 0-9) fails entries 3 and 7; everything after passes.
    const send = async (
      command: SendMessageBatchCommand,
    ): Promise<Partial<SendMessageBatchCommandOutput>> => {
      const entries = command.input.Entries ?? [];
      sent.push(entries);
      const failed = sent.length === 1 ? entries.filter((e) => e.Id === "3" || e.Id === "7") : [];
      return {
        Successful: entries
          .filter((e) => !failed.includes(e))
          .map((e) => ({ Id: e.Id, MessageId: "m", MD5OfMessageBody: "" })),
        Failed: failed.map((e) => ({ Id: e.Id, Code: "InternalError", SenderFault: false })),
      };
    };
    const destination = new SqsDestination(
      { sqs: { send } as unknown as SQSClient },
      { type: "sqs", queueUrl: "https://sqs.us-east-1.amazonaws.com/123456789012/partner" },
    );
    const b = batch(12);
    const done = retry(destination, b, signal(), policy);
    await vi.runAllTimersAsync();
    await expect(done).resolves.toEqual({ outcome: "delivered" });
    expect(sent.map((entries) => entries.length)).toEqual([10, 2, 2]);
    const bodies = sent.flat().map((e) => e.MessageBody);
    expect(bodies.slice(12)).toEqual([b.lines[3], b.lines[7]].map((l) => l?.trimEnd()));
    // Every line reached the partner's queue exactly once.
    const [first = [], ...retries] = sent;
    const accepted = [...first.filter((e) => e.Id !== "3" && e.Id !== "7"), ...retries.flat()];
    expect(accepted.map((e) => e.MessageBody).sort()).toEqual(b.lines.map((l) => l.trimEnd()).sort());
  });

  it("gives up with what is still undelivered of a partly delivered batch", async () => {
    const sqsFailing = async (command: SendMessageBatchCommand) => {
      const entries = command.input.Entries ?? [];
      return {
        Successful: entries.slice(1).map((e) => ({ Id: e.Id, MessageId: "m", MD5OfMessageBody: "" })),
        Failed: entries.slice(0, 1).map((e) => ({ Id: e.Id, Code: "InternalError", SenderFault: false })),
      };
    };
    const destination = new SqsDestination(
      { sqs: { send: sqsFailing } as unknown as SQSClient },
      { type: "sqs", queueUrl: "https://sqs.us-east-1.amazonaws.com/123456789012/partner" },
    );
    const b = batch(4);
    const done = retry(destination, b, signal(), { ...policy, maxAttempts: 2 });
    await vi.runAllTimersAsync();
    // Try 1: line 0 fails (1-3 sent); try 2 carries line 0 alone and it fails again.
    await expect(done).resolves.toMatchObject({
      outcome: "given-up",
      batch: { batchId: "b-1", lines: [b.lines[0]] },
    });
  });
});

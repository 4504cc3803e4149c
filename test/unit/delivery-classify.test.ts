import { describe, expect, it } from "vitest";
import { classify, type RetryState } from "../../src/delivery/classify.ts";
import { MAX_RETRY_AFTER_MS } from "../../src/delivery/limits.ts";
import type { Batch } from "../../src/destinations/destination.ts";
import {
  BatchEntryError,
  BreakerOpenError,
  DeliveryError,
  LimitsUnavailableError,
} from "../../src/errors.ts";

const lines = ["a\n", "bb\n", "ccc\n", "dddd\n"];
const batch: Batch = {
  queue: "orders",
  account: "acme",
  batchId: "b-1",
  createdAt: new Date("2025-03-01T00:00:00Z"),
  lines,
  bytes: lines.join("").length,
};

const failure = (retryable: boolean, extra: { retryAfterMs?: number } = {}, cause?: unknown) =>
  new DeliveryError(
    "partner said no",
    { destination: "fake", account: "acme", retryable, ...extra },
    cause === undefined ? undefined : { cause },
  );

const entries = (...ids: string[]) =>
  new BatchEntryError(
    "SendMessageBatch",
    ids.map((id) => ({ id, code: "InternalError", message: "", senderFault: false })),
  );

const at = (over: Partial<RetryState> = {}): RetryState => ({ batch, nowMs: 10_000, attempts: 1, ...over });

describe("classify", () => {
  const table: [name: string, error: unknown, state: RetryState, expected: Record<string, unknown>][] = [
    ["a retryable DeliveryError: retry", failure(true), at(), { action: "retry" }],
    [
      "a non-retryable DeliveryError: reject",
      failure(false),
      at(),
      { action: "reject", reason: "partner said no" },
    ],
    [
      "a non-retryable DeliveryError past the give-up bound: still reject",
      failure(false),
      at({ giveUpAtMs: 5000 }),
      { action: "reject" },
    ],
    [
      "a socket error: retry",
      new Error("socket hang up"),
      at(),
      { action: "retry", reason: "socket hang up" },
    ],
    ["an open breaker: retry", new BreakerOpenError("acme"), at(), { action: "retry" }],
    [
      "limits that cannot be granted: retry",
      new LimitsUnavailableError("redis down"),
      at(),
      { action: "retry" },
    ],
    [
      "a Retry-After: retry not before it",
      failure(true, { retryAfterMs: 30_000 }),
      at(),
      { afterMs: 30_000 },
    ],
    [
      "a Retry-After of a day: capped at 15 minutes",
      failure(true, { retryAfterMs: 86_400_000 }),
      at(),
      { action: "retry", afterMs: MAX_RETRY_AFTER_MS },
    ],
    ["before the give-up bound: retry", failure(true), at({ giveUpAtMs: 10_001 }), { action: "retry" }],
    ["at the give-up bound: give up", failure(true), at({ giveUpAtMs: 10_000 }), { action: "give-up" }],
    [
      "a wait cut short at the bound: give up",
      new Error("aborted"),
      at({ giveUpAtMs: 9000 }),
      { action: "give-up" },
    ],
    ["attempts left: retry", failure(true), at({ attempts: 7, maxAttempts: 8 }), { action: "retry" }],
    ["out of attempts: give up", failure(true), at({ attempts: 8, maxAttempts: 8 }), { action: "give-up" }],
    [
      "some entries failed: retry only those",
      failure(true, {}, entries("1", "3")),
      at(),
      { action: "retry-partial", remaining: { ...batch, lines: ["bb\n", "dddd\n"], bytes: 8 } },
    ],
    [
      "every entry failed: retry the whole batch",
      failure(true, {}, entries("0", "1", "2", "3")),
      at(),
      { action: "retry" },
    ],
    [
      "an entry id that names no line: retry the whole batch",
      failure(true, {}, entries("1", "9")),
      at(),
      { action: "retry" },
    ],
    [
      "an entry id that is no number: retry the whole batch",
      failure(true, {}, entries("1", "x")),
      at(),
      { action: "retry" },
    ],
    ["entries failed for good: reject", failure(false, {}, entries("1")), at(), { action: "reject" }],
    [
      "entries failed past the bound: give up",
      failure(true, {}, entries("1")),
      at({ giveUpAtMs: 1 }),
      { action: "give-up" },
    ],
  ];

  it.each(table)("%s", (_name, error, state, expected) => {
    const action = classify(error, state);
    expect(action).toMatchObject(expected);
    if (expected.action === "retry" && expected.afterMs === undefined)
      expect(action).not.toHaveProperty("afterMs");
  });

  it("keeps the batch's id, queue, account and time in a rebuilt batch", () => {
    const action = classify(failure(true, {}, entries("2")), at());
    expect(action).toEqual({
      action: "retry-partial",
      reason: "partner said no",
      remaining: { ...batch, lines: ["ccc\n"], bytes: 4 },
    });
  });
});

import {
  type BatchResultErrorEntry,
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  type EntryResult,
  MAX_ENTRY_ATTEMPTS,
  type SqsBatchOperation,
  SqsEntryBatcher,
  type SqsEntryBatcherOptions,
} from "../../src/pipeline/sqs-entry-batcher.ts";
import { countedEvents } from "../helpers/relay-events.ts";

const log = pino({ level: "silent" });
const QUEUE_URL = "http://sqs.local/000000000000/orders";

interface Entry {
  Id: string;
  ReceiptHandle: string;
  VisibilityTimeout?: number;
}
interface Call {
  command: "DeleteMessageBatch" | "ChangeMessageVisibilityBatch";
  entries: Entry[];
  signal: AbortSignal | undefined;
}
type Answer = { Failed?: BatchResultErrorEntry[] } | Error;

/** Records every batch call (by command class) and answers it with `answer(call)`; holds calls when told. */
function fakeSqs() {
  const calls: Call[] = [];
  const held: (() => void)[] = [];
  const fake = {
    calls,
    held,
    hold: false,
    answer: (_call: Call): Answer => ({}),
    client: undefined as unknown as SQSClient,
  };
  const send = vi.fn(async (command: unknown, options?: { abortSignal?: AbortSignal }) => {
    const name =
      command instanceof DeleteMessageBatchCommand
        ? "DeleteMessageBatch"
        : command instanceof ChangeMessageVisibilityBatchCommand
          ? "ChangeMessageVisibilityBatch"
          : undefined;
    if (!name) throw new Error(`unexpected command ${(command as object).constructor.name}`);
    const { input } = command as DeleteMessageBatchCommand | ChangeMessageVisibilityBatchCommand;
    expect(input.QueueUrl).toBe(QUEUE_URL);
    const call: Call = { command: name, entries: input.Entries as Entry[], signal: options?.abortSignal };
    calls.push(call);
    if (fake.hold) await new Promise<void>((resolve) => held.push(resolve));
    const answer = fake.answer(call);
    if (answer instanceof Error) throw answer;
    return { Successful: [], Failed: answer.Failed ?? [], $metadata: {} };
  });
  fake.client = { send } as unknown as SQSClient;
  return Object.assign(fake, { send });
}

const failedFor = (
  call: Call,
  handles: string[],
  code: string,
  senderFault = true,
): BatchResultErrorEntry[] =>
  call.entries
    .filter((e) => handles.includes(e.ReceiptHandle))
    .map((e) => ({ Id: e.Id, Code: code, SenderFault: senderFault, Message: `${code} (fake)` }));

/** A message as the acker holds it: its receipt handle may change between attempts. */
interface Item {
  id: string;
  handle: string;
}

function setup<Op extends SqsBatchOperation>(
  operation: Op,
  options: Partial<Pick<SqsEntryBatcherOptions<Item, Op>, "lingerMs" | "status">> = {},
) {
  const sqs = fakeSqs();
  const { events, stats } = countedEvents();
  const abort = new AbortController();
  const done: { id: string; result: EntryResult<Entry> }[] = [];
  const entry = (item: Item, Id: string) =>
    operation === "DeleteMessageBatch"
      ? { Id, ReceiptHandle: item.handle }
      : { Id, ReceiptHandle: item.handle, VisibilityTimeout: 30 };
  const batcher = new SqsEntryBatcher<Item, Op>(
    { sqs: sqs.client, log, events, signal: abort.signal },
    {
      operation,
      queueUrl: QUEUE_URL,
      lingerMs: options.lingerMs ?? 5,
      entry: entry as SqsEntryBatcherOptions<Item, Op>["entry"],
      messageId: (item) => item.id,
      ...(options.status ? { status: options.status } : {}),
      onDone: (item, result) => {
        done.push({ id: item.id, result: result as EntryResult<Entry> });
      },
    },
  );
  const items = (n: number, prefix = "m") =>
    Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, handle: `rh-${prefix}${i}` }));
  const ok = () => done.filter((d) => d.result.ok).map((d) => d.id);
  const givenUp = () => done.flatMap((d) => (d.result.ok ? [] : [{ id: d.id, code: d.result.failure.code }]));
  return { sqs, stats, abort, batcher, done, items, ok, givenUp };
}

const flush = () => vi.advanceTimersByTimeAsync(0);
const LONG_MS = 60_000;
const handles = (calls: Call[]) => calls.map((c) => c.entries.map((e) => e.ReceiptHandle));

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("SqsEntryBatcher: coalescing", () => {
  it("sends at most 10 entries per call: a full batch at once, the rest after the linger", async () => {
    const { sqs, batcher, items, ok, stats } = setup("DeleteMessageBatch");
    for (const item of items(25)) batcher.add(item);
    await flush();
    expect(sqs.calls.map((c) => c.entries.length)).toEqual([10, 10]);
    await vi.advanceTimersByTimeAsync(5);
    expect(sqs.calls.map((c) => c.entries.length)).toEqual([10, 10, 5]);
    for (const c of sqs.calls) expect(new Set(c.entries.map((e) => e.Id)).size).toBe(c.entries.length);
    expect(ok()).toHaveLength(25);
    expect(stats.sqsCalls.deleteMessageBatch).toBe(3);
  });

  it("with lingerMs 0 sends what was added in one tick together at the end of the tick", async () => {
    const { sqs, batcher, items, stats } = setup("ChangeMessageVisibilityBatch", { lingerMs: 0 });
    for (const item of items(3)) batcher.add(item);
    expect(sqs.calls).toHaveLength(0);
    await flush();
    expect(handles(sqs.calls)).toEqual([["rh-m0", "rh-m1", "rh-m2"]]);
    expect(sqs.calls[0]?.entries.every((e) => e.VisibilityTimeout === 30)).toBe(true);
    expect(stats.sqsCalls.changeMessageVisibilityBatch).toBe(1);
  });

  it("send() goes without waiting for the linger; held items stay queued, dropped ones are forgotten", async () => {
    const status = (item: Item) => (item.id === "m0" ? "hold" : item.id === "m1" ? "drop" : "send");
    const { sqs, batcher, items, done } = setup("ChangeMessageVisibilityBatch", { status });
    for (const item of items(3)) batcher.add(item);
    batcher.send();
    await flush();
    expect(handles(sqs.calls)).toEqual([["rh-m2"]]);
    expect(batcher.pending).toBe(1);
    expect(done.map((d) => d.id)).toEqual(["m2"]);
  });
});

describe("SqsEntryBatcher: per-entry failures", () => {
  it("retries only the entries listed in Failed, with backoff, and reports the others done with the entry sent", async () => {
    const { sqs, batcher, items, done, ok } = setup("DeleteMessageBatch");
    let failuresLeft = 2;
    sqs.answer = (call) =>
      failuresLeft-- > 0 ? { Failed: failedFor(call, ["rh-m1"], "InternalError", false) } : {};
    for (const item of items(3)) batcher.add(item);
    await vi.advanceTimersByTimeAsync(5);
    expect(ok()).toEqual(["m0", "m2"]);
    expect(done[0]?.result).toEqual({ ok: true, sent: { Id: "0", ReceiptHandle: "rh-m0" } });
    expect(batcher.pending).toBe(1);

    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(handles(sqs.calls)).toEqual([["rh-m0", "rh-m1", "rh-m2"], ["rh-m1"], ["rh-m1"]]);
    expect(ok()).toEqual(["m0", "m2", "m1"]);
    expect(batcher.pending).toBe(0);
  });

  it("builds each retry's entry afresh (a newer receipt handle is sent)", async () => {
    const { sqs, batcher } = setup("ChangeMessageVisibilityBatch");
    let failuresLeft = 1;
    sqs.answer = (call) =>
      failuresLeft-- > 0 ? { Failed: failedFor(call, ["rh-old"], "InternalError", false) } : {};
    const item = { id: "m0", handle: "rh-old" };
    batcher.add(item);
    await vi.advanceTimersByTimeAsync(5);
    item.handle = "rh-new";
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(handles(sqs.calls)).toEqual([["rh-old"], ["rh-new"]]);
  });

  it.each([
    ["ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid"],
    ["MessageNotInflight", "MessageNotInflight"],
    ["AWS.SimpleQueueService.MessageNotInflight", "MessageNotInflight"],
    // SQS's "Message does not exist or is not available for visibility timeout change".
    ["InvalidParameterValue", "InvalidParameterValue"],
  ])("gives up at once on %s: a stale handle is not fixed by retrying", async (code, reported) => {
    const { sqs, batcher, items, givenUp, ok } = setup("ChangeMessageVisibilityBatch");
    sqs.answer = (call) => ({ Failed: failedFor(call, ["rh-m1"], code) });
    for (const item of items(2)) batcher.add(item);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.calls).toHaveLength(1);
    expect(ok()).toEqual(["m0"]);
    expect(givenUp()).toEqual([{ id: "m1", code: reported }]);
    await expect(batcher.idle()).resolves.toBeUndefined();
  });

  it("retries every entry of a call that fails as a whole, counting the error", async () => {
    const { sqs, stats, batcher, items, ok } = setup("DeleteMessageBatch");
    let rejections = 1;
    sqs.answer = () =>
      rejections-- > 0 ? Object.assign(new Error("service unavailable"), { name: "ServiceUnavailable" }) : {};
    for (const item of items(3)) batcher.add(item);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(handles(sqs.calls)).toEqual([
      ["rh-m0", "rh-m1", "rh-m2"],
      ["rh-m0", "rh-m1", "rh-m2"],
    ]);
    expect(stats.sqsCalls.errors).toBe(1);
    expect(stats.sqsCalls.deleteMessageBatch).toBe(1);
    expect(ok()).toEqual(["m0", "m1", "m2"]);
  });

  it(`gives up after ${MAX_ENTRY_ATTEMPTS} attempts, reporting each entry once with the last code`, async () => {
    const { sqs, batcher, items, givenUp } = setup("DeleteMessageBatch");
    sqs.answer = (call) => ({ Failed: failedFor(call, ["rh-m0", "rh-m1"], "InternalError", false) });
    for (const item of items(2)) batcher.add(item);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.calls).toHaveLength(MAX_ENTRY_ATTEMPTS);
    expect(givenUp()).toEqual([
      { id: "m0", code: "InternalError" },
      { id: "m1", code: "InternalError" },
    ]);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.calls).toHaveLength(MAX_ENTRY_ATTEMPTS);
    expect(batcher.pending).toBe(0);
  });
});

describe("SqsEntryBatcher: idle and abort", () => {
  it("idle() resolves only once every entry, retries included, is done", async () => {
    const { sqs, batcher, items } = setup("DeleteMessageBatch");
    let failuresLeft = 1;
    sqs.answer = (call) =>
      failuresLeft-- > 0 ? { Failed: failedFor(call, ["rh-m0"], "InternalError", false) } : {};
    for (const item of items(2)) batcher.add(item);
    let idle = false;
    void batcher.idle().then(() => {
      idle = true;
    });
    await vi.advanceTimersByTimeAsync(5);
    expect(sqs.calls).toHaveLength(1);
    expect(idle).toBe(false);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.calls).toHaveLength(2);
    expect(idle).toBe(true);
  });

  it("sends its calls without per-call options, so the SDK's cached middleware serves them; when the signal fires, a retry waiting for its backoff is given up at once", async () => {
    const { sqs, abort, batcher, items, givenUp } = setup("DeleteMessageBatch");
    sqs.answer = (call) => ({ Failed: failedFor(call, ["rh-m0"], "InternalError", false) });
    for (const item of items(1)) batcher.add(item);
    await vi.advanceTimersByTimeAsync(5);
    expect(sqs.calls).toHaveLength(1);
    // Any options, an abort signal included, make the SDK resolve its middleware stack afresh.
    expect(sqs.send.mock.calls[0]).toHaveLength(1);
    expect(givenUp()).toEqual([]);

    abort.abort();
    await flush();
    expect(givenUp()).toEqual([{ id: "m0", code: "Aborted" }]);
    await expect(batcher.idle()).resolves.toBeUndefined();
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.calls).toHaveLength(1);
  });

  it("lets a call in flight when the signal fires finish: what it delivered is done, what failed is given up without a retry", async () => {
    const { sqs, abort, batcher, items, ok, givenUp } = setup("ChangeMessageVisibilityBatch");
    sqs.hold = true;
    sqs.answer = (call) => ({ Failed: failedFor(call, ["rh-m1"], "InternalError", false) });
    for (const item of items(2)) batcher.add(item);
    await vi.advanceTimersByTimeAsync(5);
    abort.abort();
    for (const answer of sqs.held.splice(0)) answer();
    await flush();
    expect(ok()).toEqual(["m0"]);
    expect(givenUp()).toEqual([{ id: "m1", code: "InternalError" }]);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.calls).toHaveLength(1);
  });
});

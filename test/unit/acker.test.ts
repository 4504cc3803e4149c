import {
  type BatchResultErrorEntry,
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  type Message,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Acker, type AckerOptions, type Ticket } from "../../src/pipeline/acker.ts";
import { countedEvents } from "../helpers/relay-events.ts";

const log = pino({ level: "silent" });

const HOUR_MS = 60 * 60 * 1000;
/** SQS refuses to keep a message invisible for longer than this after its receive. */
const MAX_VISIBILITY_MS = 12 * HOUR_MS;

interface Entry {
  Id: string;
  ReceiptHandle: string;
  VisibilityTimeout?: number;
}

interface Call {
  command: "DeleteMessageBatch" | "ChangeMessageVisibilityBatch";
  /** Fake clock when the call was sent. */
  atMs: number;
  entries: Entry[];
}

/** What the fake SQS answers to one call: per-entry failures, or an error thrown for the whole call. */
type Answer = { Failed?: BatchResultErrorEntry[] } | Error;

/**
 * An SQS client that records every DeleteMessageBatch and ChangeMessageVisibilityBatch call and answers
 * it with `answer(call)` (all entries succeed unless told otherwise). With `hold` set, calls stay pending
 * until the test answers them through `held`. Any other command is a test failure.
 */
class FakeSqs {
  readonly calls: Call[] = [];
  readonly held: { call: Call; answer(): void }[] = [];
  hold = false;
  answer: (call: Call) => Answer = () => ({});

  readonly send = vi.fn(async (command: unknown) => {
    const call = toCall(command);
    this.calls.push(call);
    if (this.hold) await new Promise<void>((resolve) => this.held.push({ call, answer: resolve }));
    const answer = this.answer(call);
    if (answer instanceof Error) throw answer;
    const failed = answer.Failed ?? [];
    const failedIds = new Set(failed.map((f) => f.Id));
    return {
      Successful: call.entries.filter((e) => !failedIds.has(e.Id)).map((e) => ({ Id: e.Id })),
      Failed: failed,
      $metadata: {},
    };
  });

  get client(): SQSClient {
    return { send: this.send } as unknown as SQSClient;
  }

  deletes(): Call[] {
    return this.calls.filter((c) => c.command === "DeleteMessageBatch");
  }

  changes(): Call[] {
    return this.calls.filter((c) => c.command === "ChangeMessageVisibilityBatch");
  }
}

function toCall(command: unknown): Call {
  if (command instanceof DeleteMessageBatchCommand) {
    expect(command.input.QueueUrl).toBe(options.queueUrl);
    return {
      command: "DeleteMessageBatch",
      atMs: Date.now(),
      entries: (command.input.Entries ?? []).map((e) => ({
        Id: e.Id as string,
        ReceiptHandle: e.ReceiptHandle as string,
      })),
    };
  }
  if (command instanceof ChangeMessageVisibilityBatchCommand) {
    expect(command.input.QueueUrl).toBe(options.queueUrl);
    return {
      command: "ChangeMessageVisibilityBatch",
      atMs: Date.now(),
      entries: (command.input.Entries ?? []).map((e) => ({
        Id: e.Id as string,
        ReceiptHandle: e.ReceiptHandle as string,
        VisibilityTimeout: e.VisibilityTimeout as number,
      })),
    };
  }
  throw new Error(`unexpected command ${(command as object).constructor.name}`);
}

/** Per-entry failures, with `code`, for the entries of `call` whose receipt handle `fails` picks. */
function failed(
  call: Call,
  fails: (handle: string) => boolean,
  code: string,
  senderFault = false,
): BatchResultErrorEntry[] {
  return call.entries
    .filter((e) => fails(e.ReceiptHandle))
    .map((e) => ({ Id: e.Id, Code: code, SenderFault: senderFault, Message: `${code} (fake)` }));
}

const options: AckerOptions = {
  queue: "orders",
  queueUrl: "http://sqs.local/000000000000/orders",
  visibilityTimeoutSec: 60,
};

const message = (id: string, receipt = `rh-${id}`, receiveCount?: number): Message => ({
  MessageId: id,
  ReceiptHandle: receipt,
  Body: "{}",
  ...(receiveCount === undefined ? {} : { Attributes: { ApproximateReceiveCount: String(receiveCount) } }),
});

let stopAfter: (() => void) | undefined;

function setup() {
  const sqs = new FakeSqs();
  const { events, stats } = countedEvents();
  const acker = new Acker({ sqs: sqs.client, log, events }, options);
  let freed = 0;
  acker.on("free", () => {
    freed++;
  });
  stopAfter = () => acker.stop();
  /** Tracks a new message and returns its ticket (a test failure if it is taken for a copy). */
  const track = (id: string, receipt?: string, nowMs?: number): Ticket => {
    const ticket = acker.track(message(id, receipt), nowMs);
    expect(ticket).toBeDefined();
    return ticket as Ticket;
  };
  return { acker, sqs, stats, track, freed: () => freed };
}

/** Lets every pending promise callback and microtask run without moving the fake clock. */
const flush = () => vi.advanceTimersByTimeAsync(0);
/** Long enough for any linger and for every backoff of a call retried to its last attempt. */
const LONG_MS = 60_000;

const handles = (calls: Call[]) => calls.flatMap((c) => c.entries.map((e) => e.ReceiptHandle));

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  stopAfter?.();
  stopAfter = undefined;
  vi.useRealTimers();
});

describe("Acker.track", () => {
  it("returns a ticket for a new message, carrying its receipt handle and receive count", () => {
    const { acker } = setup();
    const nowMs = Date.now();
    const ticket = acker.track(message("m1", "rh-1", 3), nowMs);
    expect(ticket).toMatchObject({
      id: "m1",
      receiptHandle: "rh-1",
      receiveCount: 3,
      receivedAtMs: nowMs,
      visibleUntilMs: nowMs + 60_000,
      pending: 0,
      state: "held",
    });
    expect(acker.unacked).toBe(1);
    expect(acker.oldestReceivedAtMs()).toBe(nowMs);
  });

  it("holds a copy of a held message once, takes its newer receipt handle and deletes with that one, once", async () => {
    const { acker, sqs, stats } = setup();
    const ticket = acker.track(message("m1", "rh-old")) as Ticket;
    expect(ticket).toBeDefined();

    await vi.advanceTimersByTimeAsync(10_000);
    expect(acker.track(message("m1", "rh-new"))).toBeUndefined();
    expect(acker.unacked).toBe(1);
    expect(stats.duplicatesHeld).toBe(1);
    expect(ticket.receiptHandle).toBe("rh-new");
    // Visibility is counted from the newer receive.
    expect(ticket.receivedAtMs).toBe(Date.now());
    expect(ticket.visibleUntilMs).toBe(Date.now() + 60_000);

    acker.expect(ticket, 0);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.deletes()).toHaveLength(1);
    expect(handles(sqs.deletes())).toEqual(["rh-new"]);
    expect(acker.unacked).toBe(0);
    expect(stats.deleted).toBe(1);
  });
});

describe("Acker.track, a copy received while the delete is in flight", () => {
  // BUG (src/pipeline/acker.ts, track(), the `if (existing)` branch, and #deleteBatch's success path): a copy
  // received while the delete with the older handle is in flight only swaps the handle on the ticket; the
  // delete in flight still names the older one and, when it succeeds, the ticket is forgotten. SQS says a
  // delete with a receipt handle that is not the most recent one "succeeds, but the message might not be
  // deleted": the copy was swallowed (track returned undefined) yet the message comes back and is handled
  // again. The newest handle has to be deleted too.
  it("also deletes with the newer receipt handle before letting the message go", async () => {
    const { acker, sqs, stats } = setup();
    sqs.hold = true;
    const ticket = acker.track(message("m1", "rh-old")) as Ticket;
    acker.done(ticket);
    await vi.advanceTimersByTimeAsync(10);
    expect(handles(sqs.deletes())).toEqual(["rh-old"]);

    expect(acker.track(message("m1", "rh-new"))).toBeUndefined();
    expect(stats.duplicatesHeld).toBe(1);
    sqs.held.shift()?.answer();
    for (let i = 0; i < 10; i++) {
      await vi.advanceTimersByTimeAsync(LONG_MS);
      for (const h of sqs.held.splice(0)) h.answer();
    }
    expect(handles(sqs.deletes())).toContain("rh-new");
    expect(acker.unacked).toBe(0);
  });
});

describe("Acker.expect and delivered", () => {
  it("deletes a message expecting no output at once, after only the short linger", async () => {
    const { acker, sqs, track } = setup();
    const ticket = track("m1");
    acker.expect(ticket, 0);
    expect(ticket.state).toBe("deleting");
    await vi.advanceTimersByTimeAsync(10);
    expect(handles(sqs.deletes())).toEqual(["rh-m1"]);
    expect(ticket.state).toBe("gone");
    expect(acker.unacked).toBe(0);
  });

  it("deletes a message expecting three outputs only after the third is delivered", async () => {
    const { acker, sqs, stats, track } = setup();
    const ticket = track("m1");
    acker.expect(ticket, 3);
    acker.delivered(ticket);
    acker.delivered(ticket);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.send).not.toHaveBeenCalled();
    expect(ticket.state).toBe("held");
    expect(acker.unacked).toBe(1);

    acker.delivered(ticket);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(handles(sqs.deletes())).toEqual(["rh-m1"]);
    expect(stats.deleted).toBe(1);
    expect(acker.unacked).toBe(0);
  });

  it("ignores delivered() on a released ticket", async () => {
    const { acker, sqs, stats, track, freed } = setup();
    const ticket = track("m1");
    acker.expect(ticket, 2);
    acker.release(ticket, 0, "handler-failed");
    acker.delivered(ticket);
    acker.delivered(ticket);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.deletes()).toHaveLength(0);
    expect(sqs.changes()).toHaveLength(1);
    expect(stats.deleted).toBe(0);
    expect(freed()).toBe(1);
    expect(ticket.state).toBe("gone");
  });
});

describe("Acker deletes", () => {
  it("coalesces 25 deletes done in one tick into batches of 10, 10 and 5, each message once", async () => {
    const { acker, sqs, stats, track } = setup();
    const tickets = Array.from({ length: 25 }, (_, i) => track(`m${i}`));
    for (const t of tickets) acker.expect(t, 0);

    // Full batches go at once; the partial one waits for company, but only the short linger.
    await flush();
    expect(sqs.deletes().map((c) => c.entries.length)).toEqual([10, 10]);
    await vi.advanceTimersByTimeAsync(10);
    const deletes = sqs.deletes();
    expect(deletes.map((c) => c.entries.length)).toEqual([10, 10, 5]);
    for (const c of deletes) {
      expect(c.entries.length).toBeLessThanOrEqual(10);
      // Entry Ids are unique within a call, as SQS requires.
      expect(new Set(c.entries.map((e) => e.Id)).size).toBe(c.entries.length);
    }
    const sent = handles(deletes);
    expect(new Set(sent).size).toBe(25);
    expect(new Set(sent)).toEqual(new Set(tickets.map((t) => t.receiptHandle)));

    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.deletes()).toHaveLength(3);
    expect(stats.deleted).toBe(25);
    expect(stats.sqsCalls.deleteMessageBatch).toBe(3);
    expect(acker.unacked).toBe(0);
  });

  it("sends a lone delete after the short linger", async () => {
    const { acker, sqs, track } = setup();
    acker.done(track("m1"));
    await flush();
    expect(sqs.send).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(10);
    expect(handles(sqs.deletes())).toEqual(["rh-m1"]);
  });

  it("retries only the entries DeleteMessageBatch reports failed, until they succeed", async () => {
    const { acker, sqs, stats, track, freed } = setup();
    let failuresLeft = 2;
    sqs.answer = (call) => {
      if (!call.entries.some((e) => e.ReceiptHandle === "rh-m1") || failuresLeft === 0) return {};
      failuresLeft--;
      return { Failed: failed(call, (h) => h === "rh-m1", "InternalError") };
    };
    const tickets = ["m0", "m1", "m2"].map((id) => track(id));
    for (const t of tickets) acker.done(t);

    await vi.advanceTimersByTimeAsync(10);
    expect(sqs.deletes()).toHaveLength(1);
    // The others are deleted and leave the ledger; the failed one stays until it is deleted.
    expect(acker.unacked).toBe(1);
    expect(freed()).toBe(2);
    expect(tickets[1]?.state).toBe("deleting");

    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.deletes().map((c) => c.entries.map((e) => e.ReceiptHandle))).toEqual([
      ["rh-m0", "rh-m1", "rh-m2"],
      ["rh-m1"],
      ["rh-m1"],
    ]);
    expect(stats.deleted).toBe(3);
    expect(stats.deleteFailures).toBe(0);
    expect(acker.unacked).toBe(0);
    expect(freed()).toBe(3);
  });

  it("does not retry an entry failing with ReceiptHandleIsInvalid: counts a failure and lets the message go", async () => {
    const { acker, sqs, stats, track, freed } = setup();
    sqs.answer = (call) => ({ Failed: failed(call, (h) => h === "rh-m1", "ReceiptHandleIsInvalid", true) });
    const tickets = ["m0", "m1"].map((id) => track(id));
    for (const t of tickets) acker.done(t);
    expect(acker.unacked).toBe(2);

    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.deletes()).toHaveLength(1);
    expect(stats.deleted).toBe(1);
    expect(stats.deleteFailures).toBe(1);
    expect(acker.unacked).toBe(0);
    expect(freed()).toBe(2);
    expect(tickets[1]?.state).toBe("gone");
  });

  it("retries every entry of a call rejected as a whole", async () => {
    const { acker, sqs, stats, track } = setup();
    let rejections = 1;
    sqs.answer = () =>
      rejections-- > 0 ? Object.assign(new Error("service unavailable"), { name: "ServiceUnavailable" }) : {};
    for (const id of ["m0", "m1", "m2"]) acker.done(track(id));

    await vi.advanceTimersByTimeAsync(LONG_MS);
    const deletes = sqs.deletes();
    expect(deletes).toHaveLength(2);
    expect(new Set(deletes[1]?.entries.map((e) => e.ReceiptHandle))).toEqual(
      new Set(["rh-m0", "rh-m1", "rh-m2"]),
    );
    expect(stats.sqsCalls.errors).toBe(1);
    expect(stats.deleted).toBe(3);
    expect(stats.deleteFailures).toBe(0);
    expect(acker.unacked).toBe(0);
  });

  it("gives up after the maximum number of attempts, counting a delete failure per message", async () => {
    const { acker, sqs, stats, track, freed } = setup();
    sqs.answer = () => new Error("service unavailable");
    for (const id of ["m0", "m1"]) acker.done(track(id));

    await vi.advanceTimersByTimeAsync(LONG_MS);
    // MAX_ENTRY_ATTEMPTS in acker.ts: the first call and five retries.
    expect(sqs.deletes()).toHaveLength(6);
    for (const c of sqs.deletes()) expect(c.entries).toHaveLength(2);
    expect(stats.deleteFailures).toBe(2);
    expect(stats.deleted).toBe(0);
    expect(acker.unacked).toBe(0);
    expect(freed()).toBe(2);

    await vi.advanceTimersByTimeAsync(HOUR_MS);
    expect(sqs.send).toHaveBeenCalledTimes(6);
  });
});

describe("Acker ledger", () => {
  it("emits free whenever a message leaves the ledger, and unacked counts exactly the messages held", async () => {
    const { acker, sqs, track, freed } = setup();
    sqs.hold = true;
    const [t0, t1, t2] = ["m0", "m1", "m2", "m3"].map((id) => track(id));
    expect(acker.unacked).toBe(4);
    expect(freed()).toBe(0);

    // A copy of a held message adds nothing.
    expect(acker.track(message("m2", "rh-m2-again"))).toBeUndefined();
    expect(acker.unacked).toBe(4);

    // Being deleted is still held: it leaves only when SQS has answered.
    acker.done(t0 as Ticket);
    await vi.advanceTimersByTimeAsync(10);
    expect(sqs.held).toHaveLength(1);
    expect(acker.unacked).toBe(4);
    expect(freed()).toBe(0);
    sqs.held.shift()?.answer();
    await flush();
    expect(acker.unacked).toBe(3);
    expect(freed()).toBe(1);

    // A release leaves at once, whatever SQS answers later.
    acker.release(t1 as Ticket, 0, "handler-failed");
    expect(acker.unacked).toBe(2);
    expect(freed()).toBe(2);

    // Doing something twice to the same ticket frees it once.
    acker.release(t1 as Ticket, 0, "handler-failed");
    acker.done(t1 as Ticket);
    acker.done(t2 as Ticket);
    acker.release(t2 as Ticket, 0, "handler-failed");
    await vi.advanceTimersByTimeAsync(10);
    for (const h of sqs.held.splice(0)) h.answer();
    await flush();
    expect(acker.unacked).toBe(1);
    expect(freed()).toBe(3);
    expect(acker.releaseAll(0)).toBe(1);
    expect(acker.unacked).toBe(0);
    expect(freed()).toBe(4);
  });

  it("release() gives the message back after the delay asked, rounded, and forgets it", async () => {
    const { acker, sqs, stats, track } = setup();
    const [t0, t1, t2] = ["m0", "m1", "m2"].map((id) => track(id));
    acker.release(t0 as Ticket, 2.6, "handler-failed");
    acker.release(t1 as Ticket, 0, "handler-failed");
    acker.release(t2 as Ticket, 29.4, "handler-failed");
    expect(stats.released).toBe(3);
    expect(acker.unacked).toBe(0);
    await flush();
    const asked = sqs.changes().flatMap((c) => c.entries.map((e) => [e.ReceiptHandle, e.VisibilityTimeout]));
    expect(asked).toEqual([
      ["rh-m0", 3],
      ["rh-m1", 0],
      ["rh-m2", 29],
    ]);
    expect(stats.sqsCalls.changeMessageVisibilityBatch).toBe(1);

    // A ticket released once is not released again.
    acker.release(t0 as Ticket, 5, "handler-failed");
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(stats.released).toBe(3);
    expect(sqs.send).toHaveBeenCalledTimes(1);
  });

  it("releaseAll(0) releases every held ticket with 0 and returns the count", async () => {
    const { acker, sqs, stats, track } = setup();
    sqs.hold = true;
    const tickets = Array.from({ length: 12 }, (_, i) => track(`m${i}`));
    // One already on its way to deletion is not released.
    acker.done(tickets[0] as Ticket);

    expect(acker.releaseAll(0)).toBe(11);
    expect(stats.released).toBe(11);
    await vi.advanceTimersByTimeAsync(10);
    const changes = sqs.changes();
    for (const c of changes) expect(c.entries.length).toBeLessThanOrEqual(10);
    const asked = changes.flatMap((c) => c.entries);
    expect(asked.map((e) => e.ReceiptHandle).sort()).toEqual(
      tickets
        .slice(1)
        .map((t) => t.receiptHandle)
        .sort(),
    );
    expect(asked.every((e) => e.VisibilityTimeout === 0)).toBe(true);
    expect(acker.unacked).toBe(1);

    for (const h of sqs.held.splice(0)) h.answer();
    await flush();
    expect(acker.unacked).toBe(0);
    expect(acker.releaseAll(0)).toBe(0);
  });
});

describe("Acker heartbeat", () => {
  it("extends held messages before their visibility expires, so none ever becomes visible", async () => {
    const { acker, sqs, stats } = setup();
    /** What SQS believes: each receipt handle is invisible until this time. */
    const invisibleUntil = new Map<string, number>();
    sqs.answer = (call) => {
      if (call.command === "ChangeMessageVisibilityBatch")
        for (const e of call.entries)
          invisibleUntil.set(e.ReceiptHandle, call.atMs + (e.VisibilityTimeout ?? 0) * 1000);
      return {};
    };
    acker.start();

    // Receives at many phases of the 15 s heartbeat period, among them just after a heartbeat (the
    // multiples of 15 s), the latest a message can be first looked at; all held for 5 minutes.
    const tickets: Ticket[] = [];
    const stepMs = 250;
    for (let elapsed = 0; elapsed < 5 * 60_000; elapsed += stepMs) {
      if ((elapsed % 1_750 === 0 || elapsed % 15_000 === 0) && elapsed < 60_000) {
        const id = `m${tickets.length}`;
        const ticket = acker.track(message(id)) as Ticket;
        invisibleUntil.set(ticket.receiptHandle, Date.now() + 60_000);
        tickets.push(ticket);
      }
      await vi.advanceTimersByTimeAsync(stepMs);
      const now = Date.now();
      for (const t of tickets) {
        expect(invisibleUntil.get(t.receiptHandle), `${t.id} at ${now}`).toBeGreaterThan(now);
        expect(t.visibleUntilMs, `${t.id} at ${now}`).toBeGreaterThan(now);
      }
    }

    expect(tickets.length).toBeGreaterThan(30);
    const changes = sqs.changes();
    expect(changes.length).toBeGreaterThan(0);
    for (const c of changes) {
      expect(c.entries.length).toBeLessThanOrEqual(10);
      for (const e of c.entries) expect(e.VisibilityTimeout).toBe(60);
    }
    // Each message's first extension came well before the 60 s visibility of its receive ran out.
    for (const t of tickets) {
      const first = changes.find((c) => c.entries.some((e) => e.ReceiptHandle === t.receiptHandle));
      expect(first, t.id).toBeDefined();
      expect((first as Call).atMs - t.receivedAtMs).toBeLessThan(60_000);
    }
    expect(stats.visibilityExtended).toBe(handles(changes).length);
    expect(acker.unacked).toBe(tickets.length);
  });

  it("never asks for visibility past 12 hours after the receive, and asks nothing once that is reached", async () => {
    const { acker, sqs } = setup();
    acker.start();
    const receivedAtMs = Date.now() - (MAX_VISIBILITY_MS - 30_000);
    acker.track(message("old"), receivedAtMs);
    const young = acker.track(message("young")) as Ticket;

    await vi.advanceTimersByTimeAsync(10 * 60_000);
    const old = sqs
      .changes()
      .flatMap((c) =>
        c.entries.filter((e) => e.ReceiptHandle === "rh-old").map((e) => ({ atMs: c.atMs, ...e })),
      );
    expect(old.length).toBeGreaterThan(0);
    for (const e of old) {
      expect(e.VisibilityTimeout).toBeGreaterThan(0);
      expect(e.VisibilityTimeout).toBeLessThanOrEqual(30);
      expect(e.atMs + (e.VisibilityTimeout ?? 0) * 1000).toBeLessThanOrEqual(
        receivedAtMs + MAX_VISIBILITY_MS,
      );
      expect(e.atMs).toBeLessThan(receivedAtMs + MAX_VISIBILITY_MS);
    }
    // The heartbeat goes on for the others meanwhile.
    expect(handles(sqs.changes())).toContain(young.receiptHandle);

    const askedForOld = old.length;
    await vi.advanceTimersByTimeAsync(HOUR_MS);
    expect(handles(sqs.changes()).filter((h) => h === "rh-old")).toHaveLength(askedForOld);
  });

  it("does not retry an extension failing with MessageNotInflight, but retries other failures", async () => {
    const { acker, sqs, track } = setup();
    let failuresLeft = 1;
    sqs.answer = (call) => {
      if (failuresLeft === 0) return {};
      failuresLeft--;
      return {
        Failed: [
          ...failed(call, (h) => h === "rh-m0", "MessageNotInflight", true),
          ...failed(call, (h) => h === "rh-m1", "InternalError"),
        ],
      };
    };
    acker.start();
    track("m0");
    track("m1");

    // The first extension is due 30 s after the receive; the next heartbeat that extends is 30 s later.
    await vi.advanceTimersByTimeAsync(30_000);
    expect(sqs.changes()).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(sqs.changes().map((c) => c.entries.map((e) => e.ReceiptHandle))).toEqual([
      ["rh-m0", "rh-m1"],
      ["rh-m1"],
    ]);
  });

  it("retries every entry of a visibility change rejected as a whole", async () => {
    const { acker, sqs, stats, track } = setup();
    let rejections = 1;
    sqs.answer = () => (rejections-- > 0 ? new Error("throttled") : {});
    const [t0, t1] = ["m0", "m1"].map((id) => track(id));
    acker.release(t0 as Ticket, 0, "handler-failed");
    acker.release(t1 as Ticket, 7, "handler-failed");
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.changes()).toHaveLength(2);
    expect(sqs.changes()[1]?.entries.map((e) => [e.ReceiptHandle, e.VisibilityTimeout])).toEqual([
      ["rh-m0", 0],
      ["rh-m1", 7],
    ]);
    expect(stats.sqsCalls.errors).toBe(1);
  });
});

describe("Acker.settle and stop", () => {
  it("settle() resolves at once when nothing is queued", async () => {
    const { acker } = setup();
    await expect(acker.settle()).resolves.toBeUndefined();
  });

  it("settle() resolves only once every queued delete and visibility change has been answered", async () => {
    const { acker, sqs, track } = setup();
    sqs.hold = true;
    let deleteFailuresLeft = 1;
    sqs.answer = (call) => {
      if (call.command !== "DeleteMessageBatch" || deleteFailuresLeft === 0) return {};
      deleteFailuresLeft--;
      return { Failed: failed(call, () => true, "InternalError") };
    };
    const [t0, t1] = ["m0", "m1"].map((id) => track(id));
    acker.done(t0 as Ticket); // still lingering: settle() sends it without waiting
    acker.release(t1 as Ticket, 0, "handler-failed");

    let settled = false;
    void acker.settle().then(() => {
      settled = true;
    });
    await flush();
    expect(sqs.held.map((h) => h.call.command).sort()).toEqual([
      "ChangeMessageVisibilityBatch",
      "DeleteMessageBatch",
    ]);
    expect(settled).toBe(false);

    const answer = (command: Call["command"]) => {
      const i = sqs.held.findIndex((h) => h.call.command === command);
      expect(i).toBeGreaterThanOrEqual(0);
      sqs.held.splice(i, 1)[0]?.answer();
    };
    answer("ChangeMessageVisibilityBatch");
    await flush();
    expect(settled).toBe(false);

    // The delete fails; its retry is still owed.
    answer("DeleteMessageBatch");
    await flush();
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.deletes()).toHaveLength(2);
    expect(settled).toBe(false);

    answer("DeleteMessageBatch");
    await flush();
    expect(settled).toBe(true);
    expect(acker.unacked).toBe(0);
  });

  it("stop() stops the heartbeat", async () => {
    const { acker, sqs, track } = setup();
    acker.start();
    track("m0");
    await vi.advanceTimersByTimeAsync(31_000);
    expect(sqs.changes()).toHaveLength(1);

    acker.stop();
    await vi.advanceTimersByTimeAsync(HOUR_MS);
    expect(sqs.send).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("Acker byte ledger (maxUnackedBytes)", () => {
  const sized = (id: string, body: string): Message => ({
    MessageId: id,
    ReceiptHandle: `rh-${id}`,
    Body: body,
  });

  it("counts the UTF-8 bytes of every body held, once per message, and frees them on delete, release and a failed delete", async () => {
    const { acker, sqs } = setup();
    const small = acker.track(sized("m0", "x".repeat(1000))) as Ticket;
    // "é" is two bytes in UTF-8 and "😀" four: bytes, not characters, are counted.
    const wide = acker.track(sized("m1", `${"é".repeat(500)}😀`)) as Ticket;
    const third = acker.track(sized("m2", "y".repeat(300))) as Ticket;
    const fourth = acker.track(sized("m3", "z".repeat(50))) as Ticket;
    expect(wide.bytes).toBe(1004);
    expect(acker.unackedBytes).toBe(1000 + 1004 + 300 + 50);

    // A copy of a held message adds nothing.
    expect(acker.track(sized("m0", "x".repeat(1000)))).toBeUndefined();
    expect(acker.unackedBytes).toBe(2354);

    // Deleted (the dead-letter path ends the same way): freed once SQS confirms the delete.
    acker.done(small);
    expect(acker.unackedBytes).toBe(2354);
    await vi.advanceTimersByTimeAsync(10);
    expect(acker.unackedBytes).toBe(1354);

    // Released: freed at once.
    acker.release(wide, 0, "handler-failed");
    expect(acker.unackedBytes).toBe(350);

    // A delete that fails for good lets the message go, and its bytes.
    sqs.answer = (call) => ({ Failed: failed(call, (h) => h === "rh-m2", "ReceiptHandleIsInvalid", true) });
    acker.done(third);
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(acker.unackedBytes).toBe(50);

    acker.releaseAll(0);
    expect(fourth.state).toBe("gone");
    expect(acker.unackedBytes).toBe(0);
    expect(acker.unacked).toBe(0);
  });
});

describe("Acker.holdReleases (shutdown while long polls are open)", () => {
  it("queues releases without sending them while heartbeats and deletes go on; resumeReleases() sends them", async () => {
    const { acker, sqs, stats, track } = setup();
    acker.start();
    const kept = track("kept");
    const [r0, r1, gone] = ["r0", "r1", "gone"].map((id) => track(id)) as Ticket[];
    acker.holdReleases();
    acker.release(r0 as Ticket, 0, "handler-failed");
    acker.release(r1 as Ticket, 30, "handler-failed");
    acker.done(gone as Ticket);
    // Released messages leave the ledger at once (demand and bytes are freed), but nothing is sent.
    expect(acker.unacked).toBe(2);
    expect(stats.released).toBe(2);
    await vi.advanceTimersByTimeAsync(31_000);
    expect(handles(sqs.deletes())).toEqual(["rh-gone"]);
    // The heartbeat still extends what is held.
    expect(handles(sqs.changes())).toEqual([kept.receiptHandle]);

    acker.resumeReleases();
    await flush();
    const released = sqs
      .changes()
      .slice(1)
      .flatMap((c) => c.entries.map((e) => [e.ReceiptHandle, e.VisibilityTimeout]));
    expect(released).toEqual([
      ["rh-r0", 0],
      ["rh-r1", 30],
    ]);
    // From now on a release goes at once.
    acker.release(kept, 0, "handler-failed");
    await flush();
    expect(handles(sqs.changes().slice(-1))).toEqual([kept.receiptHandle]);
    expect(sqs.changes().at(-1)?.entries[0]?.VisibilityTimeout).toBe(0);
  });

  it("settle() sends releases still held back, and resolves once they are answered", async () => {
    const { acker, sqs, track } = setup();
    acker.holdReleases();
    acker.release(track("m0"), 0, "handler-failed");
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.changes()).toHaveLength(0);
    await acker.settle();
    expect(sqs.changes().flatMap((c) => c.entries.map((e) => e.ReceiptHandle))).toEqual(["rh-m0"]);
  });
});

describe("Acker releases in flight", () => {
  it("counts a released message (and its bytes) until SQS answers the release, through retries, then emits releaseAnswered", async () => {
    const { acker, sqs, track } = setup();
    let answered = 0;
    acker.on("releaseAnswered", () => {
      answered++;
    });
    sqs.hold = true;
    let failuresLeft = 1;
    sqs.answer = (call) => {
      if (failuresLeft === 0) return {};
      failuresLeft--;
      return { Failed: failed(call, (h) => h === "rh-m1", "InternalError") };
    };
    const [t0, t1] = ["m0", "m1"].map((id) => track(id)) as Ticket[];
    acker.release(t0 as Ticket, 0, "handler-failed");
    acker.release(t1 as Ticket, 0, "handler-failed");
    // Out of the ledger at once, still SQS's in-flight messages of this process.
    expect(acker.unacked).toBe(0);
    expect(acker.releasesInFlight).toBe(2);
    expect(acker.releasesInFlightBytes).toBe(4);

    await flush();
    sqs.held.shift()?.answer();
    await flush();
    // m0 is answered; m1 failed and is being retried.
    expect(acker.releasesInFlight).toBe(1);
    expect(acker.releasesInFlightBytes).toBe(2);
    expect(answered).toBe(1);

    await vi.advanceTimersByTimeAsync(LONG_MS);
    sqs.held.shift()?.answer();
    await flush();
    expect(acker.releasesInFlight).toBe(0);
    expect(acker.releasesInFlightBytes).toBe(0);
    expect(answered).toBe(2);
  });

  it("stops counting a release that fails for good", async () => {
    const { acker, sqs, track } = setup();
    sqs.answer = (call) => ({ Failed: failed(call, () => true, "ReceiptHandleIsInvalid", true) });
    acker.release(track("m0"), 0, "handler-failed");
    await vi.advanceTimersByTimeAsync(LONG_MS);
    expect(sqs.changes()).toHaveLength(1);
    expect(acker.releasesInFlight).toBe(0);
  });
});

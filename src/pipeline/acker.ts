import { EventEmitter } from "node:events";
import type { Message, SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import type { RelayEventSink, ReleasedCause } from "./events.ts";
import { type EntryResult, SqsEntryBatcher } from "./sqs-entry-batcher.ts";

/** SQS caps a message's visibility at 12 hours from its receive. */
const MAX_VISIBILITY_MS = 12 * 60 * 60 * 1000;
/** How long a partial delete batch waits for company before it is sent. */
const DELETE_LINGER_MS = 5;

/** The payload of every single delete: nothing allocated per message deleted. */
const ONE_DELETED = Object.freeze({ count: 1 });

/** A received message on its way to deletion: held once, whatever copy of it came in last. */
export interface Ticket {
  readonly id: string;
  /** The message as first received: its body and attributes go to the dead-letter queue if need be. */
  readonly message: Message;
  receiptHandle: string;
  receiveCount: number;
  /** When this copy was received (ms epoch); visibility is counted from here. */
  receivedAtMs: number;
  visibleUntilMs: number;
  /** Outputs not yet delivered. */
  pending: number;
  /** UTF-8 bytes of the body, counted against `maxUnackedBytes` while the message is held. */
  readonly bytes: number;
  state: "held" | "deleting" | "gone";
}

export interface AckerOptions {
  queue: string;
  queueUrl: string;
  visibilityTimeoutSec: number;
}

/** A heartbeat ("extend") is moot once its message is gone; a "release" is what made it gone. */
type Change = { ticket: Ticket; visibilitySec: number; kind: "extend" | "release" };

/**
 * The ledger of un-acknowledged messages of one queue: it deletes a message once every output it
 * produced is delivered, keeps the rest invisible with heartbeats, and releases what it gives back.
 * It counts the messages and the body bytes it holds (the poller's room is bounded by both).
 * Emits "free" whenever a message leaves the ledger, and "releaseAnswered" when SQS has answered a
 * release; both may reopen demand.
 */
export class Acker extends EventEmitter<{ free: []; releaseAnswered: [] }> {
  readonly #log: Logger;
  readonly #events: RelayEventSink;
  readonly #options: AckerOptions;
  readonly #held = new Map<string, Ticket>();
  /** Cuts retries short at stop(). */
  readonly #abort = new AbortController();
  readonly #deletes: SqsEntryBatcher<Ticket, "DeleteMessageBatch">;
  readonly #changes: SqsEntryBatcher<Change, "ChangeMessageVisibilityBatch">;
  #heartbeat: NodeJS.Timeout | undefined;
  #heldBytes = 0;
  #releasesInFlight = 0;
  #releasesInFlightBytes = 0;
  /** While set, releases are queued but not sent (see holdReleases). */
  #releasesHeld = false;

  constructor(deps: { sqs: SQSClient; log: Logger; events: RelayEventSink }, options: AckerOptions) {
    super();
    this.#log = deps.log.child({ component: "acker" });
    this.#events = deps.events;
    this.#options = options;
    const batcherDeps = { sqs: deps.sqs, log: this.#log, events: deps.events, signal: this.#abort.signal };
    this.#deletes = new SqsEntryBatcher(batcherDeps, {
      operation: "DeleteMessageBatch",
      queueUrl: options.queueUrl,
      lingerMs: DELETE_LINGER_MS,
      entry: (ticket, Id) => ({ Id, ReceiptHandle: ticket.receiptHandle }),
      messageId: (ticket) => ticket.id,
      onDone: (ticket, result) => this.#deleteDone(ticket, result),
    });
    this.#changes = new SqsEntryBatcher(batcherDeps, {
      operation: "ChangeMessageVisibilityBatch",
      queueUrl: options.queueUrl,
      lingerMs: 0,
      entry: (c, Id) => ({ Id, ReceiptHandle: c.ticket.receiptHandle, VisibilityTimeout: c.visibilitySec }),
      messageId: (c) => c.ticket.id,
      status: (c) => this.#changeStatus(c),
      onDone: (c) => {
        if (c.kind !== "release") return;
        this.#releasesInFlight--;
        this.#releasesInFlightBytes -= c.ticket.bytes;
        this.emit("releaseAnswered");
      },
    });
  }

  /** Received but not yet deleted or released. */
  get unacked(): number {
    return this.#held.size;
  }

  /** Body bytes of the messages counted by `unacked`. */
  get unackedBytes(): number {
    return this.#heldBytes;
  }

  /**
   * Released messages whose visibility change SQS has not answered yet. They left the ledger at once,
   * but SQS still has them in flight for this process, so the room counts them until it answers.
   */
  get releasesInFlight(): number {
    return this.#releasesInFlight;
  }

  /** Body bytes of `releasesInFlight`. */
  get releasesInFlightBytes(): number {
    return this.#releasesInFlightBytes;
  }

  /** Oldest receive time among held messages, for "how far behind" questions. */
  oldestReceivedAtMs(): number | undefined {
    let oldest: number | undefined;
    for (const t of this.#held.values())
      if (oldest === undefined || t.receivedAtMs < oldest) oldest = t.receivedAtMs;
    return oldest;
  }

  start(): void {
    const periodMs = Math.max(200, (this.#options.visibilityTimeoutSec * 1000) / 4);
    this.#heartbeat = setInterval(() => this.#extendExpiring(), periodMs);
  }

  /**
   * Registers a received message. Returns undefined for a copy of a message already held: its newer
   * receipt handle replaces the old one, and the copy is not handled again.
   */
  track(message: Message, nowMs = Date.now()): Ticket | undefined {
    const id = message.MessageId as string;
    const visibleUntilMs = nowMs + this.#options.visibilityTimeoutSec * 1000;
    const existing = this.#held.get(id);
    if (existing) {
      existing.receiptHandle = message.ReceiptHandle as string;
      existing.receivedAtMs = nowMs;
      existing.visibleUntilMs = visibleUntilMs;
      this.#events.emit("duplicate", { messageId: id });
      return undefined;
    }
    const ticket: Ticket = {
      id,
      message,
      receiptHandle: message.ReceiptHandle as string,
      receiveCount: Number(message.Attributes?.ApproximateReceiveCount ?? 1),
      receivedAtMs: nowMs,
      visibleUntilMs,
      pending: 0,
      state: "held",
      bytes: Buffer.byteLength(message.Body ?? "", "utf8"),
    };
    this.#held.set(id, ticket);
    this.#heldBytes += ticket.bytes;
    return ticket;
  }

  /** The handler produced `outputs` outputs; the message is deleted once all are delivered. */
  expect(ticket: Ticket, outputs: number): void {
    if (outputs === 0) this.done(ticket);
    else ticket.pending += outputs;
  }

  /** One output of this message was durably delivered. */
  delivered(ticket: Ticket): void {
    if (ticket.state !== "held") return;
    ticket.pending--;
    if (ticket.pending <= 0) this.done(ticket);
  }

  /** Nothing more is owed for this message: delete it. */
  done(ticket: Ticket): void {
    if (ticket.state !== "held") return;
    ticket.state = "deleting";
    this.#deletes.add(ticket);
  }

  /**
   * Gives the message back to SQS: it becomes visible again after `delaySec` (0 = at once) and
   * another receive (here or on another replica) handles it. `cause` is what telemetry reports.
   */
  release(ticket: Ticket, delaySec: number, cause: ReleasedCause): void {
    if (ticket.state !== "held") return;
    this.#releasesInFlight++;
    this.#releasesInFlightBytes += ticket.bytes;
    this.#forget(ticket);
    this.#events.emit("released", { count: 1, cause });
    this.#changes.add({ ticket, visibilitySec: Math.max(0, Math.round(delaySec)), kind: "release" });
  }

  /**
   * Until resumeReleases() (or settle()), releases are queued and not sent; heartbeats and deletes
   * go on. At shutdown this process's own long polls are still open, and SQS would hand them whatever
   * becomes visible: a release sent now would be received again here (one more receive toward
   * maxReceiveCount) instead of by another replica.
   */
  holdReleases(): void {
    this.#releasesHeld = true;
  }

  /** Sends the releases queued since holdReleases(), and any later ones at once. */
  resumeReleases(): void {
    this.#releasesHeld = false;
    this.#changes.send();
  }

  /** Releases everything still held (shutdown deadline). */
  releaseAll(delaySec: number): number {
    const held = [...this.#held.values()].filter((t) => t.state === "held");
    for (const t of held) this.release(t, delaySec, "stopping");
    return held.length;
  }

  /**
   * Resolves once every delete and visibility change queued so far has been sent and answered.
   * Releases held by holdReleases() are sent too.
   */
  async settle(): Promise<void> {
    this.#releasesHeld = false;
    // Both at once: a delete or change queued while the other was being waited for is waited for too.
    while (this.#deletes.pending + this.#changes.pending > 0) {
      this.#deletes.send();
      this.#changes.send();
      await Promise.all([this.#deletes.idle(), this.#changes.idle()]);
    }
  }

  /** Stops the heartbeat; retries still waiting are given up (their messages come back later). */
  stop(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    this.#abort.abort();
  }

  #forget(ticket: Ticket): void {
    ticket.state = "gone";
    if (this.#held.get(ticket.id) === ticket) {
      this.#held.delete(ticket.id);
      this.#heldBytes -= ticket.bytes;
    }
    this.emit("free");
  }

  /** Heartbeat: every held message whose visibility ends within half a timeout gets a full one more. */
  #extendExpiring(nowMs = Date.now()): void {
    const timeoutMs = this.#options.visibilityTimeoutSec * 1000;
    let extended = 0;
    for (const ticket of this.#held.values()) {
      if (ticket.visibleUntilMs - nowMs > timeoutMs / 2) continue;
      const leftMs = ticket.receivedAtMs + MAX_VISIBILITY_MS - nowMs;
      const visibilitySec = Math.floor(Math.min(timeoutMs, leftMs) / 1000);
      if (visibilitySec <= 0) continue;
      ticket.visibleUntilMs = nowMs + visibilitySec * 1000;
      extended++;
      this.#changes.add({ ticket, visibilitySec, kind: "extend" });
    }
    if (extended > 0) this.#events.emit("extended", { count: extended });
  }

  /** A heartbeat for a message no longer held is moot; a release waits while releases are held. */
  #changeStatus(c: Change): "send" | "hold" | "drop" {
    if (c.kind === "extend") return c.ticket.state === "held" ? "send" : "drop";
    return this.#releasesHeld ? "hold" : "send";
  }

  #deleteDone(ticket: Ticket, result: EntryResult<{ ReceiptHandle?: string | undefined }>): void {
    if (!result.ok) {
      // A receipt handle SQS no longer accepts cannot be fixed by retrying: the message will come back
      // and be handled again. That is a duplicate later, never a loss.
      this.#log.error(
        { messageId: ticket.id, code: result.failure.code, reason: result.failure.message },
        "delete failed for good; the message will be redelivered",
      );
      this.#events.emit("delete-failed", { messageId: ticket.id, code: result.failure.code });
      this.#forget(ticket);
      return;
    }
    // A copy received meanwhile carries a newer handle; SQS may keep the message unless that one is
    // deleted too.
    if (result.sent.ReceiptHandle !== ticket.receiptHandle) {
      this.#deletes.add(ticket);
      return;
    }
    this.#events.emit("deleted", ONE_DELETED);
    this.#forget(ticket);
  }
}

import { EventEmitter } from "node:events";
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  type Message,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import { backoffMs } from "./backoff.ts";
import { BatchEntryError } from "./errors.ts";
import type { RelayStats } from "./stats.ts";

/** SQS caps a message's visibility at 12 hours from its receive. */
const MAX_VISIBILITY_MS = 12 * 60 * 60 * 1000;
const SQS_BATCH = 10;
/** How long a partial delete batch waits for company before it is sent. */
const DELETE_LINGER_MS = 5;
const MAX_ENTRY_ATTEMPTS = 6;

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
type Change = { ticket: Ticket; visibilitySec: number; attempts: number; kind: "extend" | "release" };
/** `receiptHandle` is the handle sent: a newer copy may have replaced the ticket's since. */
type Delete = { ticket: Ticket; attempts: number; receiptHandle: string };

/**
 * The ledger of un-acknowledged messages of one queue: it deletes a message once every output it
 * produced is delivered, keeps the rest invisible with heartbeats, and releases what it gives back.
 * It counts the messages and the body bytes it holds (the poller's room is bounded by both).
 * Emits "free" whenever a message leaves the ledger, and "releaseAnswered" when SQS has answered a
 * release; both may reopen demand.
 */
export class Acker extends EventEmitter<{ free: []; releaseAnswered: [] }> {
  readonly #sqs: SQSClient;
  readonly #log: Logger;
  readonly #stats: RelayStats;
  readonly #options: AckerOptions;
  readonly #held = new Map<string, Ticket>();
  #deletes: Delete[] = [];
  #changes: Change[] = [];
  #deleteTimer: NodeJS.Timeout | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #inFlightCalls = 0;
  #settled: (() => void)[] = [];
  #heldBytes = 0;
  #releasesInFlight = 0;
  #releasesInFlightBytes = 0;
  /** While set, releases are queued but not sent (see holdReleases). */
  #releasesHeld = false;

  constructor(deps: { sqs: SQSClient; log: Logger; stats: RelayStats }, options: AckerOptions) {
    super();
    this.#sqs = deps.sqs;
    this.#log = deps.log.child({ component: "acker" });
    this.#stats = deps.stats;
    this.#options = options;
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
      this.#stats.duplicatesHeld++;
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
    this.#deletes.push({ ticket, attempts: 0, receiptHandle: ticket.receiptHandle });
    if (this.#deletes.length >= SQS_BATCH) this.#sendDeletes();
    else this.#deleteTimer ??= setTimeout(() => this.#sendDeletes(), DELETE_LINGER_MS);
  }

  /**
   * Gives the message back to SQS: it becomes visible again after `delaySec` (0 = at once) and
   * another receive (here or on another replica) handles it.
   */
  release(ticket: Ticket, delaySec: number): void {
    if (ticket.state !== "held") return;
    this.#releasesInFlight++;
    this.#releasesInFlightBytes += ticket.bytes;
    this.#forget(ticket);
    this.#stats.released++;
    this.#queueChange({
      ticket,
      visibilitySec: Math.max(0, Math.round(delaySec)),
      attempts: 0,
      kind: "release",
    });
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
    this.#sendChanges();
  }

  /** Releases everything still held (shutdown deadline). */
  releaseAll(delaySec: number): number {
    const held = [...this.#held.values()].filter((t) => t.state === "held");
    for (const t of held) this.release(t, delaySec);
    return held.length;
  }

  /**
   * Resolves once every delete and visibility change queued so far has been sent and answered.
   * Releases held by holdReleases() are sent too.
   */
  settle(): Promise<void> {
    this.#releasesHeld = false;
    this.#sendDeletes();
    this.#sendChanges();
    if (this.#pendingWork() === 0) return Promise.resolve();
    return new Promise((resolve) => this.#settled.push(resolve));
  }

  stop(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  #pendingWork(): number {
    return this.#inFlightCalls + this.#deletes.length + this.#changes.length;
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
    for (const ticket of this.#held.values()) {
      if (ticket.visibleUntilMs - nowMs > timeoutMs / 2) continue;
      const leftMs = ticket.receivedAtMs + MAX_VISIBILITY_MS - nowMs;
      const visibilitySec = Math.floor(Math.min(timeoutMs, leftMs) / 1000);
      if (visibilitySec <= 0) continue;
      ticket.visibleUntilMs = nowMs + visibilitySec * 1000;
      this.#stats.visibilityExtended++;
      this.#queueChange({ ticket, visibilitySec, attempts: 0, kind: "extend" });
    }
  }

  #queueChange(change: Change): void {
    this.#changes.push(change);
    queueMicrotask(() => this.#sendChanges());
  }

  #sendDeletes(): void {
    clearTimeout(this.#deleteTimer);
    this.#deleteTimer = undefined;
    while (this.#deletes.length > 0) {
      const batch = this.#deletes.splice(0, SQS_BATCH);
      this.#inFlightCalls++;
      void this.#deleteBatch(batch).finally(() => this.#callDone());
    }
  }

  #sendChanges(): void {
    const live = this.#changes.filter((c) => c.kind === "release" || c.ticket.state === "held");
    const waiting = this.#releasesHeld ? live.filter((c) => c.kind === "release") : [];
    const sendable = this.#releasesHeld ? live.filter((c) => c.kind !== "release") : live;
    this.#changes = waiting;
    while (sendable.length > 0) {
      const batch = sendable.splice(0, SQS_BATCH);
      this.#inFlightCalls++;
      void this.#changeBatch(batch).finally(() => this.#callDone());
    }
  }

  #callDone(): void {
    this.#inFlightCalls--;
    if (this.#pendingWork() === 0) for (const resolve of this.#settled.splice(0)) resolve();
  }

  async #deleteBatch(batch: Delete[]): Promise<void> {
    for (const d of batch) d.receiptHandle = d.ticket.receiptHandle;
    const entries = batch.map((d, i) => ({ Id: String(i), ReceiptHandle: d.receiptHandle }));
    let failed: { entry: Delete; code: string; message: string; senderFault: boolean }[];
    try {
      const out = await this.#sqs.send(
        new DeleteMessageBatchCommand({ QueueUrl: this.#options.queueUrl, Entries: entries }),
      );
      this.#stats.sqsCalls.deleteMessageBatch++;
      failed = (out.Failed ?? []).map((f) => ({
        entry: batch[Number(f.Id)] as Delete,
        code: f.Code ?? "Unknown",
        message: f.Message ?? "",
        senderFault: f.SenderFault ?? false,
      }));
    } catch (err) {
      this.#stats.sqsCalls.errors++;
      failed = batch.map((entry) => ({
        entry,
        code: (err as Error).name,
        message: (err as Error).message,
        senderFault: false,
      }));
    }
    const failedIds = new Set(failed.map((f) => f.entry.ticket.id));
    const again: Delete[] = [];
    for (const d of batch) {
      if (failedIds.has(d.ticket.id)) continue;
      // A copy received meanwhile carries a newer handle; SQS may keep the message unless that one is
      // deleted too.
      if (d.ticket.receiptHandle !== d.receiptHandle) {
        again.push({ ticket: d.ticket, attempts: 0, receiptHandle: d.ticket.receiptHandle });
        continue;
      }
      this.#stats.deleted++;
      this.#forget(d.ticket);
    }
    if (again.length > 0) {
      this.#deletes.push(...again);
      this.#sendDeletes();
    }
    if (failed.length === 0) return;
    const error = new BatchEntryError(
      "DeleteMessageBatch",
      failed.map((f) => ({
        id: f.entry.ticket.id,
        code: f.code,
        message: f.message,
        senderFault: f.senderFault,
      })),
    );
    const retry: Delete[] = [];
    for (const f of failed) {
      // A receipt handle SQS no longer accepts cannot be fixed by retrying: the message will come back
      // and be handled again. That is a duplicate later, never a loss.
      if (f.code === "ReceiptHandleIsInvalid" || f.entry.attempts + 1 >= MAX_ENTRY_ATTEMPTS) {
        this.#log.error(
          { err: error, messageId: f.entry.ticket.id, code: f.code },
          "delete failed for good; the message will be redelivered",
        );
        this.#stats.deleteFailures++;
        this.#forget(f.entry.ticket);
      } else {
        retry.push({ ...f.entry, attempts: f.entry.attempts + 1 });
      }
    }
    if (retry.length === 0) return;
    this.#log.warn({ err: error, retrying: retry.length }, "delete entries failed; retrying");
    await new Promise((r) => setTimeout(r, backoffMs(retry[0]?.attempts ?? 1, 100, 5000)));
    this.#deletes.push(...retry);
    this.#sendDeletes();
  }

  async #changeBatch(batch: Change[]): Promise<void> {
    const entries = batch.map((c, i) => ({
      Id: String(i),
      ReceiptHandle: c.ticket.receiptHandle,
      VisibilityTimeout: c.visibilitySec,
    }));
    let failed: { change: Change; code: string; message: string }[];
    try {
      const out = await this.#sqs.send(
        new ChangeMessageVisibilityBatchCommand({ QueueUrl: this.#options.queueUrl, Entries: entries }),
      );
      this.#stats.sqsCalls.changeMessageVisibilityBatch++;
      failed = (out.Failed ?? []).map((f) => ({
        change: batch[Number(f.Id)] as Change,
        code: f.Code ?? "Unknown",
        message: f.Message ?? "",
      }));
    } catch (err) {
      this.#stats.sqsCalls.errors++;
      failed = batch.map((change) => ({
        change,
        code: (err as Error).name,
        message: (err as Error).message,
      }));
    }
    const retry = failed.filter(
      (f) =>
        f.code !== "ReceiptHandleIsInvalid" &&
        f.code !== "MessageNotInflight" &&
        f.change.attempts + 1 < MAX_ENTRY_ATTEMPTS,
    );
    if (failed.length > 0) {
      this.#log.warn(
        {
          failures: failed.map((f) => ({ messageId: f.change.ticket.id, code: f.code })),
          retrying: retry.length,
        },
        "visibility change entries failed",
      );
    }
    const retrying = new Set(retry.map((f) => f.change));
    const answered = batch.filter((c) => c.kind === "release" && !retrying.has(c));
    for (const c of answered) {
      this.#releasesInFlight--;
      this.#releasesInFlightBytes -= c.ticket.bytes;
    }
    if (answered.length > 0) this.emit("releaseAnswered");
    if (retry.length === 0) return;
    await new Promise((r) => setTimeout(r, backoffMs(retry[0]?.change.attempts ?? 1, 100, 5000)));
    for (const f of retry) this.#changes.push({ ...f.change, attempts: f.change.attempts + 1 });
    this.#sendChanges();
  }
}

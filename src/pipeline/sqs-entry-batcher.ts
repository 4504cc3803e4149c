import {
  type BatchResultErrorEntry,
  ChangeMessageVisibilityBatchCommand,
  type ChangeMessageVisibilityBatchRequestEntry,
  DeleteMessageBatchCommand,
  type DeleteMessageBatchRequestEntry,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import { backoffMs } from "../backoff.ts";
import { BatchEntryError } from "../errors.ts";
import { sleep } from "../sleep.ts";
import { type RelayEventSink, SQS_CALL } from "./events.ts";

/** SQS takes at most 10 entries per batch call. */
export const SQS_MAX_BATCH_ENTRIES = 10;
/** Attempts per entry: the first call and five retries. */
export const MAX_ENTRY_ATTEMPTS = 6;
const RETRY_BASE_MS = 100;
const RETRY_MAX_MS = 5000;

/**
 * Failure codes that no retry can fix: the receipt handle is stale or the message is no longer in
 * flight (deleted, or visible again). SQS says "message does not exist" as InvalidParameterValue.
 */
export const FINAL_ENTRY_CODES: ReadonlySet<string> = new Set([
  "ReceiptHandleIsInvalid",
  "MessageNotInflight",
  "InvalidParameterValue",
]);

/** The batch calls this batcher makes, and the entry each takes. */
interface Entries {
  DeleteMessageBatch: DeleteMessageBatchRequestEntry;
  ChangeMessageVisibilityBatch: ChangeMessageVisibilityBatchRequestEntry;
}
export type SqsBatchOperation = keyof Entries;

type Call<Op extends SqsBatchOperation> = (
  sqs: SQSClient,
  queueUrl: string,
  entries: Entries[Op][],
) => Promise<{ Failed?: BatchResultErrorEntry[] }>;

// No per-call options (an abort signal): those make the SDK resolve its middleware stack afresh on
// every call. Nothing needs aborting here: stop() comes after settle(), which waits for every call.
const CALLS: { [Op in SqsBatchOperation]: Call<Op> } = {
  DeleteMessageBatch: (sqs, QueueUrl, Entries) =>
    sqs.send(new DeleteMessageBatchCommand({ QueueUrl, Entries })),
  ChangeMessageVisibilityBatch: (sqs, QueueUrl, Entries) =>
    sqs.send(new ChangeMessageVisibilityBatchCommand({ QueueUrl, Entries })),
};

/** Why an entry was given up on. */
export interface EntryFailure {
  code: string;
  message: string;
  senderFault: boolean;
}

/** How an item ended: SQS accepted it (with the entry as sent), or it was given up on. */
export type EntryResult<E> = { ok: true; sent: E } | { ok: false; failure: EntryFailure };

export interface SqsEntryBatcherOptions<T, Op extends SqsBatchOperation> {
  operation: Op;
  queueUrl: string;
  /** How long a partial batch waits for company; 0 = until the end of the current tick. */
  lingerMs: number;
  /** The entry for `item`, built at each attempt (so a receipt handle is read as it is then). */
  entry(item: T, id: string): Entries[Op];
  /** For logs and errors: the message the item is about. */
  messageId(item: T): string;
  /** Asked at each send: "hold" keeps the item queued for a later send, "drop" forgets it unsent. */
  status?(item: T): "send" | "hold" | "drop";
  /** Once per item: when SQS accepted it or when it is given up on (final code, attempts, abort). */
  onDone(item: T, result: EntryResult<Entries[Op]>): void;
}

interface Queued<T> {
  item: T;
  attempts: number;
}

/**
 * Queues entries for one SQS batch call (DeleteMessageBatch or ChangeMessageVisibilityBatch) and
 * sends them at most 10 per call: a full batch at once, a partial one after `lingerMs`. Every entry
 * listed in `Failed`, and every entry of a call that fails as a whole, is retried with backoff until
 * it succeeds, fails with a code in FINAL_ENTRY_CODES, runs out of attempts, or the signal fires.
 */
export class SqsEntryBatcher<T, Op extends SqsBatchOperation> {
  readonly #sqs: SQSClient;
  readonly #log: Logger;
  readonly #events: RelayEventSink;
  readonly #signal: AbortSignal;
  readonly #options: SqsEntryBatcherOptions<T, Op>;
  readonly #call: Call<Op>;
  #queue: Queued<T>[] = [];
  /** Added since the last send: a full batch of them goes at once. */
  #unsent = 0;
  #timer: NodeJS.Timeout | undefined;
  #tickQueued = false;
  /** Calls sent and not yet done with, their backoff before a retry included. */
  #calls = 0;
  #idle: (() => void)[] = [];

  constructor(
    deps: { sqs: SQSClient; log: Logger; events: RelayEventSink; signal: AbortSignal },
    options: SqsEntryBatcherOptions<T, Op>,
  ) {
    this.#sqs = deps.sqs;
    this.#log = deps.log;
    this.#events = deps.events;
    this.#signal = deps.signal;
    this.#options = options;
    this.#call = CALLS[options.operation];
  }

  /** Items queued (held ones included) or in a call not yet done with. */
  get pending(): number {
    return this.#queue.length + this.#calls;
  }

  add(item: T): void {
    this.#queue.push({ item, attempts: 0 });
    if (++this.#unsent >= SQS_MAX_BATCH_ENTRIES) this.send();
    else if (this.#options.lingerMs > 0) {
      this.#timer ??= setTimeout(() => this.send(), this.#options.lingerMs);
    } else if (!this.#tickQueued) {
      this.#tickQueued = true;
      queueMicrotask(() => {
        this.#tickQueued = false;
        this.send();
      });
    }
  }

  /** Sends everything queued now (held items stay), without waiting for the linger. */
  send(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#unsent = 0;
    const { status } = this.#options;
    const sendable: Queued<T>[] = [];
    const held: Queued<T>[] = [];
    for (const q of this.#queue) {
      const s = status ? status(q.item) : "send";
      if (s === "send") sendable.push(q);
      else if (s === "hold") held.push(q);
    }
    this.#queue = held;
    for (let i = 0; i < sendable.length; i += SQS_MAX_BATCH_ENTRIES) {
      this.#calls++;
      void this.#send(sendable.slice(i, i + SQS_MAX_BATCH_ENTRIES)).finally(() => this.#callDone());
    }
    this.#checkIdle();
  }

  /** Resolves once nothing is queued and no call is in flight or waiting to retry. */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async #send(batch: Queued<T>[]): Promise<void> {
    const { operation, queueUrl } = this.#options;
    const sent = batch.map((q, i) => ({
      ...q,
      id: String(i),
      entry: this.#options.entry(q.item, String(i)),
    }));
    const failures = new Map<string, EntryFailure>();
    try {
      const out = await this.#call(
        this.#sqs,
        queueUrl,
        sent.map((s) => s.entry),
      );
      this.#events.emit("sqs-call", SQS_CALL[operation].ok);
      for (const f of out.Failed ?? []) {
        failures.set(f.Id ?? "", {
          code: codeOf(f.Code ?? "Unknown"),
          message: f.Message ?? "",
          senderFault: f.SenderFault ?? false,
        });
      }
    } catch (err) {
      this.#events.emit("sqs-call", SQS_CALL[operation].error);
      const { name, message } = err instanceof Error ? err : new Error(String(err));
      for (const s of sent) failures.set(s.id, { code: codeOf(name), message, senderFault: false });
    }
    const retry: Queued<T>[] = [];
    const failed: BatchEntryError["failures"][number][] = [];
    for (const s of sent) {
      const failure = failures.get(s.id);
      if (!failure) {
        this.#options.onDone(s.item, { ok: true, sent: s.entry });
        continue;
      }
      failed.push({ id: this.#options.messageId(s.item), ...failure });
      const final =
        FINAL_ENTRY_CODES.has(failure.code) || s.attempts + 1 >= MAX_ENTRY_ATTEMPTS || this.#signal.aborted;
      if (final) this.#options.onDone(s.item, { ok: false, failure });
      else retry.push({ item: s.item, attempts: s.attempts + 1 });
    }
    if (failed.length === 0) return;
    this.#log.warn(
      { err: new BatchEntryError(operation, failed), retrying: retry.length },
      `${operation}: entries failed`,
    );
    if (retry.length === 0) return;
    await sleep(backoffMs(retry[0]?.attempts ?? 1, RETRY_BASE_MS, RETRY_MAX_MS), this.#signal);
    if (this.#signal.aborted) {
      const failure = {
        code: "Aborted",
        message: `${operation} retry cancelled: stopping`,
        senderFault: false,
      };
      for (const q of retry) this.#options.onDone(q.item, { ok: false, failure });
      return;
    }
    this.#queue.push(...retry);
    this.send();
  }

  #callDone(): void {
    this.#calls--;
    this.#checkIdle();
  }

  #checkIdle(): void {
    if (this.pending === 0) for (const resolve of this.#idle.splice(0)) resolve();
  }
}

/** Query-protocol codes carry a prefix ("AWS.SimpleQueueService.MessageNotInflight"); JSON ones do not. */
function codeOf(code: string): string {
  return code.replace(/^AWS\.SimpleQueueService\./, "");
}

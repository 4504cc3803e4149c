import { type Message, ReceiveMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import { backoffMs } from "../backoff.ts";
import { type RelayEventSink, SQS_CALL } from "./events.ts";

/** SQS's largest message (body plus attributes): the most one received body can weigh, bytes. */
export const SQS_MAX_MESSAGE_BYTES = 1_048_576;

/**
 * What the estimate of a message's size starts from: the largest there can be, so the first receives
 * cannot overshoot the byte budget; it falls to the real size within a few receives.
 */
const INITIAL_MESSAGE_BYTES = SQS_MAX_MESSAGE_BYTES;
/** The estimate follows a larger message fast and a smaller one slowly: it errs on the high side. */
const ESTIMATE_UP = 0.5;
const ESTIMATE_DOWN = 0.2;

/** What the poller asks of downstream: how many more messages it can take right now. */
export interface DemandSource {
  /** Messages downstream can accept now, not counting those already being received. */
  room(): number;
  /** The most room there can ever be; used to size receives so tiny ones do not waste requests. */
  readonly maxRoom: number;
  /** Bytes of bodies downstream can still take (the budget minus the bytes held); none = no budget. */
  bytesRoom?(): number;
  /** The byte budget itself (`maxUnackedBytes`); none = no budget. */
  readonly maxBytes?: number;
}

export interface PollerOptions {
  queue: string;
  queueUrl: string;
  receiveBatchSize: number;
  maxParallelReceives: number;
  waitTimeSec: number;
  visibilityTimeoutSec: number;
}

/** Everything the room rule looks at, at one moment. */
export interface DemandState {
  /** Messages downstream can accept (`DemandSource.room()`). */
  room: number;
  maxRoom: number;
  /** Messages asked for by receives in flight. */
  requested: number;
  /** Budget minus bytes held (`DemandSource.bytesRoom()`); Infinity without a byte budget. */
  bytesRoom: number;
  /** The byte budget; Infinity without one. */
  maxBytes: number;
  /** Estimated bytes of the receives in flight (messages asked for × the estimate when sent). */
  requestedBytes: number;
  /** The running estimate of one message's body, bytes. */
  messageBytes: number;
  receiveBatchSize: number;
}

/**
 * Receives in flight may ask for at most this many messages in all when there is a byte budget: each
 * could come back at SQS's 1 MiB, so this bounds the overshoot to max(receiveBatchSize MiB, budget).
 */
export function maxRequestedUnderBudget(maxBytes: number, receiveBatchSize: number): number {
  return Math.max(receiveBatchSize, Math.floor(maxBytes / SQS_MAX_MESSAGE_BYTES));
}

/**
 * The room rule: how many messages the next receive should ask for, or 0 for none. The same for the
 * message count and the byte budget: no receive while what is held plus what is being received is at
 * the limit, and none for less than `minBatch` (half the most room there can be, at most a full batch;
 * GenStage's min_demand), so a busy queue is read in full batches rather than one request per free slot.
 *
 * Bytes are unknown until a receive returns, so they are counted with the running estimate of a
 * message's size. Worst case (every receive in flight comes back full of 1 MiB bodies while the
 * estimate says they are small), the bytes held exceed the budget by at most the messages those
 * receives asked for × 1 MiB, which `maxRequestedUnderBudget` caps at max(receiveBatchSize MiB,
 * maxUnackedBytes): held bytes ≤ maxUnackedBytes + max(receiveBatchSize × 1 MiB, maxUnackedBytes).
 * With an estimate that matches the traffic the overshoot is a fraction of one message.
 */
export function nextReceiveSize(s: DemandState): number {
  let room = s.room - s.requested;
  let maxRoom = s.maxRoom;
  if (Number.isFinite(s.maxBytes)) {
    const bytesLeft = s.bytesRoom - s.requestedBytes;
    if (bytesLeft <= 0) return 0;
    const idle = s.requested === 0 && s.bytesRoom >= s.maxBytes;
    // Nothing held and nothing coming: one message may always be taken, or a message estimated
    // larger than the whole budget would stop the queue for good.
    const byBytes = Math.max(idle ? 1 : 0, Math.floor(bytesLeft / s.messageBytes));
    const cap = maxRequestedUnderBudget(s.maxBytes, s.receiveBatchSize);
    room = Math.min(room, byBytes, cap - s.requested);
    maxRoom = Math.min(maxRoom, Math.max(1, Math.floor(s.maxBytes / s.messageBytes)), cap);
  }
  const fullBatch = s.receiveBatchSize;
  const minBatch = Math.max(1, Math.min(fullBatch, Math.floor(maxRoom / 2)));
  return room < minBatch ? 0 : Math.min(fullBatch, room);
}

/**
 * Demand-driven ReceiveMessage loop for one queue (GenStage-style): it asks SQS only for as many
 * messages as downstream has room for, runs several long polls at once when room is large, and
 * makes no call at all while there is no room. `wake()` is called whenever room may have opened.
 */
export class Poller {
  readonly #sqs: SQSClient;
  readonly #log: Logger;
  readonly #events: RelayEventSink;
  readonly #demand: DemandSource;
  readonly #onMessages: (messages: Message[]) => void;
  readonly #onLate: (messages: Message[]) => void;
  readonly #options: PollerOptions;
  readonly #abort = new AbortController();
  #requested = 0;
  #requestedBytes = 0;
  #messageBytes = INITIAL_MESSAGE_BYTES;
  #receives = 0;
  #running = false;
  #wakeQueued = false;
  #errors = 0;
  #backoffUntilMs = 0;
  #backoffTimer: NodeJS.Timeout | undefined;
  #idle: (() => void)[] = [];

  constructor(
    deps: {
      sqs: SQSClient;
      log: Logger;
      events: RelayEventSink;
      demand: DemandSource;
      onMessages: (messages: Message[]) => void;
      /**
       * Messages a receive returned after finish() or stop(): SQS made them invisible for this
       * process, which will not handle them, so they should be released at once.
       */
      onLate: (messages: Message[]) => void;
    },
    options: PollerOptions,
  ) {
    this.#sqs = deps.sqs;
    this.#log = deps.log.child({ component: "poller" });
    this.#events = deps.events;
    this.#demand = deps.demand;
    this.#onMessages = deps.onMessages;
    this.#onLate = deps.onLate;
    this.#options = options;
  }

  /** ReceiveMessage failures since the last success. */
  get consecutiveErrors(): number {
    return this.#errors;
  }

  /** Receives in flight right now. */
  get receivesInFlight(): number {
    return this.#receives;
  }

  /** The running estimate of one message's body, bytes (what receives are sized with). */
  get messageBytesEstimate(): number {
    return this.#messageBytes;
  }

  start(): void {
    this.#running = true;
    this.#pump();
  }

  /**
   * Starts no new receive and lets the long polls in flight return (within waitTimeSec); resolves
   * when they have. They are not aborted: SQS may still answer an abandoned long poll, handing its
   * messages to a connection nobody reads, and those stay invisible for the whole visibility timeout.
   * What they return from now on goes to `onLate`.
   */
  finish(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#backoffTimer);
    if (this.#receives === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /**
   * Stops receiving and aborts the long polls in flight; resolves when they have returned. Only for
   * when waiting is no longer possible (the shutdown deadline): see finish().
   */
  stop(): Promise<void> {
    const finished = this.finish();
    this.#abort.abort();
    return finished;
  }

  /** Room may have opened downstream; coalesced so a burst of frees costs one pass. */
  wake(): void {
    if (this.#wakeQueued || !this.#running) return;
    this.#wakeQueued = true;
    queueMicrotask(() => {
      this.#wakeQueued = false;
      this.#pump();
    });
  }

  /** Starts receives while the room rule allows one. */
  #pump(): void {
    if (!this.#running || Date.now() < this.#backoffUntilMs) return;
    const bytesRoom = this.#demand.bytesRoom;
    while (this.#receives < this.#options.maxParallelReceives) {
      const count = nextReceiveSize({
        room: this.#demand.room(),
        maxRoom: this.#demand.maxRoom,
        requested: this.#requested,
        bytesRoom: bytesRoom ? bytesRoom.call(this.#demand) : Number.POSITIVE_INFINITY,
        maxBytes: this.#demand.maxBytes ?? Number.POSITIVE_INFINITY,
        requestedBytes: this.#requestedBytes,
        messageBytes: this.#messageBytes,
        receiveBatchSize: this.#options.receiveBatchSize,
      });
      if (count === 0) return;
      this.#receive(count);
    }
  }

  /** Updates the size estimate; returns the messages' body bytes. */
  #learnSizes(messages: Message[]): number {
    let total = 0;
    for (const m of messages) {
      const bytes = Buffer.byteLength(m.Body ?? "", "utf8");
      total += bytes;
      const rate = bytes > this.#messageBytes ? ESTIMATE_UP : ESTIMATE_DOWN;
      // At least 1 byte: the estimate divides the byte room.
      this.#messageBytes = Math.max(1, this.#messageBytes + (bytes - this.#messageBytes) * rate);
    }
    return total;
  }

  #receive(count: number): void {
    const bytes = count * this.#messageBytes;
    this.#requested += count;
    this.#requestedBytes += bytes;
    this.#receives++;
    void this.#sqs
      .send(
        new ReceiveMessageCommand({
          QueueUrl: this.#options.queueUrl,
          MaxNumberOfMessages: count,
          WaitTimeSeconds: this.#options.waitTimeSec,
          VisibilityTimeout: this.#options.visibilityTimeoutSec,
          MessageSystemAttributeNames: ["All"],
          MessageAttributeNames: ["All"],
        }),
        { abortSignal: this.#abort.signal },
      )
      .then(
        (out) => {
          this.#events.emit("sqs-call", SQS_CALL.ReceiveMessage.ok);
          this.#errors = 0;
          this.#requested -= count;
          this.#requestedBytes -= bytes;
          const messages = out.Messages ?? [];
          if (messages.length === 0) return;
          this.#events.emit("received", { count: messages.length, bytes: this.#learnSizes(messages) });
          if (this.#running) this.#onMessages(messages);
          else this.#onLate(messages);
        },
        (err: unknown) => {
          this.#requested -= count;
          this.#requestedBytes -= bytes;
          if (this.#abort.signal.aborted) return;
          this.#events.emit("sqs-call", SQS_CALL.ReceiveMessage.error);
          this.#errors++;
          const delayMs = backoffMs(this.#errors, 200, 20_000);
          this.#backoffUntilMs = Date.now() + delayMs;
          this.#log[this.#errors >= 5 ? "error" : "warn"](
            { err, consecutiveErrors: this.#errors, retryInMs: delayMs },
            "ReceiveMessage failed; backing off",
          );
          if (!this.#running) return;
          clearTimeout(this.#backoffTimer);
          this.#backoffTimer = setTimeout(() => {
            // Timers may fire a little before Date.now() reaches the deadline: clear it, or #pump
            // would bail out and, with no receive in flight, nothing would ever wake the poller.
            this.#backoffUntilMs = 0;
            this.#pump();
          }, delayMs);
        },
      )
      .finally(() => {
        this.#receives--;
        if (!this.#running && this.#receives === 0) for (const resolve of this.#idle.splice(0)) resolve();
        this.#pump();
      });
  }
}

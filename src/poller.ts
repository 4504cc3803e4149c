import { type Message, ReceiveMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import { backoffMs } from "./backoff.ts";
import type { RelayStats } from "./stats.ts";

/** What the poller asks of downstream: how many more messages it can take right now. */
export interface DemandSource {
  /** Messages downstream can accept now, not counting those already being received. */
  room(): number;
  /** The most room there can ever be; used to size receives so tiny ones do not waste requests. */
  readonly maxRoom: number;
}

export interface PollerOptions {
  queue: string;
  queueUrl: string;
  receiveBatchSize: number;
  maxParallelReceives: number;
  waitTimeSec: number;
  visibilityTimeoutSec: number;
}

/**
 * Demand-driven ReceiveMessage loop for one queue (GenStage-style): it asks SQS only for as many
 * messages as downstream has room for, runs several long polls at once when room is large, and
 * makes no call at all while there is no room. `wake()` is called whenever room may have opened.
 */
export class Poller {
  readonly #sqs: SQSClient;
  readonly #log: Logger;
  readonly #stats: RelayStats;
  readonly #demand: DemandSource;
  readonly #onMessages: (messages: Message[]) => void;
  readonly #options: PollerOptions;
  readonly #abort = new AbortController();
  #requested = 0;
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
      stats: RelayStats;
      demand: DemandSource;
      onMessages: (messages: Message[]) => void;
    },
    options: PollerOptions,
  ) {
    this.#sqs = deps.sqs;
    this.#log = deps.log.child({ component: "poller" });
    this.#stats = deps.stats;
    this.#demand = deps.demand;
    this.#onMessages = deps.onMessages;
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

  start(): void {
    this.#running = true;
    this.#pump();
  }

  /** Stops receiving and aborts the long polls in flight; resolves when they have returned. */
  stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#backoffTimer);
    this.#abort.abort();
    if (this.#receives === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
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

  /**
   * Starts receives while there is room. A receive is only started for at least `minBatch`
   * messages (half of the most room there can be, at most a full batch), like GenStage's
   * min_demand, so a busy queue is read in full batches rather than one request per freed slot.
   */
  #pump(): void {
    if (!this.#running || Date.now() < this.#backoffUntilMs) return;
    const fullBatch = this.#options.receiveBatchSize;
    const minBatch = Math.max(1, Math.min(fullBatch, Math.floor(this.#demand.maxRoom / 2)));
    while (this.#receives < this.#options.maxParallelReceives) {
      const room = this.#demand.room() - this.#requested;
      if (room < minBatch) return;
      this.#receive(Math.min(fullBatch, room));
    }
  }

  #receive(count: number): void {
    this.#requested += count;
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
          this.#stats.sqsCalls.receiveMessage++;
          this.#errors = 0;
          this.#requested -= count;
          const messages = out.Messages ?? [];
          if (messages.length > 0) {
            this.#stats.received += messages.length;
            this.#onMessages(messages);
          }
        },
        (err: unknown) => {
          this.#requested -= count;
          if (this.#abort.signal.aborted) return;
          this.#stats.sqsCalls.errors++;
          this.#errors++;
          const delayMs = backoffMs(this.#errors, 200, 20_000);
          this.#backoffUntilMs = Date.now() + delayMs;
          this.#log[this.#errors >= 5 ? "error" : "warn"](
            { err, consecutiveErrors: this.#errors, retryInMs: delayMs },
            "ReceiveMessage failed; backing off",
          );
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

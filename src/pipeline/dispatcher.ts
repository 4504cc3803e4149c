import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { DispatchConfig } from "../config.ts";
import { type DeliveryEvents, DeliveryStack } from "../delivery/stack.ts";
import type { Batch, Destination } from "../destinations/destination.ts";
import type { DeliveryError } from "../errors.ts";
import type { Partner } from "../partners/partner.ts";
import type { RelayEventSink } from "./events.ts";
import type { TickWheel } from "./tick-wheel.ts";

/** Batch ids: time, then a random id per process and a counter, unique without a random draw per batch. */
const PROCESS_ID = randomBytes(4).toString("hex");
let batchCounter = 0;

/** One output waiting for delivery, with whatever the caller needs to acknowledge it afterwards. */
export interface DispatchRecord<T> {
  line: string;
  ticket: T;
}

/** Shared by all dispatchers of a queue: per-account parts are in DispatcherOptions. */
export interface DispatcherDeps<T> {
  /** Where batches go when given up on and the profile says "park"; durable, so they count as delivered. */
  park: Destination;
  /** The queue's logger; the dispatcher binds its account to it when it first logs. */
  log: Logger;
  /** Shared timer for the flush ticks; without one, each dispatcher keeps its own. */
  ticker?: TickWheel;
  events: RelayEventSink;
  /** Where the owner of the tickets hears what became of them. */
  outcomes: DeliveryOutcomes<T>;
  /** The dispatcher stopped itself; the router forgets it in the same tick. */
  onStopped(dispatcher: Dispatcher<T>): void;
  /** Records buffered or in flight across the queue's dispatchers; each keeps its part of it current. */
  held: { records: number };
}

/** What becomes of the outputs a dispatcher was given: the owner of the tickets acts on it. */
export interface DeliveryOutcomes<T> {
  /** The records of a batch are durably delivered. */
  delivered(tickets: T[]): void;
  /** The destination refused a batch for good (a permanent error): the owner dead-letters it. */
  rejected(tickets: T[], error: DeliveryError): void;
  /**
   * Delivery was abandoned: at the stop deadline ("stopping"), or after the destination kept failing
   * for `giveUpAfterMs` ("giving-up"). The owner releases the messages to SQS.
   */
  abandoned(tickets: T[], cause: "stopping" | "giving-up"): void;
  /** A batch was parked (for the partner's state); parked counts as delivered too. */
  parked?(batch: Batch): void;
}

export interface DispatcherOptions {
  queue: string;
  account: string;
  /** Shared by every dispatcher with the same profile; never copied per dispatcher. */
  dispatch: DispatchConfig;
  destination: Destination;
  /** The account's shared limits and breaker; every delivery goes through it. */
  partner: Pick<Partner, "deliver">;
}

/**
 * The per-account actor: buffers outputs, cuts a batch when it is full or when its timer fires and
 * hands it to its delivery stack (delivery/stack.ts: retry, limits, destination, park), and stops
 * itself after `emptyFlushLimit` empty ticks in a row.
 * It stops only with an empty buffer and nothing in flight, and it is forgotten synchronously, so an
 * output that arrives later spawns a successor and nothing falls between the two.
 */
export class Dispatcher<T> {
  readonly account: string;
  readonly #deps: DispatcherDeps<T>;
  readonly #queue: string;
  readonly #options: DispatchConfig;
  /** retry → limits → destination (and the park path): every batch of this dispatcher goes through it. */
  readonly #stack: DeliveryStack;
  readonly #events: DeliveryEvents;
  #log: Logger | undefined;
  /** Aborts the flights in progress at shutdown; exists only while something is in flight. */
  #abort: AbortController | undefined;
  #buffer: DispatchRecord<T>[] = [];
  #bufferedBytes = 0;
  #inFlightRecords = 0;
  #emptyTicks = 0;
  /** Own timer, or the slot on the shared ticker. */
  #timer: NodeJS.Timeout | undefined;
  #slot = -1;
  #stopped = false;
  #oldestBufferedAtMs: number | undefined;
  #lastError: string | undefined;
  /** A batch was delivered since this dispatcher started. */
  #deliveredOnce = false;
  /** Batches whose last try failed (or was refused) and that are not done yet. */
  readonly #failing = new Set<Batch>();
  /** Batches in flight (at most maxConcurrentFlushes), with when each was cut. */
  readonly #flights = new Map<Batch, number>();
  #drained: (() => void)[] | undefined;

  constructor(deps: DispatcherDeps<T>, options: DispatcherOptions) {
    const { destination, partner: limits, dispatch } = options;
    this.#deps = deps;
    this.#queue = options.queue;
    this.#options = dispatch;
    this.account = options.account;
    const park = dispatch.onOutage === "park" ? { park: deps.park } : {};
    this.#stack = new DeliveryStack({ limits, destination, ...park }, dispatch);
    this.#events = this.#observe();
    if (deps.ticker) this.#slot = deps.ticker.add(this, this.#options.flushIntervalMs);
    else this.#arm();
  }

  get buffered(): number {
    return this.#buffer.length;
  }

  get inFlight(): number {
    return this.#flights.size;
  }

  /** Records in batches being delivered (or retried) now. */
  get inFlightRecords(): number {
    return this.#inFlightRecords;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  get oldestBufferedAtMs(): number | undefined {
    return this.#oldestBufferedAtMs;
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  /**
   * The partner takes what it is sent, promptly: it delivered since this dispatcher started (or its
   * first batch is on its way), no batch is failing, and none has been in flight for longer than a
   * flush interval (a partner that hangs, or one behind its rate limit, is not keeping up).
   */
  get delivering(): boolean {
    if (this.#failing.size > 0 || (!this.#deliveredOnce && this.#flights.size === 0)) return false;
    const promptSince = Date.now() - this.#options.flushIntervalMs;
    for (const cutAtMs of this.#flights.values()) if (cutAtMs < promptSince) return false;
    return true;
  }

  add(record: DispatchRecord<T>): void {
    if (this.#stopped)
      throw new Error(`dispatcher for ${this.account} is stopped; the router must spawn a new one`);
    if (this.#buffer.length === 0) this.#oldestBufferedAtMs = Date.now();
    this.#buffer.push(record);
    this.#deps.held.records++;
    this.#bufferedBytes += Buffer.byteLength(record.line);
    this.#emptyTicks = 0;
    if (this.#full()) this.#cut();
  }

  /** Created on first use: most dispatchers never log, and there may be tens of thousands of them. */
  #logger(): Logger {
    this.#log ??= this.#deps.log.child({ component: "dispatcher", account: this.account });
    return this.#log;
  }

  /** Sends everything buffered now and resolves when nothing is buffered or in flight (shutdown). */
  drain(): Promise<void> {
    while (this.#buffer.length > 0 && this.#flights.size < this.#options.maxConcurrentFlushes) this.#cut();
    if (this.#buffer.length === 0 && this.#flights.size === 0) return Promise.resolve();
    this.#drained ??= [];
    const drained = this.#drained;
    return new Promise((resolve) => drained.push(resolve));
  }

  /** Gives up on everything buffered or being retried (shutdown deadline) and stops. */
  abandon(): void {
    this.#abort?.abort();
    const tickets = this.#buffer.map((r) => r.ticket);
    this.#buffer = [];
    this.#bufferedBytes = 0;
    this.#deps.held.records -= tickets.length;
    if (tickets.length > 0) this.#deps.outcomes.abandoned(tickets, "stopping");
    this.#stop();
  }

  #full(): boolean {
    return this.#buffer.length >= this.#options.maxRecords || this.#bufferedBytes >= this.#options.maxBytes;
  }

  #arm(): void {
    this.#timer = setTimeout(() => this.tick(), this.#options.flushIntervalMs);
  }

  /** A flush tick: every flushIntervalMs, from the shared ticker or the dispatcher's own timer. */
  tick(): void {
    if (this.#stopped) return;
    if (this.#buffer.length === 0 && this.#flights.size === 0) {
      this.#emptyTicks++;
      if (this.#emptyTicks >= this.#options.emptyFlushLimit) {
        this.#stop();
        return;
      }
    } else {
      this.#emptyTicks = 0;
      while (this.#buffer.length > 0 && this.#flights.size < this.#options.maxConcurrentFlushes) this.#cut();
    }
    if (!this.#deps.ticker) this.#arm();
  }

  #stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#deps.ticker) this.#deps.ticker.remove(this, this.#options.flushIntervalMs, this.#slot);
    else clearTimeout(this.#timer);
    this.#deps.onStopped(this);
  }

  /** Takes the head of the buffer, up to the record and byte limits, and flushes it. */
  #cut(): void {
    if (this.#flights.size >= this.#options.maxConcurrentFlushes || this.#buffer.length === 0) return;
    let count = 0;
    let bytes = 0;
    if (this.#buffer.length <= this.#options.maxRecords && this.#bufferedBytes <= this.#options.maxBytes) {
      // All of it fits (the usual case): its size is known already.
      count = this.#buffer.length;
      bytes = this.#bufferedBytes;
    } else {
      while (count < this.#buffer.length && count < this.#options.maxRecords) {
        const size = Buffer.byteLength((this.#buffer[count] as DispatchRecord<T>).line);
        if (count > 0 && bytes + size > this.#options.maxBytes) break;
        bytes += size;
        count++;
      }
    }
    // Taking the whole buffer (the usual case) swaps in a fresh array: no copy, and an idle
    // dispatcher does not keep a grown backing store.
    const records = count === this.#buffer.length ? this.#buffer : this.#buffer.splice(0, count);
    if (records === this.#buffer) this.#buffer = [];
    this.#bufferedBytes -= bytes;
    // What stays was buffered no later than the oldest record cut: keeping that time overstates its
    // age a little, which is the safe side for "how long has this partner been waiting".
    if (this.#buffer.length === 0) this.#oldestBufferedAtMs = undefined;
    const createdAt = new Date();
    const batch: Batch = {
      queue: this.#queue,
      account: this.account,
      batchId: `${createdAt.toISOString().replace(/[-:.TZ]/g, "")}-${PROCESS_ID}-${(++batchCounter).toString(36)}`,
      createdAt,
      lines: records.map((r) => r.line),
      bytes,
    };
    this.#abort ??= new AbortController();
    const signal = this.#abort.signal;
    this.#flights.set(batch, createdAt.getTime());
    // What the partner holds of the queue's budget (Router.held) includes batches being retried.
    this.#inFlightRecords += records.length;
    void this.#deliver(
      batch,
      records.map((r) => r.ticket),
      signal,
    ).finally(() => {
      this.#inFlightRecords -= records.length;
      this.#deps.held.records -= records.length;
      this.#failing.delete(batch);
      this.#flights.delete(batch);
      if (this.#flights.size === 0 && !signal.aborted) this.#abort = undefined;
      if (this.#full() || (this.#drained && this.#buffer.length > 0)) this.#cut();
      if (this.#buffer.length === 0 && this.#flights.size === 0 && this.#drained) {
        for (const resolve of this.#drained) resolve();
        this.#drained = undefined;
      }
    });
  }

  /**
   * Delivers one batch through the stack (retry → limits → destination, and the park path) and hands
   * its tickets on by outcome; the same batch id (so the same key) on every try.
   */
  async #deliver(batch: Batch, tickets: T[], signal: AbortSignal): Promise<void> {
    const result = await this.#stack.deliver(batch, signal, this.#events);
    if (result.outcome === "delivered") {
      this.#deps.outcomes.delivered(tickets);
      return;
    }
    const log = this.#logger();
    switch (result.outcome) {
      case "rejected":
        log.error(
          { err: result.error, batchId: batch.batchId, records: tickets.length },
          "destination refused the batch for good",
        );
        this.#deps.outcomes.rejected(tickets, result.error);
        return;
      case "parked":
        this.#deps.events.emit("flushed", {
          destination: "park",
          outcome: "parked",
          seconds: 0,
          records: result.batch.lines.length,
          bytes: result.batch.bytes,
        });
        this.#deps.events.emit("parked", { records: tickets.length });
        this.#deps.outcomes.parked?.(result.batch);
        log.warn(
          { err: result.error, batchId: batch.batchId, records: tickets.length },
          "partner down past giveUpAfterMs; batch parked in S3",
        );
        this.#deps.outcomes.delivered(tickets);
        return;
      case "released":
        if (result.error) {
          log.error(
            { err: result.error, batchId: batch.batchId, records: tickets.length },
            "partner still failing after giveUpAfterMs; releasing the batch's messages to SQS",
          );
        }
        this.#deps.outcomes.abandoned(tickets, result.cause);
    }
  }

  /** Metrics and logs at each try, for every batch of this dispatcher; built with its stack. */
  #observe(): DeliveryEvents {
    const events = this.#deps.events;
    const destination = this.#stack.kind;
    return {
      tried: (batch, outcome, seconds) => {
        events.emit("flushed", {
          destination,
          outcome,
          seconds,
          records: batch.lines.length,
          bytes: batch.bytes,
        });
        if (outcome === "delivered") {
          this.#lastError = undefined;
          this.#deliveredOnce = true;
          this.#failing.delete(batch);
        }
      },
      failed: (batch, error, { attempt, retryInMs, quiet }) => {
        this.#lastError = error.message;
        this.#failing.add(batch);
        if (retryInMs === undefined || quiet) return;
        this.#logger()[attempt === 1 ? "warn" : "error"](
          { err: error, batchId: batch.batchId, attempt, retryInMs },
          "flush failed; retrying",
        );
      },
      parkFailed: (batch, error, attempt) => {
        this.#logger().error({ err: error, batchId: batch.batchId, attempt }, "could not park the batch");
      },
    };
  }
}

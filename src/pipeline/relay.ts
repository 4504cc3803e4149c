import type { Message, SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import type { QueueConfig } from "../config.ts";
import type { PartnerDirectory } from "../partners/directory.ts";
import { Acker, type Ticket } from "./acker.ts";
import { countEvents, type RelayCounters } from "./counters.ts";
import { DeadLetter } from "./dead-letter.ts";
import { RelayEventEmitter } from "./events.ts";
import type { HandlerTask } from "./handler-hop.ts";
import { HandlerPool } from "./handler-pool.ts";
import { type Decision, decide, type MessageOutcome, type QueuePolicy } from "./message-policy.ts";
import { Poller } from "./poller.ts";
import { type ResolvedQueue, resolveQueue } from "./queue-resolution.ts";
import { type DeliveryOutcomes, Router } from "./router.ts";

/** `maxUnackedBytes` when the config does not give one: 64 MiB of bodies held per queue. */
export const DEFAULT_MAX_UNACKED_BYTES = 64 * 1024 * 1024;

export interface RelayDeps {
  sqs: SQSClient;
  /** The long polls' client (AwsClients.sqsPolls); `sqs` when not given. */
  sqsPolls?: SQSClient;
  log: Logger;
  /** Profiles and shared per-partner limits, one directory for all queues of the process. */
  partners: PartnerDirectory;
}

/** What start() builds: the relay runs with these from then on. */
interface Running {
  acker: Acker;
  poller: Poller;
  router: Router<Ticket>;
  deadLetter: DeadLetter;
  /** The queue's fixed inputs to `decide`. */
  policy: QueuePolicy;
  /** What start() resolved from SQS: the URLs the relay receives from and dead-letters to. */
  queue: ResolvedQueue;
}

/**
 * One queue, wired end to end: poller → handler pool → router → dispatchers → destinations, with the acker
 * deleting each message once everything it produced is delivered. What becomes of a message is decided
 * by `decide` (message-policy.ts); the relay carries the decisions out.
 */
export class Relay {
  /** What the stages report as they work; telemetry subscribes here (src/ops/metrics.ts). */
  readonly events: RelayEventEmitter;
  /** Totals since the relay was built, kept by a subscriber to `events` (counters.ts). */
  readonly stats: Readonly<RelayCounters>;
  readonly options: QueueConfig;
  readonly #deps: RelayDeps;
  readonly #log: Logger;
  readonly #pool: HandlerPool;
  #running: Running | undefined;
  /** Messages between receive and the end of their handler's outcome handling. */
  #handling = 0;
  readonly #handledWaiters: (() => void)[] = [];
  /** Body bytes received and not yet deleted or released, at most (beside `maxUnacked` messages). */
  readonly maxUnackedBytes: number;

  constructor(deps: RelayDeps, options: QueueConfig) {
    this.#deps = deps;
    this.options = options;
    this.#log = deps.log.child({ queue: options.name });
    this.events = new RelayEventEmitter({
      onListenerError: (err, event) => this.#log.error({ err, event }, "a telemetry listener threw"),
    });
    this.stats = countEvents(this.events);
    // Queue objects built by hand (tests, the demo) may leave it out.
    this.maxUnackedBytes = options.maxUnackedBytes ?? DEFAULT_MAX_UNACKED_BYTES;
    this.#pool = new HandlerPool(
      { log: this.#log, events: this.events },
      {
        queue: options.name,
        handlerPath: options.handlerPath,
        concurrency: options.concurrency,
        threads: options.threads,
        prefetch: options.prefetch,
        handlerTimeoutMs: options.handlerTimeoutMs,
      },
    );
  }

  /** The queue's URL as start() resolved it; undefined before start(). */
  get queueUrl(): string | undefined {
    return this.#running?.queue.queueUrl;
  }

  /**
   * Its dead-letter queue's URL as start() resolved it (`deadLetterQueue`, else the redrive policy's
   * target; "" when there is neither); undefined before start().
   */
  get deadLetterQueueUrl(): string | undefined {
    return this.#running?.queue.deadLetterQueueUrl;
  }

  get unacked(): number {
    return this.#running?.acker.unacked ?? 0;
  }

  /** Body bytes of the un-acknowledged messages. */
  get unackedBytes(): number {
    return this.#running?.acker.unackedBytes ?? 0;
  }

  get activeDispatchers(): number {
    return this.#running?.router.active ?? 0;
  }

  /** This queue's dispatcher for an account, if one is alive. */
  dispatcherOf(account: string) {
    return this.#running?.router.get(account);
  }

  get handlersRunning(): number {
    return this.#pool.running;
  }

  oldestUnackedAtMs(): number | undefined {
    return this.#running?.acker.oldestReceivedAtMs();
  }

  /** Why this queue is not serving, or undefined when it is (started, receives succeeding). */
  notReadyReason(): string | undefined {
    if (!this.#running) return "not started";
    const errors = this.#running.poller.consecutiveErrors;
    return errors >= 3 ? `${errors} ReceiveMessage failures in a row` : undefined;
  }

  /** Resolves the queue URLs, loads the handler, and starts receiving. */
  async start(): Promise<void> {
    const { sqs, partners } = this.#deps;
    const o = this.options;
    const log = this.#log;
    const queue = await resolveQueue({ sqs, log }, { queue: o.queue, deadLetterQueue: o.deadLetterQueue });
    if (queue.maxReceiveCount === undefined) {
      log.warn(
        "queue has no redrive policy: a message whose handler always fails is retried until its retention ends; give the queue a dead-letter queue",
      );
    }
    await this.#pool.start();
    const acker = new Acker(
      { sqs, log, events: this.events },
      { queue: o.name, queueUrl: queue.queueUrl, visibilityTimeoutSec: o.visibilityTimeoutSec },
    );
    const deadLetter = new DeadLetter(
      { sqs, log, events: this.events },
      {
        queue: o.name,
        deadLetterQueueUrl: queue.deadLetterQueueUrl,
        maxMessageBytes: queue.deadLetterMaxBytes,
      },
    );
    const policy: QueuePolicy = {
      maxReceiveCount: queue.maxReceiveCount,
      deadLetterConfigured: deadLetter.configured,
      maxUnacked: o.maxUnacked,
      partnerShare: o.partnerShare,
      retryBaseMs: o.retryBaseMs,
      retryMaxMs: o.retryMaxMs,
      flushIntervalMs: o.dispatch.flushIntervalMs,
    };
    // These callbacks and the poller's run only after start() has set `running` below.
    const outcomes: DeliveryOutcomes<Ticket> = {
      delivered: (tickets) => {
        for (const t of tickets) acker.delivered(t);
      },
      rejected: (tickets, error) => {
        for (const t of new Set(tickets))
          void this.#act(running, t, { kind: "rejected", reason: error.message });
      },
      abandoned: (tickets, cause) => {
        for (const t of tickets) void this.#act(running, t, { kind: "abandoned", cause });
      },
      parked: (batch) => {
        partners.partner(batch.account).parkedBatches++;
      },
    };
    const router = new Router<Ticket>(
      {
        resolve: (account) => ({ ...partners.profile(o, account), partner: partners.attach(account) }),
        park: partners.park,
        onForgotten: (account) => partners.detach(account),
        log,
        events: this.events,
        outcomes,
      },
      { queue: o.name },
    );
    const pool = this.#pool;
    const poller = new Poller(
      {
        sqs: this.#deps.sqsPolls ?? sqs,
        log,
        events: this.events,
        demand: {
          // A release counts until SQS has answered it: until then the message is still ours there.
          room: () =>
            Math.min(pool.capacity - pool.occupied, o.maxUnacked - acker.unacked - acker.releasesInFlight),
          maxRoom: Math.min(pool.capacity, o.maxUnacked),
          bytesRoom: () => this.maxUnackedBytes - acker.unackedBytes - acker.releasesInFlightBytes,
          maxBytes: this.maxUnackedBytes,
        },
        onMessages: (messages) => this.#accept(running, messages),
        onLate: (messages) => this.#releaseLate(acker, messages),
      },
      {
        queue: o.name,
        queueUrl: queue.queueUrl,
        receiveBatchSize: o.receiveBatchSize,
        maxParallelReceives: o.maxParallelReceives,
        waitTimeSec: o.waitTimeSec,
        visibilityTimeoutSec: o.visibilityTimeoutSec,
      },
    );
    const running: Running = { acker, poller, router, deadLetter, policy, queue };
    this.#running = running;
    pool.on("free", () => poller.wake());
    acker.on("free", () => poller.wake());
    acker.on("releaseAnswered", () => poller.wake());
    if (!deadLetter.configured) {
      log.warn("no deadLetterQueue configured: poison messages rely on the queue's redrive policy");
    }
    acker.start();
    poller.start();
    log.info(
      {
        queueUrl: queue.queueUrl,
        handler: o.handlerPath,
        concurrency: o.concurrency,
        threads: o.threads,
        maxUnacked: o.maxUnacked,
        maxUnackedBytes: this.maxUnackedBytes,
      },
      "queue ready",
    );
  }

  /**
   * Stops in order: no more receives, waiting tasks released, running handlers finish, every
   * dispatcher flushes, deletes are sent. Whatever is undelivered when `deadline` fires is released
   * with visibility 0 so another replica takes it at once. Resolves with the number released.
   *
   * The long polls in flight are not aborted but left to return (within waitTimeSec) while the drain
   * runs: SQS may answer an abandoned long poll, and what it hands to a connection nobody reads stays
   * invisible for its whole visibility timeout. Until they have returned, releases are held back, or
   * those polls would receive them again; whatever they return is released at once.
   */
  async stop(deadline: AbortSignal): Promise<number> {
    const log = this.#log;
    if (!this.#running) {
      await this.#pool.close();
      return 0;
    }
    const { acker, poller, router } = this.#running;
    const releasedBefore = this.stats.released;
    acker.holdReleases();
    const pollsOpen = poller.receivesInFlight;
    let pollsClosed = false;
    const pollsReturned = poller.finish().then(() => {
      pollsClosed = true;
      acker.resumeReleases();
      if (pollsOpen > 0) log.info({ releasedAfterStop: this.stats.releasedAfterStop }, "long polls returned");
    });
    const cancelled = this.#pool.cancelWaiting();
    log.info(
      { cancelled, running: this.#pool.running, longPollsOpen: pollsOpen },
      "stopped receiving; letting running handlers finish and open long polls return",
    );
    const finished =
      (await untilAborted(this.#pool.idle(), deadline)) && (await untilAborted(this.#handled(), deadline));
    if (finished) {
      log.info({ dispatchers: router.active }, "handlers done; flushing dispatchers");
      await untilAborted(router.drain(), deadline);
    }
    if (!pollsClosed && !(await untilAborted(pollsReturned, deadline))) {
      log.warn(
        { longPollsOpen: poller.receivesInFlight, waitTimeSec: this.options.waitTimeSec },
        "shutdown deadline reached with long polls still open: aborting them; messages SQS hands to them come back only after their visibility timeout (keep shutdown.deadlineMs above waitTimeSec)",
      );
      await poller.stop();
    }
    if (deadline.aborted) {
      log.warn("shutdown deadline reached; releasing what is undelivered");
      router.abandonAll();
      acker.releaseAll(0);
    }
    await acker.settle();
    acker.stop();
    await this.#pool.close();
    const released = this.stats.released - releasedBefore;
    log.info({ deleted: this.stats.deleted, released }, "queue stopped");
    return released;
  }

  /** Received after the stop began: this process will not handle them, so another may at once. */
  #releaseLate(acker: Acker, messages: Message[]): void {
    for (const message of messages) {
      const ticket = acker.track(message);
      // A copy of a message held already refreshed its receipt handle; the drain deals with it.
      if (!ticket) continue;
      acker.release(ticket, 0, "after-stop");
    }
  }

  #accept(running: Running, messages: Message[]): void {
    const receivedAtMs = Date.now();
    const receivedAt = new Date(receivedAtMs).toISOString();
    for (const message of messages) {
      const ticket = running.acker.track(message, receivedAtMs);
      if (!ticket) continue;
      this.#handling++;
      this.#pool.submit(toTask(message, ticket, receivedAt), (outcome) => {
        let acting: Promise<void> | undefined;
        try {
          acting = this.#act(running, ticket, outcome);
        } finally {
          // Counted down whatever happened: stop() waits for this count to reach 0.
          if (!acting) this.#handledOne();
        }
        void acting
          ?.catch((err: unknown) =>
            this.#log.error({ err, messageId: ticket.id }, "could not act on a handler's outcome"),
          )
          .finally(this.#handledOne);
      });
    }
  }

  /** A message's outcome has been acted on (routed, released or dead-lettered). */
  readonly #handledOne = (): void => {
    this.#handling--;
    if (this.#handling === 0) for (const resolve of this.#handledWaiters.splice(0)) resolve();
  };

  #handled(): Promise<void> {
    if (this.#handling === 0) return Promise.resolve();
    return new Promise((resolve) => this.#handledWaiters.push(resolve));
  }

  /**
   * Decides what becomes of the message and does it: at once, or, for a dead letter, by the promise
   * returned (it resolves once the message is dead-lettered or released).
   */
  #act(running: Running, ticket: Ticket, outcome: MessageOutcome): Promise<void> | undefined {
    const { acker, router, deadLetter, policy } = running;
    const decision = decide(outcome, { receiveCount: ticket.receiveCount, queue: policy, holding: router });
    switch (decision.action) {
      case "route":
        acker.expect(ticket, decision.outputs.length);
        for (const output of decision.outputs) router.route(output.account, output.line, ticket);
        return;
      case "shed":
        this.events.emit("shed", { account: decision.account });
        this.#log.debug(
          { messageId: ticket.id, account: decision.account, delaySec: decision.delaySec },
          "partner holds its share; message shed",
        );
        acker.release(ticket, decision.delaySec, "shed");
        return;
      case "release":
        this.#logRelease(ticket, decision);
        acker.release(ticket, decision.delaySec, decision.cause);
        return;
      case "dead-letter":
        // If it cannot be sent now, it comes back later and is tried again.
        return deadLetter.send(ticket.message, decision.reason).then((sent) => {
          if (sent) acker.done(ticket);
          else acker.release(ticket, decision.retryDelaySec, "dead-letter-failed");
        });
    }
  }

  #logRelease(ticket: Ticket, decision: Extract<Decision, { action: "release" }>): void {
    const messageId = ticket.id;
    const reason = decision.reason;
    if (decision.cause === "handler-failed") {
      this.#log.warn(
        { messageId, receiveCount: ticket.receiveCount, reason, retryInSec: Math.round(decision.delaySec) },
        "handler failed; message will be retried",
      );
    } else if (decision.cause === "no-dead-letter-queue") {
      this.#log.error(
        { messageId, reason },
        "poison message and no deadLetterQueue configured; returned to the queue for its redrive policy",
      );
    }
  }
}

function toTask(message: Message, ticket: Ticket, receivedAt: string): HandlerTask {
  const messageAttributes: Record<string, string> = {};
  const sent = message.MessageAttributes;
  for (const name in sent) {
    const value = sent[name] as NonNullable<typeof sent>[string];
    messageAttributes[name] =
      value.StringValue ?? (value.BinaryValue ? Buffer.from(value.BinaryValue).toString("base64") : "");
  }
  return {
    id: ticket.id,
    body: message.Body ?? "",
    attributes: (message.Attributes ?? {}) as Record<string, string>,
    messageAttributes,
    receiveCount: ticket.receiveCount,
    receivedAt,
  };
}

/** Resolves true when `work` settles first, false when `deadline` fires first. */
async function untilAborted(work: Promise<unknown>, deadline: AbortSignal): Promise<boolean> {
  if (deadline.aborted) return false;
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<false>((resolve) => {
    onAbort = () => resolve(false);
    deadline.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([work.then(() => true as const), aborted]);
  } finally {
    if (onAbort) deadline.removeEventListener("abort", onAbort);
  }
}

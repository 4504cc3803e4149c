import {
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  type Message,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import { Acker, type Ticket } from "./acker.ts";
import { backoffMs } from "./backoff.ts";
import type { QueueConfig } from "./config.ts";
import { DeadLetter } from "./dead-letter.ts";
import { HandlerPool, type PoolOutcome } from "./handler-pool.ts";
import type { HandlerTask } from "./handler-worker.ts";
import type { PartnerDirectory } from "./partners.ts";
import { Poller } from "./poller.ts";
import { Router } from "./router.ts";
import { newRelayStats, type RelayStats } from "./stats.ts";

/** `maxUnackedBytes` when the config does not give one: 64 MiB of bodies held per queue. */
export const DEFAULT_MAX_UNACKED_BYTES = 64 * 1024 * 1024;

export interface RelayDeps {
  sqs: SQSClient;
  log: Logger;
  /** Profiles and shared per-partner limits, one directory for all queues of the process. */
  partners: PartnerDirectory;
}

/**
 * One queue, wired end to end: poller → handler pool → router → dispatchers → destinations, with the acker
 * deleting each message once everything it produced is delivered.
 */
export class Relay {
  readonly stats: RelayStats = newRelayStats();
  readonly options: QueueConfig;
  readonly #deps: RelayDeps;
  readonly #log: Logger;
  readonly #pool: HandlerPool;
  #acker: Acker | undefined;
  #poller: Poller | undefined;
  #router: Router<Ticket> | undefined;
  #deadLetter: DeadLetter | undefined;
  /** Messages between receive and the end of their handler's outcome handling. */
  #handling = 0;
  /** From the queue's redrive policy: the receive at which SQS would dead-letter a message. */
  #maxReceiveCount: number | undefined;
  /** Body bytes received and not yet deleted or released, at most (beside `maxUnacked` messages). */
  readonly maxUnackedBytes: number;

  constructor(deps: RelayDeps, options: QueueConfig) {
    this.#deps = deps;
    this.options = options;
    this.#log = deps.log.child({ queue: options.name });
    this.maxUnackedBytes =
      (options as { maxUnackedBytes?: number }).maxUnackedBytes ?? DEFAULT_MAX_UNACKED_BYTES;
    this.#pool = new HandlerPool(
      { log: this.#log },
      {
        queue: options.name,
        handlerPath: options.handlerPath,
        concurrency: options.concurrency,
        threads: options.threads,
        prefetch: options.prefetch,
        handlerTimeoutMs: options.handlerTimeoutMs,
        onHandled: (seconds, outcome) => this.stats.observer.handlerDone(seconds, outcome),
      },
    );
  }

  get unacked(): number {
    return this.#acker?.unacked ?? 0;
  }

  /** Body bytes of the un-acknowledged messages. */
  get unackedBytes(): number {
    return this.#acker?.unackedBytes ?? 0;
  }

  get activeDispatchers(): number {
    return this.#router?.active ?? 0;
  }

  /** This queue's dispatcher for an account, if one is alive. */
  dispatcherOf(account: string) {
    return this.#router?.get(account);
  }

  get handlersRunning(): number {
    return this.#pool.running;
  }

  oldestUnackedAtMs(): number | undefined {
    return this.#acker?.oldestReceivedAtMs();
  }

  /** Why this queue is not serving, or undefined when it is (started, receives succeeding). */
  notReadyReason(): string | undefined {
    if (!this.#poller) return "not started";
    const errors = this.#poller.consecutiveErrors;
    return errors >= 3 ? `${errors} ReceiveMessage failures in a row` : undefined;
  }

  /** Resolves the queue URLs, loads the handler, and starts receiving. */
  async start(): Promise<void> {
    const { sqs, partners } = this.#deps;
    const o = this.options;
    const log = this.#log;
    const queueUrl = await this.#resolveUrl(o.queue);
    const redrive = await this.#redrivePolicy(queueUrl);
    this.#maxReceiveCount = redrive?.maxReceiveCount;
    if (!redrive) {
      log.warn(
        "queue has no redrive policy: a message whose handler always fails is retried until its retention ends; give the queue a dead-letter queue",
      );
    }
    const deadLetterQueueUrl = o.deadLetterQueue
      ? await this.#resolveUrl(o.deadLetterQueue)
      : redrive
        ? await this.#urlOfArn(redrive.deadLetterTargetArn)
        : "";
    await this.#pool.start();
    const acker = new Acker(
      { sqs, log, stats: this.stats },
      { queue: o.name, queueUrl, visibilityTimeoutSec: o.visibilityTimeoutSec },
    );
    const deadLetter = new DeadLetter(
      { sqs, log, stats: this.stats },
      {
        queue: o.name,
        deadLetterQueueUrl,
        maxMessageBytes: deadLetterQueueUrl ? await this.#maxMessageBytes(deadLetterQueueUrl) : undefined,
      },
    );
    const router = new Router<Ticket>(
      {
        resolve: (account) => ({ ...partners.profile(o, account), partner: partners.attach(account) }),
        park: partners.park,
        onParked: (batch) => {
          partners.partner(batch.account).parkedBatches++;
        },
        onForgotten: (account) => partners.detach(account),
        log,
        stats: this.stats,
        onDelivered: (tickets) => {
          for (const t of tickets) acker.delivered(t);
        },
        onRejected: (tickets, error) => {
          for (const t of new Set(tickets)) void this.#deadLetterOrRetry(t, error.message);
        },
        onAbandoned: (tickets, cause) => {
          // At shutdown another replica should take them at once; from a failing partner, later.
          for (const t of tickets) acker.release(t, cause === "stopping" ? 0 : this.#retryDelaySec(t));
        },
      },
      { queue: o.name },
    );
    const pool = this.#pool;
    const poller = new Poller(
      {
        sqs,
        log,
        stats: this.stats,
        demand: {
          // A release counts until SQS has answered it: until then the message is still ours there.
          room: () =>
            Math.min(pool.capacity - pool.occupied, o.maxUnacked - acker.unacked - acker.releasesInFlight),
          maxRoom: Math.min(pool.capacity, o.maxUnacked),
          bytesRoom: () => this.maxUnackedBytes - acker.unackedBytes - acker.releasesInFlightBytes,
          maxBytes: this.maxUnackedBytes,
        },
        onMessages: (messages) => this.#accept(messages),
        onLate: (messages) => this.#releaseLate(messages),
      },
      {
        queue: o.name,
        queueUrl,
        receiveBatchSize: o.receiveBatchSize,
        maxParallelReceives: o.maxParallelReceives,
        waitTimeSec: o.waitTimeSec,
        visibilityTimeoutSec: o.visibilityTimeoutSec,
      },
    );
    pool.on("free", () => poller.wake());
    acker.on("free", () => poller.wake());
    acker.on("releaseAnswered", () => poller.wake());
    this.#acker = acker;
    this.#router = router;
    this.#deadLetter = deadLetter;
    this.#poller = poller;
    if (!deadLetter.configured) {
      log.warn("no deadLetterQueue configured: poison messages rely on the queue's redrive policy");
    }
    acker.start();
    poller.start();
    log.info(
      {
        queueUrl,
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
    const acker = this.#acker;
    const poller = this.#poller;
    if (!acker || !poller || !this.#router) {
      await this.#pool.close();
      return 0;
    }
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
      log.info({ dispatchers: this.#router.active }, "handlers done; flushing dispatchers");
      await untilAborted(this.#router.drain(), deadline);
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
      this.#router.abandonAll();
      acker.releaseAll(0);
    }
    await acker.settle();
    acker.stop();
    await this.#pool.close();
    const released = this.stats.released - releasedBefore;
    log.info({ deleted: this.stats.deleted, released }, "queue stopped");
    return released;
  }

  /**
   * Fairness: one partner may hold at most `partnerShare` of maxUnacked, so a slow or down partner
   * cannot take the whole budget. Returns the first account these outputs would push past it.
   */
  #overShare(router: Router<Ticket>, outputs: { account: string }[]): string | undefined {
    const share = Math.max(1, Math.floor(this.options.maxUnacked * this.options.partnerShare));
    const only = outputs.length === 1 ? outputs[0] : undefined;
    if (only) {
      const held = router.held(only.account);
      return held > 0 && held + 1 > share ? only.account : undefined;
    }
    const adding = new Map<string, number>();
    for (const o of outputs) adding.set(o.account, (adding.get(o.account) ?? 0) + 1);
    for (const [account, n] of adding) {
      const held = router.held(account);
      if (held > 0 && held + n > share) return account;
    }
    return undefined;
  }

  #retryDelaySec(ticket: Ticket): number {
    return backoffMs(ticket.receiveCount, this.options.retryBaseMs, this.options.retryMaxMs) / 1000;
  }

  async #redrivePolicy(
    queueUrl: string,
  ): Promise<{ deadLetterTargetArn: string; maxReceiveCount: number } | undefined> {
    const out = await this.#deps.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["RedrivePolicy"] }),
    );
    const raw = out.Attributes?.RedrivePolicy;
    if (!raw) return undefined;
    const policy = JSON.parse(raw) as { deadLetterTargetArn: string; maxReceiveCount: string | number };
    return {
      deadLetterTargetArn: policy.deadLetterTargetArn,
      maxReceiveCount: Number(policy.maxReceiveCount),
    };
  }

  /** arn:aws:sqs:region:account:name → the queue's URL. */
  async #urlOfArn(arn: string): Promise<string> {
    const [, , , , account, name] = arn.split(":");
    const out = await this.#deps.sqs.send(
      new GetQueueUrlCommand({ QueueName: name, ...(account ? { QueueOwnerAWSAccountId: account } : {}) }),
    );
    return out.QueueUrl ?? "";
  }

  /** The dead-letter queue's MaximumMessageSize; undefined (SQS's 1 MiB) if it cannot be read. */
  async #maxMessageBytes(queueUrl: string): Promise<number | undefined> {
    try {
      const out = await this.#deps.sqs.send(
        new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["MaximumMessageSize"] }),
      );
      const bytes = Number(out.Attributes?.MaximumMessageSize);
      return Number.isInteger(bytes) && bytes > 0 ? bytes : undefined;
    } catch (err) {
      this.#log.debug(
        { err, queueUrl },
        "could not read the dead-letter queue's MaximumMessageSize; assuming SQS's 1 MiB",
      );
      return undefined;
    }
  }

  /** Received after the stop began: this process will not handle them, so another may at once. */
  #releaseLate(messages: Message[]): void {
    const acker = this.#acker as Acker;
    for (const message of messages) {
      const ticket = acker.track(message);
      // A copy of a message held already refreshed its receipt handle; the drain deals with it.
      if (!ticket) continue;
      this.stats.releasedAfterStop++;
      acker.release(ticket, 0);
    }
  }

  async #resolveUrl(queue: string): Promise<string> {
    if (/^https?:\/\//.test(queue)) return queue;
    const out = await this.#deps.sqs.send(new GetQueueUrlCommand({ QueueName: queue }));
    if (!out.QueueUrl) throw new Error(`GetQueueUrl returned no URL for ${queue}`);
    return out.QueueUrl;
  }

  #accept(messages: Message[]): void {
    const acker = this.#acker as Acker;
    const receivedAtMs = Date.now();
    const receivedAt = new Date(receivedAtMs).toISOString();
    for (const message of messages) {
      const ticket = acker.track(message, receivedAtMs);
      if (!ticket) continue;
      this.#handling++;
      void this.#pool
        .run(toTask(message, ticket, receivedAt))
        .then((outcome) => this.#settle(ticket, outcome))
        .finally(() => {
          this.#handling--;
          if (this.#handling === 0) for (const resolve of this.#handledWaiters.splice(0)) resolve();
        });
    }
  }

  readonly #handledWaiters: (() => void)[] = [];

  #handled(): Promise<void> {
    if (this.#handling === 0) return Promise.resolve();
    return new Promise((resolve) => this.#handledWaiters.push(resolve));
  }

  /** Acts on a handler's outcome; resolves once the message is routed, released or dead-lettered. */
  async #settle(ticket: Ticket, outcome: PoolOutcome): Promise<void> {
    const acker = this.#acker as Acker;
    switch (outcome.kind) {
      case "ok": {
        this.stats.handled++;
        this.stats.outputs += outcome.outputs.length;
        const router = this.#router as Router<Ticket>;
        const crowded = this.#overShare(router, outcome.outputs);
        if (crowded) {
          // All or nothing: routing some outputs and releasing the message would duplicate those.
          this.stats.shed++;
          const delaySec = Math.max(
            this.#retryDelaySec(ticket),
            this.options.dispatch.flushIntervalMs / 1000,
          );
          this.#log.debug(
            { messageId: ticket.id, account: crowded, delaySec },
            "partner holds its share; message shed",
          );
          acker.release(ticket, delaySec);
          return;
        }
        acker.expect(ticket, outcome.outputs.length);
        for (const output of outcome.outputs) router.route(output.account, output.line, ticket);
        return;
      }
      case "cancelled":
        acker.release(ticket, 0);
        return;
      case "poison":
        this.stats.handlerFailures++;
        await this.#deadLetterOrRetry(ticket, outcome.reason);
        return;
      case "failed": {
        this.stats.handlerFailures++;
        // On its last receive, dead-letter it ourselves: SQS's redrive would move it without the reason.
        const max = this.#maxReceiveCount;
        if (max !== undefined && ticket.receiveCount >= max && this.#deadLetter?.configured) {
          await this.#deadLetterOrRetry(
            ticket,
            `handler failed on receive ${ticket.receiveCount} of ${max}: ${outcome.reason}`,
          );
          return;
        }
        const delaySec = this.#retryDelaySec(ticket);
        this.#log.warn(
          {
            messageId: ticket.id,
            receiveCount: ticket.receiveCount,
            reason: outcome.reason,
            retryInSec: Math.round(delaySec),
          },
          "handler failed; message will be retried",
        );
        acker.release(ticket, delaySec);
        return;
      }
    }
  }

  /** Poison: to the dead-letter queue, then deleted; if that cannot be done now, retried later. */
  async #deadLetterOrRetry(ticket: Ticket, reason: string): Promise<void> {
    const acker = this.#acker as Acker;
    const deadLetter = this.#deadLetter as DeadLetter;
    if (await deadLetter.send(ticket.message, reason)) {
      acker.done(ticket);
      return;
    }
    if (!deadLetter.configured) {
      this.#log.error(
        { messageId: ticket.id, reason },
        "poison message and no deadLetterQueue configured; returned to the queue for its redrive policy",
      );
    }
    acker.release(ticket, this.#retryDelaySec(ticket));
  }
}

function toTask(message: Message, ticket: Ticket, receivedAt: string): HandlerTask {
  const messageAttributes: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
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

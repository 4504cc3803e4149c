/**
 * The operator's side of the dead-letter queues: peek at what is in them without taking it away, and
 * redrive messages back to the queue they came from. Used by the console and meant for the CLI too;
 * the SQSClient is injected.
 *
 * Redrive never loses a message: with SQS's own message-move task (where the endpoint has it) SQS
 * moves them; otherwise each message is sent to its source queue and deleted from the dead-letter
 * queue only once that send succeeded. A crash between the two leaves a duplicate, never a loss.
 */
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
  StartMessageMoveTaskCommand,
} from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import { queueUrlOf } from "../pipeline/queue-resolution.ts";

export const REASON_ATTRIBUTE = "octorelay.reason";
export const SOURCE_QUEUE_ATTRIBUTE = "octorelay.sourceQueue";
export const SOURCE_MESSAGE_ID_ATTRIBUTE = "octorelay.sourceMessageId";

/** One configured queue and where its dead letters are. */
export interface DeadLetterRoute {
  /** The queue's name as configured (what `octorelay.sourceQueue` holds). */
  queue: string;
  queueUrl: string;
  /** "" when the queue has neither `deadLetterQueue` nor a redrive policy. */
  deadLetterQueueUrl: string;
}

/** A dead letter as an operator sees it: never the whole body, and only the SQS facts about it. */
export interface PeekedMessage {
  messageId: string;
  /** The body cut to `bodyPreviewChars`. */
  body: string;
  bodyChars: number;
  truncated: boolean;
  /** Why octorelay dead-lettered it; "" when SQS's redrive policy moved it (no reason recorded). */
  reason: string;
  sourceQueue: string;
  sourceMessageId: string;
  sentAtMs: number | undefined;
  /** Receives so far, this peek's included. */
  receiveCount: number;
  /** The sender's own message attributes: names, and string values cut short. */
  attributes: { name: string; value: string }[];
}

export type RedriveSelection = { all: true } | { all?: false; messageIds: string[] };

export type RedriveResult =
  | { method: "move-task"; taskHandle: string; sourceArn: string; destinationArn: string }
  | {
      method: "receive-send-delete";
      /** Sent to their source queue and deleted from the dead-letter queue. */
      redriven: number;
      /** Sent, but the delete failed: they will show up in both queues (a duplicate, not a loss). */
      deleteFailed: number;
      /** Left in the dead-letter queue because the send failed. */
      sendFailed: number;
      /** Left in place: no configured queue to send them to (see `octorelay.sourceQueue`). */
      unknownSource: number;
      /** Selected ids not found in the dead-letter queue (already redriven, or expired). */
      notFound: string[];
      /** Stopped at `maxMessages` or the deadline with messages still waiting. */
      more: boolean;
    };

/**
 * What a receive → send → delete redrive left undone, one phrase each (none when everything went
 * back). `ids` adds the selected ids that were not found, for a terminal that can show them.
 */
export function redriveProblems(
  result: Extract<RedriveResult, { method: "receive-send-delete" }>,
  ids?: (notFound: string[]) => string,
): string[] {
  const { sendFailed, deleteFailed, unknownSource, notFound } = result;
  return [
    sendFailed ? `${sendFailed} could not be sent and stay in the dead-letter queue` : "",
    deleteFailed ? `${deleteFailed} were sent but not deleted (they will show up twice)` : "",
    unknownSource ? `${unknownSource} name no configured source queue and were left in place` : "",
    notFound.length
      ? `${notFound.length} selected were not found (already redriven, or expired)${ids ? `: ${ids(notFound)}` : ""}`
      : "",
  ].filter(Boolean);
}

export interface DeadLettersOptions {
  /** Every configured queue; messages are only ever sent to one of these. */
  routes: DeadLetterRoute[];
  /** How long a peeked message is hidden before it is made visible again (it is at once, unless we crash). */
  peekVisibilitySec?: number;
  /** Body characters shown per message. */
  bodyPreviewChars?: number;
  /** How long a message being redriven stays invisible: time to send it and delete it. */
  redriveVisibilitySec?: number;
}

/** Errors that mean "this endpoint has no message-move task" (fauxqs, older emulators, no permission). */
const NO_MOVE_TASK = new Set([
  "InvalidAction",
  "UnsupportedOperation",
  "AWS.SimpleQueueService.UnsupportedOperation",
  "UnknownOperationException",
  "UnknownOperation",
  "NotImplemented",
  "AccessDenied",
  "AccessDeniedException",
]);

const SQS_MAX_BATCH = 10;
/** Attribute values are shown, but cut to this: they can be large and are nobody's business in full. */
const ATTRIBUTE_PREVIEW_CHARS = 120;

export class DeadLetters {
  readonly #sqs: SQSClient;
  readonly #log: Logger;
  readonly #routes: DeadLetterRoute[];
  readonly #peekVisibilitySec: number;
  readonly #bodyPreviewChars: number;
  readonly #redriveVisibilitySec: number;
  /** Whether the endpoint runs message-move tasks: unknown until tried, then remembered. */
  #moveTask: boolean | undefined;
  readonly #arns = new Map<string, string>();

  constructor(deps: { sqs: SQSClient; log: Logger }, options: DeadLettersOptions) {
    this.#sqs = deps.sqs;
    this.#log = deps.log.child({ component: "dead-letters" });
    this.#routes = options.routes;
    this.#peekVisibilitySec = options.peekVisibilitySec ?? 5;
    this.#bodyPreviewChars = options.bodyPreviewChars ?? 500;
    this.#redriveVisibilitySec = options.redriveVisibilitySec ?? 60;
  }

  get routes(): readonly DeadLetterRoute[] {
    return this.#routes;
  }

  route(queue: string): DeadLetterRoute | undefined {
    return this.#routes.find((r) => r.queue === queue);
  }

  /**
   * Up to `max` messages of the queue's dead-letter queue. They are received with a short visibility
   * timeout and made visible again at once (ChangeMessageVisibility 0), so a peek takes nothing away;
   * it does add one to each message's receive count.
   */
  async peek(queue: string, options: { max?: number; signal?: AbortSignal } = {}): Promise<PeekedMessage[]> {
    const route = this.#routeWithDlq(queue);
    const max = Math.max(1, Math.min(options.max ?? 20, 100));
    const seen = new Map<string, Message>();
    try {
      // Long polls of 1 s ask every SQS server, where a short poll samples some and may miss messages.
      while (seen.size < max) {
        const out = await this.#sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: route.deadLetterQueueUrl,
            MaxNumberOfMessages: Math.min(SQS_MAX_BATCH, max - seen.size),
            VisibilityTimeout: this.#peekVisibilitySec,
            WaitTimeSeconds: 1,
            MessageAttributeNames: ["All"],
            MessageSystemAttributeNames: ["All"],
          }),
          { abortSignal: options.signal },
        );
        const messages = out.Messages ?? [];
        let fresh = 0;
        for (const m of messages) {
          if (!m.MessageId || seen.has(m.MessageId)) continue;
          seen.set(m.MessageId, m);
          fresh++;
        }
        if (fresh === 0) break;
      }
    } finally {
      await this.#makeVisible(route.deadLetterQueueUrl, [...seen.values()]);
    }
    return [...seen.values()]
      .map((m) => this.#shown(m))
      .sort((a, b) => (a.sentAtMs ?? 0) - (b.sentAtMs ?? 0));
  }

  /**
   * Sends dead letters back to their source queue: all of them (SQS's message-move task where the
   * endpoint has one, and the dead-letter queue serves only this queue) or the selected message ids.
   * The receive → send → delete path stops after `maxMessages` or `deadlineMs` and says whether more wait.
   */
  async redrive(
    queue: string,
    selection: RedriveSelection,
    options: { maxMessages?: number; deadlineMs?: number; signal?: AbortSignal } = {},
  ): Promise<RedriveResult> {
    const route = this.#routeWithDlq(queue);
    if (selection.all && this.#moveTask !== false && this.#dlqServesOnly(route)) {
      const started = await this.#startMoveTask(route, options.signal);
      if (started) return started;
    }
    return this.#moveByHand(route, selection, options);
  }

  async #startMoveTask(route: DeadLetterRoute, signal: AbortSignal | undefined) {
    try {
      const sourceArn = await this.#arnOf(route.deadLetterQueueUrl, signal);
      const destinationArn = await this.#arnOf(route.queueUrl, signal);
      const out = await this.#sqs.send(
        new StartMessageMoveTaskCommand({ SourceArn: sourceArn, DestinationArn: destinationArn }),
        { abortSignal: signal },
      );
      this.#moveTask = true;
      this.#log.info(
        { queue: route.queue, taskHandle: out.TaskHandle },
        "dead-letter redrive: move task started",
      );
      return {
        method: "move-task" as const,
        taskHandle: out.TaskHandle ?? "",
        sourceArn,
        destinationArn,
      };
    } catch (err) {
      if (!NO_MOVE_TASK.has((err as Error).name)) throw err;
      this.#moveTask = false;
      this.#log.info(
        { queue: route.queue, error: (err as Error).name },
        "the SQS endpoint runs no message-move task: redriving by receive, send, delete",
      );
      return undefined;
    }
  }

  async #moveByHand(
    route: DeadLetterRoute,
    selection: RedriveSelection,
    options: { maxMessages?: number; deadlineMs?: number; signal?: AbortSignal },
  ): Promise<RedriveResult> {
    const wanted = selection.all ? undefined : new Set(selection.messageIds);
    const maxMessages = options.maxMessages ?? 1000;
    const deadline = Date.now() + (options.deadlineMs ?? 10_000);
    const result = {
      method: "receive-send-delete" as const,
      redriven: 0,
      deleteFailed: 0,
      sendFailed: 0,
      unknownSource: 0,
      notFound: [] as string[],
      more: false,
    };
    /** Received and not taken (not selected, no source, send failed): made visible again at the end. */
    const putBack: Message[] = [];
    const seen = new Set<string>();
    try {
      for (;;) {
        if (wanted && wanted.size === 0) break;
        if (result.redriven + result.deleteFailed >= maxMessages || Date.now() >= deadline) {
          result.more = true;
          break;
        }
        options.signal?.throwIfAborted();
        const out = await this.#sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: route.deadLetterQueueUrl,
            MaxNumberOfMessages: SQS_MAX_BATCH,
            VisibilityTimeout: this.#redriveVisibilitySec,
            WaitTimeSeconds: 1,
            MessageAttributeNames: ["All"],
            MessageSystemAttributeNames: ["All"],
          }),
          { abortSignal: options.signal },
        );
        const messages = (out.Messages ?? []).filter((m) => m.MessageId && !seen.has(m.MessageId));
        if (messages.length === 0) break;
        const sent: Message[] = [];
        for (const m of messages) {
          const id = m.MessageId as string;
          seen.add(id);
          if (wanted && !wanted.delete(id)) {
            putBack.push(m);
            continue;
          }
          const target = this.#sourceOf(route, m);
          if (!target) {
            result.unknownSource++;
            putBack.push(m);
            continue;
          }
          try {
            await this.#sqs.send(sendBack(target, m), { abortSignal: options.signal });
            sent.push(m);
          } catch (err) {
            result.sendFailed++;
            putBack.push(m);
            this.#log.error(
              { err, queue: route.queue, messageId: id },
              "redrive: send failed; left in the dead-letter queue",
            );
          }
        }
        // Only what was sent is deleted: a crash before this line leaves duplicates, never a loss.
        const failed = await this.#deleteAll(route.deadLetterQueueUrl, sent);
        result.deleteFailed += failed;
        result.redriven += sent.length - failed;
      }
    } finally {
      await this.#makeVisible(route.deadLetterQueueUrl, putBack);
    }
    if (wanted) result.notFound = [...wanted];
    this.#log.info(
      { queue: route.queue, ...result, notFound: result.notFound.length },
      "dead-letter redrive done",
    );
    return result;
  }

  /** The configured queue a dead letter goes back to, never a queue octorelay does not drain. */
  #sourceOf(route: DeadLetterRoute, m: Message): string | undefined {
    const named = m.MessageAttributes?.[SOURCE_QUEUE_ATTRIBUTE]?.StringValue;
    if (named !== undefined) return this.#routes.find((r) => r.queue === named)?.queueUrl;
    // Moved by SQS's redrive policy (no attribute): only unambiguous if this DLQ serves one queue.
    return this.#dlqServesOnly(route) ? route.queueUrl : undefined;
  }

  #dlqServesOnly(route: DeadLetterRoute): boolean {
    return this.#routes.filter((r) => r.deadLetterQueueUrl === route.deadLetterQueueUrl).length === 1;
  }

  #routeWithDlq(queue: string): DeadLetterRoute {
    const route = this.route(queue);
    if (!route) {
      throw new RangeError(
        `queue ${JSON.stringify(queue)} is not configured; valid: ${this.#routes.map((r) => r.queue).join(", ")}`,
      );
    }
    if (!route.deadLetterQueueUrl) {
      throw new RangeError(
        `queue ${JSON.stringify(queue)} has no dead-letter queue: set its deadLetterQueue or give it a redrive policy`,
      );
    }
    return route;
  }

  async #arnOf(queueUrl: string, signal: AbortSignal | undefined): Promise<string> {
    let arn = this.#arns.get(queueUrl);
    if (!arn) {
      const out = await this.#sqs.send(
        new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["QueueArn"] }),
        { abortSignal: signal },
      );
      arn = out.Attributes?.QueueArn;
      if (!arn) throw new Error(`GetQueueAttributes returned no QueueArn for ${queueUrl}`);
      this.#arns.set(queueUrl, arn);
    }
    return arn;
  }

  /** Deletes in batches of 10; returns how many could not be deleted (each logged with its id). */
  async #deleteAll(queueUrl: string, messages: Message[]): Promise<number> {
    let failed = 0;
    for (let i = 0; i < messages.length; i += SQS_MAX_BATCH) {
      const chunk = messages.slice(i, i + SQS_MAX_BATCH);
      try {
        const out = await this.#sqs.send(
          new DeleteMessageBatchCommand({
            QueueUrl: queueUrl,
            Entries: chunk.map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle })),
          }),
        );
        for (const f of out.Failed ?? []) {
          failed++;
          this.#log.warn(
            { messageId: chunk[Number(f.Id)]?.MessageId, code: f.Code },
            "redrive: sent but not deleted from the dead-letter queue; it will be there twice",
          );
        }
      } catch (err) {
        failed += chunk.length;
        this.#log.warn(
          { err, messageIds: chunk.map((m) => m.MessageId) },
          "redrive: sent but not deleted from the dead-letter queue; they will be there twice",
        );
      }
    }
    return failed;
  }

  /** Visibility 0 for what we received and did not take; failures only delay them (their timeout ends). */
  async #makeVisible(queueUrl: string, messages: Message[]): Promise<void> {
    for (let i = 0; i < messages.length; i += SQS_MAX_BATCH) {
      const chunk = messages.slice(i, i + SQS_MAX_BATCH);
      try {
        await this.#sqs.send(
          new ChangeMessageVisibilityBatchCommand({
            QueueUrl: queueUrl,
            Entries: chunk.map((m, j) => ({
              Id: String(j),
              ReceiptHandle: m.ReceiptHandle,
              VisibilityTimeout: 0,
            })),
          }),
        );
      } catch (err) {
        this.#log.warn(
          { err, queueUrl },
          "could not make peeked dead letters visible again; they will be once their visibility timeout ends",
        );
      }
    }
  }

  #shown(m: Message): PeekedMessage {
    const body = m.Body ?? "";
    const chars = [...body];
    const attrs = m.MessageAttributes ?? {};
    const sent = Number(m.Attributes?.SentTimestamp);
    return {
      messageId: m.MessageId ?? "",
      body: chars.length > this.#bodyPreviewChars ? chars.slice(0, this.#bodyPreviewChars).join("") : body,
      bodyChars: chars.length,
      truncated: chars.length > this.#bodyPreviewChars,
      reason: attrs[REASON_ATTRIBUTE]?.StringValue ?? "",
      sourceQueue: attrs[SOURCE_QUEUE_ATTRIBUTE]?.StringValue ?? "",
      sourceMessageId: attrs[SOURCE_MESSAGE_ID_ATTRIBUTE]?.StringValue ?? "",
      sentAtMs: Number.isFinite(sent) ? sent : undefined,
      receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 0),
      attributes: Object.entries(attrs)
        .filter(([name]) => !name.startsWith("octorelay."))
        .map(([name, value]) => ({ name, value: attributePreview(value) })),
    };
  }
}

function attributePreview(value: MessageAttributeValue): string {
  if (value.StringValue !== undefined) {
    return value.StringValue.length > ATTRIBUTE_PREVIEW_CHARS
      ? `${value.StringValue.slice(0, ATTRIBUTE_PREVIEW_CHARS)}…`
      : value.StringValue;
  }
  return `(${value.DataType ?? "Binary"}, ${value.BinaryValue?.byteLength ?? 0} bytes)`;
}

/**
 * The message as it was first sent: the same body, the sender's attributes; octorelay's own
 * attributes describe the dead-lettering and are left behind (a new failure writes new ones).
 */
function sendBack(queueUrl: string, m: Message): SendMessageCommand {
  const attributes: Record<string, MessageAttributeValue> = {};
  for (const [name, value] of Object.entries(m.MessageAttributes ?? {})) {
    if (name.startsWith("octorelay.")) continue;
    attributes[name] = {
      DataType: value.DataType,
      ...(value.StringValue !== undefined ? { StringValue: value.StringValue } : {}),
      ...(value.BinaryValue !== undefined ? { BinaryValue: value.BinaryValue } : {}),
    };
  }
  const fifo = queueUrl.endsWith(".fifo");
  return new SendMessageCommand({
    QueueUrl: queueUrl,
    MessageBody: m.Body ?? "",
    ...(Object.keys(attributes).length > 0 ? { MessageAttributes: attributes } : {}),
    ...(fifo
      ? {
          MessageGroupId: m.Attributes?.MessageGroupId ?? "octorelay-redrive",
          // The dead letter's id: a retried redrive of the same message is dropped by SQS within 5 min.
          MessageDeduplicationId: m.MessageId,
        }
      : {}),
  });
}

/**
 * Where each configured queue's dead letters are: its `deadLetterQueue`, or its redrive policy's
 * target. Resolved with the same calls the relay makes at start (GetQueueUrl, GetQueueAttributes).
 */
export async function resolveDeadLetterRoutes(
  sqs: SQSClient,
  queues: readonly { name: string; queue: string; deadLetterQueue: string }[],
): Promise<DeadLetterRoute[]> {
  return Promise.all(
    queues.map(async (q) => {
      const queueUrl = await queueUrlOf(sqs, q.queue);
      let deadLetterQueueUrl = q.deadLetterQueue ? await queueUrlOf(sqs, q.deadLetterQueue) : "";
      if (!deadLetterQueueUrl) {
        const out = await sqs.send(
          new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["RedrivePolicy"] }),
        );
        const raw = out.Attributes?.RedrivePolicy;
        const arn = raw
          ? (JSON.parse(raw) as { deadLetterTargetArn?: string }).deadLetterTargetArn
          : undefined;
        if (arn) {
          const [, , , , account, name] = arn.split(":");
          const got = await sqs.send(
            new GetQueueUrlCommand({
              QueueName: name,
              ...(account ? { QueueOwnerAWSAccountId: account } : {}),
            }),
          );
          deadLetterQueueUrl = got.QueueUrl ?? "";
        }
      }
      return { queue: q.name, queueUrl, deadLetterQueueUrl };
    }),
  );
}

import {
  type Message,
  type MessageAttributeValue,
  SendMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import { type RelayEventSink, SQS_CALL } from "./events.ts";
import { SQS_MAX_MESSAGE_BYTES } from "./poller.ts";

/** SQS allows at most 10 message attributes; ours take three, the sender's keep the rest. */
const SQS_MAX_ATTRIBUTES = 10;
/** The reason is cut to this when there is room for all of it. */
const MAX_REASON_BYTES = 4096;
/** Below this a reason says too little to be worth dropping a sender's attribute for. */
export const MIN_REASON_BYTES = 128;
const REASON = "octorelay.reason";
const ELLIPSIS = "…";
/** What SQS accepts in a string: #x9 #xA #xD #x20–#xD7FF #xE000–#xFFFD #x10000–#x10FFFF. */
const NOT_SQS_TEXT = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu;

export interface DeadLetterOptions {
  queue: string;
  /** "" when none is configured: poison messages then go back to SQS and its redrive policy. */
  deadLetterQueueUrl: string;
  /** The dead-letter queue's MaximumMessageSize; SQS's 1 MiB when unknown. */
  maxMessageBytes?: number;
}

type Attributes = Record<string, MessageAttributeValue>;

/**
 * How large SQS counts a message against MaximumMessageSize: the body plus, for every attribute, its
 * name, its DataType and its value, all as UTF-8. A binary value is counted as its base64 text, which
 * is what goes on the wire and never less than SQS's count of the raw bytes.
 */
export function sqsMessageBytes(body: string, attributes: Attributes): number {
  let bytes = Buffer.byteLength(body, "utf8");
  for (const [name, value] of Object.entries(attributes)) {
    bytes += Buffer.byteLength(name, "utf8") + Buffer.byteLength(value.DataType ?? "", "utf8");
    if (value.StringValue !== undefined) bytes += Buffer.byteLength(value.StringValue, "utf8");
    if (value.BinaryValue !== undefined) bytes += Math.ceil(value.BinaryValue.byteLength / 3) * 4;
  }
  return bytes;
}

/** `text` cut to at most `maxBytes` of UTF-8, on a character boundary, marked with an ellipsis. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, "utf8") <= maxBytes) return text;
  const room = maxBytes - Buffer.byteLength(ELLIPSIS, "utf8");
  if (room <= 0) return "";
  // encodeInto writes whole characters only, so `read` never splits a surrogate pair.
  const { read } = new TextEncoder().encodeInto(text, new Uint8Array(room));
  return `${text.slice(0, read)}${ELLIPSIS}`;
}

/** The copy of a poison message that goes to the dead-letter queue, fitted to SQS's size limit. */
export interface DeadLetterCopy {
  body: string;
  attributes: Attributes;
  /** The reason as sent; "" when it was left out. */
  reason: string;
  /** The reason had to be shortened to fit (beyond the usual 4 KiB cut). */
  reasonShortened: boolean;
  /** Sender attributes left out: past the 10-attribute limit, or to make room. */
  dropped: string[];
  /** False when not even a minimal reason fit: sent without any octorelay attribute. */
  withReason: boolean;
  /** As SQS counts it. */
  bytes: number;
  /** False when even the bare body is over the limit: it cannot be sent at all. */
  fits: boolean;
}

/**
 * Policy: the body always goes byte for byte (so a redrive gives the handler the same message); the
 * reason is kept if at all possible. In order, until the copy fits `maxBytes`: the reason is cut to
 * what fits (down to MIN_REASON_BYTES), the sender's attributes are dropped largest first (the reason
 * then gets what they freed), and last the octorelay attributes go, the reason left to the log.
 */
export function fitDeadLetter(input: {
  body: string;
  reason: string;
  sourceQueue: string;
  sourceMessageId: string;
  senderAttributes: [string, MessageAttributeValue][];
  maxBytes: number;
}): DeadLetterCopy {
  const { body, maxBytes } = input;
  const fullReason = truncateUtf8(
    input.reason.replace(NOT_SQS_TEXT, "\uFFFD") || "unknown",
    MAX_REASON_BYTES,
  );
  const ours = (reason: string): Attributes => ({
    [REASON]: { DataType: "String", StringValue: reason },
    "octorelay.sourceQueue": { DataType: "String", StringValue: input.sourceQueue },
    ...(input.sourceMessageId
      ? { "octorelay.sourceMessageId": { DataType: "String", StringValue: input.sourceMessageId } }
      : {}),
  });
  const oursCount = Object.keys(ours("")).length;
  let kept = input.senderAttributes.slice(0, SQS_MAX_ATTRIBUTES - oursCount);
  const dropped = input.senderAttributes.slice(kept.length).map(([name]) => name);
  const copy = (attributes: Attributes, reason: string, withReason: boolean): DeadLetterCopy => {
    const bytes = sqsMessageBytes(body, attributes);
    return {
      body,
      attributes,
      reason,
      reasonShortened: reason !== fullReason,
      dropped,
      withReason,
      bytes,
      fits: bytes <= maxBytes,
    };
  };
  const minReason = Math.min(MIN_REASON_BYTES, Buffer.byteLength(fullReason, "utf8"));
  /** Bytes left for the reason's value with these sender attributes beside ours. */
  const reasonRoom = () => maxBytes - sqsMessageBytes(body, { ...Object.fromEntries(kept), ...ours("") });

  // Largest first: the fewest of the sender's attributes are lost for the room needed.
  const bySize = (a: [string, MessageAttributeValue], b: [string, MessageAttributeValue]) =>
    sqsMessageBytes("", Object.fromEntries([b])) - sqsMessageBytes("", Object.fromEntries([a]));
  while (reasonRoom() < minReason && kept.length > 0) {
    const largest = [...kept].sort(bySize)[0] as [string, MessageAttributeValue];
    kept = kept.filter((entry) => entry !== largest);
    dropped.push(largest[0]);
  }
  const room = reasonRoom();
  if (room >= minReason) {
    const reason = truncateUtf8(fullReason, room);
    return copy({ ...Object.fromEntries(kept), ...ours(reason) }, reason, true);
  }

  // Not even a minimal reason fits: the body alone, with what sender attributes still fit.
  const bare: [string, MessageAttributeValue][] = [];
  const smallestFirst = [...input.senderAttributes.slice(0, SQS_MAX_ATTRIBUTES)].sort((a, b) => bySize(b, a));
  for (const entry of smallestFirst) {
    if (sqsMessageBytes(body, Object.fromEntries([...bare, entry])) <= maxBytes) bare.push(entry);
  }
  const bareNames = new Set(bare.map(([name]) => name));
  dropped.length = 0;
  dropped.push(...input.senderAttributes.map(([name]) => name).filter((name) => !bareNames.has(name)));
  // Keep the sender's order among those kept.
  const inOrder = input.senderAttributes.filter(([name]) => bareNames.has(name));
  return copy(Object.fromEntries(inOrder), "", false);
}

/**
 * Sends a message that can never succeed to the dead-letter queue, with the reason as attributes,
 * so it can be inspected and redriven. The caller deletes the original only when this resolves true.
 *
 * The copy is fitted to the queue's size limit (fitDeadLetter). Putting a large body in S3 with a
 * pointer in the message was rejected: a redrive would hand the handler the pointer, not the body.
 */
export class DeadLetter {
  readonly #sqs: SQSClient;
  readonly #log: Logger;
  readonly #events: RelayEventSink;
  readonly #options: DeadLetterOptions;

  constructor(deps: { sqs: SQSClient; log: Logger; events: RelayEventSink }, options: DeadLetterOptions) {
    this.#sqs = deps.sqs;
    this.#log = deps.log.child({ component: "dead-letter" });
    this.#events = deps.events;
    this.#options = options;
  }

  get configured(): boolean {
    return this.#options.deadLetterQueueUrl !== "";
  }

  async send(message: Message, reason: string): Promise<boolean> {
    if (!this.configured) return false;
    const maxBytes = this.#options.maxMessageBytes ?? SQS_MAX_MESSAGE_BYTES;
    const messageId = message.MessageId ?? "";
    const dead = fitDeadLetter({
      body: message.Body ?? "",
      reason,
      sourceQueue: this.#options.queue,
      sourceMessageId: messageId,
      senderAttributes: Object.entries(message.MessageAttributes ?? {}),
      maxBytes,
    });
    if (!dead.fits) {
      this.#log.error(
        { messageId, reason, bytes: dead.bytes, maxBytes },
        "the body alone is over the dead-letter queue's MaximumMessageSize; returned to the queue for its redrive policy (raise the dead-letter queue's MaximumMessageSize to its source queue's)",
      );
      return false;
    }
    const fit = !dead.withReason
      ? "without-reason"
      : dead.reasonShortened || dead.dropped.length > 0
        ? "trimmed"
        : "whole";
    if (fit === "without-reason") {
      this.#log.error(
        { messageId, reason, bytes: dead.bytes, maxBytes, dropped: dead.dropped },
        "the body leaves no room under the size limit for octorelay attributes: dead-lettering it without them; the reason is only in this log",
      );
    } else if (fit === "trimmed") {
      this.#log.warn(
        {
          messageId,
          dropped: dead.dropped,
          reasonBytes: Buffer.byteLength(reason, "utf8"),
          reasonBytesSent: Buffer.byteLength(dead.reason, "utf8"),
          bytes: dead.bytes,
          maxBytes,
        },
        "dead-lettered copy trimmed to fit the size and attribute limits of SQS: the body is whole; sender attributes listed in `dropped` were left out, the reason shortened to reasonBytesSent",
      );
    }
    try {
      await this.#sqs.send(
        new SendMessageCommand({
          QueueUrl: this.#options.deadLetterQueueUrl,
          MessageBody: dead.body,
          ...(Object.keys(dead.attributes).length > 0 ? { MessageAttributes: dead.attributes } : {}),
        }),
      );
      this.#events.emit("sqs-call", SQS_CALL.SendMessage.ok);
      this.#events.emit("dead-lettered", { reason, fit });
      this.#log.warn({ messageId, reason }, "message dead-lettered");
      return true;
    } catch (err) {
      this.#events.emit("sqs-call", SQS_CALL.SendMessage.error);
      this.#log.error({ err, messageId }, "could not dead-letter the message; it will be retried");
      return false;
    }
  }
}

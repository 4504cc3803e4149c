import {
  type Message,
  type MessageAttributeValue,
  SendMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import type { RelayStats } from "./stats.ts";

/** SQS allows at most 10 message attributes; ours take three, the sender's keep the rest. */
const SQS_MAX_ATTRIBUTES = 10;

export interface DeadLetterOptions {
  queue: string;
  /** "" when none is configured: poison messages then go back to SQS and its redrive policy. */
  deadLetterQueueUrl: string;
}

/**
 * Sends a message that can never succeed to the dead-letter queue, with the reason as attributes,
 * so it can be inspected and redriven. The caller deletes the original only when this resolves true.
 */
export class DeadLetter {
  readonly #sqs: SQSClient;
  readonly #log: Logger;
  readonly #stats: RelayStats;
  readonly #options: DeadLetterOptions;

  constructor(deps: { sqs: SQSClient; log: Logger; stats: RelayStats }, options: DeadLetterOptions) {
    this.#sqs = deps.sqs;
    this.#log = deps.log.child({ component: "dead-letter" });
    this.#stats = deps.stats;
    this.#options = options;
  }

  get configured(): boolean {
    return this.#options.deadLetterQueueUrl !== "";
  }

  async send(message: Message, reason: string): Promise<boolean> {
    if (!this.configured) return false;
    const ours: Record<string, MessageAttributeValue> = {
      "octorelay.reason": { DataType: "String", StringValue: reason.slice(0, 4096) },
      "octorelay.sourceQueue": { DataType: "String", StringValue: this.#options.queue },
      "octorelay.sourceMessageId": { DataType: "String", StringValue: message.MessageId ?? "" },
    };
    const theirs = Object.entries(message.MessageAttributes ?? {});
    const kept = theirs.slice(0, SQS_MAX_ATTRIBUTES - Object.keys(ours).length);
    if (kept.length < theirs.length) {
      this.#log.warn(
        { messageId: message.MessageId, dropped: theirs.slice(kept.length).map(([k]) => k) },
        "message attributes over the SQS limit were dropped from the dead-lettered copy",
      );
    }
    try {
      await this.#sqs.send(
        new SendMessageCommand({
          QueueUrl: this.#options.deadLetterQueueUrl,
          MessageBody: message.Body ?? "",
          MessageAttributes: { ...Object.fromEntries(kept), ...ours },
        }),
      );
      this.#stats.deadLettered++;
      this.#log.warn({ messageId: message.MessageId, reason }, "message dead-lettered");
      return true;
    } catch (err) {
      this.#stats.sqsCalls.errors++;
      this.#log.error(
        { err, messageId: message.MessageId },
        "could not dead-letter the message; it will be retried",
      );
      return false;
    }
  }
}

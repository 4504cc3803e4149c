import { GetQueueAttributesCommand, GetQueueUrlCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "pino";

/** What a queue's relay needs to know from SQS before it receives anything. */
export interface ResolvedQueue {
  queueUrl: string;
  /** From the queue's redrive policy: the receive at which SQS would dead-letter a message. */
  maxReceiveCount: number | undefined;
  /** The configured deadLetterQueue, else the redrive policy's target; "" when there is neither. */
  deadLetterQueueUrl: string;
  /** The dead-letter queue's MaximumMessageSize; undefined (SQS's 1 MiB) if none or unreadable. */
  deadLetterMaxBytes: number | undefined;
}

export interface QueueResolutionOptions {
  /** The queue's name or URL. */
  queue: string;
  /** Name or URL of the queue for poison messages; "" = the target of the queue's redrive policy. */
  deadLetterQueue: string;
}

/** Looks up the queue's URL, its redrive policy and its dead-letter queue (three or four SQS calls). */
export async function resolveQueue(
  deps: { sqs: SQSClient; log: Logger },
  options: QueueResolutionOptions,
): Promise<ResolvedQueue> {
  const { sqs, log } = deps;
  const queueUrl = await queueUrlOf(sqs, options.queue);
  const redrive = await redrivePolicy(sqs, queueUrl);
  const deadLetterQueueUrl = options.deadLetterQueue
    ? await queueUrlOf(sqs, options.deadLetterQueue)
    : redrive
      ? await urlOfArn(sqs, redrive.deadLetterTargetArn)
      : "";
  return {
    queueUrl,
    maxReceiveCount: redrive?.maxReceiveCount,
    deadLetterQueueUrl,
    deadLetterMaxBytes: deadLetterQueueUrl ? await maxMessageBytes(sqs, log, deadLetterQueueUrl) : undefined,
  };
}

/** A queue's URL: a URL as it is, a name through GetQueueUrl. */
export async function queueUrlOf(sqs: SQSClient, queue: string): Promise<string> {
  if (/^https?:\/\//.test(queue)) return queue;
  const out = await sqs.send(new GetQueueUrlCommand({ QueueName: queue }));
  if (!out.QueueUrl) throw new Error(`GetQueueUrl returned no URL for ${queue}`);
  return out.QueueUrl;
}

async function redrivePolicy(
  sqs: SQSClient,
  queueUrl: string,
): Promise<{ deadLetterTargetArn: string; maxReceiveCount: number } | undefined> {
  const out = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["RedrivePolicy"] }),
  );
  const raw = out.Attributes?.RedrivePolicy;
  if (!raw) return undefined;
  let policy: { deadLetterTargetArn: string; maxReceiveCount: string | number };
  try {
    policy = JSON.parse(raw);
  } catch (err) {
    throw new Error(
      `queue ${queueUrl}: its RedrivePolicy attribute is not JSON: ${raw}; set a valid redrive policy`,
      {
        cause: err,
      },
    );
  }
  return {
    deadLetterTargetArn: policy.deadLetterTargetArn,
    maxReceiveCount: Number(policy.maxReceiveCount),
  };
}

/** arn:aws:sqs:region:account:name → the queue's URL ("" if SQS gives none). */
async function urlOfArn(sqs: SQSClient, arn: string): Promise<string> {
  const [, , , , account, name] = arn.split(":");
  const out = await sqs.send(
    new GetQueueUrlCommand({ QueueName: name, ...(account ? { QueueOwnerAWSAccountId: account } : {}) }),
  );
  return out.QueueUrl ?? "";
}

async function maxMessageBytes(sqs: SQSClient, log: Logger, queueUrl: string): Promise<number | undefined> {
  try {
    const out = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["MaximumMessageSize"] }),
    );
    const bytes = Number(out.Attributes?.MaximumMessageSize);
    return Number.isInteger(bytes) && bytes > 0 ? bytes : undefined;
  } catch (err) {
    log.debug(
      { err, queueUrl },
      "could not read the dead-letter queue's MaximumMessageSize; assuming SQS's 1 MiB",
    );
    return undefined;
  }
}

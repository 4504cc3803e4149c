/**
 * The AWS side of integration tests: fauxqs embedded in this process, or LocalStack when
 * AWS_ENDPOINT_URL points at one. Every test gets fresh queues and buckets with unique names.
 */
import { randomUUID } from "node:crypto";
import { gunzipSync } from "node:zlib";
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import {
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import { startFauxqs } from "fauxqs";

export interface Emulator {
  endpoint: string;
  region: string;
  sqs: SQSClient;
  s3: S3Client;
  stop(): Promise<void>;
}

export async function startEmulator(): Promise<Emulator> {
  const region = process.env.AWS_REGION ?? "us-east-1";
  process.env.AWS_ACCESS_KEY_ID ??= "test";
  process.env.AWS_SECRET_ACCESS_KEY ??= "test";
  const external = process.env.AWS_ENDPOINT_URL;
  const server = external ? undefined : await startFauxqs({ port: 0, logger: false });
  const endpoint = external ?? (server as { address: string }).address;
  return {
    endpoint,
    region,
    sqs: new SQSClient({ region, endpoint, useQueueUrlAsEndpoint: false }),
    s3: new S3Client({ region, endpoint, forcePathStyle: true }),
    async stop() {
      await server?.stop();
    },
  };
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

export interface TestQueue {
  name: string;
  url: string;
  dlqName: string;
  dlqUrl: string;
}

/** A queue with its dead-letter queue and a redrive policy, as an operator would set it up. */
export async function createQueue(
  emu: Emulator,
  options: { prefix?: string; maxReceiveCount?: number; visibilityTimeoutSec?: number } = {},
): Promise<TestQueue> {
  const name = uniqueName(options.prefix ?? "q");
  const dlqName = `${name}-dlq`;
  const dlq = await emu.sqs.send(new CreateQueueCommand({ QueueName: dlqName }));
  const dlqUrl = dlq.QueueUrl as string;
  const attrs = await emu.sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ["QueueArn"] }),
  );
  const queue = await emu.sqs.send(
    new CreateQueueCommand({
      QueueName: name,
      Attributes: {
        VisibilityTimeout: String(options.visibilityTimeoutSec ?? 30),
        RedrivePolicy: JSON.stringify({
          deadLetterTargetArn: attrs.Attributes?.QueueArn,
          maxReceiveCount: String(options.maxReceiveCount ?? 5),
        }),
      },
    }),
  );
  return { name, url: queue.QueueUrl as string, dlqName, dlqUrl };
}

export async function createBucket(emu: Emulator): Promise<string> {
  const bucket = uniqueName("b");
  await emu.s3.send(new CreateBucketCommand({ Bucket: bucket }));
  return bucket;
}

/** Sends bodies in batches of 10; returns the SQS message ids in order. */
export async function sendBodies(emu: Emulator, queueUrl: string, bodies: unknown[]): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < bodies.length; i += 10) {
    const chunk = bodies.slice(i, i + 10);
    const out = await emu.sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: chunk.map((body, j) => ({
          Id: String(j),
          MessageBody: typeof body === "string" ? body : JSON.stringify(body),
        })),
      }),
    );
    if (out.Failed?.length) throw new Error(`SendMessageBatch failed: ${JSON.stringify(out.Failed)}`);
    const byEntry = new Map((out.Successful ?? []).map((s) => [s.Id, s.MessageId as string]));
    for (let j = 0; j < chunk.length; j++) ids.push(byEntry.get(String(j)) as string);
  }
  return ids;
}

export interface DeliveredRecord {
  key: string;
  id: string;
  queue: string;
  account: string;
  receivedAt: string;
  payload: unknown;
}

/** Every NDJSON record in the bucket (gzip or not), with the key it was found under. */
export async function readDelivered(
  emu: Emulator,
  bucket: string,
  prefix?: string,
): Promise<DeliveredRecord[]> {
  const records: DeliveredRecord[] = [];
  let token: string | undefined;
  do {
    const page = await emu.s3.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        ContinuationToken: token,
        ...(prefix ? { Prefix: prefix } : {}),
      }),
    );
    for (const object of page.Contents ?? []) {
      const key = object.Key as string;
      const got = await emu.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const bytes = Buffer.from(
        await (got.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
      );
      const text = key.endsWith(".gz") ? gunzipSync(bytes).toString("utf8") : bytes.toString("utf8");
      for (const line of text.split("\n")) {
        if (line) records.push({ key, ...(JSON.parse(line) as Omit<DeliveredRecord, "key">) });
      }
    }
    token = page.NextContinuationToken;
  } while (token);
  return records;
}

/** Receives until the queue answers empty; the messages stay invisible for `visibilitySec`. */
export async function receiveAll(emu: Emulator, queueUrl: string, visibilitySec = 60): Promise<Message[]> {
  const all: Message[] = [];
  for (;;) {
    const out = await emu.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        VisibilityTimeout: visibilitySec,
        WaitTimeSeconds: 0,
        MessageAttributeNames: ["All"],
      }),
    );
    if (!out.Messages?.length) return all;
    all.push(...out.Messages);
  }
}

/** Visible plus in-flight plus delayed messages, as SQS reports them. */
export async function queueDepth(emu: Emulator, queueUrl: string): Promise<number> {
  const out = await emu.sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
      ],
    }),
  );
  const a = out.Attributes ?? {};
  return (
    Number(a.ApproximateNumberOfMessages ?? 0) +
    Number(a.ApproximateNumberOfMessagesNotVisible ?? 0) +
    Number(a.ApproximateNumberOfMessagesDelayed ?? 0)
  );
}

/** Polls a condition until it holds; fails with `what` after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Drains a dead-letter queue into `seen` (source message id → reason octorelay gave) and returns
 * everything seen so far; messages are deleted once read, so calls can repeat while others arrive.
 */
export async function readDeadLetters(
  emu: Emulator,
  dlqUrl: string,
  seen = new Map<string, string>(),
): Promise<{ id: string; reason: string }[]> {
  const messages = await receiveAll(emu, dlqUrl, 300);
  for (const m of messages) {
    const id = m.MessageAttributes?.["octorelay.sourceMessageId"]?.StringValue ?? (m.MessageId as string);
    seen.set(id, m.MessageAttributes?.["octorelay.reason"]?.StringValue ?? "");
  }
  for (let i = 0; i < messages.length; i += 10) {
    await emu.sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: dlqUrl,
        Entries: messages.slice(i, i + 10).map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle })),
      }),
    );
  }
  return [...seen].map(([id, reason]) => ({ id, reason }));
}

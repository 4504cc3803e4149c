/**
 * The peer: what a Node team would otherwise write with bbc/sqs-consumer. Several consumers in one
 * process, batches of 10; each message is parsed and written to S3 as its own object as it is
 * handled, then deleted (with deleteMode "batch", one DeleteMessageBatch per received batch, via
 * handleMessageBatch; with "message", sqs-consumer's per-message handleMessage and DeleteMessage).
 */
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { type Message, SQSClient } from "@aws-sdk/client-sqs";
import { Consumer } from "sqs-consumer";
import { runContender } from "../lib/contender.ts";

await runContender(async (spec, meter) => {
  const sqs = new SQSClient({ region: spec.region, endpoint: spec.endpoint, useQueueUrlAsEndpoint: false });
  const s3 = new S3Client({ region: spec.region, endpoint: spec.endpoint, forcePathStyle: true });
  meter.attachSqs(sqs);
  meter.attachS3(s3);

  const write = async (message: Message): Promise<void> => {
    const body = JSON.parse(message.Body ?? "") as { account: string };
    const now = new Date();
    const day = now.toISOString().slice(0, 13).replace(/[-T]/g, "/");
    await s3.send(
      new PutObjectCommand({
        Bucket: spec.bucket,
        Key: `${spec.queueName}/${body.account}/${day}/${message.MessageId}.json`,
        Body: JSON.stringify({
          id: message.MessageId,
          queue: spec.queueName,
          receivedAt: now.toISOString(),
          account: body.account,
          payload: body,
        }),
        ContentType: "application/json",
      }),
    );
  };

  const consumers = Array.from({ length: spec.peer.consumers }, () =>
    Consumer.create({
      queueUrl: spec.queueUrl,
      sqs,
      batchSize: 10,
      waitTimeSeconds: 20,
      visibilityTimeout: 60,
      ...(spec.peer.deleteMode === "batch"
        ? {
            handleMessageBatch: async (messages: Message[]) => {
              await Promise.all(messages.map(write));
              return messages;
            },
          }
        : {
            handleMessage: async (message: Message) => {
              await write(message);
              return message;
            },
          }),
    }),
  );
  for (const consumer of consumers) {
    consumer.on("error", (err) => process.stderr.write(`peer: ${err.message}\n`));
    consumer.on("processing_error", (err) => process.stderr.write(`peer: ${err.message}\n`));
    consumer.start();
  }
  return {
    async stop() {
      for (const consumer of consumers) consumer.stop({ abort: true });
    },
  };
});

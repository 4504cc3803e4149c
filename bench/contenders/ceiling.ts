/**
 * The ceiling: the AWS SDK alone, ReceiveMessage(10) then DeleteMessageBatch of what came back, in
 * enough parallel loops to saturate the emulator, with no processing at all. Nothing real can go
 * faster through the same emulator on the same machine.
 */
import { DeleteMessageBatchCommand, ReceiveMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { runContender } from "../lib/contender.ts";

await runContender(async (spec, meter) => {
  const sqs = new SQSClient({ region: spec.region, endpoint: spec.endpoint, useQueueUrlAsEndpoint: false });
  meter.attachSqs(sqs);
  const abort = new AbortController();
  const loop = async () => {
    while (!abort.signal.aborted) {
      const out = await sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: spec.queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: 20,
          VisibilityTimeout: 60,
        }),
        { abortSignal: abort.signal },
      );
      const messages = out.Messages ?? [];
      if (messages.length === 0) continue;
      await sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: spec.queueUrl,
          Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
        }),
      );
    }
  };
  const loops = Array.from({ length: spec.ceiling.loops }, () => loop().catch(() => undefined));
  return {
    async stop() {
      abort.abort();
      await Promise.all(loops);
    },
  };
});

/**
 * What the SDK itself costs per SQS call, with no network and no emulator: octorelay's production
 * SQS client (src/aws-clients.ts) with a request handler that answers at once with a canned
 * response. Sends ReceiveMessage(10) and DeleteMessageBatch(10) with and without per-call options:
 * any options (an abort signal included) make the SDK resolve the middleware stack again and drop
 * the client's cached one. Prints CPU µs per call.
 *
 *   node bench/sdk-calls.ts [--calls 5000] [--runs 3]
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import { DeleteMessageBatchCommand, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { HttpResponse } from "@smithy/core/transport";
import { createAwsClients } from "../src/aws-clients.ts";

const { values: args } = parseArgs({
  options: { calls: { type: "string", default: "5000" }, runs: { type: "string", default: "3" } },
});
const calls = Number(args.calls);
const QUEUE_URL = "http://127.0.0.1:1/000000000000/bench";

const BODY = JSON.stringify({ account: "acct-1", data: "x".repeat(250) });
const messages = Array.from({ length: 10 }, (_, i) => ({
  MessageId: `9c0b6f5e-0000-4000-8000-${String(i).padStart(12, "0")}`,
  ReceiptHandle: `${"rh".repeat(80)}${i}`,
  // The client checks it, as it does against SQS.
  MD5OfBody: createHash("md5").update(BODY).digest("hex"),
  Body: BODY,
  Attributes: {
    SenderId: "AIDAIENQZJOLO23YVJ4VO",
    ApproximateFirstReceiveTimestamp: "1764590000000",
    ApproximateReceiveCount: "1",
    SentTimestamp: "1764590000000",
  },
}));
const answers: Record<string, string> = {
  ReceiveMessage: JSON.stringify({ Messages: messages }),
  DeleteMessageBatch: JSON.stringify({ Successful: messages.map((_, i) => ({ Id: String(i) })) }),
};

process.env.AWS_ACCESS_KEY_ID ??= "bench";
process.env.AWS_SECRET_ACCESS_KEY ??= "bench";
const { sqs } = createAwsClients({
  region: "us-east-1",
  sqsEndpoint: "http://127.0.0.1:1",
  s3Endpoint: undefined,
});
// Answers from memory: what is left is the SDK's own work (serialise, sign, parse, middleware).
sqs.config.requestHandler = {
  handle: async (request: { headers: Record<string, string> }) => {
    const operation = (request.headers["x-amz-target"] ?? "").split(".").pop() ?? "";
    const body = Readable.from([Buffer.from(answers[operation] ?? "{}")]);
    return {
      response: new HttpResponse({
        statusCode: 200,
        headers: { "content-type": "application/x-amz-json-1.0" },
        body,
      }),
    };
  },
} as unknown as typeof sqs.config.requestHandler;

const signal = new AbortController().signal;
const receive = () =>
  new ReceiveMessageCommand({
    QueueUrl: QUEUE_URL,
    MaxNumberOfMessages: 10,
    WaitTimeSeconds: 20,
    VisibilityTimeout: 60,
    MessageSystemAttributeNames: ["All"],
    MessageAttributeNames: ["All"],
  });
const remove = () =>
  new DeleteMessageBatchCommand({
    QueueUrl: QUEUE_URL,
    Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
  });
const cases: [string, () => Promise<unknown>][] = [
  ["DeleteMessageBatch(10), no options (cached middleware)", () => sqs.send(remove())],
  ["DeleteMessageBatch(10), { abortSignal }", () => sqs.send(remove(), { abortSignal: signal })],
  ["ReceiveMessage(10), no options (cached middleware)", () => sqs.send(receive())],
  ["ReceiveMessage(10), { abortSignal }", () => sqs.send(receive(), { abortSignal: signal })],
];

for (let run = 1; run <= Number(args.runs); run++) {
  for (const [label, call] of cases) {
    for (let i = 0; i < 500; i++) await call();
    const before = process.cpuUsage();
    for (let i = 0; i < calls; i++) await call();
    const cpu = process.cpuUsage(before);
    console.log(
      `run ${run}: ${label.padEnd(56)} ${((cpu.user + cpu.system) / calls).toFixed(1)} CPU µs/call`,
    );
  }
}

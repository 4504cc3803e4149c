/**
 * fauxqs (the SQS + S3 emulator) in a process of its own, so it shares no event loop with the
 * contenders. The orchestrator drives it over IPC: create a run's queue and bucket, fill or feed the
 * queue (through fauxqs's in-process API, so filling costs the contenders nothing), report its own
 * CPU and memory, and clean up after each run. Clients reach it on 127.0.0.1.
 */
import { GetQueueAttributesCommand, SQSClient } from "@aws-sdk/client-sqs";
import { type FauxqsServer, startFauxqs } from "fauxqs";
import type { EmulatorReply, EmulatorRequest, EmulatorResults } from "./lib/protocol.ts";
import { Traffic } from "./lib/traffic.ts";

const REGION = "us-east-1";
const server: FauxqsServer = await startFauxqs({ port: 0, logger: false });
const endpoint = `http://127.0.0.1:${server.port}`;
const sqs = new SQSClient({
  region: REGION,
  endpoint,
  useQueueUrlAsEndpoint: false,
  credentials: { accessKeyId: "bench", secretAccessKey: "bench" },
});

function send(reply: EmulatorReply): void {
  process.send?.(reply);
}

type Handlers = {
  [K in EmulatorRequest["op"]]: (r: Extract<EmulatorRequest, { op: K }>) => Promise<EmulatorResults[K]>;
};

const handlers: Handlers = {
  async setup({ queueName, bucket }) {
    const dlq = server.createQueue(`${queueName}-dlq`);
    const queue = server.createQueue(queueName, {
      attributes: {
        VisibilityTimeout: "60",
        RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlq.queueArn, maxReceiveCount: "5" }),
      },
    });
    server.createBucket(bucket);
    return { queueUrl: queue.queueUrl };
  },

  async fill({ queueName, traffic, count, returnIds }) {
    const startedAtMs = Date.now();
    const messages = new Traffic(traffic);
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const { messageId } = server.sendMessage(queueName, messages.next(Date.now()));
      if (returnIds) ids.push(messageId);
      // Yield now and then so IPC (and a long fill of big bodies) does not starve the loop.
      if (i % 5000 === 4999) await new Promise((r) => setImmediate(r));
    }
    return { count, ms: Date.now() - startedAtMs, ids };
  },

  async produce({ queueName, traffic, count, ratePerSec, maxBacklog }) {
    const startedAtMs = Date.now();
    const messages = new Traffic(traffic);
    const tickMs = 10;
    let lastDepthCheckMs = 0;
    let backlog = 0;
    while (messages.made < count) {
      let due = count - messages.made;
      if (ratePerSec !== undefined) {
        due = Math.min(due, Math.floor(((Date.now() - startedAtMs) * ratePerSec) / 1000) - messages.made);
      }
      if (maxBacklog !== undefined) {
        if (Date.now() - lastDepthCheckMs >= 100) {
          backlog = (await depth(queueName)).visible;
          lastDepthCheckMs = Date.now();
        }
        due = Math.min(due, maxBacklog - backlog, 2000);
      }
      for (let i = 0; i < due; i++) server.sendMessage(queueName, messages.next(Date.now()));
      if (due > 0) backlog += due;
      await new Promise((r) => setTimeout(r, tickMs));
    }
    return { count, ms: Date.now() - startedAtMs };
  },

  depth: ({ queueName }) => depth(queueName),

  async usage() {
    const cpu = process.cpuUsage();
    return { cpuSec: (cpu.user + cpu.system) / 1e6, rssBytes: process.memoryUsage.rss() };
  },

  async cleanup({ queueName, bucket }) {
    server.deleteQueue(queueName);
    server.deleteQueue(`${queueName}-dlq`);
    server.emptyBucket(bucket);
    return {};
  },
};

async function depth(queueName: string): Promise<EmulatorResults["depth"]> {
  const queueUrl = `${endpoint}/000000000000/${queueName}`;
  const out = await sqs.send(
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
  return {
    visible: Number(a.ApproximateNumberOfMessages ?? 0),
    inFlight: Number(a.ApproximateNumberOfMessagesNotVisible ?? 0),
    delayed: Number(a.ApproximateNumberOfMessagesDelayed ?? 0),
  };
}

process.on("message", (message: { id: number; request: EmulatorRequest }) => {
  const { id, request } = message;
  const handle = handlers[request.op] as (r: EmulatorRequest) => Promise<unknown>;
  handle(request).then(
    (result) => send({ kind: "reply", id, ok: true, result }),
    (err: unknown) => send({ kind: "reply", id, ok: false, error: (err as Error).stack ?? String(err) }),
  );
});
process.on("disconnect", () => {
  void server.stop().finally(() => process.exit(0));
});
send({ kind: "ready", endpoint });

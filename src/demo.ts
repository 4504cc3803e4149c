/**
 * The embedded default: fauxqs (SQS + S3 emulator) in this process, the configured queues (with
 * dead-letter queues and redrive policies) and buckets created, sample traffic for the sample
 * handlers across many accounts, a live progress line, and a summary of where everything went.
 *
 *   npm run demo -- [--messages 30000] [--accounts 500] [--forever]
 */
import { parseArgs } from "node:util";
import { CreateBucketCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { CreateQueueCommand, GetQueueAttributesCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { startFauxqs } from "fauxqs";
import { createAwsClients } from "./aws-clients.ts";
import { type Config, loadConfig, type QueueConfig, queueNameOf } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { createLogger } from "./logger.ts";
import { Metrics } from "./metrics.ts";
import { startOpsServer } from "./ops-server.ts";
import type { Relay } from "./relay.ts";
import { sendSampleTraffic } from "./sample-traffic.ts";
import { Service } from "./service.ts";
import { onShutdownSignal } from "./shutdown.ts";

const { values: args } = parseArgs({
  options: {
    messages: { type: "string", default: "30000" },
    accounts: { type: "string", default: "500" },
    forever: { type: "boolean", default: false },
  },
});
const totalMessages = Number(args.messages);
const accountCount = Number(args.accounts);
if (
  !Number.isInteger(totalMessages) ||
  totalMessages < 1 ||
  !Number.isInteger(accountCount) ||
  accountCount < 1
) {
  process.stderr.write("usage: npm run demo -- [--messages N>=1] [--accounts N>=1] [--forever]\n");
  process.exit(2);
}

const emulator = await startFauxqs({ port: 0, logger: false });
process.env.AWS_ENDPOINT_URL = emulator.address;
process.env.AWS_ACCESS_KEY_ID ??= "demo";
process.env.AWS_SECRET_ACCESS_KEY ??= "demo";

let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) process.stderr.write(`octorelay demo: ${err.message}\n`);
  await emulator.stop();
  throw err;
}
const log = createLogger(config.logLevel, { pretty: true });
const clients = createAwsClients(config.aws);
const urls = await createResources(clients.sqs, clients.s3, config.queues);
const service = new Service({ ...clients, log }, config);
const metrics = new Metrics(service, config.ops);
metrics.instrument(clients.sqs, "sqs");
metrics.instrument(clients.s3, "s3");
// The ops endpoints are part of the tour; a busy port (another octorelay) just means a free one.
const ops = await startOpsServer({ service, metrics, log }, config.ops).catch(() =>
  startOpsServer({ service, metrics, log }, { ...config.ops, port: 0 }),
);
await service.start();

const startedAtMs = Date.now();
let sent = 0;
const traffic = sendSampleTraffic(clients.sqs, config.queues, urls, {
  messages: totalMessages,
  accounts: accountCount,
  onSent: (n) => {
    sent += n;
  },
}).catch((err: unknown) => log.error({ err }, "demo traffic failed"));
const progress = setInterval(() => printProgress(false), 1000);
const exitCode = onShutdownSignal(service, log, config.shutdownDeadlineMs, () => ops.close());

if (!args.forever) {
  await traffic;
  await untilSettled(service.relays);
  process.kill(process.pid, "SIGTERM");
}
const code = await exitCode;
clearInterval(progress);
printProgress(true);
await printSummary(clients.s3, config.queues, service.relays);
await emulator.stop();
process.exit(code);

/** Queues with their dead-letter queues and redrive policies, and the buckets, as config names them. */
async function createResources(
  sqs: SQSClient,
  s3: S3Client,
  queues: QueueConfig[],
): Promise<Map<string, string>> {
  const urls = new Map<string, string>();
  for (const q of queues) {
    const attributes: Record<string, string> = { VisibilityTimeout: String(q.visibilityTimeoutSec) };
    if (q.deadLetterQueue) {
      const dlq = await sqs.send(new CreateQueueCommand({ QueueName: queueNameOf(q.deadLetterQueue) }));
      const arn = await sqs.send(
        new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ["QueueArn"] }),
      );
      attributes.RedrivePolicy = JSON.stringify({
        deadLetterTargetArn: arn.Attributes?.QueueArn,
        maxReceiveCount: "5",
      });
    }
    const created = await sqs.send(new CreateQueueCommand({ QueueName: q.name, Attributes: attributes }));
    urls.set(q.name, created.QueueUrl as string);
  }
  for (const bucket of new Set(queues.map((q) => q.destination.bucket))) {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  }
  return urls;
}

/** Every message sent has been deleted (delivered, filtered out or dead-lettered). */
async function untilSettled(relays: Relay[]): Promise<void> {
  while (relays.reduce((n, r) => n + r.stats.deleted, 0) < sent) {
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function totals(relays: Relay[]) {
  const sum = (pick: (r: Relay) => number) => relays.reduce((n, r) => n + pick(r), 0);
  return {
    received: sum((r) => r.stats.received),
    handled: sum((r) => r.stats.handled),
    flushed: sum((r) => r.stats.flushedRecords),
    objects: sum((r) => r.stats.flushes),
    deleted: sum((r) => r.stats.deleted),
    deadLettered: sum((r) => r.stats.deadLettered),
    dispatchers: sum((r) => r.activeDispatchers),
    unacked: sum((r) => r.unacked),
  };
}

function printProgress(final: boolean): void {
  const t = totals(service.relays);
  const seconds = (Date.now() - startedAtMs) / 1000;
  const line =
    `[${seconds.toFixed(1).padStart(6)}s] sent ${sent} | received ${t.received} handled ${t.handled} ` +
    `flushed ${t.flushed} (${t.objects} objects) deleted ${t.deleted} dead-lettered ${t.deadLettered} | ` +
    `un-acked ${t.unacked} dispatchers ${t.dispatchers} | ${Math.round(t.deleted / Math.max(seconds, 0.001))} msg/s`;
  if (process.stdout.isTTY && !final) process.stdout.write(`\r${line}\x1b[K`);
  else process.stdout.write(`${process.stdout.isTTY ? "\r" : ""}${line}\n`);
}

async function printSummary(s3: S3Client, queues: QueueConfig[], relays: Relay[]): Promise<void> {
  const out: string[] = ["", "Where it went:"];
  for (const [i, q] of queues.entries()) {
    const stats = relays[i]?.stats;
    const perAccount = new Map<string, number>();
    let objects = 0;
    let token: string | undefined;
    do {
      const page = await s3.send(
        new ListObjectsV2Command({
          Bucket: q.destination.bucket,
          Prefix: `${q.name}/`,
          ContinuationToken: token,
        }),
      );
      for (const o of page.Contents ?? []) {
        objects++;
        const account = (o.Key as string).split("/")[1] as string;
        perAccount.set(account, (perAccount.get(account) ?? 0) + 1);
      }
      token = page.NextContinuationToken;
    } while (token);
    const top = [...perAccount.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3);
    out.push(
      `  ${q.name} (${q.handlerPath.split("/").pop()}): ${stats?.received ?? 0} received, ${stats?.outputs ?? 0} outputs ` +
        `→ ${objects} objects for ${perAccount.size} accounts in s3://${q.destination.bucket}/${q.name}/; ` +
        `${stats?.deadLettered ?? 0} dead-lettered to ${q.deadLetterQueue || "(none)"}; ${stats?.deleted ?? 0} deleted`,
      `      busiest accounts: ${top.map(([a, n]) => `${a} (${n} objects)`).join(", ") || "none"}`,
    );
  }
  const seconds = (Date.now() - startedAtMs) / 1000;
  const t = totals(relays);
  out.push(
    `  ${t.deleted} messages settled in ${seconds.toFixed(1)} s: ${Math.round(t.deleted / seconds)} msg/s`,
    "",
  );
  process.stdout.write(`${out.join("\n")}\n`);
}

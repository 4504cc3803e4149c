/**
 * `traffic` command: sends sample traffic to the configured queues (LocalStack's compose file runs
 * it beside the service), then exits.
 *
 *   node dist/traffic-cli.js [--messages 3000] [--accounts 200]
 */
import { parseArgs } from "node:util";
import { GetQueueUrlCommand } from "@aws-sdk/client-sqs";
import { createAwsClients } from "./aws-clients.ts";
import { loadConfig } from "./config.ts";
import { sendSampleTraffic } from "./sample-traffic.ts";

const { values } = parseArgs({
  options: { messages: { type: "string", default: "3000" }, accounts: { type: "string", default: "200" } },
});
const config = loadConfig();
const { sqs } = createAwsClients(config.aws);
const urls = new Map<string, string>();
for (const q of config.queues) {
  const url = /^https?:\/\//.test(q.queue)
    ? q.queue
    : (await sqs.send(new GetQueueUrlCommand({ QueueName: q.queue }))).QueueUrl;
  urls.set(q.name, url as string);
}
let sent = 0;
await sendSampleTraffic(sqs, config.queues, urls, {
  messages: Number(values.messages),
  accounts: Number(values.accounts),
  onSent: (n) => {
    sent += n;
  },
});
process.stdout.write(`sent ${sent} sample messages to ${config.queues.map((q) => q.name).join(", ")}\n`);

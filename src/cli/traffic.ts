/**
 * `octorelay traffic`: sends sample traffic to the configured queues (LocalStack's compose file runs
 * it beside the service), then exits. `node dist/traffic-cli.js …` runs the same command.
 */
import { GetQueueUrlCommand } from "@aws-sdk/client-sqs";
import { createAwsClients } from "../aws-clients.ts";
import { loadConfig } from "../config.ts";
import { countMalformed, sendSampleTraffic } from "./sample-traffic.ts";

export async function traffic(options: {
  messages: number;
  accounts: number;
  config?: string | undefined;
}): Promise<number> {
  const config = loadConfig(options.config ? { files: [options.config] } : {});
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
    messages: options.messages,
    accounts: options.accounts,
    onSent: (n) => {
      sent += n;
    },
  });
  const malformed = countMalformed(config.queues, options.messages);
  process.stdout.write(
    `sent ${sent} sample messages to ${config.queues.map((q) => q.name).join(", ")}` +
      `${malformed > 0 ? ` (${malformed} malformed on purpose, to show the dead-letter path)` : ""}\n`,
  );
  return 0;
}

/**
 * Sample traffic for the sample handlers (the demo, and LocalStack's compose file): order events,
 * clicks and partner events across many accounts, a few of them malformed to show the dead-letter path.
 */
import { SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { QueueConfig } from "./config.ts";

export interface TrafficOptions {
  messages: number;
  /** Distinct accounts per kind of partner; drawn Zipf-like, so a few get most of the traffic. */
  accounts: number;
  onSent?: (count: number) => void;
}

function pickAccount(prefix: string, accounts: number): string {
  const rank = Math.floor(accounts ** Math.random());
  return `${prefix}-${String(rank).padStart(4, "0")}`;
}

/** A sample body for a queue, shaped for the handler the sample config gives it. */
export function sampleBody(handler: string, n: number, accounts: number): string {
  if (handler.endsWith("order-events.ts")) {
    const affiliates = n % 3 === 0 ? [{ account: pickAccount("affiliate", accounts), rate: 0.05 }] : [];
    return JSON.stringify({
      orderId: `o-${n}`,
      merchant: pickAccount("merchant", accounts),
      total: Math.round(Math.random() * 50_000) / 100,
      currency: "EUR",
      affiliates,
      test: n % 50 === 0,
    });
  }
  if (handler.endsWith("click-filter.ts")) {
    const bot = n % 10 === 0;
    return JSON.stringify({
      type: n % 7 === 0 ? "pageview" : "click",
      partner: pickAccount("adnet", accounts),
      campaign: `c-${n % 40}`,
      userAgent: bot ? "Googlebot/2.1" : "Mozilla/5.0",
      ts: Date.now(),
    });
  }
  // One in a thousand is not JSON, to show the dead-letter path.
  if (n % 1000 === 999) return "{this is not json";
  return JSON.stringify({ account: pickAccount("partner", accounts), event: "signup", n });
}

/** Sends `messages` in batches of 10, round-robin over the queues, 8 senders in parallel. */
export async function sendSampleTraffic(
  sqs: SQSClient,
  queues: QueueConfig[],
  urls: Map<string, string>,
  options: TrafficOptions,
): Promise<void> {
  const batches: { url: string; handler: string; from: number; count: number }[] = [];
  for (let planned = 0, from = 0; planned < options.messages; from += 10) {
    for (const q of queues) {
      const count = Math.min(10, options.messages - planned);
      if (count <= 0) break;
      batches.push({ url: urls.get(q.name) as string, handler: q.handlerPath, from, count });
      planned += count;
    }
  }
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let batch = batches[next++]; batch; batch = batches[next++]) {
        const { url, handler, from, count } = batch;
        await sqs.send(
          new SendMessageBatchCommand({
            QueueUrl: url,
            Entries: Array.from({ length: count }, (_, i) => ({
              Id: String(i),
              MessageBody: sampleBody(handler, from + i, options.accounts),
            })),
          }),
        );
        options.onSent?.(count);
      }
    }),
  );
}

/**
 * Sample traffic for the sample handlers (the demo, and LocalStack's compose file): order events,
 * clicks and partner events across many accounts, a few of them malformed on purpose to show the
 * dead-letter path.
 */
import { SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { QueueConfig } from "../config.ts";

/** One body in this many, on queues without a sample shape of their own, is not JSON. */
export const MALFORMED_EVERY = 1000;

export interface TrafficOptions {
  messages: number;
  /** Distinct accounts per kind of partner; drawn Zipf-like, so a few get most of the traffic. */
  accounts: number;
  onSent?: (count: number) => void;
  /** Told the SQS message id of each body sent malformed on purpose. */
  onMalformed?: (messageId: string) => void;
  /** Stops sending (batches already sent stay sent). */
  signal?: AbortSignal;
}

function pickAccount(prefix: string, accounts: number): string {
  const rank = Math.floor(accounts ** Math.random());
  return `${prefix}-${String(rank).padStart(4, "0")}`;
}

/** Whether body `n` for `handler` is one of the deliberately malformed ones. */
export function isMalformedSample(handler: string, n: number): boolean {
  return (
    !handler.endsWith("order-events.ts") &&
    !handler.endsWith("click-filter.ts") &&
    n % MALFORMED_EVERY === MALFORMED_EVERY - 1
  );
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
  if (isMalformedSample(handler, n)) return "{this is not json";
  return JSON.stringify({ account: pickAccount("partner", accounts), event: "signup", n });
}

interface PlannedBatch {
  url: string;
  handler: string;
  from: number;
  count: number;
}

/** `messages` in batches of 10, round-robin over the queues. */
function plan(queues: QueueConfig[], urls: Map<string, string>, messages: number): PlannedBatch[] {
  const batches: PlannedBatch[] = [];
  for (let planned = 0, from = 0; planned < messages; from += 10) {
    for (const q of queues) {
      const count = Math.min(10, messages - planned);
      if (count <= 0) break;
      batches.push({ url: urls.get(q.name) as string, handler: q.handlerPath, from, count });
      planned += count;
    }
  }
  return batches;
}

/** How many of the bodies `sendSampleTraffic` would send are malformed on purpose. */
export function countMalformed(queues: QueueConfig[], messages: number): number {
  let malformed = 0;
  for (const b of plan(queues, new Map(), messages)) {
    for (let i = 0; i < b.count; i++) if (isMalformedSample(b.handler, b.from + i)) malformed++;
  }
  return malformed;
}

/** Sends `messages` in batches of 10, round-robin over the queues, 8 senders in parallel. */
export async function sendSampleTraffic(
  sqs: SQSClient,
  queues: QueueConfig[],
  urls: Map<string, string>,
  options: TrafficOptions,
): Promise<void> {
  const batches = plan(queues, urls, options.messages);
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let batch = batches[next++]; batch && !options.signal?.aborted; batch = batches[next++]) {
        const { url, handler, from, count } = batch;
        const sent = await sqs.send(
          new SendMessageBatchCommand({
            QueueUrl: url,
            Entries: Array.from({ length: count }, (_, i) => ({
              Id: String(i),
              MessageBody: sampleBody(handler, from + i, options.accounts),
            })),
          }),
        );
        if (sent.Failed?.length) {
          throw new Error(
            `SendMessageBatch to ${url}: ${sent.Failed.length} of ${count} entries failed: ${sent.Failed[0]?.Message ?? sent.Failed[0]?.Code}`,
          );
        }
        for (const entry of sent.Successful ?? []) {
          if (entry.MessageId && isMalformedSample(handler, from + Number(entry.Id))) {
            options.onMalformed?.(entry.MessageId);
          }
        }
        options.onSent?.(count);
      }
    }),
  );
}

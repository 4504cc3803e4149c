import type { SQSClient } from "@aws-sdk/client-sqs";
import { describe, expect } from "vitest";
import { createAwsClients } from "../../src/aws-clients.ts";
import {
  createQueue,
  queueDepth,
  readDelivered,
  receiveAll,
  sendBodies,
  type TestQueue,
  waitFor,
} from "../helpers/emulator.ts";
import { it } from "../helpers/fixtures.ts";
import { sampleHandler } from "../helpers/service.ts";

/** One queue of the service's config: a sample handler, its dead-letter queue, a short long poll. */
function queueOf(q: TestQueue, handler: string) {
  return {
    queue: q.name,
    handler: sampleHandler(handler),
    deadLetterQueue: q.dlqName,
    waitTimeSec: 1,
    visibilityTimeoutSec: 30,
  };
}

/** The service's config: these queues, delivering to `bucket`, flushing fast. */
function relayTo(bucket: string, ...queues: ReturnType<typeof queueOf>[]) {
  return { dispatch: { flushIntervalMs: 200, emptyFlushLimit: 3 }, destination: { bucket }, queues };
}

describe("relay end to end (real SDK clients against the emulator)", () => {
  it("delivers N messages across M accounts to S3 under each account's prefix, each exactly once, and empties the queue", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
  }) => {
    const N = 600;
    const M = 37;
    const bodies = Array.from({ length: N }, (_, n) => ({ account: `acct-${n % M}`, n }));
    const ids = await sendBodies(emu, q.url, bodies);
    const service = await startService(relayTo(bucket, queueOf(q, "passthrough.ts")));
    const relay = service.relays[0];
    await waitFor("every message deleted", () => relay?.stats.deleted === N);

    const records = await readDelivered(emu, bucket);
    expect(records).toHaveLength(N);
    expect(new Set(records.map((r) => r.id))).toEqual(new Set(ids));
    for (const r of records) {
      const body = r.payload as { account: string; n: number };
      expect(r.account).toBe(body.account);
      expect(r.queue).toBe(q.name);
      expect(r.key.startsWith(`${q.name}/${r.account}/`)).toBe(true);
      expect(ids[body.n]).toBe(r.id);
    }
    expect(new Set(records.map((r) => r.account)).size).toBe(M);
    expect(await queueDepth(emu, q.url)).toBe(0);
    expect(await receiveAll(emu, q.dlqUrl)).toHaveLength(0);
  });

  it("long polls go through a client of their own; every other SQS call is sent without per-call options, so the SDK's cached middleware serves it", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
  }) => {
    const clients = createAwsClients({
      region: emu.region,
      sqsEndpoint: emu.endpoint,
      s3Endpoint: emu.endpoint,
    });
    // What each client is asked to send, and whether with options (any options, an abort signal
    // included, make the SDK resolve the middleware stack afresh and drop its cached one).
    const sent = (client: SQSClient) => {
      const calls: { command: string; options: boolean }[] = [];
      const send = client.send.bind(client) as (...args: unknown[]) => Promise<unknown>;
      (client as { send: unknown }).send = (command: object, ...rest: unknown[]) => {
        calls.push({ command: command.constructor.name, options: rest[0] !== undefined });
        return send(command, ...rest);
      };
      return calls;
    };
    const pipeline = sent(clients.sqs);
    const polls = sent(clients.sqsPolls);
    const N = 50;
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: N }, (_, n) => ({ account: `acct-${n % 3}`, n })),
    );
    const service = await startService(relayTo(bucket, queueOf(q, "passthrough.ts")), {
      sqs: clients.sqs,
      sqsPolls: clients.sqsPolls,
      s3: clients.s3,
    });
    const relay = service.relays[0];
    await waitFor("every message deleted", () => relay?.stats.deleted === N);

    expect(await readDelivered(emu, bucket)).toHaveLength(N);
    expect(new Set(polls.map((c) => c.command))).toEqual(new Set(["ReceiveMessageCommand"]));
    const hot = pipeline.filter((c) => c.command === "DeleteMessageBatchCommand");
    expect(hot.length).toBeGreaterThanOrEqual(N / 10);
    expect(pipeline.filter((c) => c.command === "ReceiveMessageCommand")).toEqual([]);
    expect(pipeline.filter((c) => c.options)).toEqual([]);
  });

  it("fans one order out to the merchant and each affiliate, and deletes it only once all are delivered", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
  }) => {
    const orders = Array.from({ length: 40 }, (_, n) => ({
      orderId: `o-${n}`,
      merchant: `merchant-${n % 4}`,
      total: 100,
      currency: "EUR",
      affiliates: [
        { account: `aff-${n % 3}`, rate: 0.1 },
        { account: "aff-global", rate: 0.01 },
      ],
    }));
    const ids = await sendBodies(emu, q.url, orders);
    const service = await startService(relayTo(bucket, queueOf(q, "order-events.ts")));
    const relay = service.relays[0];
    await waitFor("every order deleted", () => relay?.stats.deleted === orders.length);

    const records = await readDelivered(emu, bucket);
    expect(records).toHaveLength(orders.length * 3);
    for (const id of ids) {
      const forMessage = records.filter((r) => r.id === id);
      expect(forMessage.map((r) => (r.payload as { type: string }).type).sort()).toEqual([
        "commission",
        "commission",
        "order",
      ]);
      expect(new Set(forMessage.map((r) => r.account)).size).toBe(3);
    }
    const global = records.filter((r) => r.account === "aff-global");
    expect(global).toHaveLength(orders.length);
    expect(global.every((r) => (r.payload as { amount: number }).amount === 1)).toBe(true);
    expect(await queueDepth(emu, q.url)).toBe(0);
  });

  it("deletes a message whose handler returns nothing, and writes nothing for it", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
  }) => {
    const testOrders = Array.from({ length: 25 }, (_, n) => ({
      orderId: `t-${n}`,
      merchant: "acme",
      total: 1,
      currency: "EUR",
      test: true,
    }));
    const realOrder = { orderId: "real", merchant: "acme", total: 5, currency: "EUR" };
    await sendBodies(emu, q.url, [...testOrders, realOrder]);
    const service = await startService(relayTo(bucket, queueOf(q, "order-events.ts")));
    const relay = service.relays[0];
    await waitFor("all 26 deleted", () => relay?.stats.deleted === 26);
    const records = await readDelivered(emu, bucket);
    expect(records.map((r) => (r.payload as { orderId: string }).orderId)).toEqual(["real"]);
    expect(relay?.stats.handled).toBe(26);
    expect(await queueDepth(emu, q.url)).toBe(0);
  });

  it("runs two queues with different handlers at once, each to its own prefix", async ({
    emulator: emu,
    bucket,
    startService,
  }) => {
    const orders = await createQueue(emu, { prefix: "orders" });
    const events = await createQueue(emu, { prefix: "events" });
    await sendBodies(
      emu,
      orders.url,
      Array.from({ length: 30 }, (_, n) => ({
        orderId: `o-${n}`,
        merchant: `m-${n % 2}`,
        total: 10,
        currency: "USD",
      })),
    );
    await sendBodies(
      emu,
      events.url,
      Array.from({ length: 50 }, (_, n) => ({ account: `e-${n % 5}`, n })),
    );
    const service = await startService(
      relayTo(bucket, queueOf(orders, "order-events.ts"), queueOf(events, "passthrough.ts")),
    );
    await waitFor(
      "both queues drained",
      () => service?.relays[0]?.stats.deleted === 30 && service.relays[1]?.stats.deleted === 50,
    );
    const fromOrders = await readDelivered(emu, bucket, `${orders.name}/`);
    const fromEvents = await readDelivered(emu, bucket, `${events.name}/`);
    expect(fromOrders).toHaveLength(30);
    expect(fromOrders.every((r) => (r.payload as { type: string }).type === "order")).toBe(true);
    expect(fromEvents).toHaveLength(50);
    expect(new Set(fromEvents.map((r) => r.account))).toEqual(new Set(["e-0", "e-1", "e-2", "e-3", "e-4"]));
  });

  it("sends a body that is not JSON to the dead-letter queue with the reason, and delivers the good ones beside it", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
  }) => {
    const good = Array.from({ length: 9 }, (_, n) => ({ account: "acme", n }));
    const ids = await sendBodies(emu, q.url, ["{not json", ...good]);
    const service = await startService(relayTo(bucket, queueOf(q, "passthrough.ts")));
    await waitFor("all 10 deleted", () => service?.relays[0]?.stats.deleted === 10);
    const dead = await receiveAll(emu, q.dlqUrl);
    expect(dead).toHaveLength(1);
    expect(dead[0]?.Body).toBe("{not json");
    expect(dead[0]?.MessageAttributes?.["octorelay.reason"]?.StringValue).toMatch(/not valid JSON/);
    expect(dead[0]?.MessageAttributes?.["octorelay.sourceMessageId"]?.StringValue).toBe(ids[0]);
    expect(await readDelivered(emu, bucket)).toHaveLength(9);
    expect(await queueDepth(emu, q.url)).toBe(0);
  });
});

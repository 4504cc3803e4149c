import { GetQueueAttributesCommand, GetQueueUrlCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { pino } from "pino";
import { describe, expect, it, vi } from "vitest";
import { resolveQueue } from "../../src/pipeline/queue-resolution.ts";

const log = pino({ level: "silent" });
const BASE = "http://sqs.local/000000000000";

interface FakeQueue {
  url?: string;
  attributes?: Record<string, string>;
  /** GetQueueAttributes throws this. */
  attributesError?: Error;
}

/** An SQS client knowing `queues` by name; answers GetQueueUrl and GetQueueAttributes only. */
function fakeSqs(queues: Record<string, FakeQueue>) {
  const byUrl = (url: string | undefined) =>
    Object.entries(queues).find(([name, q]) => (q.url ?? `${BASE}/${name}`) === url)?.[1];
  const send = vi.fn(async (command: unknown) => {
    if (command instanceof GetQueueUrlCommand) {
      const q = queues[command.input.QueueName ?? ""];
      if (!q)
        throw Object.assign(new Error("The specified queue does not exist."), { name: "QueueDoesNotExist" });
      return { QueueUrl: "url" in q ? q.url : `${BASE}/${command.input.QueueName}` };
    }
    if (command instanceof GetQueueAttributesCommand) {
      const q = byUrl(command.input.QueueUrl);
      if (!q) throw new Error(`unknown queue ${command.input.QueueUrl}`);
      if (q.attributesError) throw q.attributesError;
      const names = command.input.AttributeNames ?? [];
      return {
        Attributes: Object.fromEntries(
          Object.entries(q.attributes ?? {}).filter(([k]) => names.includes(k as never)),
        ),
      };
    }
    throw new Error(`unexpected command ${(command as object).constructor.name}`);
  });
  return { sqs: { send } as unknown as SQSClient, send };
}

const redrive = (target: string, maxReceiveCount: string | number) =>
  JSON.stringify({ deadLetterTargetArn: `arn:aws:sqs:eu-west-1:000000000000:${target}`, maxReceiveCount });

const commands = (send: ReturnType<typeof fakeSqs>["send"]) =>
  send.mock.calls.map(
    ([c]) => `${(c as object).constructor.name} ${JSON.stringify((c as { input: unknown }).input)}`,
  );

describe("resolveQueue", () => {
  it("finds the queue by name, its redrive policy's dead-letter queue by ARN, and that queue's size limit", async () => {
    const { sqs, send } = fakeSqs({
      orders: { attributes: { RedrivePolicy: redrive("orders-dlq", "3") } },
      "orders-dlq": { attributes: { MaximumMessageSize: "262144" } },
    });
    await expect(resolveQueue({ sqs, log }, { queue: "orders", deadLetterQueue: "" })).resolves.toEqual({
      queueUrl: `${BASE}/orders`,
      maxReceiveCount: 3,
      deadLetterQueueUrl: `${BASE}/orders-dlq`,
      deadLetterMaxBytes: 262_144,
    });
    // The ARN's account goes with the name, for a dead-letter queue owned by another account.
    expect(commands(send)).toContain(
      `GetQueueUrlCommand ${JSON.stringify({ QueueName: "orders-dlq", QueueOwnerAWSAccountId: "000000000000" })}`,
    );
  });

  it("takes a URL as it is and prefers the configured deadLetterQueue over the redrive target", async () => {
    const { sqs, send } = fakeSqs({
      orders: { attributes: { RedrivePolicy: redrive("orders-dlq", 5) } },
      "orders-dlq": {},
      poison: { attributes: { MaximumMessageSize: "1048576" } },
    });
    const resolved = await resolveQueue({ sqs, log }, { queue: `${BASE}/orders`, deadLetterQueue: "poison" });
    expect(resolved).toEqual({
      queueUrl: `${BASE}/orders`,
      maxReceiveCount: 5,
      deadLetterQueueUrl: `${BASE}/poison`,
      deadLetterMaxBytes: 1_048_576,
    });
    const urlLookups = send.mock.calls.filter(([c]) => c instanceof GetQueueUrlCommand);
    expect(urlLookups.map(([c]) => (c as GetQueueUrlCommand).input.QueueName)).toEqual(["poison"]);
  });

  it("without a redrive policy or deadLetterQueue: no dead-letter queue, no size lookup", async () => {
    const { sqs, send } = fakeSqs({ orders: {} });
    await expect(resolveQueue({ sqs, log }, { queue: "orders", deadLetterQueue: "" })).resolves.toEqual({
      queueUrl: `${BASE}/orders`,
      maxReceiveCount: undefined,
      deadLetterQueueUrl: "",
      deadLetterMaxBytes: undefined,
    });
    expect(send).toHaveBeenCalledTimes(2);
  });

  it("goes on with SQS's 1 MiB (undefined) when the dead-letter queue's size cannot be read", async () => {
    const { sqs } = fakeSqs({
      orders: {},
      poison: { attributesError: Object.assign(new Error("not authorized"), { name: "AccessDenied" }) },
    });
    const resolved = await resolveQueue({ sqs, log }, { queue: "orders", deadLetterQueue: "poison" });
    expect(resolved.deadLetterQueueUrl).toBe(`${BASE}/poison`);
    expect(resolved.deadLetterMaxBytes).toBeUndefined();
  });

  it("ignores a MaximumMessageSize that is not a positive integer", async () => {
    const { sqs } = fakeSqs({ orders: {}, poison: { attributes: { MaximumMessageSize: "lots" } } });
    const resolved = await resolveQueue({ sqs, log }, { queue: "orders", deadLetterQueue: "poison" });
    expect(resolved.deadLetterMaxBytes).toBeUndefined();
  });

  it("leaves the dead-letter queue out when SQS gives no URL for the redrive target", async () => {
    const { sqs } = fakeSqs({
      orders: { attributes: { RedrivePolicy: redrive("gone-dlq", 4) } },
      "gone-dlq": { url: "" },
    });
    const resolved = await resolveQueue({ sqs, log }, { queue: "orders", deadLetterQueue: "" });
    expect(resolved).toMatchObject({
      maxReceiveCount: 4,
      deadLetterQueueUrl: "",
      deadLetterMaxBytes: undefined,
    });
  });

  it("refuses to start when the queue has no URL, naming it", async () => {
    const { sqs } = fakeSqs({ orders: { url: "" } });
    await expect(resolveQueue({ sqs, log }, { queue: "orders", deadLetterQueue: "" })).rejects.toThrow(
      "GetQueueUrl returned no URL for orders",
    );
  });

  it("passes on SQS's error for a queue that does not exist", async () => {
    const { sqs } = fakeSqs({});
    await expect(resolveQueue({ sqs, log }, { queue: "orders", deadLetterQueue: "" })).rejects.toMatchObject({
      name: "QueueDoesNotExist",
    });
  });

  it("refuses a RedrivePolicy that is not JSON, naming the queue and the attribute", async () => {
    const { sqs } = fakeSqs({ orders: { attributes: { RedrivePolicy: "{maxReceiveCount: 3" } } });
    await expect(resolveQueue({ sqs, log }, { queue: "orders", deadLetterQueue: "" })).rejects.toThrow(
      `queue ${BASE}/orders: its RedrivePolicy attribute is not JSON`,
    );
  });
});

import {
  type Message,
  type MessageAttributeValue,
  SendMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { pino } from "pino";
import { describe, expect, it, vi } from "vitest";
import {
  DeadLetter,
  MIN_REASON_BYTES,
  sqsMessageBytes,
  truncateUtf8,
} from "../../src/pipeline/dead-letter.ts";
import { countedEvents } from "../helpers/relay-events.ts";

const MiB = 1_048_576;
const DLQ_URL = "http://sqs.local/000000000000/orders-dlq";

/**
 * How SQS sizes a message against MaximumMessageSize, written out here independently of the code
 * under test: the body, and each attribute's name, DataType and value (raw bytes for a binary one).
 */
function sizeAsSqsCounts(body: string, attributes: Record<string, MessageAttributeValue>): number {
  let bytes = Buffer.byteLength(body);
  for (const [name, a] of Object.entries(attributes)) {
    bytes += Buffer.byteLength(name) + Buffer.byteLength(a.DataType ?? "");
    bytes +=
      a.StringValue !== undefined ? Buffer.byteLength(a.StringValue) : (a.BinaryValue?.byteLength ?? 0);
  }
  return bytes;
}

/** Refuses a SendMessage the way SQS does: size, attribute count, empty values, invalid characters. */
function fakeSqs(maxBytes = MiB) {
  const sent: { body: string; attributes: Record<string, MessageAttributeValue> }[] = [];
  const refused: string[] = [];
  const invalid = (code: string, message: string) => {
    refused.push(message);
    return Object.assign(new Error(message), { name: code, $fault: "client" });
  };
  const send = vi.fn(async (command: unknown) => {
    if (!(command instanceof SendMessageCommand)) throw new Error("unexpected command");
    const { MessageBody: body = "", MessageAttributes: attributes = {}, QueueUrl } = command.input;
    expect(QueueUrl).toBe(DLQ_URL);
    if (Object.keys(attributes).length > 10) {
      throw invalid(
        "InvalidParameterValue",
        "Number of message attributes [11] exceeds the allowed maximum [10].",
      );
    }
    for (const [name, a] of Object.entries(attributes)) {
      if (a.StringValue === "" || (a.StringValue === undefined && !a.BinaryValue)) {
        throw invalid(
          "InvalidParameterValue",
          `Message (user) attribute '${name}' must contain a non-empty value`,
        );
      }
      if (a.StringValue && /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u.test(a.StringValue)) {
        throw invalid("InvalidMessageContents", `Message (user) attribute '${name}' has invalid characters`);
      }
    }
    if (sizeAsSqsCounts(body, attributes) > maxBytes) {
      throw invalid(
        "InvalidParameterValue",
        `One or more parameters are invalid. Reason: Message must be shorter than ${maxBytes} bytes.`,
      );
    }
    sent.push({ body, attributes });
    return { MessageId: `dlq-${sent.length}`, $metadata: {} };
  });
  return { client: { send } as unknown as SQSClient, send, sent, refused };
}

function setup(options: { maxMessageBytes?: number; sqsMaxBytes?: number } = {}) {
  const sqs = fakeSqs(options.sqsMaxBytes ?? options.maxMessageBytes ?? MiB);
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: "debug" }, { write: (line: string) => lines.push(JSON.parse(line)) });
  const { events, stats } = countedEvents();
  const deadLetter = new DeadLetter(
    { sqs: sqs.client, log, events },
    { queue: "orders", deadLetterQueueUrl: DLQ_URL, maxMessageBytes: options.maxMessageBytes },
  );
  return { deadLetter, sqs, stats, lines };
}

const attr = (value: string): MessageAttributeValue => ({ DataType: "String", StringValue: value });
const poison = (body: string, attributes: Record<string, MessageAttributeValue> = {}): Message => ({
  MessageId: "0f9b6c1e-5d3a-4c4e-9a51-2b7c1e0d8f42",
  ReceiptHandle: "rh",
  Body: body,
  MessageAttributes: attributes,
});
const REASON_4K = `body is not valid JSON: ${"Unexpected token ".repeat(300)}`.slice(0, 4096);
const reasonOf = (a: Record<string, MessageAttributeValue>) => a["octorelay.reason"]?.StringValue;

describe("DeadLetter.send fits the copy to SQS's 1 MiB (body + attribute names, types and values)", () => {
  it("sends a small message with the whole reason, the source and every sender attribute", async () => {
    const { deadLetter, sqs, stats, lines } = setup();
    const message = poison('{"broken', { tenant: attr("acme"), trace: attr("t-1") });
    expect(await deadLetter.send(message, "body is not valid JSON")).toBe(true);
    expect(sqs.sent).toHaveLength(1);
    const [copy] = sqs.sent;
    expect(copy?.body).toBe('{"broken');
    expect(copy?.attributes).toEqual({
      tenant: attr("acme"),
      trace: attr("t-1"),
      "octorelay.reason": attr("body is not valid JSON"),
      "octorelay.sourceQueue": attr("orders"),
      "octorelay.sourceMessageId": attr(message.MessageId as string),
    });
    expect(stats.deadLettered).toBe(1);
    expect(stats.deadLetterTrimmed).toBe(0);
    expect(lines.some((l) => l.level === 40 && String(l.msg).includes("trimmed"))).toBe(false);
  });

  it.each([
    ["1 MiB − 8,000 B of ASCII: all fits as is", MiB - 8_000, "ascii", false, []],
    [
      "1 MiB − 2,000 B: the reason is cut to what is left, sender attributes kept",
      MiB - 2_000,
      "ascii",
      true,
      [],
    ],
    [
      "1 MiB − 400 B: the largest sender attribute goes, then the reason fits",
      MiB - 400,
      "ascii",
      true,
      ["trace"],
    ],
    [
      "1 MiB − 600 B of two-byte characters (UTF-8 is counted, not characters)",
      MiB - 600,
      "two-byte",
      true,
      ["trace"],
    ],
  ] as const)("%s", async (_what, bodyBytes, kind, shortened, dropped) => {
    const { deadLetter, sqs, stats, lines } = setup();
    const body = kind === "ascii" ? "x".repeat(bodyBytes) : "é".repeat(bodyBytes / 2);
    expect(Buffer.byteLength(body)).toBe(bodyBytes);
    const message = poison(body, { trace: attr("t".repeat(1_500)), tenant: attr("acme") });
    expect(await deadLetter.send(message, REASON_4K)).toBe(true);
    expect(sqs.refused).toEqual([]);
    const copy = sqs.sent[0] as (typeof sqs.sent)[number];
    expect(copy.body === body).toBe(true);
    expect(sizeAsSqsCounts(copy.body, copy.attributes)).toBeLessThanOrEqual(MiB);
    const reason = reasonOf(copy.attributes) as string;
    expect(Buffer.byteLength(reason)).toBeGreaterThanOrEqual(MIN_REASON_BYTES);
    expect(REASON_4K.startsWith(reason.replace(/…$/, ""))).toBe(true);
    expect(reason !== REASON_4K).toBe(shortened);
    expect(copy.attributes["octorelay.sourceQueue"]).toEqual(attr("orders"));
    expect(copy.attributes["octorelay.sourceMessageId"]).toEqual(attr(message.MessageId as string));
    for (const name of ["trace", "tenant"]) {
      expect(name in copy.attributes, name).toBe(!(dropped as readonly string[]).includes(name));
    }
    expect(stats.deadLetterTrimmed).toBe(shortened ? 1 : 0);
    const warn = lines.find((l) => String(l.msg).startsWith("dead-lettered copy trimmed"));
    if (shortened) expect(warn).toMatchObject({ level: 40, dropped, messageId: message.MessageId });
    else expect(warn).toBeUndefined();
  });

  it.each([
    ["1 MiB − 60 B: not even a minimal reason fits", MiB - 60],
    ["exactly 1 MiB: nothing but the body fits", MiB],
  ])("%s: sends the body alone, counts it, and logs the reason at error level", async (_what, bodyBytes) => {
    const { deadLetter, sqs, stats, lines } = setup();
    const body = "z".repeat(bodyBytes);
    const message = poison(body, { trace: attr("t".repeat(1_500)) });
    expect(await deadLetter.send(message, "body is not valid JSON: Unexpected token 'z'")).toBe(true);
    expect(sqs.refused).toEqual([]);
    const copy = sqs.sent[0] as (typeof sqs.sent)[number];
    expect(copy.body === body).toBe(true);
    expect(Object.keys(copy.attributes).filter((k) => k.startsWith("octorelay."))).toEqual([]);
    expect(stats.deadLetterWithoutReason).toBe(1);
    expect(stats.deadLettered).toBe(1);
    expect(lines.find((l) => l.level === 50)).toMatchObject({
      messageId: message.MessageId,
      reason: "body is not valid JSON: Unexpected token 'z'",
      dropped: ["trace"],
    });
  });

  it("keeps small sender attributes on a bare copy when they still fit", async () => {
    const { deadLetter, sqs } = setup();
    // 1 MiB − 40: the octorelay attributes need more than that, "v" = "1" needs 1 + 6 + 1 bytes.
    const message = poison("z".repeat(MiB - 40), { big: attr("b".repeat(100)), v: attr("1") });
    expect(await deadLetter.send(message, "permanent: unknown partner")).toBe(true);
    expect(Object.keys(sqs.sent[0]?.attributes ?? {})).toEqual(["v"]);
  });

  it("counts a binary attribute as its base64 text, so it is never under-counted", async () => {
    const bytes = new Uint8Array(3000).fill(7);
    const attributes = { blob: { DataType: "Binary", BinaryValue: bytes } };
    expect(sqsMessageBytes("", attributes)).toBe(4 + 6 + 4000);
    const { deadLetter, sqs } = setup();
    expect(await deadLetter.send(poison("x".repeat(MiB - 3_500), attributes), REASON_4K)).toBe(true);
    expect(sqs.refused).toEqual([]);
    expect(sqs.sent[0]?.attributes.blob).toBeUndefined();
  });

  it("keeps at most 7 sender attributes beside its 3, and says which were dropped", async () => {
    const { deadLetter, sqs, lines } = setup();
    const attributes = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`a${i}`, attr(String(i))]));
    expect(await deadLetter.send(poison("{", attributes), "bad")).toBe(true);
    expect(Object.keys(sqs.sent[0]?.attributes ?? {})).toHaveLength(10);
    expect(lines.find((l) => String(l.msg).startsWith("dead-lettered copy trimmed"))).toMatchObject({
      dropped: ["a7", "a8"],
    });
  });

  it("replaces characters SQS refuses in the reason, and never sends an empty one", async () => {
    const { deadLetter, sqs } = setup();
    expect(await deadLetter.send(poison("{"), "bad byte \u0000 and lone \uD800 surrogate")).toBe(true);
    expect(reasonOf(sqs.sent[0]?.attributes ?? {})).toBe("bad byte \uFFFD and lone \uFFFD surrogate");
    expect(await deadLetter.send(poison("{"), "")).toBe(true);
    expect(reasonOf(sqs.sent[1]?.attributes ?? {})).toBe("unknown");
    expect(sqs.refused).toEqual([]);
  });

  it("honours a dead-letter queue with a smaller MaximumMessageSize; a body over it is not sent", async () => {
    const { deadLetter, sqs, lines } = setup({ maxMessageBytes: 262_144 });
    expect(await deadLetter.send(poison("x".repeat(250_000)), REASON_4K)).toBe(true);
    expect(sizeAsSqsCounts(sqs.sent[0]?.body ?? "", sqs.sent[0]?.attributes ?? {})).toBeLessThanOrEqual(
      262_144,
    );
    expect(await deadLetter.send(poison("x".repeat(300_000)), REASON_4K)).toBe(false);
    expect(sqs.send).toHaveBeenCalledTimes(1);
    expect(lines.filter((l) => l.level === 50).at(-1)?.msg).toMatch(/MaximumMessageSize/);
  });
});

describe("truncateUtf8", () => {
  it("cuts on a character boundary and marks the cut", () => {
    expect(truncateUtf8("short", 10)).toBe("short");
    const cut = truncateUtf8("😀😀😀😀", 10);
    expect(cut).toBe("😀…");
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(10);
    expect(truncateUtf8("éééé", 6)).toBe("é…");
  });
});

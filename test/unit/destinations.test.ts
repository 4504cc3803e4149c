import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { inspect } from "node:util";
import { gunzipSync } from "node:zlib";
import { PutObjectCommand, type PutObjectCommandInput, type S3Client } from "@aws-sdk/client-s3";
import {
  SendMessageBatchCommand,
  type SendMessageBatchCommandInput,
  type SendMessageBatchCommandOutput,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { HttpDestinationConfig, S3DestinationConfig } from "../../src/config.ts";
import { classify } from "../../src/delivery/classify.ts";
import { type Batch, redactUrl } from "../../src/destinations/destination.ts";
import { HttpDestination, retryAfterMs } from "../../src/destinations/http.ts";
import {
  decodeMetadataValue,
  encodeKeySegment,
  encodeMetadataValue,
  isRetryableS3Error,
  S3Destination,
} from "../../src/destinations/s3.ts";
import { SqsDestination } from "../../src/destinations/sqs.ts";
import { DeliveryError } from "../../src/errors.ts";

function batch(lines: number, over: Partial<Batch> = {}): Batch {
  const text = Array.from({ length: lines }, (_, i) => `{"id":"m${i}","payload":{"n":${i}}}\n`);
  return {
    queue: "orders",
    account: "acme",
    batchId: "01JBATCH0000000000000000",
    createdAt: new Date("2025-03-01T23:45:06Z"),
    lines: text,
    bytes: text.join("").length,
    ...over,
  };
}

const signal = () => new AbortController().signal;

/** Runs `run` and returns its DeliveryError, failing the test if it resolves or rejects with something else. */
async function deliveryError(run: Promise<unknown>): Promise<DeliveryError> {
  const err = await run.then(
    () => expect.fail("deliver resolved"),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DeliveryError);
  expect((err as DeliveryError).code).toBe("DELIVERY_FAILED");
  return err as DeliveryError;
}

describe("HttpDestination", () => {
  interface Received {
    method: string | undefined;
    url: string | undefined;
    headers: IncomingHttpHeaders;
    body: string;
  }

  /** A loopback server answering each request with `answer` (which may also leave it hanging or cut it). */
  async function startServer(answer: (res: ServerResponse, req: Received) => void = (res) => res.end()) {
    const received: Received[] = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const r = {
          method: req.method,
          url: req.url,
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        };
        received.push(r);
        answer(res, r);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const stop = () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    stops.push(stop);
    return { url, received };
  }

  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(stops.splice(0).map((stop) => stop()));
  });

  function http(options: Partial<HttpDestinationConfig> & { url: string }, env: NodeJS.ProcessEnv = {}) {
    return new HttpDestination(
      { env },
      {
        type: "http",
        headers: {},
        authTokenEnv: "",
        authScheme: "Bearer",
        format: "ndjson",
        timeoutMs: 5000,
        ...options,
      },
    );
  }

  const status =
    (code: number, headers: Record<string, string> = {}) =>
    (res: ServerResponse) => {
      res.writeHead(code, headers);
      res.end("nope");
    };

  it("POSTs NDJSON with its content type and the batch id as idempotency key; 2xx resolves", async () => {
    const server = await startServer(status(202));
    const b = batch(3);
    await http({ url: `${server.url}/ingest` }).deliver(b, signal());

    expect(server.received).toHaveLength(1);
    const req = server.received[0] as Received;
    expect(req.method).toBe("POST");
    expect(req.url).toBe("/ingest");
    expect(req.headers["content-type"]).toBe("application/x-ndjson");
    expect(req.headers["idempotency-key"]).toBe(b.batchId);
    expect(req.headers.authorization).toBeUndefined();
    expect(req.body).toBe(b.lines.join(""));
    expect(
      req.body
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
    ).toHaveLength(3);
  });

  it('sends a JSON array with format "json"', async () => {
    const server = await startServer();
    const b = batch(3);
    await http({ url: server.url, format: "json" }).deliver(b, signal());

    const req = server.received[0] as Received;
    expect(req.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(req.body)).toEqual(b.lines.map((l) => JSON.parse(l)));
  });

  it("sends the configured extra headers", async () => {
    const server = await startServer();
    await http({ url: server.url, headers: { "x-partner": "acme" } }).deliver(batch(1), signal());
    expect(server.received[0]?.headers["x-partner"]).toBe("acme");
  });

  it("sends `<scheme> <token>` from the env var named by authTokenEnv, and never puts the token in an error", async () => {
    const token = "s3cr3t-t0ken-value";
    const env = { ACME_TOKEN: token };
    const server = await startServer(status(500));
    const destination = http({ url: server.url, authTokenEnv: "ACME_TOKEN", authScheme: "Token" }, env);

    const err = await deliveryError(destination.deliver(batch(1), signal()));
    expect(server.received[0]?.headers.authorization).toBe(`Token ${token}`);
    const texts = [err.message, String(err), err.stack, String((err as { cause?: unknown }).cause ?? "")];
    for (const text of texts) expect(text).not.toContain(token);

    // Nor when the request fails before any answer.
    const unreachable = http({ url: "http://127.0.0.1:1/ingest", authTokenEnv: "ACME_TOKEN" }, env);
    const networkErr = await deliveryError(unreachable.deliver(batch(1), signal()));
    expect(networkErr.message).not.toContain(token);
    expect(String(networkErr.cause)).not.toContain(token);
  });

  it("sends no authorization header when the named env var is unset", async () => {
    const server = await startServer();
    await http({ url: server.url, authTokenEnv: "MISSING_TOKEN" }, {}).deliver(batch(1), signal());
    expect(server.received[0]?.headers.authorization).toBeUndefined();
  });

  it("fills {account} and {queue} in the URL template, URL-encoded", async () => {
    const server = await startServer();
    const destination = http({ url: `${server.url}/hooks/{account}?q={queue}` });
    expect(destination.urlFor({ account: "a b/c&d", queue: "orders" })).toBe(
      `${server.url}/hooks/a%20b%2Fc%26d?q=orders`,
    );
    await destination.deliver(batch(1, { account: "a b/c&d" }), signal());
    expect(server.received[0]?.url).toBe("/hooks/a%20b%2Fc%26d?q=orders");
  });

  it("a 500 is a retryable DeliveryError carrying the status", async () => {
    const server = await startServer(status(500));
    const err = await deliveryError(http({ url: `${server.url}/x` }).deliver(batch(1), signal()));
    expect(err).toMatchObject({ retryable: true, status: 500, account: "acme", destination: "http" });
    expect(err.retryAfterMs).toBeUndefined();
    expect(err.message).toContain("500");
  });

  it.each([429, 503])("%i with Retry-After in seconds is retryable after that long", async (code) => {
    const server = await startServer(status(code, { "retry-after": "2" }));
    const err = await deliveryError(http({ url: server.url }).deliver(batch(1), signal()));
    expect(err).toMatchObject({ retryable: true, status: code, retryAfterMs: 2000 });
  });

  it("takes Retry-After as an HTTP date too", async () => {
    const at = new Date(Date.now() + 30_000);
    const server = await startServer(status(503, { "retry-after": at.toUTCString() }));
    const err = await deliveryError(http({ url: server.url }).deliver(batch(1), signal()));
    expect(err.retryable).toBe(true);
    // The header has whole seconds: anything from 28 s to 30 s is right.
    expect(err.retryAfterMs).toBeGreaterThan(28_000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(30_000);
  });

  it("a 500 with Retry-After ignores it (only 429 and 503 carry it)", async () => {
    const server = await startServer(status(500, { "retry-after": "2" }));
    const err = await deliveryError(http({ url: server.url }).deliver(batch(1), signal()));
    expect(err.retryAfterMs).toBeUndefined();
  });

  it.each([400, 401, 404, 413, 422])("%i refuses the batch for good (not retryable)", async (code) => {
    const server = await startServer(status(code));
    const err = await deliveryError(http({ url: server.url }).deliver(batch(1), signal()));
    expect(err).toMatchObject({ retryable: false, status: code });
  });

  it.each([408, 409, 502, 504])("%i is retryable", async (code) => {
    const server = await startServer(status(code));
    const err = await deliveryError(http({ url: server.url }).deliver(batch(1), signal()));
    expect(err).toMatchObject({ retryable: true, status: code });
  });

  it("a server that never answers makes it reject within timeoutMs, retryable", async () => {
    const server = await startServer(() => {});
    const started = performance.now();
    const err = await deliveryError(http({ url: server.url, timeoutMs: 150 }).deliver(batch(1), signal()));
    const elapsed = performance.now() - started;
    expect(err.retryable).toBe(true);
    expect(err.status).toBeUndefined();
    expect(err.message).toContain("TimeoutError");
    expect(elapsed).toBeGreaterThanOrEqual(140);
    expect(elapsed).toBeLessThan(2000);
  });

  it("stops waiting when the caller's signal aborts", async () => {
    const server = await startServer(() => {});
    const controller = new AbortController();
    const sent = http({ url: server.url, timeoutMs: 60_000 }).deliver(batch(1), controller.signal);
    await vi.waitFor(() => expect(server.received).toHaveLength(1));
    controller.abort();
    const err = await deliveryError(sent);
    expect(err.retryable).toBe(true);
  });

  it("a connection reset is retryable", async () => {
    const server = await startServer((res) => res.socket?.destroy());
    const err = await deliveryError(http({ url: server.url }).deliver(batch(1), signal()));
    expect(err.retryable).toBe(true);
    expect(err.status).toBeUndefined();
    expect(err.cause).toBeDefined();
  });
});

describe("retryAfterMs", () => {
  const now = Date.parse("2025-03-01T12:00:00Z");

  it("reads seconds", () => {
    expect(retryAfterMs("2", now)).toBe(2000);
    expect(retryAfterMs("0", now)).toBe(0);
    expect(retryAfterMs("120", now)).toBe(120_000);
  });

  it("reads an HTTP date relative to now", () => {
    expect(retryAfterMs("Sat, 01 Mar 2025 12:00:30 GMT", now)).toBe(30_000);
  });

  it("never returns a negative wait", () => {
    expect(retryAfterMs("Sat, 01 Mar 2025 11:59:00 GMT", now)).toBe(0);
    expect(retryAfterMs("-5", now)).toBe(0);
  });

  it("returns undefined for a missing or unreadable header", () => {
    expect(retryAfterMs(null, now)).toBeUndefined();
    expect(retryAfterMs("", now)).toBeUndefined();
    expect(retryAfterMs("soon", now)).toBeUndefined();
  });
});

describe("SqsDestination", () => {
  type Entry = NonNullable<SendMessageBatchCommandInput["Entries"]>[number];

  /** An SQS client whose SendMessageBatch answers with `answer(entries, call)`; any other command fails the test. */
  function fakeSqs(
    answer: (entries: Entry[], call: number) => Partial<SendMessageBatchCommandOutput> = (entries) => ({
      Successful: entries.map((e) => ({ Id: e.Id, MessageId: `mid-${e.Id}`, MD5OfMessageBody: "" })),
    }),
  ) {
    const inputs: SendMessageBatchCommandInput[] = [];
    const send = vi.fn(async (command: unknown, _options?: { abortSignal?: AbortSignal }) => {
      if (!(command instanceof SendMessageBatchCommand)) {
        throw new Error(`unexpected command ${(command as object).constructor.name}`);
      }
      inputs.push(command.input);
      return { $metadata: {}, ...answer(command.input.Entries ?? [], inputs.length - 1) };
    });
    return { client: { send } as unknown as SQSClient, send, inputs };
  }

  /** What the retry layer sends next after `err`: only the failed lines, as `classify` rebuilds them. */
  function remainingAfter(err: DeliveryError, b: Batch): Batch {
    const action = classify(err, { batch: b, nowMs: Date.now(), attempts: 1 });
    if (action.action !== "retry-partial")
      return expect.fail(`classify said ${action.action}, not retry-partial`);
    return action.remaining;
  }

  const queueUrl = "https://sqs.us-east-1.amazonaws.com/123456789012/partner-{account}";
  const sqs = (client: SQSClient) => new SqsDestination({ sqs: client }, { type: "sqs", queueUrl });
  const succeed = (entries: Entry[]) =>
    entries.map((e) => ({ Id: e.Id, MessageId: `mid-${e.Id}`, MD5OfMessageBody: "" }));
  const fail = (entries: Entry[], senderFault: boolean) =>
    entries.map((e) => ({
      Id: e.Id,
      Code: senderFault ? "InvalidMessageContents" : "InternalError",
      SenderFault: senderFault,
    }));

  it("sends 23 lines as SendMessageBatch calls of 10, 10 and 3 to the rendered queue URL", async () => {
    const fake = fakeSqs();
    // Was "acme.corp": it rendered as "partner-acme-corp", the queue of account "acme-corp"; now refused.
    const b = batch(23, { account: "acme-corp" });
    await sqs(fake.client).deliver(b, signal());

    expect(fake.inputs.map((i) => i.Entries?.length)).toEqual([10, 10, 3]);
    for (const input of fake.inputs) {
      expect(input.QueueUrl).toBe("https://sqs.us-east-1.amazonaws.com/123456789012/partner-acme-corp");
    }
    const bodies = fake.inputs.flatMap((i) => i.Entries ?? []).map((e) => e.MessageBody);
    expect(bodies).toEqual(b.lines.map((l) => l.trimEnd()));
    const ids = fake.inputs.flatMap((i) => i.Entries ?? []).map((e) => e.Id);
    expect(new Set(ids).size).toBe(23);
  });

  it("sends without per-call options, so the client's cached middleware serves every call", async () => {
    const fake = fakeSqs();
    await sqs(fake.client).deliver(batch(12), signal());
    expect(fake.send).toHaveBeenCalledTimes(2);
    for (const call of fake.send.mock.calls) expect(call[1]).toBeUndefined();
  });

  it("rejects retryable on a failed entry, and its retry sends only the entries that failed", async () => {
    // Call 1 (first 10): entries 3 and 7 fail; call 2 (next 10) all pass; call 3 (last 3): entry 21 fails.
    const fake = fakeSqs((entries, call) => {
      if (call > 2) return { Successful: succeed(entries) };
      const failed = entries.filter((e) => ["3", "7", "21"].includes(e.Id as string));
      return {
        Successful: succeed(entries.filter((e) => !failed.includes(e))),
        Failed: fail(failed, false),
      };
    });
    const destination = sqs(fake.client);
    const b = batch(23);

    const err = await deliveryError(destination.deliver(b, signal()));
    expect(err.retryable).toBe(true);
    expect(err.message).toContain("3 failure(s)");
    expect(fake.inputs).toHaveLength(3);

    // The retry layer rebuilds the batch from what failed (see delivery-retry.test.ts).
    await destination.deliver(remainingAfter(err, b), signal());
    expect(fake.inputs).toHaveLength(4);
    const retried = fake.inputs[3]?.Entries ?? [];
    expect(retried.map((e) => e.MessageBody)).toEqual([3, 7, 21].map((i) => b.lines[i]?.trimEnd()));

    // Delivered in full: a later batch with the same id starts afresh (nothing left remembered).
    await destination.deliver(b, signal());
    expect(fake.inputs.slice(4).flatMap((i) => i.Entries ?? [])).toHaveLength(23);
  });

  it("does not carry what was sent of one batch over to another batch", async () => {
    const fake = fakeSqs((entries, call) =>
      call === 0
        ? { Successful: succeed(entries.slice(1)), Failed: fail(entries.slice(0, 1), false) }
        : { Successful: succeed(entries) },
    );
    const destination = sqs(fake.client);
    await deliveryError(destination.deliver(batch(5, { batchId: "one" }), signal()));
    await destination.deliver(batch(5, { batchId: "two" }), signal());
    expect(fake.inputs[1]?.Entries).toHaveLength(5);
  });

  it("rejects non-retryable when the failed entries are the sender's fault", async () => {
    const fake = fakeSqs((entries) => ({
      Successful: succeed(entries.slice(1)),
      Failed: fail(entries.slice(0, 1), true),
    }));
    const err = await deliveryError(sqs(fake.client).deliver(batch(4), signal()));
    expect(err.retryable).toBe(false);
    expect(err.message).toContain("InvalidMessageContents");
  });

  it("is retryable when sender-fault and other failures are mixed", async () => {
    const fake = fakeSqs((entries) => ({
      Failed: [...fail(entries.slice(0, 1), true), ...fail(entries.slice(1), false)],
    }));
    const err = await deliveryError(sqs(fake.client).deliver(batch(3), signal()));
    expect(err.retryable).toBe(true);
  });

  it("a rejected call is retryable, and the retry sends only what that call held", async () => {
    const fake = fakeSqs((entries, call) => {
      if (call === 1) throw Object.assign(new Error("socket hang up"), { name: "TimeoutError" });
      return { Successful: succeed(entries) };
    });
    const destination = sqs(fake.client);
    const b = batch(23);

    const err = await deliveryError(destination.deliver(b, signal()));
    expect(err.retryable).toBe(true);
    expect(err.message).toContain("TimeoutError");
    // The call after the failed one was still made.
    expect(fake.inputs).toHaveLength(3);

    await destination.deliver(remainingAfter(err, b), signal());
    expect(fake.inputs[3]?.Entries?.map((e) => e.MessageBody)).toEqual(
      b.lines.slice(10, 20).map((l) => l.trimEnd()),
    );
    expect(fake.inputs).toHaveLength(4);
  });

  it("keeps nothing between calls: the same batch delivered again sends every entry", async () => {
    const fake = fakeSqs((entries, call) =>
      call === 0
        ? { Successful: succeed(entries.slice(1)), Failed: fail(entries.slice(0, 1), false) }
        : { Successful: succeed(entries) },
    );
    const destination = sqs(fake.client);
    const b = batch(5);
    await deliveryError(destination.deliver(b, signal()));
    await destination.deliver(b, signal());
    expect(fake.inputs[1]?.Entries).toHaveLength(5);
  });
});

describe("S3Destination", () => {
  function fakeS3(fail?: Error) {
    const inputs: PutObjectCommandInput[] = [];
    const send = vi.fn(async (command: unknown) => {
      if (!(command instanceof PutObjectCommand)) {
        throw new Error(`unexpected command ${(command as object).constructor.name}`);
      }
      inputs.push(command.input);
      if (fail) throw fail;
      return { $metadata: {} };
    });
    return { client: { send } as unknown as S3Client, send, inputs };
  }

  const s3 = (client: S3Client, options: Partial<S3DestinationConfig> = {}) =>
    new S3Destination(
      { s3: client },
      {
        type: "s3",
        bucket: "deliveries",
        keyTemplate: "{queue}/{account}/{yyyy}/{MM}/{dd}/{HH}/{mm}/{batchId}.ndjson.gz",
        gzip: true,
        serverSideEncryption: "",
        kmsKeyId: "",
        ...options,
      },
    );

  it("renders a bucket template per account, the account as it is; one that would need changing is refused", async () => {
    const fake = fakeS3();
    const destination = s3(fake.client, { bucket: "{account}-out" });
    // "Acme" and "Big_Corp/EU" used to be lowercased and hyphenated into these same buckets, which
    // merged them with the accounts "acme" and "big-corp-eu": they are refused now.
    await destination.deliver(batch(1, { account: "acme" }), signal());
    await destination.deliver(batch(1, { account: "big-corp-eu" }), signal());
    await destination.deliver(batch(1, { account: "globex.io" }), signal());
    expect(fake.inputs.map((i) => i.Bucket)).toEqual(["acme-out", "big-corp-eu-out", "globex.io-out"]);
    for (const account of ["Acme", "Big_Corp/EU"]) {
      const err = await deliveryError(destination.deliver(batch(1, { account }), signal()));
      expect(err.retryable).toBe(false);
    }
    expect(fake.inputs).toHaveLength(3);
  });

  it("renders the key's date parts in UTC, with the queue, the encoded account and the batch id", async () => {
    const fake = fakeS3();
    const destination = s3(fake.client);
    // 23:45 UTC on 1 March is already 2 March in Tokyo and still 1 March 18:45 in New York.
    const b = batch(2, { account: "a/b c", createdAt: new Date("2025-03-01T23:45:06+00:00") });
    await destination.deliver(b, signal());
    expect(fake.inputs[0]?.Key).toBe(`orders/a%2Fb%20c/2025/03/01/23/45/${b.batchId}.ndjson.gz`);
    expect(destination.keyFor(b)).toBe(fake.inputs[0]?.Key);
  });

  it("pads single-digit date parts", () => {
    const b = batch(1, { createdAt: new Date("2026-01-02T03:04:05Z") });
    expect(s3(fakeS3().client).keyFor(b)).toBe(`orders/acme/2026/01/02/03/04/${b.batchId}.ndjson.gz`);
  });

  it("gzips the NDJSON with ContentEncoding gzip", async () => {
    const fake = fakeS3();
    const b = batch(5);
    await s3(fake.client).deliver(b, signal());
    const input = fake.inputs[0] as PutObjectCommandInput;
    expect(input.ContentEncoding).toBe("gzip");
    expect(input.ContentType).toBe("application/x-ndjson");
    expect(gunzipSync(input.Body as Buffer).toString()).toBe(b.lines.join(""));
    expect(input.Metadata).toEqual({ records: "5", queue: "orders", account: "acme" });
  });

  it("sends plain NDJSON without ContentEncoding when gzip is off", async () => {
    const fake = fakeS3();
    const b = batch(3);
    await s3(fake.client, { gzip: false }).deliver(b, signal());
    const input = fake.inputs[0] as PutObjectCommandInput;
    expect(input.ContentEncoding).toBeUndefined();
    expect((input.Body as Buffer).toString()).toBe(b.lines.join(""));
  });

  it('passes SSE "aws:kms" with its key id', async () => {
    const fake = fakeS3();
    await s3(fake.client, { serverSideEncryption: "aws:kms", kmsKeyId: "alias/partners" }).deliver(
      batch(1),
      signal(),
    );
    expect(fake.inputs[0]).toMatchObject({ ServerSideEncryption: "aws:kms", SSEKMSKeyId: "alias/partners" });
  });

  it("passes AES256 without a key id, and no SSE fields by default", async () => {
    const fake = fakeS3();
    await s3(fake.client, { serverSideEncryption: "AES256" }).deliver(batch(1), signal());
    await s3(fake.client).deliver(batch(1), signal());
    expect(fake.inputs[0]?.ServerSideEncryption).toBe("AES256");
    expect(fake.inputs[0]?.SSEKMSKeyId).toBeUndefined();
    expect(fake.inputs[1]?.ServerSideEncryption).toBeUndefined();
    expect(fake.inputs[1]?.SSEKMSKeyId).toBeUndefined();
  });

  it("writes the same key on a retry of the same batch", async () => {
    const fake = fakeS3();
    const destination = s3(fake.client);
    const b = batch(2);
    await destination.deliver(b, signal());
    await destination.deliver(b, signal());
    expect(fake.inputs[1]?.Key).toBe(fake.inputs[0]?.Key);
  });

  it.each([
    ["a network error", Object.assign(new Error("socket hang up"), { name: "TimeoutError" })],
    ["AccessDenied", Object.assign(new Error("Access Denied"), { name: "AccessDenied" })],
    [
      "NoSuchBucket",
      Object.assign(new Error("The specified bucket does not exist"), { name: "NoSuchBucket" }),
    ],
  ])("surfaces %s as a retryable DeliveryError naming the bucket", async (_what, failure) => {
    const fake = fakeS3(failure);
    const err = await deliveryError(s3(fake.client, { bucket: "{account}-out" }).deliver(batch(1), signal()));
    expect(err).toMatchObject({ retryable: true, destination: "s3", account: "acme" });
    expect(err.message).toContain("acme-out");
    expect(err.message).toContain(failure.name);
    expect(err.cause).toBe(failure);
  });
});

/** What a render function gives for one account: the target, or the refusal's message. */
function outcome(render: () => string): string {
  try {
    return render();
  } catch (err) {
    expect(err).toBeInstanceOf(DeliveryError);
    expect((err as DeliveryError).retryable).toBe(false);
    return `refused: ${(err as DeliveryError).message}`;
  }
}

/** Accepted names must render to distinct targets: no two accounts share one. */
function expectInjective(rendered: Map<string, string>) {
  const accepted = [...rendered].filter(([, target]) => !target.startsWith("refused"));
  expect(new Set(accepted.map(([, target]) => target)).size).toBe(accepted.length);
}

const LONE_SURROGATE = "a\uD800b";
/** How a refusal names the account in its fix: quoted, or a placeholder when too long to show. */
const shown = (account: string) => (account.length <= 120 ? JSON.stringify(account) : "<this account>");
const LONG = "a".repeat(2000);

describe("account names → targets: faithful or refused, never two accounts on one target", () => {
  const base = { queue: "orders" };

  describe("HTTP url {account}", () => {
    const http = (url: string) =>
      new HttpDestination(
        { env: {} },
        {
          type: "http",
          url,
          headers: {},
          authTokenEnv: "",
          authScheme: "Bearer",
          format: "ndjson",
          timeoutMs: 1000,
        },
      );
    const destination = http("http://127.0.0.1:8080/p/{account}/ingest");
    const P = "http://127.0.0.1:8080/p/";

    it.each([
      ["acme", `${P}acme/ingest`],
      ["ACME", `${P}ACME/ingest`],
      ["x-y", `${P}x-y/ingest`],
      ["x_y", `${P}x_y/ingest`],
      ["X-Y", `${P}X-Y/ingest`],
      ["x.y", `${P}x.y/ingest`],
      ["...", `${P}.../ingest`],
      ["%2e", `${P}%252e/ingest`],
      ["%2E", `${P}%252E/ingest`],
      ["%2e%2e", `${P}%252e%252e/ingest`],
      ["a/b", `${P}a%2Fb/ingest`],
      ["a", `${P}a/ingest`],
      ["../ingest", `${P}..%2Fingest/ingest`],
      ["a?b#c@d:e", `${P}a%3Fb%23c%40d%3Ae/ingest`],
      ["中文", `${P}%E4%B8%AD%E6%96%87/ingest`],
      [LONG, `${P}${LONG}/ingest`],
    ])("%j → %s", (account, url) => {
      expect(destination.urlFor({ ...base, account })).toBe(url);
      // The URL parser leaves it as it is (no dot segment removed, host unchanged).
      expect(new URL(url).href).toBe(url);
    });

    it.each([
      ["..", /dot|\.\./],
      [".", /\./],
      ["", /empty/],
      [LONE_SURROGATE, /surrogate/],
    ])("%j is refused", (account, why) => {
      const message = outcome(() => destination.urlFor({ ...base, account }));
      expect(message).toMatch(/^refused: account /);
      expect(message).toMatch(why);
      expect(message).toContain("http://127.0.0.1:8080/p/{account}/ingest");
      expect(message).toContain(`partners.accounts.${JSON.stringify(account)}.destination.url`);
    });

    it("no two names of the table share a URL", () => {
      const names = [
        "acme",
        "ACME",
        "x-y",
        "x_y",
        "X-Y",
        "x.y",
        ".",
        "..",
        "%2e",
        "%2E",
        "a/b",
        "a",
        "中文",
        "",
      ];
      expectInjective(
        new Map(names.map((n) => [n, outcome(() => destination.urlFor({ ...base, account: n }))])),
      );
    });

    it("an account in the host, port or userinfo is refused for every account, so none changes the origin", () => {
      for (const template of [
        "https://{account}.partner.test/ingest",
        "https://partner.test:{account}/ingest",
        "https://{account}@partner.test/ingest",
      ]) {
        for (const account of ["acme", "ACME", "evil.test", "8080"]) {
          expect(outcome(() => http(template).urlFor({ ...base, account }))).toMatch(/host|not a valid URL/);
        }
      }
    });

    it("an account only in the fragment (never sent) is refused: every account would share one URL", () => {
      expect(
        outcome(() => http("https://partner.test/ingest#{account}").urlFor({ ...base, account: "acme" })),
      ).toMatch(/fragment/);
    });

    it("the refusal shows the template with its query values redacted", () => {
      const message = outcome(() =>
        http("https://partner.test/{account}?key=s3cr3t").urlFor({ ...base, account: ".." }),
      );
      expect(message).toContain("https://partner.test/{account}?key=REDACTED");
      expect(message).not.toContain("s3cr3t");
    });
  });

  describe("S3 bucket {account}", () => {
    const s3 = (bucket: string) =>
      new S3Destination(
        { s3: {} as S3Client },
        {
          type: "s3",
          bucket,
          keyTemplate: "{account}/{batchId}",
          gzip: true,
          serverSideEncryption: "",
          kmsKeyId: "",
        },
      );
    const destination = s3("b-{account}");

    it.each([
      ["acme", "b-acme"],
      ["x-y", "b-x-y"],
      ["x.y", "b-x.y"],
      ["globex.io", "b-globex.io"],
      ["a".repeat(61), `b-${"a".repeat(61)}`],
    ])("%j → %s", (account, bucket) => {
      expect(destination.bucketFor({ ...base, account })).toBe(bucket);
    });

    it.each([
      ["ACME", /"A"/],
      ["Acme", /"A"/],
      ["x_y", /"_"/],
      ["X-Y", /"X"/],
      ["a/b", /"\/"/],
      ["%2e", /"%"/],
      ["中文", /"中"/],
      [".", /begin and end/],
      ["..", /adjacent dots|begin and end/],
      ["x..y", /adjacent dots/],
      ["x-", /begin and end/],
      ["", /empty/],
      ["a".repeat(62), /64 characters/],
      [LONG, /characters long/],
    ])("%j is refused", (account, why) => {
      const message = outcome(() => destination.bucketFor({ ...base, account }));
      expect(message).toMatch(why);
      expect(message).toContain('from template "b-{account}"');
      expect(message).toContain(`partners.accounts.${shown(account)}.destination.bucket`);
    });

    it("says what is wrong and how to fix it", () => {
      expect(outcome(() => destination.bucketFor({ ...base, account: "ACME" }))).toBe(
        'refused: account "ACME" cannot name an S3 bucket from template "b-{account}": it holds "A", "C", "M", "E", which a bucket name cannot (bucket names are 3–63 lowercase letters, digits, hyphens and dots, beginning and ending with a letter or digit); name its bucket explicitly under partners.accounts."ACME".destination.bucket',
      );
    });

    it.each([
      ["192.168.5.4", /IP address/],
      ["xn--abc", /xn--/],
      ["sthree-abc", /sthree-/],
      ["abc-s3alias", /-s3alias/],
      ["abc--ol-s3", /--ol-s3/],
      ["ab", /2 characters/],
    ])("with template {account}, %j is refused", (account, why) => {
      expect(outcome(() => s3("{account}").bucketFor({ ...base, account }))).toMatch(why);
    });

    it("collision pairs never share a bucket: acme/ACME, x-y/x_y/X-Y, x.y/x-y", () => {
      const names = [
        "acme",
        "ACME",
        "x-y",
        "x_y",
        "X-Y",
        "x.y",
        ".",
        "..",
        "%2e",
        "a/b",
        "a",
        "中文",
        "",
        LONG,
      ];
      expectInjective(
        new Map(names.map((n) => [n, outcome(() => destination.bucketFor({ ...base, account: n }))])),
      );
    });

    it("a fixed bucket is used as configured, whatever the account", () => {
      expect(s3("Legacy_Bucket").bucketFor({ ...base, account: "ACME" })).toBe("Legacy_Bucket");
    });
  });

  describe("S3 key {account}", () => {
    const s3 = (keyTemplate: string) =>
      new S3Destination(
        { s3: {} as S3Client },
        { type: "s3", bucket: "shared", keyTemplate, gzip: true, serverSideEncryption: "", kmsKeyId: "" },
      );
    const destination = s3("{queue}/{account}/{batchId}.ndjson.gz");
    const key = (account: string) => outcome(() => destination.keyFor(batch(1, { account, batchId: "B" })));

    it.each([
      ["acme", "orders/acme/B.ndjson.gz"],
      ["ACME", "orders/ACME/B.ndjson.gz"],
      ["x-y", "orders/x-y/B.ndjson.gz"],
      ["x_y", "orders/x_y/B.ndjson.gz"],
      ["x.y", "orders/x.y/B.ndjson.gz"],
      ["a=b", "orders/a=b/B.ndjson.gz"],
      ["a", "orders/a/B.ndjson.gz"],
      ["a/b", "orders/a%2Fb/B.ndjson.gz"],
      ["a b", "orders/a%20b/B.ndjson.gz"],
      [".", "orders/%2E/B.ndjson.gz"],
      ["..", "orders/%2E%2E/B.ndjson.gz"],
      ["...", "orders/.../B.ndjson.gz"],
      ["%2e", "orders/%252e/B.ndjson.gz"],
      ["中文", "orders/%E4%B8%AD%E6%96%87/B.ndjson.gz"],
    ])("%j → %s", (account, expected) => {
      expect(key(account)).toBe(expected);
    });

    it.each([
      ["", /empty/],
      [LONE_SURROGATE, /surrogate/],
      ["a".repeat(1100), /1119-byte S3 key .*at most 1024 bytes/],
    ])("%j is refused", (account, why) => {
      const message = key(account);
      expect(message).toMatch(why);
      expect(message).toContain(".destination.keyTemplate");
    });

    it("no account's objects appear under another account's prefix, and each key segment decodes to its account", () => {
      const names = [
        "a",
        "a/b",
        "a%2Fb",
        "b",
        "ACME",
        "acme",
        "x.y",
        "x-y",
        ".",
        "..",
        "%2e",
        "中文",
        "a b",
        "a+b",
        "a\uFFFDb",
        // Its UTF-8 would be a\uFFFDb's: refused rather than merged.
        LONE_SURROGATE,
      ];
      const keys = new Map(names.map((n) => [n, key(n)]));
      expectInjective(keys);
      expect(keys.get(LONE_SURROGATE)).toMatch(/^refused/);
      for (const [account, k] of keys) {
        if (k.startsWith("refused")) continue;
        const segment = k.split("/")[1] as string;
        expect(decodeURIComponent(segment)).toBe(account);
        for (const [other, otherKey] of keys) {
          if (other === account || otherKey.startsWith("refused")) continue;
          expect(k.startsWith(`orders/${encodeKeySegment(other)}/`)).toBe(false);
        }
      }
    });
  });

  describe("SQS queue URL {account}", () => {
    const sqs = (queueUrl: string) => new SqsDestination({ sqs: {} as SQSClient }, { type: "sqs", queueUrl });
    const Q = "https://sqs.us-east-1.amazonaws.com/123456789012/";
    const destination = sqs(`${Q}in-{account}`);

    it.each([
      ["x-y", `${Q}in-x-y`],
      ["x_y", `${Q}in-x_y`],
      ["X-Y", `${Q}in-X-Y`],
      ["acme", `${Q}in-acme`],
      ["ACME", `${Q}in-ACME`],
      ["a".repeat(77), `${Q}in-${"a".repeat(77)}`],
    ])("%j → %s", (account, url) => {
      expect(destination.queueUrlFor({ ...base, account })).toBe(url);
    });

    it.each([
      ["x.y", /"\."/],
      [".", /"\."/],
      ["..", /"\."/],
      ["%2e", /"%"/],
      ["a/b", /"\/"/],
      ["中文", /"中"/],
      ["", /empty/],
      ["a".repeat(78), /81 characters/],
    ])("%j is refused", (account, why) => {
      const message = outcome(() => destination.queueUrlFor({ ...base, account }));
      expect(message).toMatch(why);
      expect(message).toContain(`partners.accounts.${shown(account)}.destination.queueUrl`);
    });

    it("a FIFO queue's name keeps its .fifo within 80 characters", () => {
      const fifo = sqs(`${Q}in-{account}.fifo`);
      expect(fifo.queueUrlFor({ ...base, account: "a".repeat(72) })).toBe(`${Q}in-${"a".repeat(72)}.fifo`);
      expect(outcome(() => fifo.queueUrlFor({ ...base, account: "a".repeat(73) }))).toMatch(/81 characters/);
    });

    it("an account in the host is refused (hosts ignore case, so ACME and acme would meet)", () => {
      const inHost = sqs("https://{account}.sqs.example.test/123456789012/in");
      expect(outcome(() => inHost.queueUrlFor({ ...base, account: "acme" }))).toMatch(/host/);
    });

    it("collision pairs never share a queue: x.y/x-y, x-y/x_y/X-Y, acme/ACME", () => {
      const names = ["x.y", "x-y", "x_y", "X-Y", "acme", "ACME", ".", "..", "%2e", "a/b", "中文", ""];
      expectInjective(
        new Map(names.map((n) => [n, outcome(() => destination.queueUrlFor({ ...base, account: n }))])),
      );
    });
  });

  it("a refused name costs no request, and is the kind of error the partner's breaker does not count", async () => {
    // Partner counts a DeliveryError toward its breaker only when it is retryable.
    const send = vi.fn();
    const s3 = new S3Destination(
      { s3: { send } as unknown as S3Client },
      {
        type: "s3",
        bucket: "b-{account}",
        keyTemplate: "{account}/{batchId}",
        gzip: true,
        serverSideEncryption: "",
        kmsKeyId: "",
      },
    );
    const sqsSend = vi.fn();
    const sqs = new SqsDestination(
      { sqs: { send: sqsSend } as unknown as SQSClient },
      { type: "sqs", queueUrl: "https://sqs.us-east-1.amazonaws.com/1/in-{account}" },
    );
    for (const destination of [s3, sqs]) {
      const err = await deliveryError(destination.deliver(batch(1, { account: ".." }), signal()));
      expect(err).toMatchObject({ retryable: false, account: "..", destination: destination.kind });
    }
    expect(send).not.toHaveBeenCalled();
    expect(sqsSend).not.toHaveBeenCalled();
  });
});

describe("S3 metadata values", () => {
  it.each([
    ["acme", "acme"],
    ["a b", "a b"],
    ["orders", "orders"],
    ["中文", "=?UTF-8?B?5Lit5paH?="],
    ["é", "=?UTF-8?B?w6k=?="],
    [" edge", "=?UTF-8?B?IGVkZ2U=?="],
    ["line\nbreak", "=?UTF-8?B?bGluZQpicmVhaw==?="],
    ["=?UTF-8?B?5Lit5paH?=", "=?UTF-8?B?PT9VVEYtOD9CPzVMaXQ1cGFIPz0=?="],
  ])("%j is sent as %j and reads back as itself", (value, sent) => {
    expect(encodeMetadataValue(value)).toBe(sent);
    expect(decodeMetadataValue(sent)).toBe(value);
  });

  it("decodes what S3 may send back: Q encoding, Latin-1, several words", () => {
    expect(decodeMetadataValue("=?UTF-8?Q?=E4=B8=AD=E6=96=87?=")).toBe("中文");
    expect(decodeMetadataValue("=?ISO-8859-1?Q?caf=E9?=")).toBe("café");
    expect(decodeMetadataValue("=?UTF-8?B?5Lit?= =?UTF-8?B?5paH?=")).toBe("中文");
  });

  it("sends any account's metadata in a form Node can put in a header", async () => {
    const inputs: PutObjectCommandInput[] = [];
    const send = vi.fn(async (command: PutObjectCommand) => {
      inputs.push(command.input);
      return {};
    });
    const s3 = new S3Destination(
      { s3: { send } as unknown as S3Client },
      {
        type: "s3",
        bucket: "shared",
        keyTemplate: "{account}/{batchId}",
        gzip: false,
        serverSideEncryption: "",
        kmsKeyId: "",
      },
    );
    await s3.deliver(batch(2, { account: "中文" }), signal());
    const metadata = inputs[0]?.Metadata ?? {};
    expect(metadata).toEqual({ records: "2", queue: "orders", account: "=?UTF-8?B?5Lit5paH?=" });
    for (const value of Object.values(metadata)) expect(value).toMatch(/^[\x20-\x7e]*$/);
    expect(decodeMetadataValue(metadata.account as string)).toBe("中文");
  });
});

describe("isRetryableS3Error", () => {
  const s3Error = (name: string, status: number) =>
    Object.assign(new Error(name), {
      name,
      $fault: status < 500 ? "client" : "server",
      $metadata: { httpStatusCode: status },
    });
  const invalidHeader = Object.assign(
    new TypeError('Invalid character in header content ["x-amz-meta-account"]'),
    {
      code: "ERR_INVALID_CHAR",
      $metadata: { attempts: 1 },
    },
  );

  it.each([
    ["a header Node refuses to send (ERR_INVALID_CHAR)", invalidHeader],
    ["InvalidBucketName", s3Error("InvalidBucketName", 400)],
    ["KeyTooLongError", s3Error("KeyTooLongError", 400)],
    ["EntityTooLarge", s3Error("EntityTooLarge", 400)],
    ["MetadataTooLarge", s3Error("MetadataTooLarge", 400)],
    ["InvalidArgument", s3Error("InvalidArgument", 400)],
    ["any other 400", s3Error("SomethingNew", 400)],
  ])("%s can never succeed: not retryable", (_what, err) => {
    expect(isRetryableS3Error(err)).toBe(false);
  });

  it.each([
    ["SlowDown 503", s3Error("SlowDown", 503)],
    ["InternalError 500", s3Error("InternalError", 500)],
    ["ServiceUnavailable 503", s3Error("ServiceUnavailable", 503)],
    ["RequestTimeout 400", s3Error("RequestTimeout", 400)],
    ["ExpiredToken 400", s3Error("ExpiredToken", 400)],
    ["AccessDenied 403 (an operator fixes it)", s3Error("AccessDenied", 403)],
    ["NoSuchBucket 404 (an operator creates it)", s3Error("NoSuchBucket", 404)],
    ["a timeout", Object.assign(new Error("socket hang up"), { name: "TimeoutError" })],
    ["a reset connection", Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })],
    ["a TypeError without a Node code", new TypeError("something unexpected")],
    ["a non-error", "boom"],
  ])("%s: retryable", (_what, err) => {
    expect(isRetryableS3Error(err)).toBe(true);
  });

  it("a PutObject that S3 refuses as invalid rejects not retryable, naming the code", async () => {
    const failure = s3Error("InvalidArgument", 400);
    const s3 = new S3Destination(
      { s3: { send: vi.fn().mockRejectedValue(failure) } as unknown as S3Client },
      {
        type: "s3",
        bucket: "shared",
        keyTemplate: "{account}/{batchId}",
        gzip: true,
        serverSideEncryption: "",
        kmsKeyId: "",
      },
    );
    const err = await deliveryError(s3.deliver(batch(1), signal()));
    expect(err).toMatchObject({ retryable: false, destination: "s3" });
    expect(err.message).toContain("InvalidArgument");
  });
});

describe("redactUrl", () => {
  it.each([
    ["https://partner.test/ingest?key=s3cr3t&x=1", "https://partner.test/ingest?key=REDACTED&x=REDACTED"],
    ["https://user:pa55@partner.test/ingest", "https://user:REDACTED@partner.test/ingest"],
    ["https://user:pa55@w0rd@partner.test/x?a=b", "https://user:REDACTED@partner.test/x?a=REDACTED"],
    ["https://user@partner.test/ingest", "https://user@partner.test/ingest"],
    ["https://partner.test/ingest", "https://partner.test/ingest"],
    ["https://partner.test/ingest?s3cr3t", "https://partner.test/ingest?REDACTED"],
    ["https://partner.test/?a=&b=1&&c=x=y", "https://partner.test/?a=&b=REDACTED&&c=REDACTED"],
    ["https://partner.test/#access_token=s3cr3t", "https://partner.test/#access_token=REDACTED"],
    ["https://partner.test/{account}?key={queue}", "https://partner.test/{account}?key=REDACTED"],
    ["https://sqs.us-east-1.amazonaws.com/1234/in-acme", "https://sqs.us-east-1.amazonaws.com/1234/in-acme"],
    ["not a url ?token=s3cr3t", "not a url ?token=REDACTED"],
    ["", ""],
    ["://::@@??##", "://::@@?REDACTED#REDACTED"],
    ["http://[::1", "http://[::1"],
  ])("%s → %s", (url, redacted) => {
    expect(redactUrl(url)).toBe(redacted);
  });

  it("never throws, whatever it is given", () => {
    for (const url of ["%", "http://%zz", "\uD800", "?", "#", "@", "a:b@c", undefined as unknown as string]) {
      expect(() => redactUrl(url)).not.toThrow();
    }
  });
});

describe("HttpDestination redacts its URL's secrets", () => {
  const http = (url: string) =>
    new HttpDestination(
      { env: {} },
      {
        type: "http",
        url,
        headers: {},
        authTokenEnv: "",
        authScheme: "Bearer",
        format: "ndjson",
        timeoutMs: 2000,
      },
    );

  /** Everything a log line or /partners could show of the error: message, stack, causes and their fields. */
  const texts = (err: DeliveryError) => [err.message, String(err), inspect(err, { depth: 10 })];

  it("a failing HTTP destination with ?key=s3cr3t&x=1: no error text holds the secret", async () => {
    const server = createServer((_req, res) => res.writeHead(500).end());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const answered = await deliveryError(
        http(`http://127.0.0.1:${port}/ingest/{account}?key=s3cr3t&x=1`).deliver(batch(1), signal()),
      );
      expect(answered.message).toBe(
        `POST http://127.0.0.1:${port}/ingest/acme?key=REDACTED&x=REDACTED answered 500`,
      );
      for (const text of texts(answered)) expect(text).not.toContain("s3cr3t");
    } finally {
      server.close();
    }
    // Nor when no answer comes, nor when the URL cannot even be parsed (its parse error quotes it).
    for (const url of ["http://127.0.0.1:1/ingest?key=s3cr3t&x=1", "http://bad host/ingest?key=s3cr3t&x=1"]) {
      const err = await deliveryError(http(url).deliver(batch(1), signal()));
      expect(err.retryable).toBe(true);
      expect(err.message).toContain("key=REDACTED");
      for (const text of texts(err)) expect(text).not.toContain("s3cr3t");
    }
  });

  it("a password in the URL is redacted too", async () => {
    const err = await deliveryError(
      http("http://user:pa55w0rd@127.0.0.1:1/ingest").deliver(batch(1), signal()),
    );
    for (const text of texts(err)) expect(text).not.toContain("pa55w0rd");
    expect(err.message).toContain("user:REDACTED@");
  });
});

describe("SqsDestination redacts its queue URL's secrets", () => {
  it("an error names the queue URL with its query values redacted", async () => {
    const url = "https://sqs.us-east-1.amazonaws.com/123456789012/in-acme?token=s3cr3t";
    const send = vi
      .fn()
      .mockRejectedValue(Object.assign(new Error(`cannot reach ${url}`), { name: "TimeoutError" }));
    const destination = new SqsDestination(
      { sqs: { send } as unknown as SQSClient },
      { type: "sqs", queueUrl: url },
    );
    const err = await deliveryError(destination.deliver(batch(1), signal()));
    expect(err.message).toContain("in-acme?token=REDACTED");
    expect(err.message).not.toContain("s3cr3t");
  });
});

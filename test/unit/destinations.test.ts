import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
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
import type { Batch } from "../../src/destinations/destination.ts";
import { HttpDestination, retryAfterMs } from "../../src/destinations/http.ts";
import { S3Destination } from "../../src/destinations/s3.ts";
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
    const b = batch(23, { account: "acme.corp" });
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

    await destination.deliver({ ...b }, signal());
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

    await destination.deliver(b, signal());
    expect(fake.inputs[3]?.Entries?.map((e) => e.MessageBody)).toEqual(
      b.lines.slice(10, 20).map((l) => l.trimEnd()),
    );
    expect(fake.inputs).toHaveLength(4);
  });

  it("forget() drops what was sent of a batch given up on", async () => {
    const fake = fakeSqs((entries, call) =>
      call === 0
        ? { Successful: succeed(entries.slice(1)), Failed: fail(entries.slice(0, 1), false) }
        : { Successful: succeed(entries) },
    );
    const destination = sqs(fake.client);
    const b = batch(5);
    await deliveryError(destination.deliver(b, signal()));
    destination.forget(b.batchId);
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

  it("renders a bucket template per account, lowercased, other characters made hyphens", async () => {
    const fake = fakeS3();
    const destination = s3(fake.client, { bucket: "{account}-out" });
    await destination.deliver(batch(1, { account: "Acme" }), signal());
    await destination.deliver(batch(1, { account: "Big_Corp/EU" }), signal());
    await destination.deliver(batch(1, { account: "globex.io" }), signal());
    expect(fake.inputs.map((i) => i.Bucket)).toEqual(["acme-out", "big-corp-eu-out", "globex.io-out"]);
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

/**
 * Account names against real targets: a bucket per account on the emulator's S3, a queue per
 * account on its SQS, an HTTP partner on loopback. A name that cannot be put into its target as it
 * is fails for good (dead-lettered with the reason); it never reaches another account's target.
 */
import type { RequestListener } from "node:http";
import { gunzipSync } from "node:zlib";
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { CreateQueueCommand } from "@aws-sdk/client-sqs";
import { describe, expect } from "vitest";
import type { Batch } from "../../src/destinations/destination.ts";
import { decodeMetadataValue, S3Destination } from "../../src/destinations/s3.ts";
import { DeliveryError } from "../../src/errors.ts";
import {
  type Emulator,
  readDeadLetters,
  readDelivered,
  receiveAll,
  sendBodies,
  uniqueName,
  waitFor,
} from "../helpers/emulator.ts";
import { it } from "../helpers/fixtures.ts";
import type { LoopbackServer } from "../helpers/partner-server.ts";
import { sampleHandler } from "../helpers/service.ts";

/** A partner endpoint on loopback that records the path of every request and the records it held. */
async function recordingPartner(startHttpServer: (handler: RequestListener) => Promise<LoopbackServer>) {
  const received: { path: string; accounts: string[] }[] = [];
  const server = await startHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const lines = Buffer.concat(chunks).toString("utf8").split("\n").filter(Boolean);
      received.push({
        path: req.url ?? "",
        accounts: lines.map((l) => (JSON.parse(l) as { account: string }).account),
      });
      res.writeHead(200).end();
    });
  });
  return { url: server.url, received };
}

/** Sends one message per account name (passthrough routes each to the account in its body). */
async function sendFor(emu: Emulator, queueUrl: string, accounts: string[]): Promise<Map<string, string>> {
  const ids = await sendBodies(
    emu,
    queueUrl,
    accounts.map((account, i) => ({ account, i })),
  );
  return new Map(ids.map((id, i) => [id, accounts[i] as string]));
}

const dispatch = { flushIntervalMs: 100, retryBaseMs: 50, retryMaxMs: 200 };

describe("account names that cannot name their target are dead-lettered with the reason, never delivered elsewhere", () => {
  it('HTTP /p/{account}/ingest: records of ".." never reach /ingest nor those of "." /p/ingest', async ({
    emulator: emu,
    queue: q,
    startService,
    startHttpServer,
  }) => {
    const partner = await recordingPartner(startHttpServer);
    const accounts = ["..", "acme", ".", "..", "%2e", "acme", "."];
    const sent = await sendFor(emu, q.url, accounts);
    const service = await startService({
      dispatch,
      destination: { type: "http", url: `${partner.url}/p/{account}/ingest` },
      queues: [{ queue: q.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
    });
    await waitFor("every message deleted", () => service?.relays[0]?.stats.deleted === accounts.length);
    const paths = new Set(partner.received.map((r) => r.path));
    expect(paths).toEqual(new Set(["/p/acme/ingest", "/p/%252e/ingest"]));
    for (const r of partner.received) {
      expect(new Set(r.accounts)).toEqual(new Set([r.path === "/p/acme/ingest" ? "acme" : "%2e"]));
    }
    expect(partner.received.flatMap((r) => r.accounts).sort()).toEqual(["%2e", "acme", "acme"]);

    const dead = new Map<string, string>();
    await waitFor("4 dead letters", async () => (await readDeadLetters(emu, q.dlqUrl, dead)).length === 4);

    for (const [id, reason] of dead) {
      const account = sent.get(id) as string;
      expect([".", ".."]).toContain(account);
      expect(reason).toContain(
        `account ${JSON.stringify(account)} cannot name an HTTP endpoint from template "${partner.url}/p/{account}/ingest"`,
      );
      expect(reason).toContain(`partners.accounts.${JSON.stringify(account)}.destination.url`);
    }
  });

  it("S3 bucket b-{account}: \"ACME\" never lands in acme's bucket, nor x_y or X-Y in x-y's", async ({
    emulator: emu,
    queue: q,
    startService,
  }) => {
    const prefix = uniqueName("b");
    for (const account of ["acme", "x-y"]) {
      await emu.s3.send(new CreateBucketCommand({ Bucket: `${prefix}-${account}` }));
    }
    const accounts = ["acme", "ACME", "x-y", "x_y", "X-Y", "Acme"];
    const sent = await sendFor(emu, q.url, accounts);
    const service = await startService({
      dispatch,
      destination: { type: "s3", bucket: `${prefix}-{account}` },
      queues: [{ queue: q.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
    });
    await waitFor("every message deleted", () => service?.relays[0]?.stats.deleted === accounts.length);
    const inAcme = await readDelivered(emu, `${prefix}-acme`);
    const inXY = await readDelivered(emu, `${prefix}-x-y`);
    expect(inAcme.map((r) => r.account)).toEqual(["acme"]);
    expect(inXY.map((r) => r.account)).toEqual(["x-y"]);

    const dead = new Map<string, string>();
    await waitFor("4 dead letters", async () => (await readDeadLetters(emu, q.dlqUrl, dead)).length === 4);

    expect(new Set([...dead.keys()].map((id) => sent.get(id)))).toEqual(
      new Set(["ACME", "x_y", "X-Y", "Acme"]),
    );
    for (const [id, reason] of dead) {
      const account = sent.get(id) as string;
      expect(reason).toContain(
        `account ${JSON.stringify(account)} cannot name an S3 bucket from template "${prefix}-{account}"`,
      );
      expect(reason).toContain(
        `name its bucket explicitly under partners.accounts.${JSON.stringify(account)}.destination.bucket`,
      );
    }
  });

  it('SQS in-{account}: "x.y" never lands in the queue of account x-y', async ({
    emulator: emu,
    queue: q,
    startService,
  }) => {
    const prefix = uniqueName("in");
    const urls = new Map<string, string>();
    for (const account of ["x-y", "x_y"]) {
      const created = await emu.sqs.send(new CreateQueueCommand({ QueueName: `${prefix}-${account}` }));
      urls.set(account, created.QueueUrl as string);
    }
    const template = (urls.get("x-y") as string).replace(/x-y$/, "{account}");
    const accounts = ["x-y", "x.y", "x_y", "x.y"];
    const sent = await sendFor(emu, q.url, accounts);
    const service = await startService({
      dispatch,
      destination: { type: "sqs", queueUrl: template },
      queues: [{ queue: q.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
    });
    await waitFor("every message deleted", () => service?.relays[0]?.stats.deleted === accounts.length);
    const accountsIn = async (account: string) =>
      (await receiveAll(emu, urls.get(account) as string)).map(
        (m) => (JSON.parse(m.Body as string) as { account: string }).account,
      );
    expect(await accountsIn("x-y")).toEqual(["x-y"]);
    expect(await accountsIn("x_y")).toEqual(["x_y"]);

    const dead = new Map<string, string>();
    await waitFor("2 dead letters", async () => (await readDeadLetters(emu, q.dlqUrl, dead)).length === 2);

    for (const [id, reason] of dead) {
      expect(sent.get(id)).toBe("x.y");
      expect(reason).toContain('account "x.y" cannot name an SQS queue from template');
      expect(reason).toContain('partners.accounts."x.y".destination.queueUrl');
    }
  });
});

describe("a non-Latin-1 account is delivered to S3", () => {
  function batchFor(account: string): Batch {
    const lines = [1, 2, 3].map((n) => `${JSON.stringify({ id: `m${n}`, account, payload: { n } })}\n`);
    return {
      queue: "orders",
      account,
      batchId: uniqueName("batch"),
      createdAt: new Date("2025-03-01T23:45:06Z"),
      lines,
      bytes: Buffer.byteLength(lines.join("")),
    };
  }

  it.for<[string, string]>([
    ["the default key template", "{queue}/{account}/{yyyy}/{MM}/{dd}/{HH}/{batchId}.ndjson.gz"],
    ["the park key template", "parked/{account}/{queue}/{yyyy}/{MM}/{dd}/{batchId}.ndjson.gz"],
  ])(
    'account "中文" with %s: the object holds its records and its metadata decodes to the account',
    async ([_what, keyTemplate], { emulator: emu, bucket }) => {
      const destination = new S3Destination(
        { s3: emu.s3 },
        { type: "s3", bucket, keyTemplate, gzip: true, serverSideEncryption: "", kmsKeyId: "" },
      );
      const batch = batchFor("中文");
      await destination.deliver(batch, AbortSignal.timeout(10_000));

      const listed = await emu.s3.send(new ListObjectsV2Command({ Bucket: bucket }));
      const keys = (listed.Contents ?? []).map((o) => o.Key);
      expect(keys).toEqual([destination.keyFor(batch)]);
      expect(keys[0]).toContain("/%E4%B8%AD%E6%96%87/");
      const got = await emu.s3.send(new GetObjectCommand({ Bucket: bucket, Key: keys[0] }));
      const body = gunzipSync(
        Buffer.from(
          await (got.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
        ),
      );
      expect(body.toString("utf8")).toBe(batch.lines.join(""));
      expect(decodeMetadataValue(got.Metadata?.account ?? "")).toBe("中文");
      expect(got.Metadata?.records).toBe("3");
    },
  );

  it("an account S3 can never store under its key fails for good before any request", async ({
    emulator: emu,
    bucket,
  }) => {
    const destination = new S3Destination(
      { s3: emu.s3 },
      {
        type: "s3",
        bucket,
        keyTemplate: "{account}/{batchId}",
        gzip: true,
        serverSideEncryption: "",
        kmsKeyId: "",
      },
    );
    const err = await destination.deliver(batchFor("a".repeat(1100)), AbortSignal.timeout(10_000)).then(
      () => expect.fail("deliver resolved"),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DeliveryError);
    expect(err).toMatchObject({ retryable: false });
    expect((err as Error).message).toMatch(/byte S3 key .*at most 1024 bytes/);
    const listed = await emu.s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    expect(listed.Contents ?? []).toEqual([]);
  });
});

/**
 * The handler developer's loop: `octorelay try <handler>` as a real process (the real service on the
 * embedded emulator, HTTP partners really POSTed), `runHandler` for unit tests of a handler, and the
 * contract imported as "octorelay/handler" from anywhere.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PermanentError, runHandler } from "octorelay/handler";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import handleOrder from "../../handlers/order-events.ts";
import type { Service } from "../../src/service.ts";
import { APP, runOctorelay } from "../helpers/cli-process.ts";
import {
  createBucket,
  createQueue,
  type Emulator,
  readDelivered,
  sendBodies,
  startEmulator,
  waitFor,
} from "../helpers/emulator.ts";
import { type PartnerServer, startPartnerServer } from "../helpers/partner-server.ts";
import { startService } from "../helpers/service.ts";

const ORDER_EVENTS = join(APP, "handlers", "order-events.ts");

function tempFile(name: string, text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), "octorelay-try-")), name);
  writeFileSync(file, text);
  return file;
}

const order = (n: number, extra: object = {}) =>
  JSON.stringify({ orderId: `o-${n}`, merchant: "acme", total: 100, currency: "EUR", ...extra });

describe("octorelay try", () => {
  it("prints what each message produced and where it went, and exits 1 when one was dead-lettered", async () => {
    const samples = tempFile(
      "orders.jsonl",
      [
        order(1, { affiliates: [{ account: "blog-42", rate: 0.05 }] }),
        order(2, { test: true }),
        "",
        JSON.stringify({ orderId: "o-3", total: "lots" }),
      ].join("\n"),
    );
    const run = await runOctorelay(["try", "handlers/order-events.ts", "--messages", samples]);
    expect(run.code).toBe(1);
    const out = run.stdout;
    expect(out).toMatch(/^message 1 \(line 1\): \{"orderId":"o-1"/m);
    expect(out).toMatch(
      /^ {2}delivered → s3:\/\/octorelay-try\/order-events\/acme\/\d{4}\/\d\d\/\d\d\/\d\d\/[\w-]+\.ndjson\.gz \(account acme, 1 record\)$/m,
    );
    expect(out).toContain('      {"type":"order","orderId":"o-1","total":100,"currency":"EUR"}');
    expect(out).toMatch(
      /delivered → s3:\/\/octorelay-try\/order-events\/blog-42\/.* \(account blog-42, 1 record\)/,
    );
    expect(out).toContain('"type":"commission","orderId":"o-1","merchant":"acme","amount":5');
    expect(out).toMatch(/^message 2 \(line 2\): .*\n {2}no output$/m);
    expect(out).toMatch(
      /^message 3 \(line 4\): .*\n {2}dead-lettered: PermanentError: order event needs a merchant string and a numeric total$/m,
    );
    expect(out).toContain("3 messages: 1 delivered, 1 no output, 1 dead-lettered");
    expect(out).toContain("exit 1: 1 message was dead-lettered");
  });

  it("reads bodies from stdin and exits 0 when every message settled without a dead-letter", async () => {
    const run = await runOctorelay(["try", "passthrough"], {
      input: `${JSON.stringify({ account: "acme", n: 1 })}\n${JSON.stringify({ account: "globex", n: 2 })}\n`,
    });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      /delivered → s3:\/\/octorelay-try\/passthrough\/acme\/.* \(account acme, 1 record\)/,
    );
    expect(run.stdout).toMatch(
      /delivered → s3:\/\/octorelay-try\/passthrough\/globex\/.* \(account globex, 1 record\)/,
    );
    expect(run.stdout).toContain("2 messages: 2 delivered");
    expect(run.stdout).not.toContain("exit 1");
  });

  it("reads a JSON array file; a body that is not JSON is dead-lettered with the reason", async () => {
    const samples = tempFile("bodies.json", JSON.stringify([{ account: "acme" }, { nobody: true }]));
    const run = await runOctorelay(["try", "handlers/passthrough.ts", "--messages", samples]);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^message 1 \(item 1\): \{"account":"acme"\}\n {2}delivered → /m);
    expect(run.stdout).toMatch(
      /^message 2 \(item 2\): .*\n {2}dead-lettered: PermanentError: body has no "account" string/m,
    );
    const malformed = await runOctorelay(["try", "passthrough"], { input: "{not json\n" });
    expect(malformed.code).toBe(1);
    expect(malformed.stdout).toMatch(/^ {2}dead-lettered: body is not valid JSON: /m);
  });

  it("--account-field routes the passthrough sample by another body field", async () => {
    const run = await runOctorelay(["try", "passthrough", "--account-field", "tenant.id"], {
      input: JSON.stringify({ tenant: { id: "initech" }, event: "signup" }),
    });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      /delivered → s3:\/\/octorelay-try\/passthrough\/initech\/.* \(account initech, 1 record\)/,
    );
  });

  it("retries a handler that throws, then dead-letters the message after --attempts receives", async () => {
    const handler = tempFile(
      "flaky.ts",
      [
        'import type { Handler } from "octorelay/handler";',
        "const handle: Handler = async () => {",
        '  throw new Error("inventory service unavailable");',
        "};",
        "export default handle;",
      ].join("\n"),
    );
    const run = await runOctorelay(["try", handler, "--attempts", "2"], { input: order(1) });
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^ {2}retried: Error: inventory service unavailable \(receive 1\)$/m);
    expect(run.stdout).toMatch(
      /^ {2}dead-lettered: handler failed on receive 2 of 2: Error: inventory service unavailable$/m,
    );
  });

  describe("with an HTTP partner from --config", () => {
    let partner: PartnerServer;
    beforeAll(async () => {
      partner = await startPartnerServer();
    });
    afterAll(async () => {
      await partner.close();
    });

    it("really POSTs the batch and says where it went", async () => {
      const config = tempFile(
        "config.json",
        JSON.stringify({
          destination: { type: "http", url: `${partner.url}/ingest/{account}` },
          queues: [{ queue: "orders", handler: ORDER_EVENTS, dispatch: { flushIntervalMs: 200 } }],
        }),
      );
      const run = await runOctorelay(["try", ORDER_EVENTS, "--config", config], { input: order(7) });
      expect(run.code).toBe(0);
      expect(run.stdout).toContain(
        `  delivered → POST ${partner.url}/ingest/acme (200) (account acme, 1 record)`,
      );
      expect(partner.records()).toMatchObject([
        { account: "acme", payload: { type: "order", orderId: "o-7", total: 100 } },
      ]);
    });
  });

  it("delivers to a partner's SQS queue (made on the emulator) and to a bucket per partner", async () => {
    const sqsConfig = tempFile(
      "sqs.json",
      JSON.stringify({
        destination: {
          type: "sqs",
          queueUrl: "https://sqs.eu-west-1.amazonaws.com/111122223333/in-{account}",
        },
      }),
    );
    const viaSqs = await runOctorelay(["try", "passthrough", "--config", sqsConfig], {
      input: '{"account":"acme"}',
    });
    expect(viaSqs.code).toBe(0);
    expect(viaSqs.stdout).toContain(
      "  delivered → sqs https://sqs.eu-west-1.amazonaws.com/111122223333/in-acme (account acme, 1 record)",
    );
    const bucketConfig = tempFile(
      "s3.json",
      JSON.stringify({ destination: { bucket: "partner-{account}" } }),
    );
    const perPartner = await runOctorelay(["try", "passthrough", "--config", bucketConfig], {
      input: '{"account":"acme"}',
    });
    expect(perPartner.code).toBe(0);
    expect(perPartner.stdout).toMatch(
      / {2}delivered → s3:\/\/partner-acme\/passthrough\/acme\/.* \(account acme, 1 record\)/,
    );
  });

  it("a handler that cannot load is one line naming its file:line:col, exit 1", async () => {
    const handler = tempFile("broken.ts", "export default function handle( {\n  return [];\n}\n");
    const run = await runOctorelay(["try", handler], { input: order(1) });
    expect(run.code).toBe(1);
    expect(run.errorLines.filter((l) => l.startsWith("octorelay try: "))).toHaveLength(1);
    expect(run.stderr).toMatch(
      new RegExp(`octorelay try: could not start broken: handler ${handler}:\\d+:\\d+: `),
    );
    expect(run.stdout).toBe("");
  });

  it("without sample messages, or with a handler that does not exist, exits 2 with one line", async () => {
    const none = await runOctorelay(["try", "passthrough"], { input: "\n\n" });
    expect(none.code).toBe(2);
    expect(none.errorLines).toEqual([
      "octorelay try: no sample messages in stdin (see octorelay try --help)",
    ]);
    const missing = await runOctorelay(["try", "no-such-handler.ts"], { input: "{}" });
    expect(missing.code).toBe(2);
    expect(missing.errorLines[0]).toMatch(
      /^octorelay try: handler "no-such-handler.ts" not found \(looked in /,
    );
  });
});

describe("runHandler: a handler's unit test", () => {
  it("returns the outputs of handlers/order-events.ts for a body", async () => {
    const outputs = await runHandler(handleOrder, {
      orderId: "o-1",
      merchant: "acme",
      total: 120,
      currency: "EUR",
      affiliates: [{ account: "blog-42", rate: 0.05 }],
    });
    expect(outputs).toEqual([
      { account: "acme", payload: { type: "order", orderId: "o-1", total: 120, currency: "EUR" } },
      {
        account: "blog-42",
        payload: { type: "commission", orderId: "o-1", merchant: "acme", amount: 6, currency: "EUR" },
      },
    ]);
    expect(
      await runHandler(handleOrder, {
        orderId: "o-2",
        merchant: "acme",
        total: 1,
        currency: "EUR",
        test: true,
      }),
    ).toEqual([]);
  });

  it("returns the PermanentError that dead-letters a message: thrown, not JSON, or an undeliverable output", async () => {
    const thrown = await runHandler(handleOrder, { orderId: "o-3", total: "lots" } as never);
    expect(thrown).toBeInstanceOf(PermanentError);
    expect((thrown as PermanentError).message).toBe(
      "order event needs a merchant string and a numeric total",
    );
    const notJson = await runHandler(handleOrder, "{not json");
    expect(notJson).toBeInstanceOf(PermanentError);
    expect((notJson as PermanentError).message).toMatch(/^body is not valid JSON: /);
    const noAccount = await runHandler(() => ({ account: "", payload: 1 }), {});
    expect((noAccount as PermanentError).message).toMatch(
      /^output\[0\] must be \{ account: non-empty string, payload \}/,
    );
  });

  it("rethrows any other error: the service would retry that message", async () => {
    await expect(
      runHandler(() => {
        throw new Error("database down");
      }, {}),
    ).rejects.toThrow("database down");
  });
});

describe('the contract as "octorelay/handler"', () => {
  let emu: Emulator;
  let service: Service | undefined;
  beforeAll(async () => {
    emu = await startEmulator();
  });
  afterAll(async () => {
    await service?.stop(AbortSignal.timeout(5000));
    await emu.stop();
  });

  it("a handler in a directory outside the app imports PermanentError from it", async () => {
    const handler = tempFile(
      "outside.ts",
      [
        'import { type Handler, PermanentError } from "octorelay/handler";',
        "const handle: Handler<{ account?: string }> = async (message) => {",
        '  if (!message.body.account) throw new PermanentError("no account");',
        "  return { account: message.body.account, payload: message.body };",
        "};",
        "export default handle;",
      ].join("\n"),
    );
    const q = await createQueue(emu);
    const bucket = await createBucket(emu);
    service = await startService(emu, {
      destination: { bucket },
      queues: [{ queue: q.name, handler, deadLetterQueue: q.dlqName }],
    });
    await sendBodies(emu, q.url, [{ account: "acme", n: 1 }, { n: 2 }]);
    const relay = service.relays[0];
    await waitFor("both messages settled", () => (relay && relay.stats.deleted >= 2 ? true : undefined));
    expect(relay?.stats.deadLettered).toBe(1);
    const delivered = await readDelivered(emu, bucket);
    expect(delivered.map((r) => r.account)).toEqual(["acme"]);
  });
});

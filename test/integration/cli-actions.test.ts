/**
 * `octorelay partners …` and `octorelay dead-letters …` as real CLI processes, against a real
 * Service relaying real traffic on the embedded emulator to real HTTP partners on loopback, with
 * the real ops server and console answering the CLI.
 */
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.ts";
import { serviceConsole } from "../../src/ops/console/wiring.ts";
import { Metrics } from "../../src/ops/metrics.ts";
import { type OpsServer, startOpsServer } from "../../src/ops/ops-server.ts";
import { Service } from "../../src/service.ts";
import { runOctorelay } from "../helpers/cli-process.ts";
import {
  createBucket,
  createQueue,
  type Emulator,
  queueDepth,
  sendBodies,
  startEmulator,
  type TestQueue,
  waitFor,
} from "../helpers/emulator.ts";
import { type PartnerServer, startPartnerServer } from "../helpers/partner-server.ts";
import { FIXTURE_HANDLERS, type ServiceOverrides, testConfig } from "../helpers/service.ts";

const TOKEN = "cli-actions-test-token-4b1e9d";

let emu: Emulator;
let queue: TestQueue;
let bucket: string;
let acme: PartnerServer;
let beta: PartnerServer;
let config: Config;
let service: Service;
let metrics: Metrics;
let ops: OpsServer;
const dir = mkdtempSync(join(tmpdir(), "octorelay-cli-actions-"));
const silent = pino({ level: "silent" });

/** `octorelay partners …` against this test's service, with the token unless `env` says otherwise. */
const partners = (args: string[], env: Record<string, string | undefined> = { OCTORELAY_OPS_TOKEN: TOKEN }) =>
  runOctorelay(["partners", ...args, "--url", ops.url], { env });

const heldBy = (account: string) => {
  const s = service.partnerSnapshots().find((p) => p.account === account);
  return s ? s.buffered + s.inFlight : 0;
};

beforeAll(async () => {
  emu = await startEmulator();
  queue = await createQueue(emu, { maxReceiveCount: 5 });
  bucket = await createBucket(emu);
  acme = await startPartnerServer();
  beta = await startPartnerServer();
  const overrides = {
    destination: { bucket },
    queues: [
      {
        queue: queue.name,
        handler: "console-poison-once.ts",
        deadLetterQueue: queue.dlqName,
        waitTimeSec: 1,
        // Partners stay known through the test, so `show` has one to show.
        dispatch: { flushIntervalMs: 100, emptyFlushLimit: 100_000 },
      },
    ],
    partners: {
      accounts: {
        acme: { destination: { type: "http", url: `${acme.url}/ingest` } },
        beta: { destination: { type: "http", url: `${beta.url}/ingest` } },
      },
    },
    ops: { token: TOKEN },
  };
  config = testConfig(emu, overrides as unknown as ServiceOverrides);
  service = new Service({ sqs: emu.sqs, s3: emu.s3, log: silent, env: {} }, config);
  await service.start();
  metrics = new Metrics(service, config.ops);
  ops = await startOpsServer(
    {
      service,
      metrics,
      log: silent,
      console: serviceConsole({ service, sqs: emu.sqs, s3: emu.s3, log: silent, env: {} }, config),
    },
    { host: "127.0.0.1", port: 0, token: TOKEN, requireTokenForRead: false },
  );
}, 60_000);

afterAll(async () => {
  await ops?.close();
  await service?.stop(AbortSignal.timeout(10_000));
  await acme?.close();
  await beta?.close();
  await emu?.stop();
});

describe("octorelay partners", () => {
  it("pause holds everything for the partner, resume delivers all of it; show and list say it is paused", async () => {
    const paused = await partners(["pause", "acme", "--for", "1h"]);
    expect(paused.errorLines).toEqual([]);
    expect(paused.code).toBe(0);
    expect(paused.stdout).toMatch(
      /^paused acme until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: nothing is sent to it/,
    );

    await sendBodies(emu, queue.url, [
      ...Array.from({ length: 5 }, (_, n) => ({ account: "acme", n })),
      ...Array.from({ length: 5 }, (_, n) => ({ account: "beta", n })),
    ]);
    // beta, sent beside it and not paused, is delivered: acme would have been too.
    await waitFor("beta's 5 records delivered", () => beta.records().length === 5);
    await waitFor("acme's 5 records held", () => heldBy("acme") === 5);
    expect(acme.records()).toHaveLength(0);

    const show = await partners(["show", "acme", "--json"]);
    expect(show.code).toBe(0);
    const shown = JSON.parse(show.stdout) as {
      known: boolean;
      buffered: number;
      inFlight: number;
      pause?: { reason: string; untilMs: number };
    };
    expect(shown).toMatchObject({ account: "acme", known: true, pause: { reason: "operator" } });
    expect(shown.buffered + shown.inFlight).toBe(5);
    expect(shown.pause?.untilMs).toBeGreaterThan(Date.now() + 55 * 60_000);
    const text = await partners(["show", "acme"]);
    expect(text.stdout).toMatch(/^state: +\w+; paused \(by an operator\) until .*, \d+ min from now$/m);
    expect(text.stdout).toMatch(/^held: +5 records/m);

    const list = await partners(["list"]);
    expect(list.code).toBe(0);
    expect(list.stdout.split("\n")[0]).toMatch(/^ACCOUNT +STATE +HELD +OLDEST +PARKED +PAUSED +LAST ERROR$/);
    expect(list.stdout).toMatch(/^acme +\S+ +5 +.* operator for 60 min/m);
    expect(list.stdout).toMatch(/^2 partners$/m);

    const resumed = await partners(["resume", "acme"]);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toBe("resumed acme: what it holds is being sent now, within its limits\n");
    await waitFor("acme's 5 records delivered after resume", () => acme.records().length === 5);
    expect(
      acme
        .records()
        .map((r) => (r.payload as { n: number }).n)
        .sort(),
    ).toEqual([0, 1, 2, 3, 4]);
    const again = await partners(["resume", "acme", "--json"]);
    expect(JSON.parse(again.stdout)).toEqual({
      ok: true,
      action: "resume",
      account: "acme",
      wasPaused: false,
    });
  });

  it("without the token, or with a wrong one, exits 1 with the server's message, and pauses nothing", async () => {
    const none = await partners(["pause", "acme", "--for", "1h"], { OCTORELAY_OPS_TOKEN: undefined });
    expect(none.code).toBe(1);
    expect(none.errorLines).toEqual([
      "octorelay partners pause: the service answered 401: this action needs the ops token: log in, or send Authorization: Bearer <token> ($OCTORELAY_OPS_TOKEN is not set: put the ops token there, or name another variable with --token-env)",
    ]);
    const wrong = await partners(["pause", "acme", "--json"], { OCTORELAY_OPS_TOKEN: "not-the-token" });
    expect(wrong.code).toBe(1);
    expect(JSON.parse(wrong.stdout)).toEqual({
      ok: false,
      status: 401,
      error:
        "the service answered 401: Authorization: the bearer token is not the ops token (the token in $OCTORELAY_OPS_TOKEN was refused)",
    });
    expect(wrong.stderr).not.toContain("not-the-token");
    expect(await service.partners.limits.pauseOf("acme")).toBeUndefined();
    // The token from a variable the user names.
    const named = await partners(["resume", "acme", "--token-env", "MY_OPS_TOKEN"], { MY_OPS_TOKEN: TOKEN });
    expect(named.code).toBe(0);
    const unset = await partners(["resume", "acme", "--token-env", "MY_OPS_TOKEN"], {});
    expect(unset.code).toBe(2);
    expect(unset.errorLines[0]).toContain("--token-env MY_OPS_TOKEN: $MY_OPS_TOKEN is not set");
  });

  it("bad arguments exit 2 with one line; an unreachable service exits 1 with one line", async () => {
    const cases: [string[], RegExp][] = [
      [
        ["pause", "acme", "--for", "13h"],
        /^octorelay partners pause: --for: must be a duration .* at most 12h .*got "13h"/,
      ],
      [
        ["pause", "acme", "--token", "x"],
        /^octorelay partners pause: unknown option --token: the ops token is never given on the command line/,
      ],
      [
        ["list", "--sort", "size"],
        /^octorelay partners list: the service answered 400: sort: must be one of held, oldest, account; got "size"/,
      ],
      [["show"], /^octorelay partners show: missing <account>/],
      [["bogus"], /^octorelay partners: unknown action "bogus"; valid: list, show, pause, resume, replay/],
    ];
    for (const [args, line] of cases) {
      const run = await runOctorelay(
        ["partners", ...args, ...(args[0] === "bogus" ? [] : ["--url", ops.url])],
        {
          env: { OCTORELAY_OPS_TOKEN: TOKEN },
        },
      );
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.errorLines, args.join(" ")).toHaveLength(1);
      expect(run.errorLines[0]).toMatch(line);
    }
    const closed = await startPartnerServer();
    const url = closed.url;
    await closed.close();
    const down = await runOctorelay(["partners", "list", "--url", url]);
    expect(down.code).toBe(1);
    expect(down.errorLines).toEqual([
      expect.stringMatching(
        new RegExp(
          `^octorelay partners list: could not reach the ops server at ${url}: .*ECONNREFUSED.*; is the service running`,
        ),
      ),
    ]);
  });

  it.each([
    [
      "partners",
      "list",
      ["--state", "--prefix", "--sort", "--limit", "--offset", "--url", "--token-env", "--json"],
    ],
    ["partners", "pause", ["<account>", "--for", "--url", "--token-env", "--json"]],
    ["partners", "replay", ["<account>", "--url"]],
    ["dead-letters", "peek", ["--queue", "--max", "--config", "--json"]],
    ["dead-letters", "redrive", ["--queue", "--all", "--id", "--config", "--json"]],
  ])("%s %s --help lists its options", async (group, action, options) => {
    const run = await runOctorelay([group, action, "--help"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`usage: octorelay ${group} ${action}`);
    for (const option of options) expect(run.stdout).toContain(option);
    expect(run.stdout).toContain("exit codes:");
  });
});

describe("octorelay dead-letters", () => {
  it("peek shows a poison message's reason; redrive moves it back and it is handled", async () => {
    const configFile = join(dir, "config.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        destination: { bucket },
        queues: [{ queue: queue.name, handler: "console-poison-once.ts", deadLetterQueue: queue.dlqName }],
      }),
    );
    const env = {
      AWS_ENDPOINT_URL: emu.endpoint,
      AWS_REGION: emu.region,
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
      OCTORELAY_HANDLERS_DIR: FIXTURE_HANDLERS,
    };
    const marker = join(dir, "poison-marker");
    const deliveredBefore = beta.records().length;
    const [id] = await sendBodies(emu, queue.url, [{ account: "beta", poisonOnce: marker, n: 99 }]);
    await waitFor(
      "the poison message dead-lettered",
      async () => existsSync(marker) && (await queueDepth(emu, queue.dlqUrl)) === 1,
    );

    const peek = await runOctorelay(["dead-letters", "peek", "--queue", queue.name, "--config", configFile], {
      env,
    });
    expect(peek.errorLines).toEqual([]);
    expect(peek.code).toBe(0);
    expect(peek.stdout).toContain(
      `1 dead letter in ${queue.dlqName} (the dead-letter queue of ${queue.name})`,
    );
    expect(peek.stdout).toMatch(/^ {3}reason: +PermanentError: poison until redriven \(beta\)$/m);
    expect(peek.stdout).toContain(`source:  ${queue.name} (message ${id})`);
    const json = await runOctorelay(
      ["dead-letters", "peek", "--queue", queue.name, "--config", configFile, "--json"],
      { env },
    );
    const peeked = JSON.parse(json.stdout) as {
      messages: { messageId: string; reason: string; sourceMessageId: string }[];
    };
    expect(peeked.messages).toHaveLength(1);
    expect(peeked.messages[0]).toMatchObject({
      reason: "PermanentError: poison until redriven (beta)",
      sourceMessageId: id,
    });
    // Peeking takes nothing away.
    expect(await queueDepth(emu, queue.dlqUrl)).toBe(1);

    const unknown = await runOctorelay(["dead-letters", "peek", "--queue", "nope", "--config", configFile], {
      env,
    });
    expect(unknown.code).toBe(2);
    expect(unknown.errorLines[0]).toContain(
      `--queue "nope": not a queue of the config; valid: ${queue.name}`,
    );
    const neither = await runOctorelay(
      ["dead-letters", "redrive", "--queue", queue.name, "--config", configFile],
      { env },
    );
    expect(neither.code).toBe(2);
    expect(neither.errorLines[0]).toContain("say which messages: --all, or --id <message id>");

    const redrive = await runOctorelay(
      [
        "dead-letters",
        "redrive",
        "--queue",
        queue.name,
        "--id",
        peeked.messages[0]?.messageId as string,
        "--config",
        configFile,
      ],
      { env },
    );
    expect(redrive.errorLines).toEqual([]);
    expect(redrive.code).toBe(0);
    expect(redrive.stdout).toBe(`redrove 1 message back to ${queue.name}\n`);
    await waitFor("the redriven message delivered to beta", () =>
      beta
        .records()
        .slice(deliveredBefore)
        .some((r) => (r.payload as { n?: number }).n === 99),
    );
    await waitFor("the dead-letter queue empty", async () => (await queueDepth(emu, queue.dlqUrl)) === 0);
  });
});

describe("ops.requireTokenForRead", () => {
  it("guards /partners (bearer token, or the console's session) and leaves /metrics, /healthz, /readyz open", async () => {
    const guarded = await startOpsServer(
      {
        service,
        metrics,
        log: silent,
        console: serviceConsole(
          { service, sqs: emu.sqs, s3: emu.s3, log: silent, env: {} },
          { ...config, ops: { ...config.ops, requireTokenForRead: true } },
        ),
      },
      { host: "127.0.0.1", port: 0, token: TOKEN, requireTokenForRead: true },
    );
    try {
      const anonymous = await fetch(`${guarded.url}/partners`);
      expect(anonymous.status).toBe(401);
      expect(await anonymous.json()).toEqual({
        error:
          "this endpoint requires the ops token to read (ops.requireTokenForRead): send Authorization: Bearer <token>, or log in to the console",
      });
      const wrong = await fetch(`${guarded.url}/partners`, { headers: { authorization: "Bearer nope" } });
      expect(wrong.status).toBe(401);
      const bearer = await fetch(`${guarded.url}/partners?account=beta`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(bearer.status).toBe(200);
      expect(((await bearer.json()) as { total: number }).total).toBe(1);
      // A browser logged in to the console reads /partners with its session.
      const login = await fetch(`${guarded.url}/console/login`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token: TOKEN }).toString(),
        redirect: "manual",
      });
      const cookie = (login.headers.get("set-cookie") ?? "").split(";")[0] as string;
      expect(cookie).toMatch(/^octorelay_session=v1\./);
      expect((await fetch(`${guarded.url}/partners`, { headers: { cookie } })).status).toBe(200);
      for (const open of ["/metrics", "/healthz", "/readyz"]) {
        expect((await fetch(`${guarded.url}${open}`)).status, open).toBe(200);
      }

      const cliNone = await runOctorelay(["partners", "list", "--url", guarded.url]);
      expect(cliNone.code).toBe(1);
      expect(cliNone.errorLines[0]).toContain(
        "the service answered 401: this endpoint requires the ops token to read",
      );
      const cli = await runOctorelay(["partners", "show", "beta", "--url", guarded.url], {
        env: { OCTORELAY_OPS_TOKEN: TOKEN },
      });
      expect(cli.code).toBe(0);
      expect(cli.stdout).toMatch(/^account: +beta$/m);
    } finally {
      await guarded.close();
    }
  });
});

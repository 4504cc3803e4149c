/**
 * The operator console in a real headless Chromium, on the real ops server, against a real Service
 * relaying real traffic on the embedded emulator, with real HTTP partners on loopback. Each page is
 * screenshotted under test-results/console/ (not committed).
 */
import { mkdtempSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import {
  SendMessageCommand,
  type SQSClient,
  StartMessageMoveTaskCommand,
  type StartMessageMoveTaskCommandInput,
} from "@aws-sdk/client-sqs";
import type { Cluster, Redis } from "ioredis";
import { pino } from "pino";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.ts";
import { serviceConsole } from "../../src/ops/console/wiring.ts";
import { DeadLetters, resolveDeadLetterRoutes } from "../../src/ops/dead-letters.ts";
import { Metrics } from "../../src/ops/metrics.ts";
import { type OpsServer, type PartnersPage, startOpsServer } from "../../src/ops/ops-server.ts";
import { createRedisClient, RedisPartnerLimits } from "../../src/partners/redis-limits.ts";
import { Service } from "../../src/service.ts";
import { launchBrowser, screenshotPath } from "../helpers/browser.ts";
import {
  createBucket,
  createQueue,
  type Emulator,
  queueDepth,
  readDelivered,
  receiveAll,
  sendBodies,
  startEmulator,
  type TestQueue,
  waitFor,
} from "../helpers/emulator.ts";
import { type PartnerServer, startPartnerServer } from "../helpers/partner-server.ts";
import { type RedisServer, startRedis } from "../helpers/redis.ts";
import { type ServiceOverrides, testConfig } from "../helpers/service.ts";

const TOKEN = "console-test-token-7f3a9c2e51";
const ACME_TOKEN = "acme-secret-bearer-55aa";
const ACME_HEADER_SECRET = "x-api-key-hunter2";
const URL_SECRET = "sig-0xdeadbeef";
/** Accounts with S3 delivery, so the partner list has something to search and page through. */
const BULK = 300;

let emu: Emulator;
let queue: TestQueue;
let bucket: string;
let acme: PartnerServer;
let initech: PartnerServer;
let config: Config;
let service: Service;
let ops: OpsServer;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const logLines: Record<string, unknown>[] = [];
/** Script errors and Content-Security-Policy violations seen by the browser. */
const browserErrors: string[] = [];
const rawLog: string[] = [];
const env = { ACME_TOKEN };

/** One Prometheus scrape: every sample, by name, with its labels. */
async function scrape(
  url: string,
): Promise<{ name: string; labels: Record<string, string>; value: number }[]> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = l[2] as string;
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

/** Writes a raw request and resolves with the status line's code once the server closes the connection. */
function raw(url: string, request: string): Promise<number | undefined> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("the server kept the connection open"));
    }, 10_000);
    socket.on("connect", () => socket.write(request));
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      const status = /^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString("latin1"))?.[1];
      resolve(status === undefined ? undefined : Number(status));
    });
  });
}

/** Logs the browser in through the form, unless an earlier test did. */
async function ensureLoggedIn(): Promise<void> {
  if ((await context.cookies()).some((c) => c.name === "octorelay_session")) return;
  await page.goto(`${ops.url}/console/login`);
  await page.fill("input[name=token]", TOKEN);
  await page.click("button[type=submit]");
  await page.waitForURL(`${ops.url}/`);
}

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: screenshotPath(name), fullPage: true });
}

const heldBy = (account: string) => {
  const s = service.partnerSnapshots().find((p) => p.account === account);
  return s ? s.buffered + s.inFlight : 0;
};

beforeAll(async () => {
  emu = await startEmulator();
  queue = await createQueue(emu, { maxReceiveCount: 5 });
  bucket = await createBucket(emu);
  acme = await startPartnerServer({ token: ACME_TOKEN });
  initech = await startPartnerServer();
  initech.mode = "503";
  const overrides = {
    destination: { bucket },
    queues: [
      {
        queue: queue.name,
        handler: "console-poison-once.ts",
        deadLetterQueue: queue.dlqName,
        waitTimeSec: 1,
        // Dispatchers (and so partners) stay alive through the test: stable numbers to compare.
        dispatch: { flushIntervalMs: 200, emptyFlushLimit: 100_000 },
      },
    ],
    partners: {
      accounts: {
        acme: {
          destination: {
            type: "http",
            url: `${acme.url}/ingest?sig=${URL_SECRET}`,
            headers: { "x-api-key": ACME_HEADER_SECRET, "content-type": "application/x-ndjson" },
            authTokenEnv: "ACME_TOKEN",
          },
          giveUpAfterMs: 120_000,
        },
        initech: {
          destination: { type: "http", url: initech.url },
          onOutage: "park",
          giveUpAfterMs: 800,
          retryBaseMs: 100,
          retryMaxMs: 200,
          breaker: { failures: 1000, cooldownMs: 1000 },
        },
      },
      park: { bucket, prefix: "parked/" },
    },
    ops: { token: TOKEN },
  };
  config = testConfig(emu, overrides as unknown as ServiceOverrides);
  const log = pino(
    { level: "info" },
    {
      write: (line: string) => {
        rawLog.push(line);
        logLines.push(JSON.parse(line));
      },
    },
  );
  service = new Service({ sqs: emu.sqs, s3: emu.s3, log, env }, config);
  await service.start();
  const metrics = new Metrics(service, config.ops);
  ops = await startOpsServer(
    {
      service,
      metrics,
      log,
      console: serviceConsole({ service, sqs: emu.sqs, s3: emu.s3, log, env }, config),
    },
    { host: "127.0.0.1", port: 0 },
  );
  await sendBodies(
    emu,
    queue.url,
    Array.from({ length: BULK }, (_, i) => ({ account: `acct-${String(i).padStart(4, "0")}`, n: i })),
  );
  await waitFor("the bulk traffic delivered", () => service.relays[0]?.stats.deleted === BULK, 60_000);
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  page = await context.newPage();
  page.on("pageerror", (err) => browserErrors.push(err.message));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text()))
      browserErrors.push(m.text());
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await ops?.close();
  await service?.stop(AbortSignal.timeout(10_000));
  await acme?.close();
  await initech?.close();
  await emu?.stop();
});

describe("the operator console", () => {
  it("shows on the overview the same numbers as /metrics", async () => {
    await page.goto(`${ops.url}/`);
    await page.waitForSelector("[data-metric]");
    // Nothing moves now (all delivered, dispatchers kept alive): the page and a scrape must agree.
    const shownNumbers = await page.$$eval("[data-metric]", (cells) =>
      cells.map((c) => ({
        metric: c.getAttribute("data-metric") as string,
        queue: c.getAttribute("data-queue") as string,
        value: Number(c.getAttribute("data-value")),
        text: (c.textContent ?? "").trim(),
      })),
    );
    const samples = await scrape(ops.url);
    expect(shownNumbers.length).toBeGreaterThanOrEqual(12);
    for (const cell of shownNumbers) {
      const sample = samples.find((s) => s.name === cell.metric && s.labels.queue === cell.queue);
      expect(sample, `${cell.metric}{queue="${cell.queue}"} in /metrics`).toBeDefined();
      expect(cell.value, `${cell.metric} on the page (${cell.text})`).toBe(sample?.value);
    }
    const received = shownNumbers.find((c) => c.metric === "octorelay_messages_received_total");
    expect(received).toMatchObject({ value: BULK, text: "300" });
    expect(shownNumbers.find((c) => c.metric === "octorelay_dispatchers_active")?.value).toBe(BULK);
    // SQS's own view, from GetQueueAttributes: nothing left, and an empty dead-letter queue.
    await page.waitForSelector(`[data-queue="${queue.name}"] [data-sqs="visible"]`);
    expect(await page.textContent(`[data-queue="${queue.name}"] [data-dlq-depth]`)).toBe("0");
    // The chart has lines from the second sample on; htmx redraws the page every 2 s without a reload.
    await page.waitForSelector("svg polyline.s-received", { state: "attached" });
    await shot("overview");
  });

  it("finds a partner by account prefix, filters by state and pages on the server", async () => {
    await page.goto(`${ops.url}/console/partners`);
    expect(await page.textContent("#match-count")).toContain("300 partners");
    expect(await page.locator("tr[data-account]").count()).toBe(50);
    await shot("partners");
    await page.fill("input[name=prefix]", "acct-012");
    await expect.poll(() => page.locator("tr[data-account]").count()).toBe(10);
    expect(await page.textContent("#match-count")).toContain("10 partners matching");
    expect(page.url()).toContain("prefix=acct-012");
    await page.click('tr[data-account="acct-0123"] a');
    await page.waitForURL(/\/console\/partners\/acct-0123$/);
    expect(await page.textContent("#partner-state")).toBe("active");
    // Without JavaScript the same search is a plain GET.
    const html = await (
      await fetch(`${ops.url}/console/partners?prefix=acct-02&state=active&sort=account&limit=20`)
    ).text();
    expect(html.match(/<tr data-account=/g)?.length).toBe(20);
    expect(html).toContain('data-account="acct-0200"');
    expect(html).toContain('rel="next"');
  });

  it("logs in with the token, pauses a partner (its server receives nothing) and resumes it (then everything)", async () => {
    await page.goto(`${ops.url}/console/partners/acme`);
    expect(await page.isDisabled("#pause-button")).toBe(true);
    await page.click("text=Log in");
    await page.fill("input[name=token]", "not-the-token");
    await page.click("button[type=submit]");
    expect(await page.textContent(".notice.bad")).toContain("not the ops token");
    await shot("login");
    await page.fill("input[name=token]", TOKEN);
    await page.click("button[type=submit]");
    await page.waitForURL(/\/console\/partners\/acme$/);
    const cookie = (await context.cookies()).find((c) => c.name === "octorelay_session");
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: "Strict", path: "/" });
    expect(cookie?.value).not.toContain(TOKEN);

    await page.selectOption("select[name=for]", "1h");
    await page.click("#pause-button");
    await page.waitForSelector(".notice.info >> text=Paused acme");
    expect(await page.textContent("#partner-state")).toBe("paused");

    const ids = await sendBodies(
      emu,
      queue.url,
      Array.from({ length: 20 }, (_, i) => ({ account: "acme", i })),
    );
    await waitFor("acme's 20 records held (its batches waiting at the limits)", () => heldBy("acme") === 20);
    // Later traffic for another partner is delivered meanwhile: the relay runs, only acme waits.
    await sendBodies(emu, queue.url, [{ account: "globex", after: "pause" }]);
    await waitFor(
      "globex delivered",
      async () => (await readDelivered(emu, bucket, `${queue.name}/globex/`)).length === 1,
    );
    expect(heldBy("acme")).toBe(20);
    expect(acme.arrivals).toHaveLength(0);
    await page.reload();
    await page.waitForSelector("#pause >> text=Paused by an operator");
    await shot("partner-paused");

    await page.click("#resume-button");
    await page.waitForSelector(".notice.ok >> text=Resumed acme");
    await waitFor("acme receives all 20", () => acme.records().length === 20);
    expect(new Set(acme.records().map((r) => r.id))).toEqual(new Set(ids));
    expect(acme.batches.every((b) => b.authorization === `Bearer ${ACME_TOKEN}`)).toBe(true);
    // Each action is logged with who did it, never with the token.
    expect(logLines).toContainEqual(
      expect.objectContaining({
        action: "pause",
        account: "acme",
        by: expect.stringMatching(/^session [0-9a-f]{8}$/),
      }),
    );
    expect(logLines).toContainEqual(
      expect.objectContaining({ action: "resume", account: "acme", wasPaused: true }),
    );
  });

  it("shows the effective profile with every secret redacted", async () => {
    await page.goto(`${ops.url}/console/partners/acme`);
    const html = await page.content();
    for (const secret of [ACME_TOKEN, ACME_HEADER_SECRET, URL_SECRET, TOKEN])
      expect(html).not.toContain(secret);
    expect(html).toContain("sig=REDACTED");
    expect(html).toContain("ACME_TOKEN");
    expect(await page.textContent("body")).toContain("application/x-ndjson");
    for (const line of rawLog) {
      for (const secret of [ACME_TOKEN, TOKEN]) expect(line).not.toContain(secret);
    }
  });

  it("shows a poison message in Dead letters with its reason, redrives it, and it is handled", async () => {
    await ensureLoggedIn();
    const marker = join(mkdtempSync(join(tmpdir(), "octorelay-poison-")), "poison-1");
    const [poisonId] = await sendBodies(emu, queue.url, [
      { account: "globex", poisonOnce: marker, tag: "poison-1" },
    ]);
    await waitFor("the poison message dead-lettered", () => service.relays[0]?.stats.deadLettered === 1);
    // The console's Dead letters reads the URLs the relay resolved at start, not SQS again.
    expect(service.relays[0]).toMatchObject({ queueUrl: queue.url, deadLetterQueueUrl: queue.dlqUrl });
    await page.goto(`${ops.url}/console/dead-letters`);
    await page.click(`text=Peek`);
    await page.waitForSelector("tr[data-message-id]");
    const row = page.locator("tr[data-message-id]");
    expect(await row.count()).toBe(1);
    expect(await row.locator(".reason").textContent()).toContain("poison until redriven (globex)");
    expect(await row.textContent()).toContain(queue.name);
    expect(await row.textContent()).toContain(poisonId as string);
    await shot("dead-letters");
    // A peek takes nothing away: the message is visible in the dead-letter queue again.
    await waitFor(
      "the peeked message visible again",
      async () => (await queueDepth(emu, queue.dlqUrl)) === 1,
    );

    await row.locator("input[type=checkbox]").check();
    await page.click("#redrive-selected");
    await page.waitForSelector(`.notice.ok >> text=Redrove 1 message back to ${queue.name}`);
    await waitFor("the redriven message delivered", async () =>
      (await readDelivered(emu, bucket, `${queue.name}/globex/`)).some(
        (r) => (r.payload as { tag?: string }).tag === "poison-1",
      ),
    );
    await waitFor("the dead-letter queue empty", async () => (await queueDepth(emu, queue.dlqUrl)) === 0);
    expect(logLines).toContainEqual(
      expect.objectContaining({ action: "redrive", queue: queue.name, count: 1 }),
    );
  });

  it("replays a partner's parked batches", async () => {
    await ensureLoggedIn();
    const ids = await sendBodies(
      emu,
      queue.url,
      Array.from({ length: 3 }, (_, i) => ({ account: "initech", i })),
    );
    await waitFor(
      "initech's batches parked",
      async () =>
        ((await emu.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "parked/initech/" })))
          .KeyCount ?? 0) > 0 && heldBy("initech") === 0,
      30_000,
    );
    await page.goto(`${ops.url}/console/partners/initech`);
    await page.waitForSelector("#parked tbody tr");
    expect(await page.textContent("#partner-state")).toBe("parked");
    await shot("partner-parked");
    initech.mode = "up";
    await page.click("#replay-button");
    await page.waitForSelector(".notice >> text=Replay of initech");
    await waitFor("initech receives the replayed records", () => initech.records().length === 3);
    expect(new Set(initech.records().map((r) => r.id))).toEqual(new Set(ids));
    await waitFor(
      "the partner page to say the replay is done, with nothing parked, and the partner no longer parked",
      async () => {
        await page.reload();
        return (
          (await page.locator("#replay-status", { hasText: "Replay done" }).count()) === 1 &&
          (await page.locator("#parked-none").count()) === 1 &&
          (await page.textContent("#partner-state")) !== "parked"
        );
      },
      20_000,
      250,
    );
    expect(await page.textContent("#replay-status")).toContain("3 records delivered");
    // Its dispatcher is still alive (emptyFlushLimit), so it is back to active, everywhere it is shown.
    expect(await page.textContent("#partner-state")).toBe("active");
    expect(service.partnerSnapshots().find((p) => p.account === "initech")).toMatchObject({
      state: "active",
      parkedBatches: 0,
    });
    const parked = (await (await fetch(`${ops.url}/partners?state=parked`)).json()) as PartnersPage;
    expect(parked.partners.map((p) => p.account)).not.toContain("initech");
  });

  it("refuses an action without the token, without CSRF, or from another site", async () => {
    await ensureLoggedIn();
    const pause = `${ops.url}/console/partners/acme/pause`;
    const form = { "content-type": "application/x-www-form-urlencoded" };
    const session = (await context.cookies()).find((c) => c.name === "octorelay_session")?.value as string;
    await page.goto(`${ops.url}/console/partners/acme`);
    const csrf = (await page.getAttribute("input[name=_csrf]", "value")) as string;
    expect(csrf).toMatch(/^[\w-]{43}$/);
    const cookie = `octorelay_session=${session}`;
    const cases: [string, RequestInit, number][] = [
      ["no credential", { headers: form, body: "for=1h" }, 401],
      ["a wrong bearer token", { headers: { ...form, authorization: "Bearer nope" }, body: "for=1h" }, 401],
      ["a session without its CSRF token", { headers: { ...form, cookie }, body: "for=1h" }, 403],
      [
        "a session with a wrong CSRF token",
        { headers: { ...form, cookie }, body: `for=1h&_csrf=${"x".repeat(43)}` },
        403,
      ],
      [
        "a session from another origin",
        { headers: { ...form, cookie, origin: "http://evil.example" }, body: `for=1h&_csrf=${csrf}` },
        403,
      ],
      [
        "a cross-site request",
        { headers: { ...form, cookie, "sec-fetch-site": "cross-site" }, body: `for=1h&_csrf=${csrf}` },
        403,
      ],
      [
        "a bad duration",
        { headers: { ...form, authorization: `Bearer ${TOKEN}` }, body: "for=forever" },
        400,
      ],
      [
        "an unknown field",
        { headers: { ...form, authorization: `Bearer ${TOKEN}` }, body: "for=1h&x=1" },
        400,
      ],
    ];
    for (const [name, init, status] of cases) {
      const res = await fetch(pause, { method: "POST", redirect: "manual", ...init });
      expect(res.status, name).toBe(status);
    }
    expect((await service.partners.limits.pauseOf("acme"))?.reason).not.toBe("operator");
    // Peeking shows bodies and counts as a receive: not for anonymous readers once a token is set.
    const anonymousPeek = await (await fetch(`${ops.url}/console/dead-letters?queue=${queue.name}`)).text();
    expect(anonymousPeek).toContain("log in with the ops token to peek");
    expect(anonymousPeek).not.toContain("data-message-id");
    // A session with its CSRF token from the console's own page, and a script with the bearer token, may.
    const bySession = await fetch(pause, {
      method: "POST",
      redirect: "manual",
      headers: { ...form, cookie, origin: ops.url, "sec-fetch-site": "same-origin" },
      body: `for=15m&_csrf=${csrf}`,
    });
    expect(bySession.status).toBe(303);
    const byScript = await fetch(`${ops.url}/console/partners/acme/resume`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, accept: "application/json" },
    });
    expect(await byScript.json()).toEqual({ ok: true, action: "resume", account: "acme", wasPaused: true });
    expect(await service.partners.limits.pauseOf("acme")).toBeUndefined();

    // Without ops.token, every action is off (and the page says how to turn them on).
    const noToken = await startOpsServer(
      {
        service,
        metrics: new Metrics(service, config.ops),
        log: pino({ level: "silent" }),
        console: serviceConsole(
          { service, sqs: emu.sqs, s3: emu.s3, log: pino({ level: "silent" }), env },
          { ...config, ops: { ...config.ops, token: "" } },
        ),
      },
      { host: "127.0.0.1", port: 0 },
    );
    try {
      const off = await fetch(`${noToken.url}/console/partners/acme/pause`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, ...form },
        body: "for=1h",
      });
      expect(off.status).toBe(401);
      const anonymous = await fetch(`${noToken.url}/console/partners/acme/pause`, {
        method: "POST",
        headers: form,
        body: "for=1h",
      });
      expect(anonymous.status).toBe(403);
      expect(await anonymous.text()).toContain("actions are off");
      expect(await (await fetch(`${noToken.url}/`)).text()).toContain("actions off");
    } finally {
      await noToken.close();
    }
  });

  it("requires the token to read when requireTokenForRead is set", async () => {
    const guarded = await startOpsServer(
      {
        service,
        metrics: new Metrics(service, config.ops),
        log: pino({ level: "silent" }),
        console: serviceConsole(
          { service, sqs: emu.sqs, s3: emu.s3, log: pino({ level: "silent" }), env },
          { ...config, ops: { ...config.ops, requireTokenForRead: true } },
        ),
      },
      { host: "127.0.0.1", port: 0 },
    );
    try {
      const anonymous = await fetch(`${guarded.url}/console/partners?prefix=acct`, { redirect: "manual" });
      expect(anonymous.status).toBe(303);
      expect(anonymous.headers.get("location")).toBe(
        `/console/login?next=${encodeURIComponent("/console/partners?prefix=acct")}`,
      );
      const bearer = await fetch(`${guarded.url}/console/partners`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(bearer.status).toBe(200);
      expect((await fetch(`${guarded.url}/console/login`)).status).toBe(200);
    } finally {
      await guarded.close();
    }
  });

  it("answers hostile and malformed requests with 4xx and keeps running", async () => {
    const get = (target: string, extra = "") =>
      `GET ${target} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n${extra}\r\n`;
    const hostile: [string, string, number][] = [
      ["GET //", get("//"), 404],
      ["a 10 KB path", get(`/${"a".repeat(10_240)}`), 414],
      ["a 10 KB account", get(`/console/partners/${"a".repeat(1500)}`), 414],
      ["a bad cookie", get("/", "Cookie: octorelay_session=<script>alert(1)</script>\r\n"), 400],
      [
        "a forged session",
        get("/", `Cookie: octorelay_session=v1.abc.${"A".repeat(22)}.${"B".repeat(43)}\r\n`),
        200,
      ],
      ["a bad percent-escape", get("/console/partners/%E0%A4%A"), 400],
      ["a bad sort", get("/console/partners?sort=size"), 400],
      ["an unknown parameter", get("/console/partners?stat=x"), 400],
      ["a bad limit", get("/console/partners?limit=100000"), 400],
      ["an unconfigured queue", get("/console/dead-letters?queue=%3Cscript%3E"), 400],
      ["an unknown console page", get("/console/nope"), 404],
      ["DELETE /", "DELETE / HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n", 405],
      [
        "a 10 MB body",
        `POST /console/partners/acme/pause HTTP/1.1\r\nHost: ops\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10485760\r\n\r\nfor=1h`,
        413,
      ],
      [
        "a JSON body",
        `POST /console/partners/acme/pause HTTP/1.1\r\nHost: ops\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
        415,
      ],
      [
        "a redrive with no selection",
        `POST /console/dead-letters/${queue.name}/redrive HTTP/1.1\r\nHost: ops\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\nConnection: close\r\n\r\nscope=selected`,
        400,
      ],
    ];
    for (const [name, request, status] of hostile) expect(await raw(ops.url, request), name).toBe(status);
    const bad = await fetch(`${ops.url}/`, { headers: { cookie: "octorelay_session=garbage" } });
    expect(bad.status).toBe(400);
    expect(bad.headers.get("set-cookie")).toContain("Max-Age=0");
    expect((await fetch(`${ops.url}/healthz`)).status).toBe(200);
    expect(service.readiness()).toEqual({ ready: true, reasons: [] });
    await page.goto(`${ops.url}/console/partners/${"%3Cimg%20src%3Dx%3E"}`);
    expect(await page.locator("img").count()).toBe(0);
    await shot("partner-unknown");
    // Still relaying.
    await sendBodies(emu, queue.url, [{ account: "globex", after: "hostile" }]);
    await waitFor("delivered after the hostile requests", async () =>
      (await readDelivered(emu, bucket, `${queue.name}/globex/`)).some(
        (r) => (r.payload as { after?: string }).after === "hostile",
      ),
    );
  });

  it("serves one page of 50,000 partners, never all of them", async () => {
    for (let i = 0; i < 50_000; i++) service.partners.partner(`bulk-${String(i).padStart(5, "0")}`);
    const lastPage = `${ops.url}/console/partners?prefix=bulk-&sort=account&offset=49950`;
    // The console reuses one snapshot of the partners for a second.
    await waitFor("the 50,000 partners listed", async () =>
      (await (await fetch(lastPage)).text()).includes("50,000 partners matching"),
    );
    const res = await fetch(lastPage);
    const html = await res.text();
    expect(res.status).toBe(200);
    expect(html.match(/<tr data-account=/g)?.length).toBe(50);
    expect(html).toContain("50,000 partners matching");
    expect(html).toContain('data-account="bulk-49999"');
    expect(html).not.toContain('rel="next"');
    // For the report, not asserted: how long a page of 50,000 takes (median of 5) and its size.
    const timesMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const startedMs = performance.now();
      await (await fetch(`${ops.url}/console/partners?sort=oldest&offset=${i * 1000}`)).text();
      timesMs.push(performance.now() - startedMs);
    }
    timesMs.sort((a, b) => a - b);
    console.info(
      `console: a page of 50,000 partners in ${timesMs[2]?.toFixed(0)} ms (median of 5), ${html.length} bytes`,
    );
    await page.goto(`${ops.url}/console/partners?state=idle`);
    expect(await page.textContent("#match-count")).toContain("50,");
    await shot("partners-50000");
  });

  it("ran every page above under its Content-Security-Policy without a script error or violation", () => {
    expect(browserErrors).toEqual([]);
  });
});

/**
 * Two replicas sharing their limits through a real redis-server: one serves the console, the other
 * (its own RedisPartnerLimits and connection) pauses a partner, as `octorelay partners pause`
 * answered by another pod would. The console and /partners list it under paused, then not.
 */
describe("paused partners across replicas", () => {
  let redisServer: RedisServer;
  const clients: { limits: RedisPartnerLimits; redis: Redis | Cluster }[] = [];
  let here: OpsServer;
  let other: RedisPartnerLimits;

  const replicaLimits = async () => {
    const redis = createRedisClient(redisServer.url);
    if (redis.status !== "ready") await new Promise((resolve) => redis.once("ready", resolve));
    const limits = new RedisPartnerLimits(
      { redis, log: pino({ level: "silent" }) },
      { keyPrefix: "console-test" },
    );
    clients.push({ limits, redis });
    return limits;
  };

  beforeAll(async () => {
    redisServer = await startRedis();
    const log = pino({ level: "silent" });
    const limits = await replicaLimits();
    other = await replicaLimits();
    // Not started: the console and /partners read the partners and their limits, no traffic needed.
    const replica = new Service({ sqs: emu.sqs, s3: emu.s3, log, env, limits }, config);
    here = await startOpsServer(
      {
        service: replica,
        metrics: new Metrics(replica, config.ops),
        log,
        console: serviceConsole({ service: replica, sqs: emu.sqs, s3: emu.s3, log, env }, config),
      },
      { host: "127.0.0.1", port: 0 },
    );
  });

  afterAll(async () => {
    await here?.close();
    for (const { limits, redis } of clients) {
      await limits.close();
      redis.disconnect();
    }
    await redisServer?.stop();
  });

  const consoleLists = async (account: string) => {
    const html = await (await fetch(`${here.url}/console/partners?state=paused`)).text();
    return html.includes(`data-account="${account}"`);
  };
  const partnersLists = async (account: string) => {
    const listed = (await (await fetch(`${here.url}/partners?state=paused`)).json()) as PartnersPage;
    expect(listed.pauseError).toBeUndefined();
    return listed.partners.find((p) => p.account === account);
  };

  it("lists a partner paused on another replica under paused, on the console and on /partners, until resumed", async () => {
    const untilMs = Date.now() + 3_600_000;
    await other.pause("hooli", { reason: "operator", untilMs });
    await waitFor("the console lists hooli as paused", () => consoleLists("hooli"));
    const entry = await waitFor("/partners lists hooli as paused", () => partnersLists("hooli"));
    expect(entry).toMatchObject({ account: "hooli", state: "paused", pause: { reason: "operator" } });
    expect(Math.abs((entry.pause?.untilMs ?? 0) - untilMs)).toBeLessThan(1_000);

    await other.resume("hooli");
    await waitFor("the console no longer lists hooli", async () => !(await consoleLists("hooli")));
    await waitFor(
      "/partners no longer lists hooli",
      async () => (await partnersLists("hooli")) === undefined,
    );
  });
});

/**
 * src/ops/dead-letters.ts on its own, on a queue nobody drains, so what a redrive puts back can be
 * counted. fauxqs has no message-move task; the two checks that need SQS to behave otherwise (it has
 * one; a send fails) wrap the emulator's client and change that one command.
 */
describe("dead-letter redrive", () => {
  const silent = pino({ level: "silent" });
  let q: TestQueue;

  const withSend = (intercept: (command: unknown) => Promise<unknown> | undefined): SQSClient =>
    ({
      send: (command: unknown, options?: unknown) =>
        intercept(command) ??
        (emu.sqs.send as (c: unknown, o?: unknown) => Promise<unknown>)(command, options),
    }) as unknown as SQSClient;

  const deadLetter = (body: string, sourceQueue?: string) =>
    emu.sqs.send(
      new SendMessageCommand({
        QueueUrl: q.dlqUrl,
        MessageBody: body,
        ...(sourceQueue
          ? {
              MessageAttributes: {
                "octorelay.reason": { DataType: "String", StringValue: "handler said no" },
                "octorelay.sourceQueue": { DataType: "String", StringValue: sourceQueue },
                "sender.kept": { DataType: "String", StringValue: "yes" },
              },
            }
          : {}),
      }),
    );

  beforeAll(async () => {
    q = await createQueue(emu);
  });

  it("moves every message back by receive, send, delete where the endpoint has no move task", async () => {
    await deadLetter('{"n":1}', q.name);
    await deadLetter('{"n":2}'); // moved by SQS's redrive policy: no octorelay attributes
    const routes = await resolveDeadLetterRoutes(emu.sqs, [
      { name: q.name, queue: q.name, deadLetterQueue: "" },
    ]);
    expect(routes).toEqual([{ queue: q.name, queueUrl: q.url, deadLetterQueueUrl: q.dlqUrl }]);
    const dl = new DeadLetters({ sqs: emu.sqs, log: silent }, { routes });
    const peeked = await dl.peek(q.name);
    expect(peeked.map((m) => [m.body, m.reason, m.sourceQueue])).toEqual([
      ['{"n":1}', "handler said no", q.name],
      ['{"n":2}', "", ""],
    ]);
    expect(peeked[0]?.attributes).toEqual([{ name: "sender.kept", value: "yes" }]);
    const result = await dl.redrive(q.name, { all: true });
    expect(result).toMatchObject({ method: "receive-send-delete", redriven: 2, sendFailed: 0, more: false });
    const back = await receiveAll(emu, q.url);
    expect(back.map((m) => m.Body).sort()).toEqual(['{"n":1}', '{"n":2}']);
    // The sender's attributes go back with the body; octorelay's own stay behind.
    const first = back.find((m) => m.Body === '{"n":1}');
    expect(Object.keys(first?.MessageAttributes ?? {})).toEqual(["sender.kept"]);
    expect(await queueDepth(emu, q.dlqUrl)).toBe(0);
  });

  it("never deletes a dead letter whose send failed", async () => {
    await deadLetter('{"n":3}', q.name);
    const routes = await resolveDeadLetterRoutes(emu.sqs, [
      { name: q.name, queue: q.name, deadLetterQueue: "" },
    ]);
    const failing = withSend((c) =>
      c instanceof SendMessageCommand
        ? Promise.reject(Object.assign(new Error("throttled"), { name: "Throttling" }))
        : undefined,
    );
    const result = await new DeadLetters({ sqs: failing, log: silent }, { routes }).redrive(q.name, {
      all: true,
    });
    expect(result).toMatchObject({ redriven: 0, sendFailed: 1 });
    // Made visible again at once (not after the 60 s the redrive received it for), and still there.
    const still = await receiveAll(emu, q.dlqUrl, 30);
    expect(still.map((m) => m.Body)).toEqual(['{"n":3}']);
  });

  it("uses SQS's message-move task for all where the endpoint has one", async () => {
    const routes = await resolveDeadLetterRoutes(emu.sqs, [
      { name: q.name, queue: q.name, deadLetterQueue: "" },
    ]);
    const started: StartMessageMoveTaskCommandInput[] = [];
    const withMoveTask = withSend((c) => {
      if (!(c instanceof StartMessageMoveTaskCommand)) return undefined;
      started.push(c.input);
      return Promise.resolve({ TaskHandle: "task-1" });
    });
    const result = await new DeadLetters({ sqs: withMoveTask, log: silent }, { routes }).redrive(q.name, {
      all: true,
    });
    expect(result).toMatchObject({ method: "move-task", taskHandle: "task-1" });
    expect(started).toEqual([
      {
        SourceArn: expect.stringMatching(new RegExp(`:${q.dlqName}$`)),
        DestinationArn: expect.stringMatching(new RegExp(`:${q.name}$`)),
      },
    ]);
  });
});

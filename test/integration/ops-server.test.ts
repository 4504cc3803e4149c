/**
 * The ops port is open without auth: hostile and malformed requests over raw TCP must each get an
 * answer (or a dropped connection) and leave the server answering /healthz, in-process and in the
 * real process. /partners pages, filters and sorts the partners of a real service.
 */
import { connect, type Socket } from "node:net";
import { pino } from "pino";
import { Gauge } from "prom-client";
import { afterAll, describe, expect } from "vitest";
import { Metrics } from "../../src/ops/metrics.ts";
import type { PartnerEntry } from "../../src/ops/ops-server.ts";
import {
  type OpsLimits,
  type OpsServer,
  type PartnersPage,
  startOpsServer,
} from "../../src/ops/ops-server.ts";
import type { Service } from "../../src/service.ts";
import { createBucket, createQueue, sendBodies, waitFor } from "../helpers/emulator.ts";
import { it } from "../helpers/fixtures.ts";
import type { ServiceProcess } from "../helpers/process.ts";
import { sampleHandler, startService } from "../helpers/service.ts";

interface RawReply {
  /** Status of the first response, undefined if the server wrote none. */
  status: number | undefined;
  head: string;
  body: string;
  /** The server reset the connection (it may do so when it drops a request it did not read). */
  reset: boolean;
}

/**
 * Writes `request` on a fresh TCP connection (or lets `drive` write) and resolves once the server
 * closes it. Rejects if it is still open after `closeWithinMs`: a server that holds a bad client.
 */
function raw(
  url: string,
  request: string | Buffer | ((socket: Socket) => void),
  closeWithinMs = 15_000,
): Promise<RawReply> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    let reset = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the connection open over ${closeWithinMs} ms`));
    }, closeWithinMs);
    // write, not end: the server must close the connection itself.
    socket.on("connect", () => (typeof request === "function" ? request(socket) : socket.write(request)));
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNRESET" || err.code === "EPIPE") reset = true;
      else reject(err);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      const head = split < 0 ? text : text.slice(0, split);
      const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1];
      resolve({
        status: status === undefined ? undefined : Number(status),
        head,
        body: split < 0 ? "" : text.slice(split + 4),
        reset,
      });
    });
  });
}

const get = (target: string, extra = "") =>
  `GET ${target} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n${extra}\r\n`;

async function healthz(url: string): Promise<number> {
  return (await fetch(`${url}/healthz`)).status;
}

/** Every hostile request of the issue, with the answer it must get (or a dropped connection). */
const HOSTILE: { name: string; request: string | Buffer; status: number; orReset?: boolean }[] = [
  { name: "GET //", request: get("//"), status: 404 },
  { name: "GET //..//", request: get("//..//"), status: 404 },
  { name: "GET //x/../healthz", request: get("//x/../healthz"), status: 404 },
  { name: "GET /%zz", request: get("/%zz"), status: 404 },
  {
    name: "GET /partners?state=%E0%A4%A (bad escape)",
    request: get("/partners?state=%E0%A4%A"),
    status: 400,
  },
  { name: "GET /partners?%zz=1", request: get("/partners?%zz=1"), status: 400 },
  { name: "absolute-form http://evil.example//", request: get("http://evil.example//"), status: 404 },
  { name: "absolute-form http://h/healthz", request: get("http://h/healthz"), status: 200 },
  { name: "absolute-form with no path", request: get("http://h?x=1"), status: 404 },
  { name: "OPTIONS *", request: "OPTIONS * HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n", status: 405 },
  { name: "DELETE /metrics", request: "DELETE /metrics HTTP/1.1\r\nHost: ops\r\n\r\n", status: 405 },
  {
    name: "POST /partners with a body",
    request: "POST /partners HTTP/1.1\r\nHost: ops\r\nContent-Length: 5\r\n\r\nhello",
    status: 405,
  },
  { name: "a 10 KB path", request: get(`/${"a".repeat(10_240)}`), status: 414 },
  {
    name: "64 KB of headers",
    request: get(
      "/healthz",
      Array.from({ length: 1024 }, (_, i) => `x-h${i}: ${"v".repeat(56)}\r\n`).join(""),
    ),
    status: 431,
    orReset: true,
  },
  {
    name: "a garbage request line",
    request: "\x16\x03\x01 GARBAGE \xff\xfe\r\n\r\n",
    status: 400,
    orReset: true,
  },
  { name: "a NUL in the path", request: get("/heal\0thz"), status: 400, orReset: true },
  { name: "a NUL in a header", request: get("/healthz", "x-a: b\0c\r\n"), status: 400, orReset: true },
  { name: "no Host header", request: "GET /healthz HTTP/1.1\r\n\r\n", status: 400, orReset: true },
  { name: "a target that is not a path", request: get("healthz"), status: 400, orReset: true },
];

describe("hostile requests to the ops server", () => {
  let service: Service;
  let ops: OpsServer;
  const logLines: Record<string, unknown>[] = [];
  let metrics: Metrics;
  // Short enough that the slow-client test ends quickly; the others run at the defaults.
  const limits: Partial<OpsLimits> = { headersTimeoutMs: 1500, requestTimeoutMs: 3000 };

  // One service for every request below: a test-scoped one would start a service per request.
  it.beforeAll(async ({ emulator: emu }) => {
    const q = await createQueue(emu);
    const bucket = await createBucket(emu);
    service = await startService(emu, {
      destination: { bucket },
      queues: [{ queue: q.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
    });
    metrics = new Metrics(service, { partnerMetricsTop: 5, partnerMetricsAccounts: [] });
    const log = pino({ level: "info" }, { write: (line: string) => logLines.push(JSON.parse(line)) });
    ops = await startOpsServer({ service, metrics, log }, { host: "127.0.0.1", port: 0, limits });
  });
  afterAll(async () => {
    await ops?.close();
    await service?.stop(AbortSignal.timeout(10_000));
  });

  for (const { name, request, status, orReset } of HOSTILE) {
    it(`${name}: answered ${status}, and /healthz still answers 200`, async () => {
      const reply = await raw(ops.url, request);
      if (orReset && reply.reset && reply.status === undefined) {
        // Dropped before the answer could be read: allowed for requests the server cannot parse.
      } else {
        expect(reply.status, reply.head).toBe(status);
      }
      if (reply.status !== undefined && reply.status >= 400) {
        expect(JSON.parse(reply.body)).toHaveProperty("error");
      }
      expect(await healthz(ops.url)).toBe(200);
    });
  }

  it("405 names the methods allowed; 404 lists the endpoints", async () => {
    const denied = await raw(ops.url, "DELETE /metrics HTTP/1.1\r\nHost: ops\r\n\r\n");
    expect(denied.head).toMatch(/^allow: GET, HEAD$/im);
    expect(JSON.parse(denied.body)).toEqual({ error: "DELETE is not allowed on /metrics" });
    const notFound = await raw(ops.url, get("//"));
    expect(JSON.parse(notFound.body)).toEqual({
      error: "not found",
      endpoints: ["/metrics", "/healthz", "/readyz", "/partners"],
    });
    const head = await raw(ops.url, "HEAD /healthz HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n");
    expect(head.status).toBe(200);
    expect(head.body).toBe("");
  });

  it("a client sending one header byte per second is dropped within the headers timeout", async () => {
    const started = performance.now();
    let sent = 0;
    const reply = await raw(
      ops.url,
      (socket) => {
        const bytes = Buffer.from(get("/healthz", "x-slow: ".padEnd(200, "z")));
        const tick = setInterval(() => {
          if (socket.destroyed) return;
          socket.write(bytes.subarray(sent, sent + 1));
          sent++;
        }, 1000);
        socket.once("close", () => clearInterval(tick));
        socket.write(bytes.subarray(0, 1));
        sent = 1;
      },
      // Bound of the assertion: the timeout, one check interval (1 s) and slack for a loaded machine.
      (limits.headersTimeoutMs as number) + 5_000,
    );
    const heldMs = performance.now() - started;
    expect(reply.status).toBe(408);
    expect(JSON.parse(reply.body)).toEqual({ error: "request not received within 1500 ms" });
    expect(heldMs).toBeGreaterThanOrEqual((limits.headersTimeoutMs as number) - 100);
    expect(sent).toBeLessThan(20);
    expect(await healthz(ops.url)).toBe(200);
  });

  it("a client that connects and sends nothing is dropped too", async () => {
    const reply = await raw(ops.url, () => {}, (limits.headersTimeoutMs as number) + 5_000);
    expect(reply.status).toBe(408);
    expect(await healthz(ops.url)).toBe(200);
  });

  it("200 bad requests at once: every one answered or dropped, then /healthz answers 200", async () => {
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => {
        const { request } = HOSTILE[i % HOSTILE.length] as (typeof HOSTILE)[number];
        return raw(ops.url, request);
      }),
    );
    for (const [i, reply] of replies.entries()) {
      const { status, orReset } = HOSTILE[i % HOSTILE.length] as (typeof HOSTILE)[number];
      if (!(orReset && reply.reset && reply.status === undefined)) expect(reply.status).toBe(status);
    }
    expect(await healthz(ops.url)).toBe(200);
  });

  it("a route that throws answers 500 with a JSON error and a log line; the next scrape works", async () => {
    const name = "test_broken_collector";
    new Gauge({
      name,
      help: "A collector that throws, as a buggy one would.",
      registers: [metrics.registry],
      collect() {
        throw new Error("collector broke");
      },
    });
    try {
      const res = await fetch(`${ops.url}/metrics`);
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({ error: "internal error; see the service log" });
      const line = logLines.find((l) => l.msg === "ops request failed");
      expect(line).toMatchObject({ path: "/metrics", method: "GET", err: { message: "collector broke" } });
    } finally {
      metrics.registry.removeSingleMetric(name);
    }
    expect((await fetch(`${ops.url}/metrics`)).status).toBe(200);
    expect(await healthz(ops.url)).toBe(200);
  });
});

/** `octorelay start` as a real process on one queue, once its ops server and queues are up. */
async function startedProcess(
  spawnService: (config: object) => ServiceProcess,
  queueName: string,
  bucket: string,
): Promise<{ proc: ServiceProcess; url: string }> {
  const proc = spawnService({
    destination: { bucket },
    queues: [{ queue: queueName, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
  });
  const listening = await waitFor("the ops server listening", () =>
    proc.logs.find((l) => typeof l.url === "string" && String(l.msg).startsWith("ops server listening")),
  );
  await waitFor("the service started", () => proc.logs.some((l) => l.msg === "octorelay started"));
  return { proc, url: listening.url as string };
}

describe("the real process", () => {
  it("survives GET // on its ops port and keeps answering /healthz", async ({
    queue: q,
    bucket,
    spawnService,
  }) => {
    const { proc, url } = await startedProcess(spawnService, q.name, bucket);
    const reply = await raw(url, get("//"));
    const fatal = () => JSON.stringify(proc.logs.filter((l) => Number(l.level) >= 50));
    expect(reply.status, fatal()).toBe(404);
    expect(await healthz(url)).toBe(200);
    expect(proc.child.exitCode).toBeNull();
    expect(proc.logs.some((l) => l.msg === "uncaught exception; exiting")).toBe(false);
    proc.child.kill("SIGTERM");
    const exit = await proc.exited;
    expect(exit.code, JSON.stringify(proc.logs.slice(-8))).toBe(0);
  });
});

describe("the operator console in the real process", () => {
  it("octorelay start serves the console under / of its ops port, read-only without a token", async ({
    queue: q,
    bucket,
    spawnService,
  }) => {
    const { proc, url } = await startedProcess(spawnService, q.name, bucket);
    const overview = await fetch(`${url}/`);
    expect(overview.status).toBe(200);
    expect(overview.headers.get("content-type")).toMatch(/text\/html/);
    expect(await overview.text()).toContain(q.name);
    const partners = await fetch(`${url}/console/partners`);
    expect(partners.status).toBe(200);
    // Actions are off without ops.token: a pause is refused, the partner untouched.
    const pause = await fetch(`${url}/console/partners/acme/pause`, {
      method: "POST",
      headers: { accept: "application/json", "content-type": "application/x-www-form-urlencoded" },
      body: "for=1h",
    });
    expect(pause.status).toBe(403);
    proc.child.kill("SIGTERM");
    expect((await proc.exited).code).toBe(0);
  });
});

describe("/partners: paged, filtered, sorted", () => {
  // Its down partners hold records until the deadline: no need to wait long for them at the end.
  it.override("stopTimeoutMs", 3_000);
  let ops: OpsServer | undefined;

  const page = async (query: string): Promise<PartnersPage> => {
    const res = await fetch(`${ops?.url}/partners${query}`);
    expect(res.status, await res.clone().text()).toBe(200);
    return (await res.json()) as PartnersPage;
  };
  const error = async (query: string): Promise<string> => {
    const res = await fetch(`${ops?.url}/partners${query}`);
    expect(res.status).toBe(400);
    return ((await res.json()) as { error: string }).error;
  };
  /** Follows `next` from `first` to the last page; returns every partner listed, in order. */
  const everyPage = async (first: string): Promise<{ pages: PartnersPage[]; partners: PartnerEntry[] }> => {
    const pages = [await page(first)];
    for (let last = pages[0]; last?.next; ) {
      const res = await fetch(`${ops?.url}${last.next}`);
      last = (await res.json()) as PartnersPage;
      pages.push(last);
    }
    return { pages, partners: pages.flatMap((p) => p.partners) };
  };
  const held = (p: PartnerEntry) => p.buffered + p.inFlight;

  it("200 S3 partners holding records plus failing HTTP ones: every page, filter and order", async ({
    emulator: emu,
    queue: q,
    bucket,
    partnerServer: partner,
    startService,
    teardown,
  }) => {
    // down-*: 503, their breaker opens; park-0: 503 until its batch is parked.
    partner.statusFor = () => 503;
    const S3_PARTNERS = 200;
    const expectedHeld = (i: number) => (i % 5) + 1;
    const s3Account = (i: number) => `p-${String(i).padStart(3, "0")}`;
    const bodies: { account: string; n: number }[] = [];
    for (let i = 0; i < S3_PARTNERS; i++) {
      for (let n = 0; n < expectedHeld(i); n++) bodies.push({ account: s3Account(i), n });
    }
    for (const account of ["down-0", "down-1", "park-0"]) {
      for (let n = 0; n < 3; n++) bodies.push({ account, n });
    }
    await sendBodies(emu, q.url, bodies);
    const http = { destination: { type: "http", url: `${partner.url}/in/{account}` }, flushIntervalMs: 100 };
    const service = await startService({
      // The S3 partners flush in 10 minutes: what they hold stays put while the test reads it.
      dispatch: { flushIntervalMs: 600_000, retryBaseMs: 50, retryMaxMs: 100 },
      destination: { bucket },
      partners: {
        accounts: {
          "down-0": { ...http, breaker: { failures: 1, cooldownMs: 60_000 } },
          "down-1": { ...http, breaker: { failures: 1, cooldownMs: 60_000 } },
          "park-0": { ...http, onOutage: "park", giveUpAfterMs: 300, breaker: { failures: 1000 } },
        },
        park: { bucket, prefix: "parked/" },
      },
      queues: [{ queue: q.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
    });
    const metrics = new Metrics(service, { partnerMetricsTop: 5, partnerMetricsAccounts: [] });
    ops = await startOpsServer(
      { service, metrics, log: pino({ level: "silent" }) },
      { host: "127.0.0.1", port: 0 },
    );
    teardown.close(async () => ops?.close());
    const svc = service;
    const stateOf = (account: string) => svc.partnerSnapshots().find((p) => p.account === account)?.state;
    // What is not there yet, for the timeout's message.
    let missing = "";
    await waitFor(
      "every S3 partner holding its records, the HTTP ones breaker-open and parked",
      () => {
        const all = new Map(svc.partnerSnapshots().map((p) => [p.account, p]));
        const notHolding = Array.from({ length: S3_PARTNERS }, (_, i) => i).filter(
          (i) => all.get(s3Account(i))?.buffered !== expectedHeld(i),
        );
        const states = ["down-0", "down-1", "park-0"].map((a) => `${a}: ${all.get(a)?.state}`);
        missing = `${notHolding.length} S3 partners not holding; ${states.join(", ")}`;
        return (
          notHolding.length === 0 &&
          stateOf("down-0") === "breaker-open" &&
          stateOf("down-1") === "breaker-open" &&
          stateOf("park-0") === "parked"
        );
      },
      45_000,
      100,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${missing}`);
    });
    const TOTAL = S3_PARTNERS + 3;
    const snapshot = svc.partnerSnapshots();
    const accounts = snapshot.map((p) => p.account);
    expect(accounts).toHaveLength(TOTAL);

    // Default: 100 a page, by what they hold; following `next` lists everyone exactly once.
    const byHeld = await everyPage("");
    expect(byHeld.pages.map((p) => [p.total, p.offset, p.limit, p.partners.length])).toEqual([
      [TOTAL, 0, 100, 100],
      [TOTAL, 100, 100, 100],
      [TOTAL, 200, 100, 3],
    ]);
    expect(byHeld.pages.at(-1)?.next).toBeUndefined();
    expect(byHeld.partners.map((p) => p.account).sort()).toEqual([...accounts].sort());
    for (const [i, p] of byHeld.partners.entries()) {
      const before = byHeld.partners[i - 1];
      if (before)
        expect(held(before) > held(p) || (held(before) === held(p) && before.account < p.account)).toBe(true);
    }
    expect(held(byHeld.partners[0] as PartnerEntry)).toBe(5);

    // Small pages by account: the concatenation is the sorted list, no repeat, no gap.
    const byAccount = await everyPage("?sort=account&limit=7");
    expect(byAccount.pages).toHaveLength(Math.ceil(TOTAL / 7));
    expect(byAccount.pages[1]?.offset).toBe(7);
    expect(byAccount.partners.map((p) => p.account)).toEqual([...accounts].sort());

    // Oldest buffered first; partners with nothing buffered last, by account.
    const byOldest = (await page("?sort=oldest&limit=1000")).partners;
    expect(byOldest).toHaveLength(TOTAL);
    const firstUndefined = byOldest.findIndex((p) => p.oldestBufferedAgeMs === undefined);
    expect(firstUndefined).toBe(S3_PARTNERS);
    const ages = byOldest.slice(0, firstUndefined).map((p) => p.oldestBufferedAgeMs as number);
    expect(ages).toEqual([...ages].sort((a, b) => b - a));
    expect(byOldest.slice(firstUndefined).map((p) => p.account)).toEqual(["down-0", "down-1", "park-0"]);

    // Filters.
    const names = async (query: string) => (await page(query)).partners.map((p) => p.account).sort();
    expect(await names("?state=breaker-open")).toEqual(["down-0", "down-1"]);
    expect(await names("?state=parked")).toEqual(["park-0"]);
    // Whether a partner with no dispatcher is still listed is the directory's choice: compare with it.
    const idle = snapshot.filter((p) => p.state === "idle").map((p) => p.account);
    expect(await names("?state=idle")).toEqual(idle.sort());
    expect(await names("?state=breaker-open,parked")).toEqual(["down-0", "down-1", "park-0"]);
    expect((await page("?state=active&limit=1000")).total).toBe(S3_PARTNERS);
    expect(await names("?prefix=p-01")).toEqual(Array.from({ length: 10 }, (_, i) => s3Account(10 + i)));
    const one = await page("?account=p-007");
    expect(one).toEqual({
      total: 1,
      offset: 0,
      limit: 100,
      partners: [expect.objectContaining({ account: "p-007", buffered: 3 })],
    });
    expect(await page("?prefix=nobody")).toEqual({ total: 0, offset: 0, limit: 100, partners: [] });
    expect((await page(`?offset=${TOTAL + 10}`)).partners).toEqual([]);
    // A filtered page's next keeps the filter.
    const active = await page("?state=active&prefix=p-&limit=50&sort=account");
    expect(active.next).toBe("/partners?state=active&prefix=p-&sort=account&limit=50&offset=50");
    // An empty value counts as not given (as `?state=` always did).
    expect((await page("?state=")).total).toBe(TOTAL);

    // Bad parameters: 400 naming the parameter and what is valid.
    expect(await error("?state=x")).toBe(
      'state: must be one of active, idle, breaker-open, parked, paused (several: comma-separated); got "x"',
    );
    expect(await error("?state=%E0%A4%A")).toMatch(
      /^state: must be one of active, idle, breaker-open, parked/,
    );
    expect(await error("?sort=size")).toBe('sort: must be one of held, oldest, account; got "size"');
    expect(await error("?limit=0")).toBe('limit: must be a whole number from 1 to 1000; got "0"');
    expect(await error("?limit=1001")).toBe('limit: must be a whole number from 1 to 1000; got "1001"');
    expect(await error("?limit=1e3")).toBe('limit: must be a whole number from 1 to 1000; got "1e3"');
    expect(await error("?offset=-1")).toBe('offset: must be a whole number from 0; got "-1"');
    expect(await error("?stat=active")).toBe(
      'unknown parameter "stat"; valid: state, prefix, account, sort, limit, offset',
    );
    expect(await error("?limit=5&limit=6")).toBe("limit: given more than once; give it once");
  });
});

/**
 * Cluster mode end to end: real `octorelay start` processes (src/main.ts) as replicas on one queue of
 * the embedded emulator, sharing their partners' limits through a real redis-server, delivering to
 * HTTP partners on loopback that timestamp every request and note which replica sent it (each
 * replica's config adds an `x-replica` header). What is asserted is what a partner or an operator
 * would see: requests per window, who called when, what was delivered, what /readyz said.
 */
import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect } from "vitest";
import {
  type Emulator,
  queueDepth,
  receiveAll,
  sendBodies,
  type TestQueue,
  uniqueName,
  waitFor,
} from "../helpers/emulator.ts";
import { it } from "../helpers/fixtures.ts";
import type { LoopbackServer } from "../helpers/partner-server.ts";
import type { ServiceProcess } from "../helpers/process.ts";
import { type RedisServer, startRedis } from "../helpers/redis.ts";
import { sampleHandler } from "../helpers/service.ts";

/** One real redis-server for the file; a test that stops it starts it again before it ends. */
let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});

/** What the tests use of the fixtures: the file's emulator, and processes and servers stopped after each test. */
interface Rig {
  emu: Emulator;
  spawn: (config: object, env?: Record<string, string>) => ServiceProcess;
  listen: (handler: RequestListener) => Promise<LoopbackServer>;
}

// ── a partner on loopback ────────────────────────────────────────────────────────────────────────

interface Arrival {
  /** Date.now() when the request arrived: the clock the replicas and Redis read too. */
  atMs: number;
  replica: string;
  ids: string[];
  status: number | "held";
}

/** What the partner answers to one request: a status (and headers), or hold it open, unanswered. */
type Answer = { status: number; headers?: Record<string, string> } | "hold";

interface Partner {
  url: string;
  arrivals: Arrival[];
  /** Ids of the records it accepted (2xx), duplicates included. */
  accepted(): string[];
}

async function startPartner(
  rig: Rig,
  answer: (arrival: Arrival) => Answer = () => ({ status: 200 }),
): Promise<Partner> {
  const arrivals: Arrival[] = [];
  const server = await rig.listen(async (req: IncomingMessage, res: ServerResponse) => {
    const atMs = Date.now();
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const ids = Buffer.concat(chunks)
      .toString("utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => (JSON.parse(line) as { id: string }).id);
    const arrival: Arrival = { atMs, replica: String(req.headers["x-replica"]), ids, status: "held" };
    arrivals.push(arrival);
    const reply = answer(arrival);
    if (reply === "hold") return;
    arrival.status = reply.status;
    res.writeHead(reply.status, reply.headers).end();
  });
  return {
    url: `${server.url}/in`,
    arrivals,
    accepted: () => arrivals.filter((a) => a.status === 200).flatMap((a) => a.ids),
  };
}

/** Most requests, and most records, that arrived within any window of `windowMs` (sliding, every arrival a window start). */
function mostInWindow(arrivals: Arrival[], windowMs = 1000): { requests: number; records: number } {
  const sorted = [...arrivals].sort((a, b) => a.atMs - b.atMs);
  let requests = 0;
  let records = 0;
  for (let start = 0; start < sorted.length; start++) {
    let n = 0;
    let r = 0;
    for (let end = start; end < sorted.length; end++) {
      const arrival = sorted[end] as Arrival;
      if (arrival.atMs - (sorted[start] as Arrival).atMs >= windowMs) break;
      n++;
      r += arrival.ids.length;
    }
    requests = Math.max(requests, n);
    records = Math.max(records, r);
  }
  return { requests, records };
}

// ── replicas ─────────────────────────────────────────────────────────────────────────────────────

interface PartnerEntry {
  partner: Partner;
  [dispatchKey: string]: unknown;
}

interface ClusterOptions {
  queue: TestQueue;
  /** account → its partner and dispatch keys (rateLimit, maxRecords, maxConcurrentFlushes…). */
  accounts: Record<string, PartnerEntry>;
  /** Keys of the queue entry over the test's defaults. */
  queueKeys?: Record<string, unknown>;
  env?: Record<string, string>;
  redisUrl?: string;
  /** `cluster.redis` keys over the key prefix (leaseMs…). */
  redisKeys?: Record<string, unknown>;
  /** `ops` keys (token…). */
  opsKeys?: Record<string, unknown>;
}

/** The config of replica `name`: its partners' destinations carry `x-replica: name`. */
function replicaConfig(name: string, o: ClusterOptions, keyPrefix: string): object {
  const accounts = Object.fromEntries(
    Object.entries(o.accounts).map(([account, { partner, ...dispatch }]) => [
      account,
      { ...dispatch, destination: { type: "http", url: partner.url, headers: { "x-replica": name } } },
    ]),
  );
  return {
    destination: { bucket: "unused-by-http-partners" },
    dispatch: { flushIntervalMs: 100, retryBaseMs: 50, retryMaxMs: 500 },
    cluster: { redis: { keyPrefix, ...o.redisKeys } },
    ...(o.opsKeys ? { ops: o.opsKeys } : {}),
    partners: { accounts },
    queues: [
      {
        queue: o.queue.name,
        handler: sampleHandler("passthrough.ts"),
        waitTimeSec: 1,
        threads: 1,
        concurrency: 4,
        // Small, so that no replica takes the whole queue: every replica holds some of each partner's work.
        maxUnacked: 30,
        partnerShare: 1,
        ...o.queueKeys,
      },
    ],
  };
}

interface Replica {
  name: string;
  proc: ServiceProcess;
  opsUrl: string;
}

/** Replicas r1…rN, each started and polling. */
async function startReplicas(rig: Rig, count: number, o: ClusterOptions): Promise<Replica[]> {
  const keyPrefix = uniqueName("octorelay-test");
  const procs = Array.from({ length: count }, (_, i) => {
    const name = `r${i + 1}`;
    const proc = rig.spawn(replicaConfig(name, o, keyPrefix), {
      OCTORELAY_REDIS_URL: o.redisUrl ?? redis.url,
      ...o.env,
    });
    return { name, proc };
  });
  return Promise.all(
    procs.map(async ({ name, proc }) => {
      await waitFor(
        `${name} started`,
        () => proc.logs.some((l) => l.msg === "octorelay started") || proc.child.exitCode !== null,
        40_000,
      );
      if (proc.child.exitCode !== null) throw new Error(`${name} exited: ${proc.output()}`);
      const listening = proc.logs.find((l) => String(l.msg).startsWith("ops server listening"));
      return { name, proc, opsUrl: String(listening?.url) };
    }),
  );
}

async function stopReplicas(replicas: Replica[]): Promise<(number | null)[]> {
  for (const r of replicas) if (r.proc.child.exitCode === null) r.proc.child.kill("SIGTERM");
  return (await Promise.all(replicas.map((r) => r.proc.exited))).map((e) => e.code);
}

/** Sends `count` messages for `account`; returns their SQS message ids (the records' ids). */
function sendFor(rig: Rig, queue: TestQueue, account: string, count: number): Promise<string[]> {
  return sendBodies(
    rig.emu,
    queue.url,
    Array.from({ length: count }, (_, n) => ({ account, n })),
  );
}

/** Every id accepted by its partner at least once, and the queue empty. */
async function allDelivered(rig: Rig, queue: TestQueue, want: [Partner, string[]][], timeoutMs: number) {
  await waitFor(
    "every record accepted by its partner and the queue empty",
    async () => {
      for (const [partner, ids] of want) {
        const accepted = new Set(partner.accepted());
        if (!ids.every((id) => accepted.has(id))) return false;
      }
      return (await queueDepth(rig.emu, queue.url)) === 0;
    },
    timeoutMs,
    200,
  );
}

/** SHUTDOWN NOSAVE (it closes the connection without a reply), then until it refuses connections. */
async function shutDown(server: RedisServer): Promise<void> {
  await expect(server.command("SHUTDOWN", "NOSAVE")).rejects.toThrow("connection closed before the reply");
  await waitFor(
    "redis refusing connections",
    () =>
      server.command("PING").then(
        () => false,
        () => true,
      ),
    10_000,
  );
}

/** The value of an unlabelled sample in a Prometheus text scrape. */
function sample(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

const duplicates = (ids: string[]) => ids.length - new Set(ids).size;

async function getJson(url: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

// ── the tests ────────────────────────────────────────────────────────────────────────────────────

describe("cluster mode: three replicas share each partner's limits through Redis", () => {
  it("holds a partner at 4 requests/s and one at 50 records/s to their limits in every 1-s window, across three replicas", async ({
    emulator,
    queue,
    spawnService,
    startHttpServer,
  }) => {
    const rig: Rig = { emu: emulator, spawn: spawnService, listen: startHttpServer };
    const four = await startPartner(rig);
    const fifty = await startPartner(rig);
    const replicas = await startReplicas(rig, 3, {
      queue,
      accounts: {
        four: { partner: four, rateLimit: { requests: 4, intervalMs: 1000 }, maxRecords: 5 },
        fifty: { partner: fifty, rateLimit: { records: 50, intervalMs: 1000 }, maxRecords: 10 },
      },
    });
    try {
      const [fourIds, fiftyIds] = await Promise.all([
        sendFor(rig, queue, "four", 80),
        sendFor(rig, queue, "fifty", 200),
      ]);
      await allDelivered(
        rig,
        queue,
        [
          [four, fourIds],
          [fifty, fiftyIds],
        ],
        60_000,
      );
      const fourWindow = mostInWindow(four.arrivals);
      const fiftyWindow = mostInWindow(fifty.arrivals);
      console.log(
        `[figures] cluster limits: "four" ${four.arrivals.length} requests, most in 1 s ${fourWindow.requests} (limit 4); ` +
          `"fifty" ${fifty.accepted().length} records, most in 1 s ${fiftyWindow.records} (limit 50); ` +
          `callers ${[...new Set([...four.arrivals, ...fifty.arrivals].map((a) => a.replica))].sort()}`,
      );
      expect(fourWindow.requests).toBeLessThanOrEqual(4);
      expect(fiftyWindow.records).toBeLessThanOrEqual(50);
      // Each said at start where the limits are kept.
      for (const r of replicas) {
        expect(
          r.proc.logs.some((l) => String(l.msg).startsWith("partner limits: shared through redis://")),
        ).toBe(true);
      }
      // Every replica called the partners: the limit held between them, not by one doing it all.
      expect(new Set([...four.arrivals, ...fifty.arrivals].map((a) => a.replica))).toEqual(
        new Set(["r1", "r2", "r3"]),
      );
      // Nothing failed, so nothing was sent twice.
      expect(duplicates(four.accepted())).toBe(0);
      expect(duplicates(fifty.accepted())).toBe(0);
      expect(await receiveAll(rig.emu, queue.dlqUrl)).toHaveLength(0);
    } finally {
      expect(await stopReplicas(replicas)).toEqual([0, 0, 0]);
    }
  }, 120_000);

  it("a 429 with Retry-After: 3 to one replica stops every replica from calling that partner for 3 s", async ({
    emulator,
    queue,
    spawnService,
    startHttpServer,
  }) => {
    const rig: Rig = { emu: emulator, spawn: spawnService, listen: startHttpServer };
    let told: Arrival | undefined;
    const partner = await startPartner(rig, (arrival) => {
      if (told) return { status: 200 };
      told = arrival;
      return { status: 429, headers: { "retry-after": "3" } };
    });
    const replicas = await startReplicas(rig, 3, {
      queue,
      // One request at a time cluster-wide: none was already under way when the 429 was answered.
      accounts: { slowdown: { partner, maxConcurrentFlushes: 1, maxRecords: 5 } },
    });
    try {
      const ids = await sendFor(rig, queue, "slowdown", 60);
      await allDelivered(rig, queue, [[partner, ids]], 60_000);
      const first = told as Arrival;
      const after = partner.arrivals.filter((a) => a !== first && a.atMs >= first.atMs);
      const next = Math.min(...after.map((a) => a.atMs));
      console.log(
        `[figures] Retry-After: 429 to ${first.replica}; next request ${next - first.atMs} ms later, from ${after.find((a) => a.atMs === next)?.replica}; ` +
          `callers ${[...new Set(partner.arrivals.map((a) => a.replica))].sort()}`,
      );
      expect(next - first.atMs).toBeGreaterThanOrEqual(3000);
      // The other replicas had work for it, and called it once the pause was over.
      expect(new Set(after.map((a) => a.replica)).size).toBeGreaterThanOrEqual(2);
      expect(await receiveAll(rig.emu, queue.dlqUrl)).toHaveLength(0);
    } finally {
      expect(await stopReplicas(replicas)).toEqual([0, 0, 0]);
    }
  }, 120_000);

  it("a replica killed with -9 while holding the partner's only concurrency slot frees it within the lease; nothing is lost", async ({
    emulator,
    queue,
    spawnService,
    startHttpServer,
  }) => {
    const rig: Rig = { emu: emulator, spawn: spawnService, listen: startHttpServer };
    const leaseMs = 3000;
    let held: Arrival | undefined;
    const partner = await startPartner(rig, (arrival) => {
      if (held) return { status: 200 };
      held = arrival;
      return "hold";
    });
    const replicas = await startReplicas(rig, 3, {
      queue,
      accounts: { holder: { partner, maxConcurrentFlushes: 1, maxRecords: 5 } },
      // The killed replica's messages come back to the others this long after its last heartbeat.
      queueKeys: { visibilityTimeoutSec: 5 },
      redisKeys: { leaseMs },
    });
    try {
      const ids = await sendFor(rig, queue, "holder", 30);
      const holding = await waitFor("a request held by the partner", () => held, 30_000);
      const victim = replicas.find((r) => r.name === holding.replica) as Replica;
      victim.proc.child.kill("SIGKILL");
      await victim.proc.exited;
      const killedAtMs = Date.now();
      const next = await waitFor(
        "another replica reaching the partner",
        () => partner.arrivals.find((a) => a !== holding),
        leaseMs + 10_000,
        20,
      );
      console.log(
        `[figures] kill -9: ${victim.name} killed ${killedAtMs - holding.atMs} ms after its request arrived; ` +
          `${next.replica} reached the partner ${next.atMs - killedAtMs} ms after the kill (lease ${leaseMs} ms)`,
      );
      expect(next.replica).not.toBe(victim.name);
      // The slot stayed taken (the lease, not the dropped connection, freed it), and was free again within the lease.
      expect(next.atMs - holding.atMs).toBeGreaterThanOrEqual(leaseMs - 1000);
      expect(next.atMs - killedAtMs).toBeLessThanOrEqual(leaseMs + 1500);
      // At least once: the killed replica's messages come back to the others.
      await allDelivered(rig, queue, [[partner, ids]], 60_000);
      expect(await receiveAll(rig.emu, queue.dlqUrl)).toHaveLength(0);
    } finally {
      const survivors = replicas.filter(
        (r) => r.proc.child.exitCode === null && r.proc.child.signalCode === null,
      );
      expect(await stopReplicas(survivors)).toEqual([0, 0]);
    }
  }, 120_000);
});

describe("cluster mode configuration", () => {
  it("refuses a lease from OCTORELAY_REDIS_LEASE_MS that is not a whole number of ms, naming cluster.redis.leaseMs and what is valid", async ({
    queue,
    spawnService,
  }) => {
    const proc = spawnService(
      {
        destination: { bucket: "unused" },
        queues: [{ queue: queue.name, handler: sampleHandler("passthrough.ts") }],
      },
      { OCTORELAY_REDIS_URL: redis.url, OCTORELAY_REDIS_LEASE_MS: "3s" },
    );
    const { code } = await proc.exited;
    expect(code).toBe(2);
    const stderr = proc.logs.find((l) => l.msg === "stderr")?.stderr;
    expect(stderr).toContain(
      "cluster.redis.leaseMs: must be a whole number of milliseconds, at least 1000, and above the longest destination timeoutMs",
    );
    expect(stderr).toContain('got "3s"');
  });
});

describe("cluster mode when Redis is down", () => {
  it("Redis stopped for 10 s: rate-limited partners wait and the others flow, limits never exceeded, nothing lost or dead-lettered, delivery resumes by itself", async ({
    emulator,
    queue,
    spawnService,
    startHttpServer,
  }) => {
    const rig: Rig = { emu: emulator, spawn: spawnService, listen: startHttpServer };
    const limited = await startPartner(rig);
    let outage = false;
    let toldDuringOutage = false;
    // Unlimited: it flows while Redis is down, and asks for a pause then, which only this replica can keep.
    const free = await startPartner(rig, () => {
      if (!outage || toldDuringOutage) return { status: 200 };
      toldDuringOutage = true;
      return { status: 429, headers: { "retry-after": "1" } };
    });
    const replicas = await startReplicas(rig, 3, {
      queue,
      accounts: {
        limited: { partner: limited, rateLimit: { requests: 4, intervalMs: 1000 }, maxRecords: 5 },
        free: { partner: free, maxRecords: 5 },
      },
      // Room for the free partner's messages while the limited partner's wait: maxUnacked is the memory bound.
      queueKeys: { maxUnacked: 500 },
    });
    try {
      const limitedIds = await sendFor(rig, queue, "limited", 120);
      await waitFor("the limited partner being called", () => limited.arrivals.length >= 4, 30_000);
      // Redis goes away without a word (no persistence: it comes back empty).
      outage = true;
      await shutDown(redis);
      const downAtMs = Date.now();
      const seen = await waitFor(
        "a replica not ready because of the partner limits, and /partners saying why",
        async () => {
          for (const r of replicas) {
            const ready = await getJson(`${r.opsUrl}/readyz`);
            const reasons = (ready.body as { reasons: string[] }).reasons;
            const reason = reasons.find((x) => x.startsWith("partner limits: redis unreachable"));
            const page = (await getJson(`${r.opsUrl}/partners?account=limited`)).body as {
              partners: { account: string; waitingFor?: string }[];
            };
            const waiting = page.partners.find((p) => p.waitingFor)?.waitingFor;
            const metrics = await (await fetch(`${r.opsUrl}/metrics`)).text();
            const up = sample(metrics, "octorelay_partner_limits_up");
            const errors = sample(metrics, "octorelay_partner_limits_errors_total") ?? 0;
            if (ready.status === 503 && reason && waiting && up === 0 && errors > 0)
              return { reason, waiting, errors };
          }
          return undefined;
        },
        8_000,
        200,
      );
      console.log(
        `[figures] Redis down: /metrics octorelay_partner_limits_up 0, octorelay_partner_limits_errors_total ${seen.errors}; ` +
          `/readyz "${seen.reason}"; /partners waitingFor "${seen.waiting}"`,
      );
      expect(seen.waiting).toMatch(
        /^partner limits: redis unreachable: .*; not called until the store answers again$/,
      );
      // Partners without a rate limit keep flowing meanwhile.
      const freeIds = await sendFor(rig, queue, "free", 20);
      await waitFor(
        "the unlimited partner's records delivered while Redis is down",
        () => freeIds.every((id) => free.accepted().includes(id)),
        8_000,
        100,
      );
      // The outage itself lasts 10 s, whatever the checks above took.
      const waitedMs = Date.now() - downAtMs;
      if (waitedMs < 10_000) await new Promise((resolve) => setTimeout(resolve, 10_000 - waitedMs));
      outage = false;
      const upAtMs = Date.now();
      await redis.restart();
      // A request granted just before the stop may still arrive a moment after it.
      const limitedWhileDown = limited.arrivals.filter(
        (a) => a.atMs > downAtMs + 100 && a.atMs < upAtMs,
      ).length;
      await allDelivered(
        rig,
        queue,
        [
          [limited, limitedIds],
          [free, freeIds],
        ],
        60_000,
      );
      const window = mostInWindow(limited.arrivals);
      const resumedAfterMs =
        Math.min(...limited.arrivals.filter((a) => a.atMs > upAtMs).map((a) => a.atMs)) - upAtMs;
      console.log(
        `[figures] Redis outage ${upAtMs - downAtMs} ms: limited partner called ${limitedWhileDown} times while down (in flight at the stop), ` +
          `resumed ${resumedAfterMs} ms after Redis was back, most in 1 s ${window.requests} (limit 4); free partner ${free.accepted().length} records`,
      );
      expect(limitedWhileDown).toBe(0);
      expect(window.requests).toBeLessThanOrEqual(4);
      expect(await receiveAll(rig.emu, queue.dlqUrl)).toHaveLength(0);
      // Every replica is alive and says what happened, once each way.
      for (const r of replicas) expect(r.proc.child.exitCode).toBeNull();
      const all = replicas.flatMap((r) => r.proc.logs);
      expect(all.filter((l) => String(l.msg).startsWith("partner limits store unreachable"))).toHaveLength(3);
      expect(all.filter((l) => l.msg === "partner limits store reachable again")).toHaveLength(3);
      // A pause asked for while Redis was down was kept by its replica alone, logged, not a crash.
      expect(toldDuringOutage).toBe(true);
      expect(
        all.some((l) => l.msg === "could not record the partner's pause; other replicas may call it"),
      ).toBe(true);
      expect(all.some((l) => l.msg === "unhandled rejection")).toBe(false);
      for (const r of replicas) {
        expect((await getJson(`${r.opsUrl}/readyz`)).status).toBe(200);
        expect(sample(await (await fetch(`${r.opsUrl}/metrics`)).text(), "octorelay_partner_limits_up")).toBe(
          1,
        );
      }
    } finally {
      // Whatever happened, the next test gets a Redis.
      await redis.restart().catch(() => undefined);
      expect(await stopReplicas(replicas)).toEqual([0, 0, 0]);
    }
  }, 120_000);

  it("starts without Redis (rate-limited partners wait, the others flow), connects when it comes, and never logs the password", async ({
    emulator,
    queue,
    spawnService,
    startHttpServer,
  }) => {
    const rig: Rig = { emu: emulator, spawn: spawnService, listen: startHttpServer };
    const password = "pa55-w0rd-never-logged";
    const secured = await startRedis({ user: { name: "octo", password } });
    try {
      await shutDown(secured);
      const limited = await startPartner(rig);
      const free = await startPartner(rig);
      const replicas = await startReplicas(rig, 1, {
        queue,
        redisUrl: secured.url,
        accounts: {
          limited: { partner: limited, rateLimit: { requests: 10, intervalMs: 1000 } },
          free: { partner: free },
        },
      });
      try {
        const [replica] = replicas as [Replica];
        const logs = replica.proc.logs;
        const where = logs.find((l) => String(l.msg).startsWith("partner limits:"))?.msg;
        expect(where).toMatch(
          new RegExp(
            `^partner limits: shared through redis://octo:\\*\\*\\*@127\\.0\\.0\\.1:${secured.port} \\(prefix octorelay-test-\\w+\\)$`,
          ),
        );
        expect(
          logs.some((l) => String(l.msg).startsWith("partner limits store not reachable at start")),
        ).toBe(true);
        const [limitedIds, freeIds] = await Promise.all([
          sendFor(rig, queue, "limited", 10),
          sendFor(rig, queue, "free", 10),
        ]);
        await waitFor("the unlimited partner's records delivered", () =>
          freeIds.every((id) => free.accepted().includes(id)),
        );
        expect(limited.arrivals).toHaveLength(0);
        const ready = await getJson(`${replica.opsUrl}/readyz`);
        expect(ready.status).toBe(503);
        expect((ready.body as { reasons: string[] }).reasons.join("\n")).toContain(
          "partner limits: redis unreachable",
        );
        await secured.restart();
        await allDelivered(rig, queue, [[limited, limitedIds]], 30_000);
        expect(logs.some((l) => l.msg === "partner limits store connected")).toBe(true);
      } finally {
        expect(await stopReplicas(replicas)).toEqual([0]);
        expect(replicas[0]?.proc.output()).not.toContain(password);
      }
    } finally {
      await secured.stop();
    }
  }, 120_000);
  it("a Redis that stops answering with its connection open (SIGSTOP): /readyz 503 and up 0 within seconds, the limited partner not called, all back after SIGCONT", async ({
    emulator,
    queue,
    spawnService,
    startHttpServer,
  }) => {
    const rig: Rig = { emu: emulator, spawn: spawnService, listen: startHttpServer };
    const frozen = await startRedis();
    const limited = await startPartner(rig);
    const replicas = await startReplicas(rig, 1, {
      queue,
      redisUrl: frozen.url,
      accounts: { limited: { partner: limited, rateLimit: { requests: 10, intervalMs: 1000 } } },
    });
    const [replica] = replicas as [Replica];
    const state = async () => ({
      ready: (await getJson(`${replica.opsUrl}/readyz`)) as { status: number; body: { reasons: string[] } },
      up: sample(await (await fetch(`${replica.opsUrl}/metrics`)).text(), "octorelay_partner_limits_up"),
    });
    try {
      const before = await sendFor(rig, queue, "limited", 5);
      await allDelivered(rig, queue, [[limited, before]], 30_000);
      expect(await state()).toMatchObject({ ready: { status: 200 }, up: 1 });

      frozen.pause();
      const frozenAtMs = Date.now();
      let seen: Awaited<ReturnType<typeof state>> | undefined;
      try {
        seen = await waitFor(
          "/readyz 503 and octorelay_partner_limits_up 0 while Redis hangs",
          async () => {
            const now = await state();
            return now.ready.status === 503 && now.up === 0 ? now : undefined;
          },
          15_000,
          200,
        );
        const noticedMs = Date.now() - frozenAtMs;
        const during = await sendFor(rig, queue, "limited", 5);
        // Its batch is refused by the limits, not sent: the partner is not called while they cannot be counted.
        await waitFor(
          "a flush of the limited partner refused by the limits",
          () =>
            replica.proc.logs.some(
              (l) =>
                l.msg === "flush failed; retrying" &&
                String((l.err as { message?: string } | undefined)?.message).startsWith(
                  'partner limits unavailable for partner "limited"',
                ),
            ),
          15_000,
        );
        console.log(
          `[figures] SIGSTOP: /readyz 503 after ${noticedMs} ms, reason "${seen.ready.body.reasons.join("; ")}"`,
        );
        expect(seen.ready.body.reasons.join("\n")).toMatch(
          /partner limits: redis unreachable: no answer within/,
        );
        const resumedAtMs = Date.now();
        frozen.resume();
        await allDelivered(rig, queue, [[limited, during]], 30_000);
        const calledWhileFrozen = limited.arrivals.filter(
          (a) => a.atMs < resumedAtMs && a.ids.some((id) => during.includes(id)),
        );
        expect(calledWhileFrozen).toHaveLength(0);
      } finally {
        frozen.resume();
      }
      await waitFor("/readyz 200 and up 1 again", async () => {
        const now = await state();
        return now.ready.status === 200 && now.up === 1;
      });
      const lines = replica.proc.logs.filter((l) =>
        /^partner limits store (unreachable|reachable again)/.test(String(l.msg)),
      );
      expect(lines.map((l) => l.level)).toEqual([40, 30]);
      expect(replica.proc.logs.some((l) => l.msg === "unhandled rejection")).toBe(false);
    } finally {
      expect(await stopReplicas(replicas)).toEqual([0]);
      await frozen.stop();
    }
  }, 120_000);

  it("console pause and resume while Redis is down answer 503 with why and when to try again, in HTML and JSON", async ({
    emulator,
    queue,
    spawnService,
    startHttpServer,
  }) => {
    const rig: Rig = { emu: emulator, spawn: spawnService, listen: startHttpServer };
    const token = "console-token-0123456789";
    const gone = await startRedis();
    const partner = await startPartner(rig);
    const replicas = await startReplicas(rig, 1, {
      queue,
      redisUrl: gone.url,
      accounts: { acme: { partner, rateLimit: { requests: 10, intervalMs: 1000 } } },
      opsKeys: { token },
    });
    const [replica] = replicas as [Replica];
    try {
      await gone.stop();
      await waitFor("/readyz 503", async () => (await getJson(`${replica.opsUrl}/readyz`)).status === 503);
      const post = (verb: string, accept: string) =>
        fetch(`${replica.opsUrl}/console/partners/acme/${verb}`, {
          method: "POST",
          redirect: "manual",
          headers: {
            authorization: `Bearer ${token}`,
            accept,
            "content-type": "application/x-www-form-urlencoded",
          },
          body: verb === "pause" ? "for=1h" : "",
        });
      const said =
        /^partner limits unavailable: redis unreachable: .+; (paused|resumed) in this replica only; try again when Redis answers$/;
      for (const verb of ["pause", "resume"]) {
        const json = await post(verb, "application/json");
        expect(json.status).toBe(503);
        const { error } = (await json.json()) as { error: string };
        expect(error).toMatch(said);
        expect(error).toContain(
          verb === "pause" ? "paused in this replica only" : "resumed in this replica only",
        );
        const html = await post(verb, "text/html");
        expect(html.status).toBe(503);
        const page = await html.text();
        expect(page).toContain("Service unavailable");
        expect(page).toContain("partner limits unavailable: redis unreachable: ");
        expect(page).toContain("try again when Redis answers");
      }
      expect(replica.proc.logs.some((l) => l.msg === "console request failed")).toBe(false);
    } finally {
      expect(await stopReplicas(replicas)).toEqual([0]);
    }
  }, 120_000);
});

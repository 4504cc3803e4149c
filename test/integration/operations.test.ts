/**
 * What an operator reads: /metrics, /healthz, /readyz and /partners of a running service, the logs
 * of the real process, and several replicas sharing one queue.
 */
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { pino } from "pino";
import { describe, expect } from "vitest";
import { Metrics } from "../../src/ops/metrics.ts";
import { type OpsServer, startOpsServer } from "../../src/ops/ops-server.ts";
import type { Service } from "../../src/service.ts";
import { createQueue, queueDepth, readDelivered, sendBodies, waitFor } from "../helpers/emulator.ts";
import { account, report } from "../helpers/figures.ts";
import { it, type Teardown } from "../helpers/fixtures.ts";
import { sampleHandler } from "../helpers/service.ts";

/** Value of one sample of the Prometheus text, e.g. sample(text, "octorelay_x_total", { queue: "q" }). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const found = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(line.split(" ").pop());
  }
  return undefined;
}

/** An ops server for `svc`, closed after the test. */
async function serve(teardown: Teardown, svc: Service, s3?: S3Client): Promise<OpsServer> {
  const metrics = new Metrics(svc, { partnerMetricsTop: 2, partnerMetricsAccounts: ["acct-9"] });
  if (s3) metrics.instrument(s3, "s3");
  const ops = await startOpsServer(
    { service: svc, metrics, log: pino({ level: "silent" }) },
    { host: "127.0.0.1", port: 0 },
  );
  teardown.close(() => ops.close());
  return ops;
}

describe("ops endpoints", () => {
  it("/metrics after a run shows counts equal to what was sent and the objects found", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
    teardown,
  }) => {
    const N = 300;
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: N }, (_, n) => ({ account: `acct-${n % 12}`, n })),
    );
    // A client of its own, so the S3 calls counted are this service's only.
    const s3 = new S3Client({ region: emu.region, endpoint: emu.endpoint, forcePathStyle: true });
    const service = await startService(
      {
        dispatch: { flushIntervalMs: 150 },
        destination: { bucket },
        queues: [{ queue: q.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
      },
      { s3 },
    );
    const ops = await serve(teardown, service, s3);
    await waitFor("all deleted", () => service?.relays[0]?.stats.deleted === N, 30_000);
    const listed = await emu.s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    const objects = listed.KeyCount ?? 0;

    const text = await (await fetch(`${ops.url}/metrics`)).text();
    const queue = { queue: q.name };
    expect(sample(text, "octorelay_messages_received_total", queue)).toBe(N);
    expect(sample(text, "octorelay_messages_handled_total", queue)).toBe(N);
    expect(sample(text, "octorelay_messages_deleted_total", queue)).toBe(N);
    expect(sample(text, "octorelay_outputs_total", queue)).toBe(N);
    expect(
      sample(text, "octorelay_flushes_total", { ...queue, destination: "s3", outcome: "delivered" }),
    ).toBe(objects);
    expect(
      sample(text, "octorelay_aws_calls_total", { service: "s3", operation: "PutObject", outcome: "ok" }),
    ).toBe(objects);
    expect(sample(text, "octorelay_flush_records_sum", { destination: "s3" })).toBe(N);
    expect(sample(text, "octorelay_unacked_messages", queue)).toBe(0);
    expect(sample(text, "octorelay_handler_duration_seconds_count", { queue: q.name, outcome: "ok" })).toBe(
      N,
    );
    // Bounded partner series: the top 2 and the listed acct-9 by name, the other 9 summed.
    const partnerSeries = text.split("\n").filter((l) => l.startsWith("octorelay_partner_held_records{"));
    expect(partnerSeries.length).toBeLessThanOrEqual(4);
    expect(partnerSeries.some((l) => l.includes('account="acct-9"'))).toBe(true);
    expect(partnerSeries.some((l) => l.includes('account="_other"'))).toBe(true);
    console.log(
      `[figures] /metrics: received ${N}, deleted ${N}, ${objects} objects = ${objects} delivered flushes`,
    );
  });

  it("/healthz answers, /readyz is ready while serving and turns 503 while draining, /partners lists partners", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
    slowHandlers: { release },
    teardown,
  }) => {
    await sendBodies(emu, q.url, [
      { account: "held", block: true },
      ...Array.from({ length: 5 }, () => ({ account: "quick", delayMs: 1 })),
    ]);
    const service = await startService({
      dispatch: { flushIntervalMs: 100 },
      destination: { bucket },
      queues: [{ queue: q.name, handler: "slow.ts", concurrency: 2, waitTimeSec: 1 }],
    });
    const ops = await serve(teardown, service);
    expect((await fetch(`${ops.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${ops.url}/readyz`);
    expect(ready.status).toBe(200);
    await waitFor("quick ones delivered", () => (service?.relays[0]?.stats.deleted ?? 0) >= 5, 20_000);
    const partners = (await (await fetch(`${ops.url}/partners`)).json()) as {
      partners: { account: string; state: string }[];
    };
    expect(partners.partners.find((p) => p.account === "quick")?.state).toMatch(/active|idle/);

    const stopping = service.stop(AbortSignal.timeout(10_000));
    const draining = await fetch(`${ops.url}/readyz`);
    expect(draining.status).toBe(503);
    expect(((await draining.json()) as { reasons: string[] }).reasons).toContain("draining");
    release();
    await stopping;
  });
});

describe("logs of the real process", () => {
  it("carry queue and account bindings and never contain a configured secret", async ({
    emulator: emu,
    queue: q,
    bucket,
    partnerServer: partner,
    spawnService,
  }) => {
    partner.mode = "503";
    const secret = "tok-3b1f9c7e-never-log-me";
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: 20 }, (_, n) => ({ account: "acme", n })),
    );
    const proc = spawnService(
      {
        destination: { bucket },
        dispatch: { flushIntervalMs: 100, retryBaseMs: 50, retryMaxMs: 100 },
        partners: {
          accounts: {
            acme: {
              destination: { type: "http", url: `${partner.url}/in/{account}`, authTokenEnv: "ACME_TOKEN" },
              breaker: { failures: 2, cooldownMs: 200 },
            },
          },
        },
        queues: [{ queue: q.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 }],
      },
      { ACME_TOKEN: secret, OCTORELAY_LOG_LEVEL: "debug" },
    );
    await waitFor(
      "flush failures and a breaker change logged",
      () =>
        proc.logs.some((l) => l.msg === "flush failed; retrying") &&
        proc.logs.some((l) => l.msg === "partner breaker opened"),
    );
    partner.mode = "up";
    await waitFor("delivered after recovery", () => partner && partner.records().length === 20, 20_000);
    expect(partner.batches.every((b) => b.authorization === `Bearer ${secret}`)).toBe(true);
    proc.child.kill("SIGTERM");
    await proc.exited;
    expect(proc.output()).not.toContain(secret);
    const withAccount = proc.logs.filter((l) => l.account === "acme");
    expect(withAccount.length).toBeGreaterThan(0);
    for (const line of withAccount.filter((l) => l.component === "dispatcher"))
      expect(line.queue).toBe(q.name);
    for (const msg of [
      "octorelay started",
      "queue ready",
      "dispatcher spawned",
      "shutting down: draining",
      "shutdown complete",
    ]) {
      expect(
        proc.logs.some((l) => l.msg === msg),
        msg,
      ).toBe(true);
    }
  });
});

describe("horizontal scaling", () => {
  it("three replicas on one queue: every message delivered, nothing lost, duplicates counted", async ({
    emulator: emu,
    bucket,
    spawnService,
  }) => {
    const q = await createQueue(emu, { visibilityTimeoutSec: 30 });
    const N = 1500;
    const ids = await sendBodies(
      emu,
      q.url,
      Array.from({ length: N }, (_, n) => ({ account: `a-${n % 40}`, delayMs: 2 })),
    );
    const config = {
      destination: { bucket },
      dispatch: { flushIntervalMs: 300 },
      queues: [{ queue: q.name, handler: "slow.ts", concurrency: 8, threads: 1, waitTimeSec: 1 }],
    };
    const replicas = [spawnService(config), spawnService(config), spawnService(config)];
    const figures = await waitFor(
      "every message delivered and the queue empty",
      async () => {
        const f = account(ids, await readDelivered(emu, bucket), []);
        return f.lost === 0 && (await queueDepth(emu, q.url)) === 0 ? f : undefined;
      },
      60_000,
      500,
    );
    report("three replicas on one queue", figures);
    const perReplica = replicas.map((r) => r.logs.filter((l) => l.msg === "queue ready").length);
    expect(perReplica).toEqual([1, 1, 1]);
    expect(figures.delivered).toBe(N);
    for (const r of replicas) r.child.kill("SIGTERM");
    const exits = await Promise.all(replicas.map((r) => r.exited));
    expect(exits.map((e) => e.code)).toEqual([0, 0, 0]);
  });
});

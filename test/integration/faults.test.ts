/**
 * Nothing lost: each test injects a fault for real (a failing S3 in front of the emulator, throwing
 * or crashing handlers, handlers slower than the visibility timeout) and accounts for every message.
 */
import { S3Client } from "@aws-sdk/client-s3";
import { describe, expect, onTestFinished } from "vitest";
import {
  createQueue,
  queueDepth,
  readDeadLetters,
  readDelivered,
  receiveAll,
  sendBodies,
  waitFor,
} from "../helpers/emulator.ts";
import { account, report } from "../helpers/figures.ts";
import { it } from "../helpers/fixtures.ts";
import { sampleHandler } from "../helpers/service.ts";
import { spySqs } from "../helpers/sqs-spy.ts";

function s3Through(region: string, url: string): S3Client {
  return new S3Client({ region, endpoint: url, forcePathStyle: true, maxAttempts: 1 });
}

describe("destination failures", () => {
  it("S3 down for a window (503s and dropped connections): everything lands after recovery, nothing deleted before its object exists", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
    startFaultProxy,
  }) => {
    const proxy = await startFaultProxy("503-and-drop");
    const spy = spySqs(emu);
    const early: string[] = [];
    spy.beforeDelete = async (ids) => {
      const delivered = new Set((await readDelivered(emu, bucket)).map((r) => r.id));
      early.push(...ids.filter((id) => !delivered.has(id)));
    };
    const ids = await sendBodies(
      emu,
      q.url,
      Array.from({ length: 200 }, (_, n) => ({ account: `p-${n % 8}`, n })),
    );
    const service = await startService(
      {
        // A short breaker cool-down: recovery is noticed within a fraction of a second.
        dispatch: {
          flushIntervalMs: 100,
          retryBaseMs: 50,
          retryMaxMs: 400,
          breaker: { failures: 5, cooldownMs: 300 },
        },
        destination: { bucket },
        queues: [
          {
            queue: q.name,
            handler: sampleHandler("passthrough.ts"),
            waitTimeSec: 1,
            visibilityTimeoutSec: 5,
          },
        ],
      },
      { sqs: spy.sqs, s3: s3Through(emu.region, proxy.url) },
    );
    const relay = service.relays[0];
    await waitFor("flushes failing during the outage", () => (relay?.stats.flushFailures ?? 0) >= 20);
    expect(relay?.stats.deleted).toBe(0);
    expect(await readDelivered(emu, bucket)).toEqual([]);

    proxy.mode = "pass";
    await waitFor("every message deleted after recovery", () => relay?.stats.deleted === 200, 30_000);
    const figures = account(ids, await readDelivered(emu, bucket), []);
    report("S3 down for a window", figures);
    expect(figures.lost).toBe(0);
    expect(figures.delivered).toBe(200);
    expect(early).toEqual([]);
    expect(await queueDepth(emu, q.url)).toBe(0);
  });

  it("a destination that never recovers: messages are released back to the queue, un-acked stays bounded", async ({
    emulator: emu,
    bucket,
    startService,
    startFaultProxy,
  }) => {
    const q = await createQueue(emu, { maxReceiveCount: 1000 });
    const proxy = await startFaultProxy("503");
    const spy = spySqs(emu);
    const maxUnacked = 25;
    const ids = await sendBodies(
      emu,
      q.url,
      Array.from({ length: 100 }, (_, n) => ({ account: `p-${n % 5}`, n })),
    );
    const service = await startService(
      {
        dispatch: { flushIntervalMs: 100, retryBaseMs: 50, retryMaxMs: 200, giveUpAfterMs: 600 },
        destination: { bucket },
        queues: [
          {
            queue: q.name,
            handler: sampleHandler("passthrough.ts"),
            maxUnacked,
            retryBaseMs: 100,
            waitTimeSec: 1,
            visibilityTimeoutSec: 5,
          },
        ],
      },
      { sqs: spy.sqs, s3: s3Through(emu.region, proxy.url) },
    );
    const relay = service.relays[0];
    // Every message must come back from SQS at least once after being given up on.
    await waitFor("released messages received again", () => (relay?.stats.received ?? 0) >= 250, 45_000);
    expect(relay?.stats.released).toBeGreaterThanOrEqual(100);
    expect(relay?.stats.deleted).toBe(0);
    expect(spy.maxOutstanding()).toBeLessThanOrEqual(maxUnacked);
    expect(relay?.unacked).toBeLessThanOrEqual(maxUnacked);

    await service.stop(AbortSignal.timeout(5000));
    const back = await waitFor(
      "all 100 visible in the queue again",
      async () => {
        const got = await receiveAll(emu, q.url, 60);
        return got.length === 100 ? got : undefined;
      },
      20_000,
      500,
    );
    const figures = account(ids, [], []);
    report("destination never recovers (all back in the queue)", { ...figures, lost: 100 - back.length });
    expect(new Set(back.map((m) => m.MessageId))).toEqual(new Set(ids));
    expect(await readDelivered(emu, bucket)).toEqual([]);
  });
});

describe("handler failures", () => {
  it("poison bodies and an always-throwing handler reach the dead-letter queue with the reason; good messages beside them are delivered", async ({
    emulator: emu,
    bucket,
    startService,
  }) => {
    const q = await createQueue(emu, { maxReceiveCount: 3 });
    const bodies: unknown[] = [];
    for (let n = 0; n < 30; n++) {
      if (n % 10 === 3) bodies.push("{truncated");
      else if (n % 10 === 5) bodies.push({ kind: "permanent", account: "x" });
      else if (n % 10 === 7) bodies.push({ kind: "throw", account: "x" });
      else bodies.push({ kind: "ok", account: `a-${n % 3}` });
    }
    const ids = await sendBodies(emu, q.url, bodies);
    const service = await startService({
      dispatch: { flushIntervalMs: 100 },
      destination: { bucket },
      queues: [
        {
          queue: q.name,
          handler: "picky.ts",
          retryBaseMs: 100,
          retryMaxMs: 200,
          waitTimeSec: 1,
          visibilityTimeoutSec: 5,
        },
      ],
    });
    await waitFor("all 30 deleted", () => service?.relays[0]?.stats.deleted === 30, 30_000);
    const dead = await readDeadLetters(emu, q.dlqUrl);
    const delivered = await readDelivered(emu, bucket);
    const figures = account(
      ids,
      delivered,
      dead.map((d) => d.id),
    );
    report("poison bodies and an always-throwing handler", figures);
    expect(figures).toMatchObject({ sent: 30, delivered: 21, deadLettered: 9, duplicated: 0, lost: 0 });
    const reasonOf = (n: number) => dead.find((d) => d.id === ids[n])?.reason ?? "";
    expect(reasonOf(3)).toMatch(/not valid JSON/);
    expect(reasonOf(5)).toMatch(/unknown partner/);
    expect(reasonOf(7)).toMatch(/failed on receive 3 of 3: .*always fails/);
    expect(await queueDepth(emu, q.url)).toBe(0);
  });

  it("fast handlers share thread hops, and each message still gets its own outcome", async ({
    emulator: emu,
    bucket,
    startService,
  }) => {
    const q = await createQueue(emu, { maxReceiveCount: 2 });
    const service = await startService({
      dispatch: { flushIntervalMs: 100 },
      destination: { bucket },
      queues: [
        { queue: q.name, handler: "picky.ts", threads: 1, retryBaseMs: 100, retryMaxMs: 200, waitTimeSec: 1 },
      ],
    });
    // A warm-up of fast handlers: from then on messages go to the thread in groups.
    const warm = Array.from({ length: 100 }, (_, n) => ({ kind: "ok", account: `w-${n % 2}` }));
    const warmIds = await sendBodies(emu, q.url, warm);
    await waitFor("the warm-up deleted", () => service?.relays[0]?.stats.deleted === warm.length, 30_000);
    // Then receives that mix every outcome: a group's outcomes must each reach their own message.
    const bodies: unknown[] = [];
    for (let n = 0; n < 40; n++) {
      if (n % 4 === 1) bodies.push("{truncated");
      else if (n % 4 === 2) bodies.push({ kind: "permanent", account: "x" });
      else bodies.push({ kind: "ok", account: `a-${n % 3}` });
    }
    const ids = await sendBodies(emu, q.url, bodies);
    await waitFor(
      "all deleted",
      () => service?.relays[0]?.stats.deleted === warm.length + bodies.length,
      30_000,
    );
    const dead = await readDeadLetters(emu, q.dlqUrl);
    const delivered = await readDelivered(emu, bucket);
    const figures = account(
      [...warmIds, ...ids],
      delivered,
      dead.map((d) => d.id),
    );
    report("mixed outcomes in grouped hops", figures);
    expect(figures).toMatchObject({ delivered: 120, deadLettered: 20, duplicated: 0, lost: 0 });
    for (const [n, id] of ids.entries()) {
      const reason = dead.find((d) => d.id === id)?.reason;
      if (n % 4 === 1) expect(reason, `message ${n}`).toMatch(/not valid JSON/);
      else if (n % 4 === 2) expect(reason, `message ${n}`).toMatch(/unknown partner/);
      else expect(delivered.find((r) => r.id === id)?.account, `message ${n}`).toBe(`a-${n % 3}`);
    }
  });

  it("slower handlers go to their threads one by one: a handler that hangs holds back no other message", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
    slowHandlers: { running, release },
  }) => {
    const service = await startService({
      dispatch: { flushIntervalMs: 100 },
      destination: { bucket },
      queues: [{ queue: q.name, handler: "slow.ts", concurrency: 10, threads: 1, waitTimeSec: 1 }],
    });
    const relay = service.relays[0];
    const first = await sendBodies(
      emu,
      q.url,
      Array.from({ length: 20 }, (_, n) => ({ account: "s", delayMs: 20, n })),
    );
    await waitFor("the first 20 deleted", () => relay?.stats.deleted === 20, 30_000);
    // One that hangs, sent with nine others: none of them waits for it.
    const ids = await sendBodies(emu, q.url, [
      { account: "s", block: true },
      ...Array.from({ length: 9 }, (_, n) => ({ account: "s", delayMs: 20, n })),
    ]);
    await waitFor("the nine deleted while one hangs", () => relay?.stats.deleted === 29, 20_000);
    expect(running.now).toBe(1);
    release();
    await waitFor("the last one deleted", () => relay?.stats.deleted === 30, 20_000);
    const figures = account([...first, ...ids], await readDelivered(emu, bucket), []);
    expect(figures).toMatchObject({ delivered: 30, duplicated: 0, lost: 0 });
  });

  it("a crashing worker thread (process.exit, uncaught exception) is replaced and its messages retried; another queue does not notice", async ({
    emulator: emu,
    bucket,
    startService,
  }) => {
    const crashy = await createQueue(emu);
    const calm = await createQueue(emu);
    const crashIds = await sendBodies(emu, crashy.url, [
      { crash: "exit", account: "c" },
      { crash: "uncaught", account: "c" },
      ...Array.from({ length: 18 }, () => ({ account: "c" })),
    ]);
    const calmIds = await sendBodies(
      emu,
      calm.url,
      Array.from({ length: 60 }, (_, n) => ({ account: `k-${n % 3}` })),
    );
    const service = await startService({
      dispatch: { flushIntervalMs: 100 },
      destination: { bucket },
      queues: [
        {
          queue: crashy.name,
          handler: "crashy.ts",
          threads: 2,
          retryBaseMs: 100,
          waitTimeSec: 1,
          visibilityTimeoutSec: 5,
        },
        { queue: calm.name, handler: sampleHandler("passthrough.ts"), waitTimeSec: 1 },
      ],
    });
    await waitFor(
      "both queues drained",
      () => service?.relays[0]?.stats.deleted === 20 && service.relays[1]?.stats.deleted === 60,
      30_000,
    );
    expect(service.relays[0]?.stats.handlerFailures).toBeGreaterThanOrEqual(2);
    expect(service.relays[1]?.stats.handlerFailures).toBe(0);
    const figures = account([...crashIds, ...calmIds], await readDelivered(emu, bucket), []);
    report("crashing worker threads", figures);
    expect(figures.lost).toBe(0);
    expect(figures.delivered).toBe(80);
  });

  it("handlers slower than the visibility timeout and a flush interval longer than it: heartbeats keep every message from being received twice", async ({
    emulator: emu,
    bucket,
    startService,
  }) => {
    const q = await createQueue(emu, { visibilityTimeoutSec: 2 });
    const spy = spySqs(emu);
    const ids = await sendBodies(
      emu,
      q.url,
      Array.from({ length: 12 }, (_, n) => ({ account: `a-${n % 2}`, delayMs: n < 6 ? 3500 : 10 })),
    );
    const service = await startService(
      {
        dispatch: { flushIntervalMs: 3500 },
        destination: { bucket },
        queues: [
          { queue: q.name, handler: "slow.ts", concurrency: 12, waitTimeSec: 1, visibilityTimeoutSec: 2 },
        ],
      },
      { sqs: spy.sqs },
    );
    await waitFor("all 12 deleted", () => service?.relays[0]?.stats.deleted === 12, 30_000);
    const receipts = [...spy.idByReceipt.values()];
    const figures = account(ids, await readDelivered(emu, bucket), []);
    report("heartbeats past the visibility timeout", {
      ...figures,
      duplicated: receipts.length - new Set(receipts).size,
    });
    expect(receipts).toHaveLength(12);
    expect(service.relays[0]?.stats.visibilityExtended).toBeGreaterThan(0);
    expect(figures).toMatchObject({ delivered: 12, duplicated: 0, lost: 0 });
  });

  it("a handler past its timeout is abandoned and retried; one that blocks its thread gets the pool's threads replaced", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
  }) => {
    const aborted: { event: string; id: string; reason: string }[] = [];
    const channel = new BroadcastChannel("octorelay-stuck");
    channel.onmessage = (event: MessageEvent) =>
      aborted.push(event.data as { event: string; id: string; reason: string });
    onTestFinished(() => channel.close());
    const ids = await sendBodies(emu, q.url, [
      { mode: "sleep", account: "t" },
      { mode: "spin", account: "t" },
      ...Array.from({ length: 10 }, () => ({ mode: "fine", account: "t" })),
    ]);
    const service = await startService({
      dispatch: { flushIntervalMs: 100 },
      destination: { bucket },
      queues: [
        {
          queue: q.name,
          handler: "stuck.ts",
          handlerTimeoutMs: 300,
          retryBaseMs: 100,
          threads: 2,
          waitTimeSec: 1,
          visibilityTimeoutSec: 10,
        },
      ],
    });
    await waitFor("all 12 deleted", () => service?.relays[0]?.stats.deleted === 12, 40_000);
    const delivered = await readDelivered(emu, bucket);
    const figures = account(ids, delivered, []);
    report("handler timeouts (cooperative and runaway)", figures);
    expect(figures.lost).toBe(0);
    const attemptOf = (n: number) =>
      (delivered.find((r) => r.id === ids[n])?.payload as { attempt: number } | undefined)?.attempt;
    expect(attemptOf(0)).toBeGreaterThanOrEqual(2);
    // The one that waits on its signal heard it fire, with the reason, when its time was up.
    expect(aborted).toContainEqual({
      event: "aborted",
      id: ids[0],
      reason: "handler timed out after 300 ms",
    });
    expect(attemptOf(1)).toBeGreaterThanOrEqual(2);
    expect(service.relays[0]?.stats.handlerFailures).toBeGreaterThanOrEqual(2);
  });
});

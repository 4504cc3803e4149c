import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Service } from "../../src/service.ts";
import {
  createBucket,
  createQueue,
  type Emulator,
  queueDepth,
  readDelivered,
  sendBodies,
  startEmulator,
  waitFor,
} from "../helpers/emulator.ts";
import { startService } from "../helpers/service.ts";
import { spySqs } from "../helpers/sqs-spy.ts";

let emu: Emulator;
let service: Service | undefined;
const channel = new BroadcastChannel("octorelay-test");

/** Handlers running right now and the most ever seen, from the handlers' own start/end messages. */
const running = { now: 0, max: 0, started: 0 };
channel.onmessage = (event: MessageEvent) => {
  const data = event.data as { event?: string };
  if (data.event === "start") {
    running.now++;
    running.started++;
    running.max = Math.max(running.max, running.now);
  } else if (data.event === "end") {
    running.now--;
  }
};

beforeAll(async () => {
  emu = await startEmulator();
});
afterAll(async () => {
  channel.close();
  await emu.stop();
});
afterEach(async () => {
  channel.postMessage("release");
  await service?.stop(AbortSignal.timeout(10_000));
  service = undefined;
  Object.assign(running, { now: 0, max: 0, started: 0 });
});

describe("demand-driven receiving", () => {
  it("never runs more than `concurrency` handlers at once, across worker threads", async () => {
    const q = await createQueue(emu);
    const bucket = await createBucket(emu);
    const concurrency = 3;
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: 30 }, (_, n) => ({ account: `a-${n % 3}`, delayMs: 80 })),
    );
    service = await startService(emu, {
      dispatch: { flushIntervalMs: 100 },
      destination: { bucket },
      queues: [{ queue: q.name, handler: "slow.ts", concurrency, threads: 2, waitTimeSec: 1 }],
    });
    await waitFor("all 30 deleted", () => service?.relays[0]?.stats.deleted === 30);
    expect(running.started).toBe(30);
    expect(running.max).toBe(concurrency);
  });

  it("keeps un-acknowledged messages within maxUnacked while outputs wait in dispatchers", async () => {
    const q = await createQueue(emu);
    const bucket = await createBucket(emu);
    const spy = spySqs(emu);
    const maxUnacked = 7;
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: 60 }, (_, n) => ({ account: `a-${n % 4}`, delayMs: 1 })),
    );
    service = await startService(
      emu,
      {
        // A slow flush keeps messages un-acknowledged long after their handler returned.
        dispatch: { flushIntervalMs: 300 },
        destination: { bucket },
        queues: [
          // partnerShare 1: this test is about the queue's bound, not about fairness between partners.
          {
            queue: q.name,
            handler: "slow.ts",
            concurrency: 20,
            prefetch: 10,
            maxUnacked,
            partnerShare: 1,
            waitTimeSec: 1,
          },
        ],
      },
      { sqs: spy.sqs },
    );
    await waitFor("all 60 deleted", () => service?.relays[0]?.stats.deleted === 60);
    expect(spy.maxOutstanding()).toBeGreaterThan(0);
    expect(spy.maxOutstanding()).toBeLessThanOrEqual(maxUnacked);
    expect(await readDelivered(emu, bucket)).toHaveLength(60);
  });

  it("makes no ReceiveMessage call while there is no room, and resumes when room opens", async () => {
    const q = await createQueue(emu);
    const bucket = await createBucket(emu);
    const spy = spySqs(emu);
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: 12 }, (_, n) => ({ account: "acme", block: true, n })),
    );
    service = await startService(
      emu,
      {
        dispatch: { flushIntervalMs: 100 },
        destination: { bucket },
        queues: [{ queue: q.name, handler: "slow.ts", concurrency: 2, prefetch: 0, waitTimeSec: 1 }],
      },
      { sqs: spy.sqs },
    );
    await waitFor("both slots taken", () => running.now === 2);
    const receivesWhenFull = spy.started.get("ReceiveMessageCommand") ?? 0;
    // Observation window: a poller that ignored demand would long-poll (1 s) several times here.
    await new Promise((r) => setTimeout(r, 2500));
    expect(spy.started.get("ReceiveMessageCommand") ?? 0).toBe(receivesWhenFull);
    expect(running.started).toBe(2);

    channel.postMessage("release");
    await waitFor("all 12 deleted", () => service?.relays[0]?.stats.deleted === 12);
    expect(running.max).toBe(2);
    expect(await queueDepth(emu, q.url)).toBe(0);
  });

  it("deletes a message only after every one of its outputs is in S3", async () => {
    const q = await createQueue(emu);
    const bucket = await createBucket(emu);
    const spy = spySqs(emu);
    const early: string[] = [];
    spy.beforeDelete = async (ids) => {
      const delivered = await readDelivered(emu, bucket);
      for (const id of ids) {
        if (delivered.filter((r) => r.id === id).length !== 3) early.push(id);
      }
    };
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: 20 }, (_, n) => ({ accounts: [`x-${n % 2}`, "y", `z-${n % 5}`], n })),
    );
    service = await startService(
      emu,
      {
        dispatch: { flushIntervalMs: 150 },
        destination: { bucket },
        queues: [{ queue: q.name, handler: "fanout.ts", waitTimeSec: 1 }],
      },
      { sqs: spy.sqs },
    );
    await waitFor("all 20 deleted", () => service?.relays[0]?.stats.deleted === 20);
    expect(early).toEqual([]);
    expect(await readDelivered(emu, bucket)).toHaveLength(60);
  });
});

import { describe, expect } from "vitest";
import { queueDepth, readDelivered, sendBodies, waitFor } from "../helpers/emulator.ts";
import { it } from "../helpers/fixtures.ts";
import { spySqs } from "../helpers/sqs-spy.ts";

describe("demand-driven receiving", () => {
  it("never runs more than `concurrency` handlers at once, across worker threads", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
    slowHandlers: { running },
  }) => {
    const concurrency = 3;
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: 30 }, (_, n) => ({ account: `a-${n % 3}`, delayMs: 80 })),
    );
    const service = await startService({
      dispatch: { flushIntervalMs: 100 },
      destination: { bucket },
      queues: [{ queue: q.name, handler: "slow.ts", concurrency, threads: 2, waitTimeSec: 1 }],
    });
    await waitFor("all 30 deleted", () => service?.relays[0]?.stats.deleted === 30);
    expect(running.started).toBe(30);
    expect(running.max).toBe(concurrency);
  });

  it("keeps un-acknowledged messages within maxUnacked while outputs wait in dispatchers", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
  }) => {
    const spy = spySqs(emu);
    const maxUnacked = 7;
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: 60 }, (_, n) => ({ account: `a-${n % 4}`, delayMs: 1 })),
    );
    const service = await startService(
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

  it("makes no ReceiveMessage call while there is no room, and resumes when room opens", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
    slowHandlers: { running, release },
  }) => {
    const spy = spySqs(emu);
    await sendBodies(
      emu,
      q.url,
      Array.from({ length: 12 }, (_, n) => ({ account: "acme", block: true, n })),
    );
    const service = await startService(
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

    release();
    await waitFor("all 12 deleted", () => service?.relays[0]?.stats.deleted === 12);
    expect(running.max).toBe(2);
    expect(await queueDepth(emu, q.url)).toBe(0);
  });

  it("deletes a message only after every one of its outputs is in S3", async ({
    emulator: emu,
    queue: q,
    bucket,
    startService,
  }) => {
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
    const service = await startService(
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

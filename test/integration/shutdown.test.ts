import { describe, expect } from "vitest";
import {
  createQueue,
  readDeadLetters,
  readDelivered,
  receiveAll,
  sendBodies,
  waitFor,
} from "../helpers/emulator.ts";
import { account, report } from "../helpers/figures.ts";
import { it } from "../helpers/fixtures.ts";

describe("graceful stop of the real service process", () => {
  it("on SIGTERM mid-stream: exits 0, everything delivered is deleted, everything else is back in the queue", async ({
    emulator: emu,
    bucket,
    spawnService,
  }) => {
    const q = await createQueue(emu, { visibilityTimeoutSec: 5 });
    const N = 400;
    const ids = await sendBodies(
      emu,
      q.url,
      Array.from({ length: N }, (_, n) => ({ account: `a-${n % 10}`, delayMs: 20 })),
    );
    const proc = spawnService({
      destination: { bucket },
      dispatch: { flushIntervalMs: 300 },
      shutdown: { deadlineMs: 15_000 },
      queues: [
        {
          queue: q.name,
          handler: "slow.ts",
          deadLetterQueue: q.dlqName,
          concurrency: 4,
          threads: 1,
          maxUnacked: 60,
          waitTimeSec: 1,
          visibilityTimeoutSec: 5,
        },
      ],
    });
    await waitFor(
      "some deliveries",
      async () => (await readDelivered(emu, bucket)).length >= 20,
      30_000,
      100,
    );
    proc.child.kill("SIGTERM");
    const exit = await proc.exited;
    expect(exit, JSON.stringify(proc.logs.slice(-10))).toEqual({ code: 0, signal: null });
    expect(proc.logs.some((l) => l.msg === "shutdown complete")).toBe(true);

    const delivered = (await readDelivered(emu, bucket)).map((r) => r.id);
    // Anything a cut-off long poll had taken becomes visible again within the visibility timeout.
    const remaining = await waitFor(
      "every undelivered message visible again",
      async () => {
        const got = await receiveAll(emu, q.url, 60);
        return got.length + delivered.length >= N ? got : undefined;
      },
      20_000,
      500,
    );
    const back = remaining.map((m) => m.MessageId as string);
    const figures = account(ids, await readDelivered(emu, bucket), []);
    report("SIGTERM mid-stream (undelivered ones back in the queue)", {
      ...figures,
      lost: ids.filter((id) => !delivered.includes(id) && !back.includes(id)).length,
    });
    expect(figures.duplicated).toBe(0);
    expect(new Set(delivered).size).toBe(delivered.length);
    expect(delivered.length).toBeLessThan(N);
    expect(back.filter((id) => delivered.includes(id))).toEqual([]);
    expect(new Set([...delivered, ...back])).toEqual(new Set(ids));
  });
});

describe("shutdown deadline", () => {
  it("on SIGTERM with the destination down: at the deadline everything held is released at once, exit 0", async ({
    emulator: emu,
    bucket,
    spawnService,
    startFaultProxy,
  }) => {
    // The queue's own visibility timeout is long: only an explicit release makes them visible soon.
    const q = await createQueue(emu, { visibilityTimeoutSec: 120 });
    const proxy = await startFaultProxy("503");
    const ids = await sendBodies(
      emu,
      q.url,
      Array.from({ length: 50 }, (_, n) => ({ account: `a-${n % 5}`, delayMs: 1 })),
    );
    const proc = spawnService(
      {
        destination: { bucket },
        dispatch: { flushIntervalMs: 100, retryBaseMs: 50, retryMaxMs: 200 },
        shutdown: { deadlineMs: 1500 },
        queues: [{ queue: q.name, handler: "slow.ts", waitTimeSec: 1, visibilityTimeoutSec: 120 }],
      },
      { AWS_ENDPOINT_URL_S3: proxy.url },
    );
    await waitFor("flushes failing", () => proxy.failed >= 10, 30_000);
    proc.child.kill("SIGTERM");
    expect(await proc.exited).toEqual({ code: 0, signal: null });
    expect(proc.logs.some((l) => l.msg === "shutdown deadline reached; releasing what is undelivered")).toBe(
      true,
    );
    const back = await waitFor(
      "all 50 visible again well before their 120 s timeout",
      async () => {
        const got = await receiveAll(emu, q.url, 60);
        return got.length === 50 ? got : undefined;
      },
      10_000,
      200,
    );
    report("SIGTERM with the destination down", { ...account(ids, [], []), lost: 50 - back.length });
    expect(new Set(back.map((m) => m.MessageId))).toEqual(new Set(ids));
  });
});

describe("crash of the real service process", () => {
  it("kill -9 mid-stream, then a restart: every message ends in S3 or the dead-letter queue", async ({
    emulator: emu,
    bucket,
    spawnService,
  }) => {
    const q = await createQueue(emu, { visibilityTimeoutSec: 3 });
    const N = 400;
    const bodies = Array.from({ length: N }, (_, n) =>
      n % 100 === 42 ? "not json" : { account: `a-${n % 10}`, delayMs: 10 },
    );
    const ids = await sendBodies(emu, q.url, bodies);
    const config = {
      destination: { bucket },
      dispatch: { flushIntervalMs: 300 },
      queues: [
        {
          queue: q.name,
          handler: "slow.ts",
          deadLetterQueue: q.dlqName,
          concurrency: 8,
          maxUnacked: 80,
          waitTimeSec: 1,
          visibilityTimeoutSec: 3,
        },
      ],
    };
    const first = spawnService(config);
    await waitFor(
      "some deliveries",
      async () => (await readDelivered(emu, bucket)).length >= 40,
      30_000,
      100,
    );
    first.child.kill("SIGKILL");
    expect(await first.exited).toEqual({ code: null, signal: "SIGKILL" });
    spawnService(config); // the restart, SIGKILLed after the test
    const deadLetters = new Map<string, string>();
    const figures = await waitFor(
      "every message in S3 or the dead-letter queue",
      async () => {
        const dead = await readDeadLetters(emu, q.dlqUrl, deadLetters);
        const f = account(
          ids,
          await readDelivered(emu, bucket),
          dead.map((d) => d.id),
        );
        return f.lost === 0 ? f : undefined;
      },
      60_000,
      500,
    );
    report("kill -9 mid-stream, then a restart", figures);
    expect(figures.deadLettered).toBe(4);
    expect(figures.delivered).toBe(N - 4);
  });
});

import { Writable } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { HandlerTask } from "../../src/pipeline/handler-hop.ts";
import { HandlerPool, type PoolOutcome } from "../../src/pipeline/handler-pool.ts";
import { sampleHandler } from "../helpers/service.ts";

const task = (n: number): HandlerTask => ({
  id: `m${n}`,
  body: JSON.stringify({ account: `acct-${n}`, n }),
  attributes: { ApproximateReceiveCount: "1" },
  messageAttributes: {},
  receiveCount: 1,
  receivedAt: "2026-12-01T12:00:00.000Z",
});

describe("handler pool (real worker threads, the passthrough sample)", () => {
  it("a caller that throws on one message's outcome costs its group-mates nothing, and the throw is logged", async () => {
    const lines: string[] = [];
    const log = pino(
      { level: "error" },
      new Writable({
        write(chunk, _encoding, done) {
          lines.push(String(chunk));
          done();
        },
      }),
    );
    const pool = new HandlerPool(
      { log, events: { emit() {} } },
      {
        queue: "q",
        handlerPath: sampleHandler("passthrough.ts"),
        concurrency: 8,
        threads: 1,
        prefetch: 8,
        handlerTimeoutMs: 5_000,
      },
    );
    await pool.start();
    try {
      // Warm-up: the running mean falls under a millisecond and the pool groups.
      for (let round = 0; round < 3; round++) {
        await Promise.all(
          Array.from({ length: 8 }, (_, n) => new Promise((resolve) => pool.submit(task(n), resolve))),
        );
      }
      const heard = new Map<string, PoolOutcome>();
      await new Promise<void>((resolve) => {
        for (let n = 0; n < 8; n++) {
          pool.submit(task(n), (outcome) => {
            heard.set(`m${n}`, outcome);
            if (heard.size === 8) resolve();
            if (n === 0) throw new Error("the caller broke");
          });
        }
      });
      expect([...heard.keys()].sort()).toEqual(Array.from({ length: 8 }, (_, n) => `m${n}`));
      for (const [id, outcome] of heard) {
        expect(outcome.kind).toBe("ok");
        if (outcome.kind === "ok") expect(outcome.outputs[0]?.line).toContain(`"id":"${id}"`);
      }
      expect(lines.join("")).toContain("acting on a handler's outcome threw");
      expect(lines.join("")).toContain("the caller broke");
    } finally {
      await pool.close();
    }
  });
});

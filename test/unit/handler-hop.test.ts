import { describe, expect, it } from "vitest";
import {
  type HandlerTask,
  packOutcomes,
  packTasks,
  type TimedOutcome,
  taskAt,
  unpackOutcomes,
} from "../../src/pipeline/handler-hop.ts";

const task = (n: number, messageAttributes: Record<string, string> = {}): HandlerTask => ({
  id: `m${n}`,
  body: JSON.stringify({ n }),
  attributes: { ApproximateReceiveCount: String(n), SentTimestamp: "1764590000000" },
  messageAttributes,
  receiveCount: n,
  receivedAt: "2026-12-01T12:00:00.000Z",
});

describe("what crosses to the handler threads and back", () => {
  it("a group's tasks come out as they went in, message attributes only where some were set", () => {
    const plain = [task(1), task(2), task(3)];
    const packed = packTasks(plain);
    expect(packed.messageAttributes).toBeUndefined();
    expect(plain.map((_, i) => taskAt(structuredClone(packed), i))).toEqual(plain);

    const mixed = [task(1), task(2, { traceId: "abc" }), task(3)];
    const cloned = structuredClone(packTasks(mixed));
    expect(mixed.map((_, i) => taskAt(cloned, i))).toEqual(mixed);
  });

  it("each message gets back its own outcome and its own outputs, in order, whatever the mix", () => {
    const line = (id: string, account: string) => ({
      account,
      line: `{"id":"${id}","account":"${account}"}\n`,
    });
    const timed: TimedOutcome[] = [
      {
        outcome: { kind: "ok", outputs: [line("m0", "a"), line("m0", "b"), line("m0", "c")] },
        seconds: 0.001,
      },
      { outcome: { kind: "poison", reason: "body is not valid JSON" }, seconds: 0.002 },
      { outcome: { kind: "ok", outputs: [] }, seconds: 0.003 },
      { outcome: { kind: "failed", reason: "Error: handler timed out after 300 ms" }, seconds: 0.3 },
      { outcome: { kind: "ok", outputs: [line("m4", "a")] }, seconds: 0.004 },
    ];
    expect(unpackOutcomes(structuredClone(packOutcomes(timed)))).toEqual(timed);
    expect(unpackOutcomes(packOutcomes([]))).toEqual([]);
  });
});

import { describe, expect, it, vi } from "vitest";
import { countEvents } from "../../src/pipeline/counters.ts";
import { RelayEventEmitter } from "../../src/pipeline/events.ts";

describe("RelayEventEmitter", () => {
  it("calls every listener of an event in order, synchronously, with the payload", () => {
    const events = new RelayEventEmitter();
    const heard: string[] = [];
    events.on("deleted", (e) => heard.push(`a${e.count}`));
    events.on("deleted", (e) => heard.push(`b${e.count}`));
    events.on("received", () => heard.push("other event"));
    events.emit("deleted", { count: 3 });
    expect(heard).toEqual(["a3", "b3"]);
  });

  it("stops calling a listener once unsubscribed", () => {
    const events = new RelayEventEmitter();
    const listener = vi.fn();
    const off = events.on("shed", listener);
    events.emit("shed", { account: "acme" });
    off();
    events.emit("shed", { account: "acme" });
    expect(listener).toHaveBeenCalledTimes(1);
  });

  it("a listener that throws is reported and neither reaches the emitting stage nor stops the others", () => {
    const reported: [unknown, string][] = [];
    const events = new RelayEventEmitter({ onListenerError: (err, event) => reported.push([err, event]) });
    const counters = countEvents(events);
    events.on("deleted", () => {
      throw new Error("broken metric");
    });
    const after = vi.fn();
    events.on("deleted", after);
    expect(() => events.emit("deleted", { count: 1 })).not.toThrow();
    expect(counters.deleted).toBe(1);
    expect(after).toHaveBeenCalledOnce();
    expect(reported).toEqual([[new Error("broken metric"), "deleted"]]);
  });
});

describe("countEvents", () => {
  it("keeps the relay's totals from the stages' events", () => {
    const events = new RelayEventEmitter();
    const c = countEvents(events);
    events.emit("received", { count: 10, bytes: 1000 });
    events.emit("duplicate", { messageId: "m1" });
    events.emit("handled", { outcome: "ok", seconds: 0.01, outputs: 3 });
    events.emit("handled", { outcome: "failed", seconds: 0.01, outputs: 0 });
    events.emit("handled", { outcome: "poison", seconds: 0.01, outputs: 0 });
    events.emit("flushed", { destination: "s3", outcome: "delivered", seconds: 0.1, records: 3, bytes: 90 });
    events.emit("flushed", { destination: "s3", outcome: "failed", seconds: 0.1, records: 2, bytes: 60 });
    events.emit("flushed", { destination: "park", outcome: "parked", seconds: 0, records: 2, bytes: 60 });
    events.emit("parked", { records: 2 });
    events.emit("released", { count: 1, cause: "shed" });
    events.emit("released", { count: 1, cause: "after-stop" });
    events.emit("shed", { account: "acme" });
    events.emit("deleted", { count: 4 });
    events.emit("delete-failed", { messageId: "m2", code: "ReceiptHandleIsInvalid" });
    events.emit("extended", { count: 5 });
    events.emit("dispatcher-spawned", { account: "acme" });
    events.emit("dead-lettered", { reason: "r", fit: "whole" });
    events.emit("dead-lettered", { reason: "r", fit: "trimmed" });
    events.emit("dead-lettered", { reason: "r", fit: "without-reason" });
    expect(c).toEqual({
      received: 10,
      duplicatesHeld: 1,
      handled: 1,
      handlerFailures: 2,
      outputs: 3,
      flushes: 1,
      flushFailures: 1,
      flushedRecords: 3,
      flushedBytes: 90,
      parkedRecords: 2,
      released: 2,
      releasedAfterStop: 1,
      shed: 1,
      deleted: 4,
      deleteFailures: 1,
      visibilityExtended: 5,
      dispatchersSpawned: 1,
      deadLettered: 3,
      deadLetterTrimmed: 1,
      deadLetterWithoutReason: 1,
    });
  });
});

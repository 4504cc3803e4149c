import type { RelayEventEmitter } from "./events.ts";

/**
 * Totals of one queue's relay since it was built: what /metrics exports as counters, the console,
 * the demo's progress line and the tests read. Kept by the listeners `countEvents` subscribes, its
 * only writer; everyone else gets it read-only.
 */
export interface RelayCounters {
  received: number;
  duplicatesHeld: number;
  handled: number;
  handlerFailures: number;
  deadLettered: number;
  /** Dead-lettered copies whose reason was shortened or sender attributes dropped to fit SQS's limits. */
  deadLetterTrimmed: number;
  /** Dead-lettered without octorelay attributes: the body left no room; the reason is only in the log. */
  deadLetterWithoutReason: number;
  /** Messages long polls returned after the stop began, released at once (also counted in `released`). */
  releasedAfterStop: number;
  outputs: number;
  flushes: number;
  flushFailures: number;
  flushedRecords: number;
  flushedBytes: number;
  /** Records parked in S3 because their partner was down past giveUpAfterMs. */
  parkedRecords: number;
  /** Messages given back to SQS because their partner already held its share of maxUnacked. */
  shed: number;
  deleted: number;
  deleteFailures: number;
  released: number;
  visibilityExtended: number;
  dispatchersSpawned: number;
}

/** Subscribes to `events` and returns the totals its listeners keep. */
export function countEvents(events: Pick<RelayEventEmitter, "on">): Readonly<RelayCounters> {
  const c: RelayCounters = {
    received: 0,
    duplicatesHeld: 0,
    handled: 0,
    handlerFailures: 0,
    deadLettered: 0,
    deadLetterTrimmed: 0,
    deadLetterWithoutReason: 0,
    releasedAfterStop: 0,
    outputs: 0,
    flushes: 0,
    flushFailures: 0,
    flushedRecords: 0,
    flushedBytes: 0,
    parkedRecords: 0,
    shed: 0,
    deleted: 0,
    deleteFailures: 0,
    released: 0,
    visibilityExtended: 0,
    dispatchersSpawned: 0,
  };
  events.on("received", (e) => {
    c.received += e.count;
  });
  events.on("duplicate", () => {
    c.duplicatesHeld++;
  });
  events.on("handled", (e) => {
    if (e.outcome === "ok") {
      c.handled++;
      c.outputs += e.outputs;
    } else c.handlerFailures++;
  });
  events.on("shed", () => {
    c.shed++;
  });
  events.on("dispatcher-spawned", () => {
    c.dispatchersSpawned++;
  });
  events.on("flushed", (e) => {
    if (e.outcome === "failed") c.flushFailures++;
    else if (e.outcome === "delivered") {
      c.flushes++;
      c.flushedRecords += e.records;
      c.flushedBytes += e.bytes;
    }
  });
  events.on("parked", (e) => {
    c.parkedRecords += e.records;
  });
  events.on("deleted", (e) => {
    c.deleted += e.count;
  });
  events.on("delete-failed", () => {
    c.deleteFailures++;
  });
  events.on("released", (e) => {
    c.released += e.count;
    if (e.cause === "after-stop") c.releasedAfterStop += e.count;
  });
  events.on("extended", (e) => {
    c.visibilityExtended += e.count;
  });
  events.on("dead-lettered", (e) => {
    c.deadLettered++;
    if (e.fit === "trimmed") c.deadLetterTrimmed++;
    else if (e.fit === "without-reason") c.deadLetterWithoutReason++;
  });
  return c;
}

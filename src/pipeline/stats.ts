/** Timings the counters cannot hold; the metrics module turns them into histograms. */
export interface Observer {
  handlerDone(seconds: number, outcome: string): void;
  flushDone(
    destination: string,
    outcome: "delivered" | "failed" | "parked",
    seconds: number,
    records: number,
    bytes: number,
  ): void;
}

export const NO_OBSERVER: Observer = { handlerDone() {}, flushDone() {} };

/** Counters of one queue's relay, read by the progress line and the metrics endpoint. */
export interface RelayStats {
  observer: Observer;
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
  sqsCalls: {
    receiveMessage: number;
    deleteMessageBatch: number;
    changeMessageVisibilityBatch: number;
    errors: number;
  };
}

export function newRelayStats(): RelayStats {
  return {
    observer: NO_OBSERVER,
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
    sqsCalls: { receiveMessage: 0, deleteMessageBatch: 0, changeMessageVisibilityBatch: 0, errors: 0 },
  };
}

/** Counters of one queue's relay, read by the progress line and (later) the metrics endpoint. */
export interface RelayStats {
  received: number;
  duplicatesHeld: number;
  handled: number;
  handlerFailures: number;
  deadLettered: number;
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
    received: 0,
    duplicatesHeld: 0,
    handled: 0,
    handlerFailures: 0,
    deadLettered: 0,
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

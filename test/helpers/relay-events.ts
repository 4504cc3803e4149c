import { countEvents, type RelayCounters } from "../../src/pipeline/counters.ts";
import { RelayEventEmitter } from "../../src/pipeline/events.ts";

/** The SQS calls a stage reported, by operation; `errors` counts failed calls of any operation. */
export interface SqsCallCounts {
  receiveMessage: number;
  deleteMessageBatch: number;
  changeMessageVisibilityBatch: number;
  errors: number;
}

/**
 * An emitter for a stage under test and what a reader of it sees: the relay's counters, plus the
 * SQS calls the stage reported (no production reader needs those totals, the tests do).
 */
export function countedEvents(): {
  events: RelayEventEmitter;
  stats: Readonly<RelayCounters> & { readonly sqsCalls: SqsCallCounts };
} {
  const events = new RelayEventEmitter({
    onListenerError: (err) => {
      throw err;
    },
  });
  const sqsCalls: SqsCallCounts = {
    receiveMessage: 0,
    deleteMessageBatch: 0,
    changeMessageVisibilityBatch: 0,
    errors: 0,
  };
  events.on("sqs-call", ({ operation, outcome }) => {
    if (outcome === "error") sqsCalls.errors++;
    else if (operation === "ReceiveMessage") sqsCalls.receiveMessage++;
    else if (operation === "DeleteMessageBatch") sqsCalls.deleteMessageBatch++;
    else if (operation === "ChangeMessageVisibilityBatch") sqsCalls.changeMessageVisibilityBatch++;
  });
  return { events, stats: Object.assign(countEvents(events), { sqsCalls }) };
}

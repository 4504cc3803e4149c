/**
 * What crosses between the handler pool (main thread) and its worker threads. A group of messages
 * goes as parallel arrays, and its outcomes come back the same way: the structured clone writes a
 * property name for every property of every object, so one object per message (and per output)
 * cost about twice the arrays, on both threads, on every hop.
 */

/** One message for its handler, as the relay hands it to the pool. */
export interface HandlerTask {
  id: string;
  body: string;
  attributes: Record<string, string>;
  messageAttributes: Record<string, string>;
  receiveCount: number;
  /** When the relay received the message, ISO 8601. */
  receivedAt: string;
}

/** One NDJSON line per output, already serialised. */
export interface OutputLine {
  account: string;
  line: string;
}

export type HandlerOutcome =
  | { kind: "ok"; outputs: OutputLine[] }
  | { kind: "poison"; reason: string }
  | { kind: "failed"; reason: string };

/** A message's outcome and how long its handler took (parse and serialisation included), seconds. */
export interface TimedOutcome {
  outcome: HandlerOutcome;
  seconds: number;
}

/** The probe the pool runs once at start: loads the module and checks its default export. */
export interface ProbeTask {
  probe: true;
}

/**
 * Several messages in one thread hop, message i at index i of each array: they run at once, and
 * their outcomes come back together, in order. One postMessage each way instead of one per message.
 */
export interface BatchTask {
  ids: string[];
  bodies: string[];
  attributes: Record<string, string>[];
  /** Absent when no message of the group has any (the usual case). */
  messageAttributes?: Record<string, string>[];
  receiveCounts: number[];
  receivedAt: string[];
}

/** A group's outcomes, message i's at index i; its outputs are the next `outputs[i]` of accounts/lines. */
export interface BatchOutcomes {
  kinds: HandlerOutcome["kind"][];
  seconds: number[];
  /** Why, for poison and failed; "" for ok. */
  reasons: string[];
  outputs: number[];
  accounts: string[];
  lines: string[];
}

export function packTasks(tasks: readonly HandlerTask[]): BatchTask {
  const batch: BatchTask = { ids: [], bodies: [], attributes: [], receiveCounts: [], receivedAt: [] };
  let withMessageAttributes = false;
  for (const t of tasks) {
    batch.ids.push(t.id);
    batch.bodies.push(t.body);
    batch.attributes.push(t.attributes);
    batch.receiveCounts.push(t.receiveCount);
    batch.receivedAt.push(t.receivedAt);
    for (const _ in t.messageAttributes) {
      withMessageAttributes = true;
      break;
    }
  }
  if (withMessageAttributes) batch.messageAttributes = tasks.map((t) => t.messageAttributes);
  return batch;
}

/** Message i of a group, as its handler's task (a fresh messageAttributes object when it had none). */
export function taskAt(batch: BatchTask, i: number): HandlerTask {
  return {
    id: batch.ids[i] as string,
    body: batch.bodies[i] as string,
    attributes: batch.attributes[i] as Record<string, string>,
    messageAttributes: batch.messageAttributes?.[i] ?? {},
    receiveCount: batch.receiveCounts[i] as number,
    receivedAt: batch.receivedAt[i] as string,
  };
}

export function packOutcomes(timed: readonly TimedOutcome[]): BatchOutcomes {
  const out: BatchOutcomes = { kinds: [], seconds: [], reasons: [], outputs: [], accounts: [], lines: [] };
  for (const { outcome, seconds } of timed) {
    out.kinds.push(outcome.kind);
    out.seconds.push(seconds);
    if (outcome.kind === "ok") {
      out.reasons.push("");
      out.outputs.push(outcome.outputs.length);
      for (const o of outcome.outputs) {
        out.accounts.push(o.account);
        out.lines.push(o.line);
      }
    } else {
      out.reasons.push(outcome.reason);
      out.outputs.push(0);
    }
  }
  return out;
}

export function unpackOutcomes(out: BatchOutcomes): TimedOutcome[] {
  const timed: TimedOutcome[] = [];
  let next = 0;
  for (let i = 0; i < out.kinds.length; i++) {
    const kind = out.kinds[i] as HandlerOutcome["kind"];
    const seconds = out.seconds[i] as number;
    if (kind !== "ok") {
      timed.push({ outcome: { kind, reason: out.reasons[i] as string }, seconds });
      continue;
    }
    const outputs: OutputLine[] = [];
    for (const end = next + (out.outputs[i] as number); next < end; next++) {
      outputs.push({ account: out.accounts[next] as string, line: out.lines[next] as string });
    }
    timed.push({ outcome: { kind, outputs }, seconds });
  }
  return timed;
}

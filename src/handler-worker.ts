/**
 * Worker-thread entry: loads the queue's handler module once, parses each body, runs the handler and
 * turns its outputs into NDJSON lines here, so serialisation stays off the main event loop.
 */
import { pathToFileURL } from "node:url";
import { workerData } from "node:worker_threads";
import type { Handler, HandlerMessage, HandlerOutput } from "./handler-contract.ts";

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

/** The probe the pool runs once at start: loads the module and checks its default export. */
export interface ProbeTask {
  probe: true;
}

export interface HandlerWorkerData {
  handlerPath: string;
  queue: string;
  /** A handler still running after this is abandoned (its signal aborted) and the message retried. */
  handlerTimeoutMs: number;
}

const { handlerPath, queue, handlerTimeoutMs } = workerData as HandlerWorkerData;
let loaded: Promise<Handler> | undefined;

function loadHandler(): Promise<Handler> {
  loaded ??= import(pathToFileURL(handlerPath).href).then((mod: { default?: unknown }) => {
    if (typeof mod.default !== "function") {
      throw new Error(
        `handler ${handlerPath} has no default export function; export default async function handle(message) { ... }`,
      );
    }
    return mod.default as Handler;
  });
  return loaded;
}

export default async function run(task: HandlerTask | ProbeTask): Promise<HandlerOutcome> {
  if ("probe" in task) {
    await loadHandler();
    return { kind: "ok", outputs: [] };
  }
  let body: unknown;
  try {
    body = JSON.parse(task.body);
  } catch (err) {
    return { kind: "poison", reason: `body is not valid JSON: ${(err as Error).message}` };
  }
  const handle = await loadHandler();
  // A timer cleared as soon as the handler settles: AbortSignal.timeout would keep every message's
  // signal, listener and promise alive for the whole timeout (60,000 of them at 2,000 msg/s).
  const timeout = new AbortController();
  const timer = setTimeout(
    () => timeout.abort(new Error(`handler timed out after ${handlerTimeoutMs} ms`)),
    handlerTimeoutMs,
  );
  const signal = timeout.signal;
  const message: HandlerMessage = {
    id: task.id,
    body,
    rawBody: task.body,
    attributes: task.attributes,
    messageAttributes: task.messageAttributes,
    queue,
    receiveCount: task.receiveCount,
    signal,
  };
  let result: unknown;
  try {
    result = await Promise.race([handle(message), timedOut(signal)]);
  } catch (err) {
    const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    const permanent =
      typeof err === "object" && err !== null && (err as { permanent?: unknown }).permanent === true;
    return permanent ? { kind: "poison", reason } : { kind: "failed", reason };
  } finally {
    clearTimeout(timer);
  }
  return toLines(task, result);
}

/** Rejects when the handler's time is up; the handler sees the same signal and should stop. */
function timedOut(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

function toLines(task: HandlerTask, result: unknown): HandlerOutcome {
  if (result === undefined || result === null) return { kind: "ok", outputs: [] };
  const outputs = (Array.isArray(result) ? result : [result]) as unknown[];
  const lines: OutputLine[] = [];
  // The envelope's fixed fields are serialised once; only account and payload vary per output.
  const sentAt = task.attributes.SentTimestamp
    ? `,"sentAt":${JSON.stringify(new Date(Number(task.attributes.SentTimestamp)).toISOString())}`
    : "";
  const head = `{"id":${JSON.stringify(task.id)},"queue":${JSON.stringify(queue)},"receivedAt":"${task.receivedAt}"${sentAt}`;
  for (let i = 0; i < outputs.length; i++) {
    const output = outputs[i] as Partial<HandlerOutput> | null;
    if (
      typeof output !== "object" ||
      output === null ||
      typeof output.account !== "string" ||
      output.account === ""
    ) {
      return {
        kind: "poison",
        reason: `output[${i}] must be { account: non-empty string, payload }; got ${describe(output)}`,
      };
    }
    let payload: string | undefined;
    try {
      payload = JSON.stringify(output.payload);
    } catch (err) {
      return {
        kind: "poison",
        reason: `output[${i}].payload is not JSON-serialisable: ${(err as Error).message}`,
      };
    }
    lines.push({
      account: output.account,
      line: `${head},"account":${JSON.stringify(output.account)},"payload":${payload ?? "null"}}\n`,
    });
  }
  return { kind: "ok", outputs: lines };
}

function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}

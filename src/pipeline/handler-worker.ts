/**
 * Worker-thread entry: loads the queue's handler module once, parses each body, runs the handler and
 * turns its outputs into NDJSON lines here, so serialisation stays off the main event loop.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { registerHooks, stripTypeScriptTypes } from "node:module";
import { tmpdir } from "node:os";
import { dirname, extname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { workerData } from "node:worker_threads";
import { type Handler, type HandlerMessage, type HandlerOutput, invalidOutput } from "../handler-contract.ts";
import {
  type BatchOutcomes,
  type BatchTask,
  type HandlerOutcome,
  type HandlerTask,
  type OutputLine,
  type ProbeTask,
  packOutcomes,
  type TimedOutcome,
  taskAt,
} from "./handler-hop.ts";

/** The contract beside this file: .ts from source, .js in dist/, the module this thread already uses. */
const CONTRACT_URL = new URL(`../handler-contract${extname(fileURLToPath(import.meta.url))}`, import.meta.url)
  .href;
/** The last module this thread loaded: where a syntax error without a location comes from. */
let lastLoadedUrl: string | undefined;

// `import … from "octorelay/handler"` resolves to the contract wherever the handler lives (in the
// app, or a directory mounted outside it with no node_modules), from source and from dist/ alike.
registerHooks({
  resolve(specifier, context, nextResolve) {
    if (specifier === "octorelay/handler") return { url: CONTRACT_URL, shortCircuit: true };
    return nextResolve(specifier, context);
  },
  load(url, context, nextLoad) {
    lastLoadedUrl = url;
    return nextLoad(url, context);
  },
});

export interface HandlerWorkerData {
  handlerPath: string;
  queue: string;
  /** A handler still running after this is abandoned (its signal aborted) and the message retried. */
  handlerTimeoutMs: number;
}

const { handlerPath, queue, handlerTimeoutMs } = (workerData ?? {}) as HandlerWorkerData;
let loaded: Promise<Handler> | undefined;

function loadHandler(): Promise<Handler> {
  loaded ??= import(pathToFileURL(handlerPath).href).then(
    (mod: { default?: unknown }) => {
      if (typeof mod.default !== "function") {
        const named = Object.keys(mod).filter((k) => k !== "default");
        const has =
          mod.default === undefined
            ? `no default export${named.length ? ` (it exports ${named.join(", ")})` : ""}`
            : `a default export that is a ${typeof mod.default}, not a function`;
        throw new Error(
          `handler ${handlerPath}: ${has}; write export default async function handle(message) { ... }`,
        );
      }
      return mod.default as Handler;
    },
    (err: unknown) => {
      throw new Error(loadFailure(err), { cause: err });
    },
  );
  return loaded;
}

/**
 * `handler <file>:<line>:<col>: <what>` for a module that could not load: a syntax error (type
 * stripping puts the place in the stack; for JavaScript `node --check` finds it), a missing import,
 * or a throw while the module ran. The place is the handler's own when it is there.
 */
function loadFailure(err: unknown): string {
  const e = (err instanceof Error ? err : new Error(String(err))) as NodeJS.ErrnoException;
  let where: string | undefined;
  let what = e.message;
  if (e.name === "SyntaxError") {
    where = caretLocation(e.stack ?? "");
    if (!where) {
      const file = lastLoadedUrl?.startsWith("file:") ? fileURLToPath(lastLoadedUrl) : handlerPath;
      where = checkSyntax(file);
    }
  } else if (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED") {
    where = importLocation(e.message);
  } else {
    where = stackLocation(e.stack ?? "");
    what = `threw while loading: ${e.name}: ${e.message}`;
  }
  if (!where) return `handler ${handlerPath}: ${what}`;
  return where.startsWith(`${handlerPath}:`)
    ? `handler ${where}: ${what}`
    : `handler ${handlerPath}: ${where}: ${what}`;
}

/**
 * Where `node --check` finds the syntax error of a module that failed to compile. TypeScript is
 * stripped first (types become blanks, so lines and columns stay): what is left is what V8 refused,
 * a decorator for one.
 */
function checkSyntax(file: string): string | undefined {
  let target = file;
  let scratch: string | undefined;
  try {
    if (/\.[mc]?ts$/.test(file)) {
      scratch = join(mkdtempSync(join(tmpdir(), "octorelay-check-")), "module.mjs");
      writeFileSync(scratch, stripTypeScriptTypes(readFileSync(file, "utf8"), { mode: "strip" }));
      target = scratch;
    }
    const check = spawnSync(process.execPath, ["--check", target], { encoding: "utf8", timeout: 10_000 });
    return caretLocation(check.stderr ?? "")?.replace(target, file);
  } catch {
    return undefined;
  } finally {
    if (scratch) rmSync(dirname(scratch), { recursive: true, force: true });
  }
}

/** "file:line" then the source line then a caret under the column: Node's syntax error report. */
function caretLocation(report: string): string | undefined {
  // The snippet may show a line of context above the failing one: the caret's line is the header's.
  const m = /^(?:file:\/\/)?(\/[^\n]*?):(\d+)\n(?:[^\n]*\n){1,3}?( *)\^/.exec(report);
  return m ? `${m[1]}:${m[2]}:${(m[3] as string).length + 1}` : undefined;
}

/** The line of `import … from "<specifier>"` in the importing file named by the error. */
function importLocation(message: string): string | undefined {
  const m = /(?:module|package) '([^']+)'.* imported from (\S+)/.exec(message);
  if (!m) return undefined;
  const specifier = m[1] as string;
  const file = (m[2] as string).startsWith("file:") ? fileURLToPath(m[2] as string) : (m[2] as string);
  let source: string;
  try {
    source = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  const lines = source.split("\n");
  for (const [i, line] of lines.entries()) {
    for (const quote of ['"', "'"]) {
      const name = specifier.startsWith("/") ? specifier.split("/").pop() : specifier;
      const col = line.indexOf(`${quote}${name}`);
      if (col >= 0 && /\b(import|from|require)\b/.test(line)) return `${file}:${i + 1}:${col + 1}`;
    }
  }
  return file;
}

/** The first stack frame in the handler's own files (not node's, not a dependency's). */
function stackLocation(stack: string): string | undefined {
  const frames = [...stack.matchAll(/\(?(file:\/\/[^\s()]+|\/[^\s():]+[^\s()]*):(\d+):(\d+)\)?$/gm)].map(
    (m) => {
      const file = (m[1] as string).startsWith("file:") ? fileURLToPath(m[1] as string) : (m[1] as string);
      return { file, at: `${file}:${m[2]}:${m[3]}` };
    },
  );
  const own = frames.find((f) => !f.file.includes("/node_modules/")) ?? frames[0];
  return own?.at;
}

export default function run(task: BatchTask | ProbeTask): Promise<BatchOutcomes | HandlerOutcome> {
  if ("probe" in task) return loadHandler().then(() => ({ kind: "ok", outputs: [] }));
  return loadHandler().then((handle) => runBatch(handle, task).then(packOutcomes));
}

/**
 * Runs a group's handlers at once and resolves with their outcomes, in order, once each has settled:
 * by returning, by throwing, or by its time running out. They all start now and share one timeout,
 * so one timer and one abort signal serve the group (a timer, a controller and a race per message
 * were most of this thread's work for a fast handler). The signal fires when the time is up for
 * those still running; for those done by then it no longer matters.
 */
function runBatch(handle: Handler, batch: BatchTask): Promise<TimedOutcome[]> {
  const startedMs = performance.now();
  const count = batch.ids.length;
  const outcomes: (TimedOutcome | undefined)[] = new Array(count);
  const timeout = new AbortController();
  let left = count;
  if (count === 0) return Promise.resolve([]);
  return new Promise((resolve) => {
    const settle = (i: number, outcome: HandlerOutcome) => {
      if (outcomes[i] !== undefined) return;
      outcomes[i] = { outcome, seconds: (performance.now() - startedMs) / 1000 };
      if (--left > 0) return;
      clearTimeout(timer);
      resolve(outcomes as TimedOutcome[]);
    };
    const timer = setTimeout(() => {
      const reason = new Error(`handler timed out after ${handlerTimeoutMs} ms`);
      timeout.abort(reason);
      for (let i = 0; i < count; i++)
        settle(i, { kind: "failed", reason: `${reason.name}: ${reason.message}` });
    }, handlerTimeoutMs);
    for (let i = 0; i < count; i++) {
      runOne(handle, taskAt(batch, i), timeout.signal, (outcome) => settle(i, outcome));
    }
  });
}

/** Parses the body, runs the handler and serialises what it returned; `settle` hears how it ended. */
function runOne(
  handle: Handler,
  task: HandlerTask,
  signal: AbortSignal,
  settle: (outcome: HandlerOutcome) => void,
): void {
  let body: unknown;
  try {
    body = JSON.parse(task.body);
  } catch (err) {
    settle({ kind: "poison", reason: `body is not valid JSON: ${(err as Error).message}` });
    return;
  }
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
  const failed = (err: unknown) => settle(failure(err));
  const returned = (value: unknown) => {
    try {
      settle(toLines(task, value));
    } catch (err) {
      failed(err); // an output whose getter throws, say
    }
  };
  let result: unknown;
  let thenable: boolean;
  try {
    result = handle(message);
    thenable = typeof (result as PromiseLike<unknown> | undefined)?.then === "function";
  } catch (err) {
    failed(err);
    return;
  }
  if (thenable) Promise.resolve(result).then(returned, failed);
  else returned(result);
}

/** A handler's throw: permanent (marked so) is poison, anything else is worth a retry. */
function failure(err: unknown): HandlerOutcome {
  const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  const permanent =
    typeof err === "object" && err !== null && (err as { permanent?: unknown }).permanent === true;
  return permanent ? { kind: "poison", reason } : { kind: "failed", reason };
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
    const invalid = invalidOutput(outputs[i], i);
    if (invalid) return { kind: "poison", reason: invalid };
    const output = outputs[i] as HandlerOutput;
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

/**
 * The entries of `queues`: each checked against QUEUE_KEYS, over the top level's dispatch and
 * destination; then the checks across entries (duplicate names, a queue that is its own DLQ).
 */
import { existsSync, realpathSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { isAbsolute, relative, resolve, sep } from "node:path";
import { defaultsOf, PARTNER_SETTINGS, QUEUE_KEYS } from "./definitions.ts";
import type { DestinationBlock } from "./destinations.ts";
import { destinationProblems } from "./destinations.ts";
import { checkEntry, compile, type EntryProblems, withValues } from "./entries.ts";
import { isPlainObject } from "./formats.ts";
import type { DestinationFields, DispatchConfig, QueueConfig } from "./types.ts";

const QUEUE_SECTION = compile(QUEUE_KEYS);
const QUEUE_DEFAULTS = defaultsOf(QUEUE_KEYS);

/** A queue's name from a name or a queue URL (its last path segment). */
export function queueNameOf(queue: string): string {
  return /^https?:\/\//.test(queue)
    ? (new URL(queue).pathname.split("/").filter(Boolean).pop() ?? queue)
    : queue;
}

/**
 * The valid queues of `rawQueues`, each with its destination block (for the unused-field check);
 * every problem found goes to `problems`, named by the entry's position.
 */
export function loadQueues(
  rawQueues: unknown[],
  top: { dispatch: DispatchConfig; destination: DestinationFields; handlersDir: string },
  problems: string[],
): { queues: QueueConfig[]; queueBlocks: DestinationBlock[] } {
  const queues: QueueConfig[] = [];
  const queueBlocks: DestinationBlock[] = [];
  /** Every entry that names a queue, valid or not, so duplicates are caught across all of them. */
  const named: { name: string; deadLetterQueue: unknown; at: number }[] = [];
  rawQueues.forEach((raw, i) => {
    const at = `queues[${i}]`;
    if (!isPlainObject(raw)) {
      problems.push(
        `${at}: must be an object like { "queue": "orders", "handler": "orders.ts" }; got ${JSON.stringify(raw)}`,
      );
      return;
    }
    const out: EntryProblems = { invalid: [], unknown: [] };
    const set = checkEntry(QUEUE_SECTION, withoutPartnerSettings(raw, at, out), `${at}.`, out);
    const q = withValues(
      QUEUE_SECTION,
      { ...QUEUE_DEFAULTS, dispatch: top.dispatch, destination: top.destination },
      set,
    ) as Omit<QueueConfig, "name" | "handlerPath" | "destination"> & {
      handler: string | null;
      destination: DestinationFields;
    };
    const found = [...out.invalid, ...out.unknown];
    if (typeof q.queue === "string" && q.queue !== "") {
      named.push({ name: queueNameOf(q.queue), deadLetterQueue: q.deadLetterQueue, at: i });
    }
    const handlerPath =
      typeof set.handler === "string" ? handlerProblems(set.handler, top.handlersDir, at, found) : "";
    if (!found.some((p) => p.startsWith(`${at}.destination.`))) {
      found.push(...destinationProblems(q.destination, `${at}.destination`));
    }
    problems.push(...found);
    if (found.length > 0) return;
    const { handler: _handler, queue, ...values } = q;
    queues.push({
      name: queueNameOf(queue),
      queue,
      handlerPath,
      ...values,
      threads: q.threads === 0 ? Math.max(1, Math.min(availableParallelism(), q.concurrency)) : q.threads,
      dispatch: structuredClone(q.dispatch),
      // Every field, not only its type's: a partner's destination of another type applies over them.
      destination: structuredClone(q.destination) as QueueConfig["destination"],
    });
    queueBlocks.push({ at: `${at}.destination`, set: (set.destination ?? {}) as Record<string, unknown> });
  });

  const seen = new Map<string, number>();
  for (const { name, deadLetterQueue, at } of named) {
    const first = seen.get(name);
    if (first !== undefined) {
      problems.push(
        `queues[${at}].queue: duplicate queue name ${JSON.stringify(name)} (also queues[${first}]); declare each queue once`,
      );
    } else {
      seen.set(name, at);
    }
    if (typeof deadLetterQueue === "string" && deadLetterQueue && queueNameOf(deadLetterQueue) === name) {
      problems.push(
        `queues[${at}].deadLetterQueue: must differ from the queue itself; got ${JSON.stringify(deadLetterQueue)}`,
      );
    }
  }
  return { queues, queueBlocks };
}

/**
 * A queue entry without the partner settings, each refused with where it belongs: a partner's
 * rate limit, breaker and flush concurrency are shared by all its dispatchers, across queues (and
 * replicas), so one queue cannot have its own.
 */
function withoutPartnerSettings(raw: Record<string, unknown>, at: string, out: EntryProblems) {
  if (!isPlainObject(raw.dispatch)) return raw;
  const dispatch = { ...raw.dispatch };
  for (const key of Object.keys(PARTNER_SETTINGS) as (keyof typeof PARTNER_SETTINGS)[]) {
    if (!(key in dispatch)) continue;
    out.invalid.push(
      `${at}.dispatch.${key}: not a queue setting: ${PARTNER_SETTINGS[key]}; set dispatch.${key} (every partner) or partners.accounts.<account>.${key} (one partner) instead`,
    );
    delete dispatch[key];
  }
  return { ...raw, dispatch };
}

/**
 * The handler's absolute path. A relative name must stay inside handlersDir, symlinks resolved (an
 * absolute path is the operator's explicit choice and is taken as is).
 */
function handlerProblems(handler: string, handlersDir: string, at: string, found: string[]): string {
  const handlerPath = isAbsolute(handler) ? handler : resolve(handlersDir, handler);
  const fix = `put the module in ${handlersDir} and name it relative to it, or give its absolute path to load it from elsewhere`;
  if (!isAbsolute(handler) && isOutside(handlersDir, handlerPath)) {
    found.push(
      `${at}.handler: ${JSON.stringify(handler)} resolves to ${handlerPath}, outside handlersDir (${handlersDir}); ${fix}`,
    );
    return handlerPath;
  }
  if (!existsSync(handlerPath) || !statSync(handlerPath).isFile()) {
    found.push(
      `${at}.handler: file not found: ${JSON.stringify(handler)} (looked at ${handlerPath}); put the module in ${handlersDir} or fix the name`,
    );
  } else if (!isAbsolute(handler)) {
    const real = realpathSync(handlerPath);
    const realDir = realpathSync(handlersDir);
    if (isOutside(realDir, real)) {
      found.push(
        `${at}.handler: ${JSON.stringify(handler)} is a symlink to ${real}, outside handlersDir (${realDir}); ${fix}`,
      );
    }
  }
  if (!/\.(ts|mts|js|mjs)$/.test(handlerPath)) {
    found.push(`${at}.handler: must be a .ts, .mts, .js or .mjs module; got ${JSON.stringify(handler)}`);
  }
  return handlerPath;
}

function isOutside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel === "" || rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel);
}

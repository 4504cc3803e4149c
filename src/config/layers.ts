/**
 * The top level, layered: config/default.json, config/<NODE_ENV>.json, the extra files
 * (OCTORELAY_CONFIG), the overrides, then the environment over all of them. convict does the
 * layering and the environment (with the formats of formats.ts); this module is the only one that
 * imports it, and it fences in what convict would misread.
 */
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import convict from "convict";
import { ConfigError } from "../errors.ts";
import { isKeyDef, ROOT_KEYS } from "./definitions.ts";
import { unknownKey } from "./entries.ts";
import { described, FORMATS, isPlainObject, kindOf, queueListMessage } from "./formats.ts";
import { parseJson } from "./json.ts";

for (const [name, format] of FORMATS) convict.addFormat({ name, ...format });

/** Where one layer of configuration came from, and what it sets. */
export interface Layer {
  source: string;
  values: Record<string, unknown>;
}

export interface Layered {
  /** A top-level value by its dotted path, as layered and coerced. */
  get<T>(path: string): T;
  layers: Layer[];
  /** `partners.accounts` as layered, taken out before validation (see below). */
  partnerAccounts: unknown;
  /** `queues` was refused (not a list): say nothing more about queues. */
  queuesRejected: boolean;
}

/** Paths (dotted) of the definitions' sections, and of their list-valued keys. */
const ROOT_SECTIONS = sectionPaths(ROOT_KEYS, "");
const ROOT_LISTS = ["queues", "ops.partnerMetricsAccounts"];

function sectionPaths(section: object, prefix: string): string[] {
  return Object.entries(section).flatMap(([key, node]) =>
    isKeyDef(node) ? [] : [`${prefix}${key}`, ...sectionPaths(node, `${prefix}${key}.`)],
  );
}

/**
 * Refuses what convict would misread in a layer, and takes it out: a section given as a scalar
 * (it would replace the whole section), a list given as an object (convict merges the object's
 * keys into the list it already holds: `"queues": { ... }` would keep the previous queues), and
 * `env` (it picks the files, so a file cannot set it).
 */
function layerProblems(layer: Layer, problems: string[]): void {
  const { values } = layer;
  if ("env" in values) {
    problems.push(
      `env: cannot be set in ${layer.source}: it picks which config/<env>.json is read, before any file is; set NODE_ENV instead`,
    );
    delete values.env;
  }
  for (const path of [...ROOT_SECTIONS, ...ROOT_LISTS]) {
    const keys = path.split(".");
    const last = keys.pop() as string;
    let parent: unknown = values;
    for (const key of keys) parent = isPlainObject(parent) ? parent[key] : undefined;
    if (!isPlainObject(parent) || !(last in parent)) continue;
    const value = parent[last];
    const isList = ROOT_LISTS.includes(path);
    if (isList ? Array.isArray(value) : isPlainObject(value)) continue;
    if (path === "queues") problems.push(`queues: ${queueListMessage(value)}`);
    else if (isList) problems.push(`${path}: must be an array; got ${described(value)}`);
    else problems.push(`${path}: must be an object of settings (see the README); got ${described(value)}`);
    delete parent[last];
  }
}

function readLayer(file: string): Layer {
  const parsed = parseJson(readFileSync(file, "utf8"), file);
  if (!isPlainObject(parsed)) throw new Error(`${file}: must hold an object { ... }; got ${kindOf(parsed)}`);
  return { source: file, values: parsed };
}

/**
 * Layers and validates the top level, adding a line to `problems` for each thing wrong. A file
 * that cannot be read says nothing about the rest: that throws at once, alone.
 */
export function layerTopLevel(
  options: { env: NodeJS.ProcessEnv; configDir: string; files: string[] | undefined; overrides?: object },
  problems: string[],
): Layered {
  const { env } = options;
  const root = convict(ROOT_KEYS as unknown as convict.Schema<Record<string, unknown>>, { env, args: [] });
  const files = [
    resolve(options.configDir, "default.json"),
    resolve(options.configDir, `${root.get("env" as never)}.json`),
  ];
  const extra = options.files ?? (env.OCTORELAY_CONFIG ? [env.OCTORELAY_CONFIG] : []);
  for (const file of extra) {
    if (!existsSync(file)) problems.push(`OCTORELAY_CONFIG: file ${JSON.stringify(file)} does not exist`);
  }
  const layers: Layer[] = [];
  const unreadable: string[] = [];
  for (const file of [...files, ...extra].filter((f) => existsSync(f))) {
    try {
      layers.push(readLayer(file));
    } catch (err) {
      unreadable.push(`cannot read config: ${(err as Error).message}`);
    }
  }
  if (unreadable.length > 0) throw new ConfigError([...problems, ...unreadable]);
  if (options.overrides) {
    layers.push({
      source: "overrides",
      values: structuredClone(options.overrides) as Record<string, unknown>,
    });
  }
  for (const layer of layers) {
    layerProblems(layer, problems);
    root.load(layer.values);
  }
  const queuesRejected = problems.some((p) => p.startsWith("queues: "));
  // Account names may hold dots ("globex.io"), which convict would read as key paths: take the
  // entries out before validating; partner-overrides.ts validates each one on its own.
  const partnerAccounts =
    (root.getProperties() as { partners?: { accounts?: unknown } }).partners?.accounts ?? {};
  root.set("partners.accounts" as never, {} as never);
  problems.push(...convictProblems(root));
  const get = <T>(path: string) => root.get(path as never) as T;
  return { get, layers, partnerAccounts, queuesRejected };
}

/** Convict reports all problems in one newline-joined message; split it, one line per problem. */
function convictProblems(instance: { validate(o: { allowed: "strict" }): unknown }): string[] {
  try {
    instance.validate({ allowed: "strict" });
    return [];
  } catch (err) {
    return (err as Error).message
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map((line) => {
        const undeclared = /^configuration param '(.+)' not declared in the schema$/.exec(line);
        return undeclared ? unknownKey(undeclared[1] as string) : line;
      });
  }
}

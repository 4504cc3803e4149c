/**
 * Command-line options declared once, as data: the parser and the help text both read the same
 * declarations, so `--help` always lists exactly what a command accepts. Problems come back as one
 * line naming the option and what is valid; nothing here prints or exits.
 */
import { realpathSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

export interface OptionSpec {
  type: "string" | "boolean" | "integer";
  /** The value's placeholder in help: `--messages <n>`. */
  value?: string;
  /** Shown in help as "(default …)"; integers and strings are parsed from it when the option is absent. */
  default?: string | number | boolean;
  multiple?: boolean;
  /** Smallest integer accepted. */
  min?: number;
  doc: string;
}

export interface PositionalSpec {
  name: string;
  doc: string;
  required: boolean;
}

export interface CommandSpec<O extends Record<string, OptionSpec> = Record<string, OptionSpec>> {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Paragraphs shown under the usage line of the command's help. */
  description?: string[];
  positionals?: readonly PositionalSpec[];
  options: O;
  examples?: string[];
  /** Exit codes beyond the common ones, for the help text. */
  exitCodes?: readonly string[];
}

type ValueOf<S extends OptionSpec> = S["type"] extends "boolean"
  ? boolean
  : S["type"] extends "integer"
    ? number
    : S["multiple"] extends true
      ? string[]
      : string;

/** Parsed values: options with a default (and booleans, and lists) are always present. */
export type OptionValues<O extends Record<string, OptionSpec>> = {
  [K in keyof O]: O[K]["default"] extends string | number | boolean
    ? ValueOf<O[K]>
    : O[K]["type"] extends "boolean"
      ? boolean
      : O[K]["multiple"] extends true
        ? string[]
        : ValueOf<O[K]> | undefined;
};

export type ParseResult<O extends Record<string, OptionSpec>> =
  | { kind: "ok"; values: OptionValues<O>; positionals: string[] }
  | { kind: "help" }
  | { kind: "usage-error"; message: string };

/** Parses `argv` against a command's declarations; never throws. */
export function parseCommandArgs<O extends Record<string, OptionSpec>>(
  spec: CommandSpec<O>,
  argv: string[],
): ParseResult<O> {
  const declared: Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }> = {
    help: { type: "boolean", short: "h" },
  };
  for (const [name, o] of Object.entries(spec.options)) {
    declared[name] = { type: o.type === "boolean" ? "boolean" : "string", multiple: o.multiple ?? false };
  }
  // Not strict: parseArgs' own errors are multi-line and speak of its API; each token is checked here.
  const { tokens } = parseArgs({
    args: argv,
    options: declared,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const raw: Record<string, (string | boolean)[]> = {};
  const positionals: string[] = [];
  for (const token of tokens) {
    if (token.kind === "option-terminator") continue;
    if (token.kind === "positional") {
      positionals.push(token.value);
      continue;
    }
    if (token.name === "help") return { kind: "help" };
    const option = spec.options[token.name];
    if (!option) return { kind: "usage-error", message: `unknown option ${token.rawName}` };
    if (option.type === "boolean") {
      if (token.value !== undefined)
        return { kind: "usage-error", message: `option --${token.name} takes no value` };
      raw[token.name] = [...(raw[token.name] ?? []), true];
      continue;
    }
    if (token.value === undefined || token.value === "") {
      return {
        kind: "usage-error",
        message: `option --${token.name} needs a value (--${token.name} ${placeholder(option)})`,
      };
    }
    raw[token.name] = [...(raw[token.name] ?? []), token.value];
  }
  const allowed = spec.positionals ?? [];
  if (positionals.length > allowed.length) {
    const extra = positionals[allowed.length] as string;
    return {
      kind: "usage-error",
      message:
        allowed.length === 0
          ? `unexpected argument ${JSON.stringify(extra)}`
          : `unexpected extra argument ${JSON.stringify(extra)}`,
    };
  }
  const missing = allowed.find((p, i) => p.required && positionals[i] === undefined);
  if (missing) return { kind: "usage-error", message: `missing <${missing.name}>: ${missing.doc}` };

  const values: Record<string, unknown> = {};
  for (const [name, option] of Object.entries(spec.options)) {
    const given = raw[name];
    if (option.type === "boolean") {
      values[name] = given !== undefined ? true : (option.default ?? false);
      continue;
    }
    const texts = (given ?? (option.default !== undefined ? [String(option.default)] : [])) as string[];
    if (option.multiple) {
      values[name] = texts;
      continue;
    }
    if (given && given.length > 1)
      return { kind: "usage-error", message: `option --${name} given more than once` };
    const text = texts[0];
    if (text === undefined) {
      values[name] = undefined;
      continue;
    }
    if (option.type === "integer") {
      const min = option.min ?? Number.MIN_SAFE_INTEGER;
      const n = /^\s*-?\d+\s*$/.test(text) ? Number(text) : Number.NaN;
      if (!Number.isSafeInteger(n) || n < min) {
        return {
          kind: "usage-error",
          message: `option --${name} must be a whole number${option.min !== undefined ? ` of at least ${option.min}` : ""}; got ${JSON.stringify(text)}`,
        };
      }
      values[name] = n;
      continue;
    }
    values[name] = text;
  }
  return { kind: "ok", values: values as OptionValues<O>, positionals };
}

function placeholder(option: OptionSpec): string {
  return `<${option.value ?? (option.type === "integer" ? "n" : "value")}>`;
}

/** The command's `--help` text, from its declarations. */
export function renderHelp(spec: CommandSpec): string {
  const positionals = (spec.positionals ?? []).map((p) => (p.required ? `<${p.name}>` : `[<${p.name}>]`));
  const lines = [
    `octorelay ${spec.name}: ${spec.summary}`,
    "",
    `usage: octorelay ${[spec.name, ...positionals, "[options]"].join(" ")}`,
  ];
  for (const paragraph of spec.description ?? []) lines.push("", ...wrap(paragraph, 100));
  const args: [string, string][] = (spec.positionals ?? []).map((p) => [`<${p.name}>`, p.doc]);
  const rows: [string, string][] = [];
  for (const [name, o] of Object.entries(spec.options)) {
    const flag = o.type === "boolean" ? `--${name}` : `--${name} ${placeholder(o)}`;
    const extra = [
      o.multiple ? "repeatable" : "",
      o.default !== undefined && o.type !== "boolean" ? `default ${o.default}` : "",
    ]
      .filter(Boolean)
      .join("; ");
    rows.push([flag, extra ? `${o.doc} (${extra})` : o.doc]);
  }
  rows.push(["-h, --help", "show this help"]);
  const width = Math.max(...[...args, ...rows].map(([flag]) => flag.length)) + 2;
  const table = (title: string, entries: [string, string][]) => {
    if (entries.length === 0) return;
    lines.push("", title);
    for (const [flag, doc] of entries) {
      const [first, ...rest] = wrap(doc, 100 - width - 2);
      lines.push(`  ${flag.padEnd(width)}${first ?? ""}`, ...rest.map((l) => `  ${" ".repeat(width)}${l}`));
    }
  };
  table("arguments:", args);
  table("options:", rows);
  if (spec.examples?.length) lines.push("", "examples:", ...spec.examples.map((e) => `  ${e}`));
  const codes = [...(spec.exitCodes ?? ["0 done", "1 failed"])];
  if (!codes.some((c) => c.startsWith("2 "))) codes.push("2 usage or configuration error");
  lines.push("", "exit codes:", ...codes.map((e) => `  ${e}`));
  return `${lines.join("\n")}\n`;
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(line);
  return out;
}

/** True when the module at `moduleUrl` is the script node was started with (`node src/main.ts`). */
export function isEntry(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(resolve(script)) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

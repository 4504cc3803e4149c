/**
 * The per-queue and per-partner definitions, compiled once into plain checks. A partners file may
 * hold 50,000 entries; a convict instance each cost seconds and 100+ MB. The checks say what convict
 * says (same formats, same wording), so an entry's problems read like the top level's.
 */
import { isKeyDef } from "./definitions.ts";
import { described, formatCheck, isPlainObject } from "./formats.ts";

type Check =
  | {
      kind: "leaf";
      validate(value: unknown): void;
      coerce: ((value: unknown) => unknown) | undefined;
      sensitive: boolean;
    }
  | { kind: "section"; section: CompiledSection };

export interface CompiledSection {
  checks: Map<string, Check>;
  /** Keys without a default (null): validated even when absent. */
  required: string[];
  /** "{ "a": ..., "b": ... }", for a section given as something else. */
  shape: string;
}

export function compile(section: object): CompiledSection {
  const checks = new Map<string, Check>();
  const required: string[] = [];
  for (const [key, node] of Object.entries(section)) {
    if (!isKeyDef(node)) {
      checks.set(key, { kind: "section", section: compile(node) });
      continue;
    }
    const { validate, coerce } = formatCheck(node.format);
    checks.set(key, { kind: "leaf", validate, coerce, sensitive: node.sensitive === true });
    if (node.default === null) required.push(key);
  }
  const shape = `{ ${[...checks.keys()]
    .slice(0, 3)
    .map((k) => `"${k}": ...`)
    .join(", ")}${checks.size > 3 ? ", ..." : ""} }`;
  return { checks, required, shape };
}

/** Problems of one entry, as convict words them: invalid values first, then unknown keys. */
export interface EntryProblems {
  invalid: string[];
  unknown: string[];
}

export const unknownKey = (name: string) =>
  `${name}: unknown key; remove it or fix its spelling (see the README's configuration table)`;

/**
 * Checks `raw` against `section`: each key it sets must be declared and its value valid (strings
 * coerced the way convict does). Returns the valid values it sets, coerced; the rest are problems.
 */
export function checkEntry(
  section: CompiledSection,
  raw: Record<string, unknown>,
  name: string,
  out: EntryProblems,
): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  for (const key of Object.keys(raw)) {
    const check = section.checks.get(key);
    const value = raw[key];
    const at = `${name}${key}`;
    if (!check) {
      out.unknown.push(unknownKey(at));
    } else if (check.kind === "section") {
      if (isPlainObject(value)) values[key] = checkEntry(check.section, value, `${at}.`, out);
      else out.invalid.push(`${at}: must be an object like ${check.section.shape}; got ${described(value)}`);
    } else {
      const coerced = typeof value === "string" && check.coerce ? check.coerce(value) : value;
      try {
        check.validate(coerced);
        values[key] = coerced;
      } catch (err) {
        // Word for word what convict says, `: value was` included, for one voice in every message.
        const shown = coerced && !check.sensitive ? `: value was ${JSON.stringify(coerced)}` : "";
        out.invalid.push(`${at}: ${(err as Error).message}${shown}`);
      }
    }
  }
  for (const key of section.required) {
    if (key in raw) continue;
    const check = section.checks.get(key);
    try {
      if (check?.kind === "leaf") check.validate(null);
    } catch (err) {
      out.invalid.push(`${name}${key}: ${(err as Error).message}`);
    }
  }
  return values;
}

/** `defaults` with `values` (from checkEntry) over them; sections and string maps merged key by key. */
export function withValues(
  section: CompiledSection,
  defaults: Record<string, unknown>,
  values: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...defaults };
  for (const [key, value] of Object.entries(values)) {
    const check = section.checks.get(key);
    const base = defaults[key];
    if (check?.kind === "section") {
      out[key] = withValues(check.section, base as Record<string, unknown>, value as Record<string, unknown>);
    } else {
      out[key] = isPlainObject(value) && isPlainObject(base) ? { ...base, ...value } : value;
    }
  }
  return out;
}

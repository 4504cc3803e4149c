/**
 * Finds the examples a Markdown file marks for the docs test. A marker is an HTML comment on the
 * line right before a fenced block or a table, invisible on GitHub:
 *
 *   <!-- docs-test: config base=localstack/octorelay.json -->
 *   ```jsonc
 *   { ... }
 *   ```
 *
 * `kind` says how the test runs the block; `key=value`, `key="a value"`, `key='{"a": 1}'` and bare
 * flags tune it.
 */
import { readFileSync } from "node:fs";
import { relative } from "node:path";

export interface MarkedBlock {
  /** Where the block starts, as `file:line`, for failure messages. */
  at: string;
  kind: string;
  attrs: Record<string, string>;
  /** The fence's info string ("sh", "jsonc", ...); "table" for a marked table. */
  lang: string;
  /** The block's text, without the fence lines and without the list indentation it sits in. */
  code: string;
}

export interface Fence {
  at: string;
  lang: string;
  code: string;
  /** The marker right before it, if any. */
  marker: MarkedBlock | undefined;
}

const MARKER = /^\s*<!--\s*docs-test:\s*([\w-]+)((?:\s+[\w-]+(?:=(?:"[^"]*"|'[^']*'|[^\s"']+))?)*)\s*-->\s*$/;
/** `key=value`, `key="a value"`, `key='{"json": 1}'`, or a bare `flag` (its value is ""). */
const ATTR = /([\w-]+)(?:=(?:"([^"]*)"|'([^']*)'|([^\s"']+)))?/g;
const FENCE_OPEN = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)/;

function parseAttrs(text: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  for (const m of text.matchAll(ATTR)) attrs[m[1] as string] = m[2] ?? m[3] ?? m[4] ?? "";
  return attrs;
}

/** Every fenced block of the file, each with the marker before it; marked tables too. */
export function readFences(file: string, root: string): { fences: Fence[]; tables: MarkedBlock[] } {
  const lines = readFileSync(file, "utf8").split("\n");
  const name = relative(root, file);
  const fences: Fence[] = [];
  const tables: MarkedBlock[] = [];
  let pending: { kind: string; attrs: Record<string, string>; line: number } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    const marker = MARKER.exec(line);
    if (marker) {
      pending = { kind: marker[1] as string, attrs: parseAttrs(marker[2] ?? ""), line: i + 1 };
      continue;
    }
    if (/^\s*<!--.*docs-test/.test(line)) {
      throw new Error(`${name}:${i + 1}: malformed docs-test marker: ${line.trim()}`);
    }
    const open = FENCE_OPEN.exec(line);
    if (open) {
      const [, indent = "", ticks = "", lang = ""] = open;
      const body: string[] = [];
      let j = i + 1;
      for (; j < lines.length; j++) {
        const inner = lines[j] as string;
        if (inner.trim().startsWith(ticks) && inner.trim().replace(/[`~]/g, "") === "") break;
        body.push(inner.startsWith(indent) ? inner.slice(indent.length) : inner.trimStart());
      }
      if (j === lines.length) throw new Error(`${name}:${i + 1}: fence never closed`);
      const at = `${name}:${i + 1}`;
      const code = `${body.join("\n")}\n`;
      fences.push({ at, lang, code, marker: pending && { at, ...pending, lang, code } });
      pending = undefined;
      i = j;
      continue;
    }
    if (pending && line.trim().startsWith("|")) {
      const rows: string[] = [];
      let j = i;
      for (; j < lines.length && (lines[j] as string).trim().startsWith("|"); j++) {
        rows.push((lines[j] as string).trim());
      }
      tables.push({ at: `${name}:${i + 1}`, ...pending, lang: "table", code: rows.join("\n") });
      pending = undefined;
      i = j - 1;
      continue;
    }
    if (pending && line.trim() !== "") {
      throw new Error(`${name}:${pending.line}: docs-test marker is not followed by a fence or a table`);
    }
  }
  if (pending) throw new Error(`${name}:${pending.line}: docs-test marker at the end of the file`);
  return { fences, tables };
}

/** The cells of a Markdown table's body rows (header and separator dropped). */
export function tableRows(table: string): string[][] {
  return table
    .split("\n")
    .slice(2)
    .map((row) =>
      row
        .replace(/^\|/, "")
        .replace(/\|$/, "")
        // A `|` inside backticks (none today) would split a cell; escaped pipes stay.
        .split(/(?<!\\)\|/)
        .map((cell) => cell.trim()),
    );
}

/** The texts inside backticks of a table cell, in order. */
export function codeSpans(cell: string): string[] {
  return [...cell.matchAll(/`([^`]*)`/g)].map((m) => m[1] as string);
}

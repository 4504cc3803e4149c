/**
 * The README's configuration tables, rendered from the definitions (definitions.ts), between
 * `<!-- config-table:begin -->` and `<!-- config-table:end -->`:
 *
 *   node src/config/docs.ts --write README.md   rewrite the region
 *   node src/config/docs.ts --check README.md   exit 1, naming the first differing line, if it is stale
 *
 * Each table carries a `docs-test: config-table` marker, so test/integration/docs.test.ts also sets
 * each documented default explicitly and checks that nothing changes.
 */
import { readFileSync, writeFileSync } from "node:fs";
import {
  CLUSTER_KEYS,
  DESTINATION_TYPE_KEY,
  DESTINATION_TYPE_KEYS,
  DISPATCH_KEYS,
  isKeyDef,
  isPartnerSetting,
  type KeyDef,
  OPS_KEYS,
  PARTNERS_KEYS,
  QUEUE_KEYS,
  ROOT_KEYS,
} from "./definitions.ts";

export const BEGIN = "<!-- config-table:begin -->";
export const END = "<!-- config-table:end -->";

interface Row {
  key: string;
  def: KeyDef;
  /** Where a dispatch key may be set. */
  setIn?: string;
}

interface Table {
  /** The sentence before the table. */
  intro: string;
  /** docs.test.ts sets a "root" key at the top level, a "queue" key in a queue entry. */
  scope: "root" | "queue";
  rows: Row[];
}

/** Every key of a section, nested ones as dotted paths, in declaration order. */
function leaves(section: object, prefix: string): Row[] {
  return Object.entries(section).flatMap(([key, node]) =>
    isKeyDef(node) ? [{ key: `${prefix}${key}`, def: node }] : leaves(node, `${prefix}${key}.`),
  );
}

/** The top-level sections that have a table of their own. */
const OWN_TABLES = ["dispatch.", "destination.", "partners.", "ops.", "cluster."];

function tables(): Table[] {
  const { dispatch: _d, destination: _t, ...queueOwn } = QUEUE_KEYS;
  return [
    {
      intro: "Top level:",
      scope: "root",
      rows: leaves(ROOT_KEYS, "").filter((r) => !OWN_TABLES.some((p) => r.key.startsWith(p))),
    },
    {
      intro:
        "Each entry of `queues` (and its `dispatch` and `destination`, which start from the top level's: see below):",
      scope: "queue",
      rows: leaves(queueOwn, ""),
    },
    {
      intro:
        "Dispatch: `dispatch.<key>` at the top level is the default of every queue and partner; a queue's " +
        "`dispatch` and a partner's entry (`partners.accounts.<account>.<key>`, no `dispatch.`) set their own. " +
        "The partner's settings (set in the top level and partner entries only) are shared by all of a partner's " +
        "dispatchers, across queues:",
      scope: "root",
      rows: leaves(DISPATCH_KEYS, "dispatch.").map((r) => ({
        ...r,
        setIn: isPartnerSetting(r.key.split(".")[1] as string)
          ? "top level, partner"
          : "top level, queue, partner",
      })),
    },
    {
      intro:
        "Destination: `destination.<key>` at the top level, in a queue's `destination` and in a partner's, each " +
        "over the one before, field by field; `type` decides which fields are read, and a field no destination " +
        "reads is refused:",
      scope: "root",
      rows: leaves(DESTINATION_TYPE_KEY, "destination."),
    },
    ...Object.entries(DESTINATION_TYPE_KEYS).map(
      ([type, keys]): Table => ({
        intro: `Destination, type \`${type}\`:`,
        scope: "root",
        rows: leaves(keys, "destination."),
      }),
    ),
    {
      intro:
        "Partners: per-account overrides (any dispatch key and a `destination`) and where parked batches go:",
      scope: "root",
      rows: leaves(PARTNERS_KEYS, "partners."),
    },
    {
      intro: "Operations and the cluster:",
      scope: "root",
      rows: [...leaves(OPS_KEYS, "ops."), ...leaves(CLUSTER_KEYS, "cluster.")],
    },
  ];
}

const code = (text: string) => `\`${text}\``;

/** A default as docs.test.ts reads it back: a code span holding JSON, or a bare string; else prose. */
function shownDefault(def: KeyDef): string {
  if (def.shown !== undefined) return def.shown;
  if (def.default === null) return "required";
  const value = def.default;
  let literal: string;
  if (typeof value !== "string") literal = JSON.stringify(value);
  else if (value === "") literal = '""';
  else {
    // A string that would read back as something else ("true", "12") is quoted.
    let parses = true;
    try {
      JSON.parse(value);
    } catch {
      parses = false;
    }
    literal = parses ? JSON.stringify(value) : value;
  }
  return def.envOnly && def.env ? `${code(literal)} (${def.env} only)` : code(literal);
}

const cell = (text: string) => text.replaceAll("|", "\\|");

function renderTable(table: Table): string {
  const withEnv = table.scope === "root";
  const withSetIn = table.rows.some((r) => r.setIn);
  const header = [
    "key",
    ...(withEnv ? ["env var"] : []),
    "default",
    ...(withSetIn ? ["set in"] : []),
    "description",
  ];
  const lines = [
    table.intro,
    "",
    `<!-- docs-test: config-table scope=${table.scope} -->`,
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---|").join("")}`,
  ];
  for (const { key, def, setIn } of table.rows) {
    const cells = [
      code(key),
      ...(withEnv ? [def.env ? code(def.env) : ""] : []),
      shownDefault(def),
      ...(withSetIn ? [setIn ?? ""] : []),
      def.doc,
    ];
    lines.push(`| ${cells.map(cell).join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The Markdown that goes between the markers. */
export function renderConfigTables(): string {
  return [
    "<!-- Generated from src/config/definitions.ts: edit the definitions, then run `node src/config/docs.ts --write README.md`. -->",
    ...tables().map(renderTable),
  ].join("\n\n");
}

/** `text` with its region replaced by `rendered`; undefined when it has no region. */
export function withTables(text: string, rendered: string): string | undefined {
  const lines = text.split("\n");
  const begin = lines.findIndex((l) => l.trim() === BEGIN);
  const end = lines.findIndex((l, i) => i > begin && l.trim() === END);
  if (begin < 0 || end < 0) return undefined;
  return [...lines.slice(0, begin + 1), "", rendered, "", ...lines.slice(end)].join("\n");
}

/** What `--check` and `--write` say, and the exit code. */
export function run(mode: "--check" | "--write", file: string): { code: number; message: string } {
  const fix = `run \`node src/config/docs.ts --write ${file}\``;
  const text = readFileSync(file, "utf8");
  const expected = withTables(text, renderConfigTables());
  if (expected === undefined) {
    return {
      code: 1,
      message: `${file}: no ${BEGIN} … ${END} region; put the two markers where the configuration tables go, then ${fix}`,
    };
  }
  if (mode === "--write") {
    if (expected !== text) writeFileSync(file, expected);
    return {
      code: 0,
      message: `${file}: configuration tables ${expected === text ? "already up to date" : "written"}`,
    };
  }
  if (expected === text) return { code: 0, message: `${file}: configuration tables up to date` };
  const want = expected.split("\n");
  const have = text.split("\n");
  let i = 0;
  while (want[i] === have[i]) i++;
  return {
    code: 1,
    message:
      `${file}:${i + 1}: the configuration tables differ from src/config/definitions.ts; ${fix}\n` +
      `  expected: ${want[i] ?? "(end of file)"}\n` +
      `  found:    ${have[i] ?? "(end of file)"}`,
  };
}

if (import.meta.main) {
  const [mode, file, ...rest] = process.argv.slice(2);
  if ((mode !== "--check" && mode !== "--write") || !file || rest.length > 0) {
    process.stderr.write("usage: node src/config/docs.ts --write FILE | --check FILE\n");
    process.exit(2);
  }
  const { code: exitCode, message } = run(mode, file);
  (exitCode === 0 ? process.stdout : process.stderr).write(`${message}\n`);
  process.exit(exitCode);
}

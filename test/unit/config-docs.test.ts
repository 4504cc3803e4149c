import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  DESTINATION_TYPE_KEYS,
  isKeyDef,
  type KeyDef,
  PARTNER_ENTRY_KEYS,
  QUEUE_KEYS,
  ROOT_KEYS,
} from "../../src/config/definitions.ts";
import { BEGIN, END, renderConfigTables } from "../../src/config/docs.ts";
import { loadConfig } from "../../src/config.ts";
import { ConfigError } from "../../src/errors.ts";

const DOCS_CLI = fileURLToPath(new URL("../../src/config/docs.ts", import.meta.url));

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "octorelay-config-docs-"));
  dirs.push(dir);
  return dir;
}

interface DocRow {
  key: string;
  scope: string;
  cells: Record<string, string>;
}

/** The rows of every table in the rendered Markdown, by column name, with the scope of its marker. */
function documentedRows(markdown: string): DocRow[] {
  const rows: DocRow[] = [];
  let scope = "";
  let header: string[] | undefined;
  for (const line of markdown.split("\n")) {
    const marker = /docs-test: config-table scope=(\w+)/.exec(line);
    if (marker) {
      scope = marker[1] as string;
      header = undefined;
      continue;
    }
    if (!line.startsWith("|")) {
      header = undefined;
      continue;
    }
    const cells = line
      .slice(1, -1)
      .split(/(?<!\\)\|/)
      .map((c) => c.trim());
    if (!header) header = cells;
    else if (!cells.every((c) => /^-+$/.test(c))) {
      const named = Object.fromEntries(header.map((h, i) => [h, cells[i] ?? ""]));
      rows.push({ key: (named.key ?? "").replace(/^`|`$/g, ""), scope, cells: named });
    }
  }
  return rows;
}

function leafPaths(section: object, prefix: string): [string, KeyDef][] {
  return Object.entries(section).flatMap(([key, node]): [string, KeyDef][] =>
    isKeyDef(node) ? [[`${prefix}${key}`, node]] : leafPaths(node, `${prefix}${key}.`),
  );
}

/**
 * Every key the definitions accept, named as the docs name it: top-level paths; a queue's own keys
 * as is (its dispatch and destination keys are the top level's, `dispatch.x` and `destination.x`);
 * a partner entry's dispatch keys as `dispatch.x` (an entry sets them without the prefix).
 */
function acceptedKeys(): Map<string, KeyDef> {
  const keys = new Map<string, KeyDef>(leafPaths(ROOT_KEYS, ""));
  for (const [path, def] of leafPaths(QUEUE_KEYS, "")) keys.set(path, def);
  for (const [path, def] of leafPaths(PARTNER_ENTRY_KEYS, "")) {
    keys.set(path.startsWith("destination.") ? path : `dispatch.${path}`, def);
  }
  return keys;
}

const rendered = renderConfigTables();
const rows = documentedRows(rendered);

describe("config docs: the tables are rendered from the definitions", () => {
  it("documents every key the definitions accept, each exactly once, and nothing else", () => {
    const counts = new Map<string, number>();
    for (const row of rows) counts.set(row.key, (counts.get(row.key) ?? 0) + 1);
    expect([...counts].filter(([, n]) => n !== 1)).toEqual([]);
    expect([...counts.keys()].sort()).toEqual([...acceptedKeys().keys()].sort());
  });

  it("gives each key a doc of one sentence, with its unit", () => {
    for (const [key, def] of acceptedKeys()) {
      expect(def.doc, key).toMatch(/^[^\n]+\.$/);
      if (/Ms$/.test(key)) expect(def.doc, key).toMatch(/\bms\b/);
      if (/Sec$/.test(key)) expect(def.doc, key).toMatch(/\bseconds\b/);
      if (/Bytes$/.test(key)) expect(def.doc, key).toMatch(/\bbytes\b/i);
    }
  });

  it("shows each key's env var and doc as declared", () => {
    const accepted = acceptedKeys();
    for (const row of rows) {
      const def = accepted.get(row.key) as KeyDef;
      expect(row.cells.description, row.key).toBe(def.doc);
      if (row.scope === "root") expect(row.cells["env var"], row.key).toBe(def.env ? `\`${def.env}\`` : "");
      else expect(def.env, `${row.key} is set per queue, by no env var`).toBeUndefined();
    }
  });
});

describe("config docs: every documented key is accepted by loadConfig where its row says", () => {
  const root = mkdtempSync(join(tmpdir(), "octorelay-config-docs-load-"));
  const handler = join(root, "echo.ts");
  writeFileSync(handler, "export default async function handle() {}\n");
  const configDir = join(root, "config");
  mkdirSync(configDir);
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** Values for keys whose default is no valid explicit setting (required, or checked per type). */
  const SAMPLES: Record<string, unknown> = {
    queue: "orders",
    handler,
    queues: [{ queue: "orders", handler, destination: { bucket: "deliveries" } }],
    "destination.bucket": "deliveries",
    "destination.url": "https://partner.example/in",
    "destination.queueUrl": "https://sqs.us-east-1.amazonaws.com/111122223333/in",
  };
  /** A destination block of each type, with what the type requires (and a token, for authScheme). */
  const BLOCKS: Record<string, Record<string, unknown>> = {
    s3: { type: "s3", bucket: "deliveries" },
    http: { type: "http", url: "https://partner.example/in", authTokenEnv: "PARTNER_TOKEN" },
    sqs: { type: "sqs", queueUrl: "https://sqs.us-east-1.amazonaws.com/111122223333/in" },
  };
  const accepted = acceptedKeys();
  const sampleOf = (key: string) =>
    key in SAMPLES ? structuredClone(SAMPLES[key]) : structuredClone(accepted.get(key)?.default);
  const typeOf = (field: string) =>
    Object.entries(DESTINATION_TYPE_KEYS).find(([, keys]) => field in keys)?.[0] ?? "s3";

  function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
    const parts = path.split(".");
    let node = target;
    for (const part of parts.slice(0, -1)) {
      node[part] ??= {};
      node = node[part] as Record<string, unknown>;
    }
    node[parts.at(-1) as string] = value;
  }
  /** The problems of a load (none: []). */
  function problemsOf(overrides: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): readonly string[] {
    try {
      loadConfig({ configDir, files: [], env, overrides });
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
  }
  /**
   * A valid config whose queue's destination is `block`, with `key` set at `where`. A destination
   * field set above the queue is left out of the queue's block: else the queue's own would hide it.
   */
  function configWith(
    key: string,
    where: string,
    block: Record<string, unknown>,
    value: unknown = sampleOf(key),
  ): Record<string, unknown> {
    const destination = structuredClone(block);
    if (where !== "queue" && where !== "partner") delete destination[key.replace(/^destination\./, "")];
    const queue: Record<string, unknown> = { queue: "orders", handler };
    const config: Record<string, unknown> = { queues: [queue] };
    // A partner's destination is checked over the top level's (as if it had no queue of its own).
    if (where === "partner") config.destination = destination;
    else queue.destination = destination;
    if (where === "none") return config;
    if (where === "queue") setPath(queue, key, value);
    else if (where === "partner") {
      const entry = {};
      setPath(entry, key.replace(/^dispatch\./, ""), value);
      config.partners = { accounts: { acme: entry } };
    } else setPath(config, key, value);
    return config;
  }

  const cases = rows.map((row) => [row.key, row] as const);

  it.each(cases)("%s", (key, row) => {
    const def = accepted.get(key) as KeyDef;
    const block = BLOCKS[key.startsWith("destination.") ? typeOf(key.slice("destination.".length)) : "s3"];
    if (def.envOnly) {
      const env = { [def.env as string]: "staging" };
      expect(problemsOf(configWith(key, "none", BLOCKS.s3 as Record<string, unknown>), env)).toEqual([]);
      expect(problemsOf(configWith(key, "top level", BLOCKS.s3 as Record<string, unknown>))[0]).toMatch(
        new RegExp(`^${key}: `),
      );
      return;
    }
    const places =
      row.scope === "queue"
        ? ["queue"]
        : key.startsWith("destination.")
          ? ["top level", "queue", "partner"]
          : row.cells["set in"]
            ? (row.cells["set in"] as string).split(", ")
            : ["top level"];
    for (const where of places) {
      expect(
        problemsOf(configWith(key, where, block as Record<string, unknown>)),
        `${key} set in a ${where}`,
      ).toEqual([]);
    }
    if (row.cells["set in"] && !places.includes("queue")) {
      expect(problemsOf(configWith(key, "queue", block as Record<string, unknown>))[0]).toContain(
        "not a queue setting",
      );
    }
    if (def.env) {
      const value = sampleOf(key);
      const env = { [def.env]: typeof value === "string" ? value : JSON.stringify(value) };
      const unset = { ...block };
      delete unset[key.replace(/^destination\./, "")];
      expect(problemsOf(configWith(key, "none", unset), env), def.env).toEqual([]);
    }
  });

  it("refuses a key no row documents (so the check above can fail)", () => {
    for (const where of ["top level", "queue", "partner"]) {
      const key = where === "queue" ? "colour" : "dispatch.colour";
      expect(problemsOf(configWith(key, where, BLOCKS.s3 as Record<string, unknown>, "red"))[0]).toContain(
        "unknown key",
      );
    }
  });
});

describe("config docs: node src/config/docs.ts --write / --check FILE", () => {
  const cli = (...args: string[]) => spawnSync(process.execPath, [DOCS_CLI, ...args], { encoding: "utf8" });
  const page = (region: string) => `# Title\n\nBefore.\n\n${BEGIN}\n${region}\n${END}\n\nAfter.\n`;

  it("--write replaces only the region; --check then passes", () => {
    const file = join(tempDir(), "README.md");
    writeFileSync(file, page("stale table"));
    const write = cli("--write", file);
    expect(write.status, write.stderr).toBe(0);
    expect(readFileSync(file, "utf8")).toBe(page(`\n${rendered}\n`));
    const check = cli("--check", file);
    expect(check.status, check.stderr).toBe(0);
  });

  it("--check names the first differing line and the command that fixes it", () => {
    const file = join(tempDir(), "README.md");
    writeFileSync(file, page(`\n${rendered}\n`));
    const text = readFileSync(file, "utf8");
    const lines = text.split("\n");
    const at = lines.findIndex((l) => l.startsWith("| `dispatch.maxRecords`"));
    lines[at] = (lines[at] as string).replace("`1000`", "`500`");
    writeFileSync(file, lines.join("\n"));
    const check = cli("--check", file);
    expect(check.status).toBe(1);
    expect(check.stderr).toContain(`${file}:${at + 1}: the configuration tables differ`);
    expect(check.stderr).toContain(`run \`node src/config/docs.ts --write ${file}\``);
    expect(check.stderr).toContain("`500`");
  });

  it("--check on a file without the markers says where the tables go", () => {
    const file = join(tempDir(), "README.md");
    writeFileSync(file, "# Title\n");
    const check = cli("--check", file);
    expect(check.status).toBe(1);
    expect(check.stderr).toContain(`${file}: no ${BEGIN} … ${END} region`);
  });
});

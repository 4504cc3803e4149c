/**
 * The docs' examples work as written. Every example fence in README.md and localstack/README.md
 * carries a `<!-- docs-test: kind … -->` marker; this file runs each by its kind:
 *
 *   config [base=<file>]     loaded with loadConfig, as the image loads OCTORELAY_CONFIG
 *   partners-file            loaded as OCTORELAY_PARTNERS_FILE over the LocalStack config
 *   json                     parses (JSON5 for jsonc)
 *   handler file=<name>      written to a handlers directory (with the samples) for what follows
 *   messages handler=<name> expect="<outcome>; …"
 *                            one body per line through the real Service and emulator; each line's
 *                            outcome: delivered:<account>,… | dead-letter[:<reason part>] | dropped
 *   aws [expect=…]           the `aws` commands against LocalStack: names checked against the
 *                            init hook, then done with the SDK against an emulator holding the
 *                            same queues and bucket, with the Service running the compose config
 *   aws-setup config=<id>    `aws` commands that create queues and buckets in an account: checked
 *                            statically (attributes parse, redrive targets exist) against the
 *                            `config id=<id>` block they set up
 *   cli [run] [exit=<code>] [prints="a; b"]
 *                            each `npx octorelay <command> …` line: its options appear in
 *                            `<command> --help` (`<group> <action> --help` for a group such as
 *                            `partners pause`); with `run`, it runs as written (in a directory
 *                            holding handlers/ and the files that blocks with file=<name> give),
 *                            exits with <code> (0) and prints each of "a; b"
 *   handler-test file=<path> a test of a handler, written at <path> beside handlers/, run with vitest
 *   fixture-test file=test/<dir>/<name>.test.ts
 *                            an integration test on the fixtures of test/helpers/fixtures.ts, written
 *                            at <path> beside the repository's test/helpers, run with vitest
 *   refusal config='<json>' [command=start] [exit=2]
 *                            the block is what `octorelay <command> --config <that file>` prints on
 *                            stderr, exactly, and it exits with <code>
 *   illustration             shown, not run (say why in the text)
 *   config-table scope=root|queue   each documented default, set explicitly, changes nothing (the
 *                            tables are rendered by src/config/docs.ts; this checks they are current)
 *
 * and checks the deploy manifests' grace periods against the service's own last-resort exit.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { type Message, ReceiveMessageCommand, SendMessageCommand } from "@aws-sdk/client-sqs";
import JSON5 from "json5";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type Config, loadConfig } from "../../src/config.ts";
import { ConfigError } from "../../src/errors.ts";
import { Service } from "../../src/service.ts";
import { onShutdownSignal } from "../../src/shutdown.ts";
import { type AwsCommand, awsCommands, s3Location, shellCommands, shellLines } from "../helpers/docs-aws.ts";
import {
  COMPOSE_FILE,
  createInitResources,
  INIT_SCRIPT,
  mountedFile,
  readCompose,
  readInitScript,
  startEmbeddedEmulator,
} from "../helpers/docs-localstack.ts";
import { codeSpans, type Fence, readFences, tableRows } from "../helpers/docs-markdown.ts";
import {
  createBucket,
  createQueue,
  type Emulator,
  readDelivered,
  receiveAll,
  sendBodies,
  startEmulator,
  waitFor,
} from "../helpers/emulator.ts";
import { SAMPLE_HANDLERS, startService } from "../helpers/service.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const at = (path: string) => resolve(ROOT, path);

/** The docs whose examples must all be marked; deploy/README.md's are checked where marked. */
const CHECKED_DOCS = ["README.md", "localstack/README.md"];
const DOCS = [...CHECKED_DOCS, "deploy/README.md"];
const KINDS = [
  "config",
  "partners-file",
  "json",
  "handler",
  "messages",
  "aws",
  "aws-setup",
  "cli",
  "handler-test",
  "fixture-test",
  "refusal",
  "illustration",
  "config-table",
];

const parsed = DOCS.map((file) => ({ file, ...readFences(at(file), ROOT) }));
const marked = parsed.flatMap((d) => d.fences.flatMap((f) => (f.marker ? [f.marker] : [])));
const tables = parsed.flatMap((d) => d.tables);
const ofKind = (kind: string) => marked.filter((b) => b.kind === kind);

const init = readInitScript(at(INIT_SCRIPT));
const compose = readCompose(at(COMPOSE_FILE));

/** The config file the compose stack's octorelay service runs with: OCTORELAY_CONFIG, mounted. */
function composeConfigFile(service: string): string {
  const s = compose.get(service);
  if (!s) throw new Error(`${COMPOSE_FILE}: no service ${service}`);
  const target = s.environment.OCTORELAY_CONFIG;
  if (!target) {
    throw new Error(`${COMPOSE_FILE}: service ${service} sets no OCTORELAY_CONFIG; declare its queues there`);
  }
  const host = mountedFile(s, target);
  if (!host) throw new Error(`${COMPOSE_FILE}: service ${service} mounts nothing at ${target}`);
  return host;
}

/** The command each line of a shell block runs (after VAR=value prefixes); `npx x` counts as "npx x". */
function commandWords(code: string): string[] {
  return shellLines(code).flatMap((line) =>
    shellCommands(line).map((words) => {
      const first = words.findIndex((w) => !/^[A-Z_][A-Z0-9_]*=/.test(w));
      const rest = first < 0 ? [] : words.slice(first);
      return rest[0] === "npx" ? `npx ${rest[1] ?? ""}` : (rest[0] ?? "");
    }),
  );
}

/** A handlers directory inside the package (so `octorelay/...` imports resolve), removed after. */
const scratch = at(`.octorelay-tmp/docs-${randomUUID().slice(0, 8)}`);
const docsHandlers = join(scratch, "handlers");

/** Loads config the way the image does: config/ of the repo, NODE_ENV=production, the file(s) last. */
function loadAsImage(files: string[], env: NodeJS.ProcessEnv = {}): Config {
  return loadConfig({
    configDir: at("config"),
    files,
    env: {
      NODE_ENV: "production",
      AWS_REGION: "us-east-1",
      OCTORELAY_HANDLERS_DIR: docsHandlers,
      ...env,
    },
  });
}

/** The problems of a rejected config, in full, so a failing example shows why. */
function explain(err: unknown): never {
  if (err instanceof ConfigError) throw new Error(err.message);
  throw err;
}

function tempFile(name: string, content: string): string {
  const dir = mkdtempSync(join(tmpdir(), "octorelay-docs-"));
  const file = join(dir, name);
  writeFileSync(file, content);
  return file;
}

/** Every block that names a file (file=<path>) but a handler's, written where the docs say it is. */
function writeExampleFiles(): void {
  for (const block of marked.filter(
    (b) => b.attrs.file && b.kind !== "handler" && b.kind !== "fixture-test",
  )) {
    const file = join(scratch, block.attrs.file as string);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, block.code);
  }
}

beforeAll(() => {
  mkdirSync(docsHandlers, { recursive: true });
  cpSync(SAMPLE_HANDLERS, docsHandlers, { recursive: true });
  for (const block of ofKind("handler")) {
    const name = block.attrs.file;
    if (!name) throw new Error(`${block.at}: handler block needs file=<name>`);
    writeFileSync(join(docsHandlers, name), block.code);
  }
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe("docs: every example is marked for this test", () => {
  it("marks every JSON, TypeScript, aws and octorelay-command fence of the README and the LocalStack README", () => {
    const needsMarker = (f: Fence) =>
      /^(json|jsonc|json5|jsonl|ndjson|ts|typescript)$/.test(f.lang) ||
      (/^(sh|bash|shell|console)$/.test(f.lang) &&
        commandWords(f.code).some((w) => /^(aws|npx octorelay|octorelay)$/.test(w)));
    const unmarked = parsed
      .filter((d) => CHECKED_DOCS.includes(d.file))
      .flatMap((d) => d.fences.filter((f) => needsMarker(f) && !f.marker).map((f) => f.at));
    expect(unmarked, "put <!-- docs-test: <kind> --> on the line before each of these fences").toEqual([]);
  });

  it("names only kinds this test runs", () => {
    const unknown = [...marked, ...tables].filter((b) => !KINDS.includes(b.kind));
    expect(unknown.map((b) => `${b.at}: ${b.kind}`)).toEqual([]);
    expect(ofKind("config").length).toBeGreaterThan(0);
    expect(ofKind("aws").length).toBeGreaterThan(0);
  });
});

describe("docs: JSON snippets", () => {
  it.each(ofKind("json").map((b) => [b.at, b] as const))("%s parses", (_at, block) => {
    const parse = /^(jsonc|json5)$/.test(block.lang) ? JSON5.parse : JSON.parse;
    expect(() => parse(block.code)).not.toThrow();
  });
});

describe("docs: config examples load", () => {
  it.each(ofKind("config").map((b) => [b.at, b] as const))("%s is accepted by loadConfig", (_at, block) => {
    const file = tempFile(block.attrs.file ?? "config.json", block.code);
    const files = block.attrs.base ? [at(block.attrs.base), file] : [file];
    let config: Config;
    try {
      config = loadAsImage(files);
    } catch (err) {
      explain(err);
    }
    expect(config.queues.length, "a config the image runs declares its queues").toBeGreaterThan(0);
  });

  it.each(ofKind("partners-file").map((b) => [b.at, b] as const))(
    "%s is accepted as OCTORELAY_PARTNERS_FILE",
    (_at, block) => {
      const file = tempFile("partners.json", block.code);
      try {
        const config = loadAsImage([composeConfigFile("octorelay")], { OCTORELAY_PARTNERS_FILE: file });
        expect(config.partners.overrides.size).toBeGreaterThan(0);
      } catch (err) {
        explain(err);
      }
    },
  );
});

describe("docs: commands that set up an AWS account for a config example", () => {
  /** `K=V,K2=V2` (the CLI's shorthand) or a JSON object. */
  function attributesOf(value: string | true | undefined): Record<string, string> {
    if (value === undefined || value === true) return {};
    if (value.trim().startsWith("{")) return JSON.parse(value) as Record<string, string>;
    return Object.fromEntries(value.split(",").map((pair) => pair.split("=") as [string, string]));
  }

  it.each(ofKind("aws-setup").map((b) => [b.at, b] as const))(
    "%s creates what its config needs",
    (where, block) => {
      const queues = new Set<string>();
      const buckets = new Set<string>();
      for (const command of awsCommands(block.code)) {
        const verb = `${command.service} ${command.command}`;
        if (verb === "sqs create-queue") {
          const name = command.options["queue-name"];
          if (typeof name !== "string") throw new Error(`${command.text}: --queue-name`);
          const attributes = attributesOf(command.options.attributes);
          if (attributes.RedrivePolicy) {
            const redrive = JSON.parse(attributes.RedrivePolicy) as {
              deadLetterTargetArn: string;
              maxReceiveCount: string;
            };
            const target = /^arn:aws:sqs:[a-z0-9-]+:\d{12}:([\w-]+)$/.exec(redrive.deadLetterTargetArn)?.[1];
            expect(
              target,
              `${command.text}: deadLetterTargetArn names a queue created before it`,
            ).toBeDefined();
            expect(queues.has(target as string), `${target} is created before ${name}`).toBe(true);
            expect(Number(redrive.maxReceiveCount)).toBeGreaterThan(0);
          }
          queues.add(name);
        } else if (verb === "s3 mb") {
          buckets.add(s3Location(command.positional[0] ?? "").bucket);
        } else if (verb === "s3api create-bucket") {
          buckets.add(String(command.options.bucket));
        } else {
          throw new Error(
            `${command.text}: the docs test does not check "aws ${verb}"; add it to docs.test.ts`,
          );
        }
      }
      const target = marked.find((b) => b.kind === "config" && b.attrs.id === block.attrs.config);
      if (!target) throw new Error(`${where}: no <!-- docs-test: config id=${block.attrs.config} --> block`);
      let config: Config;
      try {
        config = loadAsImage([tempFile(target.attrs.file ?? "config.json", target.code)]);
      } catch (err) {
        explain(err);
      }
      for (const q of config.queues) {
        expect(queues.has(q.name), `${where} creates ${q.name}`).toBe(true);
        if (q.deadLetterQueue)
          expect(queues.has(q.deadLetterQueue), `${where} creates ${q.deadLetterQueue}`).toBe(true);
        if (q.destination.type === "s3")
          expect(buckets.has(q.destination.bucket), `${where} creates ${q.destination.bucket}`).toBe(true);
      }
    },
  );
});

describe("docs: octorelay commands", () => {
  const BIN = at("bin/octorelay.mjs");
  /** Runs the CLI like `npx octorelay` would, from `cwd`; resolves with its exit code and output. */
  function octorelay(args: string[], cwd: string, env: Record<string, string> = {}) {
    return new Promise<{ code: number | null; stdout: string; stderr: string }>((done, fail) => {
      const child = spawn(process.execPath, [BIN, ...args], {
        cwd,
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
      child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
      child.on("error", fail);
      child.on("exit", (code) => done({ code, stdout, stderr }));
    });
  }
  /** The `npx octorelay …` commands of a block: env assignments before, the words after. */
  function commandsOf(code: string): { env: Record<string, string>; args: string[]; text: string }[] {
    return shellLines(code).flatMap((line) =>
      shellCommands(line).flatMap((words) => {
        const env: Record<string, string> = {};
        let i = 0;
        for (; i < words.length && /^[A-Z_][A-Z0-9_]*=/.test(words[i] as string); i++) {
          const [k, ...v] = (words[i] as string).split("=");
          env[k as string] = v.join("=");
        }
        if (words[i] !== "npx" || words[i + 1] !== "octorelay") return [];
        return [{ env, args: words.slice(i + 2), text: words.join(" ") }];
      }),
    );
  }

  it.each(ofKind("refusal").map((b) => [b.at, b] as const))(
    "%s is what octorelay prints",
    async (where, block) => {
      if (block.attrs.config === undefined) throw new Error(`${where}: refusal needs config='<json>'`);
      const file = tempFile("config.json", block.attrs.config);
      const command = block.attrs.command ?? "start";
      const run = await octorelay([command, "--config", file], scratch, {
        NODE_ENV: "production",
        AWS_REGION: "us-east-1",
        OCTORELAY_HANDLERS_DIR: docsHandlers,
        OCTORELAY_METRICS_PORT: "0",
      });
      expect(run.stderr.trim(), `${where}: octorelay ${command} --config ${block.attrs.config}`).toBe(
        block.code.trim(),
      );
      expect(run.code).toBe(Number(block.attrs.exit ?? 2));
    },
  );

  it.each(ofKind("cli").map((b) => [b.at, b] as const))("%s", async (where, block) => {
    const commands = commandsOf(block.code);
    expect(commands.length, `${where}: npx octorelay commands`).toBeGreaterThan(0);
    writeExampleFiles();
    for (const { env, args, text } of commands) {
      const [first = "", second] = args;
      let help = await octorelay([first, "--help"], scratch);
      // A group (`partners`, `dead-letters`): the options are its action's.
      const group = /^actions:$/m.test(help.stdout) && second !== undefined && !second.startsWith("-");
      const command = group ? `${first} ${second}` : first;
      if (group) help = await octorelay([first, second, "--help"], scratch);
      expect(help.code, `${text}: octorelay ${command} --help exits 0 (${help.stderr.trim()})`).toBe(0);
      for (const option of args.filter((a) => a.startsWith("--") && a !== "--help")) {
        expect(
          help.stdout.includes(option.split("=")[0] as string),
          `${text}: ${option} is in octorelay ${command} --help`,
        ).toBe(true);
      }
      if (block.attrs.run === undefined) continue;
      const run = await octorelay(args, scratch, env);
      const output = run.stdout + run.stderr;
      expect(run.code, `${text} exits ${block.attrs.exit ?? 0}; printed:\n${output}`).toBe(
        Number(block.attrs.exit ?? 0),
      );
      for (const shown of (block.attrs.prints ?? "")
        .split(";")
        .map((p) => p.trim())
        .filter(Boolean)) {
        expect(output.includes(shown), `${text} prints "${shown}"; printed:\n${output}`).toBe(true);
      }
    }
  });
});

describe("docs: handler tests", () => {
  it.each(ofKind("handler-test").map((b) => [b.at, b] as const))(
    "%s passes under vitest",
    async (where, block) => {
      if (!block.attrs.file) throw new Error(`${where}: handler-test needs file=<path>`);
      writeExampleFiles();
      const vitest = at("node_modules/vitest/vitest.mjs");
      const run = await new Promise<{ code: number | null; output: string }>((done, fail) => {
        const child = spawn(
          process.execPath,
          [vitest, "run", block.attrs.file as string, "--root", scratch],
          {
            cwd: scratch,
            env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", NO_COLOR: "1" },
            stdio: ["ignore", "pipe", "pipe"],
          },
        );
        let output = "";
        child.stdout.setEncoding("utf8").on("data", (c: string) => (output += c));
        child.stderr.setEncoding("utf8").on("data", (c: string) => (output += c));
        child.on("error", fail);
        child.on("exit", (code) => done({ code, output }));
      });
      expect(run.code, `${where}: vitest run ${block.attrs.file}:\n${run.output}`).toBe(0);
      expect(run.output).toMatch(/Tests\s+\d+ passed/);
    },
  );
});

describe("docs: integration tests on the fixtures", () => {
  it.each(ofKind("fixture-test").map((b) => [b.at, b] as const))(
    "%s passes under vitest",
    async (where, block) => {
      const file = block.attrs.file;
      if (!file || !/^test\/[\w-]+\/[\w.-]+\.test\.ts$/.test(file))
        throw new Error(`${where}: fixture-test needs file=test/<dir>/<name>.test.ts`);
      // Beside a link to the repository's helpers, so its `../helpers/…` imports resolve as written.
      const dir = join(scratch, "fixture-tests");
      mkdirSync(join(dir, dirname(file)), { recursive: true });
      rmSync(join(dir, "test", "helpers"), { force: true });
      symlinkSync(at("test/helpers"), join(dir, "test", "helpers"), "dir");
      writeFileSync(join(dir, file), block.code);
      const vitest = at("node_modules/vitest/vitest.mjs");
      const run = await new Promise<{ code: number | null; output: string }>((done, fail) => {
        const child = spawn(
          process.execPath,
          [vitest, "run", file, "--root", dir, "--testTimeout", "60000", "--hookTimeout", "30000"],
          {
            cwd: dir,
            env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", NO_COLOR: "1" },
            stdio: ["ignore", "pipe", "pipe"],
          },
        );
        let output = "";
        child.stdout.setEncoding("utf8").on("data", (c: string) => (output += c));
        child.stderr.setEncoding("utf8").on("data", (c: string) => (output += c));
        child.on("error", fail);
        child.on("exit", (code) => done({ code, output }));
      });
      expect(run.code, `${where}: vitest run ${file}:\n${run.output}`).toBe(0);
      expect(run.output).toMatch(/Tests\s+\d+ passed/);
    },
  );
});

/** Maps (partner overrides) compared by content. */
const mapsAsObjects = (_key: string, value: unknown) =>
  value instanceof Map ? Object.fromEntries(value) : value;

/** A minimal valid config, and the same with one documented key set to its documented default. */
describe("docs: configuration tables match the schema's defaults", () => {
  /** A minimal valid config; its queue's destination of the given kind (fields of another kind are refused). */
  const base = (destination: Record<string, unknown>) => ({
    handlersDir: at("handlers"),
    queues: [{ queue: "orders", handler: "passthrough.ts", destination: structuredClone(destination) }],
  });
  const DESTINATION_KINDS = [
    { bucket: "octorelay-deliveries" },
    { type: "http", url: "https://partner.example/in" },
    // authScheme only means something with a token.
    { type: "http", url: "https://partner.example/in", authTokenEnv: "PARTNER_TOKEN" },
    { type: "sqs", queueUrl: "https://sqs.us-east-1.amazonaws.com/111122223333/in" },
  ];
  const load = (overrides: Record<string, unknown>) =>
    loadConfig({ configDir: mkdtempSync(join(tmpdir(), "octorelay-docs-")), files: [], env: {}, overrides });

  /** "`a.b.c`, `.d`" → a.b.c, a.b.d; "`x`, `y`" → x, y. */
  function keysOf(cell: string): string[] {
    const keys: string[] = [];
    for (const span of codeSpans(cell)) {
      const previous = keys[keys.length - 1];
      keys.push(span.startsWith(".") && previous ? previous.replace(/\.[^.]+$/, span) : span);
    }
    return keys;
  }
  /** Each comma-separated part of a default cell: its literal value, or undefined if it is prose. */
  function defaultsOf(cell: string): (unknown | undefined)[] {
    return cell.split(/,\s+(?=(?:[^`]*`[^`]*`)*[^`]*$)/).map((part) => {
      const m = /^`([^`]*)`$/.exec(part.trim());
      if (!m) return undefined;
      try {
        return JSON.parse(m[1] as string);
      } catch {
        return m[1];
      }
    });
  }
  function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
    const parts = path.split(".");
    let node = target;
    for (const part of parts.slice(0, -1)) {
      node[part] ??= {};
      node = node[part] as Record<string, unknown>;
    }
    node[parts[parts.length - 1] as string] = value;
  }

  const cases = tables
    .filter((t) => t.kind === "config-table")
    .flatMap((t) =>
      tableRows(t.code).flatMap((cells) => {
        const keys = keysOf(cells[0] ?? "").filter((k) => /^[\w.]+$/.test(k));
        const defaults = defaultsOf(cells[t.attrs.scope === "queue" ? 1 : 2] ?? "");
        return keys.flatMap((key, i) => {
          const value =
            defaults.length === keys.length ? defaults[i] : defaults.length === 1 ? defaults[0] : undefined;
          return value === undefined
            ? []
            : [[`${t.at} ${t.attrs.scope} ${key}`, value, t.attrs.scope, key] as const];
        });
      }),
    );

  it("the README's tables are the ones rendered from the config definitions", async () => {
    // src/config/docs.ts renders them; --check is what keeps a hand edit or a new key from drifting.
    const { run } = await import("../../src/config/docs.ts");
    const check = run("--check", at("README.md"));
    expect(check.code, check.message).toBe(0);
  });

  it("finds the documented defaults", () => {
    expect(cases.length).toBeGreaterThan(30);
  });

  it.each(cases)("%s: documented default %j", (_name, value, scope, key) => {
    const tries = DESTINATION_KINDS.map((destination) => {
      const explicit = base(destination) as Record<string, unknown>;
      const queue = (explicit.queues as Record<string, unknown>[])[0] as Record<string, unknown>;
      setPath(scope === "queue" ? queue : explicit, key, value);
      try {
        const same =
          JSON.stringify(load(explicit), mapsAsObjects) ===
          JSON.stringify(load(base(destination)), mapsAsObjects);
        return same ? "" : `setting ${key} to ${JSON.stringify(value)} changed the loaded config`;
      } catch (err) {
        return err instanceof ConfigError ? err.message : String(err);
      }
    });
    // Fields of one destination kind are refused in the others': one kind must take it unchanged.
    expect(
      tries.includes(""),
      `${key} = ${JSON.stringify(value)} is not the default:\n${tries.join("\n")}`,
    ).toBe(true);
  });
});

/** What became of each message: its accounts' records, its dead letter, or nothing (dropped). */
type Outcome =
  | { kind: "delivered"; accounts: string[] }
  | { kind: "dead-letter"; reason: string }
  | { kind: "dropped" };

function parseExpectations(text: string | undefined, where: string): Outcome[] {
  if (!text)
    throw new Error(`${where}: needs expect="delivered:<accounts> | dead-letter[:reason] | dropped; …"`);
  return text.split(";").map((part) => {
    const [kind = "", detail = ""] = part.trim().split(/:(.*)/s);
    if (kind === "delivered")
      return {
        kind,
        accounts: detail
          .split(",")
          .map((a) => a.trim())
          .sort(),
      };
    if (kind === "dead-letter") return { kind, reason: detail.trim() };
    if (kind === "dropped") return { kind };
    throw new Error(`${where}: unknown outcome "${part}"`);
  });
}

function expectOutcome(got: Outcome, want: Outcome, what: string): void {
  if (want.kind === "dead-letter" && got.kind === "dead-letter") {
    expect(got.reason, what).toContain(want.reason);
    return;
  }
  expect(got, what).toEqual(want);
}

/** Dead letters seen so far by source message id; read with a short visibility, so they stay. */
async function peekDeadLetters(emu: Emulator, dlqUrl: string): Promise<Map<string, string>> {
  const seen = new Map<string, string>();
  for (const m of await receiveAll(emu, dlqUrl, 1)) {
    const id = m.MessageAttributes?.["octorelay.sourceMessageId"]?.StringValue ?? "";
    seen.set(id, m.MessageAttributes?.["octorelay.reason"]?.StringValue ?? "");
  }
  return seen;
}

async function outcomesOf(
  emu: Emulator,
  where: { bucket: string; dlqUrl: string },
  ids: string[],
): Promise<Outcome[]> {
  const records = await readDelivered(emu, where.bucket);
  const dead = await peekDeadLetters(emu, where.dlqUrl);
  return ids.map((id): Outcome => {
    const accounts = [...new Set(records.filter((r) => r.id === id).map((r) => r.account))].sort();
    if (accounts.length > 0) return { kind: "delivered", accounts };
    const reason = dead.get(id);
    if (reason !== undefined) return { kind: "dead-letter", reason };
    return { kind: "dropped" };
  });
}

const deletedBy = (service: Service) => service.relays.reduce((n, r) => n + r.stats.deleted, 0);

describe("docs: sample messages through the real handlers", () => {
  let emu: Emulator;
  beforeAll(async () => {
    emu = await startEmulator();
  });
  afterAll(async () => {
    await emu?.stop();
  });

  it.each(ofKind("messages").map((b) => [b.at, b] as const))("%s", async (where, block) => {
    const handler = block.attrs.handler;
    if (!handler) throw new Error(`${where}: messages block needs handler=<name>`);
    const bodies = block.code.split("\n").filter((l) => l.trim() !== "");
    const want = parseExpectations(block.attrs.expect, where);
    expect(want.length, `${where}: one expectation per message`).toBe(bodies.length);
    const q = await createQueue(emu);
    const bucket = await createBucket(emu);
    const service = await startService(emu, {
      dispatch: { flushIntervalMs: 200 },
      destination: { bucket },
      queues: [
        { queue: q.name, handler: join(docsHandlers, handler), deadLetterQueue: q.dlqName, waitTimeSec: 1 },
      ],
    });
    try {
      const ids = await sendBodies(emu, q.url, bodies);
      await waitFor(`all ${ids.length} messages deleted`, () => deletedBy(service) >= ids.length);
      const got = await outcomesOf(emu, { bucket, dlqUrl: q.dlqUrl }, ids);
      for (const [i, outcome] of got.entries()) {
        expectOutcome(outcome, want[i] as Outcome, `${where} line ${i + 1}: ${bodies[i]}`);
      }
    } finally {
      await service.stop(AbortSignal.timeout(10_000));
    }
  });
});

describe("docs: the LocalStack examples, on the compose stack's config", () => {
  const ENDPOINT = "http://localhost:4566";
  const ACCOUNT = "000000000000";
  let emu: Emulator;
  let urls: Map<string, string>;
  let service: Service;

  beforeAll(async () => {
    emu = await startEmbeddedEmulator();
    urls = await createInitResources(emu, init);
    const config = loadConfig({
      configDir: at("config"),
      files: [composeConfigFile("octorelay")],
      // What the compose file and the image set (the image's handlers are the samples).
      env: {
        NODE_ENV: "production",
        OCTORELAY_HANDLERS_DIR: at("handlers"),
        AWS_ENDPOINT_URL: emu.endpoint,
        AWS_REGION: emu.region,
      },
    });
    service = new Service({ sqs: emu.sqs, s3: emu.s3, log: pino({ level: "silent" }), env: {} }, config);
    await service.start();
  });
  afterAll(async () => {
    await service?.stop(AbortSignal.timeout(10_000));
    await emu?.stop();
  });

  it("the compose stack drains exactly the queues the init hook creates, into its bucket", () => {
    for (const name of ["octorelay", "traffic"]) {
      const config = loadAsImage([composeConfigFile(name)], { OCTORELAY_HANDLERS_DIR: at("handlers") });
      expect(config.queues.length, `${name}: queues declared`).toBeGreaterThan(0);
      for (const q of config.queues) {
        expect(init.queues.has(q.name), `${q.name} is created by ${INIT_SCRIPT}`).toBe(true);
        expect(q.deadLetterQueue).toBe(init.queues.get(q.name));
        expect(q.destination).toMatchObject({ type: "s3", bucket: init.bucket });
      }
    }
    expect(compose.get("localstack")?.ports).toContain(`127.0.0.1:4566:4566`);
  });

  it("the compose services' commands exist in the sources the image is built from", async () => {
    for (const s of compose.values()) {
      if (!s.command) continue;
      const [node, script = "", subcommand = "", ...args] = s.command;
      expect(node, `${s.name}: command runs node`).toBe("node");
      const source = script.replace(/^dist\/(.*)\.js$/, "src/$1.ts");
      const help = await new Promise<{ code: number | null; out: string }>((done) => {
        const child = spawn(process.execPath, [at(source), subcommand, "--help"], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
        child.stderr.setEncoding("utf8").on("data", (c: string) => (out += c));
        child.on("exit", (code) => done({ code, out }));
      });
      expect(help.code, `${s.name}: node ${source} ${subcommand} --help:\n${help.out}`).toBe(0);
      for (const option of args.filter((a) => a.startsWith("--"))) {
        expect(help.out.includes(option), `${s.name}: ${option} is an option of ${subcommand}`).toBe(true);
      }
    }
  });

  function queueOf(command: AwsCommand): string {
    const url = command.options["queue-url"];
    const m = typeof url === "string" ? new RegExp(`^${ENDPOINT}/${ACCOUNT}/([\\w-]+)$`).exec(url) : null;
    if (!m) throw new Error(`${command.text}: --queue-url must be ${ENDPOINT}/${ACCOUNT}/<queue>`);
    const name = m[1] as string;
    expect(
      [...init.queues.keys(), ...init.queues.values()],
      `${name} is created by ${INIT_SCRIPT}`,
    ).toContain(name);
    return name;
  }

  function bucketOf(uri: string): { bucket: string; prefix: string } {
    const location = s3Location(uri);
    expect(location.bucket, `the bucket ${INIT_SCRIPT} creates`).toBe(init.bucket);
    return location;
  }

  it.each(ofKind("aws").map((b) => [b.at, b] as const))("%s", async (where, block) => {
    const commands = awsCommands(block.code);
    expect(commands.length, `${where}: aws commands`).toBeGreaterThan(0);
    const sent: { id: string; body: string; queue: string }[] = [];
    const deletedBefore = deletedBy(service);
    const checks: (() => Promise<void>)[] = [];
    for (const command of commands) {
      expect(command.endpointUrl, `${command.text}: --endpoint-url`).toBe(ENDPOINT);
      const verb = `${command.service} ${command.command}`;
      if (verb === "sqs send-message") {
        const queue = queueOf(command);
        const body = command.options["message-body"];
        if (typeof body !== "string") throw new Error(`${command.text}: --message-body`);
        const out = await emu.sqs.send(
          new SendMessageCommand({ QueueUrl: urls.get(queue), MessageBody: body }),
        );
        sent.push({ id: out.MessageId as string, body, queue });
      } else if (verb === "sqs receive-message") {
        const queue = queueOf(command);
        checks.push(async () => {
          const got: Message[] = await waitFor(`a message to receive from ${queue}`, async () => {
            const out = await emu.sqs.send(
              new ReceiveMessageCommand({
                QueueUrl: urls.get(queue),
                MaxNumberOfMessages: 10,
                VisibilityTimeout: 1,
                MessageAttributeNames: command.options["message-attribute-names"] === "All" ? ["All"] : [],
              }),
            );
            return out.Messages?.length ? out.Messages : undefined;
          });
          if ([...init.queues.values()].includes(queue)) {
            expect(
              got.some((m) => m.MessageAttributes?.["octorelay.reason"] !== undefined),
              `${command.text}: a dead letter carries octorelay.reason (ask for --message-attribute-names All)`,
            ).toBe(command.options["message-attribute-names"] === "All");
          }
        });
      } else if (verb === "s3 ls" || verb === "s3 cp") {
        const { bucket, prefix } = bucketOf(command.positional[0] ?? "");
        if (verb === "s3 cp") expect(command.options.recursive, `${command.text}: --recursive`).toBe(true);
        checks.push(async () => {
          await waitFor(`an object under s3://${bucket}/${prefix}`, async () => {
            const page = await emu.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
            return (page.Contents?.length ?? 0) > 0;
          });
        });
      } else {
        throw new Error(`${command.text}: the docs test does not run "aws ${verb}"; add it to docs.test.ts`);
      }
    }
    if (block.attrs.expect !== undefined || sent.length > 0) {
      const want = parseExpectations(block.attrs.expect, where);
      expect(want.length, `${where}: one expectation per send-message`).toBe(sent.length);
      await waitFor(
        `the ${sent.length} message(s) sent to be deleted`,
        () => deletedBy(service) >= deletedBefore + sent.length,
      );
      for (const [i, message] of sent.entries()) {
        const dlqUrl = urls.get(init.queues.get(message.queue) as string) as string;
        const [got] = await outcomesOf(emu, { bucket: init.bucket, dlqUrl }, [message.id]);
        expectOutcome(got as Outcome, want[i] as Outcome, `${where}: ${message.body}`);
      }
    }
    for (const check of checks) await check();
  });
});

describe("deploy: every grace period outlasts the service's own last-resort exit", () => {
  /** When the service exits on its own if the drain and release hang: measured on shutdown.ts. */
  async function lastResortExitMs(deadlineMs: number): Promise<number> {
    const signals = ["SIGTERM", "SIGINT"] as const;
    const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
    vi.useFakeTimers();
    try {
      const startedAt = Date.now();
      let exitedAt: number | undefined;
      const hanging = { stop: () => new Promise<number>(() => {}) };
      void onShutdownSignal(hanging, pino({ level: "silent" }), deadlineMs).then(() => {
        exitedAt = Date.now();
      });
      process.emit("SIGTERM", "SIGTERM");
      for (let waited = 0; exitedAt === undefined && waited < deadlineMs + 600_000; waited += 100) {
        await vi.advanceTimersByTimeAsync(100);
      }
      if (exitedAt === undefined) throw new Error("onShutdownSignal never exited with a hanging stop()");
      return exitedAt - startedAt;
    } finally {
      vi.useRealTimers();
      for (const s of signals) {
        for (const l of process.listeners(s)) if (!before.get(s)?.has(l)) process.removeListener(s, l);
      }
    }
  }

  /** shutdown.deadlineMs as loadConfig gives it with nothing set. */
  function defaultDeadlineMs(): number {
    return loadConfig({
      configDir: mkdtempSync(join(tmpdir(), "octorelay-docs-")),
      files: [],
      env: {},
      overrides: {
        handlersDir: at("handlers"),
        destination: { bucket: "b" },
        queues: [{ queue: "q", handler: "passthrough.ts" }],
      },
    }).shutdownDeadlineMs;
  }

  /** Each place that sets a grace period, with the drain deadline it sets (or the default). */
  interface GracePeriod {
    where: string;
    /** The setting's name, as the manifest spells it. */
    key: string;
    graceSec: number;
    deadlineMs: number | undefined;
  }
  function gracePeriods(): GracePeriod[] {
    const found: GracePeriod[] = [];
    const ecs = JSON.parse(readFileSync(at("deploy/ecs-task-definition.json"), "utf8")) as {
      containerDefinitions: {
        name: string;
        stopTimeout?: number;
        environment?: { name: string; value: string }[];
      }[];
    };
    for (const c of ecs.containerDefinitions) {
      const env = c.environment?.find((e) => e.name === "OCTORELAY_SHUTDOWN_DEADLINE_MS")?.value;
      found.push({
        where: `deploy/ecs-task-definition.json ${c.name}.stopTimeout`,
        key: "stopTimeout",
        // ECS's default when unset is 30 s.
        graceSec: c.stopTimeout ?? 30,
        deadlineMs: env === undefined ? undefined : Number(env),
      });
    }
    const k8sDir = at("deploy/kubernetes");
    for (const name of readdirSync(k8sDir).filter((f) => /\.ya?ml$/.test(f))) {
      const text = readFileSync(join(k8sDir, name), "utf8");
      if (!/^kind: (Deployment|StatefulSet|Job)$/m.test(text)) continue;
      const grace = /^\s*terminationGracePeriodSeconds:\s*(\d+)/m.exec(text);
      const env = /name: OCTORELAY_SHUTDOWN_DEADLINE_MS\s*\n\s*value:\s*"?(\d+)"?/.exec(text);
      found.push({
        where: `deploy/kubernetes/${name} terminationGracePeriodSeconds`,
        key: "terminationGracePeriodSeconds",
        // Kubernetes' default when unset is 30 s.
        graceSec: grace ? Number(grace[1]) : 30,
        deadlineMs: env ? Number(env[1]) : undefined,
      });
    }
    for (const [name, s] of compose) {
      if (name === "localstack" || name === "traffic") continue;
      const env = s.environment.OCTORELAY_SHUTDOWN_DEADLINE_MS;
      found.push({
        where: `${COMPOSE_FILE} ${name}.stop_grace_period`,
        key: "stop_grace_period",
        // Compose's default when unset is 10 s.
        graceSec: s.stopGracePeriodSec ?? 10,
        deadlineMs: env === undefined ? undefined : Number(env),
      });
    }
    return found;
  }

  it("ECS stopTimeout, Kubernetes terminationGracePeriodSeconds and compose stop_grace_period exceed the deadline plus the last-resort margin", async () => {
    const defaultMs = defaultDeadlineMs();
    const periods = gracePeriods();
    expect(periods.map((p) => p.where)).toEqual(
      expect.arrayContaining([
        expect.stringContaining("ecs-task-definition.json"),
        expect.stringContaining("deployment.yaml"),
        expect.stringContaining("docker-compose.yml octorelay"),
      ]),
    );
    for (const p of periods) {
      const deadlineMs = p.deadlineMs ?? defaultMs;
      const exitMs = await lastResortExitMs(deadlineMs);
      expect(exitMs, "the last-resort exit comes after the deadline").toBeGreaterThan(deadlineMs);
      expect(
        p.graceSec * 1000,
        `${p.where} = ${p.graceSec} s must exceed the service's own exit at ${exitMs} ms (deadline ${deadlineMs} ms)`,
      ).toBeGreaterThan(exitMs);
    }
  });

  it("the ECS task definition and the Kubernetes Deployment agree on the grace period", () => {
    const periods = gracePeriods();
    const ecs = periods.find((p) => p.where.includes("ecs"))?.graceSec;
    const k8s = periods.find((p) => p.where.includes("deployment.yaml"))?.graceSec;
    expect(ecs).toBe(k8s);
  });

  it("deploy/README.md's timeline names the grace periods the manifests set", () => {
    const text = readFileSync(at("deploy/README.md"), "utf8");
    for (const p of gracePeriods()) {
      const shown = p.key === "stop_grace_period" ? `${p.key}: ${p.graceSec}s` : `${p.key}: ${p.graceSec}`;
      expect(text.includes(shown), `deploy/README.md mentions ${shown}`).toBe(true);
    }
  });

  it("the Kubernetes config, the IAM policy and the KEDA triggers name the same queues", () => {
    const configMap = readFileSync(at("deploy/kubernetes/configmap.yaml"), "utf8");
    const m = /^ {2}config\.json: \|\n((?: {4}.*\n|\s*\n)+)/m.exec(configMap);
    if (!m) throw new Error("deploy/kubernetes/configmap.yaml: no config.json: | block");
    const json = (m[1] as string).replace(/^ {4}/gm, "");
    let config: Config;
    try {
      config = loadAsImage([tempFile("config.json", json)], { OCTORELAY_HANDLERS_DIR: at("handlers") });
    } catch (err) {
      explain(err);
    }
    const policy = readFileSync(at("deploy/iam-policy.json"), "utf8");
    const keda = readFileSync(at("deploy/kubernetes/keda-scaledobject.yaml"), "utf8");
    for (const q of config.queues) {
      expect(policy.includes(`:${q.name}"`), `iam-policy.json grants ${q.name}`).toBe(true);
      expect(policy.includes(`:${q.deadLetterQueue}"`), `iam-policy.json grants ${q.deadLetterQueue}`).toBe(
        true,
      );
      expect(keda.includes(`/${q.name}\n`), `keda-scaledobject.yaml scales on ${q.name}`).toBe(true);
    }
  });
});

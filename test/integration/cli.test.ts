/**
 * The operator's path: `octorelay <command>` as a real process (bin/octorelay.mjs), the production
 * entry (src/main.ts) as tests spawn it, the Node bootstrap of the launchers, and the demo.
 */
import {
  chmodSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RecentRate } from "../../src/cli/status.ts";
import { APP, runOctorelay } from "../helpers/cli-process.ts";
import { createBucket, createQueue, type Emulator, queueDepth, startEmulator } from "../helpers/emulator.ts";
import { killAllServices, spawnService } from "../helpers/process.ts";

let emu: Emulator;

beforeAll(async () => {
  emu = await startEmulator();
});
afterAll(async () => {
  killAllServices();
  await emu.stop();
});

function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `octorelay-${prefix}-`));
}

/** What a user reads of a failed command: its error lines, with the launcher's node note left out. */
function oneLine(run: { errorLines: string[] }): string {
  expect(run.errorLines).toHaveLength(1);
  return run.errorLines[0] as string;
}

describe("octorelay commands", () => {
  const optionsOf: Record<string, string[]> = {
    start: ["--config"],
    demo: ["--messages", "--accounts", "--forever", "--config"],
    try: [
      "<handler>",
      "--messages",
      "--config",
      "--account-field",
      "--attempts",
      "--timeout-sec",
      "--verbose",
    ],
    replay: ["--account", "--all", "--dry-run", "--config"],
    traffic: ["--messages", "--accounts", "--config"],
    help: ["<command>"],
  };

  it.each(Object.entries(optionsOf))("%s --help exits 0 and lists its options", async (command, options) => {
    const run = await runOctorelay([command, "--help"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`usage: octorelay ${command}`);
    for (const option of options) expect(run.stdout).toContain(option);
    expect(run.stdout).toContain("-h, --help");
    expect(run.stdout).toContain("exit codes:");
  });

  it("lists every command with --help, and with no command says how to use it (exit 2)", async () => {
    const help = await runOctorelay(["--help"]);
    expect(help.code).toBe(0);
    for (const command of Object.keys(optionsOf))
      expect(help.stdout).toMatch(new RegExp(`^  ${command} `, "m"));
    const bare = await runOctorelay([]);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toContain("usage: octorelay <command> [options]");
    const helpDemo = await runOctorelay(["help", "demo"]);
    expect(helpDemo.code).toBe(0);
    expect(helpDemo.stdout).toContain("--messages <n>");
  });

  it("an unknown option exits 2 with one line naming it and the command's help", async () => {
    const run = await runOctorelay(["demo", "--foo"]);
    expect(run.code).toBe(2);
    expect(oneLine(run)).toBe("octorelay demo: unknown option --foo (see octorelay demo --help)");
    expect(run.stdout).toBe("");
  });

  it("an unknown command, a bad value or a missing argument exits 2 with one line", async () => {
    const unknown = await runOctorelay(["demoo"]);
    expect(unknown.code).toBe(2);
    expect(oneLine(unknown)).toBe('octorelay: unknown command "demoo" (see octorelay --help)');
    const bad = await runOctorelay(["demo", "--messages", "lots"]);
    expect(bad.code).toBe(2);
    expect(oneLine(bad)).toBe(
      'octorelay demo: option --messages must be a whole number of at least 1; got "lots" (see octorelay demo --help)',
    );
    const noValue = await runOctorelay(["traffic", "--accounts"]);
    expect(noValue.code).toBe(2);
    expect(oneLine(noValue)).toBe(
      "octorelay traffic: option --accounts needs a value (--accounts <n>) (see octorelay traffic --help)",
    );
    const noHandler = await runOctorelay(["try"]);
    expect(noHandler.code).toBe(2);
    expect(oneLine(noHandler)).toMatch(/^octorelay try: missing <handler>: .* \(see octorelay try --help\)$/);
    const noAccount = await runOctorelay(["replay"]);
    expect(noAccount.code).toBe(2);
    expect(oneLine(noAccount)).toContain("--account ACCOUNT (repeatable) or --all");
  });
});

describe("octorelay start (src/main.ts, the production entry)", () => {
  async function serviceConfig(handler: string) {
    const q = await createQueue(emu);
    const bucket = await createBucket(emu);
    return { destination: { bucket }, queues: [{ queue: q.name, handler, deadLetterQueue: q.dlqName }] };
  }

  function stderrOf(proc: ReturnType<typeof spawnService>): string {
    return String(proc.logs.find((l) => l.msg === "stderr")?.stderr ?? "");
  }

  it("a busy ops port is one line naming the port and the keys that move it, exit 2", async () => {
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      const proc = spawnService(emu, await serviceConfig("passthrough.ts"), {
        OCTORELAY_METRICS_HOST: "127.0.0.1",
        OCTORELAY_METRICS_PORT: String(port),
        OCTORELAY_HANDLERS_DIR: join(APP, "handlers"),
      });
      const exit = await proc.exited;
      expect(exit.code).toBe(2);
      expect(stderrOf(proc).trim()).toBe(
        `octorelay start: ops server: port ${port} is in use on 127.0.0.1; set ops.port or OCTORELAY_METRICS_PORT (0 = any free port)`,
      );
      expect(proc.output()).not.toContain("uncaught exception");
    } finally {
      busy.close();
    }
  });

  const broken: [string, string, string, (file: string) => string][] = [
    [
      "a syntax error",
      "orders.ts",
      [
        'import type { Handler } from "octorelay/handler";',
        "",
        "const handle: Handler = async (message) => {",
        '  const out = { account: "a"; payload: message.body };',
        "  return out;",
        "};",
        "export default handle;",
      ].join("\n"),
      (file) => `handler ${file}:4:29: Expected ',', got ';'`,
    ],
    [
      "a JavaScript syntax error",
      "orders.mjs",
      [
        "export default function handle(message) {",
        '  return { account: "a", payload: message.body;',
        "}",
      ].join("\n"),
      (file) => `handler ${file}:2:47: Unexpected token ';'`,
    ],
    [
      "a decorator (not JavaScript once the types are stripped)",
      "orders.ts",
      [
        "function logged(target: unknown) {",
        "  return target;",
        "}",
        "class Orders {",
        "  @logged handle() {}",
        "}",
        "export default () => new Orders().handle();",
      ].join("\n"),
      (file) => `handler ${file}:5:3: Invalid or unexpected token`,
    ],
    [
      "a throw while it loads",
      "orders.ts",
      [
        'import { PermanentError } from "octorelay/handler";',
        "const url: string | undefined = process.env.ORDERS_DB_URL;",
        "if (!url) {",
        '  throw new Error("ORDERS_DB_URL is not set");',
        "}",
        'export default () => { throw new PermanentError("never"); };',
      ].join("\n"),
      (file) => `handler ${file}:4:9: threw while loading: Error: ORDERS_DB_URL is not set`,
    ],
    [
      "no default export",
      "orders.ts",
      "export async function handle() {\n  return [];\n}\n",
      (file) =>
        `handler ${file}: no default export (it exports handle); write export default async function handle(message) { ... }`,
    ],
    [
      "an import that is not installed",
      "orders.ts",
      'import { pad } from "left-pad-not-installed";\nexport default () => pad;\n',
      (file) => `handler ${file}:1:21: Cannot find package 'left-pad-not-installed'`,
    ],
  ];

  it.each(broken)(
    "a handler with %s fails to start with one line naming its file:line:col",
    async (_what, name, source, expected) => {
      const file = join(tempDir("broken"), name);
      writeFileSync(file, source);
      const proc = spawnService(emu, await serviceConfig(file));
      const exit = await proc.exited;
      expect(exit.code).toBe(1);
      const line = stderrOf(proc).trim();
      expect(line.split("\n")).toHaveLength(1);
      expect(line).toMatch(/^octorelay start: startup failed: could not start q-[0-9a-f]+: /);
      expect(line).toContain(expected(file));
    },
  );
});

describe("octorelay replay", () => {
  it("without AWS credentials says so in one line, not a CredentialsProviderError stack", async () => {
    const dir = tempDir("replay");
    const config = join(dir, "config.json");
    writeFileSync(
      config,
      JSON.stringify({
        destination: { bucket: "parked" },
        queues: [{ queue: "orders", handler: join(APP, "handlers", "order-events.ts") }],
      }),
    );
    const run = await runOctorelay(["replay", "--all", "--config", config], {
      env: {
        HOME: dir,
        // The SDK's chain must find nothing and ask no instance-metadata endpoint.
        AWS_EC2_METADATA_DISABLED: "true",
        AWS_REGION: emu.region,
        AWS_ENDPOINT_URL: emu.endpoint,
      },
    });
    expect(run.code).toBe(1);
    expect(oneLine(run)).toBe(
      "octorelay replay: could not reach AWS: no credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an IAM role is attached)",
    );
  });
});

describe("development commands on a production install", () => {
  it("demo and try fail in one line naming npm ci when fauxqs (a devDependency) is absent", async () => {
    // The app as the image has it: its own files and every dependency but the emulator.
    const app = tempDir("prod");
    for (const part of ["bin", "scripts", "src", "config", "handlers", "package.json"]) {
      cpSync(join(APP, part), join(app, part), { recursive: true });
    }
    mkdirSync(join(app, "node_modules"));
    for (const name of readdirSync(join(APP, "node_modules"))) {
      if (name !== "fauxqs" && name !== ".bin")
        symlinkSync(join(APP, "node_modules", name), join(app, "node_modules", name));
    }
    for (const command of ["demo", "try"]) {
      const run = await runOctorelay(command === "try" ? ["try", "passthrough"] : ["demo"], {
        script: join(app, "bin", "octorelay.mjs"),
        cwd: app,
      });
      expect(run.code).toBe(1);
      expect(oneLine(run)).toMatch(new RegExp(`^octorelay ${command} needs the development install: npm ci`));
    }
  });
});

describe("node bootstrap", () => {
  it("package.json engines, .nvmrc and the launchers agree on one floor", async () => {
    const pkg = JSON.parse(readFileSync(join(APP, "package.json"), "utf8")) as {
      engines: { node: string };
      bin: Record<string, string>;
    };
    const launcher = pathToFileURL(join(APP, "scripts", "ensure-node.mjs")).href;
    const { nodeFloor } = (await import(launcher)) as { nodeFloor(): number[] };
    const floor = nodeFloor();
    expect(pkg.engines.node).toBe(`>=${floor[0]}`);
    expect(readFileSync(join(APP, ".nvmrc"), "utf8").trim()).toBe(String(floor[0]));
    // .ci/run, npm test and bin/octorelay.mjs all take the floor from the same launcher.
    expect(readFileSync(join(APP, ".ci/run"), "utf8")).toContain("node scripts/ensure-node.mjs --bin-dir");
    expect(readFileSync(join(APP, "scripts/test.mjs"), "utf8")).toContain('from "./ensure-node.mjs"');
    expect(pkg.bin.octorelay).toBe("bin/octorelay.mjs");
    expect(Number(process.versions.node.split(".")[0])).toBeGreaterThanOrEqual(floor[0] as number);
  });

  /** A copy of the launchers whose package.json asks for a Node newer than this one. */
  function appNeedingNode(major: number): string {
    const app = tempDir("floor");
    cpSync(join(APP, "bin"), join(app, "bin"), { recursive: true });
    cpSync(join(APP, "scripts"), join(app, "scripts"), { recursive: true });
    mkdirSync(join(app, "src"));
    writeFileSync(
      join(app, "package.json"),
      JSON.stringify({ name: "octorelay", type: "module", engines: { node: `>=${major}` } }),
    );
    return app;
  }

  it("on a node older than the floor, re-runs itself with the cached node, saying so in one line", async () => {
    const app = appNeedingNode(99);
    const cache = tempDir("node-cache");
    const nodeDir = join(cache, "node_modules", "node");
    mkdirSync(join(nodeDir, "bin"), { recursive: true });
    writeFileSync(join(nodeDir, "package.json"), JSON.stringify({ name: "node", version: "99.1.0" }));
    // Stands in for node 99: shows how it was run and what PATH its children see first.
    writeFileSync(
      join(nodeDir, "bin", "node"),
      ["#!/bin/sh", 'echo "ran: $*"', 'echo "path: $(echo "$PATH" | cut -d: -f1)"', "exit 3", ""].join("\n"),
    );
    chmodSync(join(nodeDir, "bin", "node"), 0o755);
    const run = await runOctorelay(["demo", "--messages", "5"], {
      script: join(app, "bin", "octorelay.mjs"),
      env: { OCTORELAY_NODE_CACHE: cache },
    });
    expect(run.stderr.trim()).toBe(
      `octorelay: node v${process.versions.node} is older than 99 (package.json engines); running with node v99.1.0 from ${cache}`,
    );
    expect(run.stdout).toContain(`ran: ${join(app, "bin", "octorelay.mjs")} demo --messages 5`);
    expect(run.stdout).toContain(`path: ${join(nodeDir, "bin")}`);
    expect(run.code).toBe(3);
  });

  it("where it must not install a node (NODE_ENV=production), fails in one line naming the fix", async () => {
    const app = appNeedingNode(99);
    const run = await runOctorelay(["start"], {
      script: join(app, "bin", "octorelay.mjs"),
      env: { OCTORELAY_NODE_CACHE: tempDir("empty-cache"), NODE_ENV: "production" },
    });
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toBe(
      `octorelay: node v${process.versions.node} is older than 99 (package.json engines) and NODE_ENV=production, so it will not install one: run it on Node 99 or later (the node:99 image; nvm install 99)`,
    );
  });

  it("npm test names the Debian package in one line when redis-server is missing and it cannot install it", async () => {
    const run = await runOctorelay([], {
      script: join(APP, "scripts", "test.mjs"),
      // No redis-server, chromium or apt-get on this PATH.
      env: { PATH: tempDir("empty-path") },
    });
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toBe(
      "npm test: redis-server and chromium not found (used by the shared partner-limits tests); install the Debian packages redis-server chromium (sudo apt-get install redis-server chromium)",
    );
  });
  it("npm test installs missing system programs with apt-get when it may, saying so in one line", async () => {
    // A stand-in apt-get on an otherwise empty PATH: it records its calls and "installs" both programs.
    const bin = tempDir("apt-path");
    const calls = join(bin, "calls.log");
    writeFileSync(
      join(bin, "apt-get"),
      [
        "#!/bin/sh",
        `echo "$*" >> ${calls}`,
        `if [ "$1" = install ]; then for p in redis-server chromium; do printf '#!/bin/sh\\n' > ${bin}/$p; /bin/chmod +x ${bin}/$p; done; fi`,
        "",
      ].join("\n"),
    );
    chmodSync(join(bin, "apt-get"), 0o755);
    // A filter that matches no test file: vitest starts and ends at once (never the whole suite).
    const run = await runOctorelay(["--passWithNoTests", "no-such-test-file-xyz"], {
      script: join(APP, "scripts", "test.mjs"),
      env: { PATH: bin },
      timeoutMs: 30_000,
    });
    if (process.getuid?.() !== 0) {
      // Not root: it must not try, and says what to install instead.
      expect(run.code).toBe(1);
      expect(run.stderr).toContain("install the Debian packages redis-server chromium");
      return;
    }
    const ours = run.errorLines.filter((l) => l.startsWith("npm test:"));
    expect(ours).toEqual([
      "npm test: installing redis-server chromium with apt-get (missing: redis-server, chromium)",
    ]);
    expect(readFileSync(calls, "utf8").trim().split("\n")).toEqual([
      "update -qq",
      "install -y -qq --no-install-recommends redis-server chromium",
    ]);
    // Then vitest itself runs, with the arguments passed through.
    expect(`${run.stdout}${run.stderr}`).toContain("No test files found");
    expect(run.code).toBe(0);
  });
});

describe("octorelay traffic", () => {
  it("sends sample traffic to the configured queues and says how much", async () => {
    const q = await createQueue(emu);
    const config = join(tempDir("traffic"), "config.json");
    writeFileSync(
      config,
      JSON.stringify({
        destination: { bucket: "unused" },
        queues: [{ queue: q.name, handler: join(APP, "handlers", "passthrough.ts") }],
      }),
    );
    const run = await runOctorelay(["traffic", "--messages", "25", "--accounts", "3", "--config", config], {
      env: {
        AWS_ENDPOINT_URL: emu.endpoint,
        AWS_REGION: emu.region,
        AWS_ACCESS_KEY_ID: "test",
        AWS_SECRET_ACCESS_KEY: "test",
      },
    });
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe(`sent 25 sample messages to ${q.name}`);
    expect(await queueDepth(emu, q.url)).toBe(25);
  });
});

describe("octorelay demo", () => {
  /** The demo's three sample queues with short long polls, given with --config as a user would. */
  function quickConfig(): string {
    const file = join(tempDir("demo"), "demo.json");
    const demo = JSON.parse(readFileSync(join(APP, "config", "demo.json"), "utf8")) as { queues: object[] };
    writeFileSync(
      file,
      JSON.stringify({ ops: { port: 0 }, queues: demo.queues.map((q) => ({ ...q, waitTimeSec: 1 })) }),
    );
    return file;
  }

  it("ends by itself with a summary that says which dead-letters were on purpose, the ops URL and plain progress lines", async () => {
    const run = await runOctorelay(
      ["demo", "--messages", "3000", "--accounts", "50", "--config", quickConfig()],
      {
        env: { OCTORELAY_LOG_LEVEL: "info" },
      },
    );
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^ops: http:\/\/127\.0\.0\.1:\d+\/metrics/m);
    expect(run.stdout).toContain("1 of them malformed on purpose, to show the dead-letter path");
    // Not a terminal: plain progress lines, each with the rate of the last few seconds.
    expect(run.stdout).toMatch(/^\[ +[\d.]+s\] sent 3,000 · received [\d,]+ · .* msg\/s now · /m);
    expect(run.stdout).not.toContain("\r");
    expect(run.stdout).toContain("Where it went:");
    expect(run.stdout).toContain("1 dead-lettered on purpose: malformed sample bodies");
    expect(run.stdout).toMatch(/3,000 messages settled in [\d.]+ s/);
    // It ended by itself: no signal in its log; the dead-letter line says it was on purpose.
    expect(run.stderr).not.toMatch(/"signal"|SIGTERM/);
    expect(run.stderr).toContain("sample traffic settled; draining");
    expect(run.stderr).toMatch(/WARN.*message dead-lettered.*onPurpose/);
  });

  it("--forever keeps running after the traffic settled, until Ctrl-C, then drains and sums up", async () => {
    let seen = "";
    let idle: () => void = () => {};
    const becameIdle = new Promise<void>((resolve) => {
      idle = resolve;
    });
    const run = runOctorelay(["demo", "--messages", "100", "--forever", "--config", quickConfig()], {
      onStdout: (text) => {
        seen += text;
        if (seen.includes("idle: traffic settled; Ctrl-C to stop")) idle();
      },
    });
    await becameIdle;
    run.kill("SIGINT");
    const done = await run;
    expect(done.code).toBe(0);
    expect(done.stdout).toContain("100 messages settled");
  });

  it("the msg/s figure is the rate of the last 5 s: it falls to 0 while idle", () => {
    const rate = new RecentRate(5000);
    expect(rate.sample(0, 0)).toBe(0);
    expect(rate.sample(1000, 1000)).toBe(1000);
    expect(rate.sample(2000, 2000)).toBe(1000);
    // Idle from here on: the count stays, the rate of the last 5 s falls and reaches 0.
    expect(rate.sample(2000, 4000)).toBe(500);
    expect(rate.sample(2000, 8000)).toBeLessThan(500);
    expect(rate.sample(2000, 12_000)).toBe(0);
  });

  it("the first msg/s figure already counts from the start, not 0 (the demo's first line under load)", () => {
    const rate = new RecentRate(5000, 0);
    expect(rate.sample(5000, 5000)).toBe(1000);
  });
});

/**
 * `octorelay <command>`: one entry for every command, each with `--help` and one-line errors.
 * Declarations live here; each command's code is imported only when it runs, so `--help` is quick
 * and the production commands never load the development ones (demo and try need fauxqs).
 *
 *   octorelay start | demo | try | replay | traffic | help
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import {
  type CommandSpec,
  isEntry,
  type OptionSpec,
  type OptionValues,
  parseCommandArgs,
  renderHelp,
} from "./cli-args.ts";
import { reportError } from "./cli-errors.ts";
import { APP_ROOT } from "./config.ts";

const CONFIG_OPTION = {
  type: "string",
  value: "file",
  doc: "config file applied last, over config/default.json and config/<NODE_ENV>.json (instead of $OCTORELAY_CONFIG)",
} as const satisfies OptionSpec;

const specs = {
  start: {
    name: "start",
    summary: "run the service: drain the configured queues until SIGTERM or SIGINT",
    description: [
      "Drains every queue in the configuration through its handler and relays the outputs to partners. On SIGTERM or SIGINT it stops receiving, lets running handlers finish, flushes every dispatcher and deletes what was delivered, within shutdown.deadlineMs. Logs are JSON lines on stdout. `node dist/main.js` (the image's command) is this command.",
    ],
    options: { config: CONFIG_OPTION },
    examples: [
      "octorelay start --config /etc/octorelay/config.json",
      "OCTORELAY_CONFIG=/etc/octorelay/config.json node dist/main.js",
    ],
    exitCodes: [
      "0 drained cleanly after SIGTERM or SIGINT",
      "1 startup failed (a queue, a handler or AWS could not be reached) or the drain did not finish",
      "2 usage or configuration error, or the ops port is in use",
    ],
  },
  demo: {
    name: "demo",
    summary: "the service on an embedded SQS + S3 emulator, with sample traffic (development install)",
    description: [
      "Starts fauxqs in this process, creates the queues, dead-letter queues and buckets of config/demo.json (and of --config), sends sample traffic for the sample handlers, shows live progress, and ends with a summary of where every message went. A few sample bodies are malformed on purpose, to show the dead-letter path.",
    ],
    options: {
      messages: { type: "integer", value: "n", default: 30000, min: 1, doc: "sample messages to send" },
      accounts: {
        type: "integer",
        value: "n",
        default: 500,
        min: 1,
        doc: "distinct accounts per kind of partner",
      },
      forever: { type: "boolean", doc: "keep running after the traffic has settled, until Ctrl-C" },
      config: { type: "string", value: "file", doc: "your config file, applied over config/demo.json" },
    },
    examples: [
      "octorelay demo",
      "npm run demo -- --messages 100000 --accounts 2900",
      "octorelay demo --config my-config.json --forever",
    ],
    exitCodes: [
      "0 every message settled and the service drained",
      "1 failed (or the development install is missing: npm ci)",
    ],
  },
  try: {
    name: "try",
    summary: "run one handler on your sample messages through the real relay path, on the embedded emulator",
    description: [
      "Sends each sample body to a queue on an embedded SQS + S3 emulator (fauxqs, in this process) and runs the real service on it: the handler pool, the dispatchers and the destinations (S3 and SQS ones on the emulator; HTTP ones really POST). Then prints, per message, what the handler produced and where it went: delivered (to which object, URL or queue, for which account), dead-lettered (and why), retried (and why), or no output.",
      "Sample bodies: a file of JSON bodies one per line (a line that is not JSON is sent as is, and dead-lettered), or a JSON array file, or stdin. A failing handler is retried after 0.1 s, up to --attempts receives, then dead-lettered.",
    ],
    positionals: [
      {
        name: "handler",
        required: true,
        doc: "the handler module: a path, or a name under handlersDir (order-events.ts, order-events)",
      },
    ],
    options: {
      messages: {
        type: "string",
        value: "file|-",
        doc: "sample bodies: JSON lines or a JSON array; - reads stdin (the default when stdin is not a terminal)",
      },
      config: {
        type: "string",
        value: "file",
        doc: "config whose destination, partners and dispatch settings to use (the queue entry naming this handler, if any); default: an S3 bucket on the emulator",
      },
      "account-field": {
        type: "string",
        value: "path",
        doc: "sets OCTORELAY_ACCOUNT_FIELD for the handler: the body field the passthrough sample routes by (default account)",
      },
      attempts: {
        type: "integer",
        value: "n",
        default: 3,
        min: 1,
        doc: "receives before a failing message is dead-lettered",
      },
      "timeout-sec": {
        type: "integer",
        value: "s",
        default: 60,
        min: 1,
        doc: "stop waiting for messages to settle after this many seconds",
      },
      verbose: { type: "boolean", doc: "also print the service's log lines (to stderr)" },
    },
    examples: [
      "octorelay try handlers/order-events.ts --messages samples/orders.jsonl",
      'echo \'{"account":"acme","n":1}\' | octorelay try passthrough',
      "octorelay try my-handler.ts --messages bodies.json --config config/production.json",
    ],
    exitCodes: [
      "0 every message settled and none was dead-lettered",
      "1 a message was dead-lettered, or did not settle within --timeout-sec, or the handler could not load",
    ],
  },
  replay: {
    name: "replay",
    summary: 'deliver batches parked in S3 while a partner was down (onOutage "park")',
    description: [
      "Reads the parked batches of the given accounts (or all) and delivers each to its partner within the partner's limits, deleting each parked object once delivered. Prints a JSON summary line.",
    ],
    options: {
      account: {
        type: "string",
        value: "account",
        multiple: true,
        doc: "an account whose parked batches to deliver",
      },
      all: { type: "boolean", doc: "every account's parked batches" },
      "dry-run": { type: "boolean", doc: "list what would be delivered, deliver nothing" },
      config: CONFIG_OPTION,
    },
    examples: [
      "octorelay replay --account acme",
      "octorelay replay --all --dry-run",
      "node dist/cli.js replay --all",
    ],
    exitCodes: ["0 every batch delivered", "1 a batch failed, or AWS could not be reached"],
  },
  traffic: {
    name: "traffic",
    summary: "send sample traffic to the configured queues, then exit",
    description: [
      "Sends sample bodies shaped for the sample handlers (order-events, click-filter, passthrough) to every configured queue; LocalStack's compose file runs it beside the service.",
    ],
    options: {
      messages: { type: "integer", value: "n", default: 3000, min: 1, doc: "sample messages to send" },
      accounts: {
        type: "integer",
        value: "n",
        default: 200,
        min: 1,
        doc: "distinct accounts per kind of partner",
      },
      config: CONFIG_OPTION,
    },
    examples: ["octorelay traffic --messages 10000", "node dist/traffic-cli.js --messages 3000"],
    exitCodes: ["0 sent", "1 a queue could not be reached"],
  },
  help: {
    name: "help",
    summary: "show help for a command: octorelay help <command>",
    positionals: [{ name: "command", required: false, doc: "the command to explain" }],
    options: {},
    exitCodes: ["0 shown"],
  },
} as const satisfies Record<string, CommandSpec>;

type Specs = typeof specs;
export type CommandName = keyof Specs;
export type ValuesOf<C extends CommandName> = OptionValues<Specs[C]["options"]>;

/** Each command's code, loaded when it runs. */
const runners: { [C in CommandName]: (values: ValuesOf<C>, positionals: string[]) => Promise<number> } = {
  start: async (v) => (await import("./cli-start.ts")).start(v),
  demo: async (v) => {
    if (!(await developmentInstall("demo"))) return 1;
    return (await import("./demo.ts")).demo(v);
  },
  try: async (v, [handler]) => {
    if (!(await developmentInstall("try"))) return 1;
    return (await import("./try.ts")).tryHandler({ ...v, handler: handler as string });
  },
  replay: async (v) => (await import("./cli-replay.ts")).replay(v),
  traffic: async (v) => (await import("./cli-traffic.ts")).traffic(v),
  help: async (_v, [command]) => {
    if (command === undefined) {
      process.stdout.write(overview());
      return 0;
    }
    if (!isCommand(command)) return usageError("help", `unknown command ${JSON.stringify(command)}`);
    process.stdout.write(renderHelp(specs[command]));
    return 0;
  },
};

/**
 * File options are relative to where the user typed the command: `npm run try -- --messages x.jsonl`
 * runs in the package root, and npm says where it was started in INIT_CWD.
 */
function resolvePaths(spec: CommandSpec, values: Record<string, unknown>): Record<string, unknown> {
  const base = process.env.INIT_CWD ?? process.cwd();
  const out = { ...values };
  for (const [name, option] of Object.entries(spec.options)) {
    const value = out[name];
    if (option.value?.startsWith("file") && typeof value === "string" && value !== "-")
      out[name] = resolve(base, value);
  }
  return out;
}

function isCommand(name: string): name is CommandName {
  return Object.hasOwn(specs, name);
}

function overview(): string {
  const names = Object.keys(specs) as CommandName[];
  const width = Math.max(...names.map((n) => n.length)) + 2;
  return [
    "octorelay: drains SQS queues through your handlers and relays what they produce to partners, each at its own pace",
    "",
    "usage: octorelay <command> [options]",
    "",
    "commands:",
    ...names.map((n) => `  ${n.padEnd(width)}${specs[n].summary}`),
    "",
    "Every command takes --help (octorelay demo --help). octorelay --version prints the version.",
    "Exit codes: 0 done; 1 failed; 2 usage or configuration error (unknown option, bad value, invalid config, ops port in use).",
    "",
  ].join("\n");
}

function usageError(command: string, message: string): number {
  const see = command ? `octorelay ${command} --help` : "octorelay --help";
  process.stderr.write(`octorelay${command ? ` ${command}` : ""}: ${message} (see ${see})\n`);
  return 2;
}

/** demo and try run the emulator, a development dependency: say how to get it, in one line. */
async function developmentInstall(command: string): Promise<boolean> {
  try {
    await import("fauxqs");
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ERR_MODULE_NOT_FOUND") throw err;
    process.stderr.write(
      `octorelay ${command} needs the development install: npm ci (fauxqs, the embedded emulator, is a devDependency; the production image has none)\n`,
    );
    return false;
  }
}

/** Runs `octorelay <argv>` and resolves with its exit code; errors are printed, never thrown. */
export async function runCli(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    process.stderr.write(overview());
    return 2;
  }
  if (first === "--help" || first === "-h") return runners.help({}, []);
  if (first === "--version" || first === "-v") {
    const pkg = JSON.parse(readFileSync(`${APP_ROOT}/package.json`, "utf8")) as { version: string };
    process.stdout.write(`octorelay ${pkg.version} (node ${process.version})\n`);
    return 0;
  }
  if (!isCommand(first)) {
    return usageError(
      "",
      first.startsWith("-") ? `unknown option ${first}` : `unknown command ${JSON.stringify(first)}`,
    );
  }
  const parsed = parseCommandArgs(specs[first] as CommandSpec, rest);
  if (parsed.kind === "help") {
    process.stdout.write(renderHelp(specs[first]));
    return 0;
  }
  if (parsed.kind === "usage-error") return usageError(first, parsed.message);
  try {
    const run = runners[first] as (values: unknown, positionals: string[]) => Promise<number>;
    return await run(resolvePaths(specs[first] as CommandSpec, parsed.values), parsed.positionals);
  } catch (err) {
    return reportError(first, err);
  }
}

// `node src/cli.ts <command>` / `node dist/cli.js <command>` (the image), beside bin/octorelay.mjs.
if (isEntry(import.meta.url)) process.exit(await runCli(process.argv.slice(2)));

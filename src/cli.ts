/**
 * `octorelay <command>`: one entry for every command, each with `--help` and one-line errors.
 * Declarations live here; each command's code is imported only when it runs, so `--help` is quick
 * and the production commands never load the development ones (demo and try need fauxqs).
 *
 *   octorelay start | demo | try | replay | traffic | partners <action> | dead-letters <action> | help
 *
 * `partners` and `dead-letters` are groups: each action is a command of its own here
 * ("partners pause"), with its own options and help.
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
} from "./cli/args.ts";
import { reportError } from "./cli/errors.ts";
import { APP_ROOT } from "./config.ts";

const CONFIG_OPTION = {
  type: "string",
  value: "file",
  doc: "config file applied last, over config/default.json and config/<NODE_ENV>.json (instead of $OCTORELAY_CONFIG)",
} as const satisfies OptionSpec;

/** How the partner commands reach a running service's ops server. */
const OPS_CLIENT_OPTIONS = {
  url: {
    type: "string",
    value: "url",
    default: "http://127.0.0.1:9464",
    doc: "the running service's ops server (ops.host and ops.port)",
  },
  "token-env": {
    type: "string",
    value: "name",
    default: "OCTORELAY_OPS_TOKEN",
    doc: "the environment variable holding the ops token (never a token on the command line: ps and shell history would show it)",
  },
  json: { type: "boolean", doc: "print the service's JSON answer (one line) instead of text, for scripts" },
  "timeout-sec": {
    type: "integer",
    value: "s",
    default: 15,
    min: 1,
    doc: "give up on an answer after this many seconds",
  },
} as const satisfies Record<string, OptionSpec>;

const ACCOUNT_ARGUMENT = [{ name: "account", required: true, doc: "the partner's account" }] as const;

const OPS_EXIT_CODES = [
  "0 done",
  "1 the service could not be reached, or refused (401/403 with its reason, 404, 409, 429)",
  "2 usage error: a bad option or value (also when the service answers 400)",
];

const DEAD_LETTER_OPTIONS = {
  queue: {
    type: "string",
    value: "name",
    doc: "the queue (its name in the config) whose dead letters to act on",
  },
  config: CONFIG_OPTION,
  json: { type: "boolean", doc: "print one JSON line instead of text, for scripts" },
} as const satisfies Record<string, OptionSpec>;

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
  "partners list": {
    name: "partners list",
    summary: "a running service's partners: state, records held, oldest, parked, pause, last error",
    description: [
      "Reads the service's /partners (the same numbers as the console's Partners page), filtered, sorted and paged. Sends the ops token when it is set (needed with ops.requireTokenForRead).",
    ],
    options: {
      state: {
        type: "string",
        value: "states",
        doc: "only partners in these states, comma-separated: active, idle, breaker-open, parked, paused",
      },
      prefix: { type: "string", value: "prefix", doc: "only accounts starting with this" },
      sort: {
        type: "string",
        value: "order",
        doc: "held (most records held first), oldest or account (default held)",
      },
      limit: { type: "integer", value: "n", default: 100, min: 1, doc: "partners per page (at most 1000)" },
      offset: { type: "integer", value: "n", default: 0, min: 0, doc: "skip this many (the next page)" },
      ...OPS_CLIENT_OPTIONS,
    },
    examples: [
      "octorelay partners list --state breaker-open,parked",
      "octorelay partners list --url http://octorelay.internal:9464 --sort oldest --json",
    ],
    exitCodes: OPS_EXIT_CODES,
  },
  "partners show": {
    name: "partners show",
    summary: "one partner of a running service: its state and why, what it holds, its last error",
    positionals: ACCOUNT_ARGUMENT,
    options: OPS_CLIENT_OPTIONS,
    examples: ["octorelay partners show acme", "octorelay partners show acme --json"],
    exitCodes: OPS_EXIT_CODES,
  },
  "partners pause": {
    name: "partners pause",
    summary: "stop sending to a partner for a while (the console's Pause; needs the ops token)",
    description: [
      "Nothing is sent to the partner until the pause ends or it is resumed, on every replica that shares the limits (cluster.redis). As in an outage, its messages stay held until giveUpAfterMs, then follow its outage policy (released to SQS, or parked); once it holds its partnerShare of maxUnacked, new ones go back to SQS with a delay.",
    ],
    positionals: ACCOUNT_ARGUMENT,
    options: {
      for: {
        type: "string",
        value: "duration",
        default: "1h",
        doc: "how long: 15m, 1h, 4h…, at most 12h (SQS keeps a held message invisible 12 hours at most)",
      },
      ...OPS_CLIENT_OPTIONS,
    },
    examples: [
      "OCTORELAY_OPS_TOKEN=… octorelay partners pause acme --for 1h",
      "octorelay partners pause acme --for 4h --token-env PROD_OPS_TOKEN --url http://10.0.3.7:9464",
    ],
    exitCodes: OPS_EXIT_CODES,
  },
  "partners resume": {
    name: "partners resume",
    summary: "lift an operator's pause of a partner now (needs the ops token)",
    description: [
      "What the partner holds goes out within its limits. A Retry-After or breaker pause is not lifted by it.",
    ],
    positionals: ACCOUNT_ARGUMENT,
    options: OPS_CLIENT_OPTIONS,
    examples: ["octorelay partners resume acme"],
    exitCodes: OPS_EXIT_CODES,
  },
  "partners replay": {
    name: "partners replay",
    summary: "replay a partner's parked batches inside the running service (needs the ops token)",
    description: [
      "Starts `octorelay replay --account <account>` in the service, within the running partner's limits (so it never exceeds the partner's rate limit beside live traffic), and returns at once; one replay per partner at a time (409 otherwise). partners show says what is still parked.",
    ],
    positionals: ACCOUNT_ARGUMENT,
    options: OPS_CLIENT_OPTIONS,
    examples: ["octorelay partners replay initech"],
    exitCodes: OPS_EXIT_CODES,
  },
  "dead-letters peek": {
    name: "dead-letters peek",
    summary: "show what is in a queue's dead-letter queue, and why each message is there",
    description: [
      "Straight against SQS with the config's queues (no running service needed): receives up to --max messages with a 5 s visibility timeout and makes them visible again at once. Each message's receive count goes up by one. Shows the octorelay.reason, source queue and message id, receive count, sent time, the sender's attributes and the body cut to 500 characters.",
    ],
    options: {
      ...DEAD_LETTER_OPTIONS,
      max: { type: "integer", value: "n", default: 20, min: 1, doc: "messages to show (at most 100)" },
    },
    examples: [
      "octorelay dead-letters peek --queue orders",
      "octorelay dead-letters peek --queue orders --max 100 --json --config /etc/octorelay/config.json",
    ],
    exitCodes: ["0 shown", "1 AWS could not be reached or refused"],
  },
  "dead-letters redrive": {
    name: "dead-letters redrive",
    summary: "send dead letters back to the queue they came from, to be handled again",
    description: [
      "Straight against SQS with the config's queues. Only ever to a configured queue (octorelay.sourceQueue, or the only queue using this dead-letter queue). --all uses SQS's message-move task where the endpoint has one and the dead-letter queue serves one queue; otherwise each message is received, sent back with its body and the sender's attributes, and deleted once the send succeeded (a crash in between leaves a duplicate, never a loss), up to 1,000 messages or 10 s per run: run it again when it says more remain.",
    ],
    options: {
      ...DEAD_LETTER_OPTIONS,
      all: { type: "boolean", doc: "every message of the dead-letter queue" },
      id: {
        type: "string",
        value: "message id",
        multiple: true,
        doc: "a message to redrive (as peek shows it)",
      },
    },
    examples: [
      "octorelay dead-letters redrive --queue orders --all",
      "octorelay dead-letters redrive --queue orders --id 6f1c…e2 --id 9a0b…41",
    ],
    exitCodes: [
      "0 every message asked for was redriven (or the move task started)",
      "1 some could not be sent, deleted, routed to a configured queue or found; or AWS could not be reached",
    ],
  },
  help: {
    name: "help",
    summary: "show help for a command: octorelay help <command> [<action>]",
    positionals: [
      { name: "command", required: false, doc: "the command to explain" },
      { name: "action", required: false, doc: "the action, for partners and dead-letters" },
    ],
    options: {},
    exitCodes: ["0 shown"],
  },
} as const satisfies Record<string, CommandSpec>;

type Specs = typeof specs;
export type CommandName = keyof Specs;
export type ValuesOf<C extends CommandName> = OptionValues<Specs[C]["options"]>;

/** Each command's code, loaded when it runs. */
const runners: { [C in CommandName]: (values: ValuesOf<C>, positionals: string[]) => Promise<number> } = {
  start: async (v) => (await import("./cli/start.ts")).start(v),
  demo: async (v) => {
    if (!(await developmentInstall("demo"))) return 1;
    return (await import("./dev/demo.ts")).demo(v);
  },
  try: async (v, [handler]) => {
    if (!(await developmentInstall("try"))) return 1;
    return (await import("./dev/try.ts")).tryHandler({ ...v, handler: handler as string });
  },
  replay: async (v) => (await import("./cli/replay.ts")).replay(v),
  traffic: async (v) => (await import("./cli/traffic.ts")).traffic(v),
  "partners list": async (v) => (await import("./cli/partners.ts")).partnersList(v),
  "partners show": async (v, [account]) =>
    (await import("./cli/partners.ts")).partnersShow({ ...v, account: account as string }),
  "partners pause": async (v, [account]) =>
    (await import("./cli/partners.ts")).partnersAction("pause", { ...v, account: account as string }),
  "partners resume": async (v, [account]) =>
    (await import("./cli/partners.ts")).partnersAction("resume", { ...v, account: account as string }),
  "partners replay": async (v, [account]) =>
    (await import("./cli/partners.ts")).partnersAction("replay", { ...v, account: account as string }),
  "dead-letters peek": async (v) => (await import("./cli/dead-letters.ts")).deadLettersPeek(v),
  "dead-letters redrive": async (v) => (await import("./cli/dead-letters.ts")).deadLettersRedrive(v),
  help: async (_v, [command, action]) => {
    if (command === undefined) {
      process.stdout.write(overview());
      return 0;
    }
    if (isGroup(command) && action === undefined) {
      process.stdout.write(groupHelp(command));
      return 0;
    }
    const name = action === undefined ? command : `${command} ${action}`;
    if (!isCommand(name)) return usageError("help", `unknown command ${JSON.stringify(name)}`);
    process.stdout.write(renderHelp(specs[name]));
    return 0;
  },
};

/** Commands with actions: `octorelay partners pause acme`. */
const GROUPS = {
  partners: "a running service's partners, through its ops server: list, show, pause, resume, replay",
  "dead-letters": "a queue's dead letters, straight against SQS: peek, redrive",
} as const;
type GroupName = keyof typeof GROUPS;

function isGroup(name: string): name is GroupName {
  return Object.hasOwn(GROUPS, name);
}

function actionsOf(group: GroupName): CommandName[] {
  return (Object.keys(specs) as CommandName[]).filter((n) => n.startsWith(`${group} `));
}

function groupHelp(group: GroupName): string {
  const actions = actionsOf(group);
  const width = Math.max(...actions.map((n) => n.length - group.length - 1)) + 2;
  return [
    `octorelay ${group}: ${GROUPS[group]}`,
    "",
    `usage: octorelay ${group} <action> [options]`,
    "",
    "actions:",
    ...actions.map((n) => `  ${n.slice(group.length + 1).padEnd(width)}${specs[n].summary}`),
    "",
    `Each action takes --help (octorelay ${actions[0]} --help).`,
    "",
  ].join("\n");
}

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
  let name: string = first;
  let args = rest;
  if (isGroup(first)) {
    const [action, ...more] = rest;
    if (action === undefined || action === "--help" || action === "-h") {
      const out = action === undefined ? process.stderr : process.stdout;
      out.write(groupHelp(first));
      return action === undefined ? 2 : 0;
    }
    name = `${first} ${action}`;
    args = more;
    if (!isCommand(name)) {
      const valid = actionsOf(first).map((n) => n.slice(first.length + 1));
      return usageError(first, `unknown action ${JSON.stringify(action)}; valid: ${valid.join(", ")}`);
    }
  }
  if (!isCommand(name)) {
    return usageError(
      "",
      first.startsWith("-") ? `unknown option ${first}` : `unknown command ${JSON.stringify(first)}`,
    );
  }
  const spec = specs[name] as CommandSpec;
  const parsed = parseCommandArgs(spec, args);
  if (parsed.kind === "help") {
    process.stdout.write(renderHelp(spec));
    return 0;
  }
  if (parsed.kind === "usage-error") {
    // A token typed on the command line would sit in ps and shell history: say where it goes instead.
    const tokenHint =
      /^unknown option --(token|ops-token)(=|$)/.test(parsed.message) && "token-env" in spec.options
        ? `: the ops token is never given on the command line; export it as OCTORELAY_OPS_TOKEN, or name the variable with --token-env NAME`
        : "";
    return usageError(name, `${parsed.message}${tokenHint}`);
  }
  try {
    const run = runners[name] as (values: unknown, positionals: string[]) => Promise<number>;
    return await run(resolvePaths(spec, parsed.values), parsed.positionals);
  } catch (err) {
    return reportError(name, err);
  }
}

// `node src/cli.ts <command>` / `node dist/cli.js <command>` (the image), beside bin/octorelay.mjs.
if (isEntry(import.meta.url)) process.exit(await runCli(process.argv.slice(2)));

/**
 * `octorelay try <handler>`: the handler developer's loop. The user's sample bodies go to a queue on
 * fauxqs (in this process) and the real service relays them: handler pool, dispatchers, partner
 * limits, destinations (S3 and SQS on the emulator, HTTP really POSTed). What each message produced
 * and where it went is read off the service's own calls (SDK middleware, fetch) and its log, and
 * printed per message. A development command (fauxqs is a devDependency), loaded on demand.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, extname, resolve } from "node:path";
import { Writable } from "node:stream";
import { gunzipSync } from "node:zlib";
import type { S3Client } from "@aws-sdk/client-s3";
import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  type Message,
  SendMessageBatchCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import pinoPretty from "pino-pretty";
import { createAwsClients } from "../aws-clients.ts";
import { explainError } from "../cli/errors.ts";
import { StatusLine } from "../cli/status.ts";
import { APP_ROOT, type Config, loadConfig, type QueueConfig } from "../config.ts";
import { ConfigError } from "../errors.ts";
import { createLogger } from "../logger.ts";
import { Service } from "../service.ts";
import { type OwnClients, provisionOnDemand, startEmbeddedAws } from "./emulator.ts";

export interface TryOptions {
  handler: string;
  messages?: string | undefined;
  config?: string | undefined;
  "account-field"?: string | undefined;
  attempts: number;
  "timeout-sec": number;
  verbose: boolean;
}

/** One sample body and where it came from in the user's input. */
export interface Sample {
  label: string;
  body: string;
}

/** What happened to one message, in order. */
type Event =
  | { kind: "delivered"; target: string; account: string; payloads: unknown[] }
  | { kind: "delivery-failed"; target: string; account: string; reason: string }
  | { kind: "retried"; reason: string; receiveCount: number }
  | { kind: "dead-lettered"; reason: string };

interface Tracked {
  /** Set once SendMessageBatch has answered; the relay may see the message before that. */
  sample?: Sample;
  events: Event[];
  settled: boolean;
}

/** A failing handler comes back this soon in `try`, so a few attempts take a second, not minutes. */
const TRY_RETRY_BASE_MS = 100;
const TRY_RETRY_MAX_MS = 1000;
/** Short long polls: `try` stops as soon as its messages have settled. */
const TRY_WAIT_TIME_SEC = 1;
const DEFAULT_BUCKET = "octorelay-try";
const PAYLOAD_SHOWN_CHARS = 160;

export async function tryHandler(options: TryOptions): Promise<number> {
  const handlerPath = findHandler(options.handler);
  if (!handlerPath) {
    process.stderr.write(
      `octorelay try: handler ${JSON.stringify(options.handler)} not found (looked in ${process.cwd()} and ${resolve(APP_ROOT, "handlers")}, with .ts, .js and .mjs) (see octorelay try --help)\n`,
    );
    return 2;
  }
  const input = await readSamples(options.messages);
  if ("problem" in input) {
    process.stderr.write(`octorelay try: ${input.problem} (see octorelay try --help)\n`);
    return 2;
  }
  if (options["account-field"]) process.env.OCTORELAY_ACCOUNT_FIELD = options["account-field"];
  const aws = await startEmbeddedAws("try");
  try {
    const config = tryConfig(handlerPath, options.config);
    return await new TryRun(config, options, input.samples, input.source, aws.own).run();
  } finally {
    await aws.stop();
  }
}

/** A path from here, or a name under the app's handlers/ (with or without its extension). */
export function findHandler(name: string): string | undefined {
  // Where the user typed the command first (npm scripts run in the package root; INIT_CWD is theirs).
  const bases = [
    resolve(process.env.INIT_CWD ?? process.cwd(), name),
    resolve(name),
    resolve(APP_ROOT, "handlers", name),
  ];
  for (const base of bases) {
    for (const candidate of [base, `${base}.ts`, `${base}.js`, `${base}.mjs`]) {
      if (existsSync(candidate) && statSync(candidate).isFile()) return candidate;
    }
  }
  return undefined;
}

/** JSON lines (one body per line), a JSON array of bodies, or stdin; a line that is not JSON is sent as is. */
export async function readSamples(
  from: string | undefined,
): Promise<{ samples: Sample[]; source: string } | { problem: string }> {
  let text: string;
  let source: string;
  if (from === undefined || from === "-") {
    if (from === undefined && process.stdin.isTTY) {
      return {
        problem:
          "no sample messages: give --messages <file> (JSON lines or a JSON array), or pipe them on stdin",
      };
    }
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString("utf8");
    source = "stdin";
  } else {
    if (!existsSync(from)) return { problem: `--messages: file ${JSON.stringify(from)} does not exist` };
    text = readFileSync(from, "utf8");
    source = from;
  }
  const trimmed = text.trim();
  let samples: Sample[] | undefined;
  if (trimmed.startsWith("[")) {
    try {
      const array = JSON.parse(trimmed) as unknown;
      if (Array.isArray(array))
        samples = array.map((body, i) => ({ label: `item ${i + 1}`, body: JSON.stringify(body) }));
    } catch {
      // Not one JSON array: read it as lines.
    }
  }
  samples ??= text
    .split("\n")
    .flatMap((line, i) => (line.trim() ? [{ label: `line ${i + 1}`, body: line.trim() }] : []));
  if (samples.length === 0) return { problem: `no sample messages in ${source}` };
  return { samples, source };
}

/**
 * The user's config (their destination, partners and dispatch settings, and the queue entry that
 * names this handler, if there is one), with one queue for the handler, its dead-letter queue and
 * quick retries. Without a destination bucket anywhere, an S3 bucket on the emulator.
 */
export function tryConfig(handlerPath: string, userConfig: string | undefined): Config {
  const files = userConfig ? [userConfig] : [];
  let config: Config | undefined;
  if (userConfig) {
    try {
      config = loadConfig({ files });
    } catch (err) {
      // A config without queues (or whose queues' handlers are elsewhere) still has what try needs.
      if (!(err instanceof ConfigError) || !err.problems.every((p) => p.startsWith("queues"))) throw err;
    }
  }
  let queue = config?.queues.find((q) => q.handlerPath === handlerPath);
  if (!config || !queue) {
    const name = basename(handlerPath, extname(handlerPath)).replace(/[^A-Za-z0-9_-]/g, "-") || "try";
    const overrides = { queues: [{ queue: name, handler: handlerPath }] };
    try {
      config = loadConfig({ files, overrides });
    } catch (err) {
      if (!(err instanceof ConfigError) || !err.problems.some((p) => p.includes("destination.bucket")))
        throw err;
      config = loadConfig({ files, overrides: { ...overrides, destination: { bucket: DEFAULT_BUCKET } } });
    }
    queue = config.queues[0] as QueueConfig;
  }
  // The validated entry, with the queue on the emulator, its dead-letter queue and quick retries.
  const tried: QueueConfig = {
    ...queue,
    queue: queue.name,
    deadLetterQueue: `${queue.name}-dlq`,
    retryBaseMs: TRY_RETRY_BASE_MS,
    retryMaxMs: TRY_RETRY_MAX_MS,
    waitTimeSec: TRY_WAIT_TIME_SEC,
  };
  return { ...config, queues: [tried] };
}

class TryRun {
  readonly #config: Config;
  readonly #options: TryOptions;
  readonly #samples: Sample[];
  readonly #source: string;
  readonly #own: OwnClients;
  readonly #status = new StatusLine(process.stderr);
  /** By SQS message id. */
  readonly #messages = new Map<string, Tracked>();
  readonly #receipts = new Map<string, string>();
  /** Message ids in the order of the samples. */
  readonly #order: string[] = [];
  #settled = 0;
  #onSettled: (() => void) | undefined;

  constructor(config: Config, options: TryOptions, samples: Sample[], source: string, own: OwnClients) {
    this.#config = config;
    this.#own = own;
    this.#options = options;
    this.#samples = samples;
    this.#source = source;
  }

  async run(): Promise<number> {
    const config = this.#config;
    const queue = config.queues[0] as QueueConfig;
    const own = this.#own;
    const queueUrl = await createQueue(
      own.sqs,
      queue.name,
      `${queue.name}-dlq`,
      this.#options.attempts,
      queue.visibilityTimeoutSec,
    );
    const clients = createAwsClients(config.aws);
    // Receives go through the polls' client, everything else through the other: both are read.
    this.#tapSqs(clients.sqs);
    this.#tapSqs(clients.sqsPolls);
    this.#tapS3(clients.s3);
    provisionOnDemand(clients, own);
    const restoreFetch = this.#tapFetch();
    // At least info: the retries are read from the log (and --verbose shows it).
    const level = config.logLevel === "debug" || config.logLevel === "trace" ? config.logLevel : "info";
    const log = createLogger(level, {
      destination: this.#logStream(),
    });
    const service = new Service({ ...clients, log }, config);
    const handlerName = queue.handlerPath;
    this.#status.print(
      `octorelay try ${handlerName}: ${this.#samples.length} message${this.#samples.length === 1 ? "" : "s"} from ${this.#source} through queue ${queue.name} on the embedded emulator`,
      process.stderr,
    );
    try {
      await service.start();
    } catch (err) {
      restoreFetch();
      process.stderr.write(`octorelay try: ${explainError(err)}\n`);
      return 1;
    }
    const allSettled = new Promise<void>((resolveSettled) => {
      this.#onSettled = resolveSettled;
    });
    await this.#send(own.sqs, queueUrl);
    const timeoutMs = this.#options["timeout-sec"] * 1000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolveTimeout) => {
      timer = setTimeout(() => resolveTimeout("timeout"), timeoutMs);
    });
    const ticker = setInterval(
      () =>
        this.#status.set(
          `waiting: ${Math.min(this.#settled, this.#samples.length)} of ${this.#samples.length} settled`,
        ),
      250,
    );
    const outcome = await Promise.race([allSettled.then(() => "settled" as const), timedOut]);
    clearTimeout(timer);
    clearInterval(ticker);
    this.#status.clear();
    await service.stop(AbortSignal.timeout(5000));
    restoreFetch();
    return this.#report(outcome === "timeout");
  }

  async #send(sqs: SQSClient, queueUrl: string): Promise<void> {
    for (let from = 0; from < this.#samples.length; from += 10) {
      const chunk = this.#samples.slice(from, from + 10);
      const sent = await sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: chunk.map((s, i) => ({ Id: String(from + i), MessageBody: s.body })),
        }),
      );
      for (const failed of sent.Failed ?? []) {
        throw new Error(
          `could not send ${this.#samples[Number(failed.Id)]?.label}: ${failed.Message ?? failed.Code}`,
        );
      }
      for (const ok of sent.Successful ?? []) {
        const id = ok.MessageId as string;
        this.#tracked(id).sample = this.#samples[Number(ok.Id)] as Sample;
        this.#order.push(id);
      }
    }
    this.#checkSettled();
  }

  #tracked(id: string): Tracked {
    let tracked = this.#messages.get(id);
    if (!tracked) {
      tracked = { events: [], settled: false };
      this.#messages.set(id, tracked);
    }
    return tracked;
  }

  #event(id: string | undefined, event: Event): void {
    if (id) this.#tracked(id).events.push(event);
  }

  #settle(id: string | undefined): void {
    if (!id) return;
    const tracked = this.#tracked(id);
    if (tracked.settled) return;
    tracked.settled = true;
    this.#settled++;
    this.#checkSettled();
  }

  /** Every sample sent, and every one of them settled. */
  #checkSettled(): void {
    if (
      this.#order.length === this.#samples.length &&
      this.#order.every((id) => this.#messages.get(id)?.settled)
    ) {
      this.#onSettled?.();
    }
  }

  /** Receipts (to know which message a delete settles), dead-letters, and SQS partner deliveries. */
  #tapSqs(client: SQSClient): void {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const command = context.commandName;
        const input = args.input as Record<string, unknown>;
        if (command === "SendMessageBatchCommand") {
          // A partner's SQS destination (provisionOnDemand points it at the emulator, further in).
          const url = input.QueueUrl as string;
          const entries = (input.Entries ?? []) as { Id: string; MessageBody: string }[];
          try {
            const result = await next(args);
            const out = result.output as {
              Successful?: { Id: string }[];
              Failed?: { Id: string; Message?: string }[];
            };
            const ok = new Set((out.Successful ?? []).map((s) => s.Id));
            this.#records(
              entries.filter((e) => ok.has(e.Id)).map((e) => e.MessageBody),
              `sqs ${url}`,
              true,
            );
            for (const f of out.Failed ?? []) {
              const body = entries.find((e) => e.Id === f.Id)?.MessageBody;
              if (body) this.#records([body], `sqs ${url}`, false, f.Message ?? "entry failed");
            }
            return result;
          } catch (err) {
            this.#records(
              entries.map((e) => e.MessageBody),
              `sqs ${url}`,
              false,
              (err as Error).message,
            );
            throw err;
          }
        }
        const result = await next(args);
        if (command === "ReceiveMessageCommand") {
          for (const m of (result.output as { Messages?: Message[] }).Messages ?? []) {
            if (m.ReceiptHandle && m.MessageId) this.#receipts.set(m.ReceiptHandle, m.MessageId);
          }
        } else if (command === "DeleteMessageBatchCommand") {
          const entries = (input.Entries ?? []) as { Id: string; ReceiptHandle: string }[];
          const ok = new Set(
            ((result.output as { Successful?: { Id: string }[] }).Successful ?? []).map((s) => s.Id),
          );
          for (const e of entries) if (ok.has(e.Id)) this.#settle(this.#receipts.get(e.ReceiptHandle));
        } else if (command === "DeleteMessageCommand") {
          this.#settle(this.#receipts.get(input.ReceiptHandle as string));
        } else if (command === "SendMessageCommand") {
          const attributes = (input.MessageAttributes ?? {}) as Record<string, { StringValue?: string }>;
          const source = attributes["octorelay.sourceMessageId"]?.StringValue;
          if (source) {
            this.#event(source, {
              kind: "dead-lettered",
              reason: attributes["octorelay.reason"]?.StringValue ?? "",
            });
          }
        }
        return result;
      },
      { step: "initialize", name: "octorelayTry" },
    );
  }

  /** S3 deliveries (and parked batches). */
  #tapS3(client: S3Client): void {
    const parkPrefix = this.#config.partners.park.prefix;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName !== "PutObjectCommand") return next(args);
        const input = args.input as { Bucket: string; Key: string; Body?: unknown; ContentEncoding?: string };
        const lines = bodyLines(input.Body, input.ContentEncoding);
        const parked = input.Key.startsWith(parkPrefix) && input.Bucket === this.#config.partners.park.bucket;
        const target = `${parked ? "parked in " : ""}s3://${input.Bucket}/${input.Key}`;
        try {
          const result = await next(args);
          this.#records(lines, target, true);
          return result;
        } catch (err) {
          this.#records(lines, target, false, (err as Error).message);
          throw err;
        }
      },
      { step: "initialize", name: "octorelayTry" },
    );
  }

  /** HTTP partners: the real POST, seen on its way out. Returns the undo. */
  #tapFetch(): () => void {
    const original = globalThis.fetch;
    globalThis.fetch = async (input, init) => {
      const body = typeof init?.body === "string" ? init.body : undefined;
      if (init?.method !== "POST" || body === undefined) return original(input, init);
      const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
      const lines = batchLines(body);
      try {
        const response = await original(input, init);
        const target = `POST ${url} (${response.status})`;
        if (response.ok) this.#records(lines, target, true);
        else this.#records(lines, target, false, `answered ${response.status}`);
        return response;
      } catch (err) {
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        const why = cause ? ` (${cause.code ?? cause.message})` : "";
        this.#records(lines, `POST ${url}`, false, `${(err as Error).name}: ${(err as Error).message}${why}`);
        throw err;
      }
    };
    return () => {
      globalThis.fetch = original;
    };
  }

  /** Delivered (or failed) records, grouped per message and account. */
  #records(lines: string[], target: string, delivered: boolean, reason = ""): void {
    const groups = new Map<string, { id: string; account: string; payloads: unknown[] }>();
    for (const line of lines) {
      if (!line.trim()) continue;
      let record: { id?: string; account?: string; payload?: unknown };
      try {
        record = JSON.parse(line) as typeof record;
      } catch {
        continue;
      }
      const key = `${record.id}\u0000${record.account}`;
      const group = groups.get(key) ?? { id: record.id ?? "", account: record.account ?? "", payloads: [] };
      group.payloads.push(record.payload);
      groups.set(key, group);
    }
    for (const g of groups.values()) {
      this.#event(
        g.id,
        delivered
          ? { kind: "delivered", target, account: g.account, payloads: g.payloads }
          : { kind: "delivery-failed", target, account: g.account, reason },
      );
    }
  }

  /** The service's log: read for handler retries; shown with --verbose. */
  #logStream(): Writable {
    const verbose = this.#options.verbose;
    const prettify = verbose
      ? pinoPretty.prettyFactory({
          colorize: process.stderr.isTTY === true,
          singleLine: true,
          ignore: "pid,hostname,service",
        })
      : undefined;
    const status = this.#status;
    return new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        const text = chunk.toString("utf8");
        for (const line of text.split("\n")) {
          if (!line) continue;
          try {
            const entry = JSON.parse(line) as {
              msg?: string;
              messageId?: string;
              reason?: string;
              receiveCount?: number;
            };
            if (entry.msg === "handler failed; message will be retried") {
              this.#event(entry.messageId, {
                kind: "retried",
                reason: entry.reason ?? "",
                receiveCount: entry.receiveCount ?? 0,
              });
            }
          } catch {
            // Not a JSON line: nothing to read from it.
          }
        }
        if (prettify) status.print(prettify(text), process.stderr);
        done();
      },
    });
  }

  #report(timedOut: boolean): number {
    const out: string[] = [];
    const counts = { delivered: 0, "no output": 0, "dead-lettered": 0, "not settled": 0 };
    let n = 0;
    for (const id of this.#order) {
      const m = this.#messages.get(id) as Tracked;
      const sample = m.sample as Sample;
      n++;
      out.push(`message ${n} (${sample.label}): ${shorten(sample.body)}`);
      // The same thing happening again in a row (a partner refusing each retry) is one line.
      let previous: string | undefined;
      let repeats = 0;
      const flush = () => {
        if (repeats > 0) out[out.length - 1] += ` (${repeats + 1} times)`;
        repeats = 0;
      };
      for (const e of m.events) {
        const lines = describeEvent(e);
        const text = lines.join("\n");
        if (text === previous && e.kind !== "delivered") {
          repeats++;
          continue;
        }
        flush();
        previous = text;
        out.push(...lines);
      }
      flush();
      const deadLettered = m.events.some((e) => e.kind === "dead-lettered");
      const delivered = m.events.some((e) => e.kind === "delivered");
      if (!m.settled) {
        counts["not settled"]++;
        out.push(
          `  not settled after ${this.#options["timeout-sec"]} s${m.events.length ? "" : ": the handler has not finished with it"}`,
        );
      } else if (deadLettered) counts["dead-lettered"]++;
      else if (delivered) counts.delivered++;
      else {
        counts["no output"]++;
        out.push("  no output");
      }
    }
    const parts = Object.entries(counts)
      .filter(([, c]) => c > 0)
      .map(([k, c]) => `${c} ${k}`);
    out.push("", `${n} message${n === 1 ? "" : "s"}: ${parts.join(", ")}`);
    let code = 0;
    if (counts["dead-lettered"] > 0) {
      out.push(
        `exit 1: ${counts["dead-lettered"]} message${counts["dead-lettered"] === 1 ? " was" : "s were"} dead-lettered`,
      );
      code = 1;
    }
    if (timedOut && counts["not settled"] > 0) {
      out.push(
        `exit 1: ${counts["not settled"]} did not settle within --timeout-sec ${this.#options["timeout-sec"]}`,
      );
      code = 1;
    }
    process.stdout.write(`${out.join("\n")}\n`);
    return code;
  }
}

function describeEvent(e: Event): string[] {
  switch (e.kind) {
    case "delivered": {
      const records = `${e.payloads.length} record${e.payloads.length === 1 ? "" : "s"}`;
      return [
        `  delivered → ${e.target} (account ${e.account}, ${records})`,
        ...e.payloads.map((p) => `      ${shorten(JSON.stringify(p) ?? "null")}`),
      ];
    }
    case "delivery-failed":
      return [`  delivery failed, will retry: ${e.target} (account ${e.account}): ${e.reason}`];
    case "retried":
      return [`  retried: ${e.reason}${e.receiveCount ? ` (receive ${e.receiveCount})` : ""}`];
    case "dead-lettered":
      return [`  dead-lettered: ${e.reason}`];
  }
}

function shorten(text: string): string {
  return text.length > PAYLOAD_SHOWN_CHARS ? `${text.slice(0, PAYLOAD_SHOWN_CHARS)}…` : text;
}

/** An HTTP batch as record lines: NDJSON, or a JSON array (format "json"); nothing if neither. */
function batchLines(body: string): string[] {
  if (!body.trimStart().startsWith("[")) return body.split("\n");
  try {
    const records = JSON.parse(body) as unknown;
    return Array.isArray(records) ? records.map((r) => JSON.stringify(r)) : [];
  } catch {
    return [];
  }
}

/** A batch body as NDJSON lines: a string, or bytes (gzip when the encoding says so). */
function bodyLines(body: unknown, encoding: string | undefined): string[] {
  let text: string;
  if (typeof body === "string") text = body;
  else if (body instanceof Uint8Array)
    text = (encoding === "gzip" ? gunzipSync(body) : Buffer.from(body)).toString("utf8");
  else return [];
  return text.split("\n");
}

/** The try queue, with its dead-letter queue and a redrive policy of `attempts` receives. */
async function createQueue(
  sqs: SQSClient,
  name: string,
  dlqName: string,
  attempts: number,
  visibilityTimeoutSec: number,
): Promise<string> {
  const dlq = await sqs.send(new CreateQueueCommand({ QueueName: dlqName }));
  const arn = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ["QueueArn"] }),
  );
  const created = await sqs.send(
    new CreateQueueCommand({
      QueueName: name,
      Attributes: {
        VisibilityTimeout: String(visibilityTimeoutSec),
        RedrivePolicy: JSON.stringify({
          deadLetterTargetArn: arn.Attributes?.QueueArn,
          maxReceiveCount: String(attempts),
        }),
      },
    }),
  );
  return created.QueueUrl as string;
}

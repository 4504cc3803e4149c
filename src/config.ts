import { existsSync, readFileSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import convict from "convict";
import { ConfigError } from "./errors.ts";

/** Where `config/` and the default `handlers/` live: the app root, one level above src/ or dist/. */
export const APP_ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The SQS hard limits the schema checks against. */
const SQS_MAX_RECEIVE_BATCH = 10;
const SQS_MAX_WAIT_SEC = 20;
const SQS_MAX_VISIBILITY_SEC = 43_200;
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
const KEY_FIELDS = ["queue", "account", "yyyy", "MM", "dd", "HH", "mm", "batchId"] as const;

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface DispatchConfig {
  /** How often a dispatcher flushes what it holds, in ms. */
  flushIntervalMs: number;
  /** A batch is flushed as soon as it holds this many records. */
  maxRecords: number;
  /** ...or this many bytes of uncompressed NDJSON. */
  maxBytes: number;
  /** A dispatcher stops itself after this many flush ticks in a row found nothing to send. */
  emptyFlushLimit: number;
  /** Flushes one dispatcher may have in flight at once. */
  maxConcurrentFlushes: number;
  /** First retry delay of a failed flush, in ms; doubles each attempt, with jitter. */
  retryBaseMs: number;
  /** Cap on the retry delay of a failed flush, in ms. */
  retryMaxMs: number;
  /**
   * A batch still failing (or held by an open breaker) after this long is given up on: released to
   * SQS with a backoff delay, or parked in S3 when `onOutage` is "park".
   */
  giveUpAfterMs: number;
  /** Per-partner limits, shared by all of a partner's dispatchers in this process; 0 = unlimited. */
  rateLimit: { requests: number; records: number; intervalMs: number };
  /** After `failures` failed flushes in a row the partner is not called for `cooldownMs`, then probed. */
  breaker: { failures: number; cooldownMs: number };
  /** What happens to a batch given up on: "release" it to SQS, or "park" it in S3 for `replay`. */
  onOutage: "release" | "park";
}

export interface S3DestinationConfig {
  type: "s3";
  /** Bucket name; may contain {account}, for a bucket per partner. */
  bucket: string;
  /** Object key; fields: {queue} {account} {yyyy} {MM} {dd} {HH} {mm} {batchId}. */
  keyTemplate: string;
  gzip: boolean;
  /** "" (bucket default), "AES256" or "aws:kms". */
  serverSideEncryption: "" | "AES256" | "aws:kms";
  kmsKeyId: string;
}

export interface HttpDestinationConfig {
  type: "http";
  /** Endpoint; may contain {account} and {queue}. */
  url: string;
  headers: Record<string, string>;
  /** Name of the environment variable holding the partner's token (never the token itself). */
  authTokenEnv: string;
  /** Sent as `Authorization: <scheme> <token>`. */
  authScheme: string;
  format: "ndjson" | "json";
  timeoutMs: number;
}

export interface SqsDestinationConfig {
  type: "sqs";
  /** Partner queue URL; may contain {account}. */
  queueUrl: string;
}

export type DestinationConfig = S3DestinationConfig | HttpDestinationConfig | SqsDestinationConfig;

/** What one account's entry under `partners` changes, on top of its queue's settings. */
export interface PartnerOverride {
  dispatch: Partial<DispatchConfig>;
  destination: Partial<FlatDestination> | undefined;
}

export interface PartnersConfig {
  overrides: Map<string, PartnerOverride>;
  /** Where parked batches go; bucket "" = the default destination bucket. */
  park: { bucket: string; prefix: string };
}

/** Every destination field in one object, as the schema holds it; `toDestination` narrows it. */
export type FlatDestination = Omit<S3DestinationConfig, "type"> &
  Omit<HttpDestinationConfig, "type"> &
  Omit<SqsDestinationConfig, "type"> & { type: DestinationConfig["type"] };

export interface QueueConfig {
  /** The queue's name, from `queue` (a name, or the last segment of a URL). */
  name: string;
  /** `queue` exactly as configured: a name resolved with GetQueueUrl, or a URL used as is. */
  queue: string;
  /** Absolute path of the handler module. */
  handlerPath: string;
  concurrency: number;
  threads: number;
  prefetch: number;
  maxUnacked: number;
  visibilityTimeoutSec: number;
  waitTimeSec: number;
  receiveBatchSize: number;
  maxParallelReceives: number;
  handlerTimeoutMs: number;
  /** Backoff of a failed handler: visibility base × 2^(receives−1), capped. */
  retryBaseMs: number;
  retryMaxMs: number;
  /** Name or URL of the dead-letter queue; "" = the redrive policy's target, if any. */
  deadLetterQueue: string;
  /** Largest fraction of maxUnacked one partner's undelivered outputs may take; past it they are shed. */
  partnerShare: number;
  dispatch: DispatchConfig;
  destination: FlatDestination;
}

export interface OpsConfig {
  enabled: boolean;
  host: string;
  port: number;
  /** Per-partner series for the N partners holding the most, plus these; the rest summed as "_other". */
  partnerMetricsTop: number;
  partnerMetricsAccounts: string[];
}

export interface Config {
  env: string;
  logLevel: LogLevel;
  aws: { region: string; sqsEndpoint: string | undefined; s3Endpoint: string | undefined };
  handlersDir: string;
  shutdownDeadlineMs: number;
  /** Top-level dispatch settings: the partner defaults that per-partner limits start from. */
  dispatch: DispatchConfig;
  ops: OpsConfig;
  partners: PartnersConfig;
  queues: QueueConfig[];
}

// Formats shared by the top-level schema and the per-queue one. Each message says what is valid.
// Strings (from env vars) become numbers or booleans only when they are exactly that, so "lots" or
// "25s" is reported as written instead of turning into NaN or 25.
const wholeNumber = (value: unknown) =>
  typeof value === "string" && /^\s*-?\d+\s*$/.test(value) ? Number(value) : value;

/** Registers (once) and names a whole-number format for [min, max]. */
function intFormat(min: number, max: number, what: string): string {
  const name = `int ${min}..${max} ${what}`;
  convict.addFormat({
    name,
    coerce: wholeNumber,
    validate(value: unknown) {
      if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
        throw new Error(
          `must be a whole number from ${min} to ${max}${what ? ` (${what})` : ""}; got ${JSON.stringify(value)}`,
        );
      }
    },
  });
  return name;
}

const POSITIVE_INT = intFormat(1, Number.MAX_SAFE_INTEGER, "");

convict.addFormats({
  "strict-boolean": {
    coerce: (value: unknown) => (value === "true" ? true : value === "false" ? false : value),
    validate(value: unknown) {
      if (typeof value !== "boolean") throw new Error(`must be true or false; got ${JSON.stringify(value)}`);
    },
  },
  "string-map": {
    validate(value: unknown) {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        throw new Error(`must be an object of string values; got ${JSON.stringify(value)}`);
      }
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== "string") throw new Error(`must map to strings; ${k} is ${JSON.stringify(v)}`);
      }
    },
  },
  fraction: {
    coerce: (value: unknown) =>
      typeof value === "string" && value.trim() !== "" && !Number.isNaN(Number(value))
        ? Number(value)
        : value,
    validate(value: unknown) {
      if (typeof value !== "number" || !(value > 0 && value <= 1)) {
        throw new Error(`must be a number above 0 and at most 1; got ${JSON.stringify(value)}`);
      }
    },
  },
  "required-string": {
    validate(value: unknown) {
      if (typeof value !== "string" || value.trim() === "") {
        throw new Error(`is required (a non-empty string); got ${JSON.stringify(value)}`);
      }
    },
  },
  "key-template": {
    validate(value: unknown) {
      if (typeof value !== "string") throw new Error(`must be a string; got ${JSON.stringify(value)}`);
      for (const [, field] of value.matchAll(/\{([^}]*)\}/g)) {
        if (!KEY_FIELDS.includes(field as (typeof KEY_FIELDS)[number])) {
          throw new Error(`has unknown field {${field}}; valid fields: {${KEY_FIELDS.join("} {")}}`);
        }
      }
      for (const needed of ["account", "batchId"]) {
        if (!value.includes(`{${needed}}`)) {
          throw new Error(
            `must contain {${needed}} (${needed === "batchId" ? "else batches overwrite each other" : "else partners share objects"}); got ${JSON.stringify(value)}`,
          );
        }
      }
    },
  },
});

const dispatchSchema = {
  flushIntervalMs: { doc: "Flush period of each dispatcher, ms.", format: POSITIVE_INT, default: 1000 },
  maxRecords: { doc: "Records that trigger an immediate flush.", format: POSITIVE_INT, default: 1000 },
  maxBytes: {
    doc: "Uncompressed bytes that trigger an immediate flush.",
    format: POSITIVE_INT,
    default: 5_242_880,
  },
  emptyFlushLimit: {
    doc: "Empty flush ticks in a row before a dispatcher stops.",
    format: POSITIVE_INT,
    default: 5,
  },
  maxConcurrentFlushes: { doc: "Flushes in flight per dispatcher.", format: POSITIVE_INT, default: 2 },
  retryBaseMs: { doc: "First retry delay of a failed flush, ms.", format: POSITIVE_INT, default: 500 },
  retryMaxMs: { doc: "Largest retry delay of a failed flush, ms.", format: POSITIVE_INT, default: 30_000 },
  giveUpAfterMs: {
    doc: "A batch failing this long is released to SQS, ms.",
    format: POSITIVE_INT,
    default: 300_000,
  },
  rateLimit: {
    requests: {
      doc: "Flushes per interval; 0 = unlimited.",
      format: intFormat(0, 1_000_000, ""),
      default: 0,
    },
    records: {
      doc: "Records per interval; 0 = unlimited.",
      format: intFormat(0, 100_000_000, ""),
      default: 0,
    },
    intervalMs: { doc: "Rate limit window, ms.", format: POSITIVE_INT, default: 1000 },
  },
  breaker: {
    failures: { doc: "Failed flushes in a row that open the breaker.", format: POSITIVE_INT, default: 5 },
    cooldownMs: {
      doc: "How long an open breaker waits before a probe, ms.",
      format: POSITIVE_INT,
      default: 30_000,
    },
  },
  onOutage: { doc: "Batches given up on: release or park.", format: ["release", "park"], default: "release" },
};

const destinationSchema = {
  type: { doc: "Destination kind.", format: ["s3", "http", "sqs"], default: "s3" },
  bucket: { doc: "S3 bucket the batches go to.", format: String, default: "", env: "OCTORELAY_S3_BUCKET" },
  keyTemplate: {
    doc: "Object key template.",
    format: "key-template",
    default: "{queue}/{account}/{yyyy}/{MM}/{dd}/{HH}/{batchId}.ndjson.gz",
  },
  gzip: { doc: "Gzip each object.", format: "strict-boolean", default: true },
  serverSideEncryption: { doc: "S3 SSE.", format: ["", "AES256", "aws:kms"], default: "" },
  kmsKeyId: { doc: "KMS key for aws:kms.", format: String, default: "" },
  url: { doc: "HTTP endpoint template.", format: String, default: "" },
  headers: { doc: "Extra HTTP headers.", format: "string-map", default: {} as Record<string, string> },
  authTokenEnv: { doc: "Env var holding the partner token.", format: String, default: "" },
  authScheme: { doc: "Authorization scheme.", format: String, default: "Bearer" },
  format: { doc: "HTTP body format.", format: ["ndjson", "json"], default: "ndjson" },
  timeoutMs: { doc: "HTTP request timeout, ms.", format: POSITIVE_INT, default: 10_000 },
  queueUrl: { doc: "Partner SQS queue URL template.", format: String, default: "" },
};

const rootSchema = {
  env: { doc: "Picks config/<env>.json.", format: String, default: "development", env: "NODE_ENV" },
  log: {
    level: {
      doc: "pino level.",
      format: LOG_LEVELS as unknown as string[],
      default: "info",
      env: "OCTORELAY_LOG_LEVEL",
    },
  },
  aws: {
    region: { doc: "AWS region.", format: "required-string", default: "us-east-1", env: "AWS_REGION" },
    endpoint: {
      doc: "Endpoint for every AWS service (LocalStack, fauxqs).",
      format: String,
      default: "",
      env: "AWS_ENDPOINT_URL",
    },
    sqsEndpoint: {
      doc: "SQS endpoint, over aws.endpoint.",
      format: String,
      default: "",
      env: "AWS_ENDPOINT_URL_SQS",
    },
    s3Endpoint: {
      doc: "S3 endpoint, over aws.endpoint.",
      format: String,
      default: "",
      env: "AWS_ENDPOINT_URL_S3",
    },
  },
  handlersDir: {
    doc: "Where handler modules are looked up; relative to the app root.",
    format: "required-string",
    default: "handlers",
    env: "OCTORELAY_HANDLERS_DIR",
  },
  shutdown: {
    deadlineMs: {
      doc: "Drain budget on SIGTERM before the rest is released, ms.",
      format: POSITIVE_INT,
      default: 25_000,
      env: "OCTORELAY_SHUTDOWN_DEADLINE_MS",
    },
  },
  dispatch: dispatchSchema,
  destination: destinationSchema,
  ops: {
    enabled: {
      doc: "Serve /metrics, /healthz, /readyz, /partners.",
      format: "strict-boolean",
      default: true,
      env: "OCTORELAY_OPS_ENABLED",
    },
    host: {
      doc: "Address the ops server listens on.",
      format: String,
      default: "0.0.0.0",
      env: "OCTORELAY_METRICS_HOST",
    },
    port: {
      doc: "Port of the ops server; 0 = any free port.",
      format: intFormat(0, 65_535, "a TCP port"),
      default: 9464,
      env: "OCTORELAY_METRICS_PORT",
    },
    partnerMetricsTop: {
      doc: "Partners with their own metric labels: the N holding the most; the rest are summed as _other.",
      format: intFormat(0, 1000, "partners"),
      default: 20,
    },
    partnerMetricsAccounts: {
      doc: "Partners that always get their own labels.",
      format: Array,
      default: [] as string[],
    },
  },
  partners: {
    accounts: {
      doc: "Per-account overrides: { account: { destination?, flushIntervalMs?, rateLimit?, ... } }.",
      format: Object,
      default: {} as Record<string, unknown>,
    },
    file: {
      doc: "JSON file of more per-account overrides, for thousands of accounts.",
      format: String,
      default: "",
      env: "OCTORELAY_PARTNERS_FILE",
    },
    park: {
      bucket: { doc: 'Bucket for parked batches; "" = destination.bucket.', format: String, default: "" },
      prefix: { doc: "Key prefix of parked batches.", format: String, default: "parked/" },
    },
  },
  queues: { doc: "The queues to drain; see README.", format: Array, default: [] as unknown[] },
};

/** Per-queue schema; its dispatch and destination defaults are the validated top-level values. */
function queueSchema(dispatch: DispatchConfig, destination: FlatDestination) {
  return {
    queue: { doc: "Queue name or URL.", format: "required-string", default: null as string | null },
    handler: {
      doc: "Handler module under handlersDir.",
      format: "required-string",
      default: null as string | null,
    },
    concurrency: {
      doc: "Handlers running at once.",
      format: intFormat(1, 10_000, "handlers at once"),
      default: 8,
    },
    threads: {
      doc: "Worker threads; 0 = min(cores, concurrency).",
      format: intFormat(0, 256, "worker threads"),
      default: 0,
    },
    prefetch: {
      doc: "Messages received ahead of a free handler.",
      format: intFormat(0, 10_000, "messages"),
      default: 10,
    },
    maxUnacked: { doc: "Received but not yet deleted, at most.", format: POSITIVE_INT, default: 2000 },
    visibilityTimeoutSec: {
      doc: "Visibility timeout asked on receive and kept extended.",
      format: intFormat(1, SQS_MAX_VISIBILITY_SEC, "SQS allows up to 12 hours"),
      default: 60,
    },
    waitTimeSec: {
      doc: "Long-poll wait.",
      format: intFormat(0, SQS_MAX_WAIT_SEC, "SQS allows at most 20 s"),
      default: 20,
    },
    receiveBatchSize: {
      doc: "Most messages per ReceiveMessage.",
      format: intFormat(1, SQS_MAX_RECEIVE_BATCH, "SQS returns at most 10 per receive"),
      default: SQS_MAX_RECEIVE_BATCH,
    },
    maxParallelReceives: {
      doc: "Long polls in flight at once.",
      format: intFormat(1, 64, "parallel polls"),
      default: 8,
    },
    handlerTimeoutMs: {
      doc: "A handler running longer is aborted and retried.",
      format: POSITIVE_INT,
      default: 30_000,
    },
    retryBaseMs: { doc: "First retry delay of a failed handler, ms.", format: POSITIVE_INT, default: 2000 },
    retryMaxMs: {
      doc: "Largest retry delay of a failed handler, ms.",
      format: POSITIVE_INT,
      default: 900_000,
    },
    deadLetterQueue: {
      doc: "Queue for poison messages; defaults to the queue's redrive target.",
      format: String,
      default: "",
    },
    partnerShare: { doc: "Most of maxUnacked one partner may hold.", format: "fraction", default: 0.25 },
    dispatch: withDefaults(dispatchSchema, dispatch),
    destination: withDefaults(destinationSchema, destination),
  };
}

/** A partner's entry: dispatch and destination fields, defaulting to the top-level values. */
function partnerSchema(dispatch: DispatchConfig, destination: FlatDestination) {
  return {
    ...withDefaults(dispatchSchema, dispatch),
    destination: withDefaults(destinationSchema, destination),
  };
}

/** A copy of a schema whose defaults are `values` (recursively), without env bindings. */
function withDefaults<S extends object>(schema: S, values: object): S {
  return Object.fromEntries(
    Object.entries(schema).map(([key, item]) => {
      const value = (values as Record<string, unknown>)[key];
      if (typeof item === "object" && item !== null && !("default" in item)) {
        return [key, withDefaults(item, (value ?? {}) as object)];
      }
      const { env: _env, ...rest } = item as { env?: string };
      return [key, { ...rest, default: value }];
    }),
  ) as S;
}

export interface LoadOptions {
  /** Environment to read (defaults to process.env). */
  env?: NodeJS.ProcessEnv;
  /** Directory holding default.json and <env>.json (defaults to <app root>/config). */
  configDir?: string;
  /** Extra files applied last, before environment variables (defaults to $OCTORELAY_CONFIG). */
  files?: string[];
  /** Values applied over the files, for embedders and tests. */
  overrides?: Record<string, unknown>;
}

/** Loads and validates the configuration; throws one ConfigError listing every problem found. */
export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env;
  const configDir = options.configDir ?? resolve(APP_ROOT, "config");
  const problems: string[] = [];

  const root = convict(rootSchema, { env, args: [] });
  const files = [resolve(configDir, "default.json"), resolve(configDir, `${root.get("env")}.json`)];
  const extra = options.files ?? (env.OCTORELAY_CONFIG ? [env.OCTORELAY_CONFIG] : []);
  for (const file of extra) {
    if (!existsSync(file)) problems.push(`OCTORELAY_CONFIG: file ${JSON.stringify(file)} does not exist`);
  }
  try {
    root.loadFile([...files.filter((f) => existsSync(f)), ...extra.filter((f) => existsSync(f))]);
  } catch (err) {
    throw new ConfigError([`cannot read config: ${(err as Error).message}`]);
  }
  if (options.overrides) root.load(options.overrides);
  // Account names may hold dots ("globex.io"), which convict would read as key paths: take the
  // entries out before validating, and validate each one on its own below.
  const partnerAccounts =
    (root.getProperties() as { partners?: { accounts?: unknown } }).partners?.accounts ?? {};
  root.set("partners.accounts", {});
  problems.push(...convictProblems(root, ""));
  // With the top level invalid, queue entries are still checked, against the schema's own defaults.
  const rootValid = problems.length === 0;
  const dispatch = (rootValid ? root.get("dispatch") : defaultsOf(dispatchSchema)) as DispatchConfig;
  const destination = (
    rootValid
      ? root.get("destination")
      : { ...defaultsOf(destinationSchema), bucket: root.get("destination.bucket") }
  ) as FlatDestination;
  const handlersDir = resolve(APP_ROOT, root.get("handlersDir"));
  const rawQueues = root.get("queues") as unknown[];
  if (rawQueues.length === 0) {
    problems.push("queues: none declared; add at least one { queue, handler } entry (see README)");
  }

  const queues: QueueConfig[] = [];
  /** Every entry that names a queue, valid or not, so duplicates are caught across all of them. */
  const named: { name: string; deadLetterQueue: unknown; at: number }[] = [];
  rawQueues.forEach((raw, i) => {
    const at = `queues[${i}]`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      problems.push(
        `${at}: must be an object like { "queue": "orders", "handler": "orders.ts" }; got ${JSON.stringify(raw)}`,
      );
      return;
    }
    const entry = convict(queueSchema(dispatch, destination), { env: {}, args: [] });
    entry.load(raw);
    const before = problems.length;
    problems.push(...convictProblems(entry, `${at}.`));
    const q = entry.getProperties();
    if (typeof q.queue === "string" && q.queue !== "") {
      named.push({ name: queueNameOf(q.queue), deadLetterQueue: q.deadLetterQueue, at: i });
    }
    const handler = typeof q.handler === "string" && q.handler !== "" ? q.handler : undefined;
    const handlerPath = handler ? (isAbsolute(handler) ? handler : resolve(handlersDir, handler)) : "";
    if (handler && (!existsSync(handlerPath) || !statSync(handlerPath).isFile())) {
      problems.push(
        `${at}.handler: file not found: ${JSON.stringify(handler)} (looked at ${handlerPath}); put the module in ${handlersDir} or fix the name`,
      );
    }
    if (handler && !/\.(ts|mts|js|mjs)$/.test(handlerPath)) {
      problems.push(`${at}.handler: must be a .ts, .mts, .js or .mjs module; got ${JSON.stringify(handler)}`);
    }
    problems.push(...destinationProblems(q.destination as unknown as FlatDestination, `${at}.destination`));
    if (problems.length > before) return;
    const queue = q.queue as string;
    const concurrency = q.concurrency;
    queues.push({
      name: queueNameOf(queue),
      queue,
      handlerPath,
      concurrency,
      threads: q.threads === 0 ? Math.max(1, Math.min(availableParallelism(), concurrency)) : q.threads,
      prefetch: q.prefetch,
      maxUnacked: q.maxUnacked,
      visibilityTimeoutSec: q.visibilityTimeoutSec,
      waitTimeSec: q.waitTimeSec,
      receiveBatchSize: q.receiveBatchSize,
      maxParallelReceives: q.maxParallelReceives,
      handlerTimeoutMs: q.handlerTimeoutMs,
      retryBaseMs: q.retryBaseMs,
      retryMaxMs: Math.min(q.retryMaxMs, SQS_MAX_VISIBILITY_SEC * 1000),
      deadLetterQueue: q.deadLetterQueue,
      partnerShare: q.partnerShare,
      dispatch: q.dispatch as unknown as DispatchConfig,
      destination: q.destination as unknown as FlatDestination,
    });
  });

  const seen = new Map<string, number>();
  for (const { name, deadLetterQueue, at } of named) {
    const first = seen.get(name);
    if (first !== undefined) {
      problems.push(
        `queues[${at}].queue: duplicate queue name ${JSON.stringify(name)} (also queues[${first}]); declare each queue once`,
      );
    } else {
      seen.set(name, at);
    }
    if (typeof deadLetterQueue === "string" && deadLetterQueue && queueNameOf(deadLetterQueue) === name) {
      problems.push(
        `queues[${at}].deadLetterQueue: must differ from the queue itself; got ${JSON.stringify(deadLetterQueue)}`,
      );
    }
  }
  const partners = loadPartners(
    {
      accounts: partnerAccounts as Record<string, unknown>,
      file: root.get("partners.file"),
      park: root.get("partners.park"),
    },
    queues.map((q) => q.dispatch.onOutage),
    dispatch,
    destination,
    problems,
  );
  if (problems.length > 0) throw new ConfigError(problems);

  const endpoint = root.get("aws.endpoint") || undefined;
  return {
    env: root.get("env"),
    logLevel: root.get("log.level") as LogLevel,
    aws: {
      region: root.get("aws.region"),
      sqsEndpoint: root.get("aws.sqsEndpoint") || endpoint,
      s3Endpoint: root.get("aws.s3Endpoint") || endpoint,
    },
    handlersDir,
    shutdownDeadlineMs: root.get("shutdown.deadlineMs"),
    dispatch,
    ops: root.get("ops") as OpsConfig,
    partners,
    queues,
  };
}

/**
 * Per-account overrides from `partners.accounts` and the optional partners file. Each entry is
 * validated like the top level; only the keys it sets are kept, to apply over its queue's settings.
 */
function loadPartners(
  section: { accounts: Record<string, unknown>; file: string; park: PartnersConfig["park"] },
  queueOutages: DispatchConfig["onOutage"][],
  dispatch: DispatchConfig,
  destination: FlatDestination,
  problems: string[],
): PartnersConfig {
  const entries: [string, unknown, string][] = Object.entries(section.accounts).map(([account, raw]) => [
    account,
    raw,
    `partners.accounts.${account}`,
  ]);
  const file = section.file;
  if (file) {
    try {
      const fromFile = JSON.parse(readFileSync(file, "utf8")) as unknown;
      if (typeof fromFile !== "object" || fromFile === null || Array.isArray(fromFile)) {
        problems.push(`partners.file: ${file} must hold an object { "account": { ... } }`);
      } else {
        for (const [account, raw] of Object.entries(fromFile))
          entries.push([account, raw, `partners.file[${account}]`]);
      }
    } catch (err) {
      problems.push(`partners.file: cannot read ${JSON.stringify(file)}: ${(err as Error).message}`);
    }
  }
  const overrides = new Map<string, PartnerOverride>();
  for (const [account, raw, at] of entries) {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      problems.push(
        `${at}: must be an object of overrides like { "rateLimit": { "requests": 10 } }; got ${JSON.stringify(raw)}`,
      );
      continue;
    }
    const entry = convict(partnerSchema(dispatch, destination), { env: {}, args: [] });
    entry.load(raw);
    const found = convictProblems(entry, `${at}.`);
    const values = entry.getProperties() as unknown as DispatchConfig & { destination: FlatDestination };
    const rawDestination = (raw as { destination?: object }).destination;
    if (rawDestination) found.push(...destinationProblems(values.destination, `${at}.destination`));
    problems.push(...found);
    if (found.length > 0) continue;
    const { destination: _d, ...rawDispatch } = raw as Record<string, unknown>;
    overrides.set(account, {
      dispatch: pickPresent(values, rawDispatch) as Partial<DispatchConfig>,
      destination: rawDestination
        ? (pickPresent(values.destination, rawDestination) as Partial<FlatDestination>)
        : undefined,
    });
  }
  const park = section.park;
  const parks = [
    dispatch.onOutage,
    ...queueOutages,
    ...[...overrides.values()].map((o) => o.dispatch.onOutage),
  ].includes("park");
  if (
    parks &&
    !park.bucket &&
    (destination.type !== "s3" || !destination.bucket || destination.bucket.includes("{"))
  ) {
    problems.push(
      'partners.park.bucket: is required when a profile parks (onOutage "park") and destination.bucket is not one fixed S3 bucket; got ""',
    );
  }
  return { overrides, park: { bucket: park.bucket || destination.bucket, prefix: park.prefix } };
}

/** The values of `validated` at the keys (recursively) that `raw` sets. */
function pickPresent(validated: object, raw: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    const v = (validated as Record<string, unknown>)[key];
    out[key] =
      typeof value === "object" && value !== null && !Array.isArray(value) && key !== "headers"
        ? pickPresent(v as object, value)
        : v;
  }
  return out;
}

const TEMPLATE_FIELDS = ["account", "queue"];

/** Per-type checks a flat destination needs beyond its schema. */
function destinationProblems(d: FlatDestination, at: string): string[] {
  const problems: string[] = [];
  const templated = (key: "bucket" | "url" | "queueUrl", value: string, fix: string) => {
    if (!value) problems.push(`${at}.${key}: is required for a ${d.type} destination; got ""; ${fix}`);
    for (const [, field] of value.matchAll(/\{([^}]*)\}/g)) {
      if (!TEMPLATE_FIELDS.includes(field as string)) {
        problems.push(
          `${at}.${key}: unknown field {${field}} in ${JSON.stringify(value)}; valid: {account} {queue}`,
        );
      }
    }
  };
  if (d.type === "s3") {
    templated("bucket", d.bucket, "set destination.bucket in config or OCTORELAY_S3_BUCKET");
    if (d.serverSideEncryption !== "aws:kms" && d.kmsKeyId) {
      problems.push(
        `${at}.kmsKeyId: only used with serverSideEncryption "aws:kms"; got ${JSON.stringify(d.kmsKeyId)}`,
      );
    }
  } else if (d.type === "http") {
    templated("url", d.url, "set the partner's endpoint");
    if (d.url && !/^https?:\/\//.test(d.url))
      problems.push(`${at}.url: must be an http(s) URL; got ${JSON.stringify(d.url)}`);
  } else {
    templated("queueUrl", d.queueUrl, "set the partner's queue URL");
  }
  return problems;
}

/** Narrows a flat destination to the fields its type uses. */
export function toDestination(d: FlatDestination): DestinationConfig {
  switch (d.type) {
    case "s3":
      return {
        type: "s3",
        bucket: d.bucket,
        keyTemplate: d.keyTemplate,
        gzip: d.gzip,
        serverSideEncryption: d.serverSideEncryption,
        kmsKeyId: d.kmsKeyId,
      };
    case "http":
      return {
        type: "http",
        url: d.url,
        headers: d.headers,
        authTokenEnv: d.authTokenEnv,
        authScheme: d.authScheme,
        format: d.format,
        timeoutMs: d.timeoutMs,
      };
    case "sqs":
      return { type: "sqs", queueUrl: d.queueUrl };
  }
}

function defaultsOf(schema: object): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(schema).map(([key, item]) => [
      key,
      typeof item === "object" && item !== null && !("default" in item)
        ? defaultsOf(item)
        : (item as { default: unknown }).default,
    ]),
  );
}

/** A queue's name from a name or a queue URL (its last path segment). */
export function queueNameOf(queue: string): string {
  return /^https?:\/\//.test(queue)
    ? (new URL(queue).pathname.split("/").filter(Boolean).pop() ?? queue)
    : queue;
}

/** Convict reports all problems in one newline-joined message; split it and prefix the key path. */
function convictProblems(
  instance: { validate(o: { allowed: "strict" }): unknown },
  prefix: string,
): string[] {
  try {
    instance.validate({ allowed: "strict" });
    return [];
  } catch (err) {
    return (err as Error).message
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map((line) => {
        const undeclared = /^configuration param '(.+)' not declared in the schema$/.exec(line);
        if (undeclared) {
          return `${prefix}${undeclared[1]}: unknown key; remove it or fix its spelling (see the README's configuration table)`;
        }
        return `${prefix}${line}`;
      });
  }
}

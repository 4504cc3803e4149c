import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { isAbsolute, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import convict from "convict";
import JSON5 from "json5";
import { ConfigError } from "./errors.ts";

/** Where `config/` and the default `handlers/` live: the app root, one level above src/ or dist/. */
export const APP_ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The SQS hard limits the schema checks against. */
const SQS_MAX_RECEIVE_BATCH = 10;
const SQS_MAX_WAIT_SEC = 20;
const SQS_MAX_VISIBILITY_SEC = 43_200;
/** The largest SQS message: a queue's byte budget must hold at least one. */
const SQS_MAX_MESSAGE_BYTES = 1_048_576;
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
  /** Flushes a partner may have in flight at once, across all its dispatchers (a partner setting). */
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
  /** Per-partner limits, shared by all of a partner's dispatchers; 0 = unlimited (a partner setting). */
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
  /** Bytes of message bodies received and not yet deleted, at most. */
  maxUnackedBytes: number;
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
  /** The queue's dispatch settings; the partner settings (rateLimit, breaker, maxConcurrentFlushes) are the top-level ones. */
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
  /** Bearer token the ops actions require; "" = actions off. A secret: never logged or shown. */
  token: string;
  /** The read endpoints require the token too. */
  requireTokenForRead: boolean;
}

export interface ClusterConfig {
  /** redis:// or rediss:// URL of the store shared by replicas; "" = in-memory limits, one process. */
  redisUrl: string;
  /** Prefix of every key octorelay writes in Redis. */
  keyPrefix: string;
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
  cluster: ClusterConfig;
  partners: PartnersConfig;
  queues: QueueConfig[];
}

// ---------------------------------------------------------------------------------------------
// Formats. Each is registered with convict (for the top level) and kept here (for the per-queue
// and per-partner entries, checked without a convict instance each). Each message says what is
// valid. Strings (from env vars) become numbers or booleans only when they are exactly that, so
// "lots" or "25s" is reported as written instead of turning into NaN or 25.

interface Format {
  validate(value: unknown): void;
  coerce?: (value: unknown) => unknown;
}

const FORMATS = new Map<string, Format>();

function addFormat(name: string, format: Format): string {
  if (!FORMATS.has(name)) {
    FORMATS.set(name, format);
    convict.addFormat({ name, ...format });
  }
  return name;
}

const wholeNumber = (value: unknown) =>
  typeof value === "string" && /^\s*-?\d+\s*$/.test(value) ? Number(value) : value;

/** Registers (once) and names a whole-number format for [min, max]. */
function intFormat(min: number, max: number, what: string): string {
  return addFormat(`int ${min}..${max} ${what}`, {
    coerce: wholeNumber,
    validate(value: unknown) {
      if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
        throw new Error(
          `must be a whole number from ${min} to ${max}${what ? ` (${what})` : ""}; got ${JSON.stringify(value)}`,
        );
      }
    },
  });
}

/** What a value is, for messages that must not (or need not) quote it. */
function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  if (typeof value === "string") return "a string";
  if (typeof value === "number") return "a number";
  return typeof value;
}

/** `kindOf`, quoting scalars: `an object`, `a string "orders"`. */
const described = (value: unknown) =>
  typeof value === "object" || value === undefined
    ? kindOf(value)
    : `${kindOf(value)} ${JSON.stringify(value)}`;

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * A URL as messages may show it: any password (everything between "//" and the last "@", but a
 * user name before ":") and every query value replaced by ***. String work only: never throws, and
 * over-redacts rather than under-redacts a malformed URL.
 */
export function withoutSecrets(url: string): string {
  let shown = url;
  const at = shown.lastIndexOf("@");
  if (at >= 0) {
    const slashes = shown.indexOf("//");
    const start = slashes >= 0 && slashes < at ? slashes + 2 : 0;
    const userinfo = shown.slice(start, at);
    const colon = userinfo.indexOf(":");
    shown = `${shown.slice(0, start)}${colon >= 0 ? `${userinfo.slice(0, colon)}:***` : "***"}${shown.slice(at)}`;
  }
  const query = shown.search(/[?#]/);
  if (query < 0) return shown;
  return shown.slice(0, query) + shown.slice(query).replace(/=[^&#]+/g, "=***");
}

const POSITIVE_INT = intFormat(1, Number.MAX_SAFE_INTEGER, "");

const STRICT_BOOLEAN = addFormat("strict-boolean", {
  coerce: (value: unknown) => (value === "true" ? true : value === "false" ? false : value),
  validate(value: unknown) {
    if (typeof value !== "boolean") throw new Error(`must be true or false; got ${JSON.stringify(value)}`);
  },
});

addFormat("string-map", {
  validate(value: unknown) {
    if (!isPlainObject(value)) {
      throw new Error(`must be an object of string values; got ${JSON.stringify(value)}`);
    }
    for (const [k, v] of Object.entries(value)) {
      if (typeof v !== "string") throw new Error(`must map to strings; ${k} is ${JSON.stringify(v)}`);
    }
  },
});

addFormat("string-list", {
  validate(value: unknown) {
    if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
      throw new Error(`must be an array of strings; got ${JSON.stringify(value)}`);
    }
  },
});

addFormat("queue-list", {
  validate(value: unknown) {
    if (!Array.isArray(value)) throw new Error(queueListMessage(value));
  },
});

function queueListMessage(value: unknown): string {
  return `must be an array of { "queue": ..., "handler": ... } entries; got ${kindOf(value)}`;
}

addFormat("fraction", {
  coerce: (value: unknown) =>
    typeof value === "string" && value.trim() !== "" && !Number.isNaN(Number(value)) ? Number(value) : value,
  validate(value: unknown) {
    if (typeof value !== "number" || !(value > 0 && value <= 1)) {
      throw new Error(`must be a number above 0 and at most 1; got ${JSON.stringify(value)}`);
    }
  },
});

const REQUIRED_STRING = addFormat("required-string", {
  validate(value: unknown) {
    if (typeof value !== "string" || value.trim() === "") {
      throw new Error(`is required (a non-empty string); got ${JSON.stringify(value)}`);
    }
  },
});

addFormat("key-template", {
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
});

addFormat("unacked-bytes", {
  coerce: wholeNumber,
  validate(value: unknown) {
    if (!Number.isInteger(value) || (value as number) < SQS_MAX_MESSAGE_BYTES) {
      throw new Error(
        `must be a whole number of bytes, at least ${SQS_MAX_MESSAGE_BYTES} (1 MiB: one SQS message can be that large); got ${JSON.stringify(value)}`,
      );
    }
  },
});

// Secrets: the messages name what is wrong, never the value (convict omits it too: `sensitive`).
addFormat("redis-url", {
  validate(value: unknown) {
    if (typeof value !== "string") throw new Error(`must be a string; got ${kindOf(value)}`);
    if (value === "") return;
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== "redis:" && url.protocol !== "rediss:") || url.hostname === "") {
      throw new Error(
        `must be a redis://host:port or rediss://host:port URL, or "" for in-memory limits in one process; got ${JSON.stringify(withoutSecrets(value))}`,
      );
    }
  },
});

addFormat("ops-token", {
  validate(value: unknown) {
    if (typeof value !== "string") throw new Error(`must be a string; got ${kindOf(value)}`);
    if (value !== value.trim()) {
      throw new Error(
        "has leading or trailing whitespace (a newline at the end of the secret file?); strip it: clients never send it",
      );
    }
  },
});

addFormat("key-prefix", {
  validate(value: unknown) {
    if (typeof value !== "string" || !/^[^\s{}]+$/.test(value)) {
      throw new Error(
        `must be a non-empty string without spaces or braces (braces are Redis Cluster hash tags); got ${JSON.stringify(value)}`,
      );
    }
  },
});

/**
 * Parses JSON or JSON5. Plain JSON goes through JSON.parse (a partners file can be megabytes);
 * anything else through JSON5, whose errors carry a line and a column: `file:3:5: invalid character '/'`.
 */
function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    try {
      return JSON5.parse(text);
    } catch (err) {
      const e = err as SyntaxError & { lineNumber?: number; columnNumber?: number };
      const reason = e.message.replace(/^JSON5: /, "").replace(/ at \d+:\d+$/, "");
      throw new Error(
        e.lineNumber ? `${file}:${e.lineNumber}:${e.columnNumber}: ${reason}` : `${file}: ${reason}`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Schemas.

/** The settings of the partner (one account), shared by all its dispatchers across queues and replicas. */
const PARTNER_KEYS = ["rateLimit", "breaker", "maxConcurrentFlushes"] as const;

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
  maxConcurrentFlushes: {
    doc: "Flushes in flight per partner, across its dispatchers; a partner setting (not per queue).",
    format: POSITIVE_INT,
    default: 2,
  },
  retryBaseMs: { doc: "First retry delay of a failed flush, ms.", format: POSITIVE_INT, default: 500 },
  retryMaxMs: { doc: "Largest retry delay of a failed flush, ms.", format: POSITIVE_INT, default: 30_000 },
  giveUpAfterMs: {
    doc: "A batch failing this long is released to SQS, ms.",
    format: POSITIVE_INT,
    default: 300_000,
  },
  rateLimit: {
    requests: {
      doc: "Flushes per interval; 0 = unlimited. A partner setting (not per queue).",
      format: intFormat(0, 1_000_000, ""),
      default: 0,
    },
    records: {
      doc: "Records per interval; 0 = unlimited. A partner setting (not per queue).",
      format: intFormat(0, 100_000_000, ""),
      default: 0,
    },
    intervalMs: { doc: "Rate limit window, ms.", format: POSITIVE_INT, default: 1000 },
  },
  breaker: {
    failures: {
      doc: "Failed flushes in a row that open the breaker. A partner setting (not per queue).",
      format: POSITIVE_INT,
      default: 5,
    },
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
  bucket: {
    doc: 'S3 bucket the batches go to; no default: "" until configured.',
    format: String,
    default: "",
    env: "OCTORELAY_S3_BUCKET",
  },
  keyTemplate: {
    doc: "Object key template.",
    format: "key-template",
    default: "{queue}/{account}/{yyyy}/{MM}/{dd}/{HH}/{batchId}.ndjson.gz",
  },
  gzip: { doc: "Gzip each object.", format: STRICT_BOOLEAN, default: true },
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

/** The destination fields each type reads; any other field set in a block of that type is refused. */
const DESTINATION_FIELDS: Record<DestinationConfig["type"], readonly string[]> = {
  s3: ["bucket", "keyTemplate", "gzip", "serverSideEncryption", "kmsKeyId"],
  http: ["url", "headers", "authTokenEnv", "authScheme", "format", "timeoutMs"],
  sqs: ["queueUrl"],
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
    region: { doc: "AWS region.", format: REQUIRED_STRING, default: "us-east-1", env: "AWS_REGION" },
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
    format: REQUIRED_STRING,
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
      format: STRICT_BOOLEAN,
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
      format: "string-list",
      default: [] as string[],
    },
    token: {
      doc: 'Bearer token the ops actions require; "" = actions off. Never logged or shown.',
      format: "ops-token",
      default: "",
      env: "OCTORELAY_OPS_TOKEN",
      sensitive: true,
    },
    requireTokenForRead: {
      doc: "The read endpoints require the token too.",
      format: STRICT_BOOLEAN,
      default: false,
    },
  },
  cluster: {
    redis: {
      url: {
        doc: 'redis:// or rediss:// URL of the limits shared by replicas; "" = in-memory limits, one process.',
        format: "redis-url",
        default: "",
        env: "OCTORELAY_REDIS_URL",
        sensitive: true,
      },
      keyPrefix: {
        doc: "Prefix of every Redis key octorelay writes.",
        format: "key-prefix",
        default: "octorelay",
        env: "OCTORELAY_REDIS_KEY_PREFIX",
      },
    },
  },
  partners: {
    accounts: {
      doc: "Per-account overrides: { account: { destination?, flushIntervalMs?, rateLimit?, ... } }.",
      format: Object,
      default: {} as Record<string, unknown>,
    },
    file: {
      doc: "JSON (or JSON5) file of more per-account overrides, for thousands of accounts.",
      format: String,
      default: "",
      env: "OCTORELAY_PARTNERS_FILE",
    },
    park: {
      bucket: { doc: 'Bucket for parked batches; "" = destination.bucket.', format: String, default: "" },
      prefix: { doc: "Key prefix of parked batches.", format: String, default: "parked/" },
    },
  },
  // No default queue: an app that drains queues nobody named could delete someone's messages.
  queues: { doc: "The queues to drain; see README.", format: "queue-list", default: [] as unknown[] },
};

/** Per-queue settings; `dispatch` and `destination` default to the validated top-level values. */
const queueSchema = {
  queue: { doc: "Queue name or URL.", format: REQUIRED_STRING, default: null as string | null },
  handler: {
    doc: "Handler module under handlersDir (or an absolute path).",
    format: REQUIRED_STRING,
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
  maxUnackedBytes: {
    doc:
      "Bytes of message bodies received and not yet deleted, at most (at least 1 MiB, one SQS message). " +
      "The default, 64 MiB, lets three queues plus the process's own overhead fit a 512 MB container.",
    format: "unacked-bytes",
    default: 67_108_864,
  },
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
    doc: "Largest retry delay of a failed handler, ms (a visibility delay: at most SQS's 12 hours).",
    format: intFormat(1, SQS_MAX_VISIBILITY_SEC * 1000, "SQS delays a message at most 12 hours"),
    default: 900_000,
  },
  deadLetterQueue: {
    doc: "Queue for poison messages; defaults to the queue's redrive target.",
    format: String,
    default: "",
  },
  partnerShare: { doc: "Most of maxUnacked one partner may hold.", format: "fraction", default: 0.25 },
  // The partner settings are not accepted here: they are the partner's, across queues.
  dispatch: Object.fromEntries(
    Object.entries(dispatchSchema).filter(([key]) => !(PARTNER_KEYS as readonly string[]).includes(key)),
  ),
  destination: destinationSchema,
};

/** A partner's entry: any dispatch field and a destination, over its queue's (and the top-level) values. */
const partnerSchema = { ...dispatchSchema, destination: destinationSchema };

// ---------------------------------------------------------------------------------------------
// Entry checks: the per-queue and per-partner schemas, compiled once into plain checks. A
// partners file may hold 50,000 entries; a convict instance each cost seconds and 100+ MB.

interface SchemaItem {
  format: unknown;
  default: unknown;
  sensitive?: boolean;
}

type Check =
  | {
      kind: "leaf";
      validate(value: unknown): void;
      coerce: ((value: unknown) => unknown) | undefined;
      sensitive: boolean;
    }
  | { kind: "section"; section: Section };

interface Section {
  checks: Map<string, Check>;
  /** Leaves without a default (null): validated even when absent. */
  required: string[];
  /** "{ "a": ..., "b": ... }", for a section given as something else. */
  shape: string;
}

const isSchemaItem = (node: unknown): node is SchemaItem =>
  typeof node === "object" && node !== null && "default" in node;

/** The same validation convict gives a format, as a function. */
function formatCheck(format: unknown): Format {
  const builtin = (name: string, ok: (v: unknown) => boolean): Format => ({
    validate(value) {
      if (!ok(value)) throw new Error(`must be of type ${name}`);
    },
  });
  if (format === String) return builtin("String", (v) => typeof v === "string");
  if (format === Array) return builtin("Array", Array.isArray);
  if (format === Object) return builtin("Object", isPlainObject);
  if (Array.isArray(format)) {
    return {
      validate(value) {
        if (!format.includes(value)) {
          throw new Error(`must be one of the possible values: ${JSON.stringify(format)}`);
        }
      },
    };
  }
  const named = typeof format === "string" ? FORMATS.get(format) : undefined;
  if (!named) throw new Error(`config schema: unknown format ${String(format)}`);
  return named;
}

function compile(schema: object): Section {
  const checks = new Map<string, Check>();
  const required: string[] = [];
  for (const [key, node] of Object.entries(schema)) {
    if (!isSchemaItem(node)) {
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

const QUEUE_SECTION = compile(queueSchema);
const PARTNER_SECTION = compile(partnerSchema);
const QUEUE_DEFAULTS = defaultsOf(queueSchema);

/** Problems of one entry, as convict words them: invalid values first, then unknown keys. */
interface EntryProblems {
  invalid: string[];
  unknown: string[];
}

const unknownKey = (name: string) =>
  `${name}: unknown key; remove it or fix its spelling (see the README's configuration table)`;

/**
 * Checks `raw` against `section`: each key it sets must be declared and its value valid (strings
 * coerced the way convict does). Returns the valid values it sets, coerced; the rest are problems.
 */
function checkEntry(section: Section, raw: Record<string, unknown>, name: string, out: EntryProblems) {
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
function withValues(section: Section, defaults: Record<string, unknown>, values: Record<string, unknown>) {
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

// ---------------------------------------------------------------------------------------------
// Loading.

export interface LoadOptions {
  /** Environment to read (defaults to process.env). */
  env?: NodeJS.ProcessEnv;
  /** Directory holding default.json and <env>.json (defaults to <app root>/config). */
  configDir?: string;
  /**
   * Extra files applied last, before environment variables (defaults to $OCTORELAY_CONFIG). The
   * demo passes `<app root>/config/demo.json` here: the sample queues are nowhere else.
   */
  files?: string[];
  /** Values applied over the files, for embedders and tests. */
  overrides?: Record<string, unknown>;
}

/** Where one layer of configuration came from, and what it sets. */
interface Layer {
  source: string;
  values: Record<string, unknown>;
}

/** Paths (dotted) of the schema's sections, and of its list-valued keys. */
const ROOT_SECTIONS = sectionPaths(rootSchema, "");
const ROOT_LISTS = ["queues", "ops.partnerMetricsAccounts"];

function sectionPaths(schema: object, prefix: string): string[] {
  return Object.entries(schema).flatMap(([key, node]) =>
    isSchemaItem(node) ? [] : [`${prefix}${key}`, ...sectionPaths(node, `${prefix}${key}.`)],
  );
}

/**
 * Refuses what convict would misread in a layer, and takes it out: a section given as a scalar
 * (it would replace the whole section), a list given as an object (convict merges the object's
 * keys into the list it already holds: `"queues": { ... }` would keep the previous queues), and
 * `env` (it picks the files, so a file cannot set it).
 */
function layerProblems(layer: Layer, problems: string[]): void {
  const { values } = layer;
  if ("env" in values) {
    problems.push(
      `env: cannot be set in ${layer.source}: it picks which config/<env>.json is read, before any file is; set NODE_ENV instead`,
    );
    delete values.env;
  }
  for (const path of [...ROOT_SECTIONS, ...ROOT_LISTS]) {
    const keys = path.split(".");
    const last = keys.pop() as string;
    let parent: unknown = values;
    for (const key of keys) parent = isPlainObject(parent) ? parent[key] : undefined;
    if (!isPlainObject(parent) || !(last in parent)) continue;
    const value = parent[last];
    const isList = ROOT_LISTS.includes(path);
    if (isList ? Array.isArray(value) : isPlainObject(value)) continue;
    if (path === "queues") problems.push(`queues: ${queueListMessage(value)}`);
    else if (isList) problems.push(`${path}: must be an array; got ${described(value)}`);
    else problems.push(`${path}: must be an object of settings (see the README); got ${described(value)}`);
    delete parent[last];
  }
}

function readLayer(file: string): Layer {
  const parsed = parseJson(readFileSync(file, "utf8"), file);
  if (!isPlainObject(parsed)) throw new Error(`${file}: must hold an object { ... }; got ${kindOf(parsed)}`);
  return { source: file, values: parsed };
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
  const layers: Layer[] = [];
  const unreadable: string[] = [];
  for (const file of [...files, ...extra].filter((f) => existsSync(f))) {
    try {
      layers.push(readLayer(file));
    } catch (err) {
      unreadable.push(`cannot read config: ${(err as Error).message}`);
    }
  }
  // A file that cannot be read says nothing about the rest: report it alone.
  if (unreadable.length > 0) throw new ConfigError([...problems, ...unreadable]);
  if (options.overrides) layers.push({ source: "overrides", values: structuredClone(options.overrides) });
  for (const layer of layers) {
    layerProblems(layer, problems);
    root.load(layer.values);
  }
  const queuesRejected = problems.some((p) => p.startsWith("queues: "));
  // Account names may hold dots ("globex.io"), which convict would read as key paths: take the
  // entries out before validating, and validate each one on its own below.
  const partnerAccounts =
    (root.getProperties() as { partners?: { accounts?: unknown } }).partners?.accounts ?? {};
  root.set("partners.accounts", {});
  problems.push(...convictProblems(root, ""));
  if (!isPlainObject(partnerAccounts)) {
    problems.push(
      `partners.accounts: must be an object { "<account>": { overrides } }; got ${kindOf(partnerAccounts)}`,
    );
  }
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
  if (rawQueues.length === 0 && !queuesRejected) {
    problems.push(
      'queues: none declared; declare the queues to drain, e.g. "queues": [{ "queue": "orders", "handler": "passthrough.ts" }] (see README)',
    );
  }

  const queues: QueueConfig[] = [];
  const queueBlocks: DestinationBlock[] = [];
  /** Every entry that names a queue, valid or not, so duplicates are caught across all of them. */
  const named: { name: string; deadLetterQueue: unknown; at: number }[] = [];
  rawQueues.forEach((raw, i) => {
    const at = `queues[${i}]`;
    if (!isPlainObject(raw)) {
      problems.push(
        `${at}: must be an object like { "queue": "orders", "handler": "orders.ts" }; got ${JSON.stringify(raw)}`,
      );
      return;
    }
    const out: EntryProblems = { invalid: [], unknown: [] };
    const set = checkEntry(QUEUE_SECTION, withoutPartnerKeys(raw, at, out), `${at}.`, out);
    const q = withValues(QUEUE_SECTION, { ...QUEUE_DEFAULTS, dispatch, destination }, set) as Omit<
      QueueConfig,
      "name" | "handlerPath"
    > & { handler: string | null };
    const found = [...out.invalid, ...out.unknown];
    if (typeof q.queue === "string" && q.queue !== "") {
      named.push({ name: queueNameOf(q.queue), deadLetterQueue: q.deadLetterQueue, at: i });
    }
    const handlerPath =
      typeof set.handler === "string" ? handlerProblems(set.handler, handlersDir, at, found) : "";
    if (!found.some((p) => p.startsWith(`${at}.destination.`))) {
      found.push(...destinationProblems(q.destination, `${at}.destination`));
    }
    problems.push(...found);
    if (found.length > 0) return;
    const concurrency = q.concurrency;
    const config: QueueConfig = {
      name: queueNameOf(q.queue),
      queue: q.queue,
      handlerPath,
      concurrency,
      threads: q.threads === 0 ? Math.max(1, Math.min(availableParallelism(), concurrency)) : q.threads,
      prefetch: q.prefetch,
      maxUnacked: q.maxUnacked,
      maxUnackedBytes: q.maxUnackedBytes,
      visibilityTimeoutSec: q.visibilityTimeoutSec,
      waitTimeSec: q.waitTimeSec,
      receiveBatchSize: q.receiveBatchSize,
      maxParallelReceives: q.maxParallelReceives,
      handlerTimeoutMs: q.handlerTimeoutMs,
      retryBaseMs: q.retryBaseMs,
      retryMaxMs: q.retryMaxMs,
      deadLetterQueue: q.deadLetterQueue,
      partnerShare: q.partnerShare,
      dispatch: structuredClone(q.dispatch),
      destination: structuredClone(q.destination),
    };
    queues.push(config);
    queueBlocks.push({ at: `${at}.destination`, set: (set.destination ?? {}) as Record<string, unknown> });
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
  const { partners, partnerBlocks, parks } = loadPartners(
    {
      accounts: isPlainObject(partnerAccounts) ? partnerAccounts : {},
      file: root.get("partners.file"),
      park: root.get("partners.park"),
    },
    queues.map((q) => q.dispatch.onOutage),
    dispatch,
    destination,
    problems,
  );
  // Only over a valid whole: a queue or partner left out would make its fields look unused.
  if (problems.length === 0) {
    problems.push(
      ...unusedDestinationFields(
        { values: destination, set: topDestinationKeys(layers, env) },
        queueBlocks,
        partnerBlocks,
        parks && partners.park.bucket === destination.bucket,
      ),
    );
  }
  const ops = root.get("ops") as OpsConfig;
  if (ops.requireTokenForRead === true && ops.token === "") {
    problems.push(
      "ops.requireTokenForRead: is true but ops.token is empty, so nothing could read the ops endpoints; set ops.token (OCTORELAY_OPS_TOKEN) or requireTokenForRead false",
    );
  }
  if (problems.length > 0) throw new ConfigError([...new Set(problems)]);

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
    ops,
    cluster: { redisUrl: root.get("cluster.redis.url"), keyPrefix: root.get("cluster.redis.keyPrefix") },
    partners,
    queues,
  };
}

/**
 * A queue entry without the partner settings, each refused with where it belongs: a partner's
 * rate limit, breaker and flush concurrency are shared by all its dispatchers, across queues (and
 * replicas), so one queue cannot have its own.
 */
function withoutPartnerKeys(raw: Record<string, unknown>, at: string, out: EntryProblems) {
  if (!isPlainObject(raw.dispatch)) return raw;
  const dispatch = { ...raw.dispatch };
  const what = {
    rateLimit: "a partner's rate limit counts its requests from every queue",
    breaker: "a partner's circuit breaker opens for all of its dispatchers, every queue",
    maxConcurrentFlushes:
      "a partner's flushes in flight are counted across all of its dispatchers, every queue",
  };
  for (const key of PARTNER_KEYS) {
    if (!(key in dispatch)) continue;
    out.invalid.push(
      `${at}.dispatch.${key}: not a queue setting: ${what[key]}; set dispatch.${key} (every partner) or partners.accounts.<account>.${key} (one partner) instead`,
    );
    delete dispatch[key];
  }
  return { ...raw, dispatch };
}

/**
 * The handler's absolute path. A relative name must stay inside handlersDir, symlinks resolved (an
 * absolute path is the operator's explicit choice and is taken as is).
 */
function handlerProblems(handler: string, handlersDir: string, at: string, found: string[]): string {
  const handlerPath = isAbsolute(handler) ? handler : resolve(handlersDir, handler);
  const fix = `put the module in ${handlersDir} and name it relative to it, or give its absolute path to load it from elsewhere`;
  if (!isAbsolute(handler) && isOutside(handlersDir, handlerPath)) {
    found.push(
      `${at}.handler: ${JSON.stringify(handler)} resolves to ${handlerPath}, outside handlersDir (${handlersDir}); ${fix}`,
    );
    return handlerPath;
  }
  if (!existsSync(handlerPath) || !statSync(handlerPath).isFile()) {
    found.push(
      `${at}.handler: file not found: ${JSON.stringify(handler)} (looked at ${handlerPath}); put the module in ${handlersDir} or fix the name`,
    );
  } else if (!isAbsolute(handler)) {
    const real = realpathSync(handlerPath);
    const realDir = realpathSync(handlersDir);
    if (isOutside(realDir, real)) {
      found.push(
        `${at}.handler: ${JSON.stringify(handler)} is a symlink to ${real}, outside handlersDir (${realDir}); ${fix}`,
      );
    }
  }
  if (!/\.(ts|mts|js|mjs)$/.test(handlerPath)) {
    found.push(`${at}.handler: must be a .ts, .mts, .js or .mjs module; got ${JSON.stringify(handler)}`);
  }
  return handlerPath;
}

function isOutside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel === "" || rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel);
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
): { partners: PartnersConfig; partnerBlocks: DestinationBlock[]; parks: boolean } {
  const entries: [string, unknown, string][] = Object.entries(section.accounts).map(([account, raw]) => [
    account,
    raw,
    `partners.accounts.${account}`,
  ]);
  const file = section.file;
  if (file) {
    try {
      const fromFile = parseJson(readFileSync(file, "utf8"), file);
      if (!isPlainObject(fromFile)) {
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
  const partnerBlocks: DestinationBlock[] = [];
  let parks = dispatch.onOutage === "park" || queueOutages.includes("park");
  for (const [account, raw, at] of entries) {
    if (!isPlainObject(raw)) {
      problems.push(
        `${at}: must be an object of overrides like { "rateLimit": { "requests": 10 } }; got ${JSON.stringify(raw)}`,
      );
      continue;
    }
    const out: EntryProblems = { invalid: [], unknown: [] };
    const set = checkEntry(PARTNER_SECTION, raw, `${at}.`, out);
    const found = [...out.invalid, ...out.unknown];
    const { destination: setDestination, ...setDispatch } = set as {
      destination?: Partial<FlatDestination>;
    } & Partial<DispatchConfig>;
    if (setDestination && !found.some((p) => p.startsWith(`${at}.destination.`))) {
      const merged = { ...destination, ...setDestination } as FlatDestination;
      if (setDestination.headers) merged.headers = { ...destination.headers, ...setDestination.headers };
      found.push(...destinationProblems(merged, `${at}.destination`));
    }
    problems.push(...found);
    if (found.length > 0) continue;
    overrides.set(account, { dispatch: setDispatch, destination: setDestination });
    if (setDestination) partnerBlocks.push({ at: `${at}.destination`, set: setDestination });
    if (setDispatch.onOutage === "park") parks = true;
  }
  const park = section.park;
  if (
    parks &&
    !park.bucket &&
    (destination.type !== "s3" || !destination.bucket || destination.bucket.includes("{"))
  ) {
    problems.push(
      'partners.park.bucket: is required when a profile parks (onOutage "park") and destination.bucket is not one fixed S3 bucket; got ""',
    );
  }
  return {
    partners: { overrides, park: { bucket: park.bucket || destination.bucket, prefix: park.prefix } },
    partnerBlocks,
    parks,
  };
}

const TEMPLATE_FIELDS = ["account", "queue"];

/** Per-type checks a flat destination needs beyond its schema. URLs are shown without their secrets. */
function destinationProblems(d: FlatDestination, at: string): string[] {
  const problems: string[] = [];
  const templated = (key: "bucket" | "url" | "queueUrl", value: string, fix: string) => {
    if (!value) problems.push(`${at}.${key}: is required for a ${d.type} destination; got ""; ${fix}`);
    for (const [, field] of value.matchAll(/\{([^}]*)\}/g)) {
      if (!TEMPLATE_FIELDS.includes(field as string)) {
        problems.push(
          `${at}.${key}: unknown field {${field}} in ${JSON.stringify(withoutSecrets(value))}; valid: {account} {queue}`,
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
      problems.push(`${at}.url: must be an http(s) URL; got ${JSON.stringify(withoutSecrets(d.url))}`);
  } else {
    templated("queueUrl", d.queueUrl, "set the partner's queue URL");
  }
  return problems;
}

/** A destination block (a queue's or a partner's): where it is, and the fields it sets itself. */
interface DestinationBlock {
  at: string;
  set: Record<string, unknown>;
}

/** The destination keys the top-level block sets, in any file, the overrides or the environment. */
function topDestinationKeys(layers: Layer[], env: NodeJS.ProcessEnv): Map<string, string> {
  const set = new Map<string, string>();
  for (const { source, values } of layers) {
    if (!isPlainObject(values.destination)) continue;
    for (const key of Object.keys(values.destination)) set.set(key, source);
  }
  if (env.OCTORELAY_S3_BUCKET) set.set("bucket", "OCTORELAY_S3_BUCKET");
  return set;
}

/**
 * Destination fields that no destination reads: set in a block whose type (or every type it
 * applies to) has no use for them, like `gzip` on an HTTP partner. A partner's block applies over
 * each queue's, which applies over the top-level one; a field counts as used if any destination
 * that takes it from that block reads it.
 */
function unusedDestinationFields(
  top: { values: FlatDestination; set: Map<string, string> },
  queues: DestinationBlock[],
  partners: DestinationBlock[],
  parkUsesTopBucket: boolean,
): string[] {
  const problems: string[] = [];
  type Resolved = (field: string) => unknown;
  const resolved =
    (queue: DestinationBlock, partner: DestinationBlock | undefined): Resolved =>
    (field) =>
      partner?.set[field] ?? queue.set[field] ?? (top.values as unknown as Record<string, unknown>)[field];
  const typeOf = (r: Resolved) => r("type") as DestinationConfig["type"];
  const reads = (r: Resolved, field: string) =>
    DESTINATION_FIELDS[typeOf(r)].includes(field) && (field !== "authScheme" || r("authTokenEnv") !== "");
  /** Refuses `field` of the block at `at` unless one of the destinations taking it from there reads it. */
  const unused = (at: string, field: string, takers: () => Iterable<Resolved>) => {
    for (const r of takers()) if (reads(r, field)) return;
    const types = [...new Set([...takers()].map(typeOf))];
    const owner = (Object.keys(DESTINATION_FIELDS) as DestinationConfig["type"][]).find((t) =>
      DESTINATION_FIELDS[t].includes(field),
    );
    if (types.length === 0) {
      problems.push(
        `${at}.${field}: not used: every queue sets its own destination.${field}; remove it from the top level`,
      );
    } else if (field === "authScheme" && types.every((t) => t === "http")) {
      problems.push(
        `${at}.authScheme: not used without authTokenEnv (no token, no Authorization header); set authTokenEnv to the variable holding the token, or remove authScheme`,
      );
    } else if (owner) {
      const names = types.map((t) => `"${t}"`).join(" and ");
      problems.push(
        `${at}.${field}: not used by ${names} destinations (${field} is a setting of "${owner}" destinations); remove it, or set destination.type to "${owner}"`,
      );
    }
  };
  const fields = (set: Record<string, unknown> | Map<string, string>) =>
    [...(set instanceof Map ? set.keys() : Object.keys(set))].filter((f) => f !== "type");

  for (const partner of partners) {
    for (const field of fields(partner.set)) {
      unused(partner.at, field, function* () {
        for (const queue of queues) yield resolved(queue, partner);
      });
    }
  }
  for (const block of queues) {
    for (const field of fields(block.set)) {
      unused(block.at, field, function* () {
        yield resolved(block, undefined);
        for (const p of partners) if (!(field in p.set)) yield resolved(block, p);
      });
    }
  }
  for (const field of fields(top.set)) {
    if (field === "bucket" && parkUsesTopBucket && top.values.type === "s3") continue;
    const before = problems.length;
    unused("destination", field, function* () {
      for (const block of queues) {
        if (field in block.set) continue;
        yield resolved(block, undefined);
        for (const p of partners) if (!(field in p.set)) yield resolved(block, p);
      }
    });
    if (problems.length > before && top.set.get(field) === "OCTORELAY_S3_BUCKET") {
      problems[problems.length - 1] += " (it comes from OCTORELAY_S3_BUCKET: unset it)";
    }
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
      isSchemaItem(item) ? structuredClone(item.default) : defaultsOf(item),
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
        return undeclared ? unknownKey(`${prefix}${undeclared[1]}`) : `${prefix}${line}`;
      });
  }
}

/**
 * Every configuration key, declared once: its default, its doc (one sentence, with the unit), its
 * validation (a format from formats.ts) and the environment variable that sets it. The loader
 * validates against these, the types in types.ts are derived from them, and docs.ts renders the
 * README's configuration tables from them (`node src/config/docs.ts --write README.md`).
 *
 * The objects are convict schemas (convict layers the files and the environment at the top level);
 * `shown` and `envOnly` are for the docs and the loader only.
 */
import {
  type FormatSpec,
  FRACTION,
  intFormat,
  KEY_PREFIX,
  KEY_TEMPLATE,
  LEASE_MS,
  OPS_TOKEN,
  POSITIVE_INT,
  QUEUE_LIST,
  REDIS_URL,
  REQUIRED_STRING,
  SQS_MAX_RECEIVE_BATCH,
  SQS_MAX_VISIBILITY_SEC,
  SQS_MAX_WAIT_SEC,
  STRICT_BOOLEAN,
  STRING_LIST,
  STRING_MAP,
  UNACKED_BYTES,
} from "./formats.ts";

/** One key. `T` is the type of its value once validated. */
export interface KeyDef<T = unknown> {
  /** One sentence, with the unit: what the key does. */
  doc: string;
  format: FormatSpec;
  /** `null`: no default, the key is required. */
  default: T | null;
  /** The environment variable that sets it (over every file). */
  env?: string;
  /** Never shown in a message (convict's own flag; entries honour it too). */
  sensitive?: boolean;
  /** What the docs show as the default, when the value itself would mislead ("" for a required bucket). */
  shown?: string;
  /** Set by its environment variable only: no file may set it. */
  envOnly?: true;
}

export const isKeyDef = (node: unknown): node is KeyDef =>
  typeof node === "object" && node !== null && "default" in node;

/** The value types of a section's keys: what a validated section holds. */
export type Values<S> = {
  -readonly [K in keyof S]: S[K] extends KeyDef<infer T> ? T : Values<S[K]>;
};

const key = <T>(def: KeyDef<T>): KeyDef<T> => def;
/** A key whose value is one of `values`. */
const oneOf = <const V extends readonly string[]>(
  values: V,
  def: Omit<KeyDef<V[number]>, "format">,
): KeyDef<V[number]> => ({ ...def, format: values });

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export const DESTINATION_TYPES = ["s3", "http", "sqs"] as const;

// ---------------------------------------------------------------------------------------------
// Dispatch: a dispatcher's batching and retries. At the top level (the default of every queue and
// partner), in a queue's `dispatch` and in a partner's entry.

export const DISPATCH_KEYS = {
  flushIntervalMs: key({
    doc: "How often each dispatcher flushes what it holds, in ms; longer means fewer, larger batches (and objects).",
    format: POSITIVE_INT,
    default: 1000,
  }),
  maxRecords: key({
    doc: "A batch is flushed at once when it holds this many records.",
    format: POSITIVE_INT,
    default: 1000,
  }),
  maxBytes: key({
    doc: "A batch is flushed at once when it holds this many bytes of uncompressed NDJSON.",
    format: POSITIVE_INT,
    default: 5_242_880,
  }),
  emptyFlushLimit: key({
    doc: "A dispatcher stops after this many flush ticks in a row found nothing to send; the next output respawns it.",
    format: POSITIVE_INT,
    default: 5,
  }),
  maxConcurrentFlushes: key({
    doc: "Flushes a partner may have in flight at once, across all its dispatchers.",
    format: POSITIVE_INT,
    default: 2,
  }),
  retryBaseMs: key({
    doc: "First retry delay of a failed flush, in ms; it doubles each attempt, with jitter.",
    format: POSITIVE_INT,
    default: 500,
  }),
  retryMaxMs: key({
    doc: "Longest retry delay of a failed flush, in ms.",
    format: POSITIVE_INT,
    default: 30_000,
  }),
  giveUpAfterMs: key({
    doc: "A batch still failing (or held by an open breaker) after this long, in ms, is given up on: released to SQS, or parked (`onOutage`).",
    format: POSITIVE_INT,
    default: 300_000,
  }),
  rateLimit: {
    requests: key({
      doc: "Flushes a partner may be sent in any window of `rateLimit.intervalMs`; 0 = unlimited.",
      format: intFormat(0, 1_000_000, ""),
      default: 0,
    }),
    records: key({
      doc: "Records a partner may be sent in any window of `rateLimit.intervalMs`; 0 = unlimited.",
      format: intFormat(0, 100_000_000, ""),
      default: 0,
    }),
    intervalMs: key({ doc: "The rate limit's window, in ms.", format: POSITIVE_INT, default: 1000 }),
  },
  breaker: {
    failures: key({
      doc: "Failed flushes in a row that open a partner's circuit breaker.",
      format: POSITIVE_INT,
      default: 5,
    }),
    cooldownMs: key({
      doc: "How long an open breaker holds the partner's flushes before it lets a probe through, in ms.",
      format: POSITIVE_INT,
      default: 30_000,
    }),
  },
  onOutage: oneOf(["release", "park"], {
    doc: 'What happens to a batch given up on: "release" it to SQS (delayed), or "park" it in S3 for `replay`.',
    default: "release",
  }),
};

/**
 * The partner's settings (one account's), shared by all its dispatchers across queues and replicas:
 * a queue cannot have its own, so a queue's `dispatch` refuses them, saying why.
 */
export const PARTNER_SETTINGS = {
  rateLimit: "a partner's rate limit counts its requests from every queue",
  breaker: "a partner's circuit breaker opens for all of its dispatchers, every queue",
  maxConcurrentFlushes:
    "a partner's flushes in flight are counted across all of its dispatchers, every queue",
} as const satisfies Partial<Record<keyof typeof DISPATCH_KEYS, string>>;

export const isPartnerSetting = (key: string): key is keyof typeof PARTNER_SETTINGS =>
  Object.hasOwn(PARTNER_SETTINGS, key);

/** The dispatch keys a queue may set: all but the partner's settings. */
export const QUEUE_DISPATCH_KEYS = Object.fromEntries(
  Object.entries(DISPATCH_KEYS).filter(([k]) => !isPartnerSetting(k)),
) as Omit<typeof DISPATCH_KEYS, keyof typeof PARTNER_SETTINGS>;

// ---------------------------------------------------------------------------------------------
// Destinations: where a partner's batches go. One block of fields, `type` picking which are read;
// a partner's block applies over its queue's, which applies over the top level's, field by field.

export const DESTINATION_TYPE_KEY = {
  type: oneOf(DESTINATION_TYPES, {
    doc: "Which kind of destination: s3, http or sqs; it decides which of the fields below are read.",
    default: "s3",
  }),
};

export const S3_KEYS = {
  bucket: key({
    doc: "S3 bucket the batches are written to; may contain {account} (a bucket per partner) and {queue}.",
    format: String,
    default: "",
    env: "OCTORELAY_S3_BUCKET",
    shown: "required for s3",
  }),
  keyTemplate: key({
    doc: "Key of each object; fields {queue} {account} {yyyy} {MM} {dd} {HH} {mm} {batchId}, of which {account} and {batchId} are required.",
    format: KEY_TEMPLATE,
    default: "{queue}/{account}/{yyyy}/{MM}/{dd}/{HH}/{batchId}.ndjson.gz",
  }),
  gzip: key({
    doc: "Gzip each object (`Content-Encoding: gzip`).",
    format: STRICT_BOOLEAN,
    default: true,
  }),
  serverSideEncryption: oneOf(["", "AES256", "aws:kms"], {
    doc: 'S3 server-side encryption: "" (the bucket\'s default), "AES256" or "aws:kms" (with `kmsKeyId`).',
    default: "",
  }),
  kmsKeyId: key({
    doc: 'KMS key id, for serverSideEncryption "aws:kms" only.',
    format: String,
    default: "",
  }),
};

export const HTTP_KEYS = {
  url: key({
    doc: "Endpoint the batches are POSTed to, an http(s) URL; may contain {account} and {queue}.",
    format: String,
    default: "",
    shown: "required for http",
  }),
  headers: key({
    doc: "Extra headers sent with every request, name to value.",
    format: STRING_MAP,
    default: {} as Record<string, string>,
  }),
  authTokenEnv: key({
    doc: "Name of the environment variable holding the partner's token (never the token itself).",
    format: String,
    default: "",
  }),
  authScheme: key({
    doc: "Scheme of the `Authorization: <scheme> <token>` header sent when `authTokenEnv` is set.",
    format: String,
    default: "Bearer",
  }),
  format: oneOf(["ndjson", "json"], {
    doc: "Request body: ndjson (one record a line) or json (an array of records).",
    default: "ndjson",
  }),
  timeoutMs: key({ doc: "Timeout of each request, in ms.", format: POSITIVE_INT, default: 10_000 }),
};

export const SQS_KEYS = {
  queueUrl: key({
    doc: "URL of the partner's SQS queue the records are sent to; may contain {account} and {queue}.",
    format: String,
    default: "",
    shown: "required for sqs",
  }),
};

/** The fields each destination type reads; any other field set in a block of that type is refused. */
export const DESTINATION_TYPE_KEYS = { s3: S3_KEYS, http: HTTP_KEYS, sqs: SQS_KEYS } as const;

export const DESTINATION_KEYS = { ...DESTINATION_TYPE_KEY, ...S3_KEYS, ...HTTP_KEYS, ...SQS_KEYS };

// ---------------------------------------------------------------------------------------------
// One entry of `queues`. Its `dispatch` and `destination` start from the top level's.

export const QUEUE_KEYS = {
  queue: key<string>({
    doc: "Queue name (resolved with GetQueueUrl) or queue URL (used as is).",
    format: REQUIRED_STRING,
    default: null,
  }),
  handler: key<string>({
    doc: "Handler module: a path under `handlersDir` (.ts, .mts, .js or .mjs), or an absolute path.",
    format: REQUIRED_STRING,
    default: null,
  }),
  concurrency: key({
    doc: "Handlers running at once, across all of the queue's threads; never exceeded.",
    format: intFormat(1, 10_000, "handlers at once"),
    default: 8,
  }),
  threads: key({
    doc: "Worker threads running the handler; 0 = min(cores, concurrency).",
    format: intFormat(0, 256, "worker threads"),
    default: 0,
  }),
  prefetch: key({
    doc: "Messages received ahead of a free handler slot.",
    format: intFormat(0, 10_000, "messages"),
    default: 10,
  }),
  maxUnacked: key({
    doc: "Messages received and not yet deleted, wherever they are, at most: the memory bound.",
    format: POSITIVE_INT,
    default: 2000,
  }),
  maxUnackedBytes: key({
    doc: "Bytes of message bodies received and not yet deleted, at most (at least 1 MiB, one SQS message); 64 MiB lets three queues fit a 512 MB container.",
    format: UNACKED_BYTES,
    default: 67_108_864,
  }),
  visibilityTimeoutSec: key({
    doc: "Visibility timeout asked on receive and kept extended while a message is held, in seconds (SQS allows 1 to 43200).",
    format: intFormat(1, SQS_MAX_VISIBILITY_SEC, "SQS allows up to 12 hours"),
    default: 60,
  }),
  waitTimeSec: key({
    doc: "Long-poll wait of each ReceiveMessage, in seconds (SQS allows 0 to 20).",
    format: intFormat(0, SQS_MAX_WAIT_SEC, "SQS allows at most 20 s"),
    default: 20,
  }),
  receiveBatchSize: key({
    doc: "Most messages asked for by each ReceiveMessage (SQS returns at most 10).",
    format: intFormat(1, SQS_MAX_RECEIVE_BATCH, "SQS returns at most 10 per receive"),
    default: SQS_MAX_RECEIVE_BATCH,
  }),
  maxParallelReceives: key({
    doc: "Long polls in flight at once.",
    format: intFormat(1, 64, "parallel polls"),
    default: 8,
  }),
  handlerTimeoutMs: key({
    doc: "A handler running longer than this, in ms, is aborted (its signal fires) and retried.",
    format: POSITIVE_INT,
    default: 30_000,
  }),
  retryBaseMs: key({
    doc: "First retry delay of a failed handler, in ms: a visibility delay, doubling each receive, with jitter.",
    format: POSITIVE_INT,
    default: 2000,
  }),
  retryMaxMs: key({
    doc: "Longest retry delay of a failed handler, in ms (SQS delays a message at most 12 hours).",
    format: intFormat(1, SQS_MAX_VISIBILITY_SEC * 1000, "SQS delays a message at most 12 hours"),
    default: 900_000,
  }),
  deadLetterQueue: key({
    doc: 'Queue name or URL for poison messages; "" = the target of the queue\'s redrive policy.',
    format: String,
    default: "",
  }),
  partnerShare: key({
    doc: "Fraction of `maxUnacked` one partner's undelivered outputs may always take; past it, its messages are shed (on their last receive, routed if the partner keeps up, else dead-lettered with the reason). A partner that keeps up (no batch failing, none in flight past a flush interval) may also borrow what no other partner holds, up to `maxUnacked` less one share.",
    format: FRACTION,
    default: 0.25,
  }),
  dispatch: QUEUE_DISPATCH_KEYS,
  destination: DESTINATION_KEYS,
};

/** A partner's entry (in `partners.accounts` or the partners file): dispatch keys and a destination. */
export const PARTNER_ENTRY_KEYS = { ...DISPATCH_KEYS, destination: DESTINATION_KEYS };

// ---------------------------------------------------------------------------------------------
// Operations and the cluster.

export const OPS_KEYS = {
  enabled: key({
    doc: "Serve /metrics, /healthz, /readyz and /partners.",
    format: STRICT_BOOLEAN,
    default: true,
    env: "OCTORELAY_OPS_ENABLED",
  }),
  host: key({
    doc: "Address the ops server listens on.",
    format: String,
    default: "0.0.0.0",
    env: "OCTORELAY_METRICS_HOST",
  }),
  port: key({
    doc: "TCP port of the ops server; 0 = any free port.",
    format: intFormat(0, 65_535, "a TCP port"),
    default: 9464,
    env: "OCTORELAY_METRICS_PORT",
  }),
  partnerMetricsTop: key({
    doc: "Partners with metric series of their own: the N holding the most; the rest are summed as `_other`.",
    format: intFormat(0, 1000, "partners"),
    default: 20,
  }),
  partnerMetricsAccounts: key({
    doc: "Partners that always get metric series of their own.",
    format: STRING_LIST,
    default: [] as string[],
  }),
  token: key({
    doc: 'Bearer token the ops actions require; "" turns the actions off. A secret: never logged or shown.',
    format: OPS_TOKEN,
    default: "",
    env: "OCTORELAY_OPS_TOKEN",
    sensitive: true,
  }),
  requireTokenForRead: key({
    doc: "The read endpoints require the token too (true or false).",
    format: STRICT_BOOLEAN,
    default: false,
  }),
};

export const CLUSTER_KEYS = {
  redis: {
    url: key({
      doc: 'redis:// or rediss:// URL of the store holding every partner\'s limits for all replicas; "" = in-memory limits, one process. A secret: shown with its password replaced.',
      format: REDIS_URL,
      default: "",
      env: "OCTORELAY_REDIS_URL",
      sensitive: true,
    }),
    keyPrefix: key({
      doc: "Prefix of every key octorelay writes in Redis; no spaces or braces (braces are Redis Cluster hash tags).",
      format: KEY_PREFIX,
      default: "octorelay",
      env: "OCTORELAY_REDIS_KEY_PREFIX",
    }),
    leaseMs: key({
      doc: "How long a request holds its partner's cluster-wide concurrency slot unless its replica renews it (every third of it), in ms, at least 1000: a replica killed while holding one frees it this long after; must exceed the longest destination `timeoutMs`, or a request still running while its replica is cut off from Redis stops being counted.",
      format: LEASE_MS,
      default: 30_000,
      env: "OCTORELAY_REDIS_LEASE_MS",
    }),
    mode: oneOf(["standalone", "cluster"], {
      doc: '"standalone": one Redis (or a primary endpoint, ElastiCache/MemoryDB with cluster mode disabled); "cluster": Redis Cluster (ElastiCache/MemoryDB with cluster mode enabled), the URL naming one node or the configuration endpoint, database 0 only.',
      default: "standalone",
      env: "OCTORELAY_REDIS_MODE",
    }),
  },
};

export const PARTNERS_KEYS = {
  accounts: key({
    doc: 'Per-account overrides, `{ "<account>": { <dispatch keys>, "destination": { ... } } }`, applied over each queue\'s settings.',
    format: Object,
    default: {} as Record<string, unknown>,
  }),
  file: key({
    doc: "JSON (or JSON5) file of more per-account overrides, like `partners.accounts`, for thousands of accounts.",
    format: String,
    default: "",
    env: "OCTORELAY_PARTNERS_FILE",
  }),
  park: {
    bucket: key({
      doc: 'Bucket parked batches are written to; "" = `destination.bucket`, which must then be one fixed S3 bucket.',
      format: String,
      default: "",
    }),
    prefix: key({ doc: "Key prefix of parked batches.", format: String, default: "parked/" }),
  },
};

// ---------------------------------------------------------------------------------------------
// The top level.

export const ROOT_KEYS = {
  env: key({
    doc: "Which `config/<env>.json` is read; set by NODE_ENV only, since it picks the files before any is read.",
    format: String,
    default: "development",
    env: "NODE_ENV",
    envOnly: true,
  }),
  log: {
    level: oneOf(LOG_LEVELS, {
      doc: "pino log level: fatal, error, warn, info, debug, trace or silent.",
      default: "info",
      env: "OCTORELAY_LOG_LEVEL",
    }),
  },
  aws: {
    region: key({
      doc: "AWS region of the queues and buckets.",
      format: REQUIRED_STRING,
      default: "us-east-1",
      env: "AWS_REGION",
    }),
    endpoint: key({
      doc: "Endpoint of every AWS service (LocalStack, an emulator): every SQS call goes to it, not to the queue URL's host, and S3 is path-style.",
      format: String,
      default: "",
      env: "AWS_ENDPOINT_URL",
    }),
    sqsEndpoint: key({
      doc: "Endpoint of SQS, over `aws.endpoint`.",
      format: String,
      default: "",
      env: "AWS_ENDPOINT_URL_SQS",
    }),
    s3Endpoint: key({
      doc: "Endpoint of S3, over `aws.endpoint`.",
      format: String,
      default: "",
      env: "AWS_ENDPOINT_URL_S3",
    }),
  },
  handlersDir: key({
    doc: "Where handler modules are looked up, relative to the app root (/app/handlers in the image).",
    format: REQUIRED_STRING,
    default: "handlers",
    env: "OCTORELAY_HANDLERS_DIR",
  }),
  shutdown: {
    deadlineMs: key({
      doc: "Drain budget on SIGTERM, in ms, before the rest is released; the process exits on its own 5 s after it at the latest.",
      format: POSITIVE_INT,
      default: 25_000,
      env: "OCTORELAY_SHUTDOWN_DEADLINE_MS",
    }),
  },
  dispatch: DISPATCH_KEYS,
  destination: DESTINATION_KEYS,
  ops: OPS_KEYS,
  cluster: CLUSTER_KEYS,
  partners: PARTNERS_KEYS,
  // No default queue: an app that drains queues nobody named could delete someone's messages.
  queues: key({
    doc: "The queues to drain, each an entry of the per-queue keys; with none, startup refuses.",
    format: QUEUE_LIST,
    default: [] as unknown[],
    shown: "none",
  }),
};

/** Every key's default, as a section of values (a fresh copy each call). */
export function defaultsOf(section: object): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(section).map(([k, node]) => [
      k,
      isKeyDef(node) ? structuredClone(node.default) : defaultsOf(node),
    ]),
  );
}

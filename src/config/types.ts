/**
 * What loadConfig returns. The value types come from the definitions (definitions.ts), so a key
 * declared there has its type here without being written twice; what each key means is documented
 * there (and in the README tables generated from it).
 */
import type {
  CLUSTER_KEYS,
  DESTINATION_TYPES,
  DISPATCH_KEYS,
  HTTP_KEYS,
  LOG_LEVELS,
  OPS_KEYS,
  QUEUE_KEYS,
  S3_KEYS,
  SQS_KEYS,
  Values,
} from "./definitions.ts";

export type LogLevel = (typeof LOG_LEVELS)[number];
export type DestinationType = (typeof DESTINATION_TYPES)[number];

/** A dispatcher's batching and retries, and the partner's limits (rateLimit, breaker, maxConcurrentFlushes). */
export type DispatchConfig = Values<typeof DISPATCH_KEYS>;

export type S3DestinationConfig = { type: "s3" } & Values<typeof S3_KEYS>;
export type HttpDestinationConfig = { type: "http" } & Values<typeof HTTP_KEYS>;
export type SqsDestinationConfig = { type: "sqs" } & Values<typeof SQS_KEYS>;

/** A destination: the fields its `type` reads. */
export type DestinationConfig = S3DestinationConfig | HttpDestinationConfig | SqsDestinationConfig;

/**
 * Every destination field of every type, as a destination block resolves them (defaults, then the
 * top level's block, then a queue's). A partner's block applies over these field by field, whatever
 * its type: a top-level `timeoutMs` reaches the HTTP partners of an S3 queue.
 */
export type DestinationFields = { type: DestinationType } & Values<typeof S3_KEYS> &
  Values<typeof HTTP_KEYS> &
  Values<typeof SQS_KEYS>;

/** The fields one destination block sets (a partner's), to apply over its queue's. */
export type DestinationOverride =
  | Partial<S3DestinationConfig>
  | Partial<HttpDestinationConfig>
  | Partial<SqsDestinationConfig>;

/** What one account's entry under `partners` changes, on top of its queue's settings: only the keys it sets. */
export interface PartnerOverride {
  dispatch: Partial<DispatchConfig>;
  destination: DestinationOverride | undefined;
}

export interface PartnersConfig {
  overrides: Map<string, PartnerOverride>;
  /** Where parked batches go; bucket "" = the default destination bucket. */
  park: { bucket: string; prefix: string };
}

type QueueValues = Values<typeof QUEUE_KEYS>;

/** One queue, validated; each key as in QUEUE_KEYS, with these resolved: */
export type QueueConfig = Omit<QueueValues, "handler" | "dispatch" | "destination"> & {
  /** The queue's name, from `queue` (a name, or the last segment of a URL). */
  name: string;
  /** Absolute path of the handler module. */
  handlerPath: string;
  /** The queue's dispatch settings; the partner settings (rateLimit, breaker, maxConcurrentFlushes) are the top-level ones. */
  dispatch: DispatchConfig;
  /**
   * The queue's destination. The object also holds the other types' fields as the top level and
   * the queue set them (DestinationFields), which a partner's destination of another type applies
   * over: resolve a partner's with `partnerDestination(queue, override)`.
   */
  destination: DestinationConfig;
};

export type OpsConfig = Values<typeof OPS_KEYS>;

type ClusterValues = Values<typeof CLUSTER_KEYS>;

export interface ClusterConfig {
  /** `cluster.redis.url`. */
  redisUrl: ClusterValues["redis"]["url"];
  /** `cluster.redis.keyPrefix`. */
  keyPrefix: ClusterValues["redis"]["keyPrefix"];
  /** `cluster.redis.leaseMs`. */
  leaseMs: ClusterValues["redis"]["leaseMs"];
  /** `cluster.redis.mode`. */
  mode: ClusterValues["redis"]["mode"];
}

export interface Config {
  /** NODE_ENV: which config/<env>.json was read. */
  env: string;
  logLevel: LogLevel;
  /** The endpoints: the service's own, else `aws.endpoint`, else the SDK's (undefined). */
  aws: { region: string; sqsEndpoint: string | undefined; s3Endpoint: string | undefined };
  /** Absolute. */
  handlersDir: string;
  shutdownDeadlineMs: number;
  /** Top-level dispatch settings: the partner defaults that per-partner limits start from. */
  dispatch: DispatchConfig;
  ops: OpsConfig;
  cluster: ClusterConfig;
  partners: PartnersConfig;
  queues: QueueConfig[];
}

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
  /** Values applied over the files (environment variables still win), for embedders and tests. */
  overrides?: Record<string, unknown>;
}

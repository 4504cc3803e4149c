/**
 * loadConfig: the top level layered (layers.ts), then the queues (queues.ts), the partners
 * (partner-overrides.ts) and the checks across them (destinations.ts). Every problem is collected;
 * one ConfigError lists them all, each naming its key, the value and what would be valid.
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError } from "../errors.ts";
import { DESTINATION_KEYS, DISPATCH_KEYS, defaultsOf } from "./definitions.ts";
import { topDestinationKeys, unusedDestinationFields } from "./destinations.ts";
import { isPlainObject, kindOf } from "./formats.ts";
import { layerTopLevel } from "./layers.ts";
import { loadPartners } from "./partner-overrides.ts";
import { loadQueues } from "./queues.ts";
import type { Config, DestinationFields, DispatchConfig, LoadOptions, LogLevel, OpsConfig } from "./types.ts";

/** Where `config/` and the default `handlers/` live: the app root, two levels above src/config/ (or dist/config/). */
export const APP_ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Loads and validates the configuration; throws one ConfigError listing every problem found. */
export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env;
  const problems: string[] = [];
  const top = layerTopLevel(
    {
      env,
      configDir: options.configDir ?? resolve(APP_ROOT, "config"),
      files: options.files,
      overrides: options.overrides,
    },
    problems,
  );
  const { partnerAccounts } = top;
  if (!isPlainObject(partnerAccounts)) {
    problems.push(
      `partners.accounts: must be an object { "<account>": { overrides } }; got ${kindOf(partnerAccounts)}`,
    );
  }
  // With the top level invalid, queue entries are still checked, against the definitions' own defaults.
  const rootValid = problems.length === 0;
  const dispatch = (rootValid ? top.get("dispatch") : defaultsOf(DISPATCH_KEYS)) as DispatchConfig;
  const destination = (
    rootValid
      ? top.get("destination")
      : { ...defaultsOf(DESTINATION_KEYS), bucket: top.get("destination.bucket") }
  ) as DestinationFields;
  const handlersDir = resolve(APP_ROOT, top.get<string>("handlersDir"));
  const rawQueues = top.get<unknown[]>("queues");
  if (rawQueues.length === 0 && !top.queuesRejected) {
    problems.push(
      'queues: none declared; declare the queues to drain, e.g. "queues": [{ "queue": "orders", "handler": "passthrough.ts" }] (see README)',
    );
  }

  const { queues, queueBlocks } = loadQueues(rawQueues, { dispatch, destination, handlersDir }, problems);
  const { partners, partnerBlocks, parks } = loadPartners(
    {
      accounts: isPlainObject(partnerAccounts) ? partnerAccounts : {},
      file: top.get("partners.file"),
      park: top.get("partners.park"),
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
        { values: destination, set: topDestinationKeys(top.layers, env) },
        queueBlocks,
        partnerBlocks,
        parks && partners.park.bucket === destination.bucket,
      ),
    );
  }
  const ops = top.get<OpsConfig>("ops");
  if (ops.requireTokenForRead === true && ops.token === "") {
    problems.push(
      "ops.requireTokenForRead: is true but ops.token is empty, so nothing could read the ops endpoints; set ops.token (OCTORELAY_OPS_TOKEN) or requireTokenForRead false",
    );
  }
  const redisUrl = top.get<string>("cluster.redis.url");
  if (top.get("cluster.redis.mode") === "cluster" && redisUrl !== "") {
    const db = redisDatabase(redisUrl);
    if (db !== undefined && db !== "0") {
      problems.push(
        `cluster.redis.url: names database ${JSON.stringify(db)}, but Redis Cluster (cluster.redis.mode "cluster") has database 0 only; drop the /${db} from the URL`,
      );
    }
  }
  if (problems.length > 0) throw new ConfigError([...new Set(problems)]);

  const endpoint = top.get<string>("aws.endpoint") || undefined;
  return {
    env: top.get("env"),
    logLevel: top.get<LogLevel>("log.level"),
    aws: {
      region: top.get("aws.region"),
      sqsEndpoint: top.get<string>("aws.sqsEndpoint") || endpoint,
      s3Endpoint: top.get<string>("aws.s3Endpoint") || endpoint,
    },
    handlersDir,
    shutdownDeadlineMs: top.get("shutdown.deadlineMs"),
    dispatch,
    ops,
    cluster: {
      redisUrl,
      keyPrefix: top.get("cluster.redis.keyPrefix"),
      leaseMs: top.get("cluster.redis.leaseMs"),
      mode: top.get("cluster.redis.mode"),
    },
    partners,
    queues,
  };
}

/** The database a redis URL names (its path without the slash), undefined when none or not a URL. */
function redisDatabase(url: string): string | undefined {
  try {
    const path = new URL(url).pathname.replace(/^\//, "");
    return path === "" ? undefined : path;
  } catch {
    return undefined;
  }
}

/**
 * `octorelay start` (`node dist/main.js`, the image's command, runs it too): load config, build the
 * AWS clients and the partners' limits (in this process, or in Redis for every replica), serve ops,
 * start every queue, drain on SIGTERM.
 */
import { createAwsClients } from "../aws-clients.ts";
import { loadConfig } from "../config.ts";
import { createLogger } from "../logger.ts";
import { serviceConsole } from "../ops/console/wiring.ts";
import { Metrics } from "../ops/metrics.ts";
import { type OpsServer, startOpsServer } from "../ops/ops-server.ts";
import { buildLimitsLayer } from "../partners/cluster.ts";
import { Service } from "../service.ts";
import { onShutdownSignal } from "../shutdown.ts";
import { explainError } from "./errors.ts";

/**
 * How long start-up waits for Redis before going on without it: rate-limited partners then wait
 * for it, the others flow. Redis being down is never a reason to exit.
 */
const REDIS_CONNECT_WAIT_MS = 10_000;

/** Runs until a signal has drained the service; resolves with the exit code. ConfigError is thrown. */
export async function start(options: { config?: string | undefined }): Promise<number> {
  const config = loadConfig(options.config ? { files: [options.config] } : {});
  const log = createLogger(config.logLevel);
  process.on("unhandledRejection", (err) => log.error({ err }, "unhandled rejection"));
  process.on("uncaughtException", (err) => {
    // State may be inconsistent: exit, and let SQS hand the un-deleted messages out again.
    log.fatal({ err }, "uncaught exception; exiting");
    process.exit(1);
  });
  /** Startup failures: one line on stderr for the person at the terminal, one JSON line for logs. */
  const refuse = (code: number, message: string, err?: unknown): number => {
    log.fatal({ ...(err ? { err } : {}) }, message);
    process.stderr.write(`octorelay start: ${message}\n`);
    return code;
  };
  const clients = createAwsClients(config.aws);
  const layer = buildLimitsLayer({ log }, config.cluster);
  log.info({ store: layer.store }, `partner limits: ${layer.description}`);
  const service = new Service({ ...clients, log, limits: layer.limits }, config);
  const metrics = new Metrics(service, config.ops);
  metrics.instrumentClients(clients);
  metrics.observeLimitsStore(layer);
  let ops: OpsServer | undefined;
  if (config.ops.enabled) {
    // The operator console, on the ops port under `/` (actions only with ops.token).
    const opsConsole = serviceConsole({ service, ...clients, log }, config);
    try {
      ops = await startOpsServer({ service, metrics, log, console: opsConsole }, config.ops);
    } catch (err) {
      await opsConsole.close();
      await layer.close();
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
      return refuse(
        2,
        `ops server: port ${config.ops.port} is in use on ${config.ops.host}; set ops.port or OCTORELAY_METRICS_PORT (0 = any free port)`,
      );
    }
  }
  // With the ops server up, so /healthz answers and /readyz says why while it waits.
  if (!(await layer.connected(REDIS_CONNECT_WAIT_MS))) {
    const health = layer.limits.health();
    log.warn(
      { reason: health.ok ? undefined : health.reason, waitedMs: REDIS_CONNECT_WAIT_MS },
      "partner limits store not reachable at start; starting anyway: partners with a rate limit wait until it answers, the others flow",
    );
  }
  // /readyz turns 503 as soon as the drain starts; the server stays up until the drain is done.
  // The limits are closed by the drain; their connection goes last.
  const exitCode = onShutdownSignal(service, log, config.shutdownDeadlineMs, async () => {
    await ops?.close();
    await layer.close();
  });
  try {
    await service.start();
  } catch (err) {
    await ops?.close();
    await layer.close();
    return refuse(1, `startup failed: ${explainError(err)}`, err);
  }
  return exitCode;
}

/**
 * `octorelay start` (`node dist/main.js`, the image's command, runs it too): load config, build the
 * AWS clients, serve ops, start every queue, drain on SIGTERM.
 */
import { createAwsClients } from "./aws-clients.ts";
import { explainError } from "./cli-errors.ts";
import { loadConfig } from "./config.ts";
import { createLogger } from "./logger.ts";
import { Metrics } from "./metrics.ts";
import { type OpsServer, startOpsServer } from "./ops-server.ts";
import { Service } from "./service.ts";
import { onShutdownSignal } from "./shutdown.ts";

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
  const service = new Service({ ...clients, log }, config);
  const metrics = new Metrics(service, config.ops);
  metrics.instrument(clients.sqs, "sqs");
  metrics.instrument(clients.s3, "s3");
  let ops: OpsServer | undefined;
  if (config.ops.enabled) {
    try {
      ops = await startOpsServer({ service, metrics, log }, config.ops);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
      return refuse(
        2,
        `ops server: port ${config.ops.port} is in use on ${config.ops.host}; set ops.port or OCTORELAY_METRICS_PORT (0 = any free port)`,
      );
    }
  }
  // /readyz turns 503 as soon as the drain starts; the server stays up until the drain is done.
  const exitCode = onShutdownSignal(service, log, config.shutdownDeadlineMs, async () => ops?.close());
  try {
    await service.start();
  } catch (err) {
    await ops?.close();
    return refuse(1, `startup failed: ${explainError(err)}`, err);
  }
  return exitCode;
}

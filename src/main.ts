/** Entry point: load config, build the AWS clients, start every queue, serve ops, drain on SIGTERM. */
import { createAwsClients } from "./aws-clients.ts";
import { type Config, loadConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { createLogger } from "./logger.ts";
import { Metrics } from "./metrics.ts";
import { type OpsServer, startOpsServer } from "./ops-server.ts";
import { Service } from "./service.ts";
import { onShutdownSignal } from "./shutdown.ts";

async function main(): Promise<number> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`octorelay: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  process.on("unhandledRejection", (err) => log.error({ err }, "unhandled rejection"));
  process.on("uncaughtException", (err) => {
    // State may be inconsistent: exit, and let SQS hand the un-deleted messages out again.
    log.fatal({ err }, "uncaught exception; exiting");
    process.exit(1);
  });
  const clients = createAwsClients(config.aws);
  const service = new Service({ ...clients, log }, config);
  const metrics = new Metrics(service, config.ops);
  metrics.instrument(clients.sqs, "sqs");
  metrics.instrument(clients.s3, "s3");
  let ops: OpsServer | undefined;
  if (config.ops.enabled) ops = await startOpsServer({ service, metrics, log }, config.ops);
  // /readyz turns 503 as soon as the drain starts; the server stays up until the drain is done.
  const exitCode = onShutdownSignal(service, log, config.shutdownDeadlineMs, async () => ops?.close());
  try {
    await service.start();
  } catch (err) {
    log.fatal({ err }, "startup failed");
    await ops?.close();
    return 1;
  }
  return exitCode;
}

process.exitCode = await main();
// Nothing should keep the loop alive after a drain; exit explicitly in case a client socket lingers.
process.exit();

/** Entry point: load config, build the AWS clients, start every queue, drain on SIGTERM. */
import { createAwsClients } from "./aws-clients.ts";
import { loadConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { createLogger } from "./logger.ts";
import { Service } from "./service.ts";
import { onShutdownSignal } from "./shutdown.ts";

async function main(): Promise<number> {
  let config: ReturnType<typeof loadConfig>;
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
  const service = new Service({ ...createAwsClients(config.aws), log }, config);
  const exitCode = onShutdownSignal(service, log, config.shutdownDeadlineMs);
  try {
    await service.start();
  } catch (err) {
    log.fatal({ err }, "startup failed");
    return 1;
  }
  return exitCode;
}

process.exitCode = await main();
// Nothing should keep the loop alive after a drain; exit explicitly in case a client socket lingers.
process.exit();

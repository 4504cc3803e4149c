/**
 * `replay` command: puts batches parked while a partner was down through to the partner.
 *
 *   npm run replay -- --account acme [--account other] | --all [--dry-run]
 */
import { parseArgs } from "node:util";
import { createAwsClients } from "./aws-clients.ts";
import { type Config, loadConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { createLogger } from "./logger.ts";
import { PartnerDirectory } from "./partners.ts";
import { replayParked } from "./replay.ts";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      account: { type: "string", multiple: true, default: [] },
      all: { type: "boolean", default: false },
      "dry-run": { type: "boolean", default: false },
    },
  });
  if (values.account.length === 0 && !values.all) {
    process.stderr.write("usage: replay --account ACCOUNT [--account ...] | --all [--dry-run]\n");
    return 2;
  }
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`octorelay replay: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  const clients = createAwsClients(config.aws);
  const partners = new PartnerDirectory({ ...clients, log, env: process.env }, config);
  const result = await replayParked({ s3: clients.s3, partners, log }, config, {
    accounts: values.account,
    dryRun: values["dry-run"],
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.failed > 0 ? 1 : 0;
}

process.exitCode = await main();

/**
 * `octorelay replay`: puts batches parked while a partner was down through to the partner.
 * `node dist/replay-cli.js …` (the image, older docs) runs the same command.
 */
import { createAwsClients } from "../aws-clients.ts";
import { loadConfig } from "../config.ts";
import { replayParked } from "../delivery/replay.ts";
import { createLogger } from "../logger.ts";
import { PartnerDirectory } from "../partners/directory.ts";

export async function replay(options: {
  account: string[];
  all: boolean;
  "dry-run": boolean;
  config?: string | undefined;
}): Promise<number> {
  if (options.account.length === 0 && !options.all) {
    process.stderr.write(
      "octorelay replay: say whose batches: --account ACCOUNT (repeatable) or --all (see octorelay replay --help)\n",
    );
    return 2;
  }
  const config = loadConfig(options.config ? { files: [options.config] } : {});
  const log = createLogger(config.logLevel);
  const clients = createAwsClients(config.aws);
  const partners = new PartnerDirectory({ ...clients, log, env: process.env }, config);
  const result = await replayParked({ s3: clients.s3, partners, log }, config, {
    accounts: options.all ? [] : options.account,
    dryRun: options["dry-run"],
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.failed > 0 ? 1 : 0;
}

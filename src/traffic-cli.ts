/** `node dist/traffic-cli.js …` (LocalStack's compose file): the same as `octorelay traffic`. */
import { runCli } from "./cli.ts";

process.exitCode = await runCli(["traffic", ...process.argv.slice(2)]);
// Nothing should keep the loop alive after the command; exit explicitly in case a client socket lingers.
process.exit();

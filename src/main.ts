/**
 * The production entry (`node dist/main.js` in the image, `node src/main.ts` from source): the same
 * as `octorelay start`, whose code is in src/cli/start.ts.
 */
import { runCli } from "./cli.ts";

process.exitCode = await runCli(["start", ...process.argv.slice(2)]);
// Nothing should keep the loop alive after the command; exit explicitly in case a client socket lingers.
process.exit();

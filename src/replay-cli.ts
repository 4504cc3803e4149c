/** `node dist/replay-cli.js …` (the image, older docs): the same as `octorelay replay`. */
import { runCli } from "./cli.ts";

process.exitCode = await runCli(["replay", ...process.argv.slice(2)]);
// Nothing should keep the loop alive after the command; exit explicitly in case a client socket lingers.
process.exit();

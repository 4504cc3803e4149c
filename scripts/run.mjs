/**
 * `node scripts/run.mjs <file.ts> [args]`: runs a TypeScript entry (bench/run.ts) on a node that meets
 * the floor, brought by scripts/ensure-node.mjs when this one is older. Plain JavaScript for old Node.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { ensureNode } from "./ensure-node.mjs";

const [file, ...args] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: node scripts/run.mjs <file.ts> [args]\n");
  process.exit(2);
}
await ensureNode(fileURLToPath(import.meta.url), { label: file });
const child = spawn(process.execPath, [file, ...args], { stdio: "inherit" });
process.on("SIGINT", () => {});
process.on("SIGTERM", () => child.kill("SIGTERM"));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));

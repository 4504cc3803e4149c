#!/usr/bin/env node
/**
 * The `octorelay` command. Plain JavaScript so that it starts on any Node: on one older than the
 * floor it brings the right Node first (scripts/ensure-node.mjs), then runs the CLI, from the
 * TypeScript sources in a clone (Node strips the types) or from dist/ in the image.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ensureNode } from "../scripts/ensure-node.mjs";

await ensureNode(fileURLToPath(import.meta.url));
const source = new URL("../src/cli.ts", import.meta.url);
const entry = existsSync(source) ? source : new URL("../dist/cli.js", import.meta.url);
const { runCli } = await import(entry.href);
process.exit(await runCli(process.argv.slice(2)));

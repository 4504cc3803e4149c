/**
 * `npm test [-- vitest args]`: the right Node (scripts/ensure-node.mjs), the system programs the suite
 * uses (installed with apt-get when missing and this is root on Debian), then `vitest run` with the
 * arguments passed through. Plain JavaScript so that it starts on old Node.
 */
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureNode } from "./ensure-node.mjs";

const LABEL = "npm test";

/** Programs the suite runs, each with the Debian package that provides it. */
export const SYSTEM_PROGRAMS = [
  { command: "redis-server", debianPackage: "redis-server", usedBy: "the shared partner-limits tests" },
  { command: "chromium", debianPackage: "chromium", usedBy: "the browser tests" },
];

function fail(message) {
  process.stderr.write(`${LABEL}: ${message}\n`);
  process.exit(1);
}

export function onPath(command, path = process.env.PATH ?? "") {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, command), constants.X_OK);
      return true;
    } catch {}
  }
  return false;
}

function ensureSystemPrograms() {
  const missing = SYSTEM_PROGRAMS.filter((p) => !onPath(p.command));
  if (missing.length === 0) return;
  const packages = missing.map((p) => p.debianPackage);
  const canInstall = process.getuid?.() === 0 && onPath("apt-get");
  if (!canInstall) {
    const first = missing[0];
    fail(
      `${missing.map((p) => p.command).join(" and ")} not found (used by ${first.usedBy}); install the Debian package${packages.length > 1 ? "s" : ""} ${packages.join(" ")} (sudo apt-get install ${packages.join(" ")})`,
    );
  }
  process.stderr.write(
    `${LABEL}: installing ${packages.join(" ")} with apt-get (missing: ${missing.map((p) => p.command).join(", ")})\n`,
  );
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [
    ["update", "-qq"],
    ["install", "-y", "-qq", "--no-install-recommends", ...packages],
  ]) {
    const result = spawnSync("apt-get", args, { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    if (result.status !== 0) {
      const why = `${result.stderr ?? ""}${result.stdout ?? ""}`.trim().split("\n").slice(-1)[0] ?? "";
      fail(
        `apt-get ${args[0]} failed (${why || result.error?.message}); install ${packages.join(" ")} yourself`,
      );
    }
  }
  const still = missing.filter((p) => !onPath(p.command));
  if (still.length > 0)
    fail(`${still.map((p) => p.command).join(", ")} still not on PATH after apt-get install`);
}

function vitestEntry() {
  const require = createRequire(import.meta.url);
  try {
    return join(dirname(require.resolve("vitest/package.json")), "vitest.mjs");
  } catch {
    return fail("vitest is not installed: run npm ci first");
  }
}

const self = fileURLToPath(import.meta.url);
if (process.argv[1] && resolve(process.argv[1]) === self) {
  await ensureNode(self, { label: LABEL });
  ensureSystemPrograms();
  const entry = vitestEntry();
  if (!existsSync(entry)) fail(`${entry} not found: run npm ci`);
  const child = spawn(process.execPath, [entry, "run", ...process.argv.slice(2)], { stdio: "inherit" });
  process.on("SIGINT", () => {});
  process.on("SIGTERM", () => child.kill("SIGTERM"));
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

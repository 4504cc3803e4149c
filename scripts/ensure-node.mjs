/**
 * Node version bootstrap shared by bin/octorelay.mjs, scripts/test.mjs and .ci/run. Plain JavaScript
 * that parses on old Node (18, 20): it must run before anything else can.
 *
 * When this node is older than the floor (package.json "engines.node", e.g. ">=24"), it installs
 * node@<floor major> from the npm registry into a cache directory once (OCTORELAY_NODE_CACHE, default
 * ~/.cache/octorelay-node) and re-runs the same script with it, saying so in one line. Where it must
 * not install (NODE_ENV=production as in the image, a built install without src/,
 * OCTORELAY_NODE_INSTALL=0, or no npm) it fails in
 * one line naming the fix.
 *
 *   node scripts/ensure-node.mjs --bin-dir   prints the bin directory of a node that meets the floor
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const APP_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The floor from package.json "engines.node" (">=24" or ">=24.3"): the one place it is declared. */
export function nodeFloor() {
  const pkg = JSON.parse(readFileSync(join(APP_ROOT, "package.json"), "utf8"));
  const match = /^>=\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(String(pkg.engines?.node ?? "").trim());
  if (!match)
    throw new Error(`package.json engines.node must read ">=MAJOR[.MINOR]"; got ${pkg.engines?.node}`);
  return [Number(match[1]), Number(match[2] ?? 0), Number(match[3] ?? 0)];
}

/** True when `version` ("20.11.1") is at least `floor` ([24, 0, 0]). */
export function meetsFloor(version, floor) {
  const parts = String(version).replace(/^v/, "").split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    const have = parts[i] ?? 0;
    const want = floor[i] ?? 0;
    if (have !== want) return have > want;
  }
  return true;
}

export function cacheDir(env = process.env) {
  return env.OCTORELAY_NODE_CACHE || join(homedir(), ".cache", "octorelay-node");
}

function cachedNode(cache) {
  const bin = join(cache, "node_modules", "node", "bin", "node");
  if (!existsSync(bin)) return undefined;
  try {
    const { version } = JSON.parse(readFileSync(join(cache, "node_modules", "node", "package.json"), "utf8"));
    return { bin, version };
  } catch {
    return undefined;
  }
}

/** Why this machine must not install a node by itself, or undefined when it may. */
function installRefusal(env) {
  if (env.OCTORELAY_NODE_INSTALL === "0") return "OCTORELAY_NODE_INSTALL=0";
  if (env.NODE_ENV === "production") return "NODE_ENV=production";
  // The image holds dist/ and no src/: a production install, whose node is the image's to choose.
  if (!existsSync(join(APP_ROOT, "src"))) return "this is a production install (no src/)";
  return undefined;
}

function fail(label, message) {
  process.stderr.write(`${label}: ${message}\n`);
  process.exit(1);
}

/**
 * Returns the path of a node that meets the floor: this one, the cached one, or one installed now.
 * `say` is told the one line to print when it is not this one.
 */
export function resolveNode({
  label = "octorelay",
  env = process.env,
  say = (line) => process.stderr.write(`${line}\n`),
} = {}) {
  const floor = nodeFloor();
  const floorText = floor.slice(0, floor[2] ? 3 : floor[1] ? 2 : 1).join(".");
  if (meetsFloor(process.versions.node, floor)) return process.execPath;
  const here = `node v${process.versions.node} is older than ${floorText} (package.json engines)`;
  if (env.OCTORELAY_NODE_REEXEC === process.execPath) {
    // This is the node it re-ran with, and still too old: the cache is not what it says; never loop.
    fail(
      label,
      `${here}, even when re-run with ${env.OCTORELAY_NODE_REEXEC}; remove ${cacheDir(env)} and try again`,
    );
  }
  const cache = cacheDir(env);
  const cached = cachedNode(cache);
  if (cached && meetsFloor(cached.version, floor)) {
    say(`${label}: ${here}; running with node v${cached.version} from ${cache}`);
    return cached.bin;
  }
  const refusal = installRefusal(env);
  if (refusal) {
    fail(
      label,
      `${here} and ${refusal}, so it will not install one: run it on Node ${floorText} or later (the node:${floor[0]} image; nvm install ${floor[0]})`,
    );
  }
  say(
    `${label}: ${here}; installing node@${floor[0]} from the npm registry into ${cache} (once), then running with it`,
  );
  // Into a fresh directory, renamed into place when complete: a concurrent or interrupted install
  // never leaves a half-written node where the next run would pick it up.
  const staging = `${cache}.installing-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const result = spawnSync(
    npm,
    [
      "install",
      "--no-save",
      "--no-audit",
      "--no-fund",
      "--loglevel=error",
      "--prefix",
      staging,
      `node@${floor[0]}`,
    ],
    { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8", env },
  );
  if (result.error || result.status !== 0) {
    rmSync(staging, { recursive: true, force: true });
    const why = result.error ? result.error.message : (result.stderr || "").trim().split("\n").pop();
    fail(
      label,
      `could not install node@${floor[0]} with npm (${why}); install Node ${floorText} or later yourself (nvm install ${floor[0]})`,
    );
  }
  const installed = cachedNode(staging);
  if (!installed || !meetsFloor(installed.version, floor)) {
    rmSync(staging, { recursive: true, force: true });
    fail(
      label,
      `npm installed no usable node@${floor[0]} into ${staging}; install Node ${floorText} or later yourself (nvm install ${floor[0]})`,
    );
  }
  rmSync(cache, { recursive: true, force: true });
  mkdirSync(dirname(cache), { recursive: true });
  renameSync(staging, cache);
  return join(cache, "node_modules", "node", "bin", "node");
}

/**
 * Makes sure `script` runs on a node that meets the floor: returns at once when this one does;
 * otherwise runs `script` with the right node (its bin directory first on PATH, so anything it
 * spawns by name gets the same node), forwards signals to it and exits with its exit code.
 */
export async function ensureNode(script, { label = "octorelay", args = process.argv.slice(2) } = {}) {
  const node = resolveNode({ label });
  if (node === process.execPath) return;
  const env = {
    ...process.env,
    PATH: `${dirname(node)}${process.platform === "win32" ? ";" : ":"}${process.env.PATH ?? ""}`,
  };
  const child = spawn(node, [...process.execArgv, script, ...args], { stdio: "inherit", env });
  // Ctrl-C reaches the child from the terminal itself (same process group): forwarding SIGINT too
  // would be a second signal, which cuts a drain short. Signals sent to this pid alone are passed on.
  process.on("SIGINT", () => {});
  for (const signal of ["SIGTERM", "SIGHUP"]) {
    process.on(signal, () => child.kill(signal));
  }
  const code = await new Promise((resolveExit) => {
    child.on("error", (err) => fail(label, `could not run ${node}: ${err.message}`));
    child.on("exit", (exitCode, signal) =>
      resolveExit(exitCode ?? (signal ? 128 + (signalNumbers[signal] ?? 1) : 1)),
    );
  });
  process.exit(code);
}

const signalNumbers = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

// `node scripts/ensure-node.mjs --bin-dir` (used by .ci/run): prints where a good node lives.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (process.argv[2] !== "--bin-dir") fail("ensure-node", "usage: node scripts/ensure-node.mjs --bin-dir");
  const node = resolveNode({ label: process.env.OCTORELAY_NODE_LABEL || "octorelay" });
  process.stdout.write(`${dirname(node)}\n`);
}

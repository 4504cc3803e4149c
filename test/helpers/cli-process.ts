/** Runs `octorelay …` (bin/octorelay.mjs) as a real process, as a user would from a clone. */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const BIN = fileURLToPath(new URL("../../bin/octorelay.mjs", import.meta.url));
export const APP = fileURLToPath(new URL("../../", import.meta.url));

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stderr's lines, without the launcher's own note about which node runs it. */
  errorLines: string[];
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  /** Written to stdin, then closed; without it stdin is empty (not a terminal). */
  input?: string;
  cwd?: string;
  /** The script to run instead of bin/octorelay.mjs (a copy of the app elsewhere). */
  script?: string;
  node?: string;
  /** Told each chunk of stdout as it arrives. */
  onStdout?: (text: string) => void;
  timeoutMs?: number;
}

/** A small environment: no AWS credentials or config from the machine unless a test passes them. */
export function baseEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", NODE_ENV: "test" };
}

export function runOctorelay(
  args: string[],
  options: CliOptions = {},
): Promise<CliRun> & { kill(signal: NodeJS.Signals): void } {
  const env = { ...baseEnv(), ...options.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const child = spawn(options.node ?? process.execPath, [options.script ?? BIN, ...args], {
    env: env as Record<string, string>,
    cwd: options.cwd ?? APP,
    stdio: ["pipe", "pipe", "pipe"],
    // Its own process group, so a run that hangs is killed with everything it started.
    detached: true,
  });
  child.stdin.end(options.input ?? "");
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
    options.onStdout?.(chunk);
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => {
    if (child.pid) process.kill(-child.pid, "SIGKILL");
  }, options.timeoutMs ?? 90_000);
  const done = new Promise<CliRun>((resolve) => {
    child.on("close", (code) => {
      clearTimeout(timer);
      const errorLines = stderr
        .split("\n")
        .filter((l) => l !== "" && !/^octorelay: node v[\d.]+ is older than/.test(l));
      resolve({ code, stdout, stderr, errorLines });
    });
  });
  return Object.assign(done, { kill: (signal: NodeJS.Signals) => child.kill(signal) });
}

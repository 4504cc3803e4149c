/** Runs the real service entry point (src/main.ts) as a child process against the test emulator. */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Emulator } from "./emulator.ts";
import { FIXTURE_HANDLERS } from "./service.ts";

const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

/** Every child still running; a test that times out must not leave a service behind it. */
const running = new Set<ChildProcess>();
process.once("exit", killAllServices);

/** SIGKILLs every service process a test left running (afterAll of files that spawn them). */
export function killAllServices(): void {
  for (const child of running) child.kill("SIGKILL");
}

export interface ServiceProcess {
  child: ChildProcess;
  /** Raw stdout, for checks on what was logged. */
  output(): string;
  /** Parsed pino lines so far. */
  logs: Record<string, unknown>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnService(
  emu: Emulator,
  config: object,
  env: Record<string, string> = {},
): ServiceProcess {
  const dir = mkdtempSync(join(tmpdir(), "octorelay-proc-"));
  const file = join(dir, "config.json");
  writeFileSync(file, JSON.stringify(config));
  const child = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env.PATH ?? "",
      NODE_ENV: "test",
      AWS_ENDPOINT_URL: emu.endpoint,
      AWS_REGION: emu.region,
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
      OCTORELAY_CONFIG: file,
      OCTORELAY_HANDLERS_DIR: FIXTURE_HANDLERS,
      OCTORELAY_LOG_LEVEL: "info",
      // Several processes may run at once: each ops server takes any free port.
      OCTORELAY_METRICS_PORT: "0",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  let partial = "";
  let raw = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    raw += chunk;
    const lines = (partial + chunk).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line });
      }
    }
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  running.add(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => {
      running.delete(child);
      if (stderr.trim()) logs.push({ msg: "stderr", stderr });
      resolve({ code, signal });
    });
  });
  return { child, logs, exited, output: () => raw };
}

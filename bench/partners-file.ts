/**
 * Startup cost of a large partners file: writes a file of N per-account overrides (a realistic mix
 * of rate limits, HTTP / SQS / S3 destination overrides, breaker and park settings), then times
 * loadConfig on it, each run in a fresh process as at startup.
 *
 *   node bench/partners-file.ts                              50,000 accounts, 3 runs
 *   node bench/partners-file.ts --accounts 5000 --runs 1
 *
 * Per run: loadConfig wall time, the heap grown by the time it returns (garbage included: what the
 * process must have room for at startup) and the heap the loaded Config retains after a full GC.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadConfig } from "../src/config.ts";

const { values: args } = parseArgs({
  options: {
    accounts: { type: "string", default: "50000" },
    runs: { type: "string", default: "3" },
    /** Internal: load this config dir once and print one JSON line. */
    child: { type: "string" },
  },
});

const SELF = fileURLToPath(import.meta.url);
const PASSTHROUGH = fileURLToPath(new URL("../handlers/passthrough.ts", import.meta.url));

interface RunResult {
  loadMs: number;
  heapGrownMB: number;
  heapRetainedMB: number;
  overrides: number;
}

/** One run, in this (fresh) process: what startup pays. */
function measure(configDir: string): RunResult {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("a measured run needs --expose-gc");
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const started = performance.now();
  const config = loadConfig({ configDir, env: {}, files: [] });
  const loadMs = performance.now() - started;
  const heapGrown = process.memoryUsage().heapUsed - heapBefore;
  gc();
  const heapRetained = process.memoryUsage().heapUsed - heapBefore;
  return {
    loadMs,
    heapGrownMB: heapGrown / 1024 / 1024,
    heapRetainedMB: heapRetained / 1024 / 1024,
    overrides: config.partners.overrides.size,
  };
}

/** One account's override; the mix is fixed by index so every run (and every commit) loads the same file. */
function entry(i: number): Record<string, unknown> {
  const rateLimit = { requests: 5 + (i % 46), intervalMs: 1000 };
  switch (i % 10) {
    case 5:
    case 6:
      return {
        rateLimit,
        destination: {
          type: "http",
          url: `https://partner-${i}.example/ingest/{account}`,
          authTokenEnv: `PARTNER_${i}_TOKEN`,
          headers: { "x-source": "octorelay" },
          format: i % 2 === 0 ? "json" : "ndjson",
        },
      };
    case 7:
      return {
        destination: {
          type: "sqs",
          queueUrl: "https://sqs.us-east-1.amazonaws.com/123456789012/{account}-in",
        },
      };
    case 8:
      return { flushIntervalMs: 250, maxRecords: 200, breaker: { failures: 3, cooldownMs: 10_000 } };
    case 9:
      return {
        onOutage: "park",
        giveUpAfterMs: 120_000,
        destination: { bucket: "{account}-deliveries", gzip: false },
      };
    default:
      return { rateLimit };
  }
}

function main(): void {
  const accounts = Number(args.accounts);
  const runs = Number(args.runs);
  if (!Number.isInteger(accounts) || accounts < 1 || !Number.isInteger(runs) || runs < 1) {
    process.stderr.write("usage: node bench/partners-file.ts [--accounts N] [--runs N]\n");
    process.exit(2);
  }
  const dir = mkdtempSync(join(tmpdir(), "octorelay-partners-bench-"));
  try {
    const partners: Record<string, unknown> = {};
    for (let i = 0; i < accounts; i++) {
      // Some account names hold dots, as real ones do ("globex.io").
      partners[i % 25 === 0 ? `acct-${i}.example.io` : `acct-${i}`] = entry(i);
    }
    const partnersFile = join(dir, "partners.json");
    writeFileSync(partnersFile, JSON.stringify(partners, null, 2));
    const configDir = join(dir, "config");
    mkdirSync(configDir);
    writeFileSync(
      join(configDir, "default.json"),
      JSON.stringify({
        destination: { bucket: "deliveries" },
        partners: { file: partnersFile },
        queues: [{ queue: "orders", handler: PASSTHROUGH }],
      }),
    );
    const results: RunResult[] = [];
    for (let run = 1; run <= runs; run++) {
      const out = execFileSync(process.execPath, ["--expose-gc", SELF, "--child", configDir], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "inherit"],
      });
      const r = JSON.parse(out.trim().split("\n").pop() ?? "") as RunResult;
      if (r.overrides !== accounts) throw new Error(`expected ${accounts} overrides, loaded ${r.overrides}`);
      results.push(r);
      process.stdout.write(
        `run ${run}: loadConfig ${r.loadMs.toFixed(0)} ms, heap +${r.heapGrownMB.toFixed(1)} MB on return, ` +
          `+${r.heapRetainedMB.toFixed(1)} MB retained (${accounts} accounts)\n`,
      );
    }
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? 0;
    process.stdout.write(
      `median of ${runs}: loadConfig ${median(results.map((r) => r.loadMs)).toFixed(0)} ms, ` +
        `heap +${median(results.map((r) => r.heapGrownMB)).toFixed(1)} MB on return, ` +
        `+${median(results.map((r) => r.heapRetainedMB)).toFixed(1)} MB retained\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (args.child) process.stdout.write(`${JSON.stringify(measure(args.child))}\n`);
else main();

/**
 * The handler hop alone: HandlerPool with the passthrough handler in its worker threads, kept full
 * the way the poller keeps it (ten messages at a time while there is room), with no SQS, no
 * dispatchers and no emulator beside it. Prints msgs/s and CPU µs per message: the process's, the
 * main thread's, and the rest (worker threads and V8's helpers).
 *
 *   node bench/handler-pool.ts [--messages 200000] [--runs 3] [--threads 2] [--concurrency 32]
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import type { HandlerTask } from "../src/pipeline/handler-hop.ts";
import { HandlerPool } from "../src/pipeline/handler-pool.ts";

const { values: args } = parseArgs({
  options: {
    messages: { type: "string", default: "200000" },
    runs: { type: "string", default: "3" },
    threads: { type: "string", default: "2" },
    concurrency: { type: "string", default: "32" },
  },
});
const messages = Number(args.messages);
const concurrency = Number(args.concurrency);

const pool = new HandlerPool(
  { log: pino({ level: "warn" }), events: { emit() {} } },
  {
    queue: "bench",
    handlerPath: fileURLToPath(new URL("../handlers/passthrough.ts", import.meta.url)),
    concurrency,
    threads: Number(args.threads),
    prefetch: 40,
    handlerTimeoutMs: 30_000,
  },
);
await pool.start();

// What a 300 B message of the main bench looks like to its handler.
const body = JSON.stringify({ account: "acct-1", seq: 1, data: "x".repeat(250) });
const task = (i: number): HandlerTask => ({
  id: `9c0b6f5e-0000-4000-8000-${String(i).padStart(12, "0")}`,
  body,
  attributes: {
    SenderId: "AIDAIENQZJOLO23YVJ4VO",
    ApproximateFirstReceiveTimestamp: "1764590000000",
    ApproximateReceiveCount: "1",
    SentTimestamp: "1764590000000",
  },
  messageAttributes: {},
  receiveCount: 1,
  receivedAt: "2026-12-01T12:00:00.000Z",
});

/** Runs `count` messages through the pool, refilling it ten at a time as slots free. */
function drain(count: number): Promise<void> {
  let sent = 0;
  let done = 0;
  return new Promise((resolve) => {
    const fill = () => {
      while (pool.capacity - pool.occupied >= 10 && sent < count) {
        for (let k = 0; k < 10 && sent < count; k++) {
          pool.submit(task(sent++), () => {
            if (++done === count) {
              pool.off("free", fill);
              resolve();
            }
          });
        }
      }
    };
    pool.on("free", fill);
    fill();
  });
}

await drain(10_000); // warm-up: the handler is loaded and the running mean settles
const perMsg = (cpu: { user: number; system: number }) => (cpu.user + cpu.system) / messages;
for (let run = 1; run <= Number(args.runs); run++) {
  const process0 = process.cpuUsage();
  const main0 = process.threadCpuUsage();
  const startedMs = performance.now();
  await drain(messages);
  const ms = performance.now() - startedMs;
  const all = perMsg(process.cpuUsage(process0));
  const main = perMsg(process.threadCpuUsage(main0));
  console.log(
    `run ${run}: ${messages} messages, ${Math.round((messages / ms) * 1000)} msg/s; CPU µs/msg: ` +
      `process ${all.toFixed(2)}, main thread ${main.toFixed(2)}, other threads ${(all - main).toFixed(2)}`,
  );
}
await pool.close();

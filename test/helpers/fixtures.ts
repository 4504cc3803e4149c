/**
 * The integration tests' set-up and tear-down, once: `it` (and `test`) give each test what it names
 * in its first argument and undo it after the test, whatever the test's outcome.
 *
 *   it("…", async ({ emulator: emu, queue: q, bucket, startService }) => { … });
 *
 * - `emulator`: one per file (fauxqs in this process, or LocalStack when AWS_ENDPOINT_URL is set).
 * - `queue`: a fresh queue with its dead-letter queue and redrive policy; `bucket`: a fresh bucket.
 *   A test that wants other queue settings calls `createQueue(emu, { … })` itself.
 * - `startService` / `spawnService`: the helpers of service.ts / process.ts bound to the emulator;
 *   what they start is stopped (in-process) or SIGKILLed (child process) after the test.
 * - `partnerServer` (one), `startPartnerServer` (as many as wanted), `startFaultProxy` (in front of
 *   the emulator): put back up, then closed, after the test; `startHttpServer(handler)`: an endpoint
 *   the test writes itself, closed after it.
 * - `slowHandlers`: what test/fixtures/handlers/slow.ts announces, and `release()` for blocked ones.
 * - `teardown`: for anything else a test starts (`teardown.close(fn)`).
 * - `stopTimeoutMs`: how long a service may take to stop after the test (`it.override` per suite).
 */
import type { RequestListener } from "node:http";
import type { S3Client } from "@aws-sdk/client-s3";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { test as base } from "vitest";
import type { Service } from "../../src/service.ts";
import { createBucket, createQueue, startEmulator } from "./emulator.ts";
import { type FaultMode, startFaultProxy } from "./fault-proxy.ts";
import { listenOnLoopback, startPartnerServer } from "./partner-server.ts";
import { type ServiceProcess, spawnService } from "./process.ts";
import { type ServiceOverrides, startService } from "./service.ts";

/**
 * What one test started, undone in the order that lets each part finish: first everything a
 * service talks to is put back up (so its drain needs no deadline), then services stop, then
 * servers close (a service still draining must not meet a closed port).
 */
export class Teardown {
  readonly #heals: (() => void)[] = [];
  readonly #stops: (() => Promise<unknown>)[] = [];
  readonly #closes: (() => Promise<unknown>)[] = [];

  /** Runs first: put a partner or a proxy back up, release blocked handlers. */
  heal(fn: () => void): void {
    this.#heals.push(fn);
  }
  /** Runs second, last registered first: stop a service or a process. */
  stop(fn: () => Promise<unknown>): void {
    this.#stops.push(fn);
  }
  /** Runs last, last registered first: close a server. */
  close(fn: () => Promise<unknown>): void {
    this.#closes.push(fn);
  }

  async run(): Promise<void> {
    const errors: unknown[] = [];
    const attempt = async (fn: () => unknown) => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    };
    for (const fn of this.#heals.splice(0)) await attempt(fn);
    for (const fn of this.#stops.splice(0).reverse()) await attempt(fn);
    for (const fn of this.#closes.splice(0).reverse()) await attempt(fn);
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "several teardowns failed");
  }
}

/** Stops once: a test that stops its service itself is not stopped a second time after it. */
function stopOnce(service: Service): Service {
  const stop = service.stop.bind(service);
  let stopping: Promise<number> | undefined;
  service.stop = (deadline) => {
    stopping ??= stop(deadline);
    return stopping;
  };
  return service;
}

/** Handlers of slow.ts running now, the most seen at once and how many started, in this test. */
export interface SlowHandlers {
  running: { now: number; max: number; started: number };
  /** Lets every handler waiting on `block: true` finish (and those that start later). */
  release(): void;
}

export const test = base
  // biome-ignore lint/correctness/noEmptyPattern: vitest reads what a fixture needs from this pattern
  .extend("emulator", { scope: "file" }, async ({}, { onCleanup }) => {
    const emulator = await startEmulator();
    onCleanup(() => emulator.stop());
    return emulator;
  })
  .extend("stopTimeoutMs", 10_000)
  // biome-ignore lint/correctness/noEmptyPattern: vitest reads what a fixture needs from this pattern
  .extend("teardown", async ({}, { onCleanup }) => {
    const teardown = new Teardown();
    onCleanup(() => teardown.run());
    return teardown;
  })
  .extend("queue", ({ emulator }) => createQueue(emulator))
  .extend("bucket", ({ emulator }) => createBucket(emulator))
  .extend(
    "startPartnerServer",
    ({ teardown }) =>
      async (options?: Parameters<typeof startPartnerServer>[0]) => {
        const server = await startPartnerServer(options);
        teardown.heal(() => {
          server.mode = "up";
          delete server.statusFor;
        });
        teardown.close(() => server.close());
        return server;
      },
  )
  .extend("partnerServer", ({ startPartnerServer }) => startPartnerServer())
  .extend("startHttpServer", ({ teardown }) => async (handler: RequestListener) => {
    const server = await listenOnLoopback(handler);
    teardown.close(() => server.close());
    return server;
  })
  .extend("startFaultProxy", ({ emulator, teardown }) => async (mode?: FaultMode) => {
    const proxy = await startFaultProxy(emulator.endpoint, mode);
    teardown.heal(() => {
      proxy.mode = "pass";
    });
    teardown.close(() => proxy.close());
    return proxy;
  })
  .extend("slowHandlers", ({ teardown }): SlowHandlers => {
    const channel = new BroadcastChannel("octorelay-test");
    const running = { now: 0, max: 0, started: 0 };
    channel.onmessage = (event: MessageEvent) => {
      const data = event.data as { event?: string };
      if (data.event === "start") {
        running.now++;
        running.started++;
        running.max = Math.max(running.max, running.now);
      } else if (data.event === "end") {
        running.now--;
      }
    };
    const release = () => channel.postMessage("release");
    teardown.heal(release);
    teardown.close(async () => channel.close());
    return { running, release };
  })
  .extend(
    "startService",
    ({ emulator, teardown, stopTimeoutMs }) =>
      async (
        overrides: ServiceOverrides,
        clients: { sqs?: SQSClient; sqsPolls?: SQSClient; s3?: S3Client; env?: NodeJS.ProcessEnv } = {},
      ): Promise<Service> => {
        const service = stopOnce(await startService(emulator, overrides, clients));
        teardown.stop(() => service.stop(AbortSignal.timeout(stopTimeoutMs)));
        return service;
      },
  )
  .extend("spawnService", ({ emulator, teardown }) => (config: object, env?: Record<string, string>) => {
    const proc: ServiceProcess = spawnService(emulator, config, env);
    teardown.stop(async () => {
      proc.child.kill("SIGKILL"); // a no-op for one that has exited
      await proc.exited;
    });
    return proc;
  });

export const it = test;

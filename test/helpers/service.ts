/** Builds a real Service (real SDK clients, real worker threads) against the test emulator. */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { S3Client } from "@aws-sdk/client-s3";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { pino } from "pino";
import { loadConfig } from "../../src/config.ts";
import { Service } from "../../src/service.ts";
import type { Emulator } from "./emulator.ts";

export const SAMPLE_HANDLERS = fileURLToPath(new URL("../../handlers/", import.meta.url));
export const FIXTURE_HANDLERS = fileURLToPath(new URL("../fixtures/handlers/", import.meta.url));

export interface ServiceOverrides {
  queues: Record<string, unknown>[];
  partners?: Record<string, unknown>;
  dispatch?: Record<string, unknown>;
  destination?: Record<string, unknown>;
  shutdown?: Record<string, unknown>;
}

/** The config a test would write: no file on disk but the overrides, endpoints from the emulator. */
export function testConfig(emu: Emulator, overrides: ServiceOverrides) {
  return loadConfig({
    env: { AWS_ENDPOINT_URL: emu.endpoint, AWS_REGION: emu.region, OCTORELAY_HANDLERS_DIR: FIXTURE_HANDLERS },
    configDir: mkdtempSync(join(tmpdir(), "octorelay-config-")),
    files: [],
    overrides: overrides as unknown as Record<string, unknown>,
  });
}

export function sampleHandler(name: string): string {
  return resolve(SAMPLE_HANDLERS, name);
}

export async function startService(
  emu: Emulator,
  overrides: ServiceOverrides,
  clients: { sqs?: SQSClient; sqsPolls?: SQSClient; s3?: S3Client; env?: NodeJS.ProcessEnv } = {},
): Promise<Service> {
  const log = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const service = new Service(
    {
      sqs: clients.sqs ?? emu.sqs,
      ...(clients.sqsPolls ? { sqsPolls: clients.sqsPolls } : {}),
      s3: clients.s3 ?? emu.s3,
      log,
      env: clients.env ?? {},
    },
    testConfig(emu, overrides),
  );
  await service.start();
  return service;
}

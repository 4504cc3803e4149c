/**
 * octorelay itself, through the real service code path: loadConfig (no file on disk, the bench's
 * settings as overrides), the production AWS clients (with the bench's meter added to their
 * middleware stacks), and Service with the passthrough handler in its piscina pool, per-account
 * dispatchers, gzip NDJSON objects to S3, and deletes after delivery. Runs from source.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { createAwsClients } from "../../src/aws-clients.ts";
import { loadConfig } from "../../src/config.ts";
import { Service } from "../../src/service.ts";
import { runContender } from "../lib/contender.ts";

const PASSTHROUGH = fileURLToPath(new URL("../../handlers/passthrough.ts", import.meta.url));

await runContender(async (spec, meter) => {
  const config = loadConfig({
    env: { AWS_ENDPOINT_URL: spec.endpoint, AWS_REGION: spec.region },
    configDir: mkdtempSync(join(tmpdir(), "octorelay-bench-config-")),
    files: [],
    overrides: {
      log: { level: spec.logLevel },
      destination: { bucket: spec.bucket },
      queues: [{ queue: spec.queueName, handler: PASSTHROUGH, ...spec.octorelay }],
    },
  });
  const clients = createAwsClients(config.aws);
  meter.attachSqs(clients.sqs);
  meter.attachS3(clients.s3);
  const log = pino({ level: config.logLevel, base: { contender: "octorelay" } }, pino.destination(2));
  const service = new Service({ ...clients, log }, config);
  await service.start();
  const relay = service.relays[0];
  if (!relay) throw new Error("the bench config declares one queue; the service has none");
  return {
    async stop() {
      await service.stop(AbortSignal.timeout(config.shutdownDeadlineMs));
    },
    activeDispatchers: () => relay.activeDispatchers,
    unacked: () => relay.unacked,
    figures: () => ({
      dispatchersSpawned: relay.stats.dispatchersSpawned,
      objects: relay.stats.flushes,
      flushedRecords: relay.stats.flushedRecords,
      flushedBytes: relay.stats.flushedBytes,
      handlerFailures: relay.stats.handlerFailures,
      deadLettered: relay.stats.deadLettered,
      released: relay.stats.released,
    }),
  };
});

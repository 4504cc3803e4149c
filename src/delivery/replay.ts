/**
 * Replay of parked batches: delivers what was parked in S3 while a partner was down to the partner's
 * destination, within its limits, and deletes each parked object once its batch is delivered.
 */
import { gunzipSync } from "node:zlib";
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from "@aws-sdk/client-s3";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { encodeKeySegment } from "../destinations/s3.ts";
import type { PartnerDirectory } from "../partners/directory.ts";
import { DeliveryStack } from "./stack.ts";

export interface ReplayResult {
  batches: number;
  records: number;
  failed: number;
}

/** Replays every parked batch of `accounts` (all parked accounts when empty). */
export async function replayParked(
  deps: { s3: S3Client; partners: PartnerDirectory; log: Logger },
  config: Config,
  options: { accounts: string[]; dryRun?: boolean; signal?: AbortSignal; attempts?: number },
): Promise<ReplayResult> {
  const { s3, partners, log } = deps;
  const { bucket, prefix } = config.partners.park;
  const result: ReplayResult = { batches: 0, records: 0, failed: 0 };
  const prefixes = options.accounts.length
    ? options.accounts.map((a) => `${prefix}${encodeKeySegment(a)}/`)
    : [prefix];
  const signal = options.signal ?? new AbortController().signal;
  for (const listPrefix of prefixes) {
    let token: string | undefined;
    do {
      const page = await s3.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: listPrefix, ContinuationToken: token }),
      );
      for (const object of page.Contents ?? []) {
        const key = object.Key as string;
        // parked/{account}/{queue}/yyyy/MM/dd/{batchId}.ndjson.gz
        const [accountPart, queue] = key.slice(prefix.length).split("/");
        const account = decodeURIComponent(accountPart ?? "");
        const batchId = (key.split("/").pop() ?? "").replace(/\.ndjson(\.gz)?$/, "");
        const queueConfig = config.queues.find((q) => q.name === queue);
        if (!queueConfig) {
          log.error({ key, queue }, "parked batch of a queue no longer configured; left in place");
          result.failed++;
          continue;
        }
        const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        const bytes = Buffer.from(
          await (got.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
        );
        const text = (key.endsWith(".gz") ? gunzipSync(bytes) : bytes).toString("utf8");
        const lines = text
          .split("\n")
          .filter(Boolean)
          .map((l) => `${l}\n`);
        if (options.dryRun) {
          log.info({ key, account, records: lines.length }, "would replay");
          result.batches++;
          result.records += lines.length;
          continue;
        }
        const profile = partners.profile(queueConfig, account);
        const { retryBaseMs, retryMaxMs } = profile.dispatch;
        const batch = {
          queue: queueConfig.name,
          account,
          batchId,
          createdAt: new Date(),
          lines,
          bytes: Buffer.byteLength(text),
        };
        // The partner's stack without a give-up bound or a park path: a number of tries, then left in place.
        const stack = new DeliveryStack(
          { limits: partners.partner(account), destination: profile.destination },
          { retryBaseMs, retryMaxMs, maxAttempts: options.attempts ?? 8 },
        );
        const outcome = await stack.deliver(batch, signal);
        if (outcome.outcome !== "delivered") {
          log.error(
            { err: outcome.error, key, account },
            "replay of a parked batch failed; left in place for the next replay",
          );
          result.failed++;
          continue;
        }
        await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
        // Delivered and gone from S3: the partner no longer counts it, so it stops saying "parked"
        // once all it parked is replayed (a batch parked before a restart was never counted here).
        const partner = partners.partner(account);
        if (partner.parkedBatches > 0) partner.parkedBatches--;
        result.batches++;
        result.records += lines.length;
        log.info({ key, account, records: lines.length }, "parked batch replayed");
      }
      token = page.NextContinuationToken;
    } while (token);
  }
  return result;
}

import { promisify } from "node:util";
import { gzip as gzipCallback, gzipSync } from "node:zlib";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { S3DestinationConfig } from "../config.ts";
import { DeliveryError } from "../errors.ts";
import { type Batch, type Destination, renderTarget } from "./destination.ts";

const gzip = promisify(gzipCallback);
const SYNC_GZIP_BELOW_BYTES = 64 * 1024;

/** One object per batch: gzip NDJSON under a key built from the template, in a bucket that may be per partner. */
export class S3Destination implements Destination {
  readonly kind = "s3";
  readonly #s3: S3Client;
  readonly #options: S3DestinationConfig;

  constructor(deps: { s3: S3Client }, options: S3DestinationConfig) {
    this.#s3 = deps.s3;
    this.#options = options;
  }

  bucketFor(batch: Pick<Batch, "account" | "queue">): string {
    // Bucket names allow lowercase letters, digits, dots and hyphens only.
    return renderTarget(this.#options.bucket, batch, (s) => s.toLowerCase().replace(/[^a-z0-9.-]/g, "-"));
  }

  keyFor(batch: Batch): string {
    return renderKey(this.#options.keyTemplate, batch);
  }

  /**
   * No abort signal is passed to the SDK (calls with per-call options skip its middleware cache);
   * a write still running when its dispatcher gives up simply completes, and the released messages
   * come back as duplicates, never as a loss.
   */
  async deliver(batch: Batch, _signal: AbortSignal): Promise<void> {
    const text = batch.lines.join("");
    // Most batches are a few KB: zlib's thread pool costs more per call (~0.4 ms CPU) than
    // compressing them right here (~30 µs). Large ones still go to the pool.
    const body = !this.#options.gzip
      ? Buffer.from(text)
      : batch.bytes < SYNC_GZIP_BELOW_BYTES
        ? gzipSync(text)
        : await gzip(text);
    const bucket = this.bucketFor(batch);
    const sse = this.#options.serverSideEncryption;
    try {
      await this.#s3.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: this.keyFor(batch),
          Body: body,
          ContentType: "application/x-ndjson",
          ...(this.#options.gzip ? { ContentEncoding: "gzip" } : {}),
          ...(sse ? { ServerSideEncryption: sse } : {}),
          ...(sse === "aws:kms" && this.#options.kmsKeyId ? { SSEKMSKeyId: this.#options.kmsKeyId } : {}),
          Metadata: { records: String(batch.lines.length), queue: batch.queue, account: batch.account },
        }),
      );
    } catch (err) {
      const code = (err as Error).name;
      throw new DeliveryError(
        `S3 PutObject to ${bucket} failed: ${code}: ${(err as Error).message}`,
        // Every S3 failure is worth retrying: even AccessDenied or NoSuchBucket is fixed by an operator,
        // not by dead-lettering the data. A batch that keeps failing is given up after giveUpAfterMs.
        { destination: this.kind, account: batch.account, retryable: true },
        { cause: err },
      );
    }
  }
}

const pad = (n: number, width = 2) => String(n).padStart(width, "0");

export function renderKey(template: string, batch: Batch): string {
  const d = batch.createdAt;
  const fields: Record<string, string> = {
    queue: batch.queue,
    account: encodeKeySegment(batch.account),
    yyyy: String(d.getUTCFullYear()),
    MM: pad(d.getUTCMonth() + 1),
    dd: pad(d.getUTCDate()),
    HH: pad(d.getUTCHours()),
    mm: pad(d.getUTCMinutes()),
    batchId: batch.batchId,
  };
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => fields[name] ?? whole);
}

/** Accounts come from handler output: keep them from adding path segments or odd characters to keys. */
export function encodeKeySegment(account: string): string {
  return account.replace(/[^A-Za-z0-9._=-]/gu, (c) =>
    [...Buffer.from(c)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`).join(""),
  );
}

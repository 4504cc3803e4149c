import { promisify } from "node:util";
import { gzip as gzipCallback, gzipSync } from "node:zlib";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { S3DestinationConfig } from "../config.ts";
import { DeliveryError } from "../errors.ts";
import {
  type Batch,
  type Destination,
  hasLoneSurrogate,
  namingError,
  overrideKey,
  renderTarget,
} from "./destination.ts";

const gzip = promisify(gzipCallback);
const SYNC_GZIP_BELOW_BYTES = 64 * 1024;
/** S3's limits on one object's key and on its user metadata (keys plus values, UTF-8). */
const MAX_KEY_BYTES = 1024;
const MAX_METADATA_BYTES = 2048;

const BUCKET_RULES =
  "bucket names are 3–63 lowercase letters, digits, hyphens and dots, beginning and ending with a letter or digit";

/** One object per batch: gzip NDJSON under a key built from the template, in a bucket that may be per partner. */
export class S3Destination implements Destination {
  readonly kind = "s3";
  readonly #s3: S3Client;
  readonly #options: S3DestinationConfig;

  constructor(deps: { s3: S3Client }, options: S3DestinationConfig) {
    this.#s3 = deps.s3;
    this.#options = options;
  }

  /**
   * The account goes into the bucket name as it is, or not at all: lowercasing or replacing its
   * characters would give two accounts (`ACME` and `acme`, `x_y` and `x-y`) one bucket. A name that
   * does not fit is a DeliveryError that is not retryable.
   */
  bucketFor(batch: Pick<Batch, "account" | "queue">): string {
    const template = this.#options.bucket;
    // Queue names come from the configuration, not from handlers: they keep today's mapping.
    const bucket = renderTarget(template, batch, (s, field) =>
      field === "account" ? s : s.toLowerCase().replace(/[^a-z0-9.-]/g, "-"),
    );
    // A fixed bucket is the operator's to name (legacy buckets may break today's rules): S3 decides.
    if (!template.includes("{account}")) return bucket;
    const problem = accountProblem(batch.account) ?? bucketNameProblem(bucket);
    if (problem === undefined) return bucket;
    throw namingError(
      this.kind,
      batch.account,
      `cannot name an S3 bucket from template ${JSON.stringify(template)}: ${problem} (${BUCKET_RULES})`,
      `name its bucket explicitly under ${overrideKey(batch.account, "bucket")}`,
    );
  }

  /** The object key; refused (not retryable) when S3 could never store it under that key. */
  keyFor(batch: Batch): string {
    const template = this.#options.keyTemplate;
    if (template.includes("{account}")) {
      const problem =
        batch.account === ""
          ? "is empty and cannot be a key segment"
          : hasLoneSurrogate(batch.account)
            ? "holds a lone UTF-16 surrogate, which no S3 key can hold"
            : undefined;
      if (problem) {
        throw namingError(
          this.kind,
          batch.account,
          problem,
          `give it a keyTemplate without {account} under ${overrideKey(batch.account, "keyTemplate")}`,
        );
      }
    }
    const key = renderKey(template, batch);
    const keyBytes = Buffer.byteLength(key);
    if (keyBytes > MAX_KEY_BYTES) {
      throw namingError(
        this.kind,
        batch.account,
        `makes a ${keyBytes}-byte S3 key from keyTemplate ${JSON.stringify(template)} (keys are at most ${MAX_KEY_BYTES} bytes)`,
        `give it a shorter keyTemplate under ${overrideKey(batch.account, "keyTemplate")}`,
      );
    }
    return key;
  }

  /** User metadata, each value readable back with decodeMetadataValue. */
  metadataFor(batch: Batch): Record<string, string> {
    if (hasLoneSurrogate(batch.account)) {
      throw namingError(
        this.kind,
        batch.account,
        "holds a lone UTF-16 surrogate, which S3 metadata cannot hold",
        "the account name must be valid Unicode",
      );
    }
    const metadata = {
      records: String(batch.lines.length),
      queue: encodeMetadataValue(batch.queue),
      account: encodeMetadataValue(batch.account),
    };
    const bytes = Object.entries(metadata).reduce(
      (sum, [k, v]) => sum + Buffer.byteLength(k) + Buffer.byteLength(v),
      0,
    );
    if (bytes > MAX_METADATA_BYTES) {
      throw namingError(
        this.kind,
        batch.account,
        `makes ${bytes} bytes of S3 object metadata (S3 allows ${MAX_METADATA_BYTES})`,
        "the account name must be shorter",
      );
    }
    return metadata;
  }

  /**
   * No abort signal is passed to the SDK (calls with per-call options skip its middleware cache);
   * a write still running when its dispatcher gives up simply completes, and the released messages
   * come back as duplicates, never as a loss.
   */
  async deliver(batch: Batch, _signal: AbortSignal): Promise<void> {
    // Every naming check comes first: a name that cannot be stored never costs a request.
    const bucket = this.bucketFor(batch);
    const key = this.keyFor(batch);
    const metadata = this.metadataFor(batch);
    const text = batch.lines.join("");
    // Most batches are a few KB: zlib's thread pool costs more per call (~0.4 ms CPU) than
    // compressing them right here (~30 µs). Large ones still go to the pool.
    const body = !this.#options.gzip
      ? Buffer.from(text)
      : batch.bytes < SYNC_GZIP_BELOW_BYTES
        ? gzipSync(text)
        : await gzip(text);
    const sse = this.#options.serverSideEncryption;
    try {
      await this.#s3.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: key,
          Body: body,
          ContentType: "application/x-ndjson",
          ...(this.#options.gzip ? { ContentEncoding: "gzip" } : {}),
          ...(sse ? { ServerSideEncryption: sse } : {}),
          ...(sse === "aws:kms" && this.#options.kmsKeyId ? { SSEKMSKeyId: this.#options.kmsKeyId } : {}),
          Metadata: metadata,
        }),
      );
    } catch (err) {
      const code = (err as Error).name;
      throw new DeliveryError(
        `S3 PutObject to ${bucket} failed: ${code}: ${(err as Error).message}`,
        { destination: this.kind, account: batch.account, retryable: isRetryableS3Error(err) },
        { cause: err },
      );
    }
  }
}

/** Why the account cannot go into a bucket name as it is, or undefined. */
function accountProblem(account: string): string | undefined {
  if (account === "") return "it is empty";
  const bad = [...new Set(account.match(/[^a-z0-9.-]/gu) ?? [])];
  if (bad.length === 0) return undefined;
  const shown = bad.slice(0, 5).map((c) => JSON.stringify(c));
  return `it holds ${shown.join(", ")}${bad.length > 5 ? "…" : ""}, which a bucket name cannot`;
}

const RESERVED_PREFIXES = ["xn--", "sthree-", "amzn-s3-demo-"];
const RESERVED_SUFFIXES = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

/** What makes `bucket` an invalid general purpose bucket name under AWS's rules, or undefined. */
export function bucketNameProblem(bucket: string): string | undefined {
  const name = JSON.stringify(bucket);
  if (bucket.length < 3 || bucket.length > 63)
    return `the bucket ${name} would be ${bucket.length} characters long`;
  const bad = bucket.match(/[^a-z0-9.-]/u);
  if (bad) return `the bucket ${name} would hold ${JSON.stringify(bad[0])}`;
  if (!/^[a-z0-9].*[a-z0-9]$/.test(bucket))
    return `the bucket ${name} would not begin and end with a letter or digit`;
  if (bucket.includes("..")) return `the bucket ${name} would hold two adjacent dots`;
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(bucket)) return `the bucket ${name} would look like an IP address`;
  const prefix = RESERVED_PREFIXES.find((p) => bucket.startsWith(p));
  if (prefix) return `the bucket ${name} would begin with ${JSON.stringify(prefix)}, which S3 reserves`;
  const suffix = RESERVED_SUFFIXES.find((s) => bucket.endsWith(s));
  if (suffix) return `the bucket ${name} would end with ${JSON.stringify(suffix)}, which S3 reserves`;
  return undefined;
}

/** Errors S3 answers to a request that would fail the same way every time it is sent. */
const PERMANENT_S3_CODES = new Set([
  "InvalidBucketName",
  "KeyTooLongError",
  "EntityTooLarge",
  "MetadataTooLarge",
  "InvalidArgument",
  "InvalidRequest",
  "InvalidURI",
  "InvalidStorageClass",
  "InvalidEncryptionAlgorithmError",
  "InvalidTag",
  "MaxMessageLengthExceeded",
]);

/** 400s that a retry can fix: transient, or fixed by credentials, the clock or the operator's config. */
const RETRYABLE_400_CODES = new Set([
  "RequestTimeout",
  "IncompleteBody",
  "BadDigest",
  "ExpiredToken",
  "TokenRefreshRequired",
  "InvalidToken",
  "RequestTimeTooSkewed",
  "AuthorizationHeaderMalformed",
  "SlowDown",
  "Throttling",
  "ThrottlingException",
]);

/** Node refuses to send the request at all (a header value or URL it cannot encode). */
const CLIENT_INVALID_CODES = new Set([
  "ERR_INVALID_CHAR",
  "ERR_INVALID_HTTP_TOKEN",
  "ERR_HTTP_INVALID_HEADER_VALUE",
  "ERR_INVALID_URL",
  "ERR_UNESCAPED_CHARACTERS",
]);

/**
 * Whether sending the same PutObject again can succeed. Not retryable: a request Node cannot send
 * and S3's "this request is invalid" answers (named codes, and any other 400 not known to be
 * transient). Retryable: throttling, 5xx, network errors, and what an operator fixes without the
 * data changing — AccessDenied, NoSuchBucket, KMS and credential errors — which the dispatcher
 * gives up on after giveUpAfterMs (parked or released, never dead-lettered for a config mistake).
 */
export function isRetryableS3Error(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return true;
  const { name, code, $metadata } = err as {
    name?: unknown;
    code?: unknown;
    $metadata?: { httpStatusCode?: number };
  };
  if (typeof code === "string" && CLIENT_INVALID_CODES.has(code)) return false;
  if (typeof name === "string" && PERMANENT_S3_CODES.has(name)) return false;
  if ($metadata?.httpStatusCode === 400) return typeof name === "string" && RETRYABLE_400_CODES.has(name);
  return true;
}

/**
 * A metadata value S3 stores as sent: printable ASCII stays as it is; anything else (non-ASCII,
 * control characters, edge spaces, or text that already looks like an encoded word) becomes one
 * RFC 2047 encoded word, `=?UTF-8?B?<base64 of UTF-8>?=`, the form S3 documents for non-ASCII.
 */
export function encodeMetadataValue(value: string): string {
  if (value === "" || (/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(value) && !value.includes("=?"))) {
    return value;
  }
  return `=?UTF-8?B?${Buffer.from(value, "utf8").toString("base64")}?=`;
}

/** Reads a metadata value back: decodes RFC 2047 encoded words (B or Q, UTF-8 or Latin-1). */
export function decodeMetadataValue(value: string): string {
  return value
    .replace(/(\?=)\s+(?==\?)/g, "$1")
    .replace(
      /=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g,
      (whole, charset: string, encoding: string, text: string) => {
        const cs = charset.toLowerCase();
        const decoding: BufferEncoding | undefined =
          cs === "utf-8" || cs === "utf8" || cs === "us-ascii"
            ? "utf8"
            : cs === "iso-8859-1"
              ? "latin1"
              : undefined;
        if (!decoding) return whole;
        const bytes =
          encoding.toUpperCase() === "B"
            ? Buffer.from(text, "base64")
            : Buffer.from(
                text
                  .replace(/_/g, " ")
                  .replace(/=([0-9A-Fa-f]{2})/g, (_, hex: string) =>
                    String.fromCharCode(Number.parseInt(hex, 16)),
                  ),
                "latin1",
              );
        return bytes.toString(decoding);
      },
    );
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

/**
 * Accounts come from handler output: keep them from adding path segments or odd characters to keys.
 * Injective (decodeURIComponent reverses it): every byte outside [A-Za-z0-9._=-] becomes %XX, `%`
 * included, so `a/b` is `a%2Fb`, never a folder under `a`. An account of `.` or `..` has its dots
 * encoded too, so no tool that resolves dot segments can move it out of its prefix.
 */
export function encodeKeySegment(account: string): string {
  if (account === "." || account === "..") return account.replaceAll(".", "%2E");
  return account.replace(/[^A-Za-z0-9._=-]/gu, (c) =>
    [...Buffer.from(c)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`).join(""),
  );
}

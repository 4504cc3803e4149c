/**
 * After a run: what reached the bucket. Every object is read and every NDJSON record counted, so a
 * lost message (sent, deleted from SQS, but in no object) is caught, as are duplicates.
 */
import { gunzipSync } from "node:zlib";
import { GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";

export interface Delivered {
  objects: number;
  records: number;
  distinctIds: number;
  /** Sent ids found in no record (only when the sent ids are known). */
  missing: number;
}

const READ_CONCURRENCY = 16;

export async function readBucket(endpoint: string, bucket: string, sentIds: string[]): Promise<Delivered> {
  const s3 = new S3Client({
    region: "us-east-1",
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: "bench", secretAccessKey: "bench" },
  });
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = page.NextContinuationToken;
  } while (token);

  const ids = new Set<string>();
  let records = 0;
  let next = 0;
  const reader = async () => {
    for (let key = keys[next++]; key !== undefined; key = keys[next++]) {
      const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const bytes = Buffer.from(
        await (got.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
      );
      const gzipped = bytes[0] === 0x1f && bytes[1] === 0x8b;
      const text = (gzipped ? gunzipSync(bytes) : bytes).toString("utf8");
      for (const line of text.split("\n")) {
        if (!line) continue;
        records++;
        ids.add((JSON.parse(line) as { id: string }).id);
      }
    }
  };
  await Promise.all(Array.from({ length: READ_CONCURRENCY }, reader));
  s3.destroy();
  const missing = sentIds.reduce((n, id) => n + (ids.has(id) ? 0 : 1), 0);
  return { objects: keys.length, records, distinctIds: ids.size, missing };
}

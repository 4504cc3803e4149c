/**
 * How destination blocks combine: a partner's over its queue's over the top level's, field by field
 * (headers name by name), then narrowed to the fields the resulting type reads.
 */
import type {
  DestinationConfig,
  DestinationFields,
  DestinationOverride,
  PartnerOverride,
  QueueConfig,
} from "./types.ts";

/** `base` with the fields `override` sets; headers merged name by name. */
export function overDestination(base: DestinationFields, override: DestinationOverride): DestinationFields {
  const merged = { ...base, ...override } as DestinationFields;
  if ("headers" in override && override.headers) merged.headers = { ...base.headers, ...override.headers };
  return merged;
}

/** The fields `d.type` reads, and nothing else. */
export function narrowDestination(d: DestinationConfig): DestinationConfig {
  switch (d.type) {
    case "s3":
      return {
        type: "s3",
        bucket: d.bucket,
        keyTemplate: d.keyTemplate,
        gzip: d.gzip,
        serverSideEncryption: d.serverSideEncryption,
        kmsKeyId: d.kmsKeyId,
      };
    case "http":
      return {
        type: "http",
        url: d.url,
        headers: d.headers,
        authTokenEnv: d.authTokenEnv,
        authScheme: d.authScheme,
        format: d.format,
        timeoutMs: d.timeoutMs,
      };
    case "sqs":
      return { type: "sqs", queueUrl: d.queueUrl };
  }
}

/**
 * One account's destination on one queue: its entry's destination (if any) over the queue's,
 * narrowed. A queue's destination holds every field as its blocks resolved them (see QueueConfig).
 */
export function partnerDestination(
  queue: Pick<QueueConfig, "destination">,
  override: PartnerOverride["destination"],
): DestinationConfig {
  const fields = queue.destination as DestinationFields;
  return narrowDestination((override ? overDestination(fields, override) : fields) as DestinationConfig);
}

import { S3Client } from "@aws-sdk/client-s3";
import { SQSClient } from "@aws-sdk/client-sqs";
import type { Config } from "./config.ts";

export interface AwsClients {
  sqs: SQSClient;
  s3: S3Client;
  /**
   * The long polls' own SQS client. A call given per-call options (the polls' abort signal) makes the
   * SDK resolve the middleware stack afresh and drop the client's cached one; on a client of their
   * own, the polls leave every other SQS call (deletes, visibility changes, sends) on the cache.
   */
  sqsPolls: SQSClient;
}

/**
 * The SDK clients for a config. With an endpoint set (LocalStack, fauxqs) every SQS call goes to that
 * endpoint rather than to the host in the queue URL, which may not resolve here, and S3 uses
 * path-style addressing. Credentials come from the SDK's default chain.
 */
export function createAwsClients(aws: Config["aws"]): AwsClients {
  const maxAttempts = 3;
  // Resolve each command's middleware stack once, not on every call (a large share of the SDK's CPU
  // per request). It applies to calls made without per-call options, i.e. all but the long polls,
  // which have a client of their own (see `sqsPolls`).
  const cacheMiddleware = true;
  const sqs = () =>
    new SQSClient({
      region: aws.region,
      maxAttempts,
      cacheMiddleware,
      // Long enough for a 20 s long poll; a hung connection is cut and retried rather than waited on.
      requestHandler: { connectionTimeout: 5_000, requestTimeout: 30_000 },
      ...(aws.sqsEndpoint ? { endpoint: aws.sqsEndpoint, useQueueUrlAsEndpoint: false } : {}),
    });
  const clients = {
    sqs: sqs(),
    sqsPolls: sqs(),
    s3: new S3Client({
      region: aws.region,
      maxAttempts,
      cacheMiddleware,
      // No CRC32 of every body: SigV4 already covers integrity, and a batch is small and written once.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      requestHandler: { connectionTimeout: 5_000, requestTimeout: 60_000 },
      ...(aws.s3Endpoint ? { endpoint: aws.s3Endpoint, forcePathStyle: true } : {}),
    }),
  };
  for (const client of [clients.sqs, clients.sqsPolls, clients.s3]) {
    // Lambda's trace header and the SDK's no-op logger: neither is used here, both cost per call.
    client.middlewareStack.remove("recursionDetectionMiddleware");
    client.middlewareStack.remove("loggerMiddleware");
  }
  return clients;
}

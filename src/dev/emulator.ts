/**
 * The embedded AWS of the development commands (demo, try): fauxqs in this process, every AWS call
 * pointed at it, and what a config names but nobody made there (a bucket per partner, a partner's
 * queue) made on first use. Imports fauxqs, a devDependency: only demo.ts and try.ts load it.
 */
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { CreateQueueCommand, SQSClient } from "@aws-sdk/client-sqs";
import { startFauxqs } from "fauxqs";
import type { AwsClients } from "../aws-clients.ts";

/** A command's own clients: no long polls among its calls, so one SQS client. */
export type OwnClients = Pick<AwsClients, "sqs" | "s3">;

export interface EmbeddedAws {
  address: string;
  region: string;
  /** Clients for the command's own calls (creating queues, sending samples), outside any tap. */
  own: OwnClients;
  stop(): Promise<void>;
}

/** Starts fauxqs and points this process's AWS settings at it, with throwaway credentials. */
export async function startEmbeddedAws(credentialsName: string): Promise<EmbeddedAws> {
  const emulator = await startFauxqs({ port: 0, logger: false });
  // Never a real account: every endpoint is the emulator, and no real credentials are used.
  for (const name of ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_S3"]) {
    process.env[name] = emulator.address;
  }
  process.env.AWS_ACCESS_KEY_ID = credentialsName;
  process.env.AWS_SECRET_ACCESS_KEY = credentialsName;
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;
  const region = process.env.AWS_REGION ?? "us-east-1";
  return {
    address: emulator.address,
    region,
    own: {
      sqs: new SQSClient({ region, endpoint: emulator.address, useQueueUrlAsEndpoint: false }),
      s3: new S3Client({ region, endpoint: emulator.address, forcePathStyle: true }),
    },
    stop: () => emulator.stop(),
  };
}

/**
 * Makes on the emulator, on first use, the bucket a PutObject names and the queue a partner's
 * SendMessageBatch names (by its name: an AWS queue URL becomes the emulator's queue of that name).
 * Low priority, so taps added beside it see the call as the service made it.
 */
export function provisionOnDemand(clients: AwsClients, own: OwnClients): void {
  const buckets = new Set<string>();
  clients.s3.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { Bucket?: string };
      if (context.commandName === "PutObjectCommand" && input.Bucket && !buckets.has(input.Bucket)) {
        buckets.add(input.Bucket);
        // Already there (the config's fixed bucket) is fine.
        await own.s3.send(new CreateBucketCommand({ Bucket: input.Bucket })).catch(() => undefined);
      }
      return next(args);
    },
    { step: "initialize", priority: "low", name: "octorelayProvisionBuckets" },
  );
  const queues = new Map<string, string>();
  clients.sqs.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { QueueUrl?: string };
      if (context.commandName === "SendMessageBatchCommand" && input.QueueUrl) {
        let local = queues.get(input.QueueUrl);
        if (!local) {
          const name = input.QueueUrl.split("/").pop() as string;
          local = (await own.sqs.send(new CreateQueueCommand({ QueueName: name }))).QueueUrl as string;
          queues.set(input.QueueUrl, local);
        }
        input.QueueUrl = local;
      }
      return next(args);
    },
    { step: "initialize", priority: "low", name: "octorelayProvisionQueues" },
  );
}

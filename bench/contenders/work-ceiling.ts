/**
 * The work ceiling: octorelay's AWS work done bare, so octorelay is measured against the same calls
 * rather than against a loop that writes nothing. 8 loops of ReceiveMessage(10, wait 20 s); each body
 * parsed for its account and made into the NDJSON line octorelay's worker writes; records grouped per
 * account; every flush interval one gzip NDJSON PutObject per account with records (at once when an
 * account reaches maxRecords), at most 32 in flight; the messages of an object deleted with
 * DeleteMessageBatch (entries of several objects share a batch of 10) once it is written.
 *
 * No handler pool, no per-account actors, no heartbeats, no partner limits, no retries of its own;
 * its SDK clients are octorelay's production ones, and its receives ask what octorelay's do. What it keeps
 * of octorelay's settings is what shapes the calls: the receive loops, the flush interval, the records
 * per object, and maxUnacked (without it the loops would hold the whole queue and write fewer, larger
 * objects than octorelay can). Its objects are read back by the same delivery check.
 */
import { randomUUID } from "node:crypto";
import { gzipSync } from "node:zlib";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { DeleteMessageBatchCommand, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { createAwsClients } from "../../src/aws-clients.ts";
import { runContender } from "../lib/contender.ts";

const RECEIVE_LOOPS = 8;
const MAX_PUTS_IN_FLIGHT = 32;
const DELETE_BATCH = 10;

interface Pending {
  lines: string[];
  handles: string[];
}

await runContender(async (spec, meter) => {
  // octorelay's production clients themselves (src/aws-clients.ts), so that the calls cost the same
  // and the difference is the pipeline: middleware cache on, the long polls on a client of their own,
  // checksums only when the API requires one, no logger or recursion-detection middleware.
  const clients = createAwsClients({
    region: spec.region,
    sqsEndpoint: spec.endpoint,
    s3Endpoint: spec.endpoint,
  });
  const { sqs, sqsPolls, s3 } = clients;
  meter.attachSqs(sqs);
  meter.attachSqs(sqsPolls);
  meter.attachS3(s3);
  const { flushIntervalMs, maxRecords } = spec.octorelay.dispatch;
  const maxUnacked = spec.octorelay.maxUnacked;
  const queue = spec.queueName;
  const abort = new AbortController();

  const byAccount = new Map<string, Pending>();
  /** Received and not yet deleted: the receive loops wait while it is at maxUnacked. */
  let unacked = 0;
  let roomWaiters: (() => void)[] = [];
  const puts: { account: string; batch: Pending }[] = [];
  let putsInFlight = 0;
  let deletes: string[] = [];

  const receiveLoop = async () => {
    while (!abort.signal.aborted) {
      while (unacked >= maxUnacked && !abort.signal.aborted) {
        await new Promise<void>((resolve) => roomWaiters.push(resolve));
      }
      if (abort.signal.aborted) return;
      // The request octorelay's poller sends: its handlers are given every attribute.
      const out = await sqsPolls.send(
        new ReceiveMessageCommand({
          QueueUrl: spec.queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: spec.octorelay.waitTimeSec,
          VisibilityTimeout: spec.octorelay.visibilityTimeoutSec,
          MessageSystemAttributeNames: ["All"],
          MessageAttributeNames: ["All"],
        }),
        { abortSignal: abort.signal },
      );
      const receivedAt = new Date().toISOString();
      for (const m of out.Messages ?? []) {
        const payload = JSON.parse(m.Body ?? "null") as { account: string };
        const account = payload.account;
        const line = `{"id":${JSON.stringify(m.MessageId)},"queue":${JSON.stringify(queue)},"receivedAt":"${receivedAt}","account":${JSON.stringify(account)},"payload":${JSON.stringify(payload)}}\n`;
        let pending = byAccount.get(account);
        if (!pending) {
          pending = { lines: [], handles: [] };
          byAccount.set(account, pending);
        }
        pending.lines.push(line);
        pending.handles.push(m.ReceiptHandle as string);
        unacked++;
        if (pending.lines.length >= maxRecords) {
          byAccount.delete(account);
          enqueuePut(account, pending);
        }
      }
    }
  };

  const enqueuePut = (account: string, batch: Pending) => {
    puts.push({ account, batch });
    pumpPuts();
  };

  const pumpPuts = () => {
    while (putsInFlight < MAX_PUTS_IN_FLIGHT && puts.length > 0) {
      const { account, batch } = puts.shift() as { account: string; batch: Pending };
      putsInFlight++;
      void put(account, batch)
        // A failed write leaves its messages un-deleted: they come back after the visibility timeout.
        .catch((err: unknown) => process.stderr.write(`work-ceiling: put: ${(err as Error).message}\n`))
        .finally(() => {
          putsInFlight--;
          pumpPuts();
          // The last object of a burst written: what is left of the deletes goes now, not at the next tick.
          if (putsInFlight === 0 && puts.length === 0) flushDeletes(true);
        });
    }
  };

  const put = async (account: string, batch: Pending) => {
    const hour = new Date().toISOString().slice(0, 13).replace(/[-T]/g, "/");
    await s3.send(
      new PutObjectCommand({
        Bucket: spec.bucket,
        Key: `${queue}/${account}/${hour}/${randomUUID()}.ndjson.gz`,
        Body: gzipSync(batch.lines.join("")),
        ContentType: "application/x-ndjson",
        ContentEncoding: "gzip",
      }),
    );
    deletes.push(...batch.handles);
    flushDeletes(false);
  };

  const flushDeletes = (partial: boolean) => {
    while (deletes.length >= DELETE_BATCH || (partial && deletes.length > 0)) {
      const handles = deletes.slice(0, DELETE_BATCH);
      deletes = deletes.slice(DELETE_BATCH);
      void sqs
        .send(
          new DeleteMessageBatchCommand({
            QueueUrl: spec.queueUrl,
            Entries: handles.map((h, i) => ({ Id: String(i), ReceiptHandle: h })),
          }),
        )
        .then(() => {
          unacked -= handles.length;
          const waiters = roomWaiters;
          roomWaiters = [];
          for (const wake of waiters) wake();
        })
        .catch((err: unknown) => process.stderr.write(`work-ceiling: delete: ${(err as Error).message}\n`));
    }
  };

  const tick = setInterval(() => {
    const due = [...byAccount];
    byAccount.clear();
    for (const [account, batch] of due) enqueuePut(account, batch);
  }, flushIntervalMs);

  const loops = Array.from({ length: RECEIVE_LOOPS }, () =>
    receiveLoop().catch((err: unknown) => {
      if (!abort.signal.aborted) process.stderr.write(`work-ceiling: receive: ${(err as Error).message}\n`);
    }),
  );
  return {
    async stop() {
      clearInterval(tick);
      abort.abort();
      for (const wake of roomWaiters.splice(0)) wake();
      await Promise.all(loops);
    },
    unacked: () => unacked,
  };
});

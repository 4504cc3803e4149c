/**
 * What a contender does on the wire, seen through the AWS SDK's middleware stack of the clients the
 * bench builds for it, so the code under test is measured without being touched: calls per command,
 * messages received and deleted, and send-to-delete latency (the body's `sentAt` to the successful
 * DeleteMessage(Batch) entry that removed it).
 */
import { createHistogram } from "node:perf_hooks";
import type { S3Client } from "@aws-sdk/client-s3";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { sentAtOf } from "./traffic.ts";

/** Width of the bins of the deletes-over-time series. */
export const BIN_MS = 100;

interface Milestone {
  count: number;
  resolve: (atMs: number) => void;
}

interface ReceiveOutput {
  Messages?: { ReceiptHandle?: string; Body?: string }[];
}
interface DeleteInput {
  ReceiptHandle?: string;
  Entries?: { Id?: string; ReceiptHandle?: string }[];
}
interface DeleteBatchOutput {
  Successful?: { Id?: string }[];
}

export class WireMeter {
  /** Calls started, by "sqs:ReceiveMessage", "s3:PutObject", … */
  readonly calls = new Map<string, number>();
  /** Calls that failed (after the SDK's own retries), by the same names. */
  readonly errors = new Map<string, number>();
  /** Send→delete, whole ms; values below 1 ms count as 1 (the histogram holds integers ≥ 1). */
  readonly latencyMs = createHistogram();
  received = 0;
  emptyReceives = 0;
  deleted = 0;
  firstReceiveAtMs: number | undefined;
  lastDeleteAtMs: number | undefined;
  /** Messages deleted in each BIN_MS bin since the first receive started. */
  readonly deletesPerBin: number[] = [];
  readonly #sentAtByReceipt = new Map<string, number>();
  readonly #milestones: Milestone[] = [];

  /** Messages received whose delete has not been seen (held, or released back to the queue). */
  get outstanding(): number {
    return this.#sentAtByReceipt.size;
  }

  sqsCalls(): number {
    return this.#sum("sqs:");
  }

  s3Puts(): number {
    return this.calls.get("s3:PutObject") ?? 0;
  }

  /** Resolves with the time (ms epoch) at which `count` messages had been deleted. */
  deletedAt(count: number): Promise<number> {
    if (this.deleted >= count) return Promise.resolve(this.lastDeleteAtMs ?? Date.now());
    return new Promise((resolve) => {
      this.#milestones.push({ count, resolve });
      this.#milestones.sort((a, b) => a.count - b.count);
    });
  }

  attachSqs(sqs: SQSClient): void {
    sqs.middlewareStack.add(
      (next, context) => async (args) => {
        const command = (context.commandName as string).replace(/Command$/, "");
        const startedAtMs = Date.now();
        this.#count(this.calls, `sqs:${command}`);
        if (command === "ReceiveMessage") this.firstReceiveAtMs ??= startedAtMs;
        let result: Awaited<ReturnType<typeof next>>;
        try {
          result = await next(args);
        } catch (err) {
          this.#count(this.errors, `sqs:${command}`);
          throw err;
        }
        if (command === "ReceiveMessage") this.#received(result.output as ReceiveOutput);
        else if (command === "DeleteMessageBatch") {
          const input = args.input as DeleteInput;
          const handleById = new Map((input.Entries ?? []).map((e) => [e.Id, e.ReceiptHandle]));
          const ok = (result.output as DeleteBatchOutput).Successful ?? [];
          this.#deleted(ok.map((s) => handleById.get(s.Id)));
        } else if (command === "DeleteMessage") {
          this.#deleted([(args.input as DeleteInput).ReceiptHandle]);
        }
        return result;
      },
      { step: "initialize", name: "benchWireMeter" },
    );
  }

  attachS3(s3: S3Client): void {
    s3.middlewareStack.add(
      (next, context) => async (args) => {
        const command = `s3:${(context.commandName as string).replace(/Command$/, "")}`;
        this.#count(this.calls, command);
        try {
          return await next(args);
        } catch (err) {
          this.#count(this.errors, command);
          throw err;
        }
      },
      { step: "initialize", name: "benchWireMeter" },
    );
  }

  #received(output: ReceiveOutput): void {
    const messages = output.Messages ?? [];
    if (messages.length === 0) this.emptyReceives++;
    this.received += messages.length;
    for (const m of messages) {
      if (m.ReceiptHandle) this.#sentAtByReceipt.set(m.ReceiptHandle, sentAtOf(m.Body));
    }
  }

  #deleted(handles: (string | undefined)[]): void {
    const nowMs = Date.now();
    const bin = Math.floor((nowMs - (this.firstReceiveAtMs ?? nowMs)) / BIN_MS);
    while (this.deletesPerBin.length <= bin) this.deletesPerBin.push(0);
    for (const handle of handles) {
      const sentAtMs = handle === undefined ? undefined : this.#sentAtByReceipt.get(handle);
      if (handle !== undefined) this.#sentAtByReceipt.delete(handle);
      if (sentAtMs !== undefined && Number.isFinite(sentAtMs))
        this.latencyMs.record(Math.max(1, nowMs - sentAtMs));
    }
    this.deleted += handles.length;
    this.deletesPerBin[bin] = (this.deletesPerBin[bin] as number) + handles.length;
    this.lastDeleteAtMs = nowMs;
    while (this.#milestones.length > 0 && (this.#milestones[0] as Milestone).count <= this.deleted) {
      (this.#milestones.shift() as Milestone).resolve(nowMs);
    }
  }

  #count(map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1);
  }

  #sum(prefix: string): number {
    let total = 0;
    for (const [key, n] of this.calls) if (key.startsWith(prefix)) total += n;
    return total;
  }
}

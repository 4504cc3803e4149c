import { SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { SqsDestinationConfig } from "../config.ts";
import { BatchEntryError, DeliveryError } from "../errors.ts";
import {
  type Batch,
  type Destination,
  namingError,
  overrideKey,
  redactUrl,
  renderTarget,
} from "./destination.ts";

const SQS_BATCH = 10;
/** Stay under the smallest SendMessageBatch payload limit in use (256 KiB before 2025). */
const MAX_CALL_BYTES = 256 * 1024;
/** SQS queue names: up to 80 letters, digits, hyphens and underscores; a FIFO queue's end in ".fifo". */
const QUEUE_NAME = /^[A-Za-z0-9_-]+(\.fifo)?$/;
const MAX_QUEUE_NAME_CHARS = 80;

/**
 * Forwards each record as one message to the partner's queue with SendMessageBatch. A batch that got
 * only partly through rejects with the failed lines listed (a BatchEntryError as the cause), so the
 * retry layer sends only those again: nothing is remembered here between calls.
 */
export class SqsDestination implements Destination {
  readonly kind = "sqs";
  readonly #sqs: SQSClient;
  readonly #options: SqsDestinationConfig;

  constructor(deps: { sqs: SQSClient }, options: SqsDestinationConfig) {
    this.#sqs = deps.sqs;
    this.#options = options;
  }

  /**
   * The account goes into the queue URL as it is, or not at all: replacing its characters would give
   * two accounts (`x.y` and `x-y`) one queue. An account that is not a valid part of a queue name is
   * a DeliveryError that is not retryable.
   */
  queueUrlFor(batch: Pick<Batch, "account" | "queue">): string {
    const template = this.#options.queueUrl;
    // Queue names come from the configuration, not from handlers: they keep today's mapping.
    const url = renderTarget(template, batch, (s, field) =>
      field === "account" ? s : s.replace(/[^A-Za-z0-9_-]/g, "-"),
    );
    if (!template.includes("{account}")) return url;
    const account = batch.account;
    const problem = accountProblem(template, account, lastSegment(url));
    if (problem === undefined) return url;
    throw namingError(
      this.kind,
      account,
      `cannot name an SQS queue from template ${JSON.stringify(redactUrl(template))}: ${problem} (queue names are up to ${MAX_QUEUE_NAME_CHARS} letters, digits, hyphens and underscores, ".fifo" at the end of a FIFO queue's)`,
      `give it its own queue under ${overrideKey(account, "queueUrl")}`,
    );
  }

  /** No abort signal to the SDK, so its cached middleware serves these calls (see S3Destination). */
  async deliver(batch: Batch, _signal: AbortSignal): Promise<void> {
    const queueUrl = this.queueUrlFor(batch);
    const failures: string[] = [];
    const failed: BatchEntryError["failures"][number][] = [];
    let permanent = true;
    for (const chunk of chunks(batch.lines)) {
      try {
        const out = await this.#sqs.send(
          new SendMessageBatchCommand({
            QueueUrl: queueUrl,
            Entries: chunk.map((i) => ({ Id: String(i), MessageBody: (batch.lines[i] as string).trimEnd() })),
          }),
        );
        for (const f of out.Failed ?? []) {
          failures.push(`${f.Code}: ${f.Message ?? ""}`);
          failed.push({
            id: f.Id ?? "",
            code: f.Code ?? "",
            message: f.Message ?? "",
            senderFault: !!f.SenderFault,
          });
          if (!f.SenderFault) permanent = false;
        }
      } catch (err) {
        const { name, message } = err as Error;
        const shown = `${name}: ${message}`.replaceAll(queueUrl, redactUrl(queueUrl));
        failures.push(shown);
        // The call's fate is unknown: every entry it held goes again.
        for (const i of chunk) failed.push({ id: String(i), code: name, message: shown, senderFault: false });
        permanent = false;
      }
    }
    if (failures.length === 0) return;
    throw new DeliveryError(
      `SendMessageBatch to ${redactUrl(queueUrl)}: ${failures.length} failure(s), first: ${failures[0]}`,
      // Entries SQS rejected as the sender's fault (too large, invalid characters) will never pass.
      { destination: this.kind, account: batch.account, retryable: !permanent },
      { cause: new BatchEntryError("SendMessageBatch", failed) },
    );
  }
}

/** The queue name: the URL's last path segment. */
const lastSegment = (url: string): string => url.split(/[?#]/)[0]?.split("/").pop() ?? "";

/** Why `account` cannot go into the queue URL `template` as it is (rendered queue name `name`), or undefined. */
function accountProblem(template: string, account: string, name: string): string | undefined {
  if (account === "") return "it is empty";
  const authority = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(template)?.[1] ?? "";
  if (authority.includes("{account}"))
    return "the template puts {account} in the host, where case is not kept";
  const bad = /[^A-Za-z0-9_-]/u.exec(account)?.[0];
  if (bad !== undefined) return `it holds ${JSON.stringify(bad)}, which a queue name cannot`;
  const inName = lastSegment(template).includes("{account}");
  if (inName && (!QUEUE_NAME.test(name) || name.length > MAX_QUEUE_NAME_CHARS)) {
    return `the queue name ${JSON.stringify(name)} would not be valid (${name.length} characters)`;
  }
  return undefined;
}

/** Line indexes in groups of at most 10 entries and MAX_CALL_BYTES. */
function* chunks(lines: string[]): Generator<number[]> {
  let chunk: number[] = [];
  let bytes = 0;
  for (let i = 0; i < lines.length; i++) {
    const size = Buffer.byteLength(lines[i] as string);
    if (chunk.length === SQS_BATCH || (chunk.length > 0 && bytes + size > MAX_CALL_BYTES)) {
      yield chunk;
      chunk = [];
      bytes = 0;
    }
    chunk.push(i);
    bytes += size;
  }
  if (chunk.length > 0) yield chunk;
}

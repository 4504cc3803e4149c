/** One flush of one dispatcher: the records of one account, delivered together or not at all. */
export interface Batch {
  queue: string;
  account: string;
  /** Unique per batch and stable across its retries, so a retried write overwrites, never duplicates. */
  batchId: string;
  /** When the batch was cut, for date parts of keys. */
  createdAt: Date;
  /** NDJSON lines, each ending in "\n". */
  lines: string[];
  bytes: number;
}

/**
 * Where a dispatcher's batches go. `deliver` resolves once the batch is durably stored; it rejects
 * with a DeliveryError whose `retryable` says whether trying again can help.
 */
export interface Destination {
  readonly kind: string;
  deliver(batch: Batch, signal: AbortSignal): Promise<void>;
  /** The batch will not be tried again: drop anything kept for its retries. */
  forget?(batchId: string): void;
}

/** Fills `{account}` and `{queue}` in a bucket, URL or queue URL template. */
export function renderTarget(
  template: string,
  batch: Pick<Batch, "account" | "queue">,
  encode: (s: string) => string,
): string {
  return template.replace(/\{(account|queue)\}/g, (_, field: "account" | "queue") => encode(batch[field]));
}

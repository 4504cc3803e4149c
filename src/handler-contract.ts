/**
 * The contract between octorelay and a handler module in `handlers/`.
 *
 *   export default async function handle(message: HandlerMessage): Promise<HandlerResult>
 *
 * Return nothing (the message is done and deleted), one output, or an array of outputs. Each output
 * goes to its account's dispatcher; the SQS message is deleted once every output is delivered.
 * Throw to have the message retried with backoff; throw a `PermanentError` (or any error with
 * `permanent: true`) to send it to the dead-letter queue at once.
 */

export interface HandlerMessage<Body = unknown> {
  /** SQS MessageId. */
  id: string;
  /** The body parsed as JSON. A body that is not JSON never reaches the handler: it is dead-lettered. */
  body: Body;
  /** The body as received. */
  rawBody: string;
  /** SQS system attributes (SentTimestamp, ApproximateReceiveCount, ...). */
  attributes: Record<string, string>;
  /** Message attributes set by the sender, as string values (binary ones base64-encoded). */
  messageAttributes: Record<string, string>;
  /** The queue name as declared in config. */
  queue: string;
  /** How many times SQS has handed this message out, this time included. */
  receiveCount: number;
  /** Aborted when the handler's timeout (handlerTimeoutMs) is up: pass it to fetch and friends. */
  signal: AbortSignal;
}

export interface HandlerOutput {
  /** The partner account this output belongs to; it picks the dispatcher and the destination. */
  account: string;
  /** Any JSON-serialisable value; it becomes the `payload` field of the delivered record. */
  payload: unknown;
}

export type HandlerResult = undefined | null | HandlerOutput | HandlerOutput[];

export type Handler<Body = unknown> = (
  message: HandlerMessage<Body>,
) => HandlerResult | Promise<HandlerResult>;

/** Throw this (or any error with `permanent = true`) when a message can never succeed. */
export class PermanentError extends Error {
  readonly permanent = true;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PermanentError";
  }
}

/**
 * The contract between octorelay and a handler module in `handlers/`, imported the same way from
 * source, tests and the image:
 *
 *   import { PermanentError, type Handler } from "octorelay/handler";
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

/** Why an output can never be delivered, or undefined when it is a valid `{ account, payload }`. */
export function invalidOutput(output: unknown, index: number): string | undefined {
  const o = output as Partial<HandlerOutput> | null;
  if (typeof o !== "object" || o === null || typeof o.account !== "string" || o.account === "") {
    return `output[${index}] must be { account: non-empty string, payload }; got ${describe(output)}`;
  }
  return undefined;
}

function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}

export interface RunHandlerOptions {
  /** SQS MessageId (default "test-message-1"). */
  id?: string;
  /** SQS system attributes (SentTimestamp, ...). */
  attributes?: Record<string, string>;
  messageAttributes?: Record<string, string>;
  queue?: string;
  receiveCount?: number;
  signal?: AbortSignal;
}

/**
 * Runs a handler on one body the way the service does, for a unit test. Resolves with the outputs
 * (always an array; empty for "no output"), or with the PermanentError that dead-letters the message:
 * the one the handler threw (an error with `permanent: true` is wrapped), or the service's own for a
 * body that is not JSON or an output that cannot be delivered. Any other error is rethrown: the
 * service would retry that message.
 *
 *   expect(await runHandler(handle, { merchant: "acme", total: 10 })).toEqual([{ account: "acme", payload: … }]);
 *   expect(await runHandler(handle, "{not json")).toBeInstanceOf(PermanentError);
 *
 * A string `body` is the raw SQS body (parsed as JSON, as the service does); anything else is the
 * parsed body.
 */
export async function runHandler<Body>(
  handler: Handler<Body>,
  body: Body | string,
  options: RunHandlerOptions = {},
): Promise<HandlerOutput[] | PermanentError> {
  let parsed: Body;
  let rawBody: string;
  if (typeof body === "string") {
    rawBody = body;
    try {
      parsed = JSON.parse(body) as Body;
    } catch (err) {
      return new PermanentError(`body is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
  } else {
    parsed = body;
    rawBody = JSON.stringify(body);
  }
  let result: HandlerResult;
  try {
    result = await handler({
      id: options.id ?? "test-message-1",
      body: parsed,
      rawBody,
      attributes: options.attributes ?? {},
      messageAttributes: options.messageAttributes ?? {},
      queue: options.queue ?? "test",
      receiveCount: options.receiveCount ?? 1,
      signal: options.signal ?? new AbortController().signal,
    });
  } catch (err) {
    if (err instanceof PermanentError) return err;
    if (typeof err === "object" && err !== null && (err as { permanent?: unknown }).permanent === true) {
      return new PermanentError(`${(err as Error).name}: ${(err as Error).message}`, { cause: err });
    }
    throw err;
  }
  if (result === undefined || result === null) return [];
  const outputs = Array.isArray(result) ? result : [result];
  for (const [i, output] of outputs.entries()) {
    const invalid = invalidOutput(output, i);
    if (invalid) return new PermanentError(invalid);
    try {
      JSON.stringify(output.payload);
    } catch (err) {
      return new PermanentError(`output[${i}].payload is not JSON-serialisable: ${(err as Error).message}`);
    }
  }
  return outputs;
}

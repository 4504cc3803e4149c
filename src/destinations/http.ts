import type { HttpDestinationConfig } from "../config.ts";
import { DeliveryError } from "../errors.ts";
import { type Batch, type Destination, renderTarget } from "./destination.ts";

/** Statuses that are the partner's way of saying "not now": retried, never dead-lettered. */
const RETRYABLE_4XX = new Set([408, 409, 429]);

/**
 * POSTs each batch to the partner's endpoint as NDJSON or a JSON array. 2xx is delivered; 429 and
 * 503 honour Retry-After; other 5xx and network errors are retried; any other 4xx refuses the batch
 * for good (its messages go to the dead-letter queue with the status as the reason).
 */
export class HttpDestination implements Destination {
  readonly kind = "http";
  readonly #options: HttpDestinationConfig;
  readonly #authorization: string | undefined;

  constructor(deps: { env: NodeJS.ProcessEnv }, options: HttpDestinationConfig) {
    this.#options = options;
    const token = options.authTokenEnv ? deps.env[options.authTokenEnv] : undefined;
    // Read once; it is never logged (errors carry the URL and status only).
    this.#authorization = token ? `${options.authScheme} ${token}`.trim() : undefined;
  }

  urlFor(batch: Pick<Batch, "account" | "queue">): string {
    return renderTarget(this.#options.url, batch, encodeURIComponent);
  }

  async deliver(batch: Batch, signal: AbortSignal): Promise<void> {
    const url = this.urlFor(batch);
    const json = this.#options.format === "json";
    const body = json ? `[${batch.lines.map((l) => l.trimEnd()).join(",")}]` : batch.lines.join("");
    let response: Response;
    try {
      response = await fetch(url, {
        method: "POST",
        body,
        headers: {
          ...this.#options.headers,
          "content-type": json ? "application/json" : "application/x-ndjson",
          // Lets a partner drop a batch it already has when our retry follows a lost response.
          "idempotency-key": batch.batchId,
          ...(this.#authorization ? { authorization: this.#authorization } : {}),
        },
        signal: AbortSignal.any([signal, AbortSignal.timeout(this.#options.timeoutMs)]),
      });
      await response.body?.cancel();
    } catch (err) {
      throw new DeliveryError(
        `POST ${url} failed: ${(err as Error).name}: ${(err as Error).message}`,
        { destination: this.kind, account: batch.account, retryable: true },
        { cause: err },
      );
    }
    if (response.ok) return;
    const status = response.status;
    const retryable = status >= 500 || RETRYABLE_4XX.has(status);
    throw new DeliveryError(`POST ${url} answered ${status}`, {
      destination: this.kind,
      account: batch.account,
      retryable,
      status,
      retryAfterMs:
        status === 429 || status === 503 ? retryAfterMs(response.headers.get("retry-after")) : undefined,
    });
  }
}

/** Retry-After is either seconds or an HTTP date. */
export function retryAfterMs(header: string | null, nowMs = Date.now()): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

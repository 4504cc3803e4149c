import type { HttpDestinationConfig } from "../config.ts";
import { DeliveryError } from "../errors.ts";
import {
  type Batch,
  type Destination,
  hasLoneSurrogate,
  namingError,
  overrideKey,
  redactUrl,
  renderTarget,
  withoutUrlSecrets,
} from "./destination.ts";

/** Stands for the account while the template's own origin is worked out. */
const ACCOUNT_MARKER = "octorelay-account-marker";

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
    // Read once; it is never logged (errors carry the redacted URL and the status only).
    this.#authorization = token ? `${options.authScheme} ${token}`.trim() : undefined;
  }

  /**
   * `{account}` is filled in with encodeURIComponent, so `/`, `?`, `#` and `@` stay inside the
   * segment. What encoding cannot keep faithful is refused (a DeliveryError that is not retryable):
   * an empty, `.` or `..` account (URL normalisation would drop the segment and post elsewhere), an
   * account that is not valid Unicode, and any account in the template's host, port or userinfo.
   */
  urlFor(batch: Pick<Batch, "account" | "queue">): string {
    const template = this.#options.url;
    const render = (account: string) =>
      renderTarget(template, { account, queue: batch.queue }, encodeURIComponent);
    if (!template.includes("{account}")) return render(batch.account);
    const refuse = (problem: string) =>
      namingError(
        this.kind,
        batch.account,
        `cannot name an HTTP endpoint from template ${JSON.stringify(redactUrl(template))}: ${problem}`,
        `give it its own URL under ${overrideKey(batch.account, "url")}`,
      );
    const account = batch.account;
    if (account === "" || account === "." || account === "..") {
      throw refuse(
        account === ""
          ? "it is empty"
          : "URL normalisation removes a path segment of . or .., which would post the batch to another path",
      );
    }
    if (hasLoneSurrogate(account)) throw refuse("it holds a lone UTF-16 surrogate, which no URL can carry");
    const shape = partsOf(render(ACCOUNT_MARKER));
    if (shape === undefined) throw refuse("the template with the account filled in is not a valid URL");
    if (shape.origin.includes(ACCOUNT_MARKER)) {
      throw refuse(
        "the template puts {account} in the scheme, userinfo, host or port, which an account may not change",
      );
    }
    if (!shape.sent.includes(ACCOUNT_MARKER)) {
      throw refuse(
        "the template has {account} only in the fragment, which is never sent, so every account would share one URL",
      );
    }
    const url = render(account);
    // Defensive: encodeURIComponent keeps the account to its segment, so this never differs.
    if (partsOf(url)?.origin !== shape.origin) throw refuse("the rendered URL would reach another host");
    return url;
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
      const safe = withoutUrlSecrets(err, url) as Error;
      throw new DeliveryError(
        `POST ${redactUrl(url)} failed: ${safe.name}: ${safe.message}`,
        { destination: this.kind, account: batch.account, retryable: true },
        { cause: safe },
      );
    }
    if (response.ok) return;
    const status = response.status;
    const retryable = status >= 500 || RETRYABLE_4XX.has(status);
    throw new DeliveryError(`POST ${redactUrl(url)} answered ${status}`, {
      destination: this.kind,
      account: batch.account,
      retryable,
      status,
      retryAfterMs:
        status === 429 || status === 503 ? retryAfterMs(response.headers.get("retry-after")) : undefined,
    });
  }
}

/**
 * What the URL parser makes of a URL: its origin (scheme, userinfo, host, port) and the part sent
 * as the request target (path and query); undefined when it cannot parse it.
 */
function partsOf(url: string): { origin: string; sent: string } | undefined {
  try {
    const u = new URL(url);
    return {
      origin: `${u.protocol}//${u.username}:${u.password}@${u.host}`,
      sent: `${u.pathname}${u.search}`,
    };
  } catch {
    return undefined;
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

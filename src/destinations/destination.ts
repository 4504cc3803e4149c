import { DeliveryError } from "../errors.ts";

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
 * Where a dispatcher's batches go: the service at the bottom of a partner's delivery stack
 * (delivery/stack.ts). `deliver` resolves once the batch is durably stored; it rejects with a
 * DeliveryError whose `retryable` says whether trying again can help. A destination that sends a
 * batch in several calls and got part of it through says which lines failed with a BatchEntryError
 * as the DeliveryError's `cause`, one failure per line, its `id` the line's index in `batch.lines`;
 * the retry layer then tries only those again. A destination keeps nothing between two calls.
 */
export interface Destination {
  readonly kind: string;
  deliver(batch: Batch, signal: AbortSignal): Promise<void>;
}

type TemplateField = "account" | "queue";

/** Fills `{account}` and `{queue}` in a bucket, URL or queue URL template. */
export function renderTarget(
  template: string,
  batch: Pick<Batch, "account" | "queue">,
  encode: (value: string, field: TemplateField) => string,
): string {
  return template.replace(/\{(account|queue)\}/g, (_, field: TemplateField) => encode(batch[field], field));
}

/** A lone UTF-16 surrogate: no UTF-8 (so no URL, header or key) can carry it faithfully. */
export const hasLoneSurrogate = (s: string): boolean => /\p{Surrogate}/u.test(s);

const MAX_SHOWN_CHARS = 120;

/** An account as error messages show it: quoted and escaped, and cut short when it is very long. */
export function quoteAccount(account: string): string {
  const chars = [...account];
  return chars.length <= MAX_SHOWN_CHARS
    ? JSON.stringify(account)
    : `${JSON.stringify(chars.slice(0, MAX_SHOWN_CHARS).join(""))}… (${chars.length} characters)`;
}

/**
 * The account's name cannot be put into the destination's target without merging it with another
 * account or sending its records elsewhere. Permanent for this batch: its messages are dead-lettered
 * with this message as the reason, and the partner's breaker does not count it.
 */
export function namingError(kind: string, account: string, problem: string, fix: string): DeliveryError {
  return new DeliveryError(`account ${quoteAccount(account)} ${problem}; ${fix}`, {
    destination: kind,
    account,
    retryable: false,
  });
}

/** Where an operator gives one account its own target: `partners.accounts."ACME".destination.bucket`. */
export const overrideKey = (account: string, key: string): string =>
  `partners.accounts.${[...account].length <= MAX_SHOWN_CHARS ? JSON.stringify(account) : "<this account>"}.destination.${key}`;

const REDACTED = "REDACTED";

/**
 * The URL with every query (and fragment) parameter value and the userinfo password replaced by
 * REDACTED, for error messages and logs. String work only: never throws, even on a malformed URL.
 */
export function redactUrl(url: string): string {
  if (typeof url !== "string") return "";
  let rest = url;
  let fragment = "";
  const hash = rest.indexOf("#");
  if (hash >= 0) {
    fragment = `#${redactParams(rest.slice(hash + 1))}`;
    rest = rest.slice(0, hash);
  }
  let query = "";
  const question = rest.indexOf("?");
  if (question >= 0) {
    query = `?${redactParams(rest.slice(question + 1))}`;
    rest = rest.slice(0, question);
  }
  // scheme://user:password@host… — the authority ends at the first "/" after "//"; its last "@" ends the userinfo.
  const authority = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/]*)@/.exec(rest);
  if (authority) {
    const [whole, scheme, userinfo] = authority as unknown as [string, string, string];
    const colon = userinfo.indexOf(":");
    if (colon >= 0) rest = `${scheme}${userinfo.slice(0, colon)}:${REDACTED}@${rest.slice(whole.length)}`;
  }
  return `${rest}${query}${fragment}`;
}

/** `a=1&b&c=` → `a=REDACTED&REDACTED&c=`: a bare entry may be a key on its own, so it goes too. */
function redactParams(params: string): string {
  return params
    .split("&")
    .map((entry) => {
      if (entry === "") return entry;
      const eq = entry.indexOf("=");
      if (eq < 0) return REDACTED;
      return eq === entry.length - 1 ? entry : `${entry.slice(0, eq + 1)}${REDACTED}`;
    })
    .join("&");
}

/**
 * The error with `url` redacted wherever its message, stack or causes spell it out, so it can be
 * kept as a `cause` (which loggers print) without leaking the URL's secrets. Unchanged when the
 * URL has nothing to redact or the error never mentions it.
 */
export function withoutUrlSecrets(err: unknown, url: string): unknown {
  const redacted = redactUrl(url);
  if (redacted === url || !mentions(err, url, 0)) return err;
  return scrub(err, url, redacted, 0);
}

function mentions(err: unknown, url: string, depth: number): boolean {
  if (typeof err === "string") return err.includes(url);
  if (!(err instanceof Error) || depth > 5) return false;
  // Own properties too: Node's ERR_INVALID_URL keeps the URL in `input`, which loggers print.
  return (
    err.message.includes(url) ||
    (err.stack ?? "").includes(url) ||
    Object.values(err).some((v) => typeof v === "string" && v.includes(url)) ||
    mentions(err.cause, url, depth + 1)
  );
}

function scrub(err: unknown, url: string, redacted: string, depth: number): unknown {
  if (typeof err === "string") return err.replaceAll(url, redacted);
  if (!(err instanceof Error) || depth > 5) return err;
  const copy = new Error(err.message.replaceAll(url, redacted), {
    cause: scrub(err.cause, url, redacted, depth + 1),
  });
  copy.name = err.name;
  copy.stack = (err.stack ?? "").replaceAll(url, redacted);
  for (const [key, value] of Object.entries(err)) {
    if (typeof value === "string") Object.assign(copy, { [key]: value.replaceAll(url, redacted) });
    else if (typeof value !== "object" || value === null) Object.assign(copy, { [key]: value });
  }
  return copy;
}

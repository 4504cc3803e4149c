/**
 * The partners as the console lists and shows them: one row per partner known to this process
 * (and each account an operator paused), filtered, sorted and paged on the server so that 50,000
 * partners never become 50,000 rows; and one partner's effective profile with every secret redacted.
 */
import type { Config, DispatchConfig, FlatDestination } from "../../config.ts";
import { toDestination } from "../../config.ts";
import { redactUrl } from "../../destinations/destination.ts";
import { mergeProfile as merge } from "../../partners/directory.ts";
import type { Pause } from "../../partners/partner-limits.ts";
import { emptySnapshot, type PartnerSnapshot } from "../../service.ts";
import { PARTNER_SORTS, type PartnerSort } from "../partner-order.ts";
import { type Refusal, refuse, shown, strictParams } from "./http.ts";

/** What the console filters by: the snapshot's states, and `paused` (by an operator) over them. */
export const CONSOLE_STATES = ["active", "idle", "paused", "breaker-open", "parked"] as const;
export type ConsoleState = (typeof CONSOLE_STATES)[number] | string;

export interface PartnerRow extends Omit<PartnerSnapshot, "state"> {
  state: ConsoleState;
  /** The operator's pause in force, if any. */
  pause: Pause | undefined;
}

/**
 * Error texts as the console shows them: any URL in them with its query values and password
 * redacted (destinations redact their own; this catches any other path a URL took into a message).
 */
export function redactUrlsIn(text: string): string {
  return text.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+/gi, (url) => redactUrl(url));
}

/** An operator pause shows over every other state: it is the answer to "why is it not sending". */
export function partnerRows(
  snapshots: PartnerSnapshot[],
  paused: ReadonlyMap<string, Pause>,
  nowMs: number,
  /** How old the snapshots are: added to their ages. */
  snapshotAgeMs = 0,
): PartnerRow[] {
  const rows: PartnerRow[] = [];
  const seen = new Set<string>();
  const aged = (ms: number | undefined) => (ms === undefined ? undefined : Math.max(0, ms + snapshotAgeMs));
  for (const s of snapshots) {
    const pause = paused.get(s.account);
    const live = pause && pause.untilMs > nowMs ? pause : undefined;
    rows.push({
      ...s,
      oldestBufferedAgeMs: aged(s.oldestBufferedAgeMs),
      lastErrorAgeMs: aged(s.lastErrorAgeMs),
      state: live ? "paused" : s.state,
      pause: live,
      lastError: s.lastError === undefined ? undefined : redactUrlsIn(s.lastError),
    });
    seen.add(s.account);
  }
  for (const [account, pause] of paused) {
    if (seen.has(account) || pause.untilMs <= nowMs) continue;
    rows.push({ ...emptySnapshot(account), state: "paused", pause });
  }
  return rows;
}

export const SORTS = PARTNER_SORTS;
export type SortKey = PartnerSort;

export const PAGE = { defaultLimit: 50, maxLimit: 500 } as const;

export interface ListQuery {
  prefix: string;
  state: ConsoleState | undefined;
  sort: SortKey;
  offset: number;
  limit: number;
}

const LIST_PARAMS = ["prefix", "state", "sort", "offset", "limit"] as const;

export function parseListQuery(query: URLSearchParams): ListQuery | Refusal {
  const params = strictParams(query, LIST_PARAMS);
  if ("refused" in params) return params;
  const one = (k: string) => params.get(k)?.[0];
  const state = one("state");
  if (state !== undefined && !(CONSOLE_STATES as readonly string[]).includes(state)) {
    return refuse(400, `state: must be one of ${CONSOLE_STATES.join(", ")}; got ${shown(state)}`);
  }
  const sort = one("sort") ?? "held";
  if (!Object.hasOwn(SORTS, sort)) {
    return refuse(400, `sort: must be one of ${Object.keys(SORTS).join(", ")}; got ${shown(sort)}`);
  }
  const offset = one("offset") ?? "0";
  if (!/^\d{1,9}$/.test(offset))
    return refuse(400, `offset: must be a whole number from 0; got ${shown(offset)}`);
  const limit = one("limit") ?? String(PAGE.defaultLimit);
  const n = /^\d{1,4}$/.test(limit) ? Number(limit) : 0;
  if (!(n >= 1 && n <= PAGE.maxLimit)) {
    return refuse(400, `limit: must be a whole number from 1 to ${PAGE.maxLimit}; got ${shown(limit)}`);
  }
  const prefix = one("prefix") ?? "";
  if (prefix.length > 1024) return refuse(400, "prefix: over 1024 characters");
  return { prefix, state, sort: sort as SortKey, offset: Number(offset), limit: n };
}

export interface ListPage {
  query: ListQuery;
  /** Rows matching the filters, across all pages. */
  total: number;
  /** Partners known, before filtering. */
  known: number;
  counts: Record<string, number>;
  rows: PartnerRow[];
  prev: string | undefined;
  next: string | undefined;
  /** The same view as JSON from the ops server's /partners (without the console-only `paused`). */
  json: string;
}

export function listHref(q: ListQuery, changes: Partial<ListQuery> = {}): string {
  const m = { ...q, ...changes };
  const p = new URLSearchParams();
  if (m.prefix) p.set("prefix", m.prefix);
  if (m.state) p.set("state", m.state);
  if (m.sort !== "held") p.set("sort", m.sort);
  if (m.offset > 0) p.set("offset", String(m.offset));
  if (m.limit !== PAGE.defaultLimit) p.set("limit", String(m.limit));
  const qs = p.toString();
  return `/console/partners${qs ? `?${qs}` : ""}`;
}

/** Filters, then sorts only what matched, then slices: the page costs one pass and one sort. */
export function listPage(rows: PartnerRow[], q: ListQuery): ListPage {
  const counts: Record<string, number> = Object.fromEntries(CONSOLE_STATES.map((s) => [s, 0]));
  const matching: PartnerRow[] = [];
  for (const r of rows) {
    counts[r.state] = (counts[r.state] ?? 0) + 1;
    if (q.prefix && !r.account.startsWith(q.prefix)) continue;
    if (q.state !== undefined && r.state !== q.state) continue;
    matching.push(r);
  }
  matching.sort(SORTS[q.sort]);
  const json = new URLSearchParams();
  if (q.prefix) json.set("prefix", q.prefix);
  if (q.state && q.state !== "paused") json.set("state", q.state);
  json.set("sort", q.sort);
  json.set("limit", String(q.limit));
  if (q.offset) json.set("offset", String(q.offset));
  return {
    query: q,
    total: matching.length,
    known: rows.length,
    counts,
    rows: matching.slice(q.offset, q.offset + q.limit),
    prev: q.offset > 0 ? listHref(q, { offset: Math.max(0, q.offset - q.limit) }) : undefined,
    next: q.offset + q.limit < matching.length ? listHref(q, { offset: q.offset + q.limit }) : undefined,
    json: `/partners?${json}`,
  };
}

// ---- one partner's effective profile -----------------------------------------------------------

export const REDACTED = "REDACTED";

/** Header values may be credentials (`x-api-key`, `authorization`): only these are shown. */
const SHOWN_HEADERS = new Set(["content-type"]);

export interface Setting {
  key: string;
  value: string;
  note?: string;
}

export interface QueueProfile {
  /** The queues this profile is the same on (most partners: all of them). */
  queues: string[];
  destination: Setting[];
  dispatch: Setting[];
}

export interface PartnerProfileView {
  /** Shared by the partner's dispatchers on every queue (top-level dispatch with the partner's entry). */
  limits: Setting[];
  /** Has an entry of its own under partners.accounts / partners.file. */
  overridden: boolean;
  queues: QueueProfile[];
}

const unlimited = (n: number) => (n > 0 ? String(n) : "unlimited");

/**
 * The profile the partner's dispatchers run with, as the partner directory resolves it, shown with
 * secrets redacted: header values but content-type, URL query strings and passwords; the HTTP
 * token is shown by the name of the variable holding it, and whether that variable is set.
 */
export function partnerProfile(
  config: Pick<Config, "queues" | "partners" | "dispatch">,
  account: string,
  env: NodeJS.ProcessEnv | undefined,
): PartnerProfileView {
  const override = config.partners.overrides.get(account);
  const shared = merge(config.dispatch, override?.dispatch);
  const { requests, records, intervalMs } = shared.rateLimit;
  const limits: Setting[] = [
    {
      key: "rateLimit",
      value:
        requests > 0 || records > 0
          ? `${unlimited(requests)} requests, ${unlimited(records)} records per ${intervalMs} ms`
          : "none",
    },
    { key: "maxConcurrentFlushes", value: String(shared.maxConcurrentFlushes) },
    {
      key: "breaker",
      value: `opens after ${shared.breaker.failures} failed flushes in a row; probes after ${shared.breaker.cooldownMs} ms`,
    },
  ];
  const perQueue = config.queues.map((q) => {
    const dispatch: DispatchConfig = merge(q.dispatch, override?.dispatch);
    if (dispatch.rateLimit.records > 0)
      dispatch.maxRecords = Math.min(dispatch.maxRecords, dispatch.rateLimit.records);
    const flat: FlatDestination = override?.destination
      ? merge(q.destination, override.destination)
      : q.destination;
    return {
      queues: [q.name],
      destination: destinationSettings(flat, env),
      dispatch: [
        { key: "flushIntervalMs", value: String(dispatch.flushIntervalMs) },
        { key: "maxRecords", value: String(dispatch.maxRecords) },
        { key: "maxBytes", value: String(dispatch.maxBytes) },
        { key: "giveUpAfterMs", value: String(dispatch.giveUpAfterMs) },
        {
          key: "onOutage",
          value: dispatch.onOutage,
          note:
            dispatch.onOutage === "park"
              ? "batches given up on are parked in S3, their messages deleted"
              : "batches given up on are released to SQS with a backoff delay",
        },
        { key: "retryBaseMs / retryMaxMs", value: `${dispatch.retryBaseMs} / ${dispatch.retryMaxMs}` },
      ],
    };
  });
  // Shown once for all the queues it is the same on.
  const queues = new Map<string, QueueProfile>();
  for (const p of perQueue) {
    const key = JSON.stringify([p.destination, p.dispatch]);
    const same = queues.get(key);
    if (same) same.queues.push(...p.queues);
    else queues.set(key, p);
  }
  return { limits, overridden: override !== undefined, queues: [...queues.values()] };
}

function destinationSettings(flat: FlatDestination, env: NodeJS.ProcessEnv | undefined): Setting[] {
  let d: ReturnType<typeof toDestination>;
  try {
    d = toDestination(flat);
  } catch {
    return [{ key: "type", value: String(flat.type) }];
  }
  switch (d.type) {
    case "s3":
      return [
        { key: "type", value: "s3" },
        { key: "bucket", value: d.bucket },
        { key: "keyTemplate", value: d.keyTemplate },
        { key: "gzip", value: String(d.gzip) },
        ...(d.serverSideEncryption
          ? [
              {
                key: "serverSideEncryption",
                value: `${d.serverSideEncryption}${d.kmsKeyId ? ` (${d.kmsKeyId})` : ""}`,
              },
            ]
          : []),
      ];
    case "http": {
      const headers = Object.entries(d.headers ?? {}).map(([name, value]) => ({
        key: `headers.${name}`,
        value: SHOWN_HEADERS.has(name.toLowerCase()) ? String(value) : REDACTED,
      }));
      return [
        { key: "type", value: "http" },
        { key: "url", value: redactUrl(d.url) },
        { key: "format", value: d.format },
        { key: "timeoutMs", value: String(d.timeoutMs) },
        ...(d.authTokenEnv
          ? [
              {
                key: "authTokenEnv",
                value: d.authTokenEnv,
                note:
                  env === undefined
                    ? `sent as Authorization: ${d.authScheme} …`
                    : env[d.authTokenEnv]
                      ? `set; sent as Authorization: ${d.authScheme} …`
                      : "NOT SET in this process's environment: requests go without a token",
              },
            ]
          : []),
        ...headers,
      ];
    }
    case "sqs":
      return [
        { key: "type", value: "sqs" },
        { key: "queueUrl", value: redactUrl(d.queueUrl) },
      ];
  }
}

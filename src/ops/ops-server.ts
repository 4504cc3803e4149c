import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Logger } from "pino";
import type { PartnerState } from "../partners/partner.ts";
import type { Pause } from "../partners/partner-limits.ts";
import { emptySnapshot, type PartnerSnapshot, type Service } from "../service.ts";
import { ConsoleAuth, clearedSessionCookie, LoginThrottle } from "./console/auth.ts";
import type { ConsoleHandler } from "./console/console.ts";
import type { Metrics } from "./metrics.ts";
import { PARTNER_SORTS, type PartnerSort } from "./partner-order.ts";

/** An event loop that stalled this long since the last look is reported unhealthy. */
const STALL_LIMIT_MS = 10_000;

/**
 * What one client may take of the server. The port is open without auth (0.0.0.0 by default), so
 * every bound is far above what Prometheus or a probe needs and far below what would hurt the relay.
 */
export interface OpsLimits {
  /** Request line plus headers, bytes; more is answered 431. */
  maxHeaderBytes: number;
  /** Request target (path and query), characters; longer is answered 414. */
  maxTargetChars: number;
  /** The whole request head must arrive within this, ms; slower clients (slowloris) get 408 and are dropped. */
  headersTimeoutMs: number;
  /** The whole request must arrive within this, ms. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this, ms. */
  keepAliveTimeoutMs: number;
  /** A connection with no traffic either way (a client that stopped reading) is destroyed after this, ms. */
  idleTimeoutMs: number;
  /** Connections open at once; more are refused, so a flood cannot take the relay's file descriptors. */
  maxConnections: number;
}

export const DEFAULT_OPS_LIMITS: OpsLimits = {
  maxHeaderBytes: 16_384,
  maxTargetChars: 2_048,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 256,
};

export interface OpsServer {
  url: string;
  close(): Promise<void>;
}

/** A request as the routes see it: the target already split, never a raw `req.url`. */
export interface OpsRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  /** For routes that check `authorization` (the operator actions behind `ops.token`). */
  headers: IncomingHttpHeaders;
}

export interface JsonReply {
  status: number;
  json: unknown;
  headers?: Record<string, string>;
}

export type OpsReply = JsonReply | { status: number; text: string; contentType: string };

/** One endpoint. The table is the only place an endpoint is declared (404s list it, 405s read `methods`). */
export interface OpsRoute {
  methods: readonly string[];
  /** Needs the ops token to be read when `requireTokenForRead` is set. */
  guarded?: boolean;
  handle(req: OpsRequest): OpsReply | Promise<OpsReply>;
}

/** How long /partners waits for the partners' pauses (Redis in cluster mode) before answering without them. */
const PAUSE_LOOKUP_MS = 2000;

const READ_METHODS = ["GET", "HEAD"] as const;

/**
 * The operator's endpoints: /metrics (Prometheus), /healthz (alive, event loop not stalled),
 * /readyz (queues serving, not draining), /partners (per-partner state; filtered, sorted, paged),
 * and, when `console` is given, the operator console on the paths it serves (`/`, `/console/…`,
 * `/assets/…`), behind the same limits; the server closes it when it closes.
 * Every request gets an answer (4xx for a bad one, 500 if a route throws) and none can crash the
 * process or hold a connection past the limits.
 */
export async function startOpsServer(
  deps: { service: Service; metrics: Metrics; log: Logger; console?: ConsoleHandler },
  options: {
    host: string;
    port: number;
    limits?: Partial<OpsLimits>;
    /** `ops.token`; with `requireTokenForRead` the guarded endpoints need it (bearer or console session). */
    token?: string;
    requireTokenForRead?: boolean;
  },
): Promise<OpsServer> {
  const { service, metrics } = deps;
  const log = deps.log.child({ component: "ops" });
  const limits = { ...DEFAULT_OPS_LIMITS, ...options.limits };
  const readAuth =
    options.requireTokenForRead && options.token
      ? new ConsoleAuth({ token: options.token, requireTokenForRead: true })
      : undefined;
  // Guessing the token on /partners is throttled like the console's login.
  const throttle = new LoginThrottle();
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();

  const routes = new Map<string, OpsRoute>([
    [
      "/metrics",
      {
        methods: READ_METHODS,
        handle: async () => ({
          status: 200,
          text: await metrics.registry.metrics(),
          contentType: metrics.registry.contentType,
        }),
      },
    ],
    [
      "/healthz",
      {
        methods: READ_METHODS,
        handle: () => {
          const stalledMs = loopDelay.max / 1e6;
          loopDelay.reset();
          const ok = stalledMs <= STALL_LIMIT_MS;
          return { status: ok ? 200 : 503, json: { ok, eventLoopMaxDelayMs: Math.round(stalledMs) } };
        },
      },
    ],
    [
      "/readyz",
      {
        methods: READ_METHODS,
        handle: () => {
          const readiness = service.readiness();
          return { status: readiness.ready ? 200 : 503, json: readiness };
        },
      },
    ],
    [
      "/partners",
      {
        methods: READ_METHODS,
        // Account names and their partners' error messages are customers' business, so the token
        // guards them like the console's pages. /metrics, /healthz and /readyz stay open: Prometheus
        // and the kubelet's probes cannot log in, and they show counts and readiness, not accounts.
        guarded: true,
        handle: async (req) => {
          const limits = service.partners.limits;
          // Operator pauses from every replica (Redis in cluster mode), so `state=paused` lists them all.
          const operator = await within(limits.pausedAccounts(), PAUSE_LOOKUP_MS).then(
            (paused) => ({ paused, error: undefined }),
            (err: unknown) => ({ paused: [], error: `could not read the pauses: ${(err as Error).message}` }),
          );
          const reply = partnersPage(
            withOperatorPauses(service.partnerSnapshots(), operator.paused),
            req.query,
          );
          if (reply.status !== 200 || !("json" in reply)) return reply;
          const page = await withPauses(reply.json as PartnersPage, req.query, (a) => limits.pauseOf(a));
          const json = page.json as PartnersPage;
          return operator.error && !json.pauseError
            ? { ...page, json: { ...json, pauseError: operator.error } }
            : page;
        },
      },
    ],
  ]);
  const endpoints = [...routes.keys()];
  const allMethods = [...new Set([...routes.values()].flatMap((r) => r.methods))];

  /** Resolves with the reply to send, or undefined once the console has answered itself. */
  const route = async (req: IncomingMessage, res: ServerResponse): Promise<OpsReply | undefined> => {
    const method = req.method ?? "";
    const target = parseTarget(req.url ?? "", limits.maxTargetChars);
    if ("status" in target) return target;
    // HTTP/1.1 requires it (RFC 9112 §3.2); checked here rather than by Node so the answer is JSON too.
    if (req.httpVersion === "1.1" && req.headers.host === undefined) {
      return errorReply(400, "Host header required");
    }
    if (target.asterisk) {
      // `OPTIONS *` and the like: the server as a whole only reads.
      return errorReply(405, `${method} * is not served`, { allow: allMethods.join(", ") });
    }
    const found = routes.get(target.path);
    if (!found) {
      // The endpoints above keep their paths; the console takes only the paths it serves.
      if (deps.console && (await deps.console(req, res, target))) return undefined;
      return { status: 404, json: { error: "not found", endpoints } };
    }
    if (!found.methods.includes(method)) {
      return errorReply(405, `${method} is not allowed on ${target.path}`, {
        allow: found.methods.join(", "),
      });
    }
    if (found.guarded && readAuth) {
      const refused = readRefusal(readAuth, throttle, req);
      if (refused) return refused;
    }
    return found.handle({ method, path: target.path, query: target.query, headers: req.headers });
  };

  /** The response being written on a socket: a parse error on it then must not write a second head. */
  const answering = new WeakMap<Socket, ServerResponse>();
  const server: Server = createServer(
    {
      maxHeaderSize: limits.maxHeaderBytes,
      requireHostHeader: false,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // How often Node checks the two timeouts above; its 30 s default would let a slow client stay 30 s longer.
      connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
    },
    (req, res) => {
      answering.set(req.socket, res);
      res.once("close", () => {
        if (answering.get(req.socket) === res) answering.delete(req.socket);
      });
      route(req, res)
        .catch((err: unknown): OpsReply => {
          log.error({ err, method: req.method, path: clip(req.url ?? "") }, "ops request failed");
          return errorReply(500, "internal error; see the service log");
        })
        .then((reply) => {
          if (reply) send(res, reply);
        })
        .catch((err: unknown) => {
          log.error({ err, method: req.method }, "ops response could not be written");
          res.destroy();
        });
    },
  );
  server.maxConnections = limits.maxConnections;
  // No 'timeout' listener: Node destroys a socket idle this long.
  server.setTimeout(limits.idleTimeoutMs);
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    try {
      if (err.code !== "ECONNRESET" && socket.writable && !answering.has(socket)) {
        socket.write(rawErrorResponse(clientErrorReply(err, limits)));
      }
      log.debug({ code: err.code }, "ops: malformed or slow request refused");
    } finally {
      socket.destroy();
    }
  });
  let dropWarnedAtMs = 0;
  server.on("drop", () => {
    if (Date.now() - dropWarnedAtMs < 60_000) return;
    dropWarnedAtMs = Date.now();
    log.warn({ maxConnections: limits.maxConnections }, "ops server at its connection limit; refusing more");
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  // After listen, an accept failure (EMFILE) is an 'error' event: without a listener it would crash.
  server.on("error", (err) => log.error({ err }, "ops server error"));
  const { port } = server.address() as AddressInfo;
  const url = `http://${options.host === "0.0.0.0" ? "127.0.0.1" : options.host}:${port}`;
  log.info(
    { url },
    `ops server listening: ${endpoints.join(" ")}${deps.console ? `, console at ${url}/` : ""}`,
  );
  return {
    url,
    close: async () => {
      await deps.console?.close();
      await new Promise<void>((resolve) => {
        loopDelay.disable();
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}

/**
 * Why a guarded endpoint refuses this request, if it does: no credential (401), a wrong bearer token
 * (401, counted toward the throttle), too many wrong ones this minute (429), a malformed session
 * cookie (400). A bearer token or the console's session cookie is accepted.
 */
function readRefusal(
  auth: ConsoleAuth,
  throttle: LoginThrottle,
  req: IncomingMessage,
): JsonReply | undefined {
  if (req.headers.authorization !== undefined) {
    const wait = throttle.retryAfterSec();
    if (wait > 0)
      return errorReply(429, `too many wrong tokens; try again in ${wait} s`, {
        "retry-after": String(wait),
      });
  }
  const result = auth.authenticate(req);
  const clear: Record<string, string> = result.clearCookie ? { "set-cookie": clearedSessionCookie() } : {};
  if (result.problem) {
    if (result.problem.status === 401) throttle.failed();
    return errorReply(result.problem.status, result.problem.message, clear);
  }
  if (result.credential.kind !== "none") return undefined;
  return errorReply(
    401,
    "this endpoint requires the ops token to read (ops.requireTokenForRead): send Authorization: Bearer <token>, or log in to the console",
    { ...clear, "www-authenticate": 'Bearer realm="octorelay"' },
  );
}

/** What a client sent, cut to a length fit for a log line or an error message. */
function clip(value: string, maxChars = 80): string {
  return value.length > maxChars ? `${value.slice(0, maxChars)}…` : value;
}

function send(res: ServerResponse, reply: OpsReply): void {
  if (res.headersSent || res.destroyed) return;
  const body = "text" in reply ? reply.text : `${JSON.stringify(reply.json)}\n`;
  res.writeHead(reply.status, {
    "content-type": "text" in reply ? reply.contentType : "application/json",
    "content-length": Buffer.byteLength(body),
    // A refused request may come with a body nobody will read: do not keep its connection.
    ...(reply.status >= 400 ? { connection: "close" } : {}),
    ...("headers" in reply ? reply.headers : {}),
  });
  res.end(body);
}

function errorReply(status: number, error: string, headers?: Record<string, string>): JsonReply {
  return { status, json: { error }, ...(headers ? { headers } : {}) };
}

function clientErrorReply(err: NodeJS.ErrnoException, limits: OpsLimits): { status: number; error: string } {
  switch (err.code) {
    case "HPE_HEADER_OVERFLOW":
      return { status: 431, error: `request line and headers over ${limits.maxHeaderBytes} bytes` };
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return { status: 408, error: `request not received within ${limits.headersTimeoutMs} ms` };
    default:
      return { status: 400, error: `malformed HTTP request (${err.code ?? "parse error"})` };
  }
}

/** A whole response written straight to a socket that never became a request. */
function rawErrorResponse({ status, error }: { status: number; error: string }): string {
  const body = `${JSON.stringify({ error })}\n`;
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
  );
}

export type ParsedTarget =
  | { path: string; query: URLSearchParams; asterisk: false }
  | { path: "*"; query: URLSearchParams; asterisk: true };

/**
 * Splits a raw request target into path and query without `new URL(raw, base)`, which throws on
 * `//`, `//x/../y` and the like. Origin form (`/p?q`), absolute form (`http://h/p?q`, the host is
 * ignored) and `*` are accepted; the path is matched as sent (no dot-segment or percent decoding:
 * no route needs them). Query values are decoded by URLSearchParams, which never throws (a bad
 * escape such as `%zz` or `%E0%A4%A` stays as it is or becomes U+FFFD).
 */
export function parseTarget(raw: string, maxChars: number): ParsedTarget | JsonReply {
  if (raw.length > maxChars) return errorReply(414, `request target over ${maxChars} characters`);
  if (raw === "*") return { path: "*", query: new URLSearchParams(), asterisk: true };
  let rest = raw;
  const origin = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(rest);
  if (origin) {
    rest = rest.slice(origin[0].length);
    if (!rest.startsWith("/")) rest = `/${rest}`;
  }
  if (!rest.startsWith("/")) return errorReply(400, 'request target must be a path starting with "/"');
  const hash = rest.indexOf("#");
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf("?");
  return {
    path: q < 0 ? rest : rest.slice(0, q),
    query: new URLSearchParams(q < 0 ? "" : rest.slice(q + 1)),
    asterisk: false,
  };
}

// ---- /partners: filter, sort, page ------------------------------------------------------------

/** Every state a partner can be in; `satisfies` makes a new PartnerState fail to compile until listed here. */
const PARTNER_STATES = {
  active: true,
  idle: true,
  "breaker-open": true,
  parked: true,
} satisfies Record<PartnerState, true>;

/** `paused`: an operator's pause in force, shown over the partner's own state (as on the console). */
const LISTED_STATES = [...Object.keys(PARTNER_STATES), "paused"];

const SORTS = PARTNER_SORTS;

export const PARTNERS_PAGE = { defaultLimit: 100, maxLimit: 1000 } as const;

export interface PartnerQuery {
  /** Any of these states; undefined = every state. */
  states: Set<string> | undefined;
  prefix: string | undefined;
  account: string | undefined;
  sort: PartnerSort;
  limit: number;
  offset: number;
}

const PARAMS = ["state", "prefix", "account", "sort", "limit", "offset"] as const;

/** A value as echoed in an error: quoted, escaped, and short (it is whatever the client sent). */
const shown = (value: string) => JSON.stringify(clip(value));

/**
 * Reads the /partners query; an empty value counts as not given. `knownStates` are the states a
 * snapshot may report: the declared ones plus any the current snapshot holds.
 */
export function parsePartnerQuery(
  query: URLSearchParams,
  knownStates: readonly string[],
): PartnerQuery | { error: string } {
  const values = new Map<string, string>();
  for (const [key, value] of query) {
    if (!(PARAMS as readonly string[]).includes(key)) {
      return { error: `unknown parameter ${shown(key)}; valid: ${PARAMS.join(", ")}` };
    }
    if (values.has(key)) return { error: `${key}: given more than once; give it once` };
    if (value !== "") values.set(key, value);
  }
  const out: PartnerQuery = {
    states: undefined,
    prefix: values.get("prefix"),
    account: values.get("account"),
    sort: "held",
    limit: PARTNERS_PAGE.defaultLimit,
    offset: 0,
  };
  const state = values.get("state");
  if (state !== undefined) {
    const wanted = state.split(",");
    const bad = wanted.find((s) => !knownStates.includes(s));
    if (bad !== undefined) {
      return {
        error: `state: must be one of ${knownStates.join(", ")} (several: comma-separated); got ${shown(state)}`,
      };
    }
    out.states = new Set(wanted);
  }
  const sort = values.get("sort");
  if (sort !== undefined) {
    if (!Object.hasOwn(SORTS, sort)) {
      return { error: `sort: must be one of ${Object.keys(SORTS).join(", ")}; got ${shown(sort)}` };
    }
    out.sort = sort as PartnerSort;
  }
  const limit = values.get("limit");
  if (limit !== undefined) {
    const n = /^\d{1,7}$/.test(limit) ? Number(limit) : Number.NaN;
    if (!(n >= 1 && n <= PARTNERS_PAGE.maxLimit)) {
      return {
        error: `limit: must be a whole number from 1 to ${PARTNERS_PAGE.maxLimit}; got ${shown(limit)}`,
      };
    }
    out.limit = n;
  }
  const offset = values.get("offset");
  if (offset !== undefined) {
    const n = /^\d{1,15}$/.test(offset) ? Number(offset) : Number.NaN;
    if (!(n >= 0)) return { error: `offset: must be a whole number from 0; got ${shown(offset)}` };
    out.offset = n;
  }
  return out;
}

/**
 * A partner on a /partners page: its snapshot, and the pause in force for it, if any. Its state is
 * `paused` while an operator's pause holds it (the answer to "why is it not sending"), else its own.
 */
export type PartnerEntry = Omit<PartnerSnapshot, "state"> & { state: PartnerState | "paused"; pause?: Pause };

/**
 * The snapshots with the operator pauses laid over them: a paused partner's state is `paused`, and
 * an account paused while this process holds nothing for it (paused before its traffic came, or on
 * another replica) is listed too, with nothing held.
 */
export function withOperatorPauses(
  snapshots: PartnerSnapshot[],
  paused: readonly { account: string; pause: Pause }[],
  nowMs = Date.now(),
): PartnerEntry[] {
  const live = new Map<string, Pause>();
  for (const { account, pause } of paused) if (pause.untilMs > nowMs) live.set(account, pause);
  if (live.size === 0) return snapshots;
  const entries: PartnerEntry[] = snapshots.map((s) => {
    const pause = live.get(s.account);
    if (!pause) return s;
    live.delete(s.account);
    return { ...s, state: "paused", pause };
  });
  for (const [account, pause] of live) {
    entries.push({ ...emptySnapshot(account), state: "paused", pause });
  }
  return entries;
}

export interface PartnersPage {
  /** Partners matching the filters, across all pages. */
  total: number;
  offset: number;
  limit: number;
  partners: PartnerEntry[];
  /** Path and query of the next page; absent on the last one. */
  next?: string;
  /** Set when the pauses could not be read (the limits store down or slow): `pause` is then missing. */
  pauseError?: string;
}

/**
 * Adds each listed partner's pause (an operator's, a Retry-After, an open breaker) to the page. An
 * account asked for by name (`?account=`) that this process holds nothing for, but that has a
 * Retry-After or breaker pause (set on another replica), is listed as idle with its pause, so
 * `octorelay partners show` can say so (an operator's pause is listed by withOperatorPauses).
 */
export async function withPauses(
  page: PartnersPage,
  query: URLSearchParams,
  pauseOf: (account: string) => Promise<Pause | undefined>,
): Promise<JsonReply> {
  const account = query.get("account") || undefined;
  const addUnknown = account !== undefined && page.total === 0 && page.offset === 0 && !query.get("state");
  const accounts = addUnknown ? [account] : page.partners.map((p) => p.account);
  let pauses: (Pause | undefined)[];
  try {
    pauses = await within(Promise.all(accounts.map((a) => pauseOf(a))), PAUSE_LOOKUP_MS);
  } catch (err) {
    return {
      status: 200,
      json: { ...page, pauseError: `could not read the pauses: ${(err as Error).message}` },
    };
  }
  if (addUnknown) {
    const pause = pauses[0];
    if (!pause) return { status: 200, json: page };
    const idle: PartnerEntry = { ...emptySnapshot(account), pause };
    return { status: 200, json: { ...page, total: 1, partners: [idle] } };
  }
  const partners = page.partners.map((p, i) => {
    const pause = pauses[i];
    return pause ? { ...p, pause } : p;
  });
  return { status: 200, json: { ...page, partners } };
}

/** `promise`, or a rejection naming the wait once `ms` passed. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** One page of the snapshot, filtered and sorted as asked; a bad parameter is a 400 naming it. */
export function partnersPage(snapshots: PartnerEntry[], query: URLSearchParams): OpsReply {
  const knownStates = [...new Set([...LISTED_STATES, ...snapshots.map((p) => p.state)])];
  const q = parsePartnerQuery(query, knownStates);
  if ("error" in q) return errorReply(400, q.error);
  const matching = snapshots.filter(
    (p) =>
      (q.states === undefined || q.states.has(p.state)) &&
      (q.account === undefined || p.account === q.account) &&
      (q.prefix === undefined || p.account.startsWith(q.prefix)),
  );
  matching.sort(SORTS[q.sort]);
  const page: PartnersPage = {
    total: matching.length,
    offset: q.offset,
    limit: q.limit,
    partners: matching.slice(q.offset, q.offset + q.limit),
  };
  if (q.offset + q.limit < matching.length) {
    const params = new URLSearchParams();
    if (q.states) params.set("state", [...q.states].join(","));
    if (q.prefix !== undefined) params.set("prefix", q.prefix);
    if (q.account !== undefined) params.set("account", q.account);
    params.set("sort", q.sort);
    params.set("limit", String(q.limit));
    params.set("offset", String(q.offset + q.limit));
    page.next = `/partners?${params}`;
  }
  return { status: 200, json: page };
}

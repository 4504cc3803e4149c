/**
 * The operator console, served by the ops server under `/`: Overview (is it keeping up?), Partners
 * (which one is stuck, and why?), Dead letters (what failed, and why?), and the actions: pause and
 * resume a partner, replay its parked batches, redrive dead letters.
 *
 * Pages are rendered on the server (Eta) and readable without JavaScript; htmx refreshes them in
 * place. Reading is open unless `requireTokenForRead`; every action needs the ops token (bearer
 * header, or the login form's session cookie plus its CSRF token) and is logged with what it did.
 * Bad requests are answered 4xx with what was wrong; nothing a client sends can throw out of here.
 */
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import type { SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "pino";
import type { Config } from "../../config.ts";
import type { ReplayResult } from "../../delivery/replay.ts";
import { encodeKeySegment } from "../../destinations/s3.ts";
import { LimitsUnavailableError } from "../../errors.ts";
import type { RecentError } from "../../partners/directory.ts";
import type { PartnerLimits, Pause } from "../../partners/partner-limits.ts";
import type { PartnerSnapshot } from "../../service.ts";
import { type DeadLetterRoute, DeadLetters, type RedriveResult, redriveProblems } from "../dead-letters.ts";
import { assetNamed } from "./assets.ts";
import {
  type AuthResult,
  ConsoleAuth,
  type Credential,
  CSRF_FIELD,
  CSRF_HEADER,
  clearedSessionCookie,
  crossSiteProblem,
  LoginThrottle,
  sessionCookie,
} from "./auth.ts";
import {
  type ConsoleTarget,
  isRefusal,
  localPath,
  overTls,
  type Refusal,
  readForm,
  redirect,
  refuse,
  sendJson,
  sendPage,
  shown,
  strictParams,
  wantsJson,
} from "./http.ts";
import { bytes, count, QueueDepths, queueOverview, RATE_LEGEND, type RelayView } from "./overview.ts";
import {
  CONSOLE_STATES,
  listHref,
  listPage,
  type PartnerRow,
  parseListQuery,
  partnerProfile,
  partnerRows,
  redactUrlsIn,
} from "./partners-view.ts";
import { RateHistory } from "./rates.ts";
import { type Chrome, type PageName, Views } from "./render.ts";

/** What the console reads of one relay: the members /metrics reads, and one account's dispatcher. */
export interface ConsoleRelay extends RelayView {
  dispatcherOf(
    account: string,
  ): { buffered: number; inFlightRecords: number; oldestBufferedAtMs: number | undefined } | undefined;
}

/**
 * Everything the console needs, as small contracts, so that wiring it to a Service is one adapter
 * (`serviceConsoleDeps` in wiring.ts) and a test can hand it anything that behaves.
 */
export interface ConsoleDeps {
  log: Logger;
  service: {
    readonly relays: readonly ConsoleRelay[];
    partnerSnapshots(nowMs?: number): PartnerSnapshot[];
    readiness(): { ready: boolean; reasons: string[] };
  };
  /** The limits the partners' deliveries wait on: a pause here holds wherever they are shared. */
  limits: Pick<PartnerLimits, "pause" | "resume" | "pauseOf">;
  /** GetQueueAttributes for the queue depths; the dead-letter peek and redrive. */
  sqs: SQSClient;
  /** ListObjectsV2 of the parked batches. */
  s3: S3Client;
  /** Each configured queue's URL and dead-letter queue URL. */
  routes(): Promise<DeadLetterRoute[]>;
  /** Replays the account's parked batches (src/delivery/replay.ts). */
  replay(account: string, signal: AbortSignal): Promise<ReplayResult>;
  recentError(account: string): RecentError | undefined;
  /** Accounts paused by an operator now, everywhere (cluster mode); default: those paused from this console. */
  pausedAccounts?(): Promise<ReadonlyMap<string, Pause>>;
  /** Where HTTP destinations read their tokens: the partner page says whether the named variable is set. */
  env?: NodeJS.ProcessEnv;
}

export interface ConsoleOptions {
  /** `ops.token`: "" turns every action off. */
  token: string;
  requireTokenForRead: boolean;
  config: Pick<Config, "queues" | "partners" | "dispatch">;
  /** How long a queue depth (GetQueueAttributes) is reused, ms. */
  depthCacheMs?: number;
  sampleIntervalMs?: number;
  historySec?: number;
  /** Largest form body accepted; larger ones are answered 413. */
  maxBodyBytes?: number;
  /** Messages shown per dead-letter peek. */
  peekMax?: number;
}

/** Answers the console's paths (true) or leaves the request to the caller (false). */
export type ConsoleHandler = ((
  req: IncomingMessage,
  res: ServerResponse,
  target: ConsoleTarget,
) => Promise<boolean>) & {
  close(): Promise<void>;
};

/** Accounts longer than this are refused: no real account is, and a 10 KB path is an attack. */
const MAX_ACCOUNT_CHARS = 1024;
const PAUSE_PRESETS = [
  { value: "15m", label: "15 minutes" },
  { value: "1h", label: "1 hour" },
  { value: "4h", label: "4 hours" },
  { value: "12h", label: "12 hours" },
];
/**
 * A batch that has not failed yet waits out a pause, its messages kept invisible by heartbeats, and
 * SQS keeps a message invisible 12 hours at most: a longer pause would hand them out again.
 */
const MAX_PAUSE_MS = 12 * 60 * 60_000;
const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

interface ReplayJob {
  startedAtMs: number;
  running: boolean;
  endedAtMs?: number;
  result?: ReplayResult;
  error?: string;
}

interface Notice {
  kind: "ok" | "info" | "warn" | "bad";
  text: string;
}

interface ActionOutcome {
  /** What the log line says (never a secret). */
  log: { action: string; account?: string; queue?: string; count?: number; [key: string]: unknown };
  notice: Notice;
  /** Where a browser goes next. */
  location: string;
  json: unknown;
}

export function createConsole(deps: ConsoleDeps, options: ConsoleOptions): ConsoleHandler {
  const c = new OperatorConsole(deps, options);
  const handler = ((req, res, target) => c.handle(req, res, target)) as ConsoleHandler;
  handler.close = () => c.close();
  return handler;
}

class OperatorConsole {
  readonly #deps: ConsoleDeps;
  readonly #options: ConsoleOptions;
  readonly #log: Logger;
  readonly #auth: ConsoleAuth;
  readonly #throttle = new LoginThrottle();
  readonly #views = new Views();
  readonly #history: RateHistory;
  readonly #depths: QueueDepths;
  readonly #maxBodyBytes: number;
  /** Operator pauses made from this console, for the list (the partner page asks the limits). */
  readonly #paused = new Map<string, Pause>();
  readonly #replays = new Map<string, ReplayJob>();
  readonly #redriving = new Set<string>();
  /** One-shot messages shown after an action's redirect, by random id; a few minutes at most. */
  readonly #flash = new Map<string, { notice: Notice; atMs: number }>();
  readonly #closing = new AbortController();
  #routes: Promise<DeadLetterRoute[]> | undefined;
  #deadLetters: DeadLetters | undefined;
  #snapshot: { atMs: number; rows: PartnerSnapshot[] } | undefined;

  constructor(deps: ConsoleDeps, options: ConsoleOptions) {
    this.#deps = deps;
    this.#options = options;
    this.#log = deps.log.child({ component: "console" });
    this.#auth = new ConsoleAuth({ token: options.token, requireTokenForRead: options.requireTokenForRead });
    this.#maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
    this.#history = new RateHistory(deps.service, {
      ...(options.sampleIntervalMs ? { intervalMs: options.sampleIntervalMs } : {}),
      ...(options.historySec ? { historySec: options.historySec } : {}),
    });
    this.#depths = new QueueDepths(deps.sqs, {
      ...(options.depthCacheMs ? { ttlMs: options.depthCacheMs } : {}),
    });
    this.#history.start();
  }

  async close(): Promise<void> {
    this.#history.stop();
    this.#closing.abort(new Error("console closing"));
  }

  async handle(req: IncomingMessage, res: ServerResponse, target: ConsoleTarget): Promise<boolean> {
    const { path } = target;
    if (
      !(path === "/" || path === "/console" || path.startsWith("/console/") || path.startsWith("/assets/"))
    ) {
      return false;
    }
    try {
      await this.#route(req, res, target);
    } catch (err) {
      this.#log.error({ err, method: req.method, path: path.slice(0, 200) }, "console request failed");
      this.#fail(req, res, refuse(500, "internal error; see the service log"), undefined);
    }
    return true;
  }

  async #route(req: IncomingMessage, res: ServerResponse, target: ConsoleTarget): Promise<void> {
    const method = req.method ?? "";
    const { path, query } = target;
    const isGet = method === "GET" || method === "HEAD";

    if (path.startsWith("/assets/")) {
      if (!isGet) {
        return this.#fail(
          req,
          res,
          refuse(405, `${method} is not allowed on ${path}`, { allow: "GET, HEAD" }),
          undefined,
        );
      }
      return this.#asset(req, res, path.slice("/assets/".length));
    }

    // Guessing the token through the Authorization header is throttled like the login form.
    if (req.headers.authorization !== undefined) {
      const wait = this.#throttle.retryAfterSec();
      if (wait > 0) {
        return this.#fail(
          req,
          res,
          refuse(429, `too many wrong tokens; try again in ${wait} s`, { "retry-after": String(wait) }),
          undefined,
        );
      }
    }
    const auth = this.#auth.authenticate(req);
    if (auth.problem?.status === 401) this.#throttle.failed();
    const clearCookie: Record<string, string> = auth.clearCookie
      ? { "set-cookie": clearedSessionCookie() }
      : {};
    if (auth.problem)
      return this.#fail(req, res, refuse(auth.problem.status, auth.problem.message, clearCookie), auth);

    if (path === "/console/login") {
      if (isGet) return this.#loginPage(req, res, query, auth, clearCookie);
      if (method === "POST") return this.#login(req, res);
      return this.#fail(
        req,
        res,
        refuse(405, `${method} is not allowed on ${path}`, { allow: "GET, HEAD, POST" }),
        auth,
      );
    }
    if (path === "/console/logout") {
      if (method !== "POST")
        return this.#fail(
          req,
          res,
          refuse(405, `${method} is not allowed on ${path}`, { allow: "POST" }),
          auth,
        );
      return this.#logout(req, res, auth);
    }

    if (this.#auth.requireTokenForRead && auth.credential.kind === "none") {
      if (isGet && !wantsJson(req)) {
        const back = `${path}${query.size > 0 ? `?${query}` : ""}`;
        return redirect(res, `/console/login?next=${encodeURIComponent(back)}`, clearCookie);
      }
      return this.#fail(
        req,
        res,
        refuse(
          401,
          "this console requires the ops token to read: log in, or send Authorization: Bearer <token>",
          clearCookie,
        ),
        auth,
      );
    }

    const segments = path.split("/").slice(1);
    const page = async (name: () => Promise<void>, allow = "GET, HEAD") => {
      if (!isGet)
        return this.#fail(req, res, refuse(405, `${method} is not allowed on ${path}`, { allow }), auth);
      return name();
    };
    if (path === "/") return page(() => this.#overview(req, res, query, auth, clearCookie));
    if (path === "/console" || path === "/console/") return page(async () => redirect(res, "/"));
    if (path === "/console/partners") return page(() => this.#partners(req, res, query, auth, clearCookie));
    if (path === "/console/dead-letters")
      return page(() => this.#deadLettersPage(req, res, query, auth, clearCookie));

    if (segments[0] === "console" && segments[1] === "partners" && segments.length >= 3) {
      const account = decodeSegment(segments[2] as string, "account");
      if (isRefusal(account)) return this.#fail(req, res, account, auth);
      if (segments.length === 3)
        return page(() => this.#partner(req, res, query, account, auth, clearCookie));
      const verb = segments[3];
      if (segments.length === 4 && (verb === "pause" || verb === "resume" || verb === "replay")) {
        if (method !== "POST")
          return this.#fail(
            req,
            res,
            refuse(405, `${method} is not allowed on ${path}`, { allow: "POST" }),
            auth,
          );
        return this.#action(req, res, auth, (form) => this.#partnerAction(verb, account, form));
      }
    }
    if (
      segments[0] === "console" &&
      segments[1] === "dead-letters" &&
      segments.length === 4 &&
      segments[3] === "redrive"
    ) {
      const queue = decodeSegment(segments[2] as string, "queue");
      if (isRefusal(queue)) return this.#fail(req, res, queue, auth);
      if (method !== "POST")
        return this.#fail(
          req,
          res,
          refuse(405, `${method} is not allowed on ${path}`, { allow: "POST" }),
          auth,
        );
      return this.#action(req, res, auth, (form) => this.#redrive(queue, form));
    }
    return this.#fail(req, res, refuse(404, `no console page at ${shown(path)}`), auth);
  }

  // ---- pages ------------------------------------------------------------------------------------

  async #overview(
    req: IncomingMessage,
    res: ServerResponse,
    query: URLSearchParams,
    auth: AuthResult,
    headers: Record<string, string>,
  ) {
    const params = strictParams(query, ["flash"]);
    if (isRefusal(params)) return this.#fail(req, res, params, auth);
    const routes = await within(this.#routesOnce(), 2000).catch(() => undefined);
    const relays = this.#deps.service.relays;
    const depths = await Promise.all(
      relays.map((relay) => {
        const route = routes?.find((r) => r.queue === relay.options.name);
        return Promise.all([
          route ? within(this.#depths.get(route.queueUrl), 1500) : undefined,
          route?.deadLetterQueueUrl ? within(this.#depths.get(route.deadLetterQueueUrl), 1500) : undefined,
        ]);
      }),
    );
    // Read after the waits: every number of the page is from the same instant.
    const nowMs = Date.now();
    const queues = relays.map((relay, i) => {
      const route = routes?.find((r) => r.queue === relay.options.name);
      const [depth, dlqDepth] = depths[i] ?? [];
      return queueOverview(relay, {
        depth,
        deadLetter: route?.deadLetterQueueUrl
          ? {
              name: lastSegment(route.deadLetterQueueUrl),
              depth: dlqDepth ?? { ok: false, error: "waiting for GetQueueAttributes", atMs: nowMs },
            }
          : undefined,
        history: this.#history,
        nowMs,
      });
    });
    const rows = await this.#rows();
    const counts = new Map<string, number>(CONSOLE_STATES.map((s) => [s, 0]));
    for (const r of rows) counts.set(r.state, (counts.get(r.state) ?? 0) + 1);
    this.#render(req, res, "@overview", "Overview", auth, params, headers, {
      queues,
      legend: RATE_LEGEND,
      partnerStates: [...counts].map(([state, n]) => ({ state, shown: count(n) })),
      partnersKnown: count(rows.length),
    });
  }

  async #partners(
    req: IncomingMessage,
    res: ServerResponse,
    query: URLSearchParams,
    auth: AuthResult,
    headers: Record<string, string>,
  ) {
    const flash = query.get("flash");
    const rest = new URLSearchParams([...query].filter(([k]) => k !== "flash"));
    const q = parseListQuery(rest);
    if (isRefusal(q)) return this.#fail(req, res, q, auth);
    const page = listPage(await this.#rows(), q);
    this.#render(
      req,
      res,
      "@partners",
      "Partners",
      auth,
      new Map(flash ? [["flash", [flash]]] : []),
      headers,
      {
        page,
        self: listHref(q),
        states: CONSOLE_STATES,
        sorts: [
          { key: "held", label: "held records" },
          { key: "oldest", label: "oldest buffered" },
          { key: "account", label: "account" },
        ],
      },
    );
  }

  async #partner(
    req: IncomingMessage,
    res: ServerResponse,
    query: URLSearchParams,
    account: string,
    auth: AuthResult,
    headers: Record<string, string>,
  ) {
    const params = strictParams(query, ["flash"]);
    if (isRefusal(params)) return this.#fail(req, res, params, auth);
    const row = (await this.#rows()).find((r) => r.account === account);
    let pause: Pause | undefined;
    let pauseError: string | undefined;
    try {
      pause = await within(this.#deps.limits.pauseOf(account), 2000);
    } catch (err) {
      pauseError = (err as Error).message;
    }
    // The limits are the truth; a pause lifted elsewhere (another replica, expiry) leaves the list too.
    if (pause?.reason !== "operator" && !pauseError) this.#paused.delete(account);
    const parked = await this.#parked(account);
    const nowMs = Date.now();
    const relays = this.#deps.service.relays;
    const use = relays.map((r) => {
      const d = r.dispatcherOf(account);
      return {
        queue: r.options.name,
        buffered: d?.buffered ?? 0,
        inFlight: d?.inFlightRecords ?? 0,
        oldestMs: d?.oldestBufferedAtMs === undefined ? undefined : nowMs - d.oldestBufferedAtMs,
      };
    });
    const profile = partnerProfile(this.#options.config, account, this.#deps.env);
    const state =
      pause?.reason === "operator"
        ? "paused"
        : row && row.state !== "paused"
          ? row.state
          : (row?.state ?? "idle");
    const onOutage = [
      ...new Set(profile.queues.map((q) => q.dispatch.find((s) => s.key === "onOutage")?.value)),
    ].join(" / ");
    const notice = pauseError
      ? { kind: "warn" as const, text: `Could not read the partner's pause: ${pauseError}` }
      : undefined;
    this.#render(
      req,
      res,
      "@partner",
      account.length > 60 ? `${account.slice(0, 60)}…` : account,
      auth,
      params,
      headers,
      {
        account,
        self: `/console/partners/${encodeURIComponent(account)}`,
        dispatchers: relays.filter((r) => r.dispatcherOf(account) !== undefined).length,
        state,
        pause,
        onOutage,
        nowMs,
        use,
        lastError: cleanError(this.#deps.recentError(account)),
        profile,
        parked,
        replay: this.#replays.get(account),
        durations: PAUSE_PRESETS,
      },
      notice,
    );
  }

  async #deadLettersPage(
    req: IncomingMessage,
    res: ServerResponse,
    query: URLSearchParams,
    auth: AuthResult,
    headers: Record<string, string>,
  ) {
    const params = strictParams(query, ["queue", "flash"]);
    if (isRefusal(params)) return this.#fail(req, res, params, auth);
    let routes: DeadLetterRoute[] = [];
    let routesError: string | undefined;
    try {
      routes = await this.#routesOnce();
    } catch (err) {
      routesError = (err as Error).message;
    }
    const queue = params.get("queue")?.[0];
    if (queue !== undefined && !routes.some((r) => r.queue === queue)) {
      return this.#fail(
        req,
        res,
        refuse(
          400,
          `queue: ${shown(queue)} is not configured; valid: ${routes.map((r) => r.queue).join(", ")}`,
        ),
        auth,
      );
    }
    const rows = await Promise.all(
      routes.map(async (r) => ({
        queue: r.queue,
        dlqName: r.deadLetterQueueUrl ? lastSegment(r.deadLetterQueueUrl) : "",
        depth: r.deadLetterQueueUrl ? await within(this.#depths.get(r.deadLetterQueueUrl), 1500) : undefined,
      })),
    );
    let selected: object | undefined;
    if (queue !== undefined) {
      const route = routes.find((r) => r.queue === queue) as DeadLetterRoute;
      if (!route.deadLetterQueueUrl) {
        selected = {
          queue,
          messages: [],
          peekVisibilitySec: 0,
          error: "This queue has no dead-letter queue: set its deadLetterQueue or give it a redrive policy.",
        };
      } else if (this.#auth.actionsEnabled && auth.credential.kind === "none") {
        // A peek receives the messages (their receive count goes up) and shows customers' data.
        selected = {
          queue,
          messages: [],
          peekVisibilitySec: 5,
          error: "Peeking shows message bodies and counts as a receive: log in with the ops token to peek.",
        };
      } else {
        try {
          const messages = await (await this.#deadLettersOnce()).peek(queue, {
            max: this.#options.peekMax ?? 50,
            signal: AbortSignal.any([this.#closing.signal, AbortSignal.timeout(10_000)]),
          });
          selected = {
            queue,
            messages: messages.map((m) => ({ ...m, reason: redactUrlsIn(m.reason) })),
            peekVisibilitySec: 5,
          };
        } catch (err) {
          selected = {
            queue,
            messages: [],
            peekVisibilitySec: 5,
            error: `Could not peek: ${(err as Error).message}`,
          };
        }
      }
    }
    this.#render(req, res, "@dead-letters", "Dead letters", auth, params, headers, {
      routes: rows,
      routesError,
      selected,
      self: `/console/dead-letters${queue !== undefined ? `?queue=${encodeURIComponent(queue)}` : ""}`,
    });
  }

  #loginPage(
    req: IncomingMessage,
    res: ServerResponse,
    query: URLSearchParams,
    auth: AuthResult,
    headers: Record<string, string>,
  ) {
    const params = strictParams(query, ["next"]);
    if (isRefusal(params)) return this.#fail(req, res, params, auth);
    this.#render(req, res, "@login", "Log in", auth, new Map(), headers, {
      enabled: this.#auth.actionsEnabled,
      next: localPath(params.get("next")?.[0]),
      failed: undefined,
    });
  }

  async #login(req: IncomingMessage, res: ServerResponse) {
    const none: AuthResult = { credential: { kind: "none" }, clearCookie: false };
    if (!this.#auth.actionsEnabled) {
      return this.#fail(
        req,
        res,
        refuse(403, "actions are off: no ops token is configured (set ops.token or OCTORELAY_OPS_TOKEN)"),
        none,
      );
    }
    const cross = crossSiteProblem(req);
    if (cross) return this.#fail(req, res, refuse(403, cross), none);
    const wait = this.#throttle.retryAfterSec();
    if (wait > 0) {
      return this.#fail(
        req,
        res,
        refuse(429, `too many failed logins; try again in ${wait} s`, { "retry-after": String(wait) }),
        none,
      );
    }
    const form = await readForm(req, 8 * 1024);
    if (isRefusal(form)) return this.#fail(req, res, form, none);
    const params = strictParams(form, ["token", "next"]);
    if (isRefusal(params)) return this.#fail(req, res, params, none);
    const next = localPath(params.get("next")?.[0]);
    if (!this.#auth.checkToken(params.get("token")?.[0] ?? "")) {
      this.#throttle.failed();
      this.#log.warn(
        { action: "login", outcome: "refused", from: req.socket.remoteAddress },
        "console login refused",
      );
      const chrome = this.#chrome(req, "Log in", none, new Map());
      return sendPage(
        res,
        401,
        this.#views.page("@login", chrome, { enabled: true, next, failed: "That is not the ops token." }),
      );
    }
    const session = this.#auth.newSession();
    this.#log.info(
      {
        action: "login",
        by: `session ${(session.credential as { tag: string }).tag}`,
        from: req.socket.remoteAddress,
      },
      "console action",
    );
    redirect(res, next, { "set-cookie": sessionCookie(session.cookieValue, overTls(req)) });
  }

  async #logout(req: IncomingMessage, res: ServerResponse, auth: AuthResult) {
    if (auth.credential.kind === "session") {
      const form = await readForm(req, this.#maxBodyBytes);
      if (isRefusal(form)) return this.#fail(req, res, form, auth);
      const cross = crossSiteProblem(req);
      const sent = form.get(CSRF_FIELD) ?? headerValue(req, CSRF_HEADER);
      if (cross || !this.#auth.csrfMatches(auth.credential, sent)) {
        return this.#fail(
          req,
          res,
          refuse(403, cross ?? "CSRF token missing or wrong: reload the page and try again"),
          auth,
        );
      }
    }
    redirect(res, "/", { "set-cookie": clearedSessionCookie() });
  }

  // ---- actions ----------------------------------------------------------------------------------

  /**
   * The gate every action passes: actions on (a token configured), a credential (bearer, or a
   * session with its CSRF token), a request from this console's own pages, a small form body.
   */
  async #action(
    req: IncomingMessage,
    res: ServerResponse,
    auth: AuthResult,
    act: (form: URLSearchParams) => Promise<ActionOutcome | Refusal>,
  ) {
    if (!this.#auth.actionsEnabled) {
      return this.#fail(
        req,
        res,
        refuse(
          403,
          "actions are off: no ops token is configured; set ops.token (or OCTORELAY_OPS_TOKEN) to enable them",
        ),
        auth,
      );
    }
    const credential = auth.credential;
    if (credential.kind === "none") {
      return this.#fail(
        req,
        res,
        refuse(401, "this action needs the ops token: log in, or send Authorization: Bearer <token>", {
          "www-authenticate": 'Bearer realm="octorelay"',
        }),
        auth,
      );
    }
    const cross = crossSiteProblem(req);
    if (cross) return this.#fail(req, res, refuse(403, cross), auth);
    const form = await readForm(req, this.#maxBodyBytes);
    if (isRefusal(form)) return this.#fail(req, res, form, auth);
    if (credential.kind === "session") {
      const sent = form.get(CSRF_FIELD) ?? headerValue(req, CSRF_HEADER);
      if (!this.#auth.csrfMatches(credential, sent)) {
        return this.#fail(
          req,
          res,
          refuse(403, "CSRF token missing or wrong: reload the page and try again"),
          auth,
        );
      }
    }
    form.delete(CSRF_FIELD);
    const outcome = await act(form);
    if (isRefusal(outcome)) return this.#fail(req, res, outcome, auth);
    this.#log.info({ ...outcome.log, by: who(credential), from: req.socket.remoteAddress }, "console action");
    if (wantsJson(req)) return sendJson(res, 200, outcome.json);
    const flash = this.#remember(outcome.notice);
    const sep = outcome.location.includes("?") ? "&" : "?";
    redirect(res, `${outcome.location}${sep}flash=${flash}`);
  }

  async #partnerAction(
    verb: "pause" | "resume" | "replay",
    account: string,
    form: URLSearchParams,
  ): Promise<ActionOutcome | Refusal> {
    const location = `/console/partners/${encodeURIComponent(account)}`;
    if (verb === "pause") {
      const params = strictParams(form, ["for"]);
      if (isRefusal(params)) return params;
      const forMs = parseDuration(params.get("for")?.[0] ?? "1h");
      if (isRefusal(forMs)) return forMs;
      const pause: Pause = { reason: "operator", untilMs: Date.now() + forMs };
      const refused = await unlessUnavailable(() => this.#deps.limits.pause(account, pause));
      if (refused) return refused;
      this.#paused.set(account, pause);
      return {
        log: { action: "pause", account, untilMs: pause.untilMs },
        notice: {
          kind: "info",
          text: `Paused ${account} until ${isoTime(pause.untilMs)}. Nothing is sent to it until then or until resumed.`,
        },
        location,
        json: { ok: true, action: "pause", account, untilMs: pause.untilMs },
      };
    }
    const params = strictParams(form, []);
    if (isRefusal(params)) return params;
    if (verb === "resume") {
      let before: Pause | undefined;
      const refused = await unlessUnavailable(async () => {
        before = await this.#deps.limits.pauseOf(account);
        await this.#deps.limits.resume(account);
      });
      if (refused) return refused;
      this.#paused.delete(account);
      const was = before?.reason === "operator";
      return {
        log: { action: "resume", account, wasPaused: was },
        notice: was
          ? { kind: "ok", text: `Resumed ${account}: what it holds is being sent now, within its limits.` }
          : { kind: "info", text: `${account} was not paused by an operator; nothing changed.` },
        location,
        json: { ok: true, action: "resume", account, wasPaused: was },
      };
    }
    const running = this.#replays.get(account);
    if (running?.running) {
      return refuse(
        409,
        `a replay of ${shown(account)} is already running (since ${isoTime(running.startedAtMs)}); wait for it to finish`,
      );
    }
    const job: ReplayJob = { startedAtMs: Date.now(), running: true };
    this.#replays.delete(account);
    this.#replays.set(account, job);
    if (this.#replays.size > 1000) this.#replays.delete(this.#replays.keys().next().value as string);
    // In the background: a replay waits on the partner's limits and may take minutes.
    void this.#deps
      .replay(account, this.#closing.signal)
      .then((result) => {
        job.result = result;
        this.#log.info(
          {
            action: "replay",
            account,
            count: result.batches,
            records: result.records,
            failed: result.failed,
          },
          "console replay done",
        );
      })
      .catch((err: unknown) => {
        job.error = (err as Error).message;
        this.#log.error({ err, account }, "console replay failed");
      })
      .finally(() => {
        job.running = false;
        job.endedAtMs = Date.now();
      });
    return {
      log: { action: "replay", account },
      notice: {
        kind: "info",
        text: `Replay of ${account}'s parked batches started; this page shows when it is done.`,
      },
      location,
      json: { ok: true, action: "replay", account, started: true },
    };
  }

  async #redrive(queue: string, form: URLSearchParams): Promise<ActionOutcome | Refusal> {
    const params = strictParams(form, ["scope", "id"], ["id"]);
    if (isRefusal(params)) return params;
    const scope = params.get("scope")?.[0] ?? (params.has("id") ? "selected" : undefined);
    if (scope !== "all" && scope !== "selected") {
      return refuse(
        400,
        `scope: must be "all" or "selected" (with one id per message); got ${shown(scope ?? "")}`,
      );
    }
    const ids = params.get("id") ?? [];
    if (scope === "selected" && ids.length === 0)
      return refuse(400, "id: select at least one message to redrive");
    if (ids.length > 1000) return refuse(400, "id: at most 1000 messages per redrive");
    const routes = await this.#routesOnce();
    const route = routes.find((r) => r.queue === queue);
    if (!route)
      return refuse(
        404,
        `queue: ${shown(queue)} is not configured; valid: ${routes.map((r) => r.queue).join(", ")}`,
      );
    if (!route.deadLetterQueueUrl) return refuse(409, `queue ${shown(queue)} has no dead-letter queue`);
    if (this.#redriving.has(queue))
      return refuse(409, `a redrive of ${shown(queue)} is already running; wait for it to finish`);
    this.#redriving.add(queue);
    let result: RedriveResult;
    try {
      result = await (await this.#deadLettersOnce()).redrive(
        queue,
        scope === "all" ? { all: true } : { messageIds: ids },
        { signal: this.#closing.signal },
      );
    } finally {
      this.#redriving.delete(queue);
      this.#depths.forget(route.deadLetterQueueUrl);
      this.#depths.forget(route.queueUrl);
    }
    const location = `/console/dead-letters?queue=${encodeURIComponent(queue)}`;
    if (result.method === "move-task") {
      return {
        log: { action: "redrive", queue, scope, method: result.method, taskHandle: result.taskHandle },
        notice: {
          kind: "ok",
          text: `SQS is moving every message of ${queue}'s dead-letter queue back to ${queue} (message-move task started).`,
        },
        location,
        json: { ok: true, action: "redrive", queue, ...result },
      };
    }
    const problems = [...redriveProblems(result), ...(result.more ? ["more remain: redrive again"] : [])];
    return {
      log: {
        action: "redrive",
        queue,
        scope,
        method: result.method,
        count: result.redriven,
        ...omitIds(result),
      },
      notice: {
        kind: problems.length > 0 ? "warn" : "ok",
        text: `Redrove ${result.redriven} message${result.redriven === 1 ? "" : "s"} back to ${queue}${problems.length ? `; ${problems.join("; ")}` : ""}.`,
      },
      location,
      json: { ok: true, action: "redrive", queue, ...result },
    };
  }

  // ---- helpers ----------------------------------------------------------------------------------

  #render(
    req: IncomingMessage,
    res: ServerResponse,
    name: PageName,
    title: string,
    auth: AuthResult,
    params: Map<string, string[]>,
    headers: Record<string, string>,
    data: object,
    extraNotice?: Notice,
  ) {
    const chrome = this.#chrome(req, title, auth, params, extraNotice);
    const credential = auth.credential;
    const actions = {
      enabled: this.#auth.actionsEnabled,
      allowed: this.#auth.actionsEnabled && credential.kind !== "none",
    };
    sendPage(
      res,
      200,
      this.#views.page(name, chrome, { ...data, actions, csrf: chrome.csrf }),
      headers,
      req.method === "HEAD",
    );
  }

  #chrome(
    req: IncomingMessage,
    title: string,
    auth: AuthResult,
    params: Map<string, string[]>,
    extra?: Notice,
  ): Chrome {
    const here = (req.url ?? "/").slice(0, 1024);
    const path = here.split("?")[0] ?? "/";
    const flashId = params.get("flash")?.[0];
    const flash = flashId ? this.#flash.get(flashId)?.notice : undefined;
    return {
      title,
      here,
      nav: [
        { href: "/", label: "Overview", current: path === "/" },
        { href: "/console/partners", label: "Partners", current: path.startsWith("/console/partners") },
        {
          href: "/console/dead-letters",
          label: "Dead letters",
          current: path.startsWith("/console/dead-letters"),
        },
      ],
      auth: { actionsEnabled: this.#auth.actionsEnabled, kind: auth.credential.kind },
      csrf: auth.credential.kind === "session" ? auth.credential.csrf : "",
      ready: this.#deps.service.readiness(),
      notice: flash ?? extra,
    };
  }

  #fail(req: IncomingMessage, res: ServerResponse, refusal: Refusal, auth: AuthResult | undefined) {
    if (wantsJson(req) || auth === undefined) {
      return sendJson(res, refusal.status, { error: refusal.message }, refusal.headers);
    }
    const chrome = this.#chrome(req, `${refusal.status}`, auth, new Map());
    const html = this.#views.page("@error", chrome, {
      status: refusal.status,
      statusText: STATUS_TEXT[refusal.status] ?? "",
      message: refusal.message,
    });
    sendPage(res, refusal.status, html, refusal.headers, req.method === "HEAD");
  }

  #asset(req: IncomingMessage, res: ServerResponse, name: string) {
    const asset = assetNamed(name);
    if (!asset) return this.#fail(req, res, refuse(404, `no asset ${shown(name)}`), undefined);
    const headers = {
      "content-type": asset.contentType,
      etag: asset.etag,
      "cache-control": "public, max-age=300",
      "x-content-type-options": "nosniff",
    };
    if (req.headers["if-none-match"] === asset.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, "content-length": asset.body.length });
    res.end(req.method === "HEAD" ? undefined : asset.body);
  }

  /**
   * Partner snapshots are one pass over every partner: shared by the requests of one second, their
   * ages carried forward to now. Always read at the current time, never one taken before an await.
   */
  async #rows(): Promise<PartnerRow[]> {
    let paused: ReadonlyMap<string, Pause> = this.#paused;
    if (this.#deps.pausedAccounts) {
      try {
        paused = (await within(this.#deps.pausedAccounts(), 2000)) ?? this.#paused;
      } catch (err) {
        this.#log.warn({ err }, "could not list paused partners; showing those paused from this console");
      }
    }
    const nowMs = Date.now();
    if (!this.#snapshot || nowMs - this.#snapshot.atMs >= 1000 || nowMs < this.#snapshot.atMs) {
      this.#snapshot = { atMs: nowMs, rows: this.#deps.service.partnerSnapshots(nowMs) };
    }
    for (const [account, p] of this.#paused) if (p.untilMs <= nowMs) this.#paused.delete(account);
    return partnerRows(this.#snapshot.rows, paused, nowMs, nowMs - this.#snapshot.atMs);
  }

  #routesOnce(): Promise<DeadLetterRoute[]> {
    if (!this.#routes) {
      this.#routes = this.#deps.routes();
      // A failure (SQS down at start) is retried on the next request, not remembered.
      this.#routes.catch(() => {
        this.#routes = undefined;
      });
    }
    return this.#routes;
  }

  async #deadLettersOnce(): Promise<DeadLetters> {
    const routes = await this.#routesOnce();
    this.#deadLetters ??= new DeadLetters({ sqs: this.#deps.sqs, log: this.#deps.log }, { routes });
    return this.#deadLetters;
  }

  /** The account's parked batches: the first page of objects under its park prefix. */
  async #parked(account: string) {
    const { bucket, prefix } = this.#options.config.partners.park;
    const accountPrefix = `${prefix}${encodeKeySegment(account)}/`;
    try {
      const out = await this.#deps.s3.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: accountPrefix, MaxKeys: 100 }),
        { abortSignal: AbortSignal.timeout(5000) },
      );
      return {
        bucket,
        prefix: accountPrefix,
        objects: (out.Contents ?? []).map((o) => ({
          key: (o.Key ?? "").slice(accountPrefix.length),
          size: bytes(o.Size ?? 0),
          modified: o.LastModified ? isoTime(o.LastModified.getTime()) : "",
        })),
        truncated: out.IsTruncated === true,
        error: undefined,
      };
    } catch (err) {
      return {
        bucket,
        prefix: accountPrefix,
        objects: [],
        truncated: false,
        error: (err as Error).name || "error",
      };
    }
  }

  #remember(notice: Notice): string {
    const nowMs = Date.now();
    for (const [id, f] of this.#flash)
      if (nowMs - f.atMs > 5 * 60_000 || this.#flash.size > 200) this.#flash.delete(id);
    const id = randomBytes(9).toString("base64url");
    this.#flash.set(id, { notice, atMs: nowMs });
    return id;
  }
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not found",
  405: "Method not allowed",
  409: "Conflict",
  413: "Payload too large",
  414: "URI too long",
  415: "Unsupported media type",
  429: "Too many requests",
  500: "Internal error",
  503: "Service unavailable",
};

/**
 * Runs a call on the partner limits; their store being unavailable (Redis down, in cluster mode)
 * is the operator's to retry, not an internal error: 503 with the limits' own message, which says
 * what happened and when to try again.
 */
async function unlessUnavailable(call: () => Promise<void>): Promise<Refusal | undefined> {
  try {
    await call();
    return undefined;
  } catch (err) {
    if (err instanceof LimitsUnavailableError) return refuse(503, err.message);
    throw err;
  }
}

function decodeSegment(raw: string, what: string): string | Refusal {
  if (raw.length > MAX_ACCOUNT_CHARS * 3) return refuse(414, `${what}: over ${MAX_ACCOUNT_CHARS} characters`);
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    return refuse(400, `${what}: not a valid percent-encoded path segment`);
  }
  if (value === "") return refuse(400, `${what}: empty`);
  if (value.length > MAX_ACCOUNT_CHARS) return refuse(414, `${what}: over ${MAX_ACCOUNT_CHARS} characters`);
  return value;
}

/** `15m`, `1h`, `7d` → ms; at most 30 days. */
function parseDuration(text: string): number | Refusal {
  const m = /^(\d{1,5})([mhd])$/.exec(text);
  const ms = m ? Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS] : Number.NaN;
  if (!(ms > 0 && ms <= MAX_PAUSE_MS)) {
    return refuse(
      400,
      `for: must be a duration such as 15m, 1h or 4h, at most 12h (SQS keeps a held message invisible 12 hours at most); got ${shown(text)}`,
    );
  }
  return ms;
}

function cleanError(error: RecentError | undefined): RecentError | undefined {
  return error ? { ...error, message: redactUrlsIn(error.message) } : undefined;
}

function who(credential: Credential): string {
  return credential.kind === "session" ? `session ${credential.tag}` : credential.kind;
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

const lastSegment = (url: string) => url.split("/").filter(Boolean).pop() ?? url;
const isoTime = (ms: number) =>
  new Date(ms)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");

function omitIds(result: Extract<RedriveResult, { method: "receive-send-delete" }>) {
  const { notFound, method: _method, ...rest } = result;
  return { ...rest, notFound: notFound.length };
}

/** The value if it settles within `ms`, else undefined; a rejection is passed on. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
    timer.unref();
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Who may do what on the console. The ops token (`ops.token`) is the only credential: sent as
 * `Authorization: Bearer <token>` by scripts, or typed once into the login form, which sets a session
 * cookie. The cookie holds an HMAC-signed session id, never the token; its key is derived from the
 * token, so changing the token ends every session, and every replica accepts the others' sessions.
 * Each session has a CSRF token (derived too: nothing is stored) that every form and htmx request
 * sends back.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";

export const SESSION_COOKIE = "octorelay_session";
export const CSRF_FIELD = "_csrf";
export const CSRF_HEADER = "x-csrf-token";
/** A session lasts a working day; then the form asks for the token again. */
export const SESSION_MAX_AGE_SEC = 12 * 60 * 60;

export type Credential =
  | { kind: "none" }
  | { kind: "bearer" }
  | { kind: "session"; sessionId: string; csrf: string; tag: string };

/** What a request's credentials amount to; `problem` set means refuse it (401/400) whatever the route. */
export interface AuthResult {
  credential: Credential;
  /** A bad bearer token or a malformed session cookie: the request is refused with this status. */
  problem?: { status: 400 | 401; message: string };
  /** The cookie was ours but is no longer valid (expired, another token): clear it. */
  clearCookie: boolean;
}

const COOKIE_VALUE = /^v1\.([0-9a-z]{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;

/** Equal-length digests compared in constant time, so neither length nor content leaks by timing. */
export function safeEqual(a: string, b: string): boolean {
  const x = createHash("sha256").update(a, "utf8").digest();
  const y = createHash("sha256").update(b, "utf8").digest();
  return timingSafeEqual(x, y);
}

export class ConsoleAuth {
  readonly #token: string;
  readonly #key: Buffer | undefined;
  readonly requireTokenForRead: boolean;
  readonly #nowMs: () => number;

  constructor(options: { token: string; requireTokenForRead: boolean; nowMs?: () => number }) {
    this.#token = options.token;
    this.requireTokenForRead = options.requireTokenForRead && options.token !== "";
    this.#key = options.token
      ? createHmac("sha256", options.token).update("octorelay console session key v1").digest()
      : undefined;
    this.#nowMs = options.nowMs ?? Date.now;
  }

  /** Actions need a token to be configured at all. */
  get actionsEnabled(): boolean {
    return this.#key !== undefined;
  }

  checkToken(candidate: string): boolean {
    return this.#key !== undefined && safeEqual(candidate, this.#token);
  }

  /** A new session: the cookie value to set and the session it stands for. */
  newSession(): { cookieValue: string; credential: Credential } {
    const key = this.#requireKey();
    const issued = Math.floor(this.#nowMs() / 1000).toString(36);
    const id = randomBytes(16).toString("base64url");
    const mac = createHmac("sha256", key).update(`v1.${issued}.${id}`).digest("base64url");
    return { cookieValue: `v1.${issued}.${id}.${mac}`, credential: this.#session(id) };
  }

  authenticate(req: IncomingMessage): AuthResult {
    const header = req.headers.authorization;
    if (header !== undefined && /^bearer\s/i.test(header)) {
      const given = header.slice(header.indexOf(" ") + 1).trim();
      if (this.checkToken(given)) return { credential: { kind: "bearer" }, clearCookie: false };
      return {
        credential: { kind: "none" },
        clearCookie: false,
        problem: {
          status: 401,
          message: this.actionsEnabled
            ? "Authorization: the bearer token is not the ops token"
            : "Authorization: no ops token is configured (ops.token / OCTORELAY_OPS_TOKEN), so none is accepted",
        },
      };
    }
    const cookie = readCookie(req.headers.cookie, SESSION_COOKIE);
    if (cookie === undefined) return { credential: { kind: "none" }, clearCookie: false };
    const match = COOKIE_VALUE.exec(cookie);
    if (!match) {
      return {
        credential: { kind: "none" },
        clearCookie: true,
        problem: {
          status: 400,
          message: `cookie ${SESSION_COOKIE}: malformed; it has been cleared, log in again`,
        },
      };
    }
    const [, issued, id, mac] = match as unknown as [string, string, string, string];
    const key = this.#key;
    const issuedMs = Number.parseInt(issued, 36) * 1000;
    const fresh = this.#nowMs() - issuedMs < SESSION_MAX_AGE_SEC * 1000 && issuedMs <= this.#nowMs() + 60_000;
    const expected = key ? createHmac("sha256", key).update(`v1.${issued}.${id}`).digest("base64url") : "";
    if (!key || !fresh || !safeEqual(mac, expected)) {
      // Expired, or signed with an earlier token: simply logged out.
      return { credential: { kind: "none" }, clearCookie: true };
    }
    return { credential: this.#session(id), clearCookie: false };
  }

  /** The session's CSRF token matches what the request sent (form field or header). */
  csrfMatches(credential: Credential, sent: string | undefined): boolean {
    return credential.kind === "session" && sent !== undefined && safeEqual(sent, credential.csrf);
  }

  #session(id: string): Credential {
    const key = this.#requireKey();
    return {
      kind: "session",
      sessionId: id,
      csrf: createHmac("sha256", key).update(`csrf.${id}`).digest("base64url"),
      // What logs show of a session: enough to tell sessions apart, useless to forge one.
      tag: createHash("sha256").update(id).digest("hex").slice(0, 8),
    };
  }

  #requireKey(): Buffer {
    if (!this.#key) throw new Error("no ops token configured: sessions are off");
    return this.#key;
  }
}

/** The value of one cookie, undefined when absent; a Cookie header that cannot be read has none. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function sessionCookie(value: string, secure: boolean): string {
  return `${SESSION_COOKIE}=${value}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_MAX_AGE_SEC}${secure ? "; Secure" : ""}`;
}

export function clearedSessionCookie(): string {
  return `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`;
}

/**
 * A state-changing request comes from a page of this console: a browser says where it comes from
 * (Sec-Fetch-Site, Origin); a script sends neither, and must then carry the bearer token.
 */
export function crossSiteProblem(req: IncomingMessage): string | undefined {
  const site = req.headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin") {
    return `Sec-Fetch-Site: ${JSON.stringify(site)}; actions are only taken from the console's own pages`;
  }
  const origin = req.headers.origin;
  if (origin !== undefined) {
    const host = /^https?:\/\/([^/]+)$/i.exec(origin)?.[1];
    if (host === undefined || host.toLowerCase() !== (req.headers.host ?? "").toLowerCase()) {
      return "Origin: not this console's; actions are only taken from the console's own pages";
    }
  }
  return undefined;
}

/**
 * Failed logins, counted in a sliding minute across all clients: a token cannot be guessed by
 * trying, and the operator who mistyped it waits a minute at most.
 */
export class LoginThrottle {
  readonly #failuresMs: number[] = [];
  readonly #maxPerMinute: number;
  readonly #nowMs: () => number;

  constructor(options: { maxPerMinute?: number; nowMs?: () => number } = {}) {
    this.#maxPerMinute = options.maxPerMinute ?? 10;
    this.#nowMs = options.nowMs ?? Date.now;
  }

  /** Seconds to wait before trying again, or 0. */
  retryAfterSec(): number {
    const now = this.#nowMs();
    while (this.#failuresMs.length > 0 && (this.#failuresMs[0] as number) <= now - 60_000)
      this.#failuresMs.shift();
    if (this.#failuresMs.length < this.#maxPerMinute) return 0;
    return Math.max(1, Math.ceil(((this.#failuresMs[0] as number) + 60_000 - now) / 1000));
  }

  failed(): void {
    this.#failuresMs.push(this.#nowMs());
  }
}

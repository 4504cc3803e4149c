/**
 * The console's HTTP plumbing: bounded form bodies, strict parameters, and replies that carry the
 * same security headers on every page. Bad input is answered, never thrown: each helper returns a
 * Refusal (status and a message naming what was wrong) that the router sends as a 4xx page.
 */
import type { IncomingMessage, ServerResponse } from "node:http";

/** A request as the console sees it: the target already split (the ops server's parseTarget). */
export interface ConsoleTarget {
  path: string;
  query: URLSearchParams;
}

export interface Refusal {
  refused: true;
  status: number;
  message: string;
  headers?: Record<string, string>;
}

export const refuse = (status: number, message: string, headers?: Record<string, string>): Refusal => ({
  refused: true,
  status,
  message,
  ...(headers ? { headers } : {}),
});

export const isRefusal = (value: unknown): value is Refusal =>
  typeof value === "object" && value !== null && (value as Refusal).refused === true;

/**
 * Scripts and styles only from this server, no frames, forms only to this server: an injected
 * `<script>` would not run even if escaping ever failed. htmx is told not to evaluate anything.
 */
export const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "same-origin",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

/** A value as an error message echoes it: quoted, escaped, short. */
export const shown = (value: string): string =>
  JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);

/**
 * The urlencoded form body, at most `maxBytes` (413 past it, before reading more than that), of
 * type application/x-www-form-urlencoded (415 otherwise); an empty body needs no type.
 */
export async function readForm(req: IncomingMessage, maxBytes: number): Promise<URLSearchParams | Refusal> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && !/^\d{1,15}$/.test(declared))
    return refuse(400, "Content-Length: not a number");
  if (declared !== undefined && Number(declared) > maxBytes) {
    return refuse(413, `request body over ${maxBytes} bytes`);
  }
  const hasBody =
    (declared !== undefined && declared !== "0") || req.headers["transfer-encoding"] !== undefined;
  if (!hasBody) return new URLSearchParams();
  const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
  if (type !== "application/x-www-form-urlencoded") {
    return refuse(415, `Content-Type: must be application/x-www-form-urlencoded; got ${shown(type ?? "")}`);
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of req) {
      bytes += (chunk as Buffer).length;
      if (bytes > maxBytes) return refuse(413, `request body over ${maxBytes} bytes`);
      chunks.push(chunk as Buffer);
    }
  } catch {
    return refuse(400, "request body could not be read");
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.includes("\uFFFD")) return refuse(400, "request body: not valid UTF-8");
  return new URLSearchParams(text);
}

/**
 * The parameters, each at most once (but `repeatable` ones), none unknown; an empty value counts
 * as not given. A refusal names the parameter and what is valid.
 */
export function strictParams(
  params: URLSearchParams,
  allowed: readonly string[],
  repeatable: readonly string[] = [],
): Map<string, string[]> | Refusal {
  const out = new Map<string, string[]>();
  for (const [key, value] of params) {
    if (!allowed.includes(key)) {
      return refuse(400, `unknown parameter ${shown(key)}; valid: ${allowed.join(", ") || "none"}`);
    }
    if (value.length > 4096) return refuse(400, `${key}: over 4096 characters`);
    const values = out.get(key) ?? [];
    if (values.length > 0 && !repeatable.includes(key)) return refuse(400, `${key}: given more than once`);
    if (value !== "") values.push(value);
    out.set(key, values);
  }
  for (const [key, values] of out) if (values.length === 0) out.delete(key);
  return out;
}

export function sendPage(
  res: ServerResponse,
  status: number,
  html: string,
  headers: Record<string, string | string[]> = {},
  head = false,
): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    "content-type": "text/html; charset=utf-8",
    "content-length": Buffer.byteLength(html),
    "cache-control": "no-store",
    vary: "HX-Request, Cookie",
    ...(status >= 400 ? { connection: "close" } : {}),
    ...headers,
  });
  res.end(head ? undefined : html);
}

export function sendJson(
  res: ServerResponse,
  status: number,
  json: unknown,
  headers: Record<string, string | string[]> = {},
): void {
  if (res.headersSent || res.destroyed) return;
  const body = `${JSON.stringify(json)}\n`;
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    ...(status >= 400 ? { connection: "close" } : {}),
    ...headers,
  });
  res.end(body);
}

/** 303: after a POST the browser GETs the page again, so a reload never repeats the action. */
export function redirect(
  res: ServerResponse,
  location: string,
  headers: Record<string, string | string[]> = {},
): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(303, {
    ...SECURITY_HEADERS,
    location,
    "content-length": 0,
    "cache-control": "no-store",
    ...headers,
  });
  res.end();
}

/** A same-site path to return to after login; anything else (`//evil`, `https://…`) is `/`. */
export function localPath(next: string | undefined): string {
  if (next === undefined || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\"))
    return "/";
  return /^[\x21-\x7e]{1,1024}$/.test(next) ? next : "/";
}

/** The client asked for JSON (a script): actions answer with a JSON result instead of a redirect. */
export const wantsJson = (req: IncomingMessage): boolean =>
  /application\/json/i.test(req.headers.accept ?? "") && !/text\/html/i.test(req.headers.accept ?? "");

/** Whether the client reached us over TLS (directly, or through a proxy that says so). */
export const overTls = (req: IncomingMessage): boolean =>
  (req.socket as { encrypted?: boolean }).encrypted === true ||
  String(req.headers["x-forwarded-proto"] ?? "").toLowerCase() === "https";

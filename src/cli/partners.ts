/**
 * `octorelay partners list|show|pause|resume|replay`: the console's partner views and actions, for
 * scripts. A partner's limits live in the running service (or in Redis, shared by its replicas), so
 * these talk to its ops server: `/partners` for reading, the console's JSON actions for the rest
 * (`Accept: application/json`, `Authorization: Bearer` with the token read from an environment
 * variable, never from the command line, where `ps` and shell history would show it).
 */
import type { PartnerEntry, PartnersPage } from "../ops/ops-server.ts";

export const DEFAULT_OPS_URL = "http://127.0.0.1:9464";
export const DEFAULT_TOKEN_ENV = "OCTORELAY_OPS_TOKEN";
/** SQS keeps a held message invisible 12 hours at most, so the console refuses longer pauses. */
const MAX_PAUSE_MS = 12 * 3_600_000;
const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

export interface OpsClientOptions {
  url: string;
  "token-env": string;
  json: boolean;
  "timeout-sec": number;
}

/** What a command ends with: its exit code, and the one line for stderr when it failed. */
type Outcome = { code: 0 } | { code: 1 | 2; message: string };

type Answer = { ok: true; json: unknown } | { ok: false; code: 1 | 2; message: string; status?: number };

/** The ops server of one running service, with the token (if any) from the environment. */
class OpsClient {
  readonly base: string;
  readonly #token: string | undefined;
  readonly #tokenEnv: string;
  readonly #timeoutMs: number;

  constructor(base: string, token: string | undefined, tokenEnv: string, timeoutMs: number) {
    this.base = base;
    this.#token = token;
    this.#tokenEnv = tokenEnv;
    this.#timeoutMs = timeoutMs;
  }

  get(path: string): Promise<Answer> {
    return this.#request("GET", path, undefined);
  }

  post(path: string, form: Record<string, string>): Promise<Answer> {
    return this.#request("POST", path, new URLSearchParams(form).toString());
  }

  async #request(method: string, path: string, body: string | undefined): Promise<Answer> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    if (body !== undefined) headers["content-type"] = "application/x-www-form-urlencoded";
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers,
        ...(body !== undefined ? { body } : {}),
        redirect: "manual",
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      return { ok: false, code: 1, message: this.#unreachable(err) };
    }
    const type = res.headers.get("content-type") ?? "";
    let json: unknown;
    try {
      json = type.includes("application/json") ? await res.json() : undefined;
    } catch {
      json = undefined;
    }
    if (json === undefined) {
      await res.body?.cancel().catch(() => undefined);
      return {
        ok: false,
        code: 1,
        status: res.status,
        message: `${this.base} answered ${res.status} ${type ? `(${type.split(";")[0]})` : ""} with no JSON: is --url the ops port of an octorelay service (ops.port, default 9464)?`,
      };
    }
    if (res.ok) return { ok: true, json };
    const error =
      typeof (json as { error?: unknown }).error === "string" ? (json as { error: string }).error : "";
    return {
      ok: false,
      // A 400 names the argument that was wrong: a usage error, as if the CLI had caught it.
      code: res.status === 400 ? 2 : 1,
      status: res.status,
      message: this.#refusal(res, path, error),
    };
  }

  #refusal(res: Response, path: string, error: string): string {
    const status = res.status;
    let text = `the service answered ${status}: ${error || res.statusText}`;
    if (status === 401) {
      text += this.#token
        ? ` (the token in $${this.#tokenEnv} was refused)`
        : ` ($${this.#tokenEnv} is not set: put the ops token there, or name another variable with --token-env)`;
    } else if (status === 404 && path.startsWith("/console/")) {
      text = `the service answered 404: its ops server serves no console actions (an octorelay started without the console?)`;
    } else if (status === 429) {
      const wait = res.headers.get("retry-after");
      if (wait && !error.includes("try again")) text += ` (try again in ${wait} s)`;
    }
    return this.#hideToken(text);
  }

  #unreachable(err: unknown): string {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    if (e.name === "TimeoutError" || e.name === "AbortError") {
      return `no answer from ${this.base} within ${this.#timeoutMs / 1000} s (--timeout-sec)`;
    }
    const why = e.cause?.message ?? e.message;
    return this.#hideToken(
      `could not reach the ops server at ${this.base}: ${why}; is the service running, and is --url its ops port (ops.port, default 9464)?`,
    );
  }

  /** An error text never carries the token, whatever a library put in it. */
  #hideToken(text: string): string {
    return this.#token ? text.replaceAll(this.#token, "[redacted]") : text;
  }
}

/** The client, or the usage error that prevents one (exit 2). */
function clientFor(options: OpsClientOptions, env: NodeJS.ProcessEnv): OpsClient | { message: string } {
  let url: URL;
  try {
    url = new URL(options.url);
  } catch {
    return {
      message: `--url: must be the service's ops URL, like ${DEFAULT_OPS_URL}; got ${JSON.stringify(options.url)}`,
    };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { message: `--url: must start with http:// or https://; got ${JSON.stringify(options.url)}` };
  }
  if (url.username || url.password) {
    return {
      message:
        "--url: must not carry credentials; put the ops token in $OCTORELAY_OPS_TOKEN (or --token-env NAME)",
    };
  }
  if (url.search || url.hash)
    return { message: `--url: must have no query or fragment; got ${JSON.stringify(options.url)}` };
  const name = options["token-env"];
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    return {
      message: `--token-env: must be the name of an environment variable (like ${DEFAULT_TOKEN_ENV}); got ${JSON.stringify(name)}`,
    };
  }
  const token = env[name]?.trim() || undefined;
  if (token === undefined && name !== DEFAULT_TOKEN_ENV) {
    return { message: `--token-env ${name}: $${name} is not set (or empty); export the ops token in it` };
  }
  // A token a header cannot carry would make fetch throw with the token in its message.
  if (token !== undefined && !/^[\x21-\x7e]+$/.test(token)) {
    return {
      message: `$${name}: the token holds characters an HTTP header cannot carry (spaces, non-ASCII); the ops token never does`,
    };
  }
  return new OpsClient(
    `${url.origin}${url.pathname.replace(/\/+$/, "")}`,
    token,
    name,
    options["timeout-sec"] * 1000,
  );
}

/** Prints the command's outcome: the result on stdout, a failure as one line on stderr (and JSON with --json). */
function finish(command: string, json: boolean, outcome: Outcome | (Answer & { ok: false })): number {
  if (outcome.code === 0) return 0;
  const message = outcome.message;
  if (json) {
    const status = "status" in outcome ? outcome.status : undefined;
    process.stdout.write(`${JSON.stringify({ ok: false, ...(status ? { status } : {}), error: message })}\n`);
  }
  process.stderr.write(
    `octorelay ${command}: ${message}${outcome.code === 2 ? ` (see octorelay ${command} --help)` : ""}\n`,
  );
  return outcome.code;
}

export async function partnersList(
  options: OpsClientOptions & {
    state?: string | undefined;
    prefix?: string | undefined;
    sort?: string | undefined;
    limit: number;
    offset: number;
  },
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const command = "partners list";
  const client = clientFor(options, env);
  if (!(client instanceof OpsClient))
    return finish(command, options.json, { code: 2, message: client.message });
  const query = new URLSearchParams();
  for (const key of ["state", "prefix", "sort"] as const) {
    const value = options[key];
    if (value !== undefined) query.set(key, value);
  }
  query.set("limit", String(options.limit));
  query.set("offset", String(options.offset));
  const answer = await client.get(`/partners?${query}`);
  if (!answer.ok) return finish(command, options.json, answer);
  const page = answer.json as PartnersPage;
  if (options.json) {
    process.stdout.write(`${JSON.stringify(page)}\n`);
    return 0;
  }
  const nowMs = Date.now();
  const rows = page.partners.map((p) => [
    clip(printable(p.account), 60),
    p.state,
    String(p.buffered + p.inFlight),
    p.oldestBufferedAgeMs === undefined ? "-" : duration(p.oldestBufferedAgeMs),
    String(p.parkedBatches),
    p.pause ? `${p.pause.reason} for ${duration(p.pause.untilMs - nowMs)}` : "-",
    p.lastError ? clip(printable(p.lastError), 70) : "-",
  ]);
  const lines = table(["ACCOUNT", "STATE", "HELD", "OLDEST", "PARKED", "PAUSED", "LAST ERROR"], rows);
  const shown = page.partners.length;
  const footer =
    page.total === 0
      ? "no partners match"
      : `${shown === page.total ? `${page.total}` : `${page.offset + 1}-${page.offset + shown} of ${page.total}`} partner${page.total === 1 ? "" : "s"}` +
        (page.next ? `; next page: --offset ${page.offset + page.limit}` : "");
  process.stdout.write(
    `${[...(rows.length > 0 ? lines : []), footer, ...(page.pauseError ? [`(pauses not shown: ${page.pauseError})`] : [])].join("\n")}\n`,
  );
  return 0;
}

export async function partnersShow(
  options: OpsClientOptions & { account: string },
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const command = "partners show";
  const client = clientFor(options, env);
  if (!(client instanceof OpsClient))
    return finish(command, options.json, { code: 2, message: client.message });
  const answer = await client.get(`/partners?${new URLSearchParams({ account: options.account })}`);
  if (!answer.ok) return finish(command, options.json, answer);
  const page = answer.json as PartnersPage;
  const entry = page.partners[0];
  const consoleUrl = `${client.base}/console/partners/${encodeURIComponent(options.account)}`;
  if (options.json) {
    const known = entry !== undefined;
    process.stdout.write(
      `${JSON.stringify({ account: options.account, known, ...(entry ?? {}), ...(page.pauseError ? { pauseError: page.pauseError } : {}) })}\n`,
    );
    return 0;
  }
  const name = printable(options.account);
  if (!entry) {
    process.stdout.write(
      `${name}: the service holds nothing for it and remembers no error or pause (an idle partner is forgotten after a while)\n`,
    );
    return 0;
  }
  process.stdout.write(`${describe(entry, Date.now(), consoleUrl, page.pauseError).join("\n")}\n`);
  return 0;
}

function describe(
  p: PartnerEntry,
  nowMs: number,
  consoleUrl: string,
  pauseError: string | undefined,
): string[] {
  const pause = p.pause
    ? `; paused (${PAUSE_WHY[p.pause.reason] ?? p.pause.reason}) until ${isoTime(p.pause.untilMs)}, ${duration(p.pause.untilMs - nowMs)} from now`
    : "";
  const rows: [string, string][] = [
    ["account", printable(p.account)],
    ["state", `${p.state}${pause}`],
    [
      "held",
      `${p.buffered + p.inFlight} records (${p.buffered} buffered, ${p.inFlight} in flight) in ${p.dispatchers} dispatcher${p.dispatchers === 1 ? "" : "s"}`,
    ],
    ["oldest", p.oldestBufferedAgeMs === undefined ? "-" : `${duration(p.oldestBufferedAgeMs)} ago`],
    ["parked", `${p.parkedBatches} batch${p.parkedBatches === 1 ? "" : "es"}`],
    [
      "last error",
      p.lastError
        ? `${printable(p.lastError)}${p.lastErrorAgeMs !== undefined ? ` (${duration(p.lastErrorAgeMs)} ago)` : ""}`
        : "-",
    ],
  ];
  if (p.waitingFor) rows.push(["waiting for", printable(p.waitingFor)]);
  if (pauseError) rows.push(["pause", `unknown: ${pauseError}`]);
  rows.push(["console", consoleUrl]);
  return rows.map(([k, v]) => `${`${k}:`.padEnd(13)}${v}`);
}

const PAUSE_WHY: Record<string, string> = {
  operator: "by an operator",
  "retry-after": "it answered Retry-After",
  breaker: "its breaker is open",
};

export async function partnersAction(
  verb: "pause" | "resume" | "replay",
  options: OpsClientOptions & { account: string; for?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const command = `partners ${verb}`;
  const client = clientFor(options, env);
  if (!(client instanceof OpsClient))
    return finish(command, options.json, { code: 2, message: client.message });
  const form: Record<string, string> = {};
  if (verb === "pause") {
    const forText = options.for ?? "1h";
    const ms = parseDuration(forText);
    if (ms === undefined) {
      return finish(command, options.json, {
        code: 2,
        message: `--for: must be a duration such as 15m, 1h or 4h, at most 12h (SQS keeps a held message invisible 12 hours at most); got ${JSON.stringify(forText)}`,
      });
    }
    form.for = forText;
  }
  const answer = await client.post(`/console/partners/${encodeURIComponent(options.account)}/${verb}`, form);
  if (!answer.ok) return finish(command, options.json, answer);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(answer.json)}\n`);
    return 0;
  }
  const name = printable(options.account);
  const result = answer.json as { untilMs?: number; wasPaused?: boolean };
  const line =
    verb === "pause"
      ? `paused ${name} until ${isoTime(result.untilMs ?? 0)}: nothing is sent to it until then, or until octorelay partners resume ${name}`
      : verb === "resume"
        ? result.wasPaused
          ? `resumed ${name}: what it holds is being sent now, within its limits`
          : `${name} was not paused by an operator; nothing changed`
        : `replay of ${name}'s parked batches started in the service; octorelay partners show ${name} shows its parked batches going down`;
  process.stdout.write(`${line}\n`);
  return 0;
}

/** `15m`, `1h`, `2d` → ms, at most 12 h; undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d{1,5})([mhd])$/.exec(text);
  const ms = m ? Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS] : Number.NaN;
  return ms > 0 && ms <= MAX_PAUSE_MS ? ms : undefined;
}

/** Text from the service (account names come from message bodies): control characters escaped, so a name cannot drive the terminal. */
export function printable(text: string): string {
  let out = "";
  for (const c of text) {
    const code = c.charCodeAt(0);
    const control = code < 0x20 || (code >= 0x7f && code <= 0x9f) || code === 0x2028 || code === 0x2029;
    out += control ? `\\u${code.toString(16).padStart(4, "0")}` : c;
  }
  return out;
}

export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** 850 ms, 12 s, 4 min, 3.5 h: the unit an operator reads at a glance. */
export function duration(ms: number): string {
  const abs = Math.max(0, ms);
  if (abs < 1000) return `${Math.round(abs)} ms`;
  if (abs < 60_000) return `${(abs / 1000).toFixed(abs < 10_000 ? 1 : 0)} s`;
  if (abs < 3_600_000) return `${Math.round(abs / 60_000)} min`;
  return `${(abs / 3_600_000).toFixed(1)} h`;
}

export const isoTime = (ms: number) =>
  new Date(ms)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");

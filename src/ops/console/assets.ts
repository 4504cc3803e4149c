/**
 * The console's two static files: its stylesheet (here, so it ships in dist/ with the code) and
 * htmx, served from the installed package (a production dependency), read once.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

export interface Asset {
  body: Buffer;
  contentType: string;
  etag: string;
}

const css = /* css */ `
:root {
  --bg: #f4f5f7; --card: #fff; --ink: #1d2430; --muted: #687385; --line: #e2e5ea; --head: #17202c;
  --accent: #2f6fde; --ok: #1e8a4c; --warn: #b86e00; --bad: #c62f2f; --paused: #6b4fd8;
  --received: #2f6fde; --delivered: #1e8a4c; --deadLettered: #c62f2f; --released: #d08a00;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: flex; flex-direction: column; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, .key, .num, .account { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.muted { color: var(--muted); }
.warn { color: var(--warn); }
.bad, a.bad { color: var(--bad); }
.sr { position: absolute; left: -9999px; }

header.top { display: flex; align-items: center; gap: 24px; padding: 0 20px; height: 48px; background: var(--head); color: #fff; }
header.top .brand { color: #fff; font-weight: 700; letter-spacing: .3px; font-size: 16px; }
header.top nav { display: flex; gap: 4px; }
header.top nav a { color: #c9d2de; padding: 6px 12px; border-radius: 6px; }
header.top nav a[aria-current="page"], header.top nav a:hover { color: #fff; background: #2a3646; text-decoration: none; }
header.top .status { margin-left: auto; display: flex; align-items: center; gap: 10px; }
form.inline { display: inline-flex; align-items: center; gap: 8px; margin: 0; }

main { flex: 1; padding: 16px 20px 24px; max-width: 1400px; width: 100%; margin: 0 auto; }
footer { display: flex; justify-content: space-between; padding: 10px 20px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 16px; margin: 0; }
h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .5px; color: var(--muted); margin: 14px 0 6px; }
h4 { font-size: 12px; margin: 6px 0; color: var(--muted); }

.strip { display: flex; align-items: center; gap: 20px; flex-wrap: wrap; margin-bottom: 14px; }
.states { display: flex; gap: 8px; flex-wrap: wrap; }
.state-count { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 4px 10px; color: var(--ink); }
.state-count b { font-variant-numeric: tabular-nums; margin-left: 4px; }

.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; margin-bottom: 14px; box-shadow: 0 1px 2px rgba(16,24,40,.04); }
.card-head { display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; margin-bottom: 8px; }
.card-head .sub { color: var(--muted); font-size: 13px; }
.card-head .sub b { color: var(--ink); font-variant-numeric: tabular-nums; }

.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(210px, 1fr)); gap: 12px; }
.tile { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; }
.tile h3 { margin-top: 2px; }
.tile p { margin: 4px 0; }
.big { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.big .muted { font-size: 13px; font-weight: 400; }
meter { width: 100%; height: 10px; }
table.rates { width: 100%; border-collapse: collapse; }
table.rates th { text-align: left; font-weight: 400; padding: 2px 0; }
table.rates td { font-size: 16px; font-weight: 600; }
i.key { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
i.s-received { background: var(--received); } i.s-delivered { background: var(--delivered); }
i.s-deadLettered { background: var(--deadLettered); } i.s-released { background: var(--released); }

.chart-row { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; margin-top: 12px; }
figure.chart { margin: 0; flex: 0 1 660px; }
figure.chart svg { width: 100%; height: auto; max-width: 660px; }
figure.chart figcaption { display: flex; gap: 14px; font-size: 12px; color: var(--muted); }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .axis { fill: var(--muted); font-size: 10px; font-family: system-ui, sans-serif; }
svg .line { fill: none; stroke-width: 1.8; stroke-linejoin: round; }
svg .s-received { stroke: var(--received); } svg .s-delivered { stroke: var(--delivered); }
svg .s-deadLettered { stroke: var(--deadLettered); } svg .s-released { stroke: var(--released); }
table.totals { border-collapse: collapse; min-width: 240px; }
table.totals caption { text-align: left; font-size: 12px; text-transform: uppercase; letter-spacing: .5px; color: var(--muted); padding-bottom: 4px; }
table.totals th { text-align: left; font-weight: 400; padding: 2px 16px 2px 0; color: var(--muted); }

table.list { width: 100%; border-collapse: collapse; }
table.list.narrow { width: auto; min-width: 480px; }
table.list th { text-align: left; font-size: 12px; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); padding: 6px 8px; white-space: nowrap; }
table.list th.num { text-align: right; }
table.list td { border-bottom: 1px solid var(--line); padding: 5px 8px; vertical-align: top; }
table.list tbody tr:hover { background: #f8f9fb; }
table.list tr.selected td { background: #eef3fd; }
td.error-cell { color: var(--bad); max-width: 420px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
td.reason { color: var(--bad); max-width: 320px; }
code.body { white-space: pre-wrap; word-break: break-all; display: inline-block; max-width: 460px; }
.error-text { color: var(--bad); }

.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; background: #eceef2; color: var(--muted); }
.badge.active { background: #e3f4ea; color: var(--ok); }
.badge.paused { background: #ece8fc; color: var(--paused); }
.badge.breaker-open { background: #fbe7e7; color: var(--bad); }
.badge.parked { background: #fdf1de; color: var(--warn); }
.pill { padding: 2px 10px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.pill.ok { background: #1e5e3a; color: #d9f5e4; }
.pill.bad { background: #7a1f1f; color: #ffe0e0; }
.pill.muted { background: #2a3646; color: #c9d2de; }

.notice { padding: 8px 12px; border-radius: 8px; margin: 0 0 12px; border: 1px solid var(--line); background: var(--card); }
.notice.ok { border-color: #bfe3cd; background: #effaf3; }
.notice.info { border-color: #d6ccf7; background: #f5f2fe; }
.notice.warn { border-color: #f0d6a8; background: #fff8ec; }
.notice.bad { border-color: #f0c0c0; background: #fff2f2; }
.empty { color: var(--muted); padding: 12px 0; }

form.filters { display: flex; gap: 12px; align-items: end; flex-wrap: wrap; }
label { display: inline-flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 2px; }
.actions label { flex-direction: row; align-items: center; gap: 6px; font-size: 13px; color: var(--ink); }
input[type=search], input[type=password], select { font: inherit; padding: 5px 8px; border: 1px solid #c8cdd5; border-radius: 6px; background: #fff; color: var(--ink); }
input[type=search] { width: 240px; }
button, .button { font: inherit; font-weight: 600; padding: 5px 14px; border-radius: 6px; border: 1px solid #c8cdd5; background: #fff; color: var(--ink); cursor: pointer; display: inline-block; }
button:hover:not([disabled]), .button:hover { background: #f0f2f5; text-decoration: none; }
button[disabled] { opacity: .45; cursor: not-allowed; }
button.link { border: 0; background: none; color: #c9d2de; padding: 0; font-weight: 400; }
.button.small { padding: 2px 10px; font-size: 12px; }
header.top .button.small { background: #2a3646; color: #fff; border-color: #3a4a5e; }
.actions { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin: 10px 0; }
.pager { display: flex; gap: 10px; margin-top: 10px; }
table.settings { border-collapse: collapse; }
table.settings th { text-align: left; font-weight: 400; color: var(--muted); padding: 2px 16px 2px 0; white-space: nowrap; vertical-align: top; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.login { max-width: 520px; margin: 40px auto; }
.login form { display: flex; gap: 10px; align-items: end; }
.login input[type=password] { width: 300px; }
.error-card { max-width: 720px; margin: 40px auto; }
`;

function asset(body: Buffer, contentType: string): Asset {
  return {
    body,
    contentType,
    etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 16)}"`,
  };
}

let htmx: Asset | undefined;

/** `/assets/<name>` → the file, or undefined. htmx is read from node_modules on first request. */
export function assetNamed(name: string): Asset | undefined {
  if (name === "console.css") return CSS;
  if (name === "htmx.min.js") {
    htmx ??= asset(
      readFileSync(createRequire(import.meta.url).resolve("htmx.org/dist/htmx.min.js")),
      "text/javascript; charset=utf-8",
    );
    return htmx;
  }
  return undefined;
}

const CSS = asset(Buffer.from(css, "utf8"), "text/css; charset=utf-8");

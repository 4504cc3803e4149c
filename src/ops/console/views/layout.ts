/**
 * The page around every console view. Templates are Eta with autoEscape on: `<%= %>` escapes, and
 * `<%~ %>` (raw) is used only for `it.body`, itself a rendered template. They live in .ts modules so
 * that `tsc` carries them into dist/ with the code: nothing to copy, nothing to build.
 */
export const layout = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content="<%= it.htmxConfig %>">
<title><%= it.title %> · octorelay</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/htmx.min.js" defer></script>
</head>
<body hx-headers="<%= it.hxHeaders %>">
<header class="top">
  <a class="brand" href="/">octorelay</a>
  <nav>
    <% for (const n of it.nav) { %>
    <a href="<%= n.href %>"<% if (n.current) { %> aria-current="page"<% } %>><%= n.label %></a>
    <% } %>
  </nav>
  <div class="status">
    <% if (it.ready) { %>
      <% if (it.ready.ready) { %><span class="pill ok" title="/readyz">ready</span>
      <% } else { %><span class="pill bad" title="<%= it.ready.reasons.join('; ') %>">not ready: <%= it.ready.reasons.join("; ") %></span><% } %>
    <% } %>
    <% if (!it.auth.actionsEnabled) { %>
      <span class="pill muted" title="set ops.token (OCTORELAY_OPS_TOKEN) to enable pause, resume, replay and redrive">actions off</span>
    <% } else if (it.auth.kind === "session") { %>
      <form method="post" action="/console/logout" class="inline">
        <input type="hidden" name="_csrf" value="<%= it.csrf %>">
        <span class="pill ok">operator</span> <button class="link">Log out</button>
      </form>
    <% } else if (it.auth.kind === "bearer") { %>
      <span class="pill ok">bearer token</span>
    <% } else { %>
      <a class="button small" href="/console/login?next=<%= encodeURIComponent(it.here) %>">Log in</a>
    <% } %>
  </div>
</header>
<main id="main">
<% if (it.notice) { %><div class="notice <%= it.notice.kind %>" role="status"><%= it.notice.text %></div><% } %>
<%~ it.body %>
</main>
<footer>
  <span>JSON and probes: <a href="/metrics">/metrics</a> · <a href="/partners">/partners</a> · <a href="/readyz">/readyz</a> · <a href="/healthz">/healthz</a></span>
  <span>rendered <%= it.renderedAt %></span>
</footer>
</body>
</html>
`;

export const errorPage = /* html */ `<section class="card error-card">
  <h1><%= it.status %> <%= it.statusText %></h1>
  <p><%= it.message %></p>
  <p><a href="/">Back to the overview</a></p>
</section>
`;

export const loginPage = /* html */ `<section class="card login">
  <h1>Log in</h1>
  <% if (!it.enabled) { %>
    <p>Actions are off: no ops token is configured. Set <code>ops.token</code> (or the environment variable <code>OCTORELAY_OPS_TOKEN</code>) and restart to pause, resume, replay and redrive from here.</p>
  <% } else { %>
    <p>The ops token (<code>ops.token</code> / <code>OCTORELAY_OPS_TOKEN</code>) lets you pause and resume partners, replay parked batches and redrive dead letters. The session lasts 12 hours; the token itself is never stored in your browser.</p>
    <% if (it.failed) { %><p class="notice bad" role="alert"><%= it.failed %></p><% } %>
    <form method="post" action="/console/login">
      <input type="hidden" name="next" value="<%= it.next %>">
      <label>Ops token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
      <button type="submit">Log in</button>
    </form>
  <% } %>
</section>
`;

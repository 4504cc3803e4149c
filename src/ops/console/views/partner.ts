/** One partner: why it is (not) sending, what it holds, its profile (redacted), its parked batches. */
export const partnerPage = /* html */ `<section class="strip">
  <h1><a href="/console/partners" class="muted">Partners</a> / <span class="account"><%= it.account %></span></h1>
</section>
<div id="live-now" hx-get="<%= it.self %>" hx-trigger="every 3s" hx-select="#live-now" hx-swap="outerHTML">
<section class="card">
  <header class="card-head">
    <h2>Now <span class="badge <%= it.state %>" id="partner-state"><%= it.state %></span></h2>
    <span class="sub"><%= it.dispatchers > 0 ? it.dispatchers + " dispatcher" + (it.dispatchers === 1 ? "" : "s") + " alive" : "no dispatcher alive in this process" %></span>
  </header>
  <% if (it.pause) { %>
    <p class="notice <%= it.pause.reason === 'operator' ? 'info' : 'warn' %>" id="pause">
      <% if (it.pause.reason === "operator") { %>Paused by an operator until <b><%= it.time(it.pause.untilMs) %></b> (<%= it.duration(it.pause.untilMs - it.nowMs) %> from now). Nothing is sent to it. As in an outage, what it holds stays held (kept invisible in SQS by heartbeats) until giveUpAfterMs, then follows its outage policy (<%= it.onOutage %>); past its share of the queue's maxUnacked, new messages for it are shed back to SQS with a delay. A resume is seen within seconds.
      <% } else if (it.pause.reason === "retry-after") { %>The partner asked to wait (Retry-After) until <b><%= it.time(it.pause.untilMs) %></b>.
      <% } else { %>Its circuit breaker is open: no call until <b><%= it.time(it.pause.untilMs) %></b>, then one probe.<% } %>
    </p>
  <% } %>
  <table class="list narrow">
    <thead><tr><th>queue</th><th class="num">buffered</th><th class="num">in flight</th><th class="num">oldest buffered</th></tr></thead>
    <tbody>
    <% for (const q of it.use) { %>
      <tr><td><%= q.queue %></td><td class="num" data-held="buffered"><%= it.count(q.buffered) %></td><td class="num" data-held="inFlight"><%= it.count(q.inFlight) %></td><td class="num"><%= q.oldestMs === undefined ? "—" : it.duration(q.oldestMs) %></td></tr>
    <% } %>
    </tbody>
  </table>
  <h3>Last error</h3>
  <% if (it.lastError) { %><p class="error-text"><%= it.lastError.message %> <span class="muted">(<%= it.duration(it.nowMs - it.lastError.atMs) %> ago)</span></p>
  <% } else { %><p class="muted">none recorded</p><% } %>
</section>
</div>

<section class="card">
  <header class="card-head"><h2>Actions</h2>
    <% if (!it.actions.enabled) { %><span class="sub warn">off: set ops.token (OCTORELAY_OPS_TOKEN) to enable them</span>
    <% } else if (!it.actions.allowed) { %><span class="sub"><a href="/console/login?next=<%= encodeURIComponent(it.self) %>">Log in</a> with the ops token to act</span><% } %>
  </header>
  <div class="actions">
    <form method="post" action="/console/partners/<%= encodeURIComponent(it.account) %>/pause" class="inline">
      <input type="hidden" name="_csrf" value="<%= it.csrf %>">
      <label>Pause for
        <select name="for"<% if (!it.actions.allowed) { %> disabled<% } %>>
          <% for (const d of it.durations) { %><option value="<%= d.value %>"<% if (d.value === "1h") { %> selected<% } %>><%= d.label %></option><% } %>
        </select>
      </label>
      <button type="submit" id="pause-button"<% if (!it.actions.allowed) { %> disabled<% } %>>Pause</button>
    </form>
    <form method="post" action="/console/partners/<%= encodeURIComponent(it.account) %>/resume" class="inline">
      <input type="hidden" name="_csrf" value="<%= it.csrf %>">
      <button type="submit" id="resume-button"<% if (!it.actions.allowed) { %> disabled<% } %>>Resume</button>
    </form>
    <form method="post" action="/console/partners/<%= encodeURIComponent(it.account) %>/replay" class="inline">
      <input type="hidden" name="_csrf" value="<%= it.csrf %>">
      <button type="submit" id="replay-button"<% if (!it.actions.allowed) { %> disabled<% } %>>Replay parked batches</button>
    </form>
  </div>
  <p class="muted">A pause holds wherever these limits are shared (every replica with cluster.redis). Replay sends each parked batch to the partner within its limits and deletes it once delivered.</p>
</section>

<div id="live-parked" hx-get="<%= it.self %>" hx-trigger="every 10s" hx-select="#live-parked" hx-swap="outerHTML">
<section class="card">
  <header class="card-head"><h2>Parked batches<% if (it.parked.objects.length) { %> <span class="badge parked" id="parked-count"><%= it.parked.objects.length %><%= it.parked.truncated ? "+" : "" %></span><% } %></h2><span class="sub">s3://<%= it.parked.bucket %>/<%= it.parked.prefix %></span></header>
  <% if (it.replay) { %>
    <p class="notice <%= it.replay.running ? 'info' : it.replay.error || (it.replay.result && it.replay.result.failed) ? 'bad' : 'ok' %>" id="replay-status">
      <% if (it.replay.running) { %>Replay running since <%= it.time(it.replay.startedAtMs) %>…
      <% } else if (it.replay.error) { %>Replay failed: <%= it.replay.error %>
      <% } else { %>Replay done <%= it.time(it.replay.endedAtMs) %>: <%= it.replay.result.batches %> <%= it.replay.result.batches === 1 ? "batch" : "batches" %>, <%= it.count(it.replay.result.records) %> <%= it.replay.result.records === 1 ? "record" : "records" %> delivered<% if (it.replay.result.failed) { %>, <%= it.replay.result.failed %> failed (left in place)<% } %>.<% } %>
    </p>
  <% } %>
  <% if (it.parked.error) { %><p class="warn">Could not list them: <%= it.parked.error %></p>
  <% } else if (it.parked.objects.length === 0) { %><p class="muted" id="parked-none">none</p>
  <% } else { %>
  <table class="list" id="parked">
    <thead><tr><th>key</th><th class="num">size</th><th>parked at</th></tr></thead>
    <tbody>
    <% for (const o of it.parked.objects) { %><tr><td class="key"><%= o.key %></td><td class="num"><%= o.size %></td><td><%= o.modified %></td></tr><% } %>
    </tbody>
  </table>
  <% if (it.parked.truncated) { %><p class="muted">Showing the first <%= it.parked.objects.length %>; more are parked.</p><% } %>
  <% } %>
</section>
</div>

<section class="card">
  <header class="card-head"><h2>Effective profile</h2><span class="sub"><%= it.profile.overridden ? "has its own entry under partners" : "the defaults: no entry of its own under partners" %> · secrets redacted</span></header>
  <h3>Limits (shared by its dispatchers on every queue)</h3>
  <%~ include("@settings", { settings: it.profile.limits }) %>
  <% for (const q of it.profile.queues) { %>
    <h3>On <%= q.queues.length === 1 ? "queue" : "queues" %> <%= q.queues.join(", ") %></h3>
    <div class="two">
      <div><h4>destination</h4><%~ include("@settings", { settings: q.destination }) %></div>
      <div><h4>dispatch</h4><%~ include("@settings", { settings: q.dispatch }) %></div>
    </div>
  <% } %>
</section>
`;

export const settingsPartial = /* html */ `<table class="settings">
<% for (const s of it.settings) { %><tr><th><%= s.key %></th><td><code><%= s.value %></code><% if (s.note) { %> <span class="muted"><%= s.note %></span><% } %></td></tr><% } %>
</table>
`;

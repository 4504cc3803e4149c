/**
 * Overview: is it keeping up? Per queue, what SQS holds, what flows now, what octorelay holds
 * against its budget, and the last minutes as a chart. Every number octorelay counts carries
 * `data-metric` (the Prometheus series it equals) and `data-value` (the exact value).
 */
export const overviewPage = /* html */ `<div id="live" hx-get="/" hx-trigger="every 2s" hx-select="#live" hx-swap="outerHTML">
<section class="strip">
  <h1>Overview</h1>
  <div class="states">
    <% for (const s of it.partnerStates) { %>
      <a class="state-count" href="/console/partners?state=<%= s.state %>"><span class="badge <%= s.state %>"><%= s.state %></span> <b><%= s.shown %></b></a>
    <% } %>
    <a class="state-count" href="/console/partners">all partners <b><%= it.partnersKnown %></b></a>
  </div>
</section>
<% for (const q of it.queues) { %>
<section class="card queue" data-queue="<%= q.name %>">
  <header class="card-head">
    <h2><%= q.name %></h2>
    <span class="sub">
      <% if (q.depth && q.depth.ok) { %>SQS: <b data-sqs="visible"><%= it.count(q.depth.visible) %></b> visible · <b data-sqs="inFlight"><%= it.count(q.depth.inFlight) %></b> in flight · <b data-sqs="delayed"><%= it.count(q.depth.delayed) %></b> delayed <span class="muted">(as of <%= it.ago(q.depth.atMs) %>)</span>
      <% } else if (q.depth) { %><span class="warn">SQS depth unavailable: <%= q.depth.error %></span>
      <% } else { %><span class="muted">SQS depth: resolving the queue URL…</span><% } %>
    </span>
  </header>
  <div class="tiles">
    <div class="tile">
      <h3>Now, per second</h3>
      <table class="rates">
        <% for (const r of it.legend) { %>
        <tr><th><i class="key s-<%= r.key %>"></i><%= r.label %></th><td class="num"><%= it.rate(q.rates ? q.rates[r.key] : undefined) %></td></tr>
        <% } %>
      </table>
    </div>
    <div class="tile">
      <h3>Held by octorelay</h3>
      <p class="big"><span data-metric="<%= q.unacked.metric %>" data-queue="<%= q.name %>" data-value="<%= q.unacked.value %>"><%= q.unacked.shown %></span> <span class="muted">/ <%= it.count(q.unacked.budget) %> un-acked</span></p>
      <meter min="0" max="100" low="70" high="90" optimum="0" value="<%= q.unacked.pct %>" title="<%= q.unacked.pct %>% of maxUnacked"></meter>
      <p><span data-metric="<%= q.unackedBytes.metric %>" data-queue="<%= q.name %>" data-value="<%= q.unackedBytes.value %>"><%= q.unackedBytes.shown %></span> <span class="muted">/ <%= q.unackedBytes.budgetShown %> of bodies</span></p>
      <p>oldest: <b data-metric="<%= q.oldestUnacked.metric %>" data-queue="<%= q.name %>" data-value="<%= q.oldestUnacked.value %>"><%= q.oldestUnacked.shown %></b></p>
    </div>
    <div class="tile">
      <h3>Handlers</h3>
      <p class="big"><span data-metric="<%= q.pool.metric %>" data-queue="<%= q.name %>" data-value="<%= q.pool.value %>"><%= q.pool.shown %></span> <span class="muted">running</span></p>
      <meter min="0" max="100" low="80" high="95" optimum="50" value="<%= q.pool.pct %>" title="<%= q.pool.pct %>% of concurrency"></meter>
      <p><b data-metric="<%= q.dispatchers.metric %>" data-queue="<%= q.name %>" data-value="<%= q.dispatchers.value %>"><%= q.dispatchers.shown %></b> <span class="muted">dispatchers active</span></p>
    </div>
    <div class="tile">
      <h3>Dead-letter queue</h3>
      <% if (q.deadLetter && q.deadLetter.depth.ok) { const d = q.deadLetter.depth; const n = d.visible + d.inFlight + d.delayed; %>
        <p class="big"><a class="<%= n > 0 ? 'bad' : '' %>" href="/console/dead-letters?queue=<%= encodeURIComponent(q.name) %>" data-dlq-depth="<%= n %>"><%= it.count(n) %></a> <span class="muted">messages</span></p>
        <p class="muted"><%= q.deadLetter.name %></p>
      <% } else if (q.deadLetter) { %>
        <p class="warn">depth unavailable: <%= q.deadLetter.depth.error %></p>
      <% } else { %>
        <p class="muted">none configured</p>
      <% } %>
    </div>
  </div>
  <div class="chart-row">
    <%~ include("@chart", { chart: q.chart, legend: it.legend }) %>
    <table class="totals">
      <caption>Since start</caption>
      <% for (const t of q.totals) { %>
      <tr><th><%= t.label %></th><td class="num" data-metric="<%= t.metric %>" data-queue="<%= q.name %>" data-value="<%= t.value %>"><%= t.shown %></td></tr>
      <% } %>
    </table>
  </div>
</section>
<% } %>
</div>
<noscript><p class="muted">Reload the page to refresh (with JavaScript it refreshes itself every 2 s).</p></noscript>
`;

export const chartPartial = /* html */ `<figure class="chart">
<svg viewBox="0 0 <%= it.chart.width %> <%= it.chart.height %>" width="<%= it.chart.width %>" height="<%= it.chart.height %>" role="img" aria-label="messages per second, last minutes">
  <% for (const g of it.chart.grid) { %>
  <line class="grid" x1="<%= it.chart.plot.x %>" x2="<%= it.chart.plot.x + it.chart.plot.width %>" y1="<%= g.y %>" y2="<%= g.y %>"></line>
  <text class="axis" x="<%= it.chart.plot.x - 4 %>" y="<%= g.y + 4 %>" text-anchor="end"><%= g.label %></text>
  <% } %>
  <% for (const x of it.chart.xLabels) { %>
  <text class="axis" x="<%= x.x %>" y="<%= it.chart.height - 4 %>" text-anchor="<%= x.anchor %>"><%= x.label %></text>
  <% } %>
  <% for (const l of it.chart.lines) { if (l.points) { %>
  <polyline class="line s-<%= l.key %>" points="<%= l.points %>"></polyline>
  <% } } %>
  <% if (it.chart.empty) { %><text class="axis" x="<%= it.chart.width / 2 %>" y="<%= it.chart.height / 2 %>" text-anchor="middle">collecting samples…</text><% } %>
</svg>
<figcaption>
  <% for (const r of it.legend) { %><span><i class="key s-<%= r.key %>"></i><%= r.label %></span><% } %>
</figcaption>
</figure>
`;

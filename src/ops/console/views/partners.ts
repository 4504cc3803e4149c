/** Partners: search by account prefix, filter by state, sort, page. One page of rows, never all. */
export const partnersPage = /* html */ `<section class="strip">
  <h1>Partners</h1>
  <form class="filters" method="get" action="/console/partners" role="search">
    <label>Account starts with
      <input type="search" name="prefix" value="<%= it.page.query.prefix %>" placeholder="acme" autocomplete="off"
        hx-get="/console/partners" hx-include="closest form" hx-trigger="input changed delay:300ms, search"
        hx-target="#live" hx-select="#live" hx-swap="outerHTML" hx-push-url="true">
    </label>
    <label>State
      <select name="state" hx-get="/console/partners" hx-include="closest form" hx-trigger="change"
        hx-target="#live" hx-select="#live" hx-swap="outerHTML" hx-push-url="true">
        <option value="">any</option>
        <% for (const s of it.states) { %><option value="<%= s %>"<% if (it.page.query.state === s) { %> selected<% } %>><%= s %> (<%= it.count(it.page.counts[s] ?? 0) %>)</option><% } %>
      </select>
    </label>
    <label>Sort by
      <select name="sort" hx-get="/console/partners" hx-include="closest form" hx-trigger="change"
        hx-target="#live" hx-select="#live" hx-swap="outerHTML" hx-push-url="true">
        <% for (const s of it.sorts) { %><option value="<%= s.key %>"<% if (it.page.query.sort === s.key) { %> selected<% } %>><%= s.label %></option><% } %>
      </select>
    </label>
    <button type="submit">Filter</button>
  </form>
</section>
<div id="live" hx-get="<%= it.self %>" hx-trigger="every 3s" hx-select="#live" hx-swap="outerHTML">
<section class="card">
  <header class="card-head">
    <h2 id="match-count"><%= it.count(it.page.total) %> <%= it.page.total === 1 ? "partner" : "partners" %><% if (it.page.query.prefix || it.page.query.state) { %> matching<% } %></h2>
    <span class="sub">
      <% if (it.page.total > 0) { %>showing <%= it.count(it.page.query.offset + 1) %>–<%= it.count(Math.min(it.page.query.offset + it.page.query.limit, it.page.total)) %> of <%= it.count(it.page.total) %> · <% } %><%= it.count(it.page.known) %> known to this process · <a href="<%= it.page.json %>">JSON</a>
    </span>
  </header>
  <% if (it.page.rows.length === 0) { %>
    <p class="empty">No partner matches. Partners appear here once a handler routes output to them, while they hold records, are paused or have parked batches; an idle one is forgotten after a few empty flushes.</p>
  <% } else { %>
  <table class="list">
    <thead><tr><th>account</th><th>state</th><th class="num">dispatchers</th><th class="num">buffered</th><th class="num">in flight</th><th class="num">oldest buffered</th><th class="num">parked</th><th>last error</th></tr></thead>
    <tbody>
    <% for (const r of it.page.rows) { %>
      <tr data-account="<%= r.account %>">
        <td class="account"><a href="/console/partners/<%= encodeURIComponent(r.account) %>"><%= r.account %></a></td>
        <td><span class="badge <%= r.state %>"><%= r.state %></span><% if (r.pause) { %> <span class="muted">until <%= it.time(r.pause.untilMs) %></span><% } %></td>
        <td class="num"><%= r.dispatchers %></td>
        <td class="num"><%= it.count(r.buffered) %></td>
        <td class="num"><%= it.count(r.inFlight) %></td>
        <td class="num"><%= r.oldestBufferedAgeMs === undefined ? "—" : it.duration(r.oldestBufferedAgeMs) %></td>
        <td class="num"><%= r.parkedBatches || "" %></td>
        <td class="error-cell"><% if (r.lastError) { %><span title="<%= r.lastError %>"><%= it.clip(r.lastError, 90) %></span> <span class="muted"><%= it.duration(r.lastErrorAgeMs ?? 0) %> ago</span><% } %></td>
      </tr>
    <% } %>
    </tbody>
  </table>
  <% } %>
  <nav class="pager">
    <% if (it.page.prev) { %><a class="button" href="<%= it.page.prev %>" rel="prev">← Previous</a><% } %>
    <% if (it.page.next) { %><a class="button" href="<%= it.page.next %>" rel="next">Next →</a><% } %>
  </nav>
</section>
</div>
`;

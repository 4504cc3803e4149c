/** Dead letters: each queue's DLQ depth, a peek at its messages with their reasons, and redrive. */
export const deadLettersPage = /* html */ `<section class="strip">
  <h1>Dead letters</h1>
</section>
<section class="card">
  <table class="list">
    <thead><tr><th>queue</th><th>dead-letter queue</th><th class="num">messages</th><th></th></tr></thead>
    <tbody>
    <% for (const r of it.routes) { %>
      <tr<% if (it.selected && it.selected.queue === r.queue) { %> class="selected"<% } %>>
        <td><%= r.queue %></td>
        <td><%= r.dlqName || "—" %></td>
        <td class="num"><% if (!r.dlqName) { %><span class="muted">no DLQ</span><% } else if (r.depth && r.depth.ok) { %><span data-dlq-depth="<%= r.depth.visible + r.depth.inFlight + r.depth.delayed %>"><%= it.count(r.depth.visible + r.depth.inFlight + r.depth.delayed) %></span><% } else if (r.depth) { %><span class="warn"><%= r.depth.error %></span><% } %></td>
        <td><% if (r.dlqName) { %><a class="button small" href="/console/dead-letters?queue=<%= encodeURIComponent(r.queue) %>">Peek</a><% } %></td>
      </tr>
    <% } %>
    </tbody>
  </table>
  <% if (it.routesError) { %><p class="warn">Could not resolve the dead-letter queues: <%= it.routesError %></p><% } %>
</section>
<% if (it.selected) { const s = it.selected; %>
<section class="card">
  <header class="card-head">
    <h2><%= s.queue %>: <%= s.messages.length %> <%= s.messages.length === 1 ? "message" : "messages" %> peeked</h2>
    <span class="sub">received for <%= s.peekVisibilitySec %> s and made visible again at once (each peek adds one to their receive count) · <a href="/console/dead-letters?queue=<%= encodeURIComponent(s.queue) %>">peek again</a></span>
  </header>
  <% if (s.error) { %><p class="warn"><%= s.error %></p><% } %>
  <% if (!it.actions.enabled) { %><p class="muted">Redrive is off: set ops.token (OCTORELAY_OPS_TOKEN).</p>
  <% } else if (!it.actions.allowed) { %><p class="muted"><a href="/console/login?next=<%= encodeURIComponent(it.self) %>">Log in</a> with the ops token to redrive.</p><% } %>
  <form method="post" action="/console/dead-letters/<%= encodeURIComponent(s.queue) %>/redrive" id="redrive-form">
    <input type="hidden" name="_csrf" value="<%= it.csrf %>">
    <% if (s.messages.length > 0) { %>
    <table class="list dead">
      <thead><tr><th><span class="sr">select</span></th><th>message</th><th>reason</th><th>source</th><th class="num">receives</th><th>sent</th><th>body</th></tr></thead>
      <tbody>
      <% for (const m of s.messages) { %>
        <tr data-message-id="<%= m.messageId %>">
          <td><input type="checkbox" name="id" value="<%= m.messageId %>" aria-label="select <%= m.messageId %>"<% if (!it.actions.allowed) { %> disabled<% } %>></td>
          <td class="key"><%= m.messageId %></td>
          <td class="reason"><%= m.reason || "(none recorded: moved by the queue's redrive policy)" %></td>
          <td><%= m.sourceQueue || "—" %><% if (m.sourceMessageId) { %><br><span class="muted key"><%= m.sourceMessageId %></span><% } %></td>
          <td class="num"><%= m.receiveCount %></td>
          <td><%= m.sentAtMs ? it.time(m.sentAtMs) : "—" %></td>
          <td><code class="body"><%= m.body %></code><% if (m.truncated) { %><span class="muted"> … (<%= it.count(m.bodyChars) %> characters)</span><% } %>
            <% if (m.attributes.length) { %><div class="muted">attributes: <% for (const a of m.attributes) { %><code><%= a.name %>=<%= a.value %></code> <% } %></div><% } %></td>
        </tr>
      <% } %>
      </tbody>
    </table>
    <% } else { %><p class="empty">The dead-letter queue is empty.</p><% } %>
    <div class="actions">
      <button type="submit" name="scope" value="selected" id="redrive-selected"<% if (!it.actions.allowed || s.messages.length === 0) { %> disabled<% } %>>Redrive selected</button>
      <button type="submit" name="scope" value="all" id="redrive-all"<% if (!it.actions.allowed) { %> disabled<% } %>>Redrive all</button>
      <span class="muted">Back to <%= s.queue %>: with SQS's message-move task where the endpoint has it, else each message is sent and only then deleted here (a crash leaves a duplicate, never a loss).</span>
    </div>
  </form>
</section>
<% } %>
`;

// The lodestar dashboard page: reads the JSON API, follows /api/events (server-sent
// events) and renders by hash route: #/ (services), #/service/NAME, #/registry, #/audit.
// Everything coming from the registry is escaped before it reaches the page.
"use strict";

const state = { status: null, seen: new Set(), pending: null };
const $ = (sel) => document.querySelector(sel);

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

function age(ms) {
  if (ms == null) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

function time(ms) {
  return ms == null ? "" : new Date(ms).toLocaleTimeString();
}

function tags(counts) {
  return Object.entries(counts || {})
    .map(([k, n]) => `<span class="tag">${esc(k === "" ? "(none)" : k)} × ${n}</span>`)
    .join("");
}

async function api(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

// === banners ===

function showRegistry(registry) {
  if (!registry) return;
  $("#registry-line").textContent = registry.url;
  const banner = $("#banner-unreachable");
  if (registry.reachable) {
    banner.hidden = true;
  } else {
    const last = registry.last_ok == null
      ? "no state was ever read from it"
      : `showing the last known state, from ${age(registry.last_ok)} ago`;
    banner.textContent = `Registry unreachable: ${registry.error || "no answer yet"} (${last}).`;
    banner.hidden = false;
  }
}

function showProtection(nodes) {
  const on = Object.entries(nodes || {}).filter(([, n]) => n.status?.protection?.protecting);
  const banner = $("#banner-protect");
  banner.hidden = on.length === 0;
  if (on.length) {
    banner.textContent = `Self-protection is on at ${on.map(([a]) => a).join(", ")}: ` +
      "renews fell below the threshold, eviction is paused (instances that died stay listed).";
  }
}

// === views ===

async function servicesView() {
  const data = await api("/api/services");
  showRegistry(data.registry);
  const rows = data.services.map((s) => `
    <tr data-service="${esc(s.name)}">
      <td><a href="#/service/${encodeURIComponent(s.name)}">${esc(s.name)}</a></td>
      <td class="count">${s.instances}${s.down ? ` <span class="status-down">(${s.down} down)</span>` : ""}</td>
      <td>${tags(s.versions)}</td>
      <td>${tags(s.lanes)}</td>
      <td>${tags(s.zones)}</td>
    </tr>`).join("");
  return `<h2>Services <small>${data.services.length}</small></h2>
    <table id="services"><thead><tr><th>Service</th><th>Instances</th><th>Versions</th><th>Lanes</th><th>Zones</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="5" class="muted">No service is registered.</td></tr>`}</tbody></table>`;
}

function actions(name, i) {
  if (!state.status?.writes) return "";
  const next = i.status === "down" ? "up" : "down";
  return `<td class="actions">
    <button data-action="status" data-status="${next}" data-id="${esc(i.id)}">set ${next}</button>
    <input type="number" min="1" step="1" placeholder="weight" data-weight-for="${esc(i.id)}">
    <button data-action="weight" data-id="${esc(i.id)}">set weight</button>
    <button data-action="clear" data-id="${esc(i.id)}">clear</button></td>`;
}

async function serviceView(name) {
  const [data, subs] = await Promise.all([
    api(`/api/services/${encodeURIComponent(name)}`),
    api(`/api/services/${encodeURIComponent(name)}/subscribers`).catch((e) => ({ error: e.message })),
  ]);
  showRegistry(data.registry);
  const writes = state.status?.writes;
  const rows = data.instances.map((i) => {
    const health = i.health
      ? `<span class="health-${esc(i.health.status)}" title="${esc(i.health.error || "")}">${esc(i.health.status)}</span>`
      : `<span class="muted">not checked</span>`;
    return `<tr data-id="${esc(i.id)}" class="${i.status === "down" ? "is-down" : ""}">
      <td class="mono">${esc(i.id)}</td>
      <td class="mono">${i.endpoints.map(esc).join("<br>")}</td>
      <td>${esc(i.version || "-")}</td>
      <td>${esc(i.lane)}</td>
      <td>${esc(i.zone || "-")}</td>
      <td class="weight">${esc(i.weight)}</td>
      <td class="status status-${esc(i.status)}">${esc(i.status)}</td>
      <td title="${esc(i.since_source)}">${i.since_ms ? `${age(i.since_ms)} ago` : "-"}</td>
      <td class="health">${health}</td>${actions(name, i)}</tr>`;
  }).join("");
  let subscribers;
  if (subs.subscribers) {
    subscribers = subs.subscribers.length === 0
      ? `<p class="muted">No recorded subscriber.</p>`
      : `<table id="subscribers"><thead><tr><th>Client</th><th>Host</th><th>PID</th><th>Since</th></tr></thead><tbody>${
        subs.subscribers.map((s) => `<tr><td class="mono">${esc(s.client_id)}</td><td>${esc(s.host)}</td>
          <td>${esc(s.pid)}</td><td>${age(s.since * 1000)} ago</td></tr>`).join("")}</tbody></table>`;
  } else {
    subscribers = `<p class="muted">${esc(subs.error)}</p>`;
  }
  return `<h2>${esc(name)} <small>${data.instances.length} instances · revision ${data.revision}</small></h2>
    <table id="instances"><thead><tr><th>ID</th><th>Endpoints</th><th>Version</th><th>Lane</th><th>Zone</th>
    <th>Weight</th><th>Status</th><th>Seen since</th><th>Health</th>${writes ? "<th>Traffic</th>" : ""}</tr></thead>
    <tbody>${rows || `<tr><td colspan="9" class="muted">No instance.</td></tr>`}</tbody></table>
    <h2>Subscribers</h2>${subscribers}`;
}

function nodeCard(addr, view) {
  const s = view.status;
  if (!s) {
    return `<div class="card node" data-node="${esc(addr)}"><h3>${esc(addr)}</h3>
      <p class="status-down">not answering: ${esc(view.error || "not asked yet")}</p></div>`;
  }
  const p = s.protection;
  const whole = p.renews_last_window != null;
  const renews = whole ? p.renews_last_window : p.renews_current;
  const expected = whole ? p.expected_last_window : p.expected_now;
  const scale = Math.max(expected, renews, 1);
  const counted = whole
    ? `Renews in the last ${p.window_secs}s window: <b>${renews}</b>`
    : `No whole ${p.window_secs}s window yet: <b>${renews}</b> renews in the first ${Math.round(p.current_elapsed_secs)}s`;
  const peers = s.peers.map((peer) => `<tr><td class="mono">${esc(peer.addr)}</td><td>${esc(peer.zone)}</td>
    <td class="${peer.up ? "status-up" : "status-down"}">${peer.up ? "replicating" : "unreachable"}</td>
    <td>${peer.queued}</td><td>${peer.dropped}</td></tr>`).join("");
  return `<div class="card node" data-node="${esc(addr)}">
    <h3>${esc(addr)} <small class="muted">zone ${esc(s.zone)} · env ${esc(s.env)}</small></h3>
    <p>${s.ready ? "serving" : "warming up"} · ${s.instances} instances ·
      ${view.error ? `<span class="status-down">last request failed: ${esc(view.error)}</span>` : `answered ${age(view.last_ok)} ago`}</p>
    <p class="protection">${counted}
      against a threshold of <b>${Math.round(expected * p.threshold)}</b>
      (${Math.round(p.threshold * 100)} % of ${Math.round(expected)} expected) ·
      ${whole ? `${p.renews_current} so far in this window · ` : ""}
      self-protection <b class="${p.protecting ? "status-down" : "status-up"}">${p.protecting ? "ON" : "off"}</b></p>
    <div class="meter"><span style="width:${(100 * renews / scale).toFixed(1)}%"></span>
      <i style="left:${(100 * expected * p.threshold / scale).toFixed(1)}%"></i></div>
    <table><thead><tr><th>Peer</th><th>Zone</th><th>Replication</th><th>Queued</th><th>Dropped</th></tr></thead>
    <tbody>${peers || `<tr><td colspan="5" class="muted">No peer.</td></tr>`}</tbody></table></div>`;
}

async function registryView() {
  const data = await api("/api/registry");
  showRegistry(data.registry);
  showProtection(data.nodes);
  if (!data.builtin) {
    return `<h2>Registry</h2><p class="muted">The node view is for the built-in registry (lodestar://); this dashboard follows ${esc(data.registry.url)}.</p>`;
  }
  const cards = Object.entries(data.nodes).map(([addr, view]) => nodeCard(addr, view)).join("");
  return `<h2>Registry nodes</h2><div class="cards">${cards || `<p class="muted">No node answered yet.</p>`}</div>`;
}

async function auditView() {
  const data = await api("/api/audit");
  const rows = data.audit.map((a) => `<tr><td>${time(a.at_ms)}</td><td>${esc(a.who)}</td>
    <td class="mono">${esc(a.remote)}</td><td>${esc(a.service)}</td><td class="mono">${esc(a.id)}</td>
    <td>${esc(a.what)}</td><td>${esc(a.result)}</td></tr>`).join("");
  return `<h2>Audit <small>${data.writes ? "writes allowed" : "read-only dashboard"}</small></h2>
    <table id="audit"><thead><tr><th>When</th><th>Who</th><th>From</th><th>Service</th><th>Instance</th><th>What</th><th>Result</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="7" class="muted">No write yet.</td></tr>`}</tbody></table>`;
}

// === rendering ===

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  if (hash.startsWith("service/")) return { view: "service", name: decodeURIComponent(hash.slice(8)) };
  if (hash === "registry") return { view: "registry" };
  if (hash === "audit") return { view: "audit" };
  return { view: "services" };
}

async function render() {
  const r = route();
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === r.view));
  try {
    state.status = await api("/api/status");
    showRegistry(state.status.registry);
    $("#writes-box").hidden = !state.status.writes;
    $("#nav-registry").hidden = state.status.registry.kind !== "lodestar";
    if (state.status.registry.kind === "lodestar" && r.view !== "registry") {
      api("/api/registry").then((d) => showProtection(d.nodes)).catch(() => {});
    }
    let html;
    if (r.view === "service") html = await serviceView(r.name);
    else if (r.view === "registry") html = await registryView();
    else if (r.view === "audit") html = await auditView();
    else html = await servicesView();
    // Keep what the operator is typing in a weight box across refreshes.
    const focused = document.activeElement?.dataset?.weightFor;
    const typed = focused ? document.activeElement.value : null;
    $("#view").innerHTML = html;
    if (focused) {
      const box = document.querySelector(`[data-weight-for="${CSS.escape(focused)}"]`);
      if (box) { box.value = typed; box.focus(); }
    }
  } catch (e) {
    $("#view").innerHTML = `<p class="status-down">${esc(e.message)}</p>`;
  }
}

/// Coalesces bursts of notices into one render.
function scheduleRender() {
  if (state.pending) return;
  state.pending = setTimeout(() => { state.pending = null; render(); }, 100);
}

function addEvent(event) {
  if (state.seen.has(event.seq)) return;
  state.seen.add(event.seq);
  const li = document.createElement("li");
  li.dataset.kind = event.kind;
  li.dataset.service = event.service;
  li.dataset.id = event.id;
  li.innerHTML = `<span class="kind ${esc(event.kind)}">${esc(event.kind)}</span>
    <a href="#/service/${encodeURIComponent(event.service)}">${esc(event.service)}</a>/<span class="mono">${esc(event.id)}</span>
    <span class="muted">${time(event.at_ms)}</span>${event.detail ? `<br><span class="muted">${esc(event.detail)}</span>` : ""}`;
  const feed = $("#feed");
  feed.prepend(li);
  while (feed.children.length > 300) feed.lastChild.remove();
}

function follow() {
  const source = new EventSource("/api/events");
  source.onopen = () => {
    // Every connection starts with the events kept: the feed is rebuilt
    // from them (a restarted dashboard numbers its events from 1 again).
    state.seen.clear();
    $("#feed").replaceChildren();
    $("#live").textContent = "live";
    $("#live").classList.add("on");
    scheduleRender();
  };
  source.onerror = () => { $("#live").textContent = "reconnecting"; $("#live").classList.remove("on"); };
  source.addEventListener("change", (m) => { addEvent(JSON.parse(m.data)); scheduleRender(); });
  source.addEventListener("refresh", () => scheduleRender());
}

// === writes ===

async function write(id, body) {
  const r = route();
  const token = $("#token").value.trim();
  const who = $("#who").value.trim();
  const result = $("#write-result");
  if (!token || !who) {
    result.textContent = "Give the token and your name first.";
    $(token ? "#who" : "#token").focus();
    return;
  }
  sessionStorage.setItem("lodestar-who", who);
  const response = await fetch(`/api/services/${encodeURIComponent(r.name)}/instances/${encodeURIComponent(id)}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ who, ...body }),
  });
  const answer = await response.json().catch(() => ({}));
  result.textContent = response.ok
    ? `${id}: ${answer.audit.what}: done`
    : `${id}: refused (${response.status}): ${answer.error || ""}`;
  result.dataset.outcome = response.ok ? "ok" : String(response.status);
  scheduleRender();
}

document.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const id = button.dataset.id;
  if (button.dataset.action === "status") write(id, { status: button.dataset.status });
  if (button.dataset.action === "clear") write(id, { clear: true });
  if (button.dataset.action === "weight") {
    const box = document.querySelector(`[data-weight-for="${CSS.escape(id)}"]`);
    const weight = Number(box?.value);
    if (!Number.isInteger(weight) || weight < 1) {
      $("#write-result").textContent = "The weight is a positive integer.";
      return;
    }
    write(id, { weight });
  }
});

$("#who").value = sessionStorage.getItem("lodestar-who") || "";
window.addEventListener("hashchange", render);
// Ages and the unreachable banner's age move on even when nothing changes.
setInterval(scheduleRender, 5000);
follow();
render();

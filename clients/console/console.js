// wsgate operator console: plain DOM, no framework. Served by the gateway at /console.
import { WsgateClient, SUBSCRIBABLE_EVENTS } from "/console/wsgate.js";
import { createOperator } from "/console/operator.js";

const LOG_LIMIT = 200;
const STATS_EVERY_MS = 2000;

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "type" || k === "title")
      node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
};

const ui = {
  state: $("#state"),
  connInfo: $("#conn-info"),
  closeInfo: $("#close-info"),
  recentCloses: $("#recent-closes"),
  recoveryInfo: $("#recovery-info"),
  token: $("#token"),
  apiKey: $("#api-key"),
  connect: $("#connect"),
  disconnect: $("#disconnect"),
  showSecrets: $("#show-secrets"),
  events: $("#event-list"),
  subStatus: $("#sub-status"),
  pubForm: $("#publish-form"),
  pubType: $("#pub-type"),
  pubData: $("#pub-data"),
  pubUsers: $("#pub-users"),
  pubConnections: $("#pub-connections"),
  pubResult: $("#publish-result"),
  progress: $("#progress-list"),
  log: $("#log"),
  logPause: $("#log-pause"),
};

const consoleState = {
  client: null,
  statsTimer: null,
  lastStats: null,
  progress: new Map(), // "upload:ID" | "file:ID" -> element
};
// Handy for the browser tests and for poking around from devtools.
window.wsgateConsole = consoleState;

// ------------------------------------------------------------------ log

function fmtTime(d = new Date()) {
  return d.toISOString().slice(11, 23);
}

/** A recorded event's position (SPEC-v2 section 2.1) as a log cell: `stream #offset`, epoch in the tooltip. */
function positionCell(msg) {
  const s = msg && msg.stream;
  if (!s || typeof s.name !== "string") return el("span", { class: "pos" });
  const attrs = { class: "pos", text: `${s.name} #${s.offset}${msg.cached ? " (cached)" : ""}`, title: `stream ${s.name}, epoch ${s.epoch}, offset ${s.offset}` };
  return el("span", { ...attrs, "data-stream": s.name, "data-epoch": String(s.epoch), "data-offset": String(s.offset), "data-cached": String(!!msg.cached) });
}

function log(dir, type, data, time, msg) {
  if (ui.logPause.checked && dir !== "local") return;
  const text = data === undefined ? "" : typeof data === "string" ? data : JSON.stringify(data);
  const li = el(
    "li",
    { "data-dir": dir, "data-type": type },
    el("span", { class: "t", text: time ? String(time).slice(11, 23) : fmtTime() }),
    el("span", { class: "ty", text: type }),
    el("span", { class: "d", text }),
    positionCell(msg),
  );
  ui.log.prepend(li);
  while (ui.log.children.length > LOG_LIMIT) ui.log.lastElementChild.remove();
}

$("#log-limit").textContent = String(LOG_LIMIT);
$("#log-clear").addEventListener("click", () => ui.log.replaceChildren());

// ------------------------------------------------------------------ subscriptions

const checkboxes = new Map();
for (const ev of SUBSCRIBABLE_EVENTS) {
  const box = el("input", { type: "checkbox", "data-event": ev, id: `sub-${ev.replace(/\./g, "-")}` });
  const label = el("label", { "data-event": ev }, box, el("span", { text: ev }));
  checkboxes.set(ev, box);
  ui.events.append(label);
  box.addEventListener("change", () => onToggle(ev, box.checked));
  ui.pubType.append(el("option", { value: ev, text: ev }));
}

function renderSubscriptions() {
  const c = consoleState.client;
  const confirmed = new Set(c ? c.confirmedSubscriptions : []);
  const wanted = c ? c.subscriptions : new Set();
  for (const [ev, box] of checkboxes) {
    const label = box.parentElement;
    if (c) box.checked = wanted.has(ev);
    label.classList.toggle("confirmed", confirmed.has(ev));
    label.classList.toggle("pending", wanted.has(ev) !== confirmed.has(ev));
    box.dataset.confirmed = String(confirmed.has(ev));
  }
  ui.subStatus.textContent = c
    ? `Server confirms: ${[...confirmed].join(", ") || "none"}`
    : "Not connected; ticked events are subscribed on connect.";
}

async function onToggle(ev, on) {
  const c = consoleState.client;
  if (!c) return renderSubscriptions();
  try {
    const p = on ? c.subscribe([ev]) : c.unsubscribe([ev]);
    renderSubscriptions();
    await p;
  } catch (e) {
    log("local", "subscription failed", `${e.code || ""} ${e.message}`);
  }
  renderSubscriptions();
}

// ------------------------------------------------------------------ progress bars

function progressRow(kind, id) {
  const key = `${kind}:${id}`;
  let row = consoleState.progress.get(key);
  if (row) return row;
  ui.progress.querySelector(".empty")?.remove();
  const bar = el("div", { class: "bar" });
  const track = el("div", { class: "track", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, bar);
  row = el(
    "div",
    { class: "progress", "data-id": String(id), "data-kind": kind, "data-progress": "0", title: `${kind} ${id}` },
    el("span", { class: "label", text: `${kind} ${id}` }),
    track,
    el("span", { class: "pct", text: "0%" }),
  );
  row._bar = bar;
  row._track = track;
  row._pct = row.querySelector(".pct");
  consoleState.progress.set(key, row);
  ui.progress.prepend(row);
  return row;
}

function setProgress(kind, id, progress, { done = false, failed = false, note = "" } = {}) {
  if (id === undefined || id === null || id === "") return;
  const row = progressRow(kind, id);
  if (typeof progress === "number" && Number.isFinite(progress)) {
    const pct = Math.max(0, Math.min(100, progress));
    row.dataset.progress = String(pct);
    row._bar.style.width = `${pct}%`;
    row._track.setAttribute("aria-valuenow", String(pct));
    row._pct.textContent = `${Math.round(pct * 10) / 10}%`;
  }
  if (done) row.dataset.done = "true";
  if (failed) row.dataset.failed = "true";
  if (note) row._pct.textContent = note;
}

function onProgressEvent(msg) {
  const d = msg.data || {};
  switch (msg.type) {
    case "upload.progress":
      return setProgress("upload", d.upload_id, Number(d.progress));
    case "upload.completed":
      return setProgress("upload", d.upload_id, 100, { done: true });
    case "upload.error":
      return setProgress("upload", d.upload_id, undefined, { failed: true, note: "error" });
    case "upload.cancelled":
      return setProgress("upload", d.upload_id, undefined, { failed: true, note: "cancelled" });
    case "file.processing":
      return setProgress("file", d.file_id, d.progress === undefined ? undefined : Number(d.progress));
    case "file.ready":
      return setProgress("file", d.file_id, 100, { done: true });
  }
}

// ------------------------------------------------------------------ connection

function showState(state, detail = {}) {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  const c = consoleState.client;
  const expiry = c && c.tokenExpiresAt ? new Date(c.tokenExpiresAt) : null;
  const expires = expiry && !Number.isNaN(expiry.getTime()) ? ` \u00b7 token expires ${expiry.toLocaleTimeString()}` : "";
  ui.connInfo.textContent =
    c && state === "open" && c.connectionId ? `user ${c.userId} \u00b7 connection ${c.connectionId}${expires}` : state === "reconnecting" ? `retry in ${detail.delay}ms` : "";
  ui.connInfo.title = expiry ? `token exp ${c.tokenExpiresAt}` : "";
  ui.connect.disabled = !!c && state !== "closed";
  ui.disconnect.disabled = !c || state === "closed";
}

function connect() {
  disconnect();
  const token = ui.token.value.trim();
  if (!token) {
    log("local", "console", "type a token first");
    return;
  }
  const wanted = [...checkboxes].filter(([, b]) => b.checked).map(([ev]) => ev);
  const client = new WsgateClient({
    url: location.origin,
    // Read before every (re)connect, so a pasted fresh token is used on the next attempt.
    getToken: () => ui.token.value.trim(),
    pingInterval: 25000,
  });
  consoleState.client = client;
  client.on("state", ({ state, ...detail }) => {
    if (consoleState.client !== client) return;
    showState(state, detail);
    log("local", `state: ${state}`, detail && Object.keys(detail).length ? detail : undefined);
    renderSubscriptions();
  });
  // The close code of the last connection that was open, and how many attempts failed since.
  let lastOpenClose = null;
  let failed = 0;
  const showClose = () => {
    const parts = [];
    if (lastOpenClose) parts.push(`last close: ${lastOpenClose.code} ${describeClose(lastOpenClose)}`);
    if (failed) parts.push(`${failed} failed attempt${failed > 1 ? "s" : ""} since`);
    ui.closeInfo.textContent = parts.join(" \u00b7 ");
    ui.closeInfo.dataset.code = lastOpenClose ? String(lastOpenClose.code) : "";
  };
  const closedOrGaveUp = (d) => {
    if (consoleState.client !== client) return;
    recordClose(d);
    if (d.opened || d.byClient) {
      lastOpenClose = d;
      failed = 0;
    } else failed++;
    showClose();
  };
  client.on("closed", closedOrGaveUp);
  client.on("giveup", closedOrGaveUp);
  client.on("open", () => {
    failed = 0;
    showClose();
  });
  client.on("giveup", (d) => log("local", "gave up reconnecting", d));
  client.on("established", () => showState(client.state));
  client.on("refreshed", () => showState(client.state));
  client.on("message", (msg) => {
    if (consoleState.client !== client) return;
    log("in", msg.type, msg.data, msg.timestamp, msg);
    onProgressEvent(msg);
    if (msg.type.endsWith("subscription.confirmed")) renderSubscriptions();
  });
  client.on("sent", (msg) => log("out", msg.type, msg.data));
  client.on("resubscribed", () => renderSubscriptions());
  client.on("resumed", (data) => {
    if (consoleState.client === client) showRecovery(data);
  });
  client.on("error", (e) => log("local", `error ${e.code}`, e.message));
  client.connect();
  if (wanted.length) client.subscribe(wanted).catch((e) => log("local", "subscribe failed", `${e.code} ${e.message}`));
  renderSubscriptions();
}

const RECENT_CLOSES = 10;

/** A close as the gateway explained it: its JSON reason's code and retry advice (SPEC-v2 section 6). */
function describeClose(d) {
  const a = d.advice;
  if (!a) return d.reason ? `\u201c${d.reason}\u201d` : "";
  const extra = [a.retry];
  if (typeof a.retry_after === "number") extra.push(`retry after ${a.retry_after} s`);
  if (typeof a.dropped === "number") extra.push(`${a.dropped} dropped`);
  if (d.refusal && d.refusal.message) extra.push(d.refusal.message);
  return `${a.code} (${extra.join(", ")})`;
}

/** The closes of this tab's connections, newest first, each with its reason. */
function recordClose(d) {
  if (!ui.recentCloses) return;
  const item = el(
    "li",
    { "data-code": String(d.code) },
    el("span", { class: "muted", text: new Date().toLocaleTimeString() }),
    document.createTextNode(` ${d.code} ${describeClose(d)}${d.willReconnect ? "" : " \u00b7 not reconnecting"}`),
  );
  ui.recentCloses.prepend(item);
  while (ui.recentCloses.children.length > RECENT_CLOSES) ui.recentCloses.lastChild.remove();
}

/** The outcome of the connection's last resume: per stream, recovered (+replayed) or the reason. */
function showRecovery(data) {
  const streams = Object.entries(data.streams || {}).filter(([, e]) => e && "recovered" in e);
  const parts = streams.map(([name, e]) => (e.recovered ? `${name} +${e.replayed ?? 0}` : `${name} ${e.reason || "not recovered"}`));
  const verdict = data.recovered ? "recovered" : "not recovered, refetch";
  ui.recoveryInfo.textContent = `last resume: ${streams.length ? verdict : "nothing to recover"}${parts.length ? " \u00b7 " + parts.join(", ") : ""}`;
  ui.recoveryInfo.dataset.recovered = String(!!data.recovered);
  ui.recoveryInfo.title = `at ${fmtTime()}`;
}

function disconnect() {
  const c = consoleState.client;
  if (!c) return;
  c.close();
  showState("closed");
}

$("#cred-form").addEventListener("submit", (e) => {
  e.preventDefault();
  connect();
  startStats();
});
ui.disconnect.addEventListener("click", () => disconnect());
ui.showSecrets.addEventListener("change", () => {
  const type = ui.showSecrets.checked ? "text" : "password";
  ui.token.type = type;
  ui.apiKey.type = type;
});
ui.apiKey.addEventListener("change", () => startStats());

// ------------------------------------------------------------------ server API

async function apiCall(method, path, body) {
  const key = ui.apiKey.value.trim();
  if (!key) throw new Error("no API key");
  const res = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    cache: "no-store",
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {}
  if (!res.ok) throw new Error(`${res.status} ${json && json.code ? json.code + ": " + json.detail : text}`);
  return json;
}

const list = (s) =>
  s
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);

ui.pubForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  let data;
  try {
    data = ui.pubData.value.trim() ? JSON.parse(ui.pubData.value) : {};
  } catch (err) {
    ui.pubResult.textContent = `data is not JSON: ${err.message}`;
    ui.pubResult.dataset.status = "error";
    return;
  }
  const body = { type: ui.pubType.value, data };
  const target = ui.pubForm.elements.target.value;
  if (target === "all") body.all = true;
  if (target === "specific") {
    const users = list(ui.pubUsers.value);
    const connections = list(ui.pubConnections.value);
    if (users.length) body.users = users;
    if (connections.length) body.connections = connections;
  }
  try {
    const r = await apiCall("POST", "/api/v1/events", body);
    ui.pubResult.textContent = `delivered to ${r.delivered} (id ${r.id})`;
    ui.pubResult.dataset.status = "ok";
    ui.pubResult.dataset.delivered = String(r.delivered);
    log("local", `published ${body.type}`, body);
  } catch (err) {
    ui.pubResult.textContent = `failed: ${err.message}`;
    ui.pubResult.dataset.status = "error";
  }
});

$("#pub-me").addEventListener("click", () => {
  const c = consoleState.client;
  if (c && c.connectionId) ui.pubConnections.value = c.connectionId;
  ui.pubForm.elements.target.value = "specific";
});

// ------------------------------------------------------------------ stats

const fmtRate = (n) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
function fmtUptime(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

async function refreshStats() {
  let s;
  let metricsText = "";
  try {
    const metrics = fetch("/metrics", { cache: "no-store" }).then((r) => (r.ok ? r.text() : ""), () => "");
    s = await apiCall("GET", "/api/v1/stats");
    metricsText = await metrics;
  } catch (err) {
    $("#stats-age").textContent = `(${err.message})`;
    return;
  }
  operator.sample(Date.now(), s, metricsText);
  const now = performance.now();
  const prev = consoleState.lastStats;
  consoleState.lastStats = { at: now, s };
  $("#stat-node").textContent = s.node_id ?? "-";
  $("#stat-connections").textContent = s.connections;
  $("#stat-users").textContent = s.users;
  $("#stat-in").textContent = s.messages_in;
  $("#stat-out").textContent = s.messages_out;
  $("#stat-rate-limited").textContent = s.rate_limited;
  $("#stat-uptime").textContent = typeof s.uptime_s === "number" ? fmtUptime(s.uptime_s) : "-";
  if (prev) {
    const dt = (now - prev.at) / 1000;
    $("#stat-in-rate").textContent = fmtRate(Math.max(0, s.messages_in - prev.s.messages_in) / dt);
    $("#stat-out-rate").textContent = fmtRate(Math.max(0, s.messages_out - prev.s.messages_out) / dt);
  }
  const shards = Array.isArray(s.shards) ? s.shards : [];
  const max = Math.max(1, ...shards.map((x) => x.connections || 0));
  $("#shards").replaceChildren(
    ...shards.map((sh, i) => {
      const fill = el("div", { class: "fill" });
      fill.style.width = `${((sh.connections || 0) / max) * 100}%`;
      return el("div", { class: "shard", "data-shard": String(i) }, el("span", { text: `shard ${i}` }), el("div", { class: "track" }, fill), el("span", { text: String(sh.connections) }));
    }),
  );
  $("#stats-age").textContent = `(every ${STATS_EVERY_MS / 1000}s)`;
  $("#stats").dataset.loaded = "true";
}

function startStats() {
  clearInterval(consoleState.statsTimer);
  consoleState.statsTimer = null;
  consoleState.lastStats = null;
  if (!ui.apiKey.value.trim()) return;
  refreshStats();
  consoleState.statsTimer = setInterval(refreshStats, STATS_EVERY_MS);
}

// ------------------------------------------------------------------ operator view

const operator = createOperator({ apiCall, log, selfConnectionId: () => consoleState.client?.connectionId });
consoleState.operator = operator;

function showView(id) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.dataset.view === id;
    tab.setAttribute("aria-selected", String(on));
    document.getElementById(tab.dataset.view).hidden = !on;
  }
  operator.setActive(id === "view-operator");
}
for (const tab of document.querySelectorAll('[role="tab"]')) tab.addEventListener("click", () => showView(tab.dataset.view));

// ------------------------------------------------------------------ URL fragment

/** The credentials in the address fragment, if any, with the fragment removed from the address bar. */
function takeFragmentCredentials() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = p.get("token");
  const key = p.get("api_key") ?? p.get("apikey") ?? p.get("key");
  // Keep secrets out of the address bar and the history.
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  return { token, key };
}

// Read once, at load. A later change of the fragment (a link the page is tricked into
// following, an extension, a script) must not swap the credentials of a running console:
// it is only stripped from the address bar.
window.addEventListener("hashchange", () => {
  const { token, key } = takeFragmentCredentials();
  if (token || key) log("local", "console", "credentials in a changed address fragment were ignored; paste them into the form");
});
showState("idle");
renderSubscriptions();
{
  const { token, key } = takeFragmentCredentials();
  if (key) ui.apiKey.value = key;
  if (token) ui.token.value = token;
  if (key) startStats();
  if (token) connect();
}

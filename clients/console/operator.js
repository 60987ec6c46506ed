// wsgate console, operator view: the node's connections (with disconnect, deactivate and
// activate), live charts of the last 15 minutes, the cluster's nodes and backplane.
//
// Where the numbers come from: every sample (console.js calls sample() every 2 s) is one
// GET /api/v1/stats and one GET /metrics. Rates are counter deltas over the time between two
// samples; fan-out p50/p99 are computed from the deltas of the wsgate_fanout_seconds
// histogram buckets (as Prometheus' histogram_quantile over a rate would). The 15-minute
// history is a ring in this page's memory: it starts empty when the page opens and is gone
// when it closes; the gateway keeps no history of its own.

export const WINDOW_S = 15 * 60;
const CHART_HEIGHT = 170;
const TABLE_EVERY_MS = 5000;
const TABLE_ROWS_MAX = 200;
// Samples kept at most, whatever the polling rate (one every 2 s fills 450 in 15 minutes).
const HISTORY_MAX = 2000;

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// ------------------------------------------------------------------ metrics arithmetic

/** Prometheus text exposition -> Map(name -> [{labels, value}]). */
export function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: Number(m[3]) });
  }
  return out;
}

/** The counters the charts need, read from parsed /metrics. */
function readCounters(metrics) {
  const first = (name) => metrics.get(name)?.[0]?.value ?? 0;
  const drops = metrics.get("wsgate_messages_dropped_total") || [];
  return {
    rateLimited: first("wsgate_rate_limited_total"),
    // rate_limited is also a drop reason: the chart shows it as its own line.
    dropped: drops.filter((d) => d.labels.reason !== "rate_limited").reduce((sum, d) => sum + d.value, 0),
    fanout: (metrics.get("wsgate_fanout_seconds_bucket") || [])
      .map((b) => [b.labels.le === "+Inf" ? Infinity : Number(b.labels.le), b.value])
      .sort((a, b) => a[0] - b[0]),
  };
}

/**
 * The q-quantile of the observations made between two readings of a cumulative histogram
 * ([[upperBound, cumulativeCount]...], +Inf last), interpolated linearly inside the bucket;
 * null when nothing was observed in between.
 */
export function histogramQuantile(q, before, now) {
  const deltas = now.map(([le, count], i) => [le, count - (before[i]?.[1] ?? 0)]);
  const total = deltas.length ? deltas[deltas.length - 1][1] : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, count] of deltas) {
    if (count >= rank) {
      if (le === Infinity) return lower; // past the last bound: the best we can say
      const inBucket = count - below;
      return inBucket > 0 ? lower + (le - lower) * ((rank - below) / inBucket) : le;
    }
    lower = le;
    below = count;
  }
  return lower;
}

// ------------------------------------------------------------------ history and charts

const SERIES = {
  connections: [
    { key: "connections", label: "connections", color: "#2563eb" },
    { key: "users", label: "users", color: "#9333ea" },
  ],
  messages: [
    { key: "inRate", label: "in/s", color: "#0891b2" },
    { key: "outRate", label: "out/s", color: "#15803d" },
  ],
  fanout: [
    { key: "p50", label: "p50 ms", color: "#2563eb" },
    { key: "p99", label: "p99 ms", color: "#b45309" },
  ],
  drops: [
    { key: "rateLimited", label: "rate-limited/s", color: "#b45309" },
    { key: "dropped", label: "dropped/s", color: "#b91c1c" },
  ],
};
const KEYS = Object.values(SERIES).flat().map((s) => s.key);

function fmtNumber(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "-";
  if (v === 0) return "0";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

/** One-line x-axis labels: seconds while the span is short, minutes once it is long. */
function timeTicks(u, ticks) {
  const withSeconds = u.scales.x.max - u.scales.x.min <= 5 * 60;
  const two = (n) => String(n).padStart(2, "0");
  return ticks.map((t) => {
    const d = new Date(t * 1000);
    return `${two(d.getHours())}:${two(d.getMinutes())}${withSeconds ? ":" + two(d.getSeconds()) : ""}`;
  });
}

export function createOperator({ apiCall, log, selfConnectionId }) {
  const history = { t: [], ...Object.fromEntries(KEYS.map((k) => [k, []])) };
  const charts = new Map(); // name -> uPlot
  let previous = null; // { at, stats, counters }
  let lastMetrics = new Map();
  let active = false;
  let tableTimer = null;
  let connections = [];
  let nodeId = "";
  const deactivated = new Set();

  function record(at, stats, counters) {
    const point = { connections: stats.connections, users: stats.users };
    const prev = previous;
    const dt = prev ? (at - prev.at) / 1000 : 0;
    // A restarted server starts its counters again: no rate across the restart.
    const restarted = prev && (stats.messages_in < prev.stats.messages_in || stats.messages_out < prev.stats.messages_out || counters.dropped < prev.counters.dropped);
    if (prev && dt > 0 && !restarted) {
      point.inRate = (stats.messages_in - prev.stats.messages_in) / dt;
      point.outRate = (stats.messages_out - prev.stats.messages_out) / dt;
      point.rateLimited = (counters.rateLimited - prev.counters.rateLimited) / dt;
      point.dropped = (counters.dropped - prev.counters.dropped) / dt;
      const p50 = histogramQuantile(0.5, prev.counters.fanout, counters.fanout);
      const p99 = histogramQuantile(0.99, prev.counters.fanout, counters.fanout);
      point.p50 = p50 === null ? null : p50 * 1000;
      point.p99 = p99 === null ? null : p99 * 1000;
    }
    previous = { at, stats, counters };
    history.t.push(at / 1000);
    for (const k of KEYS) history[k].push(point[k] ?? null);
    const oldest = at / 1000 - WINDOW_S;
    while (history.t.length > HISTORY_MAX || (history.t.length && history.t[0] < oldest)) {
      history.t.shift();
      for (const k of KEYS) history[k].shift();
    }
  }

  function chartData(name) {
    return [history.t, ...SERIES[name].map((s) => history[s.key])];
  }

  function makeChart(name) {
    const box = $(`#chart-${name}`);
    // The history so far, at least a minute, at most the 15-minute window, ending at the
    // latest sample: a page opened a minute ago does not draw 14 empty minutes.
    const xRange = () => {
      const end = history.t.length ? history.t[history.t.length - 1] : Date.now() / 1000;
      const span = Math.min(WINDOW_S, Math.max(60, end - (history.t[0] ?? end)));
      return [end - span, end];
    };
    const opts = {
      width: Math.max(200, box.clientWidth),
      height: CHART_HEIGHT,
      scales: {
        x: { time: true, range: xRange },
        y: { range: (u, min, max) => [0, Math.max(1, (max ?? 0) * 1.15)] },
      },
      // uPlot's default draws the points while they are sparse (a fresh page, an isolated
      // fan-out between idle samples) and only the line once they are dense.
      series: [{}, ...SERIES[name].map((s) => ({ label: s.label, stroke: s.color, width: 2, value: (u, v) => fmtNumber(v) }))],
      axes: [{ stroke: "#6b7383", grid: { stroke: "#eef0f3" }, values: timeTicks, space: 70 }, { stroke: "#6b7383", grid: { stroke: "#eef0f3" }, size: 48, values: (u, ticks) => ticks.map(fmtNumber) }],
      legend: { live: true },
    };
    const chart = new window.uPlot(opts, chartData(name), box);
    new ResizeObserver(() => {
      if (box.clientWidth > 0) chart.setSize({ width: box.clientWidth, height: CHART_HEIGHT });
    }).observe(box);
    box.dataset.ready = "true";
    charts.set(name, chart);
  }

  function drawCharts() {
    if (!active || typeof window.uPlot !== "function") return;
    for (const name of Object.keys(SERIES)) {
      if (!charts.has(name)) makeChart(name);
      const chart = charts.get(name);
      chart.setData(chartData(name));
      // Without the cursor on the chart, the legend shows the latest values.
      if (history.t.length) chart.setLegend({ idx: history.t.length - 1 });
      $(`#chart-${name}`).dataset.points = String(history.t.length);
    }
  }

  // ---------------------------------------------------------------- cluster and drops

  function renderCluster(stats, metrics) {
    const clustered = typeof stats.backplane === "string";
    $("#cl-mode").textContent = clustered ? "cluster" : "single node";
    $("#cl-node").textContent = stats.node_id ?? "-";
    const bp = $("#cl-backplane");
    bp.textContent = clustered ? stats.backplane : "none";
    bp.dataset.state = clustered ? stats.backplane : "none";
    const nodes = Array.isArray(stats.nodes) ? stats.nodes : clustered ? null : [stats.node_id];
    $("#cl-nodes").replaceChildren(
      ...(nodes
        ? nodes.map((n) => el("li", { "data-node": n, class: n === stats.node_id ? "self" : "" }, el("span", { text: n }), n === stats.node_id ? el("span", { class: "badge", text: "this node" }) : ""))
        : [el("li", { class: "muted", text: "unknown while the backplane is disconnected" })]),
    );
    const counter = (name) => metrics.get(name)?.[0]?.value;
    const rows = [
      ["published", "wsgate_backplane_published_total"],
      ["received", "wsgate_backplane_received_total"],
      ["publish errors", "wsgate_backplane_publish_errors_total"],
      ["not forwarded", "wsgate_backplane_dropped_total"],
      ["malformed", "wsgate_backplane_malformed_total"],
      ["reconnects", "wsgate_backplane_reconnects_total"],
    ].filter(([, name]) => counter(name) !== undefined);
    $("#cl-counters").replaceChildren(
      ...(rows.length
        ? rows.map(([label, name]) => el("div", {}, el("span", { class: "k", text: label }), el("span", { class: "v", text: String(counter(name)) })))
        : [el("p", { class: "muted small", text: "no backplane (start with --redis-url for cluster mode)" })]),
    );
    const drops = metrics.get("wsgate_messages_dropped_total") || [];
    $("#drop-reasons").replaceChildren(
      ...drops.map((d) => el("div", { "data-reason": d.labels.reason }, el("span", { class: "k", text: d.labels.reason.replace(/_/g, " ") }), el("span", { class: "v", text: String(d.value) }))),
    );
  }

  // ---------------------------------------------------------------- connections table

  const result = (text, status) => {
    const r = $("#op-result");
    r.textContent = text;
    r.dataset.status = status;
  };

  async function refreshTable() {
    try {
      // The list is this node's connections: its node is the one stats names.
      const [list, stats] = await Promise.all([apiCall("GET", "/api/v1/connections"), apiCall("GET", "/api/v1/stats")]);
      connections = list || [];
      nodeId = stats?.node_id ?? "";
    } catch (err) {
      $("#op-count").textContent = `(${err.message})`;
      return;
    }
    renderTable();
  }

  function renderTable() {
    const filter = $("#op-filter").value.trim().toLowerCase();
    const shown = connections.filter((c) => !filter || String(c.user_id).toLowerCase().includes(filter));
    shown.sort((a, b) => String(a.user_id).localeCompare(String(b.user_id)) || String(a.connected_at).localeCompare(String(b.connected_at)));
    const rows = shown.slice(0, TABLE_ROWS_MAX).map((c) => {
      const self = c.connection_id === selfConnectionId();
      const when = new Date(c.connected_at);
      const disconnect = el("button", { type: "button", class: "small danger", "data-action": "disconnect" }, "disconnect");
      disconnect.addEventListener("click", () => act("disconnect", c));
      const deactivate = el("button", { type: "button", class: "small", "data-action": "deactivate" }, "deactivate user");
      deactivate.addEventListener("click", () => act("deactivate", c));
      return el(
        "tr",
        { "data-connection": c.connection_id, "data-user": c.user_id, ...(self ? { "data-self": "true" } : {}) },
        el("td", { class: "user" }, String(c.user_id), self ? el("span", { class: "badge", text: "this console" }) : ""),
        el("td", { class: "mono", text: c.connection_id }),
        el("td", { text: c.node_id ?? nodeId }),
        el("td", { title: c.connected_at, text: Number.isNaN(when.getTime()) ? String(c.connected_at) : when.toLocaleTimeString() }),
        el("td", { class: "subs" }, ...(c.subscriptions || []).map((s) => el("span", { class: "chip", text: s }))),
        el("td", { class: "num", text: String(c.messages_in) }),
        el("td", { class: "num", text: String(c.messages_out) }),
        el("td", { class: "num", text: c.queued_bytes === undefined ? "-" : String(c.queued_bytes) }),
        el("td", { class: "actions" }, disconnect, deactivate),
      );
    });
    if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { colspan: "9", class: "muted", text: connections.length ? "no connection of a matching user" : "no connections" })));
    $("#op-table tbody").replaceChildren(...rows);
    const capped = shown.length > TABLE_ROWS_MAX ? `, first ${TABLE_ROWS_MAX} shown` : "";
    $("#op-count").textContent = `(${shown.length} of ${connections.length}${capped})`;
    $("#op-table").dataset.loaded = "true";
  }

  function renderDeactivated() {
    const box = $("#op-deactivated");
    if (!deactivated.size) return box.replaceChildren();
    box.replaceChildren(
      "Deactivated from this page: ",
      ...[...deactivated].map((u) => {
        const b = el("button", { type: "button", class: "small", "data-activate": u }, `activate ${u}`);
        b.addEventListener("click", () => act("activate", { user_id: u }));
        return b;
      }),
    );
  }

  /** Resolves true when the operator confirms in the dialog, false on cancel or Escape. */
  function confirmAction(text) {
    const dialog = $("#confirm-dialog");
    $("#confirm-text").textContent = text;
    return new Promise((resolve) => {
      const done = (ok) => {
        $("#confirm-ok").removeEventListener("click", yes);
        $("#confirm-cancel").removeEventListener("click", no);
        dialog.removeEventListener("cancel", no);
        dialog.close();
        resolve(ok);
      };
      const yes = () => done(true);
      const no = (e) => {
        e?.preventDefault?.();
        done(false);
      };
      $("#confirm-ok").addEventListener("click", yes);
      $("#confirm-cancel").addEventListener("click", no);
      dialog.addEventListener("cancel", no);
      dialog.showModal();
    });
  }

  async function act(action, target) {
    const user = String(target.user_id ?? "");
    const plan = {
      disconnect: [`Disconnect connection ${target.connection_id} of user ${user}? It is closed with 4003 (the client may reconnect).`, "DELETE", `/api/v1/connections/${encodeURIComponent(target.connection_id)}`],
      deactivate: [`Deactivate user ${user}? All their connections are closed with 4003 and new ones refused until activated.`, "POST", `/api/v1/users/${encodeURIComponent(user)}/deactivate`],
      activate: [`Activate user ${user}? They can connect again.`, "POST", `/api/v1/users/${encodeURIComponent(user)}/activate`],
    }[action];
    if (!user || !(await confirmAction(plan[0]))) return result(`${action} cancelled`, "cancelled");
    try {
      await apiCall(plan[1], plan[2], action === "disconnect" ? undefined : {});
      if (action === "deactivate") deactivated.add(user);
      if (action === "activate") deactivated.delete(user);
      renderDeactivated();
      result(`${action} ${action === "disconnect" ? target.connection_id : user}: done`, "ok");
      log("local", `operator: ${action}`, action === "disconnect" ? target.connection_id : user);
    } catch (err) {
      result(`${action} failed: ${err.message}`, "error");
    }
    refreshTable();
  }

  $("#op-filter").addEventListener("input", () => renderTable());
  $("#op-deactivate").addEventListener("click", () => act("deactivate", { user_id: $("#op-user").value.trim() }));
  $("#op-activate").addEventListener("click", () => act("activate", { user_id: $("#op-user").value.trim() }));

  return {
    history,
    charts,
    /** One sample: the answer of GET /api/v1/stats and the text of GET /metrics, taken at `at` (ms). */
    sample(at, stats, metricsText) {
      const metrics = parseMetrics(metricsText || "");
      lastMetrics = metrics;
      nodeId = stats.node_id ?? "";
      record(at, stats, readCounters(metrics));
      $("#op-need-key").hidden = true;
      if (!active) return;
      renderCluster(stats, metrics);
      drawCharts();
    },
    /** The operator tab was shown (true) or hidden. */
    setActive(on) {
      active = on;
      clearInterval(tableTimer);
      tableTimer = null;
      if (!on) return;
      refreshTable();
      tableTimer = setInterval(refreshTable, TABLE_EVERY_MS);
      if (previous) {
        renderCluster(previous.stats, lastMetrics);
        drawCharts();
      }
    },
    refreshTable,
  };
}

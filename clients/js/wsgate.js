// wsgate client: one ES module, no build step, no dependencies.
// Works in browsers and in Node 20+ (Node 20: run with --experimental-websocket,
// or pass a constructor such as the `ws` package's as the `WebSocket` option).
//
//   import { WsgateClient } from "@wsgate/client";
//   const client = new WsgateClient({ url: "https://gw.example.org", getToken: () => fetchToken() });
//   client.messageHandlers.set("upload.progress", (data) => bar(data.upload_id, data.progress));
//   client.connect();
//   await client.subscribe(["upload.progress", "upload.completed"]);

/** The 12 events a client may subscribe to (SPEC section 3). */
export const SUBSCRIBABLE_EVENTS = Object.freeze([
  "upload.progress",
  "upload.completed",
  "upload.error",
  "upload.cancelled",
  "review.updated",
  "review.created",
  "review.deleted",
  "system.notification",
  "system.maintenance",
  "user.status_changed",
  "file.processing",
  "file.ready",
]);

/** Close codes the gateway uses (SPEC section 3, SPEC-v2 section 6). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  CONNECTION_TIMEOUT: 4000,
  TOKEN_EXPIRED: 4001,
  DISCONNECTED_BY_SERVER: 4003,
  SLOW_CONSUMER: 4008,
  CONNECTION_AGED: 4009,
  UNAUTHORIZED: 4401,
  TOO_MANY_CONNECTIONS: 4429,
  SERVER_AT_CAPACITY: 4503,
});

const RETRY_ADVICE = ["none", "refresh", "backoff", "now"];

/**
 * The retry advice of a gateway close: its reason is compact JSON
 * `{"code", "retry", "retry_after"?, "dropped"?}` (SPEC-v2 section 6). Null for any other
 * reason (an older gateway, a proxy, a close the client detected itself).
 */
export function parseCloseReason(reason) {
  if (typeof reason !== "string" || !reason.startsWith("{")) return null;
  try {
    const r = JSON.parse(reason);
    return r && typeof r.code === "string" && RETRY_ADVICE.includes(r.retry) ? r : null;
  } catch {
    return null;
  }
}

/** Connection states, in the order a connection normally goes through them. */
export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

const OPEN = 1; // WebSocket.OPEN, without relying on a global

/** An error from the gateway (`type: "error"`) or from the client itself. */
export class WsgateError extends Error {
  constructor(code, message, data = {}, reply = undefined) {
    super(message || code);
    this.name = "WsgateError";
    /** e.g. RATE_LIMIT_EXCEEDED, INVALID_SUBSCRIPTION, or client-side TIMEOUT, CONNECTION_LOST, CLOSED, QUEUE_OVERFLOW */
    this.code = code;
    /** the error's whole `data` object */
    this.data = data || {};
    /** seconds to wait, for RATE_LIMIT_EXCEEDED */
    this.retryAfter = typeof this.data.retry_after === "number" ? this.data.retry_after : undefined;
    /** the error message as received, when it came from the server */
    this.reply = reply;
  }
}

const DEFAULTS = {
  url: undefined,
  token: undefined,
  getToken: undefined,
  auth: "subprotocol", // "subprotocol" | "query" | "path"
  // With getToken: ask for token.expiring (refresh=1) and answer it with auth.refresh on the
  // same connection (SPEC-v2 section 3), instead of being closed with 4001 and reconnecting.
  refreshToken: true,
  WebSocket: undefined,
  reconnect: true,
  backoffInitial: 500,
  backoffMax: 60000,
  backoffFactor: 2,
  maxFailedOpens: 8,
  reconnectOnKick: false,
  refusal: "close", // "close": ask for refusals as 4401/4429/4503 closes a browser can see; "http": v1
  shouldReconnect: undefined,
  openTimeout: 10000,
  pingInterval: 25000,
  deadTimeout: undefined, // default: 2.5 x pingInterval (0 when pings are off)
  requestTimeout: 10000,
  queueLimit: 100,
  stableAfter: 5000,
  random: Math.random,
  // History and recovery (SPEC-v2 section 2): reconnect with resume=1 and the last positions.
  recovery: true,
  cache: true, // ask for the last values (running uploads' progress) of streams not recovered
  onRecoveryFailed: undefined, // (stream, reason, position) => void: refetch that state from the backend
  dedupWindow: 1000, // ids of recorded events remembered to drop a second copy
};

let idCounter = 0;
function newId(prefix) {
  idCounter = (idCounter + 1) % 1e9;
  return `${prefix}_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}${idCounter.toString(36)}`;
}

function defaultBaseUrl() {
  const loc = globalThis.location;
  if (loc && loc.host) return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}`;
  return undefined;
}

/**
 * Turn what the app gave into the endpoint URL: http(s) becomes ws(s), and a
 * URL with no path gets `/api/v1/ws`.
 */
export function endpointUrl(url) {
  const base = url || defaultBaseUrl();
  if (!base) throw new TypeError("wsgate: no url given and no location to derive one from");
  const u = new URL(base, globalThis.location ? globalThis.location.href : undefined);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "" || u.pathname === "/") u.pathname = "/api/v1/ws";
  u.hash = "";
  return u.toString();
}

/**
 * A reconnecting client for the wsgate WebSocket endpoint.
 *
 * Lifecycle events (subscribe with `on`): `state` ({state, previous}),
 * `connecting` ({attempt}), `open` ({attempt}), `established` (connection.established data),
 * `closed` ({code, reason, wasClean, willReconnect, opened}), `reconnecting` ({delay, attempt, code, reason}),
 * `giveup` ({code, reason, failedOpens}), `message` (every server message), `sent` (every message written),
 * `resubscribed` (confirmation data after a reconnect), `error` (WsgateError not tied
 * to a request), `dropped` ({message}: a queued message pushed out of the full queue), `latency` ({rtt}),
 * `resumed` (the `resumed` data after a (re)connect, before the replayed events), `recoveryFailed`
 * ({stream, reason, position}: refetch that stream's state; also the onRecoveryFailed option),
 * `refreshed` ({expires_at, expires_in}: the connection's token was renewed in-band). A failed
 * in-band refresh is an `error` (TOKEN_INVALID, TOKEN_SUB_MISMATCH, TOKEN_ERROR, TIMEOUT, ...)
 * and the connection keeps its old token until its 4001.
 *
 * Message handlers per type, as in the seed client: `client.messageHandlers.set(type, (data, message) => ...)`,
 * or `client.onMessage(type, fn)` which allows several and returns a remover.
 */
export class WsgateClient {
  constructor(options = {}) {
    if (typeof options === "string") options = { token: options };
    this.options = { ...DEFAULTS, ...options };
    const o = this.options;
    if (o.deadTimeout === undefined) o.deadTimeout = o.pingInterval > 0 ? Math.round(o.pingInterval * 2.5) : 0;
    if (!["subprotocol", "query", "path"].includes(o.auth)) throw new TypeError(`wsgate: unknown auth mode ${o.auth}`);
    if (!["close", "http"].includes(o.refusal)) throw new TypeError(`wsgate: unknown refusal mode ${o.refusal}`);
    endpointUrl(o.url); // throws now, not later inside a reconnect, when there is no usable URL

    /** seed-compatible: one handler per message type, called with (data, message) */
    this.messageHandlers = new Map();
    /** the events this client wants; re-sent after every reconnect */
    this.subscriptions = new Set();
    /** what the server last confirmed, sorted */
    this.confirmedSubscriptions = [];
    this.state = State.IDLE;
    this.connectionId = null;
    this.userId = null;
    /** {code, reason, wasClean, advice, refusal} of the last socket close: `advice` is the parsed
     * reason ({code, retry, retry_after?, dropped?}) or null, `refusal` the server's error
     * ({code, message, retry_after?}) when the upgrade was refused by close */
    this.lastClose = null;
    /** round-trip time of the last application ping, in ms */
    this.latency = null;
    /** the connection's token `exp` (RFC 3339) as the server last said, or null */
    this.tokenExpiresAt = null;

    this._listeners = new Map();
    this._typeListeners = new Map();
    this._ws = null;
    this._gen = 0; // bumps on every socket (re)creation and on close(): stale callbacks compare it
    this._attempt = 0; // backoff exponent; reset once a connection is established
    this._failedOpens = 0; // consecutive attempts that never reached open
    this._queue = []; // [{id, text}] waiting for an open socket
    this._pending = new Map(); // id -> {resolve, reject, timer, sent}
    this._resubWaiters = []; // subscribe() calls made while not open
    this._pingIds = new Map(); // pingId -> sent at
    this._timers = { reconnect: null, open: null, ping: null, dead: null, resub: null, errclose: null };
    this._wantOpen = false;
    this._openedAt = 0;
    this._refreshing = null; // the in-band token refresh in flight, if any
    this._token = null; // the token the current connection holds (opened with, or refreshed to)
    this._established = false; // connection.established seen on the current socket
    this._refusal = null; // the `error` a refused socket got before its close
    this._initRecovery();
  }

  // ---------------------------------------------------------------- events

  /** Listen to a lifecycle event; returns a function that removes the listener. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
  }

  /** Resolve on the next occurrence of a lifecycle event. */
  once(event) {
    return new Promise((resolve) => {
      const off = this.on(event, (v) => {
        off();
        resolve(v);
      });
    });
  }

  /** Add a handler for one server message type; returns a remover. */
  onMessage(type, fn) {
    if (!this._typeListeners.has(type)) this._typeListeners.set(type, new Set());
    this._typeListeners.get(type).add(fn);
    return () => {
      const set = this._typeListeners.get(type);
      if (set) set.delete(fn);
    };
  }

  _emit(event, value) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  _setState(state, detail) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, ...detail });
    this._emit(state, detail || {});
  }

  // ---------------------------------------------------------------- lifecycle

  /** Open the connection (and keep it open until close()). Safe to call again after a give-up. */
  connect() {
    if (this._wantOpen && this.state !== State.CLOSED) return this;
    this._wantOpen = true;
    this._watchOnline(true);
    this._failedOpens = 0;
    this._attempt = 0;
    this._open();
    return this;
  }

  /**
   * Close for good: no reconnect, every timer cleared, pending requests rejected with CLOSED,
   * the send queue dropped. connect() may be called again later.
   */
  close(code = 1000, reason = "client closed") {
    this._wantOpen = false;
    this._watchOnline(false);
    this._gen++;
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      this._detach(ws);
      try {
        ws.close(code, reason);
      } catch {
        try {
          ws.close();
        } catch {}
      }
    }
    const err = new WsgateError("CLOSED", "client closed");
    this._rejectAll(err, true);
    this._queue = [];
    const was = this.state;
    if (was !== State.CLOSED && was !== State.IDLE) {
      this.lastClose = { code, reason, wasClean: true };
      this._setState(State.CLOSED, { code, reason, wasClean: true, willReconnect: false, byClient: true });
    } else {
      this.state = State.CLOSED;
    }
  }

  /** True while a socket is open. */
  get isOpen() {
    return this.state === State.OPEN && !!this._ws && this._ws.readyState === OPEN;
  }

  async _open() {
    const gen = ++this._gen;
    this._clearTimers();
    this._setState(State.CONNECTING, { attempt: this._attempt });
    let token;
    try {
      token = this.options.getToken ? await this.options.getToken() : this.options.token;
    } catch (e) {
      if (gen !== this._gen) return;
      this._emit("error", new WsgateError("TOKEN_ERROR", `getToken failed: ${e && e.message ? e.message : e}`));
      this._afterClose({ code: 1006, reason: "getToken failed", wasClean: false }, false);
      return;
    }
    if (gen !== this._gen) return; // close() or another connect happened meanwhile
    if (!token) {
      this._emit("error", new WsgateError("TOKEN_ERROR", "no token"));
      this._afterClose({ code: 1006, reason: "no token", wasClean: false }, false);
      return;
    }
    const WS = this.options.WebSocket || globalThis.WebSocket;
    if (!WS) {
      this._wantOpen = false;
      this._watchOnline(false);
      this._emit("error", new WsgateError("NO_WEBSOCKET", "no WebSocket constructor: pass the WebSocket option, or run Node 20 with --experimental-websocket"));
      this._setState(State.CLOSED, { code: 1006, reason: "no WebSocket", willReconnect: false });
      return;
    }
    this._token = token;
    let url = endpointUrl(this.options.url);
    let protocols;
    if (this.options.auth === "subprotocol") protocols = ["wsgate.v1", `bearer.${token}`];
    else if (this.options.auth === "query") url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
    else url = url.replace(/\/?(\?|$)/, `/${encodeURIComponent(token)}$1`);
    if (this.options.getToken && this.options.refreshToken) url += (url.includes("?") ? "&" : "?") + "refresh=1";
    if (this.options.refusal === "close") url += (url.includes("?") ? "&" : "?") + "refusal=close";
    this._established = false;
    this._refusal = null;
    this._resumePending = this._wantsResume();
    if (this._resumePending) url += (url.includes("?") ? "&" : "?") + "resume=1";

    let ws;
    try {
      ws = protocols ? new WS(url, protocols) : new WS(url);
    } catch (e) {
      this._emit("error", new WsgateError("CONNECT_ERROR", `cannot create WebSocket: ${e && e.message ? e.message : e}`));
      this._afterClose({ code: 1006, reason: String(e && e.message ? e.message : e), wasClean: false }, false);
      return;
    }
    this._ws = ws;
    let opened = false;

    if (this.options.openTimeout > 0) {
      this._timers.open = setTimeout(() => {
        if (gen !== this._gen || opened) return;
        this._abandon(ws, 1006, `no open within ${this.options.openTimeout}ms`, false);
      }, this.options.openTimeout);
    }

    ws.onopen = () => {
      if (gen !== this._gen) return;
      opened = true;
      clearTimeout(this._timers.open);
      this._timers.open = null;
      this._openedAt = Date.now();
      this._setState(State.OPEN, { attempt: this._attempt });
      this._startKeepalive();
      // A socket that may be a refusal (error, then 4401/4429/4503) gets nothing before the
      // server has said connection.established; with resume=1 the first message must be the
      // resume, which waits for it too.
      if (this.options.refusal !== "close" && !this._resumePending) this._accepted();
    };
    ws.onmessage = (ev) => {
      if (gen !== this._gen) return;
      this._received(ev.data);
    };
    ws.onerror = () => {
      // Browsers say nothing useful here and a close event (1006) follows. Node 20's WebSocket
      // fires no close event after a refused handshake (a non-101 answer), so a socket that
      // failed before opening is given up at once, and an open one if no close follows soon.
      if (gen !== this._gen) return;
      if (!opened) {
        this._abandon(ws, 1006, "connection failed", false);
        return;
      }
      clearTimeout(this._timers.errclose);
      this._timers.errclose = setTimeout(() => {
        if (this._ws === ws) this._abandon(ws, 1006, "connection error", true);
      }, 1000);
    };
    ws.onclose = (ev) => {
      if (gen !== this._gen) return;
      this._detach(ws);
      this._ws = null;
      const reason = ev.reason || "";
      const info = { code: ev.code, reason, wasClean: !!ev.wasClean, advice: parseCloseReason(reason), refusal: this._refusal };
      // A socket refused by close opened, but never was a connection.
      this._afterClose(info, opened && (this._established || this.options.refusal !== "close"));
    };
  }

  /** The server took the connection (an open socket, or connection.established when refusals close). */
  _accepted() {
    this._failedOpens = 0;
    this._resubscribe();
    this._flushQueue();
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
  }

  /** Drop a socket that we no longer trust, without waiting for its close handshake. */
  _abandon(ws, code, reason, opened) {
    this._gen++;
    this._detach(ws);
    if (this._ws === ws) this._ws = null;
    try {
      ws.close(1000, reason.slice(0, 120));
    } catch {
      try {
        ws.close();
      } catch {}
    }
    this._afterClose({ code, reason, wasClean: false }, opened);
  }

  _afterClose(info, opened) {
    this._clearTimers();
    this.lastClose = info;
    if (!opened) this._failedOpens++;
    // A connection that stayed up a while was a good one: the next reconnect starts from a short
    // delay. One that drops at once (closed for abuse, 1008, or as a slow consumer, 4008, again and
    // again) keeps climbing the backoff.
    else if (Date.now() - this._openedAt >= this.options.stableAfter) this._attempt = 0;
    // Requests already on the wire will get no reply on the next connection.
    for (const [id, p] of this._pending) {
      if (p.sent) {
        this._pending.delete(id);
        clearTimeout(p.timer);
        p.reject(new WsgateError("CONNECTION_LOST", `connection closed (${info.code}) before a reply`));
      }
    }
    this._pingIds.clear();
    const decision = this._decideReconnect(info, opened);
    const detail = { ...info, opened, willReconnect: decision, failedOpens: this._failedOpens };
    if (!decision) {
      this._wantOpen = false;
      this._watchOnline(false);
      this._rejectAll(new WsgateError("CLOSED", `connection closed (${info.code}${info.reason ? " " + info.reason : ""}) and not reconnecting`), true);
      this._queue = [];
      this._setState(State.CLOSED, detail);
      this._emit("giveup", detail);
      return;
    }
    this._emit("closed", detail); // a per-socket close while we go on reconnecting
    const delay = this._reconnectDelay(info, opened);
    this._setState(State.RECONNECTING, { delay, attempt: this._attempt, code: info.code, reason: info.reason });
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      if (this._wantOpen) this._open();
    }, delay);
  }

  /** In a browser, a reconnect waiting for its backoff goes at once when the network comes back. */
  _watchOnline(on) {
    const target = globalThis.window;
    if (!target || typeof target.addEventListener !== "function") return;
    if (!this._onOnline)
      this._onOnline = () => {
        if (this._wantOpen && this.state === State.RECONNECTING) {
          clearTimeout(this._timers.reconnect);
          this._timers.reconnect = null;
          this._open();
        }
      };
    if (on) target.addEventListener("online", this._onOnline);
    else target.removeEventListener("online", this._onOnline);
  }

  _decideReconnect(info, opened) {
    const o = this.options;
    if (!this._wantOpen || !o.reconnect) return false;
    if (typeof o.shouldReconnect === "function") {
      const v = o.shouldReconnect({ ...info, opened, failedOpens: this._failedOpens });
      if (v === true || v === false) return v;
    }
    const advice = info.advice;
    if (info.code === CloseCode.DISCONNECTED_BY_SERVER && !o.reconnectOnKick) return false;
    if (advice && advice.retry === "none" && info.code !== CloseCode.DISCONNECTED_BY_SERVER) return false;
    // A new token is the only way on; a fixed token would be refused the same way again.
    if (advice && advice.retry === "refresh" && typeof o.getToken !== "function") return false;
    if (this._failedOpens >= o.maxFailedOpens) return false;
    return true;
  }

  /**
   * What the close advised (SPEC-v2 section 6): `now` a random 0-1 s; `refresh` at once (a
   * refusal chain backs off from its second refusal on); `backoff` at least `retry_after`
   * (1 s if absent), then full jitter. Without advice, full jitter.
   */
  _reconnectDelay(info, opened) {
    const advice = info.advice;
    if (advice && advice.retry === "now") {
      this._attempt = 0;
      return Math.floor(this.options.random() * 1000);
    }
    if (advice && advice.retry === "refresh" && (opened || this._failedOpens <= 1)) return 0;
    const jitter = this._backoff();
    if (advice && advice.retry === "backoff") {
      const floor = typeof advice.retry_after === "number" && advice.retry_after >= 0 ? advice.retry_after : 1;
      return Math.max(Math.ceil(floor * 1000), jitter);
    }
    return jitter;
  }

  /** Full jitter: uniform in [0, min(max, initial * factor^attempt)]. */
  _backoff() {
    const o = this.options;
    const cap = Math.min(o.backoffMax, o.backoffInitial * Math.pow(o.backoffFactor, this._attempt));
    this._attempt++;
    return Math.floor(o.random() * cap);
  }

  _clearTimers() {
    clearTimeout(this._timers.reconnect);
    clearTimeout(this._timers.open);
    clearInterval(this._timers.ping);
    clearTimeout(this._timers.dead);
    clearTimeout(this._timers.resub);
    clearTimeout(this._timers.errclose);
    this._timers = { reconnect: null, open: null, ping: null, dead: null, resub: null, errclose: null };
  }

  _startKeepalive() {
    const o = this.options;
    if (o.pingInterval > 0) {
      this._timers.ping = setInterval(() => this.ping().catch(() => {}), o.pingInterval);
    }
    this._armDeadTimer();
  }

  _armDeadTimer() {
    const o = this.options;
    if (!(o.deadTimeout > 0) || !this._ws) return;
    clearTimeout(this._timers.dead);
    const ws = this._ws;
    this._timers.dead = setTimeout(() => {
      if (this._ws !== ws) return;
      this._abandon(ws, 1006, `nothing received for ${o.deadTimeout}ms`, true);
    }, o.deadTimeout);
  }

  // ---------------------------------------------------------------- receiving

  _received(raw) {
    this._armDeadTimer();
    let msg;
    try {
      msg = JSON.parse(typeof raw === "string" ? raw : new TextDecoder().decode(raw));
    } catch {
      this._emit("error", new WsgateError("INVALID_JSON", "server sent a frame that is not JSON"));
      return;
    }
    if (!msg || typeof msg.type !== "string") return;
    if (!this._notePosition(msg)) return; // a second copy of a recorded event
    const data = msg.data || {};

    if (msg.type === "connection.established") {
      this.connectionId = data.connection_id ?? null;
      this.userId = data.user_id ?? null;
      const first = !this._established;
      this._established = true;
      this.tokenExpiresAt = data.expires_at ?? null;
      this._emit("established", data);
      if (first && (this.options.refusal === "close" || this._resumePending)) {
        if (this._resumePending) {
          this._failedOpens = 0;
          this._afterHold(data);
        } else this._accepted();
      }
    } else if (msg.type === "token.expiring") {
      if (this.options.getToken && this.options.refreshToken) this.refreshToken().catch(() => {});
    } else if (msg.type === "pong" && data.pingId != null && this._pingIds.has(data.pingId)) {
      this.latency = Date.now() - this._pingIds.get(data.pingId);
      this._pingIds.delete(data.pingId);
      this._emit("latency", { rtt: this.latency });
    } else if (msg.type === "subscription.confirmed" || msg.type === "unsubscription.confirmed") {
      if (Array.isArray(data.subscriptions)) this.confirmedSubscriptions = [...data.subscriptions];
      if (data.streams) this._adoptStreams(data.streams);
    } else if (msg.type === "resumed") {
      this._handleResumed(data);
    }

    const replyTo = msg.reply_to;
    if (replyTo != null && this._pending.has(replyTo)) {
      const p = this._pending.get(replyTo);
      this._pending.delete(replyTo);
      clearTimeout(p.timer);
      if (msg.type === "error") p.reject(new WsgateError(data.code || "ERROR", data.message, data, msg));
      else p.resolve(msg);
    } else if (msg.type === "error") {
      if (!this._established && this.options.refusal === "close") this._refusal = { ...data };
      this._emit("error", new WsgateError(data.code || "ERROR", data.message, data, msg));
    }

    this._emit("message", msg);
    const handler = this.messageHandlers.get(msg.type);
    if (handler) {
      try {
        handler(data, msg);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
    const set = this._typeListeners.get(msg.type);
    if (set)
      for (const fn of [...set]) {
        try {
          fn(data, msg);
        } catch (e) {
          queueMicrotask(() => {
            throw e;
          });
        }
      }
  }

  // ---------------------------------------------------------------- sending

  /**
   * Send a message, fire and forget. While not open it waits in a bounded queue (oldest dropped
   * first, see `queueLimit`). Adds `id` and `timestamp`; returns the id.
   */
  send(type, data = {}) {
    if (typeof type === "object" && type) return this.send(type.type, type.data);
    const id = newId("c");
    this._transmit(id, { type, data, timestamp: new Date().toISOString(), id });
    return id;
  }

  _transmit(id, msg) {
    const text = JSON.stringify(msg);
    if (this.isOpen && !this._resumePending) {
      this._write(id, text);
      return;
    }
    if (!this._wantOpen && this.state !== State.IDLE) throw new WsgateError("CLOSED", "client is closed; call connect() first");
    this._queue.push({ id, text });
    while (this._queue.length > this.options.queueLimit) {
      const dropped = this._queue.shift();
      const p = this._pending.get(dropped.id);
      if (p) {
        this._pending.delete(dropped.id);
        clearTimeout(p.timer);
        p.reject(new WsgateError("QUEUE_OVERFLOW", "dropped from the full send queue"));
      }
      this._emit("dropped", { message: JSON.parse(dropped.text) });
    }
  }

  _flushQueue() {
    const queue = this._queue;
    this._queue = [];
    for (const { id, text } of queue) {
      if (!this.isOpen) {
        this._queue.push({ id, text });
        continue;
      }
      this._write(id, text);
    }
  }

  _write(id, text) {
    this._ws.send(text);
    const p = this._pending.get(id);
    if (p) p.sent = true;
    if (this._listeners.has("sent") && this._listeners.get("sent").size) this._emit("sent", JSON.parse(text));
  }

  /**
   * Send a message and resolve with the server's reply (the message whose `reply_to` is this
   * message's id). Rejects with a WsgateError: the server's error code (RATE_LIMIT_EXCEEDED has
   * `retryAfter`), or TIMEOUT, CONNECTION_LOST, QUEUE_OVERFLOW, CLOSED.
   */
  request(type, data = {}, { timeout } = {}) {
    const id = newId("c");
    const ms = timeout ?? this.options.requestTimeout;
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null, sent: false };
      if (ms > 0)
        entry.timer = setTimeout(() => {
          this._pending.delete(id);
          this._queue = this._queue.filter((q) => q.id !== id);
          reject(new WsgateError("TIMEOUT", `no reply to ${type} within ${ms}ms`));
        }, ms);
      this._pending.set(id, entry);
      try {
        this._transmit(id, { type, data, timestamp: new Date().toISOString(), id });
      } catch (e) {
        this._pending.delete(id);
        clearTimeout(entry.timer);
        reject(e);
      }
    });
  }

  _rejectAll(err, includeQueued) {
    for (const [id, p] of this._pending) {
      if (!includeQueued && !p.sent) continue;
      this._pending.delete(id);
      clearTimeout(p.timer);
      p.reject(err);
    }
    const waiters = this._resubWaiters;
    this._resubWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  /**
   * Renew the connection's token in-band: `getToken()`, then `auth.refresh` on the open socket
   * (no reconnect; subscriptions and the connection id stay). Called on `token.expiring`; may be
   * called any time. Resolves with {expires_at, expires_in} and emits `refreshed`; on failure
   * emits `error` and rejects with the WsgateError (the old token stays until its 4001, after
   * which the usual reconnect fetches a new one). One refresh at a time: a call while one is in
   * flight gets that one.
   */
  refreshToken(opts) {
    if (this._refreshing) return this._refreshing;
    const gen = this._gen;
    const run = async () => {
      let token;
      try {
        token = this.options.getToken ? await this.options.getToken() : this.options.token;
      } catch (e) {
        throw new WsgateError("TOKEN_ERROR", `getToken failed: ${e && e.message ? e.message : e}`);
      }
      if (!token) throw new WsgateError("TOKEN_ERROR", "no token");
      // The token in use again (a getToken that caches): nothing to renew.
      if (token === this._token) throw new WsgateError("TOKEN_ERROR", "getToken returned the token already in use");
      if (gen !== this._gen || !this.isOpen) throw new WsgateError("CONNECTION_LOST", "the connection changed before the refresh was sent");
      const reply = await this.request("auth.refresh", { token }, opts);
      if (gen === this._gen) this._token = token;
      this.tokenExpiresAt = reply.data.expires_at ?? null;
      this._emit("refreshed", reply.data);
      return reply.data;
    };
    this._refreshing = run()
      .catch((e) => {
        const err = e instanceof WsgateError ? e : new WsgateError("TOKEN_ERROR", String(e && e.message ? e.message : e));
        this._emit("error", err);
        throw err;
      })
      .finally(() => {
        this._refreshing = null;
      });
    return this._refreshing;
  }

  /** Application ping; resolves with the pong's data plus `rtt` (ms). */
  async ping(opts) {
    const pingId = newId("p");
    const sentAt = Date.now();
    this._pingIds.set(pingId, sentAt);
    if (this._pingIds.size > 32) this._pingIds.delete(this._pingIds.keys().next().value);
    const reply = await this.request("ping", { pingId }, opts);
    return { ...reply.data, rtt: Date.now() - sentAt };
  }

  /** `heartbeat` -> `heartbeat.ack`. */
  heartbeat(opts) {
    return this.request("heartbeat", {}, opts);
  }

  /**
   * Add events to the subscriptions. They are kept and sent again after every reconnect.
   * Resolves with the confirmation's data ({events, subscriptions}); rejects on
   * INVALID_SUBSCRIPTION (the events are then forgotten), a rate limit, or a timeout.
   */
  async subscribe(events, opts) {
    events = [...new Set(Array.isArray(events) ? events : [events])];
    if (events.length === 0) throw new TypeError("subscribe: no events");
    const added = events.filter((e) => !this.subscriptions.has(e));
    for (const e of events) this.subscriptions.add(e);
    if (!this.isOpen) {
      if (!this._wantOpen && this.state !== State.IDLE) throw new WsgateError("CLOSED", "client is closed; call connect() first");
      // Sent as part of the resubscribe when the connection opens.
      return new Promise((resolve, reject) => this._resubWaiters.push({ resolve, reject, events: added }));
    }
    try {
      const reply = await this.request("subscribe", { events }, opts);
      return reply.data;
    } catch (e) {
      if (e.code === "INVALID_SUBSCRIPTION") for (const ev of added) this.subscriptions.delete(ev);
      if (e.code === "CONNECTION_LOST" && this._wantOpen)
        // The events stay wanted; the resubscribe on the next connection answers this call.
        return new Promise((resolve, reject) => this._resubWaiters.push({ resolve, reject, events: added }));
      throw e;
    }
  }

  /** Remove events from the subscriptions; resolves with the confirmation's data. */
  async unsubscribe(events, opts) {
    events = [...new Set(Array.isArray(events) ? events : [events])];
    if (events.length === 0) throw new TypeError("unsubscribe: no events");
    for (const e of events) this.subscriptions.delete(e);
    if (!this.isOpen) {
      // The next connection simply won't subscribe to them.
      this.confirmedSubscriptions = this.confirmedSubscriptions.filter((e) => !events.includes(e));
      return { events, subscriptions: [...this.subscriptions].sort(), pending: true };
    }
    try {
      const reply = await this.request("unsubscribe", { events }, opts);
      return reply.data;
    } catch (e) {
      // The next connection will not subscribe to them: done as far as the app is concerned.
      if (e.code === "CONNECTION_LOST" && this._wantOpen) return { events, subscriptions: [...this.subscriptions].sort(), pending: true };
      throw e;
    }
  }

  /** `upload.cancel` -> `upload.cancel.acknowledged`. */
  async cancelUpload(uploadId, opts) {
    const reply = await this.request("upload.cancel", { upload_id: uploadId }, opts);
    return reply.data;
  }

  async _resubscribe() {
    const waiters = this._resubWaiters;
    this._resubWaiters = [];
    const events = [...this.subscriptions];
    if (events.length === 0) {
      this.confirmedSubscriptions = [];
      for (const w of waiters) w.resolve({ events: [], subscriptions: [] });
      return;
    }
    const gen = this._gen;
    try {
      const reply = await this.request("subscribe", { events });
      for (const w of waiters) w.resolve(reply.data);
      this._emit("resubscribed", reply.data);
    } catch (e) {
      if (e.code === "INVALID_SUBSCRIPTION" && Array.isArray(e.data.invalid_events)) {
        // As with a direct subscribe, a call naming an unknown event changes nothing: forget all
        // of its events (and the bad ones), and try once more with the rest.
        const bad = (w) => w.events.some((ev) => e.data.invalid_events.includes(ev));
        for (const ev of e.data.invalid_events) this.subscriptions.delete(ev);
        for (const w of waiters)
          if (bad(w)) {
            for (const ev of w.events) this.subscriptions.delete(ev);
            w.reject(e);
          }
        const rest = waiters.filter((w) => !bad(w));
        if (gen === this._gen && this.isOpen) {
          this._resubWaiters.push(...rest);
          return this._resubscribe();
        }
        this._resubWaiters.push(...rest);
        return;
      }
      if (e.code === "CONNECTION_LOST" || e.code === "TIMEOUT") {
        // Keep the waiters for the next connection (which resubscribes anyway).
        if (this._wantOpen) {
          this._resubWaiters.push(...waiters);
          return;
        }
      }
      if (e.code === "RATE_LIMIT_EXCEEDED" && gen === this._gen && this._wantOpen) {
        this._resubWaiters.push(...waiters);
        clearTimeout(this._timers.resub);
        this._timers.resub = setTimeout(() => {
          this._timers.resub = null;
          if (gen === this._gen && this.isOpen) this._resubscribe();
        }, (e.retryAfter || 1) * 1000);
        this._emit("error", e);
        return;
      }
      for (const w of waiters) w.reject(e);
      this._emit("error", e);
    }
  }

  // ---------------------------------------------------------------- recovery (SPEC-v2 section 2)
  //
  // Kept apart from the connect/reconnect path on purpose: that path only asks _wantsResume()
  // for the URL and hands connection.established to _afterHold().

  _initRecovery() {
    /** stream name -> {epoch, offset}: the last position seen on each stream */
    this.positions = new Map();
    /** the data of the last `resumed` reply, or null */
    this.lastRecovery = null;
    this._resumePending = false; // this socket was opened with resume=1 and has not sent its first message
    this._seenIds = new Set(); // ids of recorded events, oldest first, at most dedupWindow
  }

  /**
   * resume=1 on every socket while recovery is on, even after a server without history: the
   * next one (a rolling deploy) may have it, and `features` tells only after the upgrade.
   */
  _wantsResume() {
    return !!this.options.recovery;
  }

  /**
   * Bookkeeping for one incoming message: a recorded event (one with `stream`) moves its stream's
   * position and is remembered by id. Returns false for a second copy of an event already
   * delivered (a replay or cached copy overlapping what arrived live), which is then dropped.
   */
  _notePosition(msg) {
    const s = msg.stream;
    if (!s || typeof s.name !== "string" || msg.id == null) return true;
    if (this._seenIds.has(msg.id)) return false;
    this._seenIds.add(msg.id);
    while (this._seenIds.size > Math.max(1, this.options.dedupWindow)) this._seenIds.delete(this._seenIds.values().next().value);
    // A cached copy is an older event re-sent as a last value: its offset is neither progress
    // nor a gap, so it leaves the position alone (the resumed entry set it to the top).
    if (!msg.cached) this._advancePosition(s.name, s.epoch, s.offset);
    return true;
  }

  _advancePosition(name, epoch, offset, force = false) {
    if (typeof epoch !== "string" || !epoch || !Number.isInteger(offset)) return; // no epoch: nothing to recover from
    const cur = this.positions.get(name);
    if (force || !cur || cur.epoch !== epoch || offset > cur.offset) this.positions.set(name, { epoch, offset });
  }

  /**
   * `streams` of `resumed` / `subscription.confirmed`: a stream that was not recovered carries on
   * from the top the server gives; one given no position starts there; a recovered one moves
   * with its replayed events (so a drop in the middle of a replay loses nothing).
   */
  _adoptStreams(streams) {
    for (const [name, e] of Object.entries(streams || {})) {
      if (!e || e.recovered === true) continue;
      this._advancePosition(name, e.epoch, e.offset, e.recovered === false);
    }
  }

  /** The `resume` message's data: user, broadcast and every wanted event with its position. */
  _buildResume() {
    const pos = (name) => {
      const p = this.positions.get(name);
      return p ? { epoch: p.epoch, offset: p.offset } : null;
    };
    const events = {};
    for (const ev of [...this.subscriptions].sort()) events[ev] = pos(`event:${ev}`);
    return { user: pos(`user:${this.userId}`), broadcast: pos("broadcast"), events, cache: !!this.options.cache };
  }

  /** The positions a resume gives, by stream name. */
  static _givenPositions(data, userId) {
    const given = {};
    if (data.user) given[`user:${userId}`] = data.user;
    if (data.broadcast) given.broadcast = data.broadcast;
    for (const [ev, p] of Object.entries(data.events || {})) if (p) given[`event:${ev}`] = p;
    return given;
  }

  /** connection.established on a resume=1 socket: send the resume first, or end the hold the v1 way. */
  _afterHold(established) {
    this._resumePending = false;
    const features = Array.isArray(established.features) ? established.features : [];
    if (features.includes("recovery")) {
      this._resume();
      this._flushQueue();
      return;
    }
    // History off (--history-size 0): no resume. Any first message ends the hold; send one if
    // neither the resubscribe nor the queue would.
    const quiet = this.subscriptions.size === 0 && this._queue.length === 0;
    this._resubscribe();
    this._flushQueue();
    if (quiet) this.send("heartbeat");
  }

  /** Send `resume` (it also subscribes) and settle what a resubscribe would have settled. */
  async _resume() {
    const gen = this._gen;
    const waiters = this._resubWaiters;
    this._resubWaiters = [];
    const data = this._buildResume();
    const given = WsgateClient._givenPositions(data, this.userId);
    try {
      const reply = await this.request("resume", data);
      const conf = { events: Object.keys(data.events), subscriptions: reply.data.subscriptions || [] };
      for (const w of waiters) w.resolve(conf);
      if (conf.events.length) this._emit("resubscribed", conf);
    } catch (e) {
      // Nothing was subscribed or replayed: subscribe the v1 way (which sorts out unknown events).
      this._resubWaiters.unshift(...waiters);
      if (e.code === "CONNECTION_LOST" || e.code === "CLOSED") return; // the next connection resumes again
      if (gen === this._gen && this.isOpen) this._resubscribe();
      for (const [stream, p] of Object.entries(given)) this._recoveryFailed(stream, e.code, p);
      this._emit("error", e);
    }
  }

  /** The `resumed` reply: adopt the tops, tell the app which streams it must refetch. */
  _handleResumed(data) {
    this.lastRecovery = data;
    if (Array.isArray(data.subscriptions)) this.confirmedSubscriptions = [...data.subscriptions];
    const streams = data.streams || {};
    for (const [name, e] of Object.entries(streams)) {
      if (e && e.recovered === false) this._recoveryFailed(name, e.reason || "UNKNOWN", this.positions.get(name) || null);
    }
    this._adoptStreams(streams);
    this._emit("resumed", data);
  }

  _recoveryFailed(stream, reason, position) {
    this._emit("recoveryFailed", { stream, reason, position });
    const fn = this.options.onRecoveryFailed;
    if (typeof fn !== "function") return;
    try {
      fn(stream, reason, position);
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }
}

/** Shorthand: create a client and connect it. */
export function connect(options) {
  return new WsgateClient(options).connect();
}

export default WsgateClient;

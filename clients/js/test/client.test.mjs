// Node tests of clients/js/wsgate.js against the real wsgate binary.
// Run: node --experimental-websocket --test test/client.test.mjs   (or test/run.sh)
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { WsgateClient, WsgateError, SUBSCRIBABLE_EVENTS, endpointUrl, connect } from "../wsgate.js";
import { startServer, mintToken, uniqueUser, api, waitFor, sleep, freezableProxy, HERE } from "./helpers.mjs";

if (typeof globalThis.WebSocket !== "function") {
  throw new Error("no global WebSocket: run node with --experimental-websocket (Node 20) or use Node 22+");
}

/** A client whose lifecycle events are recorded, closed by the test's cleanup. */
function makeClient(t, server, opts = {}) {
  const client = new WsgateClient({ url: server.httpUrl, pingInterval: 0, backoffInitial: 100, backoffMax: 500, ...opts });
  client.events = [];
  for (const ev of ["connecting", "open", "closed", "reconnecting", "established", "giveup", "resubscribed"])
    client.on(ev, (d) => client.events.push({ ev, ...(d || {}) }));
  client.received = [];
  client.on("message", (m) => client.received.push(m));
  t.after(() => client.close());
  return client;
}

describe("pure helpers", () => {
  test("endpointUrl maps http to ws and adds /api/v1/ws", () => {
    assert.equal(endpointUrl("http://127.0.0.1:9"), "ws://127.0.0.1:9/api/v1/ws");
    assert.equal(endpointUrl("https://gw.example.org/"), "wss://gw.example.org/api/v1/ws");
    assert.equal(endpointUrl("ws://h:1/custom/ws"), "ws://h:1/custom/ws");
  });

  test("backoff is full jitter under an exponential cap", () => {
    const hi = new WsgateClient({ url: "ws://x", token: "t", backoffInitial: 100, backoffMax: 1000, random: () => 0.999999 });
    const caps = Array.from({ length: 7 }, () => hi._backoff());
    assert.deepEqual(caps, [99, 199, 399, 799, 999, 999, 999]);
    const lo = new WsgateClient({ url: "ws://x", token: "t", random: () => 0 });
    assert.equal(lo._backoff(), 0);
  });

  test("the backoff starts over only after a connection that stayed open for stableAfter", () => {
    const c = new WsgateClient({ url: "ws://x", token: "t", reconnect: false, stableAfter: 1000 });
    c._wantOpen = true;
    c._attempt = 5;
    c._openedAt = Date.now() - 10; // dropped right after opening: keep climbing
    c._afterClose({ code: 1008, reason: "", wasClean: true }, true);
    assert.equal(c._attempt, 5);
    c._wantOpen = true;
    c._openedAt = Date.now() - 5000; // a good connection
    c._afterClose({ code: 1001, reason: "", wasClean: true }, true);
    assert.equal(c._attempt, 0);
  });

  test("SUBSCRIBABLE_EVENTS lists the 12 events of the SPEC", () => {
    assert.equal(SUBSCRIBABLE_EVENTS.length, 12);
    assert.ok(SUBSCRIBABLE_EVENTS.includes("upload.progress") && SUBSCRIBABLE_EVENTS.includes("file.ready"));
  });
});

describe("against a running wsgate", () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test("connects with the bearer subprotocol, gets connection.established", async (t) => {
    const user = uniqueUser();
    const client = makeClient(t, server, { token: mintToken(user) });
    const established = client.once("established");
    client.connect();
    const data = await established;
    assert.equal(client.state, "open");
    assert.equal(data.user_id, user);
    assert.ok(data.connection_id);
    assert.equal(client.connectionId, data.connection_id);
    assert.deepEqual(
      client.events.map((e) => e.ev),
      ["connecting", "open", "established"],
    );
  });

  test("query and path token forms work too", async (t) => {
    for (const auth of ["query", "path"]) {
      const client = makeClient(t, server, { token: mintToken(uniqueUser()), auth });
      const established = client.once("established");
      client.connect();
      await established;
      client.close();
    }
  });

  test("the WebSocket option supplies the constructor (what Node 20 without the flag needs)", async (t) => {
    const made = [];
    class Counting extends globalThis.WebSocket {
      constructor(url, protocols) {
        super(url, protocols);
        made.push({ url, protocols });
      }
    }
    const token = mintToken(uniqueUser());
    const client = makeClient(t, server, { token, WebSocket: Counting });
    client.connect();
    await client.once("established");
    assert.equal(made.length, 1);
    assert.equal(made[0].url, `${server.wsUrl}/api/v1/ws?refusal=close&resume=1`, "refusal=close, and resume=1: the first message will be a resume");
    assert.deepEqual(made[0].protocols, ["wsgate.v1", `bearer.${token}`]);
  });

  test("ping resolves with the pong that carries reply_to and the pingId", async (t) => {
    const client = makeClient(t, server, { token: mintToken(uniqueUser()) });
    client.connect();
    await client.once("open");
    const pong = await client.ping();
    assert.ok(pong.pingId);
    assert.ok(typeof pong.rtt === "number");
    const pongMsg = client.received.find((m) => m.type === "pong");
    assert.ok(pongMsg.reply_to, "server reply carries reply_to");
    const ack = await client.heartbeat();
    assert.equal(ack.type, "heartbeat.ack");
  });

  test("subscribe, then receive a broadcast published to subscribers", async (t) => {
    const user = uniqueUser();
    const client = makeClient(t, server, { token: mintToken(user) });
    const other = makeClient(t, server, { token: mintToken(uniqueUser()) });
    client.connect();
    other.connect();
    const got = [];
    client.messageHandlers.set("review.created", (data, msg) => got.push({ data, msg }));
    const otherGot = [];
    other.messageHandlers.set("review.created", (data) => otherGot.push(data));
    const conf = await client.subscribe(["review.created", "upload.progress"]);
    assert.deepEqual(conf.subscriptions, ["review.created", "upload.progress"]);
    await waitFor(() => other.isOpen, { what: "other open" });

    const conns = await api(server, "GET", `/api/v1/connections?user_id=${user}`);
    assert.equal(conns.status, 200);
    assert.deepEqual([...conns.body[0].subscriptions].sort(), ["review.created", "upload.progress"]);

    const pub = await api(server, "POST", "/api/v1/events", { type: "review.created", data: { review_id: "r1" } });
    assert.equal(pub.status, 200, JSON.stringify(pub.body));
    assert.equal(pub.body.delivered, 1);
    await waitFor(() => got.length === 1, { what: "broadcast" });
    assert.equal(got[0].data.review_id, "r1");
    assert.ok(got[0].msg.id && got[0].msg.timestamp);
    await sleep(200);
    assert.equal(otherGot.length, 0, "a connection that did not subscribe gets nothing");

    const un = await client.unsubscribe(["upload.progress"]);
    assert.deepEqual(un.subscriptions, ["review.created"]);
  });

  test("an unknown event rejects with INVALID_SUBSCRIPTION and is forgotten", async (t) => {
    const client = makeClient(t, server, { token: mintToken(uniqueUser()) });
    client.connect();
    await assert.rejects(client.subscribe(["upload.progress", "no.such.event"]), (e) => {
      assert.ok(e instanceof WsgateError);
      assert.equal(e.code, "INVALID_SUBSCRIPTION");
      assert.deepEqual(e.data.invalid_events, ["no.such.event"]);
      return true;
    });
    assert.deepEqual([...client.subscriptions], []);
  });

  test("user-targeted events arrive without a subscription; an unknown type rejects", async (t) => {
    const user = uniqueUser();
    const client = makeClient(t, server, { token: mintToken(user) });
    client.connect();
    await client.once("resumed");
    const got = new Promise((resolve) => client.onMessage("file.ready", (data, msg) => resolve(msg)));
    const pub = await api(server, "POST", "/api/v1/events", { type: "file.ready", data: { file_id: "f" }, users: [user] });
    assert.equal(pub.body.delivered, 1);
    assert.equal((await got).type, "file.ready");
    // An unknown type gets an error reply carrying reply_to, which rejects the request.
    await assert.rejects(client.request("no.such.type", {}), (e) => e.code === "INVALID_MESSAGE_TYPE");
  });

  test("a deactivated user is closed with 4003 and the client does not retry", async (t) => {
    const user = uniqueUser("deact");
    const client = makeClient(t, server, { token: mintToken(user) });
    client.connect();
    await client.once("established");
    const giveup = client.once("giveup");
    const r = await api(server, "POST", `/api/v1/users/${user}/deactivate`);
    assert.equal(r.status, 204);
    const info = await giveup;
    assert.equal(info.code, 4003);
    assert.equal(client.state, "closed");
    assert.equal(client.lastClose.code, 4003);
    const connectingBefore = client.events.filter((e) => e.ev === "connecting").length;
    await sleep(800);
    assert.equal(client.events.filter((e) => e.ev === "connecting").length, connectingBefore, "no reconnect after 4003");
    await assert.rejects(client.request("ping", {}), (e) => e.code === "CLOSED");
    await api(server, "POST", `/api/v1/users/${user}/activate`);
  });

  test("with reconnectOnKick, a deactivated user's refusals stop after maxFailedOpens", async (t) => {
    const user = uniqueUser("deact2");
    // getToken: a refusal (4401, retry "refresh") is retried only with a token to refresh.
    const client = makeClient(t, server, { getToken: () => mintToken(user), reconnectOnKick: true, maxFailedOpens: 3, backoffInitial: 20, backoffMax: 50 });
    client.connect();
    await client.once("established");
    const giveup = client.once("giveup");
    await api(server, "POST", `/api/v1/users/${user}/deactivate`);
    const info = await giveup;
    assert.equal(info.failedOpens, 3);
    assert.equal(client.state, "closed");
    assert.equal(client.events.filter((e) => e.ev === "connecting").length, 1 + 3);
    // the app may ask again once the user is active
    await api(server, "POST", `/api/v1/users/${user}/activate`);
    client.connect();
    await client.once("established");
  });

  test("a rejected token: repeated refusals give up, getToken is asked every time", async (t) => {
    let calls = 0;
    const client = makeClient(t, server, {
      getToken: async () => {
        calls++;
        return mintToken(uniqueUser(), { secret: "wrong" });
      },
      maxFailedOpens: 4,
      backoffInitial: 10,
      backoffMax: 20,
    });
    const giveup = client.once("giveup");
    client.connect();
    const info = await giveup;
    assert.equal(info.failedOpens, 4);
    assert.equal(calls, 4);
  });

  test("a dead connection (nothing arrives) is detected and replaced", async (t) => {
    const proxy = await freezableProxy(server.port);
    t.after(() => proxy.close());
    const client = makeClient(t, { httpUrl: `http://127.0.0.1:${proxy.port}` }, { token: mintToken(uniqueUser()), pingInterval: 100, deadTimeout: 500 });
    client.connect();
    await client.once("established");
    const firstConn = client.connectionId;
    await client.subscribe(["system.maintenance"]);
    const closedP = client.once("closed");
    proxy.freezeAll();
    await assert.rejects(client.heartbeat({ timeout: 150 }), (e) => e.code === "TIMEOUT");
    const closed = await closedP;
    assert.equal(closed.code, 1006);
    assert.match(closed.reason, /nothing received/);
    await client.once("resubscribed");
    assert.equal(client.events.filter((e) => e.ev === "established").length, 2);
    assert.ok(firstConn);
  });

  test("close() leaves no timers: a node process exits on its own", async () => {
    const script = path.join(HERE, "fixtures", "close-exits.mjs");
    const child = spawn(process.execPath, ["--experimental-websocket", script], {
      env: { ...process.env, WSGATE_URL: server.httpUrl, WSGATE_TOKEN: mintToken(uniqueUser()) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const started = Date.now();
    const code = await new Promise((resolve) => {
      const kill = setTimeout(() => {
        child.kill("SIGKILL");
        resolve("hung");
      }, 8000);
      child.on("exit", (c) => {
        clearTimeout(kill);
        resolve(c);
      });
    });
    assert.equal(code, 0, `child: ${code}; out=${out} err=${err}`);
    assert.match(out, /closed cleanly/);
    assert.ok(Date.now() - started < 8000);
  });
});

describe("rate limits", () => {
  let server;
  before(async () => {
    server = await startServer({ args: ["--rate-limit-messages", "3", "--rate-limit-window", "60s"] });
  });
  after(async () => {
    await server?.stop();
  });

  test("the 4th message rejects with RATE_LIMIT_EXCEEDED and retry_after", async (t) => {
    // recovery: false, so that the 3 messages are the test's (a resume would be the first)
    const client = makeClient(t, server, { token: mintToken(uniqueUser("rl")), recovery: false });
    client.connect();
    await client.once("established");
    await client.ping();
    await client.ping();
    await client.heartbeat();
    const err = await client.ping().then(
      () => null,
      (e) => e,
    );
    assert.ok(err instanceof WsgateError, "4th message rejected");
    assert.equal(err.code, "RATE_LIMIT_EXCEEDED");
    assert.ok(Number.isInteger(err.retryAfter) && err.retryAfter >= 1, `retry_after ${err.retryAfter}`);
    assert.equal(err.data.retry_after, err.retryAfter);
    assert.equal(client.state, "open", "the connection stays open");
  });
});

describe("server restart underneath a connected client", () => {
  let server;
  after(async () => {
    await server?.stop();
  });

  test("reconnects on the same port, resubscribes, gets a subscribers-only broadcast, flushes the queue", async (t) => {
    server = await startServer();
    const port = server.port;
    const user = uniqueUser("restart");
    const tokens = [];
    const client = makeClient(t, server, {
      getToken: () => {
        const tok = mintToken(user, { claims: { n: tokens.length } });
        tokens.push(tok);
        return tok;
      },
      maxFailedOpens: 100,
    });
    client.connect();
    await client.subscribe(["system.maintenance", "review.updated"]);
    assert.equal(tokens.length, 1);
    const firstConn = client.connectionId;

    const closed = client.once("closed");
    await server.stop("SIGTERM");
    const info = await closed;
    assert.equal(info.code, 1001, `a shutting-down server closes with 1001, got ${info.code} ${info.reason}`);
    assert.equal(info.willReconnect, true);

    // While the server is down, a request waits in the send queue.
    const queued = client.heartbeat({ timeout: 20000 });
    await sleep(300);
    server = await startServer({ port });
    assert.equal(server.port, port);

    const resub = await waitFor(async () => {
      const r = await api(server, "GET", `/api/v1/connections?user_id=${user}`);
      return r.status === 200 && r.body.length === 1 && r.body[0].subscriptions.length === 2 && r.body[0];
    }, { timeout: 15000, what: "resubscription seen by the new server" });
    assert.deepEqual([...resub.subscriptions].sort(), ["review.updated", "system.maintenance"]);
    // (connection ids restart with the server, so count connection.established instead)
    assert.equal(client.events.filter((e) => e.ev === "established").length, 2);
    assert.ok(firstConn);
    assert.ok(tokens.length >= 2, "getToken asked again before the reconnect");
    assert.equal((await queued).type, "heartbeat.ack");

    const got = client.once("message");
    const pub = await api(server, "POST", "/api/v1/events", { type: "system.maintenance", data: { at: "soon" } });
    assert.equal(pub.status, 200);
    assert.equal(pub.body.delivered, 1);
    const msg = await got;
    assert.equal(msg.type, "system.maintenance");
    assert.equal(msg.data.at, "soon");
    assert.ok(client.events.some((e) => e.ev === "reconnecting"));
  });
});

test("connect() shorthand and a client closed before it ever opened", async () => {
  const client = connect({ url: "http://127.0.0.1:9", token: "x", maxFailedOpens: 100, backoffInitial: 10 });
  assert.equal(client.state, "connecting");
  client.close();
  assert.equal(client.state, "closed");
  await assert.rejects(client.request("ping"), (e) => e.code === "CLOSED");
});

test("the send queue is bounded while disconnected; close() rejects what is left", async () => {
  const client = new WsgateClient({ url: "http://127.0.0.1:9", token: "x", maxFailedOpens: 1000, backoffInitial: 50, queueLimit: 2 });
  const dropped = [];
  client.on("dropped", (d) => dropped.push(d.message.type));
  client.connect();
  const a = client.request("ping", {}, { timeout: 0 });
  const b = client.request("heartbeat", {}, { timeout: 0 });
  const c = client.request("heartbeat", {}, { timeout: 0 });
  await assert.rejects(a, (e) => e.code === "QUEUE_OVERFLOW");
  assert.deepEqual(dropped, ["ping"]);
  client.close();
  await assert.rejects(b, (e) => e.code === "CLOSED");
  await assert.rejects(c, (e) => e.code === "CLOSED");
});

describe("abrupt server death", () => {
  let server;
  after(async () => {
    await server?.stop();
  });

  test("SIGKILL: the client sees 1006, reconnects to the new server on the same port and resubscribes", async (t) => {
    server = await startServer();
    const port = server.port;
    const user = uniqueUser("killed");
    const client = makeClient(t, server, { token: mintToken(user), maxFailedOpens: 100 });
    client.connect();
    await client.subscribe(["review.deleted"]);
    const closed = client.once("closed");
    await server.stop("SIGKILL");
    const info = await closed;
    assert.equal(info.code, 1006);
    assert.equal(info.willReconnect, true);
    server = await startServer({ port });
    await client.once("resubscribed");
    const got = client.once("message");
    const pub = await api(server, "POST", "/api/v1/events", { type: "review.deleted", data: { review_id: "r9" } });
    assert.equal(pub.body.delivered, 1);
    assert.equal((await got).data.review_id, "r9");
  });
});

describe("token expiry while connected", () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test("a 4001 close is followed by a reconnect with a fresh token from getToken()", async (t) => {
    const user = uniqueUser("exp");
    let calls = 0;
    const client = makeClient(t, server, {
      getToken: () => mintToken(user, { ttl: ++calls === 1 ? 2 : 3600 }),
      refreshToken: false, // the reconnect path; the in-band refresh is tested below
    });
    client.connect();
    await client.subscribe(["file.ready"]);
    const closed = await client.once("closed");
    assert.equal(closed.code, 4001, `expected 4001 (token expired), got ${closed.code} ${closed.reason}`);
    assert.equal(closed.willReconnect, true);
    await client.once("resubscribed");
    assert.equal(calls, 2);
    assert.equal(client.state, "open");
  });
});

describe("in-band token refresh (SPEC-v2 section 3)", () => {
  let server;
  before(async () => {
    server = await startServer({ args: ["--token-expiring-notice", "1s"] });
  });
  after(async () => {
    await server?.stop();
  });

  test("token.expiring gets a new token from getToken() on the same connection: no reconnect, no missed event", { timeout: 30000 }, async (t) => {
    const user = uniqueUser("refresh");
    let calls = 0;
    let firstExp;
    const client = makeClient(t, server, {
      getToken: () => {
        calls += 1;
        if (calls === 1) {
          firstExp = Math.floor(Date.now() / 1000) + 3;
          return mintToken(user, { ttl: 3 });
        }
        return mintToken(user, { ttl: 3600 });
      },
    });
    const errors = [];
    client.on("error", (e) => errors.push(e));
    const established = client.once("established");
    client.connect();
    assert.equal(new Date((await established).expires_at).getTime(), firstExp * 1000, "expires_at is the token's exp");
    await client.subscribe(["file.ready"]);
    const id = client.connectionId;
    const before = client.once("message");
    assert.equal((await api(server, "POST", "/api/v1/events", { type: "file.ready", data: { n: 1 } })).body.delivered, 1);
    assert.equal((await before).data.n, 1);

    const refreshed = await client.once("refreshed");
    assert.equal(calls, 2, "getToken asked once more, for the refresh");
    assert.ok(refreshed.expires_in > 3000, `the new token's expires_in: ${refreshed.expires_in}`);
    assert.equal(client.tokenExpiresAt, refreshed.expires_at);
    // Let the first token's deadline pass (no event to wait for: nothing must happen).
    await sleep(Math.max(0, firstExp * 1000 + 1500 - Date.now()));
    const after = client.once("message");
    assert.equal((await api(server, "POST", "/api/v1/events", { type: "file.ready", data: { n: 2 } })).body.delivered, 1);
    assert.equal((await after).data.n, 2);

    assert.equal(client.connectionId, id, "the same connection");
    assert.deepEqual(client.events.filter((e) => ["closed", "reconnecting", "connecting"].includes(e.ev)).map((e) => e.ev), ["connecting"]);
    assert.deepEqual(errors, []);
    const listed = await api(server, "GET", `/api/v1/connections?user_id=${user}`);
    assert.deepEqual(listed.body.map((c) => c.connection_id), [id]);
    assert.equal(listed.body[0].token_expires_at, refreshed.expires_at);
    assert.deepEqual(client.received.filter((m) => m.type === "file.ready").map((m) => m.data.n), [1, 2], "each event once");
  });

  test("a refused refresh is surfaced as an error and the old token runs out (4001)", { timeout: 30000 }, async (t) => {
    const user = uniqueUser("refused");
    let calls = 0;
    const client = makeClient(t, server, {
      reconnect: false,
      getToken: () => (++calls === 1 ? mintToken(user, { ttl: 3 }) : mintToken(uniqueUser("other"))),
    });
    const error = new Promise((resolve) => client.on("error", resolve));
    const closed = client.once("closed");
    client.connect();
    const e = await error;
    assert.ok(e instanceof WsgateError);
    assert.equal(e.code, "TOKEN_SUB_MISMATCH");
    assert.equal((await closed).code, 4001);
    assert.equal(calls, 2);
  });
});

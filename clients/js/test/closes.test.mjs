// What clients/js/wsgate.js does on each close code's retry advice (SPEC-v2 section 6), against
// the real wsgate binary. Run: node --experimental-websocket --test test/closes.test.mjs
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { WsgateClient, parseCloseReason } from "../wsgate.js";
import { startServer, mintToken, uniqueUser, api, waitFor, sleep } from "./helpers.mjs";

/** A client whose lifecycle events are recorded, closed by the test's cleanup. */
function makeClient(t, server, opts = {}) {
  const client = new WsgateClient({ url: server.httpUrl, pingInterval: 0, backoffInitial: 100, backoffMax: 500, ...opts });
  client.events = [];
  for (const ev of ["connecting", "open", "closed", "reconnecting", "established", "giveup"])
    client.on(ev, (d) => client.events.push({ ev, at: Date.now(), ...(d || {}) }));
  t.after(() => client.close());
  return client;
}

async function withServer(t, args) {
  const server = await startServer({ args });
  t.after(() => server.stop());
  return server;
}

const count = (client, ev) => client.events.filter((e) => e.ev === ev).length;

describe("parseCloseReason", () => {
  test("reads the gateway's JSON reasons and nothing else", () => {
    assert.deepEqual(parseCloseReason('{"code":"SHUTDOWN","retry":"backoff","retry_after":2.5}'), { code: "SHUTDOWN", retry: "backoff", retry_after: 2.5 });
    assert.equal(parseCloseReason("server shutting down"), null);
    assert.equal(parseCloseReason('{"code":"X","retry":"sometimes"}'), null);
    assert.equal(parseCloseReason(""), null);
  });
});

describe("retry advice against a running wsgate", () => {
  test("4401 refusal (retry none possible: fixed token) is reported with its code and not retried", async (t) => {
    const server = await withServer(t, []);
    const client = makeClient(t, server, { token: mintToken(uniqueUser(), { secret: "wrong" }) });
    const giveup = client.once("giveup");
    client.connect();
    const info = await giveup;
    assert.equal(info.code, 4401);
    assert.equal(info.advice.code, "UNAUTHORIZED");
    assert.equal(info.advice.retry, "refresh");
    assert.equal(info.refusal.code, "UNAUTHORIZED");
    assert.equal(count(client, "connecting"), 1, "a fixed token is not sent again");
    assert.equal(count(client, "established"), 0);
    assert.equal(client.state, "closed");
  });

  test("4401 refusal with getToken: a new token at once, then backoff between repeated refusals", async (t) => {
    const server = await withServer(t, []);
    const user = uniqueUser("refused");
    let calls = 0;
    const client = makeClient(t, server, {
      getToken: () => (++calls === 1 ? mintToken(user, { secret: "wrong" }) : mintToken(user)),
    });
    client.connect();
    await client.once("established");
    assert.equal(calls, 2);
    const reconnecting = client.events.find((e) => e.ev === "reconnecting");
    assert.equal(reconnecting.code, 4401);
    assert.equal(reconnecting.delay, 0, "refresh reconnects at once");
  });

  test("4429 refusal waits at least retry_after before the next attempt", async (t) => {
    const server = await withServer(t, []);
    const user = uniqueUser("tabs");
    const tabs = [];
    for (let i = 0; i < 3; i++) {
      const c = makeClient(t, server, { token: mintToken(user) });
      c.connect();
      await c.once("established");
      tabs.push(c);
    }
    const fourth = makeClient(t, server, { token: mintToken(user) });
    fourth.connect();
    const r = await fourth.once("reconnecting");
    assert.equal(r.code, 4429);
    assert.ok(r.delay >= 5000, `delay ${r.delay} under retry_after 5 s`);
    assert.equal(fourth.lastClose.advice.retry_after, 5);
    assert.equal(fourth.lastClose.refusal.code, "TOO_MANY_CONNECTIONS");
    const stats = await api(server, "GET", "/api/v1/stats");
    assert.equal(stats.body.connections, 3, "the refused tab never counted");
  });

  test("4503 refusal on a full node backs off with retry_after", async (t) => {
    const server = await withServer(t, ["--max-connections", "1"]);
    const first = makeClient(t, server, { token: mintToken(uniqueUser()) });
    first.connect();
    await first.once("established");
    const second = makeClient(t, server, { token: mintToken(uniqueUser()) });
    second.connect();
    const r = await second.once("reconnecting");
    assert.equal(r.code, 4503);
    assert.ok(r.delay >= 5000, `delay ${r.delay}`);
  });

  test("4000 (retry now) reconnects within a second", async (t) => {
    const server = await withServer(t, ["--connection-timeout", "500ms"]);
    const client = makeClient(t, server, { token: mintToken(uniqueUser()) });
    client.connect();
    await client.once("established");
    const r = await client.once("reconnecting");
    assert.equal(r.code, 4000);
    assert.ok(r.delay >= 0 && r.delay < 1000, `delay ${r.delay}`);
    await client.once("established");
    assert.equal(client.lastClose.advice.code, "CONNECTION_TIMEOUT");
  });

  test("4009 (retry now, --max-connection-age) reconnects within a second", async (t) => {
    const server = await withServer(t, ["--max-connection-age", "1s"]);
    const client = makeClient(t, server, { token: mintToken(uniqueUser()) });
    client.connect();
    await client.once("established");
    const r = await client.once("reconnecting");
    assert.equal(r.code, 4009);
    assert.ok(r.delay < 1000, `delay ${r.delay}`);
    await client.once("established");
  });

  test("4001 (retry refresh) gets a new token and reconnects at once", async (t) => {
    const server = await withServer(t, []);
    const user = uniqueUser("exp");
    let calls = 0;
    // In-band refresh off: with it, token.expiring would renew the token and no 4001 would come.
    const client = makeClient(t, server, {
      refreshToken: false,
      getToken: () => mintToken(user, { ttl: ++calls === 1 ? 2 : 3600 }),
    });
    client.connect();
    await client.once("established");
    const r = await client.once("reconnecting");
    assert.equal(r.code, 4001);
    assert.equal(r.delay, 0);
    await client.once("established");
    assert.equal(calls, 2);
  });

  test("4003 DISCONNECTED (retry none) stops and reports", async (t) => {
    const server = await withServer(t, []);
    const client = makeClient(t, server, { token: mintToken(uniqueUser()) });
    client.connect();
    await client.once("established");
    const giveup = client.once("giveup");
    const r = await api(server, "DELETE", `/api/v1/connections/${client.connectionId}`);
    assert.equal(r.status, 204);
    const info = await giveup;
    assert.equal(info.code, 4003);
    assert.equal(info.advice.code, "DISCONNECTED");
    assert.equal(info.advice.retry, "none");
    await sleep(300);
    assert.equal(count(client, "connecting"), 1);
  });

  test("1009 (retry backoff without retry_after) waits at least 1 s", async (t) => {
    const server = await withServer(t, ["--max-message-size", "128"]);
    const client = makeClient(t, server, { token: mintToken(uniqueUser()) });
    client.connect();
    await client.once("established");
    client.send("ping", { pingId: "x".repeat(500) });
    const r = await client.once("reconnecting");
    assert.equal(r.code, 1009);
    assert.ok(r.delay >= 1000, `delay ${r.delay}`);
    assert.equal(client.lastClose.advice.code, "MESSAGE_TOO_BIG");
  });

  test("1001 on shutdown waits at least the advised retry_after", async (t) => {
    const server = await startServer({ args: ["--shutdown-reconnect-spread", "3s"] });
    const client = makeClient(t, server, { token: mintToken(uniqueUser()) });
    client.connect();
    await client.once("established");
    const reconnecting = client.once("reconnecting");
    await server.stop();
    const r = await reconnecting;
    assert.equal(r.code, 1001);
    const advised = client.lastClose.advice.retry_after;
    assert.ok(advised >= 0 && advised <= 3, `retry_after ${advised}`);
    assert.ok(r.delay >= advised * 1000, `delay ${r.delay} under retry_after ${advised}`);
  });

  test("1008 (retry backoff) honours the rate limit's retry_after", async (t) => {
    const server = await withServer(t, ["--rate-limit-messages", "2", "--rate-limit-window", "30s"]);
    const client = makeClient(t, server, { token: mintToken(uniqueUser()) });
    client.connect();
    await client.once("established");
    const reconnecting = client.once("reconnecting");
    for (let i = 0; i < 30; i++) client.send("heartbeat", {});
    const r = await reconnecting;
    assert.equal(r.code, 1008);
    const advised = client.lastClose.advice.retry_after;
    assert.ok(advised >= 1, `retry_after ${advised}`);
    assert.ok(r.delay >= advised * 1000, `delay ${r.delay}`);
  });
});

// Recovery across reconnects (SPEC-v2 section 2) of clients/js/wsgate.js, against the real binary.
// Run: node --experimental-websocket --test test/recovery.test.mjs   (or test/run.sh)
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { WsgateClient } from "../wsgate.js";
import { startServer, mintToken, uniqueUser, api, waitFor, freezableProxy } from "./helpers.mjs";

/**
 * A client whose every received/sent message and recovery failure is recorded. Its getToken
 * waits on `client.gate` when one is set, so a test can publish while it is disconnected.
 */
function makeClient(t, server, user, opts = {}) {
  const client = new WsgateClient({
    url: server.httpUrl,
    pingInterval: 0,
    backoffInitial: 50,
    backoffMax: 200,
    maxFailedOpens: 100,
    reconnectOnKick: true,
    getToken: async () => {
      if (client.gate) await client.gate.promise;
      return mintToken(user);
    },
    onRecoveryFailed: (stream, reason, position) => client.failures.push({ stream, reason, position }),
    ...opts,
  });
  client.failures = [];
  client.received = [];
  client.sent = [];
  client.on("message", (m) => client.received.push(m));
  client.on("sent", (m) => client.sent.push(m));
  client.on("established", () => client.sent.push({ type: "(established)" })); // marks each socket's start
  t.after(() => client.close());
  return client;
}

function gate() {
  let release;
  const promise = new Promise((r) => (release = r));
  return { promise, release };
}

const publish = async (server, body) => {
  const r = await api(server, "POST", "/api/v1/events", body);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
};

const recorded = (client, type) => client.received.filter((m) => m.type === type);

/** Disconnect the client through the server API and wait until its socket is gone. */
async function kick(server, client) {
  const closed = client.once("closed");
  const r = await api(server, "DELETE", `/api/v1/connections/${client.connectionId}`);
  assert.equal(r.status, 204, JSON.stringify(r.body));
  assert.equal((await closed).code, 4003);
}

describe("recovery with history on", () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test("a blip loses nothing: every missed event once, in order, then live", async (t) => {
    const user = uniqueUser("blip");
    const client = makeClient(t, server, user);
    client.connect();
    await client.subscribe(["review.updated"]);
    await publish(server, { type: "file.ready", data: { n: 1 }, users: [user] });
    await publish(server, { type: "review.updated", data: { n: 1 } });
    await publish(server, { type: "system.notification", data: { message: "b1" }, all: true });
    await waitFor(() => client.received.filter((m) => m.stream).length === 3, { what: "three recorded events" });
    const before = Object.fromEntries(client.positions);
    assert.equal(before[`user:${user}`].offset, 1);
    assert.ok(before["event:review.updated"] && before.broadcast);

    client.gate = gate();
    await kick(server, client);
    for (let n = 2; n <= 4; n++) await publish(server, { type: "file.ready", data: { n }, users: [user] });
    for (let n = 2; n <= 3; n++) await publish(server, { type: "review.updated", data: { n } });
    await publish(server, { type: "system.notification", data: { message: "b2" }, all: true });
    const resumed = client.once("resumed");
    client.gate.release();
    client.gate = null;
    const r = await resumed;
    assert.equal(r.recovered, true, JSON.stringify(r));
    assert.equal(r.streams[`user:${user}`].replayed, 3);
    assert.equal(r.streams["event:review.updated"].replayed, 2);
    assert.equal(r.streams.broadcast.replayed, 1);
    assert.equal(client.lastRecovery, r);

    // The second socket's first message is the resume, with the positions of before.
    // Each socket's first message is a resume: the first one with nothing to recover.
    const resume = client.sent.filter((m) => m.type === "resume");
    assert.equal(resume.length, 2);
    assert.deepEqual(resume[0].data, { user: null, broadcast: null, events: { "review.updated": null }, cache: true });
    assert.deepEqual(resume[1].data, {
      user: before[`user:${user}`],
      broadcast: before.broadcast,
      events: { "review.updated": before["event:review.updated"] },
      cache: true,
    });
    const second = client.sent.map((m) => m.type).lastIndexOf("(established)");
    assert.equal(client.sent[second + 1], resume[1], "the first message after connection.established");

    await publish(server, { type: "file.ready", data: { n: 5 }, users: [user] });
    await waitFor(() => recorded(client, "file.ready").length === 5, { what: "five file.ready" });
    assert.deepEqual(recorded(client, "file.ready").map((m) => m.data.n), [1, 2, 3, 4, 5]);
    assert.deepEqual(recorded(client, "file.ready").map((m) => m.stream.offset), [1, 2, 3, 4, 5]);
    await waitFor(() => recorded(client, "review.updated").length === 3, { what: "three review.updated" });
    assert.deepEqual(recorded(client, "review.updated").map((m) => m.data.n), [1, 2, 3]);
    assert.deepEqual(recorded(client, "system.notification").map((m) => m.data.message), ["b1", "b2"]);
    const ids = client.received.filter((m) => m.stream).map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, "no duplicate id");
    assert.deepEqual(client.failures, []);
    assert.equal(client.positions.get(`user:${user}`).offset, 5);
  });

  test("a cut TCP connection: the events written meanwhile are replayed once, in order", async (t) => {
    const proxy = await freezableProxy(server.port);
    t.after(() => proxy.close());
    const user = uniqueUser("cut");
    const client = makeClient(t, { httpUrl: `http://127.0.0.1:${proxy.port}` }, user);
    client.connect();
    await client.once("resumed");
    await publish(server, { type: "file.ready", data: { n: 1 }, users: [user] });
    await waitFor(() => recorded(client, "file.ready").length === 1, { what: "file.ready 1" });
    client.gate = gate();
    const closed = client.once("closed");
    proxy.cutAll();
    assert.equal((await closed).code, 1006);
    // Published while the server may still hold the dead socket: written to it, or to no one.
    for (let n = 2; n <= 4; n++) await publish(server, { type: "file.ready", data: { n }, users: [user] });
    const resumed = client.once("resumed");
    client.gate.release();
    client.gate = null;
    const r = await resumed;
    assert.equal(r.recovered, true, JSON.stringify(r));
    assert.equal(r.streams[`user:${user}`].replayed, 3);
    await waitFor(() => recorded(client, "file.ready").length === 4, { what: "the three missed" });
    await client.heartbeat();
    assert.deepEqual(recorded(client, "file.ready").map((m) => m.stream.offset), [1, 2, 3, 4]);
    assert.deepEqual(client.failures, []);
  });

  test("a replay of events already seen is dropped by id", async (t) => {
    const user = uniqueUser("dedup");
    const client = makeClient(t, server, user);
    client.connect();
    await client.once("established");
    for (let n = 1; n <= 3; n++) await publish(server, { type: "file.ready", data: { n }, users: [user] });
    await waitFor(() => recorded(client, "file.ready").length === 3, { what: "three file.ready" });
    // Pretend the client knew less than it did: the server replays offsets 1..3 again.
    const p = client.positions.get(`user:${user}`);
    client.positions.set(`user:${user}`, { epoch: p.epoch, offset: 0 });
    client.gate = gate();
    await kick(server, client);
    await publish(server, { type: "file.ready", data: { n: 4 }, users: [user] });
    const resumed = client.once("resumed");
    client.gate.release();
    client.gate = null;
    assert.equal((await resumed).streams[`user:${user}`].replayed, 4);
    await waitFor(() => recorded(client, "file.ready").length >= 4, { what: "the missed one" });
    await client.heartbeat(); // anything replayed twice would have arrived before this reply
    assert.deepEqual(recorded(client, "file.ready").map((m) => m.data.n), [1, 2, 3, 4]);
  });
});

describe("last values", () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test("a fresh client gets a running upload's progress as a cached copy (cache option); the position is the top", async (t) => {
    const user = uniqueUser("cache");
    const pub = await publish(server, { type: "upload.progress", data: { upload_id: "up-1", progress: 30 }, users: [user] });
    await publish(server, { type: "upload.progress", data: { upload_id: "up-1", progress: 60 }, users: [user] });
    await publish(server, { type: "file.ready", data: { n: 1 }, users: [user] });
    const epoch = pub.streams[0].epoch;

    const fresh = makeClient(t, server, user);
    fresh.connect();
    await fresh.once("resumed");
    await fresh.heartbeat(); // the cached copies came before this reply
    const cached = recorded(fresh, "upload.progress");
    assert.deepEqual(cached.map((m) => [m.data.progress, m.cached, m.stream.offset]), [[60, true, 2]]);
    assert.deepEqual(fresh.positions.get(`user:${user}`), { epoch, offset: 3 }, "the stream top from resumed");
    assert.deepEqual(fresh.failures, []);

    const plain = makeClient(t, server, user, { cache: false });
    plain.connect();
    await plain.once("resumed");
    await plain.heartbeat();
    assert.deepEqual(recorded(plain, "upload.progress"), []);
    assert.equal(plain.sent.find((m) => m.type === "resume").data.cache, false);
  });
});

describe("recovery across a server restart", () => {
  let server;
  after(async () => {
    await server?.stop();
  });

  test("a new epoch calls onRecoveryFailed with EPOCH_CHANGED and the old position", async (t) => {
    server = await startServer();
    const port = server.port;
    const user = uniqueUser("epoch");
    const client = makeClient(t, server, user);
    client.connect();
    await client.once("established");
    await publish(server, { type: "file.ready", data: { n: 1 }, users: [user] });
    await waitFor(() => recorded(client, "file.ready").length === 1, { what: "file.ready" });
    const old = client.positions.get(`user:${user}`);
    assert.equal(old.offset, 1);

    const closed = client.once("closed");
    await server.stop("SIGTERM");
    await closed;
    server = await startServer({ port });
    await publish(server, { type: "file.ready", data: { n: 2 }, users: [user] }); // delivered to no one: the stream's new epoch starts
    const resumed = await client.once("resumed");
    assert.equal(resumed.recovered, false);
    const entry = resumed.streams[`user:${user}`];
    assert.equal(entry.reason, "EPOCH_CHANGED");
    assert.notEqual(entry.epoch, old.epoch);
    assert.deepEqual(client.failures, [{ stream: `user:${user}`, reason: "EPOCH_CHANGED", position: old }]);
    // The client carries on from the new epoch's top.
    assert.deepEqual(client.positions.get(`user:${user}`), { epoch: entry.epoch, offset: entry.offset });
    await publish(server, { type: "file.ready", data: { n: 3 }, users: [user] });
    await waitFor(() => recorded(client, "file.ready").at(-1)?.data.n === 3, { what: "live after the restart" });
    assert.deepEqual(client.positions.get(`user:${user}`), { epoch: entry.epoch, offset: entry.offset + 1 });
  });
});

describe("a server with --history-size 0", () => {
  let server;
  before(async () => {
    // A long hold: a client that opened with resume=1 and sent nothing would get no event.
    server = await startServer({ args: ["--history-size", "0", "--resume-timeout", "60s"] });
  });
  after(async () => {
    await server?.stop();
  });

  test("sends no resume, ends the hold at once, and reconnects the v1 way", async (t) => {
    const user = uniqueUser("nohist");
    const client = makeClient(t, server, user);
    const established = client.once("established");
    client.connect();
    assert.ok(!(await established).features.includes("recovery"));
    await publish(server, { type: "file.ready", data: { n: 1 }, users: [user] });
    await waitFor(() => recorded(client, "file.ready").length === 1, { what: "a user event (no 60 s hold)" });
    assert.equal(recorded(client, "file.ready")[0].stream, undefined);
    assert.deepEqual(client.sent.slice(0, 2).map((m) => m.type), ["(established)", "heartbeat"], "a heartbeat ended the hold");
    await client.subscribe(["review.updated"]);
    await kick(server, client);
    await client.once("resubscribed");
    await publish(server, { type: "review.updated", data: { n: 1 } });
    await waitFor(() => recorded(client, "review.updated").length === 1, { what: "review.updated after the reconnect" });
    await publish(server, { type: "file.ready", data: { n: 2 }, users: [user] });
    await waitFor(() => recorded(client, "file.ready").length === 2, { what: "a user event after the reconnect (the resubscribe ended that hold)" });
    assert.deepEqual(client.sent.filter((m) => m.type === "resume"), []);
    assert.equal(client.positions.size, 0);
    assert.deepEqual(client.failures, []);
  });
});

// Browser tests of the operator console (and the client library inside it) in Debian's
// Chromium driven by playwright-core, against the real wsgate binary.
// Run: node --test test/console.browser.test.mjs   (or test/run.sh)
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdirSync, existsSync } from "node:fs";
import { request } from "node:http";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { chromium } from "playwright-core";
import { histogramQuantile, parseMetrics } from "../../console/operator.js";
import { startServer, startRedis, mintToken, uniqueUser, api, waitFor, sleep, consoleFromDisk, CONSOLE_FILES, JS_DIR, REPO, API_KEY } from "./helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];
// Screenshots go under target/ so a test run leaves the checkout clean; UPDATE_SCREENSHOTS=1
// refreshes the ones committed in docs/.
const SCREENSHOT_DIR = process.env.UPDATE_SCREENSHOTS === "1" ? path.join(REPO, "docs") : path.join(REPO, "target", "screenshots");
const SECURITY_HEADERS = ["content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy"];

/** Does the server serve the console, byte for byte the files of this checkout? */
async function serverConsoleStatus(server) {
  const report = {};
  for (const [route, file] of Object.entries(CONSOLE_FILES)) {
    const res = await fetch(server.httpUrl + route);
    const body = await res.text();
    const headers = Object.fromEntries(SECURITY_HEADERS.map((h) => [h, res.headers.get(h)]));
    report[route] = { status: res.status, type: res.headers.get("content-type"), headers, same: body === readFileSync(path.resolve(JS_DIR, file), "utf8") };
  }
  return report;
}

/** A WebSocket from Node as `user`, resolved once connection.established gave its id. */
function openSocket(server, user) {
  const ws = new WebSocket(`${server.wsUrl}/api/v1/ws`, ["wsgate.v1", `bearer.${mintToken(user)}`]);
  const closed = new Promise((resolve) => ws.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason })));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no connection.established for ${user}`)), 10000);
    ws.addEventListener("error", () => reject(new Error(`socket for ${user} failed`)));
    ws.addEventListener("message", (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type !== "connection.established") return;
      clearTimeout(timer);
      resolve({ ws, closed, id: msg.data.connection_id, send: (m) => ws.send(JSON.stringify(m)) });
    });
  });
}

/** The HTTP status the server answers a WebSocket upgrade for `user` with (101 when accepted). */
function upgradeStatus(server, user) {
  return new Promise((resolve, reject) => {
    const req = request({
      host: "127.0.0.1",
      port: server.port,
      path: `/api/v1/ws?token=${mintToken(user)}`,
      headers: { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": randomBytes(16).toString("base64") },
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on("error", reject);
    req.end();
  });
}

async function confirmDialog(page, expectText) {
  await page.waitForSelector("#confirm-dialog[open]");
  assert.match(await page.textContent("#confirm-text"), expectText);
  await page.click("#confirm-ok");
  await page.waitForSelector("#confirm-dialog:not([open])", { state: "attached" });
}

async function screenshot(page, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, name);
  await page.screenshot({ path: file, fullPage: true });
  assert.ok(existsSync(file));
  console.log(`# screenshot: ${file}`);
}

/** Calls a method of the page's operator view (to refresh the table without waiting for its timer). */
const consoleOperator = (page, method) => page.evaluate((m) => window.wsgateConsole.operator[m](), method);

describe("operator console in Chromium", () => {
  let server;
  let relay = null; // set when the console is served from disk in front of the server
  let base;
  let browser;
  let page;
  let consoleReport;
  const pageErrors = [];
  const user = uniqueUser("console");
  const consoleUser = user;
  const token = mintToken(user);

  before(async () => {
    server = await startServer({ args: ["--shards", "2"] });
    consoleReport = await serverConsoleStatus(server);
    const servedHere = Object.values(consoleReport).every((r) => r.status === 200 && r.same);
    const source = process.env.WSGATE_CONSOLE_SOURCE || (servedHere ? "server" : "disk");
    if (source === "disk") {
      // The relay answers with the headers the server gives the console (those it gives).
      const headers = Object.fromEntries(Object.entries(consoleReport["/console"].headers).filter(([, v]) => v !== null));
      relay = await consoleFromDisk(server.port, { headers });
      base = relay.url;
    } else {
      base = server.httpUrl;
    }
    console.log(`# console served ${source === "disk" ? "from clients/ by a relay in front of wsgate" : "by wsgate itself"} at ${base}`);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    page = await context.newPage();
    // Runs before the page's own scripts (and outside its CSP): collects every CSP violation.
    await page.addInitScript(() => {
      window.__cspViolations = [];
      document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    page.on("console", (m) => {
      // Refused connections while the server restarts are expected network noise.
      if (m.type() === "error" && !/Failed to load resource|WebSocket connection to/.test(m.text())) pageErrors.push(m.text());
    });
  });

  after(async () => {
    await browser?.close();
    await relay?.close();
    await server?.stop();
  });

  test("GET /console and its assets are served by wsgate, same as clients/ on disk", () => {
    for (const [route, r] of Object.entries(consoleReport)) {
      assert.equal(r.status, 200, `${route} answered ${r.status}`);
      assert.ok(r.same, `${route} differs from the file in clients/ (stale binary? rebuild)`);
      const type = route.endsWith(".css") ? /text\/css/ : route.endsWith(".js") ? /javascript/ : route.endsWith("LICENSE") ? /text\/plain/ : /text\/html/;
      assert.match(r.type || "", type, `${route} content-type ${r.type}`);
    }
  });

  test("every console file answers with CSP (self only), X-Frame-Options, nosniff and no-referrer", () => {
    for (const [route, r] of Object.entries(consoleReport)) {
      const csp = r.headers["content-security-policy"] || "";
      assert.match(csp, /default-src 'self'/, `${route} CSP: ${csp}`);
      assert.match(csp, /frame-ancestors 'none'/, `${route} CSP: ${csp}`);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*|https?:/, `${route} CSP allows more than this origin: ${csp}`);
      assert.equal(r.headers["x-frame-options"], "DENY", route);
      assert.equal(r.headers["x-content-type-options"], "nosniff", route);
      assert.equal(r.headers["referrer-policy"], "no-referrer", route);
    }
    const html = readFileSync(path.resolve(JS_DIR, CONSOLE_FILES["/console"]), "utf8");
    assert.doesNotMatch(html, /<script(?![^>]*\ssrc=)[^>]*>/i, "no inline script: the CSP would block it");
    assert.doesNotMatch(html, /<style|\sstyle=|\son[a-z]+=/i, "no inline style or handler: the CSP would block it");
  });

  test("connects with the token from the URL fragment and shows open", async () => {
    await page.goto(`${base}/console#token=${token}&api_key=${API_KEY}`);
    await page.waitForSelector('#state[data-state="open"]', { timeout: 10000 });
    assert.equal(await page.textContent("#state"), "open");
    assert.equal(new URL(page.url()).hash, "", "secrets are removed from the address bar");
    assert.match(await page.textContent("#conn-info"), new RegExp(user));
    assert.match(await page.textContent("#conn-info"), /token expires \S/, "the client tab shows the token's expiry");
    assert.match(await page.getAttribute("#conn-info", "title"), /^token exp \d{4}-\d\d-\d\dT/);
    assert.equal(await page.locator("#event-list input[data-event]").count(), 12);
    await page.waitForSelector('#log li[data-type="connection.established"]');
  });

  test("a later change of the URL fragment does not swap the credentials", async () => {
    const before = await page.textContent("#conn-info");
    const other = uniqueUser("swap");
    await page.evaluate((h) => {
      location.hash = h;
    }, `#token=${mintToken(other)}&api_key=not-the-key`);
    await page.waitForSelector('#log li[data-dir="local"] .d:text-matches("were ignored")');
    assert.equal(new URL(page.url()).hash, "", "the swapped-in secrets are removed from the address bar too");
    assert.equal(await page.inputValue("#token"), token, "token unchanged");
    assert.equal(await page.inputValue("#api-key"), API_KEY, "API key unchanged");
    assert.equal(await page.textContent("#state"), "open");
    assert.equal(await page.textContent("#conn-info"), before, "still the first user's connection");
    const swapped = await api(server, "GET", `/api/v1/connections?user_id=${other}`);
    assert.deepEqual(swapped.body, [], "no connection was made with the swapped-in token");
  });

  test("ticking a checkbox subscribes; the server confirms", async () => {
    await page.check('input[data-event="upload.progress"]');
    await page.check('input[data-event="file.processing"]');
    await page.waitForSelector('input[data-event="upload.progress"][data-confirmed="true"]');
    await page.waitForSelector('input[data-event="file.processing"][data-confirmed="true"]');
    const subs = await waitFor(async () => {
      const r = await api(server, "GET", `/api/v1/connections?user_id=${user}`);
      return r.body?.[0]?.subscriptions?.length === 2 && r.body[0].subscriptions;
    }, { what: "subscriptions on the server" });
    assert.deepEqual([...subs].sort(), ["file.processing", "upload.progress"]);
    // unticking unsubscribes
    await page.check('input[data-event="review.created"]');
    await page.waitForSelector('input[data-event="review.created"][data-confirmed="true"]');
    await page.uncheck('input[data-event="review.created"]');
    await page.waitForSelector('input[data-event="review.created"][data-confirmed="false"]');
    const after = await api(server, "GET", `/api/v1/connections?user_id=${user}`);
    assert.deepEqual([...after.body[0].subscriptions].sort(), ["file.processing", "upload.progress"]);
  });

  test("a published upload.progress of 42 shows as a progress bar at 42%", async () => {
    const r = await api(server, "POST", "/api/v1/events", { type: "upload.progress", data: { upload_id: "up-42", progress: 42, filename: "report.pdf" } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.delivered, 1);
    const bar = page.locator('.progress[data-id="up-42"]');
    await bar.waitFor();
    assert.equal(await bar.getAttribute("data-progress"), "42");
    assert.equal(await bar.locator(".pct").textContent(), "42%");
    assert.equal(await bar.locator('[role="progressbar"]').getAttribute("aria-valuenow"), "42");
    const ratio = await bar.evaluate((row) => row.querySelector(".bar").getBoundingClientRect().width / row.querySelector(".track").clientWidth);
    assert.ok(Math.abs(ratio - 0.42) < 0.02, `bar fills ${ratio}`);
    await page.waitForSelector('#log li[data-type="upload.progress"]');
    // The recorded event's stream and offset, as the publish answer gave them, in its log line.
    const [pos] = r.body.streams;
    assert.equal(pos.name, "event:upload.progress");
    const cell = page.locator('#log li[data-type="upload.progress"] .pos').first();
    assert.equal(await cell.textContent(), `event:upload.progress #${pos.offset}`);
    assert.equal(await cell.getAttribute("data-epoch"), pos.epoch);
  });

  test("publishing from the console's form, with targeting, and file.processing bars", async () => {
    await page.selectOption("#pub-type", "upload.progress");
    await page.fill("#pub-data", JSON.stringify({ upload_id: "up-form", progress: 73 }));
    await page.check('input[name="target"][value="specific"]');
    await page.fill("#pub-users", user);
    await page.click("#pub-send");
    await page.waitForSelector('#publish-result[data-status="ok"][data-delivered="1"]');
    await page.waitForSelector('.progress[data-id="up-form"][data-progress="73"]');
    // all: true
    await page.check('input[name="target"][value="all"]');
    await page.selectOption("#pub-type", "system.notification");
    await page.fill("#pub-data", JSON.stringify({ message: "hello from the console", level: "info" }));
    await page.click("#pub-send");
    await page.waitForSelector('#log li[data-type="system.notification"]');
    // the seed's file status call becomes file.processing, rendered as a bar keyed by file_id
    const f = await api(server, "POST", "/api/v1/files/file-7/status", { user_id: user, status: "processing", progress: 64 });
    assert.equal(f.status, 200, JSON.stringify(f.body));
    await page.waitForSelector('.progress[data-id="file-7"][data-kind="file"][data-progress="64"]');
    await api(server, "POST", "/api/v1/events", { type: "upload.progress", data: { upload_id: "up-done", progress: 100 } });
    await page.waitForSelector('.progress[data-id="up-done"][data-progress="100"]');
  });

  test("live stats from GET /api/v1/stats", async () => {
    await page.waitForSelector('#stats[data-loaded="true"]');
    await waitFor(async () => Number(await page.textContent("#stat-connections")) >= 1, { what: "connections stat" });
    assert.ok(Number(await page.textContent("#stat-users")) >= 1);
    assert.equal(await page.locator("#shards .shard").count(), 2, "one row per shard (--shards 2)");
    await waitFor(async () => /^\d+(\.\d)?$/.test(await page.textContent("#stat-out-rate")), { what: "a messages-out rate" });
  });

  test("after the server restarts, the page's client reconnects and resubscribes", async () => {
    const port = server.port;
    await server.stop("SIGTERM");
    await page.waitForSelector('#state[data-state="reconnecting"], #state[data-state="connecting"]', { timeout: 10000 });
    server = await startServer({ port, args: ["--shards", "2"] });
    await page.waitForSelector('#state[data-state="open"]', { timeout: 20000 });
    const subs = await waitFor(async () => {
      const r = await api(server, "GET", `/api/v1/connections?user_id=${user}`);
      return r.body?.[0]?.subscriptions?.length === 2 && r.body[0].subscriptions;
    }, { timeout: 15000, what: "resubscription on the new server" });
    assert.deepEqual([...subs].sort(), ["file.processing", "upload.progress"]);
    const r = await api(server, "POST", "/api/v1/events", { type: "upload.progress", data: { upload_id: "up-42", progress: 88 } });
    assert.equal(r.body.delivered, 1, "a subscribers-only event reaches the reconnected page");
    await page.waitForSelector('.progress[data-id="up-42"][data-progress="88"]');
    const closeInfo = await page.textContent("#close-info");
    assert.match(closeInfo, /1001/, `close code shown: ${closeInfo}`);
    // The close's JSON reason, as the gateway explained it (SPEC-v2 section 6).
    assert.match(closeInfo, /1001 SHUTDOWN \(backoff, retry after [\d.]+ s\)/, `close reason shown: ${closeInfo}`);
    const recent = await page.textContent('#recent-closes li[data-code="1001"]');
    assert.match(recent, /SHUTDOWN \(backoff/, `recent closes: ${recent}`);
    // The restarted server has new epochs: the resume's outcome says what to refetch.
    await page.waitForSelector('#recovery-info[data-recovered="false"]');
    assert.match(await page.textContent("#recovery-info"), /event:upload\.progress EPOCH_CHANGED/);
    await api(server, "POST", "/api/v1/events", { type: "upload.progress", data: { upload_id: "up-42", progress: 42 } });
    await page.waitForSelector('.progress[data-id="up-42"][data-progress="42"]');
  });

  test("operator view: the connections table shows a real connection with its numbers", async () => {
    const user = uniqueUser("table");
    const sock = await openSocket(server, user);
    sock.send({ type: "subscribe", data: { events: ["review.created", "upload.progress"] } });
    await waitFor(async () => (await api(server, "GET", `/api/v1/connections?user_id=${user}`)).body?.[0]?.subscriptions?.length === 2, { what: "the subscription" });
    await page.click("#tab-operator");
    await page.waitForSelector("#view-operator:not([hidden])");
    const row = page.locator(`#op-table tr[data-connection="${sock.id}"]`);
    await row.waitFor({ timeout: 10000 });
    const cells = await row.locator("td").allTextContents();
    const stats = (await api(server, "GET", "/api/v1/stats")).body;
    assert.equal(cells[0], user);
    assert.equal(cells[1], sock.id);
    assert.equal(cells[2], stats.node_id, "node column");
    assert.match(cells[3], /\d/, "connected at");
    assert.deepEqual(await row.locator("td.subs .chip").allTextContents(), ["review.created", "upload.progress"]);
    assert.match(cells[5], /^\d+$/, "messages in");
    assert.match(cells[6], /^\d+$/, "messages out");
    assert.match(cells[7], /^\d+$/, "queued bytes");
    assert.ok(Number(cells[5]) >= 1 && Number(cells[6]) >= 2, `in ${cells[5]}, out ${cells[6]}`);
    // the console's own connection is marked, and the filter narrows to one user
    await page.waitForSelector(`#op-table tr[data-self="true"][data-user="${consoleUser}"]`);
    await page.fill("#op-filter", user.slice(2));
    await waitFor(async () => (await page.locator("#op-table tbody tr").count()) === 1, { what: "the filtered table" });
    assert.equal(await page.locator(`#op-table tbody tr[data-user="${user}"]`).count(), 1);
    await page.fill("#op-filter", "");
    sock.ws.close();
  });

  test("operator view: disconnect, confirmed, closes the connection with 4003; cancel does nothing", async () => {
    const user = uniqueUser("kick");
    const sock = await openSocket(server, user);
    const button = page.locator(`#op-table tr[data-connection="${sock.id}"] button[data-action="disconnect"]`);
    await waitFor(async () => {
      await consoleOperator(page, "refreshTable");
      return (await button.count()) === 1;
    }, { what: "the new row" });
    await button.click();
    await page.waitForSelector("#confirm-dialog[open]");
    await page.click("#confirm-cancel");
    await page.waitForSelector('#op-result[data-status="cancelled"]');
    assert.equal((await api(server, "GET", `/api/v1/connections?user_id=${user}`)).body.length, 1, "cancel keeps it open");
    await button.click();
    await confirmDialog(page, new RegExp(`Disconnect connection ${sock.id}`));
    const closed = await sock.closed;
    assert.equal(closed.code, 4003, JSON.stringify(closed));
    await page.waitForSelector('#op-result[data-status="ok"]');
    await page.locator(`#op-table tr[data-connection="${sock.id}"]`).waitFor({ state: "detached" });
  });

  test("operator view: deactivate and activate a user, each confirmed", async () => {
    const user = uniqueUser("ban");
    const sock = await openSocket(server, user);
    const button = page.locator(`#op-table tr[data-connection="${sock.id}"] button[data-action="deactivate"]`);
    await waitFor(async () => {
      await consoleOperator(page, "refreshTable");
      return (await button.count()) === 1;
    }, { what: "the new row" });
    await button.click();
    // Each action's own result line, not just any "ok": the previous action's stays on the page.
    const done = (action) =>
      page.waitForFunction(
        ([a, u]) => document.querySelector("#op-result")?.textContent === `${a} ${u}: done`,
        [action, user],
      );
    await confirmDialog(page, new RegExp(`Deactivate user ${user}`));
    await done("deactivate");
    assert.equal((await sock.closed).code, 4003);
    assert.equal(await upgradeStatus(server, user), 401, "a deactivated user is refused");
    await page.click(`#op-deactivated button[data-activate="${user}"]`);
    await confirmDialog(page, new RegExp(`Activate user ${user}`));
    await done("activate");
    assert.equal(await upgradeStatus(server, user), 101, "activated again");
    // the same from the user field
    await page.fill("#op-user", user);
    await page.click("#op-deactivate");
    await confirmDialog(page, /Deactivate user/);
    await done("deactivate");
    assert.equal(await upgradeStatus(server, user), 401);
    await page.click("#op-activate");
    await confirmDialog(page, /Activate user/);
    await done("activate");
    assert.equal(await upgradeStatus(server, user), 101);
  });

  test("operator view: live charts draw the gateway's own numbers", async () => {
    // Traffic for the charts: fan-outs to a few subscribers, and a client over its rate limit.
    const subs = await Promise.all([1, 2, 3].map(() => openSocket(server, uniqueUser("chart"))));
    for (const s of subs) s.send({ type: "subscribe", data: { events: ["review.created"] } });
    const flooder = await openSocket(server, uniqueUser("flood"));
    for (let i = 0; i < 110; i++) flooder.send({ type: "heartbeat" });
    const history = () => page.evaluate(() => window.wsgateConsole.operator.history);
    const finite = (xs) => xs.filter((x) => typeof x === "number" && Number.isFinite(x));
    await waitFor(
      async () => {
        await api(server, "POST", "/api/v1/events", { type: "review.created", data: { n: 1 } });
        const h = await history();
        return finite(h.p50).length >= 2 && finite(h.outRate).some((x) => x > 0) && finite(h.rateLimited).some((x) => x > 0);
      },
      { timeout: 30000, interval: 150, what: "samples with fan-out, messages out and rate-limited" },
    );
    const h = await history();
    assert.ok(h.t.length >= 3, `${h.t.length} samples`);
    assert.ok(h.t.at(-1) - h.t[0] <= 15 * 60, "at most the last 15 minutes");
    assert.ok(h.connections.at(-1) >= 5, `connections ${h.connections}`);
    assert.ok(finite(h.p99).every((v, i) => v >= finite(h.p50)[i]), "p99 is at least p50");
    for (const name of ["connections", "messages", "fanout", "drops"]) {
      const chart = page.locator(`#chart-${name}`);
      await page.waitForSelector(`#chart-${name}[data-ready="true"]`);
      assert.ok(Number(await chart.getAttribute("data-points")) >= 3, `${name} chart has points`);
      const drawn = await chart.evaluate((box) => {
        const canvas = box.querySelector("canvas");
        if (!canvas || !canvas.width) return 0;
        // Count pixels in the series' colours (not the grey axes and grid).
        const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
        let coloured = 0;
        for (let i = 0; i < data.length; i += 4) {
          const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
          if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
        }
        return coloured;
      });
      assert.ok(drawn > 0, `${name} chart draws its data (${drawn} coloured pixels)`);
      const plotted = await page.evaluate((n) => window.wsgateConsole.operator.charts.get(n).data.map((xs) => xs.length), name);
      assert.ok(plotted.every((len) => len === plotted[0] && len >= 3), `${name} plots every sample: ${plotted}`);
    }
    // the legend shows the latest values
    assert.match(await page.textContent("#chart-messages .u-legend"), /out\/s/);
    await page.waitForSelector('#drop-reasons [data-reason="rate_limited"]');
    assert.notEqual(await page.textContent('#drop-reasons [data-reason="rate_limited"] .v'), "0");
    // single node: the cluster card says so and lists this node
    assert.equal(await page.textContent("#cl-mode"), "single node");
    const stats = (await api(server, "GET", "/api/v1/stats")).body;
    await page.waitForSelector(`#cl-nodes li[data-node="${stats.node_id}"]`);
    for (const s of [...subs, flooder]) s.ws.close();
  });

  test("no page errors or CSP violations; screenshots", async () => {
    // Some history for the screenshot's charts: a few seconds in a test run, a varied minute
    // and a half when the committed screenshots are refreshed.
    const seconds = process.env.UPDATE_SCREENSHOTS === "1" ? 90 : 3;
    const subs = await Promise.all(["ana", "bo", "cy", "di"].map((n) => openSocket(server, uniqueUser(n))));
    for (const s of subs) s.send({ type: "subscribe", data: { events: ["review.created", "upload.progress"] } });
    const started = Date.now();
    for (let i = 0; Date.now() - started < seconds * 1000; i++) {
      const burst = 1 + Math.round(4 + 4 * Math.sin(i / 15));
      for (let j = 0; j < burst; j++) await api(server, "POST", "/api/v1/events", { type: "review.created", data: { n: i } });
      if (i % 60 === 30) for (let j = 0; j < 25; j++) subs[i % subs.length].send({ type: "heartbeat" });
      await sleep(200);
    }
    await page.waitForSelector("#op-table[data-loaded='true']");
    await screenshot(page, "console-operator.png");
    await page.click("#tab-client");
    await page.waitForSelector('#stats[data-loaded="true"]');
    await screenshot(page, "console.png");
    assert.deepEqual(await page.evaluate(() => window.__cspViolations), []);
    assert.deepEqual(pageErrors, []);
    for (const s of subs) s.ws.close();
  });
});

describe("operator console in cluster mode", () => {
  let redis;
  let nodes = [];
  let browser;
  let page;
  const pageErrors = [];

  before(async () => {
    redis = await startRedis();
    const tag = randomBytes(3).toString("hex");
    nodes = await Promise.all(["a", "b"].map((n) => startServer({ args: ["--redis-url", redis.url, "--node-id", `node-${n}-${tag}`, "--shards", "1"] })));
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
    page.on("pageerror", (e) => pageErrors.push(String(e)));
  });

  after(async () => {
    await browser?.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  test("the cluster card shows both nodes and the backplane state, and follows Redis going away", async () => {
    const [a, b] = nodes;
    const ids = [];
    for (const n of nodes) ids.push((await api(n, "GET", "/api/v1/stats")).body.node_id);
    await waitFor(async () => (await api(a, "GET", "/api/v1/stats")).body.nodes?.length === 2, { timeout: 15000, what: "both nodes joined" });
    await page.goto(`${a.httpUrl}/console#api_key=${API_KEY}`);
    await page.click("#tab-operator");
    await page.waitForSelector('#cl-backplane[data-state="connected"]', { timeout: 10000 });
    assert.equal(await page.textContent("#cl-mode"), "cluster");
    assert.equal(await page.textContent("#cl-node"), ids[0]);
    await page.waitForSelector(`#cl-nodes li[data-node="${ids[1]}"]`);
    assert.equal(await page.locator(`#cl-nodes li[data-node="${ids[0]}"] .badge`).textContent(), "this node");
    assert.equal(await page.locator(`#cl-nodes li[data-node="${ids[1]}"] .badge`).count(), 0);
    // a publish on this node reaches the other one over the backplane: the counters show it
    const sock = await new Promise((resolve, reject) => {
      const ws = new WebSocket(`${b.wsUrl}/api/v1/ws`, ["wsgate.v1", `bearer.${mintToken("far-away")}`]);
      ws.addEventListener("message", () => resolve(ws), { once: true });
      ws.addEventListener("error", () => reject(new Error("socket on node b failed")));
    });
    await api(a, "POST", "/api/v1/events", { type: "system.maintenance", data: {}, users: ["far-away"] });
    await waitFor(async () => Number(await page.locator("#cl-counters div", { hasText: "published" }).locator(".v").textContent()) >= 1, { what: "published counter" });
    sock.close();
    await redis.stop();
    await page.waitForSelector('#cl-backplane[data-state="disconnected"]', { timeout: 15000 });
    await page.waitForSelector("#cl-nodes li.muted");
    assert.deepEqual(pageErrors, []);
  });
});

describe("operator view arithmetic", () => {
  test("quantiles come from the bucket deltas between two readings, interpolated in the bucket", () => {
    const before = [[0.001, 10], [0.01, 10], [0.1, 10], [Infinity, 10]];
    // 100 new observations: 50 under 1 ms, 40 in (1, 10] ms, 10 in (10, 100] ms
    const now = [[0.001, 60], [0.01, 100], [0.1, 110], [Infinity, 110]];
    assert.equal(histogramQuantile(0.5, before, now), 0.001);
    assert.ok(Math.abs(histogramQuantile(0.7, before, now) - (0.001 + 0.009 * (20 / 40))) < 1e-12);
    assert.ok(Math.abs(histogramQuantile(0.99, before, now) - (0.01 + 0.09 * (9 / 10))) < 1e-12);
    assert.equal(histogramQuantile(0.5, now, now), null, "nothing observed in between");
    const past = [[0.001, 0], [Infinity, 5]];
    assert.equal(histogramQuantile(0.99, [[0.001, 0], [Infinity, 0]], past), 0.001, "past the last bound: the last bound");
  });

  test("the Prometheus text is read with its labels", () => {
    const m = parseMetrics('# HELP x y\nwsgate_connections 3\nwsgate_messages_dropped_total{reason="slow_consumer"} 7\nwsgate_node_info{node_id="a\\"b"} 1\n');
    assert.equal(m.get("wsgate_connections")[0].value, 3);
    assert.deepEqual(m.get("wsgate_messages_dropped_total")[0], { labels: { reason: "slow_consumer" }, value: 7 });
    assert.equal(m.get("wsgate_node_info")[0].labels.node_id, 'a"b');
  });
});

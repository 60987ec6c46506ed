// Browser tests of the operator console (and the client library inside it) in Debian's
// Chromium driven by playwright-core, against the real wsgate binary.
// Run: node --test test/console.browser.test.mjs   (or test/run.sh)
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdirSync, existsSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { startServer, mintToken, uniqueUser, api, waitFor, sleep, consoleFromDisk, JS_DIR, REPO, API_KEY } from "./helpers.mjs";

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
// Tests never rewrite tracked files: the committed docs/console.png is refreshed only on request.
const SCREENSHOT = process.env.UPDATE_SCREENSHOTS === "1"
  ? path.join(REPO, "docs", "console.png")
  : path.join(REPO, "target", "screenshots", "console.png");
const DISK = {
  "/console": "../console/index.html",
  "/console/console.css": "../console/console.css",
  "/console/console.js": "../console/console.js",
  "/console/wsgate.js": "wsgate.js",
};

/** Does the server serve the console, byte for byte the files of this checkout? */
async function serverConsoleStatus(server) {
  const report = {};
  for (const [route, file] of Object.entries(DISK)) {
    const res = await fetch(server.httpUrl + route);
    const body = await res.text();
    report[route] = { status: res.status, type: res.headers.get("content-type"), same: body === readFileSync(path.resolve(JS_DIR, file), "utf8") };
  }
  return report;
}

describe("operator console in Chromium", () => {
  let server;
  let relay = null; // set when the console is served from disk in front of the server
  let base;
  let browser;
  let page;
  let consoleReport;
  const pageErrors = [];
  const user = uniqueUser("console");
  const token = mintToken(user);

  before(async () => {
    server = await startServer({ args: ["--shards", "2"] });
    consoleReport = await serverConsoleStatus(server);
    const servedHere = Object.values(consoleReport).every((r) => r.status === 200 && r.same);
    const source = process.env.WSGATE_CONSOLE_SOURCE || (servedHere ? "server" : "disk");
    if (source === "disk") {
      relay = await consoleFromDisk(server.port);
      base = relay.url;
    } else {
      base = server.httpUrl;
    }
    console.log(`# console served ${source === "disk" ? "from clients/ by a relay in front of wsgate" : "by wsgate itself"} at ${base}`);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    page = await context.newPage();
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
      assert.match(r.type || "", route.endsWith(".css") ? /text\/css/ : route.endsWith(".js") ? /javascript/ : /text\/html/, `${route} content-type ${r.type}`);
    }
  });

  test("connects with the token from the URL fragment and shows open", async () => {
    await page.goto(`${base}/console#token=${token}&api_key=${API_KEY}`);
    await page.waitForSelector('#state[data-state="open"]', { timeout: 10000 });
    assert.equal(await page.textContent("#state"), "open");
    assert.equal(new URL(page.url()).hash, "", "secrets are removed from the address bar");
    assert.match(await page.textContent("#conn-info"), new RegExp(user));
    assert.equal(await page.locator("#event-list input[data-event]").count(), 12);
    await page.waitForSelector('#log li[data-type="connection.established"]');
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
    await api(server, "POST", "/api/v1/events", { type: "upload.progress", data: { upload_id: "up-42", progress: 42 } });
    await page.waitForSelector('.progress[data-id="up-42"][data-progress="42"]');
  });

  test("no page errors; screenshot saved to docs/console.png", async () => {
    await page.waitForSelector('#stats[data-loaded="true"]');
    await sleep(2500); // one more stats refresh after the restart
    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    assert.ok(existsSync(SCREENSHOT));
    assert.deepEqual(pageErrors, []);
  });
});

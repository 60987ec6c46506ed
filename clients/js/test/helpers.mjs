// Shared test helpers: run the real wsgate binary, mint tokens, call the server API.
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const JS_DIR = path.resolve(HERE, "..");
export const REPO = path.resolve(JS_DIR, "../..");
export const SECRET = "test-secret-" + randomBytes(6).toString("hex");
export const API_KEY = "test-key-" + randomBytes(6).toString("hex");

export function wsgateBin() {
  const bin = path.resolve(JS_DIR, process.env.WSGATE_BIN || "../../target/debug/wsgate");
  if (!existsSync(bin)) throw new Error(`wsgate binary not found at ${bin} (set WSGATE_BIN)`);
  return bin;
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** An HS256 JWT, minted with node's crypto only. */
export function mintToken(sub, { secret = SECRET, ttl = 3600, claims = {} } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify({ sub: String(sub), iat: now, exp: now + ttl, ...claims }));
  const sig = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${sig}`;
}

export function uniqueUser(prefix = "u") {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll fn until it returns a truthy value (or a promise of one); throws after timeout. */
export async function waitFor(fn, { timeout = 10000, interval = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`);
    await sleep(interval);
  }
}

/**
 * Start `wsgate serve` and resolve once it printed its listening line.
 * port 0 picks a free one; a fixed port is retried while the old process's socket lingers.
 */
export async function startServer({ port = 0, args = [], attempts = 20 } = {}) {
  let lastErr;
  for (let i = 0; i < attempts; i++) {
    try {
      return await startOnce(port, args);
    } catch (e) {
      lastErr = e;
      if (port === 0) break;
      await sleep(250);
    }
  }
  throw lastErr;
}

function startOnce(port, args) {
  const bin = wsgateBin();
  const argv = ["serve", "--listen", `127.0.0.1:${port}`, "--jwt-secret", SECRET, "--api-key", API_KEY, ...args];
  const proc = spawn(bin, argv, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" } });
  let stderr = "";
  proc.stderr.on("data", (d) => {
    stderr += d;
    if (stderr.length > 200000) stderr = stderr.slice(-100000);
    if (process.env.WSGATE_TEST_VERBOSE) process.stderr.write(d);
  });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`wsgate did not print its listening line in 20s; stdout=${out} stderr=${stderr}`));
    }, 20000);
    proc.on("exit", (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`wsgate exited early (code ${code}, signal ${sig}); stderr: ${stderr.slice(-2000)}`));
    });
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/^wsgate listening on (https?):\/\/([^\s:]+):(\d+)\s*$/m);
      if (!m) return;
      clearTimeout(timer);
      proc.removeAllListeners("exit");
      const server = {
        proc,
        port: Number(m[3]),
        httpUrl: `${m[1]}://${m[2]}:${m[3]}`,
        wsUrl: `${m[1] === "https" ? "wss" : "ws"}://${m[2]}:${m[3]}`,
        stdout: () => out,
        stderr: () => stderr,
        exited: new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal }))),
        async stop(signal = "SIGTERM") {
          if (proc.exitCode !== null || proc.signalCode !== null) return { code: proc.exitCode, signal: proc.signalCode };
          proc.kill(signal);
          const t = setTimeout(() => proc.kill("SIGKILL"), 12000);
          const r = await server.exited;
          clearTimeout(t);
          return r;
        },
      };
      resolve(server);
    });
  });
}

/** Call the server API with the API key; resolves {status, body, headers}. */
export async function api(server, method, p, body, { key = API_KEY } = {}) {
  const res = await fetch(server.httpUrl + p, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {}
  return { status: res.status, body: parsed, headers: res.headers };
}

/**
 * A TCP relay in front of the server whose live connections can be frozen: bytes stop flowing
 * both ways but no FIN or RST is sent, as when a NAT or a mobile link drops a connection silently.
 */
export function freezableProxy(targetPort) {
  const live = new Set();
  const srv = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream, frozen: false };
    live.add(pair);
    client.on("data", (d) => {
      if (!pair.frozen) upstream.write(d);
    });
    upstream.on("data", (d) => {
      if (!pair.frozen) client.write(d);
    });
    const end = () => {
      live.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  return new Promise((resolve) => {
    srv.listen(0, "127.0.0.1", () => {
      resolve({
        port: srv.address().port,
        freezeAll() {
          for (const p of live) p.frozen = true;
        },
        /** Reset every live connection (both sides), as a network blip does; new ones still pass. */
        cutAll() {
          for (const p of live) {
            p.client.resetAndDestroy();
            p.upstream.resetAndDestroy();
          }
        },
        get count() {
          return live.size;
        },
        close() {
          for (const p of live) {
            p.client.destroy();
            p.upstream.destroy();
          }
          return new Promise((r) => srv.close(() => r()));
        },
      });
    });
  });
}

/** Every file the binary serves under /console, and where it is in this checkout (relative to clients/js). */
export const CONSOLE_FILES = {
  "/console": "../console/index.html",
  "/console/console.css": "../console/console.css",
  "/console/console.js": "../console/console.js",
  "/console/operator.js": "../console/operator.js",
  "/console/wsgate.js": "wsgate.js",
  "/console/vendor/uPlot.iife.min.js": "../console/vendor/uPlot.iife.min.js",
  "/console/vendor/uPlot.min.css": "../console/vendor/uPlot.min.css",
  "/console/vendor/uPlot.LICENSE": "../console/vendor/uPlot.LICENSE",
};

/**
 * Serve the console from this checkout's files and relay everything else (HTTP and the
 * WebSocket upgrade) to a wsgate on targetPort. Used when the binary does not serve /console
 * itself, or serves a copy that differs from the files on disk (a stale build).
 */
export async function consoleFromDisk(targetPort, { headers = {} } = {}) {
  const { createServer, request } = await import("node:http");
  const { readFileSync } = await import("node:fs");
  const files = Object.fromEntries(
    Object.entries(CONSOLE_FILES).map(([route, file]) => [
      route,
      [file, route.endsWith(".css") ? "text/css; charset=utf-8" : route.endsWith(".js") ? "text/javascript; charset=utf-8" : route.endsWith("LICENSE") ? "text/plain; charset=utf-8" : "text/html; charset=utf-8"],
    ]),
  );
  files["/console/"] = files["/console"];
  const sockets = new Set();
  const srv = createServer((req, res) => {
    const pathname = new URL(req.url, "http://x").pathname;
    const f = files[pathname];
    if (f) {
      res.writeHead(200, { ...headers, "content-type": f[1], "cache-control": "no-store" });
      res.end(readFileSync(path.resolve(JS_DIR, f[0])));
      return;
    }
    const up = request({ host: "127.0.0.1", port: targetPort, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    up.on("error", () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  srv.on("upgrade", (req, client, head) => {
    const upstream = net.connect(targetPort, "127.0.0.1", () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      upstream.write(raw + "\r\n");
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(client).add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  srv.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => srv.close(() => r()));
    },
  };
}

/** A free loopback port (for a process that needs one given, like redis-server). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A private redis-server on a free loopback port (never the machine's own on 6379), no persistence. */
export async function startRedis() {
  const port = await freePort();
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const failed = new Promise((_, reject) => {
    proc.on("error", (e) => reject(new Error(`cannot start redis-server (apt-get install redis-server): ${e.message}`)));
    proc.on("exit", (code) => reject(new Error(`redis-server exited with ${code}`)));
  });
  failed.catch(() => {});
  const ready = waitFor(
    () =>
      new Promise((resolve) => {
        const s = net.connect(port, "127.0.0.1", () => s.write("PING\r\n"));
        s.on("data", (d) => {
          s.destroy();
          resolve(String(d).startsWith("+PONG"));
        });
        s.on("error", () => resolve(false));
      }),
    { what: "redis-server to answer PING" },
  );
  await Promise.race([ready, failed]);
  return {
    url: `redis://127.0.0.1:${port}/0`,
    stop() {
      proc.removeAllListeners("exit");
      proc.kill("SIGKILL");
      return new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once("exit", () => r())));
    },
  };
}

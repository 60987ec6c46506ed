// Shared helpers for the wsgate k6 scripts: config from __ENV, HS256 tokens,
// bench-protocol frames. Loopback targets only.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';

export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:9200';
export const JWT_SECRET = __ENV.JWT_SECRET || 'bench-secret';
export const API_KEY = __ENV.API_KEY || 'bench-key';
export const EVENT = 'system.notification';
export const RUN_ID = __ENV.RUN_ID || `${Date.now().toString(36)}`;

export function env(name, dflt) {
  const v = __ENV[name];
  return v === undefined || v === '' ? dflt : v;
}
export function envInt(name, dflt) {
  const v = parseInt(env(name, `${dflt}`), 10);
  if (Number.isNaN(v)) throw new Error(`${name} must be an integer`);
  return v;
}

// Refuse anything but localhost / 127.0.0.0/8.
const m = /^https?:\/\/([^/:]+):(\d+)\/?$/.exec(BASE_URL);
if (!m) throw new Error(`BASE_URL must be http://HOST:PORT (got ${BASE_URL})`);
const host = m[1];
if (!(host === 'localhost' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host))) {
  throw new Error(`refusing target ${host}: only localhost and 127.0.0.0/8`);
}
export const WS_BASE = `ws://${host}:${m[2]}`;

function b64url(s) {
  return encoding.b64encode(s, 'rawurl');
}

// HS256 JWT with sub and exp.
export function token(sub, ttlSeconds = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub: `${sub}`, iat: now, exp: now + ttlSeconds }));
  const sig = crypto.hmac('sha256', JWT_SECRET, `${head}.${body}`, 'base64rawurl');
  return `${head}.${body}.${sig}`;
}

export function wsUrl(sub) {
  return `${WS_BASE}/api/v1/ws/${token(sub)}`;
}

export function subscribeMsg(id) {
  return JSON.stringify({ type: 'subscribe', data: { events: [EVENT] }, id });
}

export function pingMsg(pingId) {
  return JSON.stringify({ type: 'ping', data: { pingId }, id: pingId });
}

// data of a broadcast, padded so its JSON is `size` bytes.
export function broadcastData(seq, t, size) {
  const base = JSON.stringify({ seq, t, pad: '' });
  return JSON.stringify({ seq, t, pad: 'x'.repeat(Math.max(0, size - base.length)) });
}

const headers = { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' };

// POST /api/v1/events; t is Date.now() just before the request (ms).
export function publish(seq, size) {
  const t = Date.now();
  const body = `{"type":"${EVENT}","data":${broadcastData(seq, t, size)}}`;
  return http.post(`${BASE_URL}/api/v1/events`, body, { headers, tags: { name: 'publish' } });
}

export function parse(data) {
  try {
    return JSON.parse(data);
  } catch (e) {
    return null;
  }
}

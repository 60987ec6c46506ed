// connect: N connections (one user each), subscribe, hold, close.
//   k6 run -e BASE_URL=http://127.0.0.1:9200 -e N=500 -e HOLD_S=10 connect.js
// Thresholds: HANDSHAKE_P99_MS (1000), MAX_FAILED (0).
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { wsUrl, subscribeMsg, parse, envInt, RUN_ID } from './lib.js';

const N = envInt('N', 100);
const HOLD_S = envInt('HOLD_S', 5);

const handshake = new Trend('handshake_ms', true);
const failed = new Counter('connect_failed');
const holdErrors = new Counter('hold_errors');
const established = new Counter('established');

export const options = {
  scenarios: {
    connect: {
      executor: 'per-vu-iterations',
      vus: N,
      iterations: 1,
      maxDuration: `${HOLD_S + 120}s`,
    },
  },
  thresholds: {
    handshake_ms: [`p(99)<${envInt('HANDSHAKE_P99_MS', 1000)}`],
    connect_failed: [`count<=${envInt('MAX_FAILED', 0)}`],
    hold_errors: ['count<=0'],
  },
};

export default function () {
  const id = exec.vu.idInTest;
  const t0 = Date.now();
  let up = false;
  let closing = false;
  const res = ws.connect(wsUrl(`k6-${RUN_ID}-${id}`), {}, (socket) => {
    socket.on('message', (raw) => {
      const m = parse(raw);
      if (!m) return;
      if (m.type === 'connection.established' && !up) {
        up = true;
        handshake.add(Date.now() - t0);
        established.add(1);
        socket.send(subscribeMsg(`s${id}`));
        // the seed drops silent clients at 60 s: an application ping every 20 s
        socket.setInterval(() => socket.send(JSON.stringify({ type: 'ping', data: {}, id: 'k' })), 20000);
        socket.setTimeout(() => {
          closing = true;
          socket.close();
        }, HOLD_S * 1000);
      }
    });
    socket.on('error', () => {
      if (up && !closing) holdErrors.add(1);
    });
    socket.on('close', () => {
      if (up && !closing) holdErrors.add(1);
    });
    // never wait forever for the greeting
    socket.setTimeout(() => {
      if (!up) socket.close();
    }, 15000);
  });
  const ok = check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
  if (!ok || !up) failed.add(1);
}

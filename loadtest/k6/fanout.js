// fanout: N subscribers; one publisher sends M broadcasts INTERVAL_MS apart via
// POST /api/v1/events; each subscriber measures receipt - publish time (ms clock)
// and counts lost and duplicated seqs.
//   k6 run -e BASE_URL=http://127.0.0.1:9200 -e N=500 -e M=200 -e PAYLOAD=100 fanout.js
// Thresholds: LATENCY_P99_MS (100), and lost/duplicated must be 0.
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { wsUrl, subscribeMsg, parse, publish, envInt, RUN_ID } from './lib.js';

const N = envInt('N', 100);
const M = envInt('M', 100);
const PAYLOAD = envInt('PAYLOAD', 100);
const INTERVAL_MS = envInt('INTERVAL_MS', 20);
const SETTLE_S = envInt('SETTLE_S', 5); // time for the subscribers to connect
const DRAIN_S = envInt('DRAIN_S', 5);
const SUB_S = SETTLE_S + Math.ceil((M * INTERVAL_MS) / 1000) + 5 + DRAIN_S;

const latency = new Trend('delivery_ms', true);
const deliveries = new Counter('deliveries');
const lost = new Counter('lost');
const dup = new Counter('duplicated');
const publishFailed = new Counter('publish_failed');
const subFailed = new Counter('subscribe_failed');

export const options = {
  scenarios: {
    subscribers: { executor: 'per-vu-iterations', vus: N, iterations: 1, maxDuration: `${SUB_S + 60}s`, exec: 'subscriber' },
    publisher: {
      executor: 'per-vu-iterations', vus: 1, iterations: 1, startTime: `${SETTLE_S}s`,
      maxDuration: `${SUB_S + 60}s`, exec: 'publisher',
    },
  },
  thresholds: {
    delivery_ms: [`p(99)<${envInt('LATENCY_P99_MS', 100)}`],
    lost: ['count<=0'],
    duplicated: ['count<=0'],
    publish_failed: ['count<=0'],
    subscribe_failed: ['count<=0'],
  },
};

export function subscriber() {
  const id = exec.vu.idInTest;
  const seen = new Set();
  let confirmed = false;
  const res = ws.connect(wsUrl(`k6-${RUN_ID}-${id}`), {}, (socket) => {
    socket.on('message', (raw) => {
      const now = Date.now();
      const m = parse(raw);
      if (!m) return;
      if (m.type === 'connection.established') socket.send(subscribeMsg(`s${id}`));
      else if (m.type === 'subscription.confirmed') confirmed = true;
      else if (m.type === 'system.notification' && m.data && typeof m.data.seq === 'number') {
        if (seen.has(m.data.seq)) {
          dup.add(1);
          return;
        }
        seen.add(m.data.seq);
        deliveries.add(1);
        latency.add(now - m.data.t);
        if (seen.size >= M) socket.close();
      }
    });
    socket.setInterval(() => socket.send(JSON.stringify({ type: 'ping', data: {}, id: 'k' })), 20000);
    socket.setTimeout(() => socket.close(), SUB_S * 1000);
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
  if (!confirmed) subFailed.add(1);
  else lost.add(M - seen.size);
}

export function publisher() {
  for (let seq = 0; seq < M; seq++) {
    const r = publish(seq, PAYLOAD);
    if (!check(r, { 'publish 200': (x) => x.status === 200 })) publishFailed.add(1);
    sleep(INTERVAL_MS / 1000);
  }
}

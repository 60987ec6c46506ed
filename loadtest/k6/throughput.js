// throughput: N subscribers; K publisher VUs post broadcasts back to back for
// DURATION_S. Reports deliveries, latency, and (in the summary) lost deliveries
// = accepted publishes x subscribers - deliveries.
//   k6 run -e BASE_URL=http://127.0.0.1:9200 -e N=500 -e K=4 -e DURATION_S=10 throughput.js
// Thresholds: LATENCY_P99_MS (500), duplicated must be 0.
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { wsUrl, subscribeMsg, parse, publish, envInt, RUN_ID } from './lib.js';

const N = envInt('N', 100);
const K = envInt('K', 4);
const PAYLOAD = envInt('PAYLOAD', 100);
const DURATION_S = envInt('DURATION_S', 10);
const SETTLE_S = envInt('SETTLE_S', 5);
const DRAIN_S = envInt('DRAIN_S', 5);

const latency = new Trend('delivery_ms', true);
const deliveries = new Counter('deliveries');
const dup = new Counter('duplicated');
const published = new Counter('published');
const publishFailed = new Counter('publish_failed');
const subscribed = new Counter('subscribed');

export const options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations', vus: N, iterations: 1,
      maxDuration: `${SETTLE_S + DURATION_S + DRAIN_S + 60}s`, exec: 'subscriber',
    },
    publishers: {
      executor: 'constant-vus', vus: K, duration: `${DURATION_S}s`, startTime: `${SETTLE_S}s`,
      gracefulStop: '10s', exec: 'publisher',
    },
  },
  thresholds: {
    delivery_ms: [`p(99)<${envInt('LATENCY_P99_MS', 500)}`],
    duplicated: ['count<=0'],
    publish_failed: ['count<=0'],
  },
};

export function subscriber() {
  const id = exec.vu.idInTest;
  const seen = new Set();
  ws.connect(wsUrl(`k6-${RUN_ID}-${id}`), {}, (socket) => {
    socket.on('message', (raw) => {
      const now = Date.now();
      const m = parse(raw);
      if (!m) return;
      if (m.type === 'connection.established') socket.send(subscribeMsg(`s${id}`));
      else if (m.type === 'subscription.confirmed') subscribed.add(1);
      else if (m.type === 'system.notification' && m.data && typeof m.data.seq === 'number') {
        if (seen.has(m.data.seq)) {
          dup.add(1);
          return;
        }
        seen.add(m.data.seq);
        deliveries.add(1);
        latency.add(now - m.data.t);
      }
    });
    socket.setInterval(() => socket.send(JSON.stringify({ type: 'ping', data: {}, id: 'k' })), 20000);
    socket.setTimeout(() => socket.close(), (SETTLE_S + DURATION_S + DRAIN_S) * 1000);
  });
}

export function publisher() {
  // a seq unique over all publisher VUs and iterations
  const seq = exec.scenario.iterationInTest;
  const r = publish(seq, PAYLOAD);
  if (check(r, { 'publish 200': (x) => x.status === 200 })) published.add(1);
  else publishFailed.add(1);
}

export function handleSummary(data) {
  const get = (k) => (data.metrics[k] ? data.metrics[k].values.count : 0);
  const subs = get('subscribed');
  const pub = get('published');
  const got = get('deliveries');
  const lost = pub * subs - got;
  const line = {
    scenario: 'throughput', tool: 'k6', subscribers: subs, published: pub,
    broadcasts_per_s: pub / DURATION_S, deliveries: got, deliveries_per_s: got / DURATION_S,
    lost, duplicated: get('duplicated'),
    latency_p50_ms: data.metrics.delivery_ms ? data.metrics.delivery_ms.values.med : null,
    latency_p99_ms: data.metrics.delivery_ms ? data.metrics.delivery_ms.values['p(99)'] : null,
  };
  let text = `${JSON.stringify(line)}\n`;
  if (lost !== 0 || line.duplicated !== 0) {
    text += `!!!!! WARNING: ${lost} lost, ${line.duplicated} duplicated deliveries: THESE FIGURES DO NOT COUNT !!!!!\n`;
  }
  return { stdout: text };
}

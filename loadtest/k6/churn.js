// churn: N VUs loop connect, subscribe, receive one broadcast, close, for
// DURATION_S; a publisher broadcasts every INTERVAL_MS.
//   k6 run -e BASE_URL=http://127.0.0.1:9200 -e N=50 -e DURATION_S=10 churn.js
// Thresholds: CYCLE_P99_MS (1000), no cycle without its broadcast.
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { wsUrl, subscribeMsg, parse, publish, envInt, RUN_ID } from './lib.js';

const N = envInt('N', 50);
const DURATION_S = envInt('DURATION_S', 10);
const INTERVAL_MS = envInt('INTERVAL_MS', 10);
const WAIT_MS = envInt('WAIT_MS', 5000);

const cycle = new Trend('cycle_ms', true);
const cycles = new Counter('cycles');
const noBroadcast = new Counter('no_broadcast_cycles');
const failed = new Counter('connect_failed');

export const options = {
  scenarios: {
    churn: { executor: 'constant-vus', vus: N, duration: `${DURATION_S}s`, gracefulStop: '10s', exec: 'churner' },
    publisher: {
      executor: 'constant-arrival-rate', rate: Math.max(1, Math.round(1000 / INTERVAL_MS)), timeUnit: '1s',
      duration: `${DURATION_S + 2}s`, preAllocatedVUs: 2, maxVUs: 8, exec: 'publisher',
    },
  },
  thresholds: {
    cycle_ms: [`p(99)<${envInt('CYCLE_P99_MS', 1000)}`],
    no_broadcast_cycles: ['count<=0'],
    connect_failed: ['count<=0'],
  },
};

export function churner() {
  const id = exec.vu.idInTest;
  const it = exec.vu.iterationInScenario;
  const t0 = Date.now();
  let got = false;
  const res = ws.connect(wsUrl(`k6c-${RUN_ID}-${id}-${it}`), {}, (socket) => {
    socket.on('message', (raw) => {
      const m = parse(raw);
      if (!m) return;
      if (m.type === 'connection.established') socket.send(subscribeMsg('c'));
      else if (m.type === 'system.notification' && !got) {
        got = true;
        cycle.add(Date.now() - t0);
        cycles.add(1);
        socket.close();
      }
    });
    socket.setTimeout(() => socket.close(), WAIT_MS);
  });
  if (!check(res, { 'upgraded (101)': (r) => r && r.status === 101 })) failed.add(1);
  else if (!got) noBroadcast.add(1);
}

export function publisher() {
  publish(exec.scenario.iterationInTest, 100);
}

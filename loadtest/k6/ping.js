// ping: N connections, closed-loop application pings for DURATION_S.
//   k6 run -e BASE_URL=http://127.0.0.1:9200 -e N=100 -e DURATION_S=10 ping.js
// Thresholds: RTT_P99_MS (50), pong timeouts must be 0.
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { wsUrl, parse, pingMsg, envInt, RUN_ID } from './lib.js';

const N = envInt('N', 100);
const DURATION_S = envInt('DURATION_S', 10);
const PONG_TIMEOUT_MS = envInt('PONG_TIMEOUT_MS', 5000);

const rtt = new Trend('rtt_ms', true);
const roundTrips = new Counter('round_trips');
const timeouts = new Counter('pong_timeouts');
const stray = new Counter('stray_pongs');

export const options = {
  scenarios: {
    ping: { executor: 'per-vu-iterations', vus: N, iterations: 1, maxDuration: `${DURATION_S + 60}s` },
  },
  thresholds: {
    rtt_ms: [`p(99)<${envInt('RTT_P99_MS', 50)}`],
    pong_timeouts: ['count<=0'],
    stray_pongs: ['count<=0'],
  },
};

export default function () {
  const id = exec.vu.idInTest;
  let k = 0;
  let current = null;
  let sentAt = 0;
  let done = false;
  const res = ws.connect(wsUrl(`k6-${RUN_ID}-${id}`), {}, (socket) => {
    const next = () => {
      if (done) return;
      k += 1;
      current = `${id}.${k}`;
      sentAt = Date.now();
      socket.send(pingMsg(current));
    };
    socket.on('message', (raw) => {
      const m = parse(raw);
      if (!m) return;
      if (m.type === 'connection.established') next();
      else if (m.type === 'pong') {
        if (m.data && m.data.pingId === current) {
          rtt.add(Date.now() - sentAt);
          roundTrips.add(1);
          current = null;
          next();
        } else stray.add(1);
      }
    });
    // a pong that does not come within PONG_TIMEOUT_MS: count it and move on
    socket.setInterval(() => {
      if (current !== null && Date.now() - sentAt > PONG_TIMEOUT_MS) {
        timeouts.add(1);
        next();
      }
    }, 1000);
    socket.setTimeout(() => {
      done = true;
      socket.close();
    }, DURATION_S * 1000);
  });
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
}

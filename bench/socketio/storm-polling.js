// storm-polling.js: connections per second the way a default socket.io-client
// connects: an HTTP long-polling handshake, the Socket.IO CONNECT over
// polling, then the upgrade to WebSocket (probe, upgrade). N clients, C at a
// time; a client counts once it is connected AND upgraded. Run against
// connmix's Socket.IO server (:6792) and bench/socketio/server.js started with
// TRANSPORTS=polling,websocket (:3000):
//
//   node storm-polling.js http://127.0.0.1:6792 [N=2000] [C=100]
//
// Prints one JSON line: {"url","n","concurrency","seconds","connects_per_s","failed"}.
// The clients run in this one Node process, so the rate is bounded by the
// client as well as the server: compare two servers with the same client.
'use strict';

const { io } = require('socket.io-client');

const url = process.argv[2] || 'http://127.0.0.1:6792';
const n = Number(process.argv[3] || 2000);
const concurrency = Number(process.argv[4] || 100);

function connectOne() {
  return new Promise((resolve) => {
    const socket = io(url, { reconnection: false, forceNew: true, timeout: 20000 });
    let connected = false;
    let upgraded = false;
    const done = (ok) => {
      socket.close();
      resolve(ok);
    };
    const check = () => connected && upgraded && done(true);
    socket.io.once('open', () => {
      socket.io.engine.once('upgrade', () => {
        upgraded = true;
        check();
      });
    });
    socket.once('connect', () => {
      connected = true;
      check();
    });
    socket.once('connect_error', () => done(false));
    setTimeout(() => done(false), 30000).unref();
  });
}

(async () => {
  let next = 0;
  let failed = 0;
  const t0 = process.hrtime.bigint();
  const worker = async () => {
    while (next < n) {
      next += 1;
      if (!(await connectOne())) failed += 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ url, n, concurrency, seconds, connects_per_s: (n - failed) / seconds, failed }));
  process.exit(0);
})();

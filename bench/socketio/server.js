// server.js: the Socket.IO v4 push server that connmix-bench compares connmix
// against. It is the common "push server" architecture, written the way the
// Socket.IO docs suggest, with its fast options on:
//
//   client:   connect (websocket transport only), then
//             emit("login", {token}, ack)      -> POST {token} to AUTH_URL,
//                                                 join room user:<uid>, ack {result:true}
//             emit("subscribe", channel, ack)  -> join room channel ("@user" = user:<uid>)
//   backend:  POST /api {"room","event","data"} -> io.to(room).emit(event, data),
//                                                 answers {"s": <room size>}
//             or, as a Socket.IO client that connected with auth {key: BACKEND_KEY}:
//             emit("publish", {room, event, data}, ack) -> same, ack {"s": n}
//
// Environment: PORT (3000), AUTH_URL (http://127.0.0.1:8790/auth),
// BACKEND_KEY (bench-backend), TRANSPORTS (websocket; "polling,websocket" for
// storm-polling.js, which connects the way default socket.io-clients do). One Node process: a single core, as usually deployed
// behind a load balancer.
'use strict';

const http = require('http');
const { Server } = require('socket.io');

const PORT = Number(process.env.PORT || 3000);
const AUTH_URL = new URL(process.env.AUTH_URL || 'http://127.0.0.1:8790/auth');
const BACKEND_KEY = process.env.BACKEND_KEY || 'bench-backend';

// Keep-alive pool to the auth API, like any production HTTP client.
const authAgent = new http.Agent({ keepAlive: true, maxSockets: 512 });

/** POSTs {"token"} to the auth API; resolves the uid or rejects. */
function authenticate(token) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ token });
    const req = http.request(
      {
        host: AUTH_URL.hostname,
        port: AUTH_URL.port,
        path: AUTH_URL.pathname,
        method: 'POST',
        agent: authAgent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: 10000,
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`auth status ${res.statusCode}`));
          try {
            const r = JSON.parse(Buffer.concat(chunks).toString());
            if (r.uid === undefined || r.uid === null) return reject(new Error('no uid'));
            resolve(r.uid);
          } catch (e) {
            reject(e);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('auth timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

function roomSize(room) {
  const r = io.sockets.adapter.rooms.get(room);
  return r ? r.size : 0;
}

/** Emits to a room; returns how many sockets were in it. */
function publish(p) {
  if (!p || typeof p.room !== 'string' || typeof p.event !== 'string') return null;
  const n = roomSize(p.room);
  io.to(p.room).emit(p.event, p.data);
  return n;
}

const httpServer = http.createServer((req, res) => {
  if (req.url !== '/api') {
    res.writeHead(404, { 'content-type': 'text/plain' });
    return res.end('Not Found\n');
  }
  if (req.method !== 'POST') {
    res.writeHead(405, { 'content-type': 'text/plain', allow: 'POST' });
    return res.end('Method Not Allowed\n');
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let n = null;
    try {
      n = publish(JSON.parse(Buffer.concat(chunks).toString()));
    } catch (e) {
      n = null;
    }
    if (n === null) {
      res.writeHead(400, { 'content-type': 'application/json' });
      return res.end('{"error":"need {room, event, data}"}');
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(`{"s":${n}}`);
  });
});
httpServer.keepAliveTimeout = 60000;

const io = new Server(httpServer, {
  transports: (process.env.TRANSPORTS || 'websocket').split(','),
  serveClient: false,
  perMessageDeflate: false,
  httpCompression: false,
  pingInterval: 25000,
  pingTimeout: 20000,
});

io.on('connection', (socket) => {
  const isBackend = !!(socket.handshake.auth && socket.handshake.auth.key === BACKEND_KEY);

  socket.on('login', async (msg, ack) => {
    if (typeof ack !== 'function') return;
    const token = msg && msg.token;
    if (typeof token !== 'string' || token === '') return ack({ code: 4, msg: 'Missing token' });
    try {
      const uid = await authenticate(token);
      socket.data.uid = uid;
      socket.join(`user:${uid}`);
      ack({ result: true });
    } catch (e) {
      ack({ code: 7, msg: 'Auth failed' });
    }
  });

  socket.on('subscribe', (channel, ack) => {
    if (typeof ack !== 'function') return;
    if (socket.data.uid === undefined) return ack({ code: 1, msg: 'Not Auth' });
    if (typeof channel !== 'string' || channel === '' || /\s/.test(channel)) {
      return ack({ code: 8, msg: 'Invalid channel' });
    }
    socket.join(channel === '@user' ? `user:${socket.data.uid}` : channel);
    ack({ result: true });
  });

  if (isBackend) {
    socket.on('publish', (p, ack) => {
      const n = publish(p);
      if (typeof ack === 'function') ack(n === null ? { code: 101, msg: 'need {room, event, data}' } : { s: n });
    });
  }
});

httpServer.listen(PORT, () => {
  console.log(`socket.io ${require('socket.io/package.json').version} push server on :${PORT}, auth ${AUTH_URL}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}

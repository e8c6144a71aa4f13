// listen.mjs: three socket.io-client sockets that print what they receive,
// for tests/socketio_target.rs (which emits to them through the gateway's
// Socket.IO target, as backends' emitters do).
//   a: namespace "/",     user 1001 (room user:1001)
//   b: namespace "/",     user 1002 (room user:1002)
//   c: namespace "/chat", user 1001 (room /chat#user:1001)
// Env: SIO_URL, TOKEN_A (uid 1001), TOKEN_B (uid 1002).
// Prints `ready {"a":sid,"b":sid,"c":sid}`, then one line per event:
// `got <socket> <event> <JSON of the arguments, binary as {"bin":[bytes]}>`
// and `disconnect <socket> <reason>`. Exits when stdin closes.
import { io } from "socket.io-client";

const { SIO_URL, TOKEN_A, TOKEN_B } = process.env;
const opts = (token) => ({ auth: { token }, reconnection: false, transports: ["websocket"] });
const sockets = {
  a: io(SIO_URL, opts(TOKEN_A)),
  b: io(SIO_URL, opts(TOKEN_B)),
  c: io(`${SIO_URL}/chat`, opts(TOKEN_A)),
};
const show = (v) => (Buffer.isBuffer(v) ? { bin: [...v] } : v);
for (const [name, s] of Object.entries(sockets)) {
  s.onAny((event, ...args) => console.log(`got ${name} ${event} ${JSON.stringify(args.map(show))}`));
  s.on("disconnect", (reason) => console.log(`disconnect ${name} ${reason}`));
  s.on("connect_error", (e) => console.log(`connect_error ${name} ${e.message}`));
}
await Promise.all(Object.values(sockets).map((s) => new Promise((r) => (s.connected ? r() : s.once("connect", r)))));
console.log(`ready ${JSON.stringify({ a: sockets.a.id, b: sockets.b.id, c: sockets.c.id })}`);
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));

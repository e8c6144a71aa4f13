// Socket.IO clients (socket.io-client, default transports) of a gateway,
// reporting what they receive, for tests/emitters.rs.
//
//   node clients.mjs URL SPEC
//
// SPEC: a JSON list of {name, namespace?, rooms: [...], query?}; each
// client connects to URL + namespace with the query `rooms=a,b` (the test's
// script joins them), or with `query` when given. Prints one JSON line per happening:
//   {"ready": {name: sid, ...}}                      all connected
//   {"client": name, "event": E, "args": [...]}      an event (Buffers as {"b64": ...})
//   {"client": name, "disconnect": reason}
// and exits when its standard input closes.
import { io } from "socket.io-client";

const [url, specText] = process.argv.slice(2);
const spec = JSON.parse(specText);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const plain = (v) => {
  if (v instanceof ArrayBuffer) v = Buffer.from(v);
  if (Buffer.isBuffer(v)) return { b64: v.toString("base64") };
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
};

const sids = {};
await Promise.all(
  spec.map(
    (c) =>
      new Promise((resolve, reject) => {
        const ns = c.namespace && c.namespace !== "/" ? c.namespace : "";
        const s = io(url + ns, {
          query: c.query || { rooms: (c.rooms || []).join(",") },
          forceNew: true,
          reconnection: false,
        });
        s.onAny((event, ...args) => out({ client: c.name, event, args: plain(args) }));
        s.on("connect", () => {
          sids[c.name] = s.id;
          resolve();
        });
        s.on("connect_error", (e) => reject(new Error(`${c.name}: ${e.message}`)));
        s.on("disconnect", (reason) => out({ client: c.name, disconnect: reason }));
      }),
  ),
);
out({ ready: sids });
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));

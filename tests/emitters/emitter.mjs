// A Node backend emitting through Redis with @socket.io/redis-emitter.
//
//   node emitter.mjs URL KEY < commands.json
//
// commands.json: a list of {event, args, namespace?, rooms?, except?}; a
// string "b64:..." in args is sent as a Buffer. Prints "sent N" once Redis
// has taken every publish.
import { createClient } from "redis";
import { Emitter } from "@socket.io/redis-emitter";

const [url, key] = process.argv.slice(2);
let input = "";
for await (const chunk of process.stdin) input += chunk;
const commands = JSON.parse(input);

const binary = (v) => {
  if (typeof v === "string" && v.startsWith("b64:")) return Buffer.from(v.slice(4), "base64");
  if (Array.isArray(v)) return v.map(binary);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, binary(x)]));
  return v;
};

const client = createClient({ url });
await client.connect();
const emitter = new Emitter(client, { key });
for (const c of commands) {
  let op = emitter.of(c.namespace || "/");
  if (c.rooms) op = op.to(c.rooms);
  if (c.except) op = op.except(c.except);
  op.emit(c.event, ...binary(c.args || []));
}
await client.quit(); // after every queued PUBLISH
console.log(`sent ${commands.length}`);

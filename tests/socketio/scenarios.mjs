// scenarios.mjs: socket.io-client (the npm package, default options unless a
// scenario says otherwise) against a running connmix Socket.IO server.
// Run by tests/socketio.rs: `node scenarios.mjs <scenario>`, with
//   SIO_URL   http://127.0.0.1:<port> of a server running lua/entry.socketio.lua
//   ECHO_URL  http://127.0.0.1:<port> of a server running lua/examples/socketio_echo.lua
//   API_URL   http://127.0.0.1:<api port>
//   TOKEN     a valid token of user USER_ID
// Prints "ok <scenario>" and exits 0, or prints why and exits 1.
import { io } from "socket.io-client";

const { SIO_URL, ECHO_URL, API_URL, TOKEN, USER_ID } = process.env;
const scenario = process.argv[2];

function fail(why) {
  console.error(`FAIL ${scenario}: ${why}`);
  process.exit(1);
}
setTimeout(() => fail("timed out"), 20000).unref();

function once(emitter, event) {
  return new Promise((resolve) => emitter.once(event, (...args) => resolve(args)));
}

function assertEq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) fail(`${what}: expected ${e}, got ${a}`);
}

async function publish(body) {
  const r = await fetch(`${API_URL}/v1/mesh/publish`, { method: "POST", body: JSON.stringify(body) });
  const j = await r.json();
  if (!j.r || j.r.s < 1) fail(`publish ${JSON.stringify(body)} reached nobody: ${JSON.stringify(j)}`);
  return j;
}

/** Connected; polling first, then the upgrade to WebSocket. */
async function connectAndUpgrade(opts) {
  const socket = io(SIO_URL, { ...opts, reconnection: false });
  let first = null;
  socket.io.once("open", () => (first = socket.io.engine.transport.name));
  const [err] = await Promise.race([once(socket, "connect").then(() => [null]), once(socket, "connect_error")]);
  if (err) fail(`connect_error: ${err.message}`);
  assertEq(first, "polling", "first transport");
  if (socket.io.engine.transport.name !== "websocket") await once(socket.io.engine, "upgrade");
  assertEq(socket.io.engine.transport.name, "websocket", "transport after the upgrade");
  return socket;
}

/** Events the server emits arrive: a publish to the user's room. */
async function receivesPublish(socket) {
  const got = once(socket, "message");
  await publish({ c: `user:${USER_ID}`, d: JSON.stringify({ hello: "world", n: 1 }) });
  const [data] = await got;
  assertEq(data, { hello: "world", n: 1 }, "published event argument");
  // `e` names the event; `d` is its argument.
  const named = once(socket, "following notify");
  await publish({ c: `user:${USER_ID}`, e: "following notify", d: JSON.stringify({ user_id: 1 }) });
  assertEq((await named)[0], { user_id: 1 }, "event named by e");
}

/** An event the client emits with an ack callback gets its ack. */
async function acked(socket) {
  const res = await socket.timeout(5000).emitWithAck("subscribe", { channel: "public:news" });
  assertEq(res, { result: true }, "subscribe ack");
  const bad = await socket.timeout(5000).emitWithAck("subscribe", { channel: "user:999" });
  assertEq(bad, { code: 8, msg: "Invalid channel" }, "ack for another user's room");
  const got = once(socket, "message");
  await publish({ c: "public:news", d: "plain text" });
  assertEq((await got)[0], "plain text", "a publish that is not JSON arrives as a string");
}

async function refused(opts, expected) {
  const socket = io(SIO_URL, { ...opts, reconnection: false });
  const [err] = await Promise.race([once(socket, "connect").then(() => [null]), once(socket, "connect_error")]);
  if (!err) fail("connected with a bad token");
  if (!err.message.startsWith(expected)) fail(`connect_error says ${JSON.stringify(err.message)}, expected ${expected}...`);
  socket.close();
}

const scenarios = {
  async "query-token"() {
    const socket = await connectAndUpgrade({ query: { token: TOKEN } });
    await receivesPublish(socket);
    await acked(socket);
    socket.close();
  },
  async "auth-token"() {
    const socket = await connectAndUpgrade({ auth: { token: TOKEN } });
    await receivesPublish(socket);
    socket.close();
  },
  async "bad-token"() {
    await refused({ auth: { token: "aaa.bbb.ccc" } }, "Auth failed");
    await refused({ query: { token: "aaa.bbb.ccc" } }, "Auth failed");
    await refused({}, "Missing token");
  },
  async namespaces() {
    // A room of namespace /chat is the channel "/chat#<room>".
    const main = io(SIO_URL, { auth: { token: TOKEN }, reconnection: false, transports: ["websocket"] });
    const chat = io(`${SIO_URL}/chat`, { auth: { token: TOKEN }, reconnection: false, transports: ["websocket"] });
    await Promise.all([once(main, "connect"), once(chat, "connect")]);
    let leaked = null;
    main.on("room event", (d) => (leaked = d));
    const got = once(chat, "room event");
    await publish({ c: `/chat#user:${USER_ID}`, e: "room event", d: "to chat" });
    assertEq((await got)[0], "to chat", "event in namespace /chat");
    // The main namespace's socket got nothing: a later event shows it.
    const later = once(main, "room event");
    await publish({ c: `user:${USER_ID}`, e: "room event", d: "to main" });
    assertEq((await later)[0], "to main", "event in namespace /");
    assertEq(leaked, "to main", "the /chat event never reached namespace /");
    main.close();
    chat.close();
  },
  async binary() {
    const socket = io(ECHO_URL, { reconnection: false });
    await once(socket, "connect");
    const back = once(socket, "message-back");
    socket.emit("message", Buffer.from([1, 2, 3]), { nested: Buffer.from([4, 5]) }, "text");
    const [bin, obj, text] = await back;
    assertEq([...bin], [1, 2, 3], "binary argument echoed");
    assertEq([...obj.nested], [4, 5], "nested binary echoed");
    assertEq(text, "text", "text argument echoed");
    const acks = await socket.timeout(5000).emitWithAck("message-with-ack", Buffer.from([9, 8]), 7);
    assertEq([...acks], [9, 8], "binary ack");
    socket.close();
  },
};

if (!scenarios[scenario]) fail(`unknown scenario; one of ${Object.keys(scenarios).join(", ")}`);
await scenarios[scenario]();
console.log(`ok ${scenario}`);
process.exit(0);

// client.test.mjs: ConnmixClient against a live gateway (target/debug/connmix
// running the shipped message-center script) and a Node stand-in auth API,
// plus protocol unit tests on a fake socket. Run: npm test (node --test).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import vm from "node:vm";
import WS from "ws";
import { ConnmixClient, ConnmixError } from "../connmix.mjs";
import { startAuthApi, startGateway, waitFor, sleep } from "./gateway.mjs";

const FAST = { minDelay: 50, maxDelay: 400, factor: 2, jitter: 0.2 };

/** Collects a client's events; next(name) waits for the next one of a kind. */
function recorder(client, names = ["open", "close", "reconnecting", "message", "error"]) {
    const events = [];
    const cursor = {};
    for (const n of names) {
        client.on(n, (a, b) => events.push({ name: n, a, b }));
    }
    return {
        events,
        of: (name) => events.filter((e) => e.name === name),
        async next(name) {
            const from = cursor[name] ?? 0;
            const e = await waitFor(() => this.of(name)[from], `event ${name} #${from + 1}`);
            cursor[name] = from + 1;
            return e;
        },
    };
}

describe("live gateway", () => {
    let auth;
    let gw;
    const clients = [];
    const client = (opts = {}) => {
        const c = new ConnmixClient(gw.url, { WebSocket: WS, reconnect: FAST, ...opts });
        clients.push(c);
        return c;
    };

    before(async () => {
        auth = await startAuthApi();
        gw = await startGateway({ auth });
    });

    after(async () => {
        clients.forEach((c) => c.close());
        await gw?.stop();
        await auth?.close();
    });

    test("connect, auth, subscribe and receive a publish byte for byte", async () => {
        const c = client();
        const rec = recorder(c);
        await c.connect();
        assert.deepEqual(await c.auth("tok1001"), { result: true });
        assert.deepEqual(await c.subscribe("@user"), { result: true });
        assert.deepEqual([...c.channels], ["@user"]);

        const d = '{"event":"@user","data":{"uid":1001,"msg":"Hello \u00e9\u2713 \\"q\\""}}';
        const env = await gw.publishDelivered("user:1001", d);
        assert.deepEqual(env, { E: null, r: { s: 1, f: 0 } });
        const m = await rec.next("message");
        assert.equal(m.b, d, "raw frame is exactly the published d");
        assert.deepEqual(m.a, JSON.parse(d));

        await gw.publishDelivered("user:1001", "plain text, not JSON");
        const m2 = await rec.next("message");
        assert.equal(m2.a, "plain text, not JSON");

        assert.deepEqual(await c.unsubscribe("@user"), { result: true });
        assert.equal(c.channels.size, 0);
        const env2 = await gw.publish("user:1001", "nobody");
        assert.equal(env2.r.s, 0);
    });

    test("whoami names the connection; a send to that id reaches it", async () => {
        const c = client();
        const rec = recorder(c);
        await c.connect();
        assert.deepEqual(Object.keys(await c.whoami()), ["client_id"], "no uid before auth");
        await c.auth("tok1001");
        const me = await c.whoami();
        assert.equal(me.uid, 1001);
        assert.match(me.client_id, /^\d+$/);
        const r = await fetch(gw.api("/v1/mesh/send"), {
            method: "POST",
            body: JSON.stringify({ c: me.client_id, d: "just you" }),
        });
        assert.deepEqual(await r.json(), { E: null, r: { s: true } });
        assert.equal((await rec.next("message")).b, "just you");
    });

    test("a token in the options authenticates on connect", async () => {
        const c = client({ token: "tok1002" });
        await c.connect();
        assert.deepEqual(await c.subscribe("@user"), { result: true });
        const rec = recorder(c, ["message"]);
        await gw.publishDelivered("user:1002", "for 1002");
        assert.equal((await rec.next("message")).a, "for 1002");
    });

    test("auth failure rejects with code 7", async () => {
        const c = client();
        await c.connect();
        await assert.rejects(c.auth("not-a-token"), (e) => {
            assert.ok(e instanceof ConnmixError);
            assert.equal(e.code, 7);
            assert.equal(e.msg, "Auth failed");
            return true;
        });
        // the connection stays usable
        assert.deepEqual(await c.auth("tok1003"), { result: true });

        const bad = client({ token: "nope" });
        await assert.rejects(bad.connect(), (e) => e.code === 7);
    });

    test("subscribe before auth rejects with code 1", async () => {
        const c = client();
        await c.connect();
        await assert.rejects(c.subscribe("@user"), (e) => {
            assert.ok(e instanceof ConnmixError);
            assert.equal(e.code, 1);
            assert.equal(e.msg, "Not Auth");
            return true;
        });
        assert.equal(c.channels.size, 0);
    });

    test("server-side drop: reconnects, re-authenticates, re-subscribes, receives the next publish", async () => {
        const before = auth.connected.length;
        const c = client({ token: "tok2001" });
        const rec = recorder(c);
        await c.connect();
        await c.subscribe("@user");
        const first = await auth.nthClient(before + 1);
        const authsBefore = auth.authBodies.length;

        await gw.closeClient(first);
        const closed = await rec.next("close");
        assert.equal(closed.a.willReconnect, true);
        await rec.next("reconnecting");
        const open = await waitFor(() => rec.of("open").find((e) => e.a.reconnected), "reconnected open");
        assert.equal(open.a.authenticated, true);
        const second = await auth.nthClient(before + 2);
        assert.notEqual(second, first);
        assert.ok(auth.authBodies.length > authsBefore, "authenticated again");
        assert.deepEqual(JSON.parse(auth.authBodies.at(-1)), { token: "tok2001" });

        const d = '{"event":"@user","data":{"msg":"after reconnect"}}';
        await gw.publishDelivered("user:2001", d);
        const m = await rec.next("message");
        assert.equal(m.b, d);
    });

    test("close() does not reconnect", async () => {
        const c = client({ token: "tok3001" });
        const rec = recorder(c);
        await c.connect();
        await c.subscribe("@user");
        const count = auth.connected.length;
        c.close();
        await rec.next("close");
        assert.equal(c.state, "closed");
        await sleep(FAST.maxDelay * 2); // several backoff periods
        assert.equal(rec.of("reconnecting").length, 0);
        assert.equal(auth.connected.length, count);
        const env = await gw.publish("user:3001", "gone");
        assert.equal(env.r.s, 0);
        await assert.rejects(c.subscribe("@user"), (e) => e.code === "ECLOSED");
    });
});

/** A scripted stand-in for WebSocket: the test plays the server. */
class FakeSocket {
    static all = [];
    static failOpen = false;
    constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        FakeSocket.all.push(this);
        setTimeout(() => {
            if (FakeSocket.failOpen) {
                this.readyState = 3;
                this.onclose?.({ code: 1006, reason: "", wasClean: false });
            } else {
                this.readyState = 1;
                this.onopen?.({});
            }
        }, 0);
    }
    send(s) {
        this.sent.push(JSON.parse(s));
    }
    close(code = 1000) {
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code, reason: "", wasClean: true }), 0);
    }
    push(v) {
        this.onmessage?.({ data: typeof v === "string" ? v : JSON.stringify(v) });
    }
}

describe("protocol (fake socket)", () => {
    test("replies match pending requests first in, first out; other frames are pushes", async () => {
        FakeSocket.all = [];
        FakeSocket.failOpen = false;
        const c = new ConnmixClient("ws://fake", { WebSocket: FakeSocket, heartbeat: false });
        const rec = recorder(c, ["message"]);
        await c.connect();
        const ws = FakeSocket.all[0];
        const a = c.auth("t");
        const s = c.subscribe("@user");
        await waitFor(() => ws.sent.length === 2, "two requests");
        assert.deepEqual(ws.sent, [{ op: "auth", token: "t" }, { op: "subscribe", channel: "@user" }]);
        ws.push({ event: "@user", data: 1 }); // a push between requests and replies
        ws.push({ result: true });
        ws.push({ code: 9, msg: "too many channels" });
        assert.deepEqual(await a, { result: true });
        await assert.rejects(s, (e) => e.code === 9 && e.msg === "too many channels");
        ws.push({ code: 3, msg: "nothing pending: a push" });
        ws.push("[1,2]");
        assert.deepEqual(rec.of("message").map((e) => e.a), [{ event: "@user", data: 1 }, { code: 3, msg: "nothing pending: a push" }, [1, 2]]);
        c.close();
    });

    test("heartbeat replies are consumed, a timed-out request keeps its place", async () => {
        FakeSocket.all = [];
        FakeSocket.failOpen = false;
        const c = new ConnmixClient("ws://fake", { WebSocket: FakeSocket, heartbeat: { interval: 20 }, requestTimeout: 30 });
        const rec = recorder(c, ["message"]);
        await c.connect();
        const ws = FakeSocket.all[0];
        await waitFor(() => ws.sent.length >= 1, "a heartbeat");
        assert.deepEqual(ws.sent[0], { op: "ping" });
        ws.push({ code: 10, msg: "Unknown op" });
        c.heartbeat = false; // the interval keeps running: stop it the hard way
        c._stopHeartbeat();
        // answer every heartbeat sent so far, then time a request out
        for (let i = 1; i < ws.sent.length; i++) {
            ws.push({ code: 10, msg: "Unknown op" });
        }
        const late = c.subscribe("x");
        await assert.rejects(late, (e) => e.code === "ETIMEDOUT");
        const next = c.subscribe("y");
        ws.push({ result: true }); // the late reply of "x": dropped
        ws.push({ code: 8, msg: "Invalid channel" }); // the reply of "y"
        await assert.rejects(next, (e) => e.code === 8);
        assert.deepEqual([...c.channels], []);
        assert.equal(rec.of("message").length, 0);
        c.close();
    });

    test("reconnect delays grow exponentially up to maxDelay", async () => {
        FakeSocket.all = [];
        FakeSocket.failOpen = true;
        const c = new ConnmixClient("ws://fake", { WebSocket: FakeSocket, reconnect: { minDelay: 5, maxDelay: 40, factor: 2, jitter: 0 } });
        const delays = [];
        c.on("reconnecting", (e) => delays.push(e.delay));
        const p = c.connect();
        await waitFor(() => delays.length >= 6, "six attempts");
        assert.deepEqual(delays.slice(0, 6), [5, 10, 20, 40, 40, 40]);
        FakeSocket.failOpen = false;
        await p; // the connect() promise resolves once a socket opens
        assert.equal(c.state, "open");
        c.close();
    });

    test("jitter keeps delays within [base * (1 - jitter), base]", async () => {
        FakeSocket.all = [];
        FakeSocket.failOpen = true;
        const c = new ConnmixClient("ws://fake", { WebSocket: FakeSocket, reconnect: { minDelay: 100, maxDelay: 100, factor: 2, jitter: 0.5 } });
        const delays = [];
        c.on("reconnecting", (e) => delays.push(e.delay));
        c.connect().catch(() => {});
        await waitFor(() => delays.length >= 3, "three attempts");
        c.close();
        FakeSocket.failOpen = false;
        for (const d of delays) {
            assert.ok(d >= 50 && d <= 100, `delay ${d}`);
        }
    });
});

describe("loading", () => {
    test("connmix.js runs as a classic script and sets Connmix on the global object", () => {
        const src = fs.readFileSync(path.join(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), "../connmix.js"), "utf8");
        const window = { WebSocket: FakeSocket };
        window.window = window;
        vm.createContext(window);
        new vm.Script(src, { filename: "connmix.js" }).runInContext(window);
        assert.equal(typeof window.Connmix.ConnmixClient, "function");
        assert.equal(typeof window.Connmix.ConnmixError, "function");
        const c = new window.Connmix.ConnmixClient("ws://x");
        assert.equal(c.state, "idle");
    });

    test("connmix.mjs gives named ES module exports of the same classes", async () => {
        const m = await import("../connmix.mjs");
        assert.equal(m.ConnmixClient, ConnmixClient);
        assert.equal(m.default, ConnmixClient);
        assert.equal(globalThis.Connmix.ConnmixClient, ConnmixClient);
    });
});

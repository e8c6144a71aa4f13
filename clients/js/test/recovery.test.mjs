// recovery.test.mjs: the client's history positions and its own recovery
// after a reconnect, against a live gateway whose user:* channels keep
// history and whose script option history_positions is on.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import WS from "ws";
import { ConnmixClient } from "../connmix.mjs";
import { startAuthApi, startGateway, waitFor } from "./gateway.mjs";

const FAST = { minDelay: 50, maxDelay: 400, factor: 2, jitter: 0.2 };
const HISTORY = [
    "  history:",
    "    - channels: 'user:*'",
    "      historySize: 100",
    "      historyTtl: 300",
];

describe("recovery", () => {
    let auth;
    let gw;
    const clients = [];

    before(async () => {
        auth = await startAuthApi();
        gw = await startGateway({ auth, engineLines: HISTORY, serverOptions: { history_positions: "true" } });
    });

    after(async () => {
        clients.forEach((c) => c.close());
        await gw?.stop();
        await auth?.close();
    });

    async function clientCount() {
        const text = await (await fetch(gw.api("/metrics"))).text();
        const line = text.split("\n").find((l) => l.startsWith("connmix_engine_servers_clients "));
        return line ? Number(line.split(" ")[1]) : 0;
    }

    function client(token) {
        const c = new ConnmixClient(gw.url, { WebSocket: WS, reconnect: FAST, token });
        clients.push(c);
        const seen = { messages: [], recoveries: [] };
        c.on("message", (data, raw, pos) => seen.messages.push({ data, raw, pos }));
        c.on("recovery", (r) => seen.recoveries.push(r));
        return { c, seen };
    }

    test("pushes carry positions; after a drop the client gets exactly what it missed, then live ones", async () => {
        const { c, seen } = client("tok7001");
        const before = auth.connected.length;
        await c.connect();
        const r = await c.subscribe("@user");
        assert.equal(r.result, true);
        assert.equal(r.offset, 0);
        const epoch = r.epoch;
        assert.equal(typeof epoch, "string");
        await gw.publishDelivered("user:7001", '{"n":1}');
        await waitFor(() => seen.messages.length === 1, "first push");
        assert.deepEqual(seen.messages[0].data, { n: 1 });
        assert.equal(seen.messages[0].raw, '{"n":1}');
        assert.deepEqual(seen.messages[0].pos, { channel: "user:7001", offset: 1, epoch });
        assert.deepEqual(c.positions.get("@user"), { offset: 1, epoch });

        // Drop the connection and keep the next one from logging in until
        // five publishes went by (they reach nobody).
        const release = auth.holdAuth();
        await gw.closeClient(await auth.nthClient(before + 1));
        await auth.nthClient(before + 2);
        // The old connection is gone once the gateway holds only the new one.
        await waitFor(async () => (await clientCount()) === 1, "the old connection gone");
        for (let n = 2; n <= 6; n++) {
            const env = await gw.publish("user:7001", `{"n":${n}}`);
            assert.equal(env.r.s, 0);
            assert.equal(env.r.offset, n);
        }
        release();
        await waitFor(() => seen.recoveries.length === 1, "recovery event");
        assert.deepEqual(seen.recoveries[0], { channel: "@user", recovered: true, offset: 6, epoch });
        assert.deepEqual(seen.messages.map((m) => m.data.n), [1, 2, 3, 4, 5, 6]);
        await gw.publishDelivered("user:7001", '{"n":7}');
        await waitFor(() => seen.messages.length === 7, "live push");
        assert.deepEqual(seen.messages.map((m) => m.pos.offset), [1, 2, 3, 4, 5, 6, 7]);
        assert.deepEqual(c.positions.get("@user"), { offset: 7, epoch });
    });

    test("a position the gateway no longer knows is reported as not recovered", async () => {
        const { c, seen } = client("tok7002");
        const before = auth.connected.length;
        await c.connect();
        await c.subscribe("@user");
        c.positions.set("@user", { offset: 3, epoch: "gone" });
        await gw.closeClient(await auth.nthClient(before + 1));
        await waitFor(() => seen.recoveries.length === 1, "recovery event");
        assert.equal(seen.recoveries[0].recovered, false);
        assert.notEqual(seen.recoveries[0].epoch, "gone");
        assert.equal(c.positions.get("@user").epoch, seen.recoveries[0].epoch);
    });
});

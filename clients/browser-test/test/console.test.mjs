// console.test.mjs: /console in headless Chromium against a live gateway: it
// needs the read role, its live numbers follow connections and publishes,
// recent Lua errors show up, and its publish form is refused (403 shown) for
// a read-only user but works for a writer. Also checks /v1/stats directly.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import WS from "ws";
import { ConnmixClient } from "../../js/connmix.mjs";
import { REPO, startAuthApi, startGateway, waitFor } from "../../js/test/gateway.mjs";
import { launch } from "./browser.mjs";

const ADMIN = { username: "admin", password: "admin-pw", roles: ["read", "write"] };
const VIEWER = { username: "viewer", password: "viewer-pw", roles: ["read"] };
const basic = (u) => "Basic " + Buffer.from(`${u.username}:${u.password}`).toString("base64");

let auth;
let gw;
const clients = [];

before(async () => {
    auth = await startAuthApi();
    gw = await startGateway({ auth, users: [ADMIN, VIEWER] });
});

after(async () => {
    clients.forEach((c) => c.close());
    await gw?.stop();
    await auth?.close();
});

async function login(uid) {
    const c = new ConnmixClient(gw.url, { WebSocket: WS, token: `tok${uid}` });
    clients.push(c);
    const got = [];
    c.on("message", (v, raw) => got.push(raw));
    await c.connect();
    await c.subscribe("@user");
    return { c, got };
}

const num = (page, id) => page.$eval(`#${id}`, (el) => Number(el.textContent.replace(/,/g, "")));

test("access: /console and /v1/stats need read, /demo does not", async () => {
    assert.equal((await fetch(gw.api("/console"))).status, 401);
    assert.equal((await fetch(gw.api("/v1/stats"))).status, 401);
    assert.equal((await fetch(gw.api("/demo"))).status, 200);
    assert.equal((await fetch(gw.api("/connmix.js"))).status, 200);
    const info = await (await fetch(gw.api("/v1/demo/info"))).json();
    assert.equal(info.ws_url, gw.url);
    assert.equal(info.api_open, false);
    const r = await fetch(gw.api("/v1/stats"), { headers: { authorization: basic(VIEWER) } });
    assert.equal(r.status, 200);
    const s = await r.json();
    for (const k of ["node", "clients", "channels", "read_messages", "send_messages", "top_channels", "recent_lua_errors", "nodes"]) {
        assert.ok(k in s, `stats has ${k}`);
    }
    const post = await fetch(gw.api("/v1/stats"), { method: "POST", headers: { authorization: basic(VIEWER) } });
    assert.equal(post.status, 405);
});

test("console: live numbers, top channels, Lua errors; publish refused for a read-only user", async () => {
    const browser = await launch({ httpCredentials: { username: VIEWER.username, password: VIEWER.password } });
    try {
        const { page, errors } = browser;
        const resp = await page.goto(gw.api("/console"));
        assert.equal(resp.status(), 200);
        await page.waitForSelector('#live[data-state="open"]');
        const clients0 = await num(page, "clients");
        const out0 = await num(page, "out-total");

        const a = await login(1001);
        const b = await login(1001);
        await login(1002);
        await page.waitForFunction((n) => document.getElementById("clients").textContent === String(n), clients0 + 3);
        await page.waitForFunction(() => {
            const row = document.querySelector("#top-channels tr");
            return row && row.textContent.includes("user:1001") && row.textContent.includes("2");
        });

        for (let i = 0; i < 5; i++) {
            await gw.publishDelivered("user:1001", `burst ${i}`, ADMIN);
        }
        await page.waitForFunction((want) => Number(document.getElementById("out-total").textContent.replace(/,/g, "")) >= want, out0 + 10);
        await page.waitForFunction(() => Number(document.getElementById("out-rate").textContent) > 0);
        await page.waitForFunction(() => Number(document.getElementById("in-rate").textContent) >= 0);
        // (the gateway has written the frames; the clients may still be reading)
        await waitFor(() => a.got.length >= 5 && b.got.length >= 5, "5 pushes on each connection of 1001");
        assert.equal(a.got.length, 5);
        assert.equal(b.got.length, 5);

        // A Lua error (the test script raises on "boom") shows up in the list,
        // without its text: a read-only user does not see what a script put
        // in an error (it may carry a token or a backend's answer).
        a.c.send("boom");
        await page.waitForFunction(() => document.getElementById("lua-errors").textContent.includes("message hidden: needs the write role"));
        assert.doesNotMatch(await page.textContent("#lua-errors"), /boom requested by the test/);

        // The publish form: 403 for a read-only user, nothing delivered.
        await page.fill("#pub-channel", "user:1001");
        await page.fill("#pub-data", "from a reader");
        await page.click("#publish");
        await page.waitForFunction(() => document.getElementById("publish-result").textContent.startsWith("403"));
        assert.match(await page.textContent("#publish-result"), /403: needs write role/);
        assert.equal(a.got.length, 5);

        fs.mkdirSync(path.join(REPO, "test-artifacts"), { recursive: true });
        await page.screenshot({ path: path.join(REPO, "test-artifacts/browser-console.png"), fullPage: true });
        assert.deepEqual(errors, []);
    } finally {
        await browser.close();
    }
});

test("console: a writer sees Lua error text and its publish form delivers", async () => {
    const browser = await launch({ httpCredentials: { username: ADMIN.username, password: ADMIN.password } });
    try {
        const { page } = browser;
        const u = await login(4242);
        await page.goto(gw.api("/console"));
        await page.waitForSelector('#live[data-state="open"]');
        // A writer sees a Lua error's text.
        u.c.send("boom");
        await page.waitForFunction(() => document.getElementById("lua-errors").textContent.includes("boom requested by the test"));
        await page.fill("#pub-channel", "user:4242");
        await page.fill("#pub-data", '{"msg":"from the console"}');
        await page.click("#publish");
        await page.waitForFunction(() => document.getElementById("publish-result").textContent.startsWith("Delivered"));
        assert.match(await page.textContent("#publish-result"), /Delivered to 1 connection\(s\), 0 failed/);
        await waitFor(() => u.got.length >= 1, "the console's publish at the client");
        assert.deepEqual(u.got, ['{"msg":"from the console"}']);
    } finally {
        await browser.close();
    }
});

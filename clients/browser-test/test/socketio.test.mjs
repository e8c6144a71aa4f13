// socketio.test.mjs: /demo/socketio in headless Chromium against a live
// gateway with a `protocol: socketio` server running lua/entry.socketio.lua:
// the page loads socket.io-client from the npm package's dist/ build (served
// here, as a user would serve their own copy), connects with a JWT through
// polling then WebSocket, and shows an event a backend publishes with `e`;
// a bad token shows the script's connect_error message.
// Saves test-artifacts/browser-socketio.png.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { createRequire } from "node:module";
import { REPO, mintToken, startGateway } from "../../js/test/gateway.mjs";
import { launch } from "./browser.mjs";

const SECRET = "browser-socketio-secret";
const require = createRequire(import.meta.url);
const DIST = path.join(path.dirname(require.resolve("socket.io-client/package.json")), "dist");

let gw;
let browser;
let dist;

before(async () => {
    gw = await startGateway({ protocol: "socketio", serverOptions: { jwt_secret: SECRET } });
    // The user's own socket.io-client build: the npm package's dist/ folder.
    dist = http.createServer((req, res) => {
        const file = path.join(DIST, path.basename(new URL(req.url, "http://x").pathname));
        if (!fs.existsSync(file)) {
            res.writeHead(404).end();
            return;
        }
        res.writeHead(200, { "content-type": "text/javascript" }).end(fs.readFileSync(file));
    });
    await new Promise((r) => dist.listen(0, "127.0.0.1", r));
    browser = await launch();
});

after(async () => {
    await browser?.close();
    await gw?.stop();
    dist?.close();
});

test("Socket.IO demo: the user's socket.io-client connects, upgrades and shows events", async () => {
    const { page, errors } = browser;
    const client = `http://127.0.0.1:${dist.address().port}/socket.io.min.js`;
    const resp = await page.goto(gw.api(`/demo/socketio?client=${encodeURIComponent(client)}`));
    assert.equal(resp.status(), 200, "/demo/socketio needs no credentials");
    await page.waitForFunction((want) => document.getElementById("url").value === want, gw.url);
    assert.equal(await page.inputValue("#client"), client);

    await page.fill("#token", mintToken(1001, SECRET));
    await page.click("#connect");
    await page.waitForSelector('#status[data-state="open"]');
    await page.waitForFunction(() => document.getElementById("transport").textContent === "websocket");
    assert.ok((await page.textContent("#events")).includes("upgraded to websocket"));

    const d = JSON.stringify({ user_id: 1001, msg: "Hello from the browser test" });
    const r = await fetch(gw.api("/v1/mesh/publish"), {
        method: "POST",
        body: JSON.stringify({ c: "user:1001", e: "following notify", d }),
    });
    assert.equal(JSON.parse(await r.text()).r.s, 1);
    await page.waitForFunction(
        (want) => {
            const li = document.querySelector("#messages li.push");
            return li && li.querySelector(".e").textContent === "following notify" && li.querySelector(".m").textContent === want;
        },
        d,
    );
    fs.mkdirSync(path.join(REPO, "test-artifacts"), { recursive: true });
    await page.screenshot({ path: path.join(REPO, "test-artifacts/browser-socketio.png"), fullPage: true });

    await page.click("#disconnect");
    await page.waitForSelector('#status[data-state="closed"]');
    await page.fill("#token", "aaa.bbb.ccc");
    await page.click("#connect");
    await page.waitForSelector('#status[data-state="error"]');
    assert.match(await page.textContent("#status"), /connect_error: Auth failed/);
    assert.deepEqual(errors, []);
});

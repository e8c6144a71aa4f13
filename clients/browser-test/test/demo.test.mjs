// demo.test.mjs: /demo in headless Chromium against a live gateway: connect
// with a JWT minted by `connmix token` (verified by the shipped script with
// the jwt_secret option), receive a publish, lose the connection from the server side
// (conn.call close), see "reconnecting", reconnect, receive the next publish.
// Saves test-artifacts/browser-demo.png.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { REPO, mintToken, startAuthApi, startGateway } from "../../js/test/gateway.mjs";
import { launch } from "./browser.mjs";

const ADMIN = { username: "admin", password: "admin-pw", roles: ["read", "write"] };
const SECRET = "browser-test-secret";

let auth;
let gw;
let browser;

before(async () => {
    auth = await startAuthApi(); // only for the client ids (POST /connected)
    gw = await startGateway({ auth, users: [ADMIN], serverOptions: { jwt_secret: SECRET } });
    browser = await launch();
});

after(async () => {
    await browser?.close();
    await gw?.stop();
    await auth?.close();
});

test("demo page: connect, receive pushes, survive a server-side drop", async () => {
    const { page, errors } = browser;
    const token = mintToken(1001, SECRET);
    assert.equal(auth.authBodies.length, 0);

    const resp = await page.goto(gw.api("/demo"));
    assert.equal(resp.status(), 200, "/demo needs no credentials");
    await page.waitForFunction((want) => document.getElementById("url").value === want, gw.url);

    await page.fill("#token", token);
    await page.click("#connect");
    await page.waitForSelector('#status[data-state="open"]');
    assert.match(await page.textContent("#status"), /user 1001, subscribed to @user/);
    const first = await auth.nthClient(1);

    // The page shows this connection's id (step 5 of the README) and how to send to it.
    await page.waitForFunction((want) => document.getElementById("client-id").textContent === want, String(first));
    assert.ok((await page.textContent("#curl-send")).includes(`"c":"${first}"`));

    const curl = await page.textContent("#curl");
    assert.ok(curl.includes(`curl -XPOST ${gw.api("/v1/mesh/publish")} -u USER:PASSWORD`), curl);
    assert.ok(curl.includes('"c":"user:1001"'), curl);

    const d1 = '{"event":"@user","data":{"uid":1001,"msg":"Hello from the browser test \u2713"}}';
    await gw.publishDelivered("user:1001", d1, ADMIN);
    await page.waitForFunction((want) => document.querySelector("#messages li.push .m")?.textContent === want, d1);

    // Record every status the page shows from now on.
    await page.evaluate(() => {
        const el = document.getElementById("status");
        window.__states = [];
        new MutationObserver(() => window.__states.push(el.dataset.state)).observe(el, { attributes: true, childList: true });
    });
    await gw.closeClient(first, ADMIN);
    await page.waitForFunction(() => window.__states.includes("reconnecting"));
    await page.waitForFunction(() => {
        const s = window.__states;
        return s.lastIndexOf("open") > s.indexOf("reconnecting");
    });
    assert.match(await page.textContent("#status"), /Connected again/);
    const second = await auth.nthClient(2);
    assert.equal(auth.authBodies.length, 0, "the JWT was verified locally, auth_url never asked");
    assert.notEqual(second, first, "a new connection");
    await page.waitForFunction((want) => document.getElementById("client-id").textContent === want, String(second));
    const events = await page.textContent("#events");
    assert.match(events, /connection closed \(code 1000/);
    assert.match(events, /reconnecting in \d+ ms \(attempt 1\)/);
    assert.match(events, /reconnected: authenticated and subscribed again to @user/);

    const d2 = '{"event":"@user","data":{"uid":1001,"msg":"after the reconnect"}}';
    await gw.publishDelivered("user:1001", d2, ADMIN);
    await page.waitForFunction((want) => document.querySelector("#messages li.push .m")?.textContent === want, d2);
    assert.equal(await page.locator("#messages li.push").count(), 2);

    const out = path.join(REPO, "test-artifacts/browser-demo.png");
    fs.mkdirSync(path.dirname(out), { recursive: true });
    await page.screenshot({ path: out, fullPage: true });
    assert.deepEqual(errors, [], "no uncaught page errors");
});

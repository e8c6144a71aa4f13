// gateway.mjs: test harness shared by the JS client tests and the browser
// tests. Starts the real target/debug/connmix (building it when absent) with a
// generated config on free loopback ports, plus a tiny auth API standing in
// for the user's backend (token "tok<uid>" is user <uid>, anything else 401).
//
// The entry script is the shipped lua/entry.websocket.lua (beside copies of
// the modules it requires from lua/) with a few lines
// appended that report each new connection's client id to the auth API
// (POST /connected), so a test can close that connection from the server side
// with the WebSocket API's conn.call "close", and that turn the text frame
// "boom" into a Lua error.
//
// Waits are for events, bounded by a deadline that only a broken build hits.

import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
// cargo's output folder: CARGO_TARGET_DIR when set (as cargo itself does).
const TARGET_DIR = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
    : path.join(REPO, "target");
export const BIN = path.join(TARGET_DIR, "debug", "connmix");
export const DEADLINE_MS = 15000;

/** Builds target/debug/connmix when it is missing. */
export function ensureBinary() {
    if (fs.existsSync(BIN)) {
        return BIN;
    }
    const r = spawnSync("cargo", ["build", "-p", "connmix", "--bin", "connmix"], { cwd: REPO, stdio: "inherit" });
    if (r.status !== 0 || !fs.existsSync(BIN)) {
        throw new Error("cargo build failed");
    }
    return BIN;
}

/** Mints an HS256 JWT with `connmix token`. */
export function mintToken(uid, secret, ttl = "1h") {
    const r = spawnSync(ensureBinary(), ["token", "--uid", String(uid), "--secret", secret, "--ttl", ttl], { encoding: "utf8" });
    if (r.status !== 0) {
        throw new Error(`connmix token failed: ${r.stderr}`);
    }
    const token = r.stdout.trim().split(/\s+/).pop();
    if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) {
        throw new Error(`connmix token printed no JWT: ${r.stdout}`);
    }
    return token;
}

export function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.unref();
        s.on("error", reject);
        s.listen(0, "127.0.0.1", () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

export function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns a truthy value; throws `what` at the deadline. */
export async function waitFor(fn, what, ms = DEADLINE_MS) {
    const end = Date.now() + ms;
    for (;;) {
        const v = await fn();
        if (v) {
            return v;
        }
        if (Date.now() > end) {
            throw new Error(`timed out waiting for ${what}`);
        }
        await sleep(20);
    }
}

function readBody(req) {
    return new Promise((resolve) => {
        let b = "";
        req.setEncoding("utf8");
        req.on("data", (c) => (b += c));
        req.on("end", () => resolve(b));
    });
}

/** The stand-in backend: POST /websocket_auth and POST /connected. */
export async function startAuthApi() {
    const connected = [];
    const authBodies = [];
    // While set, auth requests wait for it (holdAuth).
    let held = null;
    const server = http.createServer(async (req, res) => {
        const body = await readBody(req);
        if (req.url !== "/connected" && held) {
            await held;
        }
        const reply = (status, v) => {
            res.writeHead(status, { "content-type": "application/json" });
            res.end(JSON.stringify(v));
        };
        if (req.url === "/connected") {
            connected.push(body.trim());
            return reply(200, {});
        }
        authBodies.push(body);
        let token = "";
        try {
            token = JSON.parse(body).token || "";
        } catch {
            /* bad token */
        }
        const m = /^tok(\d+)$/.exec(token);
        if (m) {
            return reply(200, { uid: Number(m[1]) });
        }
        return reply(401, { error: "bad token" });
    });
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    const port = server.address().port;
    return {
        port,
        url: `http://127.0.0.1:${port}/websocket_auth`,
        notifyUrl: `http://127.0.0.1:${port}/connected`,
        connected,
        authBodies,
        /** Waits for the n-th connection (1-based) and returns its client id. */
        nthClient: (n) => waitFor(() => connected[n - 1], `connection #${n}`),
        /** Auth requests wait until the returned function is called. */
        holdAuth: () => {
            let release;
            held = new Promise((r) => (release = r));
            return () => {
                held = null;
                release();
            };
        },
        close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
    };
}

const NOTIFY_LUA = `
-- appended by clients/js/test/gateway.mjs: report the client id of every
-- new connection to the test (option test_notify_url), and raise a Lua
-- error on the text frame "boom" (for the console's recent errors).
local __test_base_on_message = on_message
function on_message(msg, conn)
    if msg.data == "boom" then
        error("boom requested by the test")
    end
    return __test_base_on_message(msg, conn)
end

local __test_base_on_connect = on_connect
function on_connect(conn)
    conn = conn or mix.websocket()
    local url = mix.server.option("test_notify_url")
    if url then
        mix.http.request("POST", url, { body = conn:client_id(), timeout = 5 })
    end
    if __test_base_on_connect then
        return __test_base_on_connect(conn)
    end
end
`;

function yamlString(s) {
    return JSON.stringify(String(s));
}

/**
 * Starts a gateway. options: auth (from startAuthApi), users ([{username,
 * password, roles}]), serverOptions ({name: value}), engineLines (YAML
 * lines under engine:, indented by two spaces).
 */
export async function startGateway({ auth, users = [], serverOptions = {}, protocol = "websocket", engineLines = [] } = {}) {
    ensureBinary();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "connmix-js-"));
    const apiPort = await freePort();
    const wsPort = await freePort();
    const socketio = protocol === "socketio";
    const entry = path.join(dir, socketio ? "entry.socketio.lua" : "entry.websocket.lua");
    // The shipped entry script requires modules from its own folder
    // (message_center.lua): copy them beside the generated entry.
    for (const f of fs.readdirSync(path.join(REPO, "lua"))) {
        if (f.endsWith(".lua") && f !== "entry.websocket.lua") {
            fs.copyFileSync(path.join(REPO, "lua", f), path.join(dir, f));
        }
    }
    const shipped = fs.readFileSync(path.join(REPO, "lua/entry.websocket.lua"), "utf8");
    if (!socketio) {
        fs.writeFileSync(entry, shipped + "\n" + NOTIFY_LUA);
    }
    const options = { path: socketio ? "/socket.io/" : "/chat", ...serverOptions };
    if (auth) {
        options.auth_url ??= auth.url;
        options.test_notify_url ??= auth.notifyUrl;
    }
    const lines = [
        "logging:",
        "  level: info",
        "access:",
        users.length ? "  users:" : "  users: []",
        ...users.map((u) => `    - {username: ${yamlString(u.username)}, password: ${yamlString(u.password)}, roles: [${u.roles.join(", ")}], host: '*'}`),
        "engine:",
        "  workers: 1",
        "  shutdownTimeout: 2",
        ...engineLines,
        "  apiServer:",
        `    port: ${apiPort}`,
        "    bind: 127.0.0.1",
        "  servers:",
        `    - port: ${wsPort}`,
        "      bind: 127.0.0.1",
        `      protocol: ${protocol}`,
        `      entry: ${yamlString(entry)}`,
        "      options:",
        ...Object.entries(options).map(([k, v]) => `        - {name: ${k}, value: ${yamlString(v)}}`),
    ];
    const config = path.join(dir, "connmix.yaml");
    fs.writeFileSync(config, lines.join("\n") + "\n");
    const logPath = path.join(dir, "connmix.out");
    const log = fs.openSync(logPath, "w");
    const child = spawn(BIN, ["dev", "-f", config], { cwd: dir, stdio: ["ignore", log, log] });
    let exited = null;
    child.on("exit", (code, signal) => (exited = { code, signal }));
    const readLog = () => fs.readFileSync(logPath, "utf8");
    for (const port of [apiPort, wsPort]) {
        await waitFor(async () => {
            if (exited) {
                throw new Error(`connmix exited (${JSON.stringify(exited)}):\n${readLog()}`);
            }
            return canConnect(port);
        }, `connmix listening on ${port}`);
    }
    const api = (p) => `http://127.0.0.1:${apiPort}${p}`;
    const gw = {
        dir,
        apiPort,
        wsPort,
        url: socketio ? `http://127.0.0.1:${wsPort}` : `ws://127.0.0.1:${wsPort}/chat`,
        api,
        log: readLog,
        /** POST /v1/mesh/publish; returns the parsed envelope. */
        async publish(channel, data, creds) {
            const headers = { "content-type": "application/json" };
            if (creds) {
                headers.authorization = "Basic " + Buffer.from(`${creds.username}:${creds.password}`).toString("base64");
            }
            const r = await fetch(api("/v1/mesh/publish"), { method: "POST", headers, body: JSON.stringify({ c: channel, d: data }) });
            const text = await r.text();
            if (r.status !== 200) {
                throw new Error(`publish answered ${r.status}: ${text}`);
            }
            return JSON.parse(text);
        },
        /** Publishes and insists that at least one subscriber was reached. */
        async publishDelivered(channel, data, creds) {
            const env = await gw.publish(channel, data, creds);
            if (env.E || env.r.s < 1) {
                throw new Error(`publish reached nobody: ${JSON.stringify(env)}`);
            }
            return env;
        },
        /** Closes a client from the server side: conn.call "close" over /ws/v1. */
        async closeClient(clientId, creds) {
            const WS = globalThis.WebSocket ?? (await import("ws")).default;
            let url = `ws://127.0.0.1:${apiPort}/ws/v1`;
            const opts = {};
            if (creds) {
                opts.headers = { authorization: "Basic " + Buffer.from(`${creds.username}:${creds.password}`).toString("base64") };
            }
            const ws = WS === globalThis.WebSocket ? new WS(url) : new WS(url, opts);
            const reply = await new Promise((resolve, reject) => {
                const timer = setTimeout(() => reject(new Error("no conn.call reply")), DEADLINE_MS);
                ws.onerror = (e) => reject(e.error || new Error("ws api error"));
                ws.onopen = () => ws.send(JSON.stringify({ m: "conn.call", p: { c: clientId, f: "close" }, i: 1 }));
                ws.onmessage = (ev) => {
                    const v = JSON.parse(String(ev.data));
                    if (v.i === 1) {
                        clearTimeout(timer);
                        resolve(v);
                    }
                };
            });
            ws.close();
            if (reply.E) {
                throw new Error(`conn.call close failed: ${JSON.stringify(reply.E)}`);
            }
            return reply;
        },
        /** SIGTERM, then waits for the process to exit. */
        async stop() {
            if (!exited) {
                const done = new Promise((r) => child.once("exit", r));
                child.kill("SIGTERM");
                const t = setTimeout(() => child.kill("SIGKILL"), 5000);
                await done;
                clearTimeout(t);
            }
            fs.closeSync(log);
            fs.rmSync(dir, { recursive: true, force: true });
        },
    };
    return gw;
}

function canConnect(port) {
    return new Promise((resolve) => {
        const s = net.connect(port, "127.0.0.1");
        s.once("connect", () => { s.destroy(); resolve(true); });
        s.once("error", () => resolve(false));
    });
}

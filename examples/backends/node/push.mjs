#!/usr/bin/env node
// Push to connmix from a Node backend (Node 18+, global fetch, no dependency).
//
//   node push.mjs user 1001 "Hello"             # {"event":"@user",...} to every connection of user 1001
//   node push.mjs publish user:1001 'any text'   # d delivered byte for byte to channel user:1001
//   node push.mjs send 4294967297 'just you'     # to one connection (its conn:client_id())
//
// Environment: CONNMIX_API (default http://127.0.0.1:6789), CONNMIX_USER and
// CONNMIX_PASSWORD when access.users is set. Import publish / send / pushToUser
// in your app.

import path from "node:path";
import { fileURLToPath } from "node:url";

const API = process.env.CONNMIX_API || "http://127.0.0.1:6789";

export class ConnmixError extends Error {
    constructor(code, message) {
        super(`${code}: ${message}`);
        this.code = code;
    }
}

/** POSTs a JSON body to the API and returns the envelope's "r". */
export async function call(path, body, { api = API, user = process.env.CONNMIX_USER, password = process.env.CONNMIX_PASSWORD } = {}) {
    const headers = { "Content-Type": "application/json" };
    if (user) {
        headers.Authorization = "Basic " + Buffer.from(`${user}:${password ?? ""}`).toString("base64");
    }
    const res = await fetch(api.replace(/\/$/, "") + path, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (res.status !== 200) {
        throw new ConnmixError(res.status, text.trim()); // 401/403 access, 413 too large, ...
    }
    const envelope = JSON.parse(text);
    if (envelope.E) {
        throw new ConnmixError(envelope.E.c, envelope.E.m);
    }
    return envelope.r;
}

/** Every subscriber of channel receives data (a string) as one text frame: {s, f}. */
export const publish = (channel, data, opts) => call("/v1/mesh/publish", { c: channel, d: data }, opts);

/** One connection, on any node, receives data. */
export const send = (clientId, data, opts) => call("/v1/mesh/send", { c: String(clientId), d: data }, opts);

/** The message center's event for user uid (channel user:<uid>). */
export function pushToUser(uid, msg, opts) {
    const uidValue = /^\d+$/.test(String(uid)) ? Number(uid) : uid;
    return publish(`user:${uid}`, JSON.stringify({ event: "@user", data: { uid: uidValue, msg } }), opts);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
    const [cmd, a, b] = process.argv.slice(2);
    const run = { user: () => pushToUser(a, b ?? ""), publish: () => publish(a, b ?? ""), send: () => send(a, b ?? "") }[cmd];
    if (!run || a === undefined) {
        console.error("usage: node push.mjs user UID MSG | publish CHANNEL DATA | send CLIENT_ID DATA");
        process.exit(2);
    }
    try {
        console.log(JSON.stringify(await run()));
    } catch (e) {
        console.error(`connmix error ${e.message}`);
        process.exit(1);
    }
}

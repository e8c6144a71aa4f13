/*
 * connmix.js: a client for connmix's "user message center" protocol
 * (lua/entry.websocket.lua), for browsers and Node 20+. One file, no build
 * step, no dependency.
 *
 * Loading (the file is UMD-style, so it is one script for every loader):
 *   - classic browser script: <script src="/connmix.js"></script>
 *       -> window.Connmix = { ConnmixClient, ConnmixError, VERSION }
 *   - CommonJS: const { ConnmixClient } = require("./connmix.js")
 *   - ES module with named exports: import { ConnmixClient } from "./connmix.mjs"
 *     (connmix.mjs is a two-line shim that imports this file and re-exports
 *     window.Connmix / globalThis.Connmix; a file that must also run as a
 *     classic script cannot carry `export` statements itself.)
 *
 * Protocol: JSON text frames. Requests {"op":"auth","token":...},
 * {"op":"subscribe","channel":...}, {"op":"unsubscribe","channel":...},
 * {"op":"whoami"} are
 * answered by {"result":...} or {"code":n,"msg":"..."}. Replies carry no
 * request id, so they are matched first-in first-out to pending requests:
 * while a request is pending, a frame that is {"result":...} or has both
 * "code" and "msg" is its reply; every other frame is a push ("message").
 *
 * After an unexpected drop (anything but close()) the client reconnects with
 * exponential backoff and jitter, authenticates again with the last token
 * that succeeded and joins again every channel it had joined.
 *
 * History and recovery (channels the gateway keeps history for, with the
 * script option history_positions=true): the client keeps the position
 * ({offset, epoch}) of each channel from the subscribe reply and from every
 * push, which then arrives as {"channel","offset","epoch","data"} and is
 * handed to "message" as its data (the position is the third argument).
 * After a reconnect it joins again with {"since": position}: the gateway
 * replays what was missed, in order, before anything new, and the client
 * emits "recovery" ({channel, recovered, offset, epoch}); recovered false
 * means the gap was no longer in history: reload your state.
 *
 * Keep-alive: the gateway closes a connection that sends nothing for the
 * server's readTimeout (60 s by default) and browsers cannot send ping
 * frames, so every heartbeat.interval ms the client sends heartbeat.message
 * ({"op":"ping"}) as a request whose reply (the shipped script answers every
 * frame, here with "Unknown op") is consumed silently. With a script that
 * does not answer every text frame, pass heartbeat: false.
 */
(function (root, factory) {
    "use strict";
    var api = factory();
    if (typeof module === "object" && module && typeof module.exports === "object") {
        module.exports = api;
    }
    if (root) {
        root.Connmix = api;
    }
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : typeof window !== "undefined" ? window : undefined, function () {
    "use strict";

    var VERSION = "0.1.0";

    /** A {"code","msg"} reply from the gateway, or a client-side failure. */
    class ConnmixError extends Error {
        constructor(code, msg) {
            super(String(msg) + " (code " + code + ")");
            this.name = "ConnmixError";
            this.code = code;
            this.msg = msg;
        }
    }

    var DEFAULT_RECONNECT = { minDelay: 500, maxDelay: 30000, factor: 2, jitter: 0.5 };
    var DEFAULT_HEARTBEAT = { interval: 25000, message: '{"op":"ping"}' };

    function isReply(v) {
        return v !== null && typeof v === "object" && !Array.isArray(v) &&
            (Object.prototype.hasOwnProperty.call(v, "result") ||
                (Object.prototype.hasOwnProperty.call(v, "code") &&
                    Object.prototype.hasOwnProperty.call(v, "msg")));
    }

    // A push that carries its position (script option history_positions).
    function isPositioned(v) {
        return v !== null && typeof v === "object" && !Array.isArray(v) &&
            Object.keys(v).length === 4 && typeof v.channel === "string" &&
            typeof v.offset === "number" && typeof v.epoch === "string" &&
            typeof v.data === "string";
    }

    function textOf(data) {
        if (typeof data === "string") {
            return data;
        }
        return null;
    }

    /**
     * new ConnmixClient(url, {token, reconnect, heartbeat, requestTimeout, WebSocket})
     *
     * Events (on/off): "open" (session ready: socket open, authenticated when
     * a token is known, channels joined again), "message" (a push: parsed JSON
     * when it parses, the raw string otherwise, binary frames as ArrayBuffer;
     * the raw frame is the second argument, the position {channel, offset,
     * epoch} of a positioned push the third), "close" ({code, reason,
     * willReconnect}), "reconnecting" ({attempt, delay}), "recovery"
     * ({channel, recovered, offset, epoch} after a rejoin with a position),
     * "error" (Error).
     */
    class ConnmixClient {
        constructor(url, options) {
            var o = options || {};
            this.url = url;
            this.token = o.token || null;
            this.reconnect = o.reconnect === false ? false : Object.assign({}, DEFAULT_RECONNECT, o.reconnect || {});
            this.heartbeat = o.heartbeat === false ? false : Object.assign({}, DEFAULT_HEARTBEAT, o.heartbeat || {});
            this.requestTimeout = o.requestTimeout == null ? 10000 : o.requestTimeout;
            this.WebSocket = o.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
            if (!this.WebSocket) {
                throw new Error("connmix: no WebSocket implementation; pass options.WebSocket (e.g. the ws package)");
            }
            /** Channels joined (as requested, e.g. "@user"); joined again after a reconnect. */
            this.channels = new Set();
            /** Last known position {offset, epoch} per channel (history channels). */
            this.positions = new Map();
            /** "idle" | "connecting" | "open" | "reconnecting" | "closed" */
            this.state = "idle";
            this._listeners = {};
            this._ws = null;
            this._pending = []; // FIFO of {resolve, reject, timer, done}
            this._waiting = []; // requests made before the session is ready
            this._ready = false;
            this._attempt = 0;
            this._retryTimer = null;
            this._beatTimer = null;
            this._closedByUser = false;
            this._everReady = false;
            this._connectWaiters = [];
        }

        on(event, cb) {
            (this._listeners[event] = this._listeners[event] || []).push(cb);
            return this;
        }

        off(event, cb) {
            var l = this._listeners[event];
            if (l) {
                this._listeners[event] = l.filter(function (f) { return f !== cb; });
            }
            return this;
        }

        _emit(event) {
            var args = Array.prototype.slice.call(arguments, 1);
            var l = (this._listeners[event] || []).slice();
            for (var i = 0; i < l.length; i++) {
                try {
                    l[i].apply(this, args);
                } catch (e) {
                    if (event !== "error") {
                        this._emit("error", e);
                    }
                }
            }
        }

        /**
         * Opens the connection. Resolves once the session is ready (see
         * "open"); rejects if the first authentication is refused, or when
         * close() is called first. A socket that cannot open is retried.
         */
        connect() {
            var self = this;
            this._closedByUser = false;
            var p = new Promise(function (resolve, reject) {
                self._connectWaiters.push({ resolve: resolve, reject: reject });
            });
            if (this._ready) {
                this._settleConnect(null);
            } else if (!this._ws && !this._retryTimer) {
                this._open();
            }
            return p;
        }

        _settleConnect(err) {
            var w = this._connectWaiters;
            this._connectWaiters = [];
            w.forEach(function (x) {
                if (err) {
                    x.reject(err);
                } else {
                    x.resolve();
                }
            });
        }

        _open() {
            var self = this;
            this.state = this._attempt > 0 ? "reconnecting" : "connecting";
            var ws;
            try {
                ws = new this.WebSocket(this.url);
            } catch (e) {
                this._emit("error", e);
                this._scheduleReconnect();
                return;
            }
            try {
                ws.binaryType = "arraybuffer";
            } catch (e) {
                /* not settable: keep the default */
            }
            this._ws = ws;
            ws.onopen = function () {
                if (self._ws === ws) {
                    self._restore();
                }
            };
            ws.onmessage = function (ev) {
                if (self._ws === ws) {
                    self._frame(ev.data);
                }
            };
            ws.onerror = function (ev) {
                if (self._ws === ws) {
                    self._emit("error", ev && ev.error ? ev.error : new Error("connmix: WebSocket error"));
                }
            };
            ws.onclose = function (ev) {
                if (self._ws === ws) {
                    self._dropped(ev || {});
                }
            };
        }

        // Authenticates and joins the channels again, then lets waiting requests go.
        _restore() {
            var self = this;
            var ws = this._ws;
            var first = !this._everReady;
            var steps = Promise.resolve();
            var authErr = null;
            if (this.token) {
                steps = this._request({ op: "auth", token: this.token }).catch(function (e) {
                    authErr = e;
                });
            }
            steps.then(function () {
                if (self._ws !== ws) {
                    return;
                }
                if (authErr) {
                    self._emit("error", authErr);
                    return;
                }
                return Promise.all(Array.from(self.channels).map(function (ch) {
                    var since = self.positions.get(ch);
                    var req = { op: "subscribe", channel: ch };
                    if (since) {
                        req.since = { offset: since.offset, epoch: since.epoch };
                    }
                    return self._request(req).then(function (r) {
                        self._track(ch, r);
                        if (since) {
                            self._emit("recovery", { channel: ch, recovered: r.recovered === true, offset: r.offset, epoch: r.epoch });
                        }
                    }).catch(function (e) {
                        if (self._ws === ws) {
                            self._emit("error", e);
                        }
                    });
                }));
            }).then(function () {
                if (self._ws !== ws || ws.readyState !== 1) {
                    return; // dropped while restoring: the next connection restores
                }
                self._ready = true;
                self._everReady = true;
                self._attempt = 0;
                self.state = "open";
                self._startHeartbeat();
                var waiting = self._waiting;
                self._waiting = [];
                waiting.forEach(function (w) { w(); });
                self._emit("open", { reconnected: !first, authenticated: !!self.token && !authErr });
                self._settleConnect(authErr);
            });
        }

        _frame(data) {
            var text = textOf(data);
            if (text === null) {
                if (data && typeof data === "object" && typeof data.byteLength === "number" && !(data instanceof ArrayBuffer) && data.buffer) {
                    // Node Buffer / typed array: hand out an ArrayBuffer like browsers do
                    data = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
                }
                this._emit("message", data, data);
                return;
            }
            var value;
            var parsed = false;
            try {
                value = JSON.parse(text);
                parsed = true;
            } catch (e) {
                value = text;
            }
            if (parsed && isPositioned(value)) {
                var pos = { channel: value.channel, offset: value.offset, epoch: value.epoch };
                this.positions.forEach(function (known) {
                    if (known.epoch === pos.epoch && known.offset < pos.offset) {
                        known.offset = pos.offset;
                    }
                });
                var inner = value.data;
                try {
                    inner = JSON.parse(value.data);
                } catch (e) {
                    /* a text push that is not JSON */
                }
                this._emit("message", inner, value.data, pos);
                return;
            }
            if (parsed && this._pending.length > 0 && isReply(value)) {
                var p = this._pending.shift();
                clearTimeout(p.timer);
                if (p.done) {
                    return; // a timed-out request's late reply
                }
                if (Object.prototype.hasOwnProperty.call(value, "code") && Object.prototype.hasOwnProperty.call(value, "msg")) {
                    p.reject(new ConnmixError(value.code, value.msg));
                } else {
                    p.resolve(value);
                }
                return;
            }
            this._emit("message", value, text);
        }

        // Sends a request now (the socket must be open) and waits for its reply.
        _request(obj, silent) {
            var self = this;
            return new Promise(function (resolve, reject) {
                var ws = self._ws;
                if (!ws || ws.readyState !== 1) {
                    reject(new ConnmixError("ECLOSED", "not connected"));
                    return;
                }
                var entry = { resolve: resolve, reject: reject, timer: null, done: false, silent: !!silent };
                if (self.requestTimeout > 0) {
                    entry.timer = setTimeout(function () {
                        entry.done = true; // keeps its place: its late reply is dropped
                        reject(new ConnmixError("ETIMEDOUT", "no reply within " + self.requestTimeout + " ms"));
                    }, self.requestTimeout);
                }
                self._pending.push(entry);
                try {
                    ws.send(JSON.stringify(obj));
                } catch (e) {
                    self._pending.splice(self._pending.indexOf(entry), 1);
                    clearTimeout(entry.timer);
                    reject(e);
                }
            });
        }

        // A user request: waits for the session to be ready, then sends.
        _userRequest(obj) {
            var self = this;
            if (this.state === "closed" || this.state === "idle") {
                return Promise.reject(new ConnmixError("ECLOSED", "not connected; call connect() first"));
            }
            if (this._ready) {
                return this._request(obj);
            }
            return new Promise(function (resolve, reject) {
                self._waiting.push(function (err) {
                    if (err) {
                        reject(err);
                    } else {
                        self._request(obj).then(resolve, reject);
                    }
                });
            });
        }

        /** {"op":"auth","token":token}; the token is reused after a reconnect. */
        auth(token) {
            var self = this;
            return this._userRequest({ op: "auth", token: token }).then(function (r) {
                self.token = token;
                return r;
            });
        }

        /** {"op":"subscribe","channel":channel}; joined again after a reconnect. */
        subscribe(channel) {
            var self = this;
            return this._userRequest({ op: "subscribe", channel: channel }).then(function (r) {
                self.channels.add(channel);
                self._track(channel, r);
                return r;
            });
        }

        /** {"op":"unsubscribe","channel":channel}. */
        unsubscribe(channel) {
            var self = this;
            this.channels.delete(channel);
            this.positions.delete(channel);
            return this._userRequest({ op: "unsubscribe", channel: channel }).then(function (r) {
                self.channels.delete(channel);
                return r;
            });
        }

        /**
         * {"op":"whoami"}: resolves to {client_id, uid} (uid once logged in);
         * client_id is what a backend passes to POST /v1/mesh/send. A new
         * connection (after a reconnect) has a new id.
         */
        whoami() {
            return this._userRequest({ op: "whoami" }).then(function (r) {
                return r.result;
            });
        }

        // Keeps the position a subscribe reply carries (the later of it and
        // what pushes already told, within one epoch).
        _track(channel, r) {
            if (!r || typeof r.offset !== "number" || typeof r.epoch !== "string") {
                return;
            }
            var known = this.positions.get(channel);
            if (known && known.epoch === r.epoch && known.offset > r.offset) {
                return;
            }
            this.positions.set(channel, { offset: r.offset, epoch: r.epoch });
        }

        /** Sends a raw frame (string, or object as JSON); no reply is expected. */
        send(data) {
            if (!this._ws || this._ws.readyState !== 1) {
                throw new ConnmixError("ECLOSED", "not connected");
            }
            this._ws.send(typeof data === "string" ? data : JSON.stringify(data));
        }

        // Keeps the connection alive (the gateway closes a connection that sends
        // nothing for readTimeout seconds; browsers cannot send ping frames).
        // The heartbeat is a request: its reply, whatever it is, is consumed.
        _startHeartbeat() {
            var self = this;
            this._stopHeartbeat();
            if (!this.heartbeat || !(this.heartbeat.interval > 0)) {
                return;
            }
            this._beatTimer = setInterval(function () {
                if (!self._ws || self._ws.readyState !== 1) {
                    return;
                }
                var ws = self._ws;
                var entry = { resolve: function () {}, reject: function () {}, timer: null, done: true };
                self._pending.push(entry);
                try {
                    ws.send(self.heartbeat.message);
                } catch (e) {
                    /* the close handler takes over */
                }
            }, this.heartbeat.interval);
        }

        _stopHeartbeat() {
            if (this._beatTimer) {
                clearInterval(this._beatTimer);
                this._beatTimer = null;
            }
        }

        _failPending(err) {
            var pending = this._pending;
            this._pending = [];
            pending.forEach(function (p) {
                clearTimeout(p.timer);
                if (!p.done) {
                    p.reject(err);
                }
            });
        }

        _dropped(ev) {
            this._ws = null;
            this._ready = false;
            this._stopHeartbeat();
            this._failPending(new ConnmixError("ECLOSED", "connection closed"));
            var willReconnect = !this._closedByUser && this.reconnect !== false;
            this._emit("close", { code: ev.code, reason: ev.reason, wasClean: ev.wasClean, willReconnect: willReconnect });
            if (willReconnect) {
                this._scheduleReconnect();
            } else {
                this.state = "closed";
            }
        }

        _scheduleReconnect() {
            var self = this;
            if (this._closedByUser || this.reconnect === false) {
                this.state = "closed";
                return;
            }
            var r = this.reconnect;
            var base = Math.min(r.maxDelay, r.minDelay * Math.pow(r.factor, this._attempt));
            var jitter = Math.max(0, Math.min(1, r.jitter));
            var delay = Math.round(base * (1 - jitter * Math.random()));
            this._attempt += 1;
            this.state = "reconnecting";
            this._emit("reconnecting", { attempt: this._attempt, delay: delay });
            this._retryTimer = setTimeout(function () {
                self._retryTimer = null;
                if (!self._closedByUser) {
                    self._open();
                }
            }, delay);
        }

        /** Closes for good: no reconnect; pending requests reject. */
        close(code, reason) {
            this._closedByUser = true;
            this._ready = false;
            this.state = "closed";
            this._stopHeartbeat();
            if (this._retryTimer) {
                clearTimeout(this._retryTimer);
                this._retryTimer = null;
            }
            var err = new ConnmixError("ECLOSED", "closed by close()");
            this._failPending(err);
            var waiting = this._waiting;
            this._waiting = [];
            waiting.forEach(function (w) { w(err); });
            this._settleConnect(err);
            var ws = this._ws;
            this._ws = null;
            if (ws) {
                var self = this;
                // The close event still arrives; it must not reconnect.
                ws.onclose = function (ev) {
                    self._emit("close", { code: ev && ev.code, reason: ev && ev.reason, wasClean: ev && ev.wasClean, willReconnect: false });
                };
                try {
                    ws.close(code || 1000, reason || "");
                } catch (e) {
                    /* already closing */
                }
            }
        }
    }

    return { ConnmixClient: ConnmixClient, ConnmixError: ConnmixError, VERSION: VERSION };
});

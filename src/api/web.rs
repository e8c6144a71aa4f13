//! The web pages of the API port (ext): static files compiled into the
//! binary (`web/`, and the JS client `clients/js/connmix.js`), and the two
//! small JSON endpoints they read.
//!
//! Public, no credentials even when `access.users` is set (they show no data
//! a WebSocket client does not already have):
//! - `GET /demo`: the "user message center" demo page;
//! - `GET /demo/socketio`: the Socket.IO demo (loads the user's own
//!   socket.io-client build from a URL it is given);
//! - `GET /v1/demo/info`: the client WebSocket URLs the demo connects to;
//! - `GET /connmix.js`, `GET /app.css`: the client library and the style sheet.
//!
//! Role `read` (routed by [`super::http`]):
//! - `GET /console`: the operator console;
//! - `GET /v1/stats`: the numbers the console polls every second. The text
//!   of recent Lua errors (which can carry whatever a script put in them:
//!   tokens, backend answers) is shown only to a user with the `write` role
//!   (everyone when `access.users` is empty); for read-only users each
//!   entry keeps its time, hook, client and location, with `message: null`
//!   and `redacted: true`.

use super::ApiState;
use super::access::Role;
use super::response::{Body, respond};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use std::net::IpAddr;

const DEMO_HTML: &str = include_str!("../../web/demo.html");
const SOCKETIO_HTML: &str = include_str!("../../web/socketio.html");
const CONSOLE_HTML: &str = include_str!("../../web/console.html");
const APP_CSS: &str = include_str!("../../web/app.css");
const CONNMIX_JS: &str = include_str!("../../clients/js/connmix.js");

/// How many channels `/v1/stats` lists, busiest first.
const TOP_CHANNELS: usize = 10;

/// Answers the public paths; `None` for every other path.
pub fn public<B>(state: &ApiState, req: &Request<B>) -> Option<Response<Body>> {
    let path = req.uri().path();
    if !matches!(
        path,
        "/demo" | "/demo/socketio" | "/v1/demo/info" | "/connmix.js" | "/app.css"
    ) {
        return None;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "Method Not Allowed; use GET\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return Some(r);
    }
    Some(match path {
        "/demo" => page("text/html; charset=utf-8", DEMO_HTML),
        "/demo/socketio" => page("text/html; charset=utf-8", SOCKETIO_HTML),
        "/connmix.js" => page("text/javascript; charset=utf-8", CONNMIX_JS),
        "/app.css" => page("text/css; charset=utf-8", APP_CSS),
        _ => json(&demo_info(state, req)),
    })
}

/// Serves the `read` paths `/console` and `/v1/stats` (access already
/// checked); `headers` and `peer` decide whether Lua error text is shown.
pub fn serve(state: &ApiState, path: &str, headers: &HeaderMap, peer: IpAddr) -> Response<Body> {
    match path {
        "/console" => page("text/html; charset=utf-8", CONSOLE_HTML),
        _ => {
            let show_errors = state.access.check(headers, peer, Role::Write).is_ok();
            json(&stats(state, show_errors))
        }
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut r = respond(StatusCode::OK, content_type, body);
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

fn json(v: &Value) -> Response<Body> {
    let mut r = respond(StatusCode::OK, "application/json", v.to_string());
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// `{"ws_url", "servers": [{"url", "port", "path", "protocol"}], "api_open",
/// "version"}`; a Socket.IO server's `url` is the `http://` origin that
/// `io()` takes.
/// A server bound to a wildcard or loopback address is named by the host the
/// browser used to reach this page.
fn demo_info<B>(state: &ApiState, req: &Request<B>) -> Value {
    let seen_as = request_host(req).unwrap_or_else(|| "127.0.0.1".to_string());
    let servers: Vec<Value> = state
        .config
        .engine
        .servers
        .iter()
        .map(|s| {
            let host = match s.bind.parse::<IpAddr>() {
                Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() => match ip {
                    IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                },
                _ => seen_as.clone(),
            };
            let url = if s.is_engineio() {
                format!("http://{host}:{}", s.port)
            } else {
                format!("ws://{host}:{}{}", s.port, s.path())
            };
            json!({
                "url": url,
                "port": s.port,
                "path": s.path(),
                "protocol": s.protocol,
            })
        })
        .collect();
    json!({
        "ws_url": servers.first().map(|s| s["url"].clone()).unwrap_or(Value::Null),
        "servers": servers,
        "api_open": state.access.is_open(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// The host part of the request's `Host` header (`[::1]` kept bracketed).
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        format!("[{}]", rest.split(']').next()?)
    } else {
        host.split(':').next()?.to_string()
    };
    let safe = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    safe.then_some(name)
}

/// What the console shows; counters are totals since start (the console
/// turns them into rates). `show_errors`: include Lua error text.
fn stats(state: &ApiState, show_errors: bool) -> Value {
    let hub = &state.mesh.hub;
    let m = &state.mesh.metrics;
    let clients = hub.client_count();
    let channels = hub.channel_count();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let top: Vec<Value> = hub
        .top_channels(TOP_CHANNELS)
        .into_iter()
        .map(|(channel, subscribers)| json!({"channel": channel, "subscribers": subscribers}))
        .collect();
    json!({
        "node": hub.node(),
        "version": env!("CARGO_PKG_VERSION"),
        "time_ms": now_ms,
        // Every live node (just this one without a cluster); the others'
        // counts are from their last heartbeat.
        "nodes": state.mesh.nodes().into_iter().map(|n| json!({
            "id": if n.n == hub.node() { n.n.to_string() } else { format!("{} ({})", n.n, n.id) },
            "name": n.id,
            "self": n.n == hub.node(),
            "clients": if n.n == hub.node() { clients as u64 } else { n.clients },
            "channels": if n.n == hub.node() { channels as u64 } else { n.channels },
        })).collect::<Vec<_>>(),
        "nodes_known": m.nodes.get(),
        "clients": clients,
        "channels": channels,
        "read_messages": m.read_messages.get(),
        "send_messages": m.send_messages.get(),
        "send_errors": m.send_errors.get(),
        "lua_errors": m.lua_errors.get(),
        "slow_clients_closed": m.slow_clients_closed.get(),
        "top_channels": top,
        "recent_lua_errors": m.recent_lua_errors().into_iter().map(|e| {
            let mut v = json!(e);
            if !show_errors {
                v["message"] = Value::Null;
                v["redacted"] = Value::Bool(true);
            }
            v
        }).collect::<Vec<_>>(),
    })
}

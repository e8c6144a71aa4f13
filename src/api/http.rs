//! HTTP routing of the API port: `docs/http-api.md` (`/v1/mesh/publish`,
//! `/v1/mesh/send`, `/v1/mesh/batch`, `/v1/presence`, `/v1/history`), the WebSocket API upgrade at `/ws/v1`, and `/metrics`,
//! each behind [`super::access`]; the web pages (`/demo`, `/console`,
//! `/v1/stats`, ...) are [`super::web`]'s.
//!
//! Status codes: 200 with the JSON envelope for every API answer (errors
//! included, as CONNMIX does), 401/403 for access failures, 404 for an
//! unknown path, 405 for a wrong method, 413 for a body over
//! `apiServer.maxBodySize`.

use super::ApiState;
use super::access::{Denied, Role};
use super::ops::{self, ApiError};
use super::response::{Body, respond};
use crate::json_text::json_text;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn json_response(v: &Value) -> Response<Body> {
    respond(StatusCode::OK, "application/json", json_text(v))
}

/// An API answer: its envelope (`docs/http-api.md`), written straight from
/// the result.
fn answer(result: &Result<Value, ApiError>) -> Response<Body> {
    respond(
        StatusCode::OK,
        "application/json",
        ops::envelope_bytes(result),
    )
}

fn not_found() -> Response<Body> {
    respond(StatusCode::NOT_FOUND, "text/plain", "Not Found\n")
}

fn method_not_allowed(allow: &str) -> Response<Body> {
    let mut r = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        format!("Method Not Allowed; use {allow}\n"),
    );
    if let Ok(v) = header::HeaderValue::from_str(allow) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

/// The role a route needs, and the method it takes (presence also takes
/// `POST`, see [`handle`]); `None` for unknown paths.
fn route(path: &str) -> Option<(Role, Method)> {
    match path {
        "/v1/mesh/publish" | "/v1/mesh/send" | "/v1/mesh/batch" => {
            Some((Role::Write, Method::POST))
        }
        "/ws/v1" => Some((Role::Write, Method::GET)),
        "/metrics" => Some((Role::Read, Method::GET)),
        "/v1/mesh/nodes" => Some((Role::Read, Method::GET)),
        "/v1/history" => Some((Role::Read, Method::GET)),
        "/console" | "/v1/stats" => Some((Role::Read, Method::GET)),
        "/v1/connections" => Some((Role::Read, Method::GET)), // newcomer: lookup.rs
        "/v1/presence" | "/v1/presence/stats" => Some((Role::Read, Method::GET)),
        _ => None,
    }
}

fn denied(d: Denied) -> Response<Body> {
    match d {
        Denied::Unauthenticated => {
            let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain", "Unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"connmix\""),
            );
            r
        }
        Denied::Forbidden(why) => respond(
            StatusCode::FORBIDDEN,
            "text/plain",
            format!("Forbidden: {why}\n"),
        ),
    }
}

/// Routes one request.
pub async fn handle(
    state: Arc<ApiState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(r) = super::web::public(&state, &req) {
        return r;
    }
    // Browser pages from foreign origins stop here (security: api/origin.rs).
    if let Some(r) = super::origin::refuse(&state, &req) {
        return r;
    }
    let Some((role, method)) = route(&path) else {
        return not_found();
    };
    if let Err(d) = state.access.check(req.headers(), peer.ip(), role) {
        return denied(d);
    }
    let presence = path.starts_with("/v1/presence");
    // Presence and history take GET (query parameters) or POST (JSON).
    let get_or_post = presence || path == "/v1/history";
    if req.method() != method && !(get_or_post && req.method() == Method::POST) {
        return method_not_allowed(if get_or_post {
            "GET, POST"
        } else {
            method.as_str()
        });
    }
    match path.as_str() {
        "/ws/v1" => upgrade(state, req),
        "/v1/mesh/nodes" => answer(&Ok(
            serde_json::json!({"self": state.mesh.hub.node(), "nodes": state.mesh.nodes()}),
        )),
        "/console" | "/v1/stats" => super::web::serve(&state, &path, req.headers(), peer.ip()),
        "/v1/connections" => json_response(&super::lookup::lookup(&state, req.uri().query())),
        "/metrics" => {
            let m = &state.mesh.metrics;
            m.channels.set(state.mesh.hub.channel_count() as i64);
            state.mesh.queues.refresh_depth().await;
            respond(StatusCode::OK, "text/plain; version=0.0.4", m.render())
        }
        _ => {
            let read = if presence && req.method() == Method::GET {
                Ok(super::presence::query_params(req.uri().query()))
            } else if path == "/v1/history" && req.method() == Method::GET {
                Ok(super::history::query_params(req.uri().query()))
            } else {
                read_json(&state, req).await
            };
            let params = match read {
                Ok(v) => v,
                Err(BodyError::TooLarge) => {
                    return respond(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "text/plain",
                        format!(
                            "Request body larger than {} bytes (engine.apiServer.maxBodySize)\n",
                            state.config.engine.api_server.max_body_size
                        ),
                    );
                }
                Err(BodyError::Invalid(e)) => {
                    count(&state, &path, Err(&e));
                    return answer(&Err(e));
                }
            };
            let method = match path.as_str() {
                "/v1/mesh/publish" => "mesh.publish",
                "/v1/mesh/batch" => "mesh.batch",
                "/v1/presence" => "presence",
                "/v1/presence/stats" => "presence_stats",
                "/v1/history" => "history",
                _ => "mesh.send",
            };
            let result = ops::dispatch(&state, method, &params).await;
            count(&state, &path, result.as_ref().map(|_| ()));
            answer(&result)
        }
    }
}

fn count(state: &ApiState, path: &str, r: Result<(), &ApiError>) {
    let code = r.map_or_else(|e| e.code, |()| 0);
    state.mesh.metrics.count_api_request(path, code);
}

enum BodyError {
    TooLarge,
    Invalid(ApiError),
}

/// Reads the body within the size limit and the read timeout, and parses it
/// as JSON.
async fn read_json(state: &ApiState, req: Request<Incoming>) -> Result<Value, BodyError> {
    let limit = state.config.engine.api_server.max_body_size;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let timeout = Duration::from_secs(state.config.engine.api_server.read_timeout.max(1));
    let body = Limited::new(req.into_body(), limit);
    let bytes = match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => {
            return Err(BodyError::Invalid(ApiError::invalid(
                "timed out reading the body",
            )));
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(BodyError::TooLarge);
            }
            return Err(BodyError::Invalid(ApiError::invalid(format!(
                "cannot read the body: {e}"
            ))));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| BodyError::Invalid(ApiError::invalid(format!("invalid JSON: {e}"))))
}

/// Answers the `/ws/v1` upgrade and hands the socket to the WebSocket API.
fn upgrade(state: Arc<ApiState>, mut req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (true, Some(key)) = (is_upgrade, key) else {
        return respond(
            StatusCode::UPGRADE_REQUIRED,
            "text/plain",
            "This endpoint speaks WebSocket only\n",
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tracker = state.tracker.clone();
    tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("ws api upgrade failed: {e}");
                return;
            }
        };
        let limits = super::ws::socket_config(state.config.engine.api_server.max_body_size);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            tungstenite::protocol::Role::Server,
            Some(limits),
        )
        .await;
        let stop = state.stop.clone();
        super::ws::serve(ws, state, stop).await;
    });
    let mut r = respond(StatusCode::SWITCHING_PROTOCOLS, "text/plain", "");
    r.headers_mut().remove(header::CONTENT_TYPE);
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) =
        header::HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key.as_bytes()))
    {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

//! One TCP connection of a Socket.IO server, served by hyper: the Engine.IO
//! handshake (`GET ?EIO=4&transport=polling` or a WebSocket upgrade), the
//! polling requests of an open session, and upgrades to WebSocket.
//!
//! Requests for an existing session are handed to it through the sid table
//! (it may live on another worker); the answer comes back on a oneshot.
//! Errors are answered as the reference server does: 400 with
//! `{"code":n,"message":..}` (0 unknown transport, 1 unknown sid, 2 bad
//! handshake method, 3 bad request, 5 unsupported protocol version), 413
//! for a polling body over `maxPayload` (the session is closed too).

use super::engineio_packet as eio;
use super::session_open;
use super::{Command, Reply, SESSION_QUEUE, SioShared};
use crate::worker::WorkerState;
use crate::ws::handshake::UpgradeRequest;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Time to receive a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;
/// What runs on this connection's task once hyper hands over an upgrade.
type AfterUpgrade = Pin<Box<dyn Future<Output = ()>>>;

/// Serves one accepted connection to the end (a WebSocket session opened
/// on it included).
pub async fn serve(
    state: Rc<WorkerState>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<SioShared>,
) {
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    let after: Rc<RefCell<Option<AfterUpgrade>>> = Rc::new(RefCell::new(None));
    let svc = {
        let after = after.clone();
        hyper::service::service_fn(move |req| {
            let (state, shared, after) = (state.clone(), shared.clone(), after.clone());
            async move { Ok::<_, Infallible>(route(state, shared, peer, after, req).await) }
        })
    };
    // Boxed: the HTTP connection's state is freed once it hands over an
    // upgrade, not kept in the task for the WebSocket session's whole life.
    let conn = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades(),
    );
    if let Err(e) = conn.await {
        tracing::debug!("socket.io connection from {peer}: {e}");
    }
    let next = after.borrow_mut().take();
    if let Some(task) = next {
        task.await;
    }
}

/// The query parameters Engine.IO uses.
struct Query {
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

fn query(uri: &hyper::Uri) -> Query {
    let mut q = Query {
        eio: None,
        transport: None,
        sid: None,
    };
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match &*k {
            "EIO" => q.eio = Some(v.into_owned()),
            "transport" => q.transport = Some(v.into_owned()),
            "sid" => q.sid = Some(v.into_owned()),
            _ => {}
        }
    }
    q
}

/// A response with the CORS headers this server grants `origin`.
fn respond(
    shared: &SioShared,
    origin: Option<&HeaderValue>,
    status: StatusCode,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    if let Some(o) = origin
        && o.to_str().is_ok_and(|o| shared.opts.allows_origin(o))
    {
        h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        h.insert(
            hyper::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(hyper::header::VARY, HeaderValue::from_static("Origin"));
    }
    r
}

/// `400 {"code":n,"message":..}`.
fn error(
    shared: &SioShared,
    origin: Option<&HeaderValue>,
    code: u8,
    message: &str,
) -> Response<Body> {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut r = respond(shared, origin, StatusCode::BAD_REQUEST, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The request as the `on_handshake` hook sees it.
fn upgrade_request<B>(req: &Request<B>) -> UpgradeRequest {
    UpgradeRequest {
        method: req.method().to_string(),
        uri: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    }
}

async fn route(
    state: Rc<WorkerState>,
    shared: Arc<SioShared>,
    peer: SocketAddr,
    after: Rc<RefCell<Option<AfterUpgrade>>>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let origin = req.headers().get(ORIGIN).cloned();
    let origin = origin.as_ref();
    if !shared.is_endpoint(req.uri().path()) {
        return respond(&shared, None, StatusCode::NOT_FOUND, "Not Found");
    }
    if req.method() == Method::OPTIONS {
        let mut r = respond(&shared, origin, StatusCode::NO_CONTENT, "");
        let h = r.headers_mut();
        h.insert(
            hyper::header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            hyper::header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        return r;
    }
    let q = query(req.uri());
    if q.eio.as_deref() != Some("4") {
        return error(&shared, origin, 5, "Unsupported protocol version");
    }
    let upgrade = is_websocket_upgrade(req.headers());
    match (q.transport.as_deref(), upgrade) {
        (Some("websocket"), true) => {
            let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                return error(&shared, origin, 3, "Bad request");
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            let task: AfterUpgrade = match q.sid {
                None if !shared.opts.websocket => {
                    return error(&shared, origin, 0, "Transport unknown");
                }
                None => {
                    match session_open::open(&state, &shared, &upgrade_request(&req), peer, true)
                        .await
                    {
                        Ok(s) => Box::pin(async move {
                            if let Ok(up) = on_upgrade.await {
                                s.run(Some(up)).await;
                            }
                        }),
                        Err((status, body)) => {
                            return respond(
                                &shared,
                                origin,
                                StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                                body,
                            );
                        }
                    }
                }
                Some(sid) => {
                    let Some(tx) = shared.sessions.get(sid.as_str()).map(|t| t.clone()) else {
                        return error(&shared, origin, 1, "Session ID unknown");
                    };
                    Box::pin(async move {
                        if let Ok(up) = on_upgrade.await {
                            let _ = tx.send(Command::Upgrade(up)).await;
                        }
                    })
                }
            };
            *after.borrow_mut() = Some(task);
            switching_protocols(&key)
        }
        (Some("websocket"), false) | (Some("polling"), true) => {
            error(&shared, origin, 3, "Bad request")
        }
        (Some("polling"), false) if shared.opts.polling => {
            polling(state, shared, peer, req, q.sid, origin).await
        }
        _ => error(&shared, origin, 0, "Transport unknown"),
    }
}

async fn polling(
    state: Rc<WorkerState>,
    shared: Arc<SioShared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    sid: Option<String>,
    origin: Option<&HeaderValue>,
) -> Response<Body> {
    let Some(sid) = sid else {
        if req.method() != Method::GET {
            return error(&shared, origin, 2, "Bad handshake method");
        }
        return match session_open::open(&state, &shared, &upgrade_request(&req), peer, false).await
        {
            Ok(s) => {
                let open = eio::encode_payload([&s.open_packet()]);
                tokio::task::spawn_local(s.run(None));
                respond(&shared, origin, StatusCode::OK, open)
            }
            Err((status, body)) => respond(
                &shared,
                origin,
                StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                body,
            ),
        };
    };
    let Some(tx) = shared.sessions.get(sid.as_str()).map(|t| t.clone()) else {
        return error(&shared, origin, 1, "Session ID unknown");
    };
    let unknown = || error(&shared, origin, 1, "Session ID unknown");
    match *req.method() {
        Method::GET => {
            let (reply_tx, reply) = oneshot::channel();
            if tx.try_send(Command::Get(reply_tx)).is_err() {
                return error(&shared, origin, 3, "Bad request");
            }
            match reply.await {
                Ok(Reply::Payload(body)) => respond(&shared, origin, StatusCode::OK, body),
                Ok(Reply::Refused(why)) => error(&shared, origin, 3, why),
                Err(_) => unknown(),
            }
        }
        Method::POST => {
            let max = shared.opts.max_payload;
            let body = match Limited::new(req.into_body(), max).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e)
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    let _ = tx.try_send(Command::Fail("polling body larger than maxPayload"));
                    return respond(
                        &shared,
                        origin,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "Payload Too Large",
                    );
                }
                Err(_) => return error(&shared, origin, 3, "Bad request"),
            };
            let packets = match eio::decode_payload(&body) {
                Ok(p) => p,
                Err(_) => {
                    let _ = tx.try_send(Command::Fail("malformed Engine.IO packet"));
                    return error(&shared, origin, 3, "Bad request");
                }
            };
            match tx.try_send(Command::Post(packets)) {
                Ok(()) => respond(&shared, origin, StatusCode::OK, "ok"),
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => unknown(),
                Err(_) => {
                    // More requests in flight than a client ever has.
                    error(&shared, origin, 3, "Bad request")
                }
            }
        }
        _ => error(&shared, origin, 3, "Bad request"),
    }
}

/// Whether the request asks for a WebSocket upgrade.
fn is_websocket_upgrade(h: &hyper::HeaderMap) -> bool {
    let has = |name: hyper::header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(hyper::header::UPGRADE, "websocket") && has(hyper::header::CONNECTION, "upgrade")
}

/// The 101 answer completing a WebSocket upgrade.
fn switching_protocols(key: &HeaderValue) -> Response<Body> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// The capacity of a session's request queue (see [`SESSION_QUEUE`]).
pub fn session_queue() -> (
    tokio::sync::mpsc::Sender<Command>,
    tokio::sync::mpsc::Receiver<Command>,
) {
    tokio::sync::mpsc::channel(SESSION_QUEUE)
}

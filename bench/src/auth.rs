//! The backend's auth API that both servers call while clients log in:
//! `POST /auth {"token":"tok<uid>"}` -> `200 {"uid":<uid>}`, anything else
//! -> `401 {"error":..}`. A real HTTP server (hyper, keep-alive), so a
//! login costs the target a real HTTP round trip, as in production.
//!
//! Runs inside the coordinator process for the length of a scenario and
//! counts the requests it served.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::net::{TcpListener, TcpSocket};

/// Requests served so far.
#[derive(Default)]
pub struct AuthStats {
    pub ok: Cell<u64>,
    pub refused: Cell<u64>,
}

/// The uid a token names: `tok<digits>`.
pub fn uid_of(token: &str) -> Option<u64> {
    token.strip_prefix("tok")?.parse().ok()
}

fn token_in(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("token")?.as_str().map(str::to_string)
}

async fn handle(req: Request<Incoming>, stats: Rc<AuthStats>) -> Response<Full<Bytes>> {
    let from_query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let uid = token_in(&body).or(from_query).as_deref().and_then(uid_of);
    let (status, text) = match uid {
        Some(uid) => {
            stats.ok.set(stats.ok.get() + 1);
            (StatusCode::OK, format!(r#"{{"uid":{uid}}}"#))
        }
        None => {
            stats.refused.set(stats.refused.get() + 1);
            (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid token"}"#.to_string(),
            )
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A listener with a deep accept queue: `TcpListener::bind` gives 128,
/// which a login storm overflows (dropped SYNs, then 1 s retransmits that
/// would be blamed on the server under test).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

/// Binds `addr` and serves until the coordinator exits.
pub async fn spawn(addr: SocketAddr) -> anyhow::Result<Rc<AuthStats>> {
    let listener =
        listen(addr).map_err(|e| anyhow::anyhow!("auth API cannot listen on {addr}: {e}"))?;
    let stats = Rc::new(AuthStats::default());
    let s = stats.clone();
    tokio::task::spawn_local(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let s = s.clone();
            tokio::task::spawn_local(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let s = s.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(req, s).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(uid_of("tok1001"), Some(1001));
        assert_eq!(uid_of("tok"), None);
        assert_eq!(uid_of("x1"), None);
        assert_eq!(token_in(br#"{"token":"tok5"}"#).as_deref(), Some("tok5"));
    }
}

//! The stand-in for the user's backend (a tiny real HTTP auth API) and the
//! server specs the tests run: the message-center script and the probe.

use super::*;

/// A stand-in for the user's backend: `POST /websocket_auth` with
/// `{"token":"tok<uid>"}` answers `{"uid":<uid>}`, anything else 401.
/// Tokens registered with [`AuthServer::hold`] are answered only when the
/// test releases them. Every request body is recorded. `GET /echo` and
/// `POST /echo` describe the request they received.
pub struct AuthServer {
    pub port: u16,
    held: Arc<Mutex<HashMap<String, Hold>>>,
    pub bodies: Arc<Mutex<Vec<String>>>,
}

struct Hold {
    arrived: Option<tokio::sync::oneshot::Sender<()>>,
    release: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// The test's side of a held token.
pub struct HeldToken {
    pub arrived: tokio::sync::oneshot::Receiver<()>,
    pub release: tokio::sync::oneshot::Sender<()>,
}

impl AuthServer {
    pub async fn start() -> AuthServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held: Arc<Mutex<HashMap<String, Hold>>> = Default::default();
        let bodies: Arc<Mutex<Vec<String>>> = Default::default();
        let (h, b) = (held.clone(), bodies.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, b) = (h.clone(), b.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (h, b) = (h.clone(), b.clone());
                        async move { Ok::<_, std::convert::Infallible>(auth_answer(req, h, b).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        AuthServer { port, held, bodies }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/websocket_auth", self.port)
    }

    /// Holds requests carrying `token` until the returned sender fires.
    pub fn hold(&self, token: &str) -> HeldToken {
        let (arrived_tx, arrived_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        self.held.lock().unwrap().insert(
            token.into(),
            Hold {
                arrived: Some(arrived_tx),
                release: Some(release_rx),
            },
        );
        HeldToken {
            arrived: arrived_rx,
            release: release_tx,
        }
    }
}

async fn auth_answer(
    req: hyper::Request<hyper::body::Incoming>,
    held: Arc<Mutex<HashMap<String, Hold>>>,
    bodies: Arc<Mutex<Vec<String>>>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("").into()),
            )
        })
        .collect();
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).to_string();
    let reply = |status: u16, v: Value| {
        let mut r =
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(v.to_string())));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    };
    if path.starts_with("/echo") {
        let mut r = reply(
            200,
            json!({"method": method, "uri": uri, "headers": headers, "body": body}),
        );
        r.headers_mut()
            .insert("set-cookie", "session=abc123; Path=/".parse().unwrap());
        return r;
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(30)).await;
        return reply(200, json!({}));
    }
    bodies.lock().unwrap().push(body.clone());
    let token = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .unwrap_or_default();
    let hold = held.lock().unwrap().remove(&token);
    if let Some(mut hold) = hold {
        if let Some(a) = hold.arrived.take() {
            let _ = a.send(());
        }
        if let Some(r) = hold.release.take() {
            let _ = r.await;
        }
    }
    let uid = token
        .trim_start_matches("hold-")
        .strip_prefix("tok")
        .and_then(|u| u.parse::<u64>().ok());
    match uid {
        Some(uid) => reply(200, json!({"uid": uid})),
        None => reply(401, json!({"error": "bad token"})),
    }
}

/// The shipped message-center server wired to `auth`.
pub fn message_center(auth: &AuthServer) -> ServerSpec {
    ServerSpec::new("/chat", Script::Repo("lua/entry.websocket.lua"))
        .option("auth_url", &auth.url())
}

/// A test entry script that runs each text frame as Lua in the connection's
/// environment (with `conn` as `...`) and answers `{"r": first, "e": second}`
/// of what it returned, or `{"error": msg}` if it raised. A binary frame is
/// echoed back as binary prefixed with `binary:`.
pub const PROBE_LUA: &str = r#"
function on_message(msg, conn)
    if msg.type == "binary" then
        conn:send("binary:" .. msg.data, "binary")
        return
    end
    local f, err = loadstring(msg.data, "=probe")
    if not f then
        conn:send(mix.json_encode({ error = "compile: " .. err }))
        return
    end
    setfenv(f, getfenv(1))
    local ok, a, b = pcall(f, conn)
    if not ok then
        conn:send(mix.json_encode({ error = tostring(a) }))
        return
    end
    local out, jerr = mix.json_encode({ r = a, e = b })
    conn:send(out or mix.json_encode({ error = "encode: " .. tostring(jerr) }))
end
"#;

/// A server running [`PROBE_LUA`] (plus `extra` Lua appended).
pub fn probe(path: &str, extra: &str) -> ServerSpec {
    ServerSpec::new(path, Script::Inline(format!("{PROBE_LUA}\n{extra}")))
}

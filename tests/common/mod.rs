//! Test harness shared by the integration tests: starts the real `connmix`
//! binary on free loopback ports with a generated config, connects real
//! WebSocket clients, calls the real HTTP API, and runs a small real HTTP
//! server standing in for the user's backend (the auth API).
//!
//! Nothing here waits a fixed time to decide a result: waits are for an
//! event, bounded by a generous deadline that only fails a hung test.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for any single wait; only a broken gateway hits it.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The repository's folder (for shipped scripts).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where a server's entry script comes from.
pub enum Script {
    /// A file of the repository, e.g. `lua/entry.websocket.lua`.
    Repo(&'static str),
    /// Lua source written to a temporary file.
    Inline(String),
}

/// One `engine.servers` entry.
pub struct ServerSpec {
    pub path: String,
    pub script: Script,
    pub options: Vec<(String, String)>,
    /// Extra YAML keys for this server, one per line (`readTimeout: 1`).
    pub extra: Vec<String>,
}

impl ServerSpec {
    pub fn new(path: &str, script: Script) -> Self {
        Self {
            path: path.into(),
            script,
            options: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn option(mut self, k: &str, v: &str) -> Self {
        self.options.push((k.into(), v.into()));
        self
    }

    pub fn extra(mut self, line: &str) -> Self {
        self.extra.push(line.into());
        self
    }
}

/// A gateway process under test.
pub struct Gateway {
    child: Option<Child>,
    pub api_port: u16,
    pub ports: Vec<u16>,
    pub paths: Vec<String>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    http: reqwest::Client,
    mode: String,
}

/// Builds the YAML for `servers`; `engine_extra` lines go under `engine:`,
/// `top` is appended at the top level.
pub fn config_yaml(
    dir: &Path,
    api_port: u16,
    ports: &[u16],
    servers: &[ServerSpec],
    engine_extra: &str,
    top: &str,
) -> String {
    let mut y = String::new();
    if !top.contains("logging:") {
        y.push_str("logging:\n  level: debug\n");
    }
    y.push_str(top);
    y.push_str("\nengine:\n");
    y.push_str(&format!(
        "  apiServer:\n    port: {api_port}\n    bind: 127.0.0.1\n    maxBodySize: 65536\n"
    ));
    if !engine_extra.contains("workers:") {
        y.push_str("  workers: 2\n");
    }
    y.push_str("  shutdownTimeout: 5\n");
    y.push_str(engine_extra);
    y.push_str("\n  servers:\n");
    for (i, s) in servers.iter().enumerate() {
        let entry = match &s.script {
            Script::Repo(p) => repo().join(p),
            Script::Inline(src) => {
                let p = dir.join(format!("entry{i}.lua"));
                std::fs::write(&p, src).unwrap();
                p
            }
        };
        y.push_str(&format!(
            "    - port: {}\n      bind: 127.0.0.1\n      protocol: websocket\n      entry: {}\n      options:\n        - {{name: path, value: \"{}\"}}\n",
            ports[i],
            entry.display(),
            s.path
        ));
        for (k, v) in &s.options {
            y.push_str(&format!("        - {{name: {k}, value: \"{v}\"}}\n"));
        }
        for l in &s.extra {
            y.push_str(&format!("      {l}\n"));
        }
    }
    y
}

impl Gateway {
    /// Starts a gateway with these servers and waits until it listens.
    pub async fn start(servers: Vec<ServerSpec>) -> Gateway {
        Self::start_with(servers, "", "").await
    }

    pub async fn start_with(servers: Vec<ServerSpec>, engine_extra: &str, top: &str) -> Gateway {
        Self::start_full(servers, engine_extra, top, "dev").await
    }

    /// Starts with `mode` as the sub-command (`dev`, `engine`).
    pub async fn start_full(
        servers: Vec<ServerSpec>,
        engine_extra: &str,
        top: &str,
        mode: &str,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("connmix.yaml");
        let paths = servers.iter().map(|s| s.path.clone()).collect();
        let mut gw = Gateway {
            child: None,
            api_port: 0,
            ports: Vec::new(),
            paths,
            dir,
            config_path,
            http: reqwest::Client::new(),
            mode: mode.to_string(),
        };
        // A port found free can be taken by a parallel test before the
        // gateway binds it: then start again on other ports.
        for _ in 0..5 {
            gw.api_port = free_port();
            gw.ports = servers.iter().map(|_| free_port()).collect();
            let yaml = config_yaml(
                gw.dir.path(),
                gw.api_port,
                &gw.ports,
                &servers,
                engine_extra,
                top,
            );
            std::fs::write(&gw.config_path, yaml).unwrap();
            gw.spawn();
            if gw.wait_ready().await {
                return gw;
            }
        }
        panic!("connmix never found free ports:\n{}", gw.log());
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_connmix"))
            .args([self.mode.as_str(), "-f"])
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start connmix");
        self.child = Some(child);
    }

    /// Waits until the gateway says it is ready; `false` when it could not
    /// bind its ports (the caller retries on others).
    async fn wait_ready(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let log = self.log();
            if log.contains(" ready") {
                return true;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                if log.contains("cannot listen on") {
                    self.child = None;
                    return false;
                }
                panic!("connmix exited with {status}:\n{log}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "connmix did not become ready:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("connmix.out")
    }

    /// Everything the gateway printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; returns the log.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "log never contained {needle:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `ws://` URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("ws://127.0.0.1:{}{}", self.ports[i], self.paths[i])
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.api_port, path)
    }

    /// POSTs a JSON body to an API path and returns the parsed envelope.
    pub async fn call(&self, path: &str, body: Value) -> Value {
        let (status, text) = self.post_raw(path, &body.to_string()).await;
        assert_eq!(status, 200, "{path} answered {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    /// POSTs raw text; returns status and body.
    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, String) {
        let r = self
            .http
            .post(self.api(path))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Publishes text `d` to channel `c`; returns `(s, f)`.
    pub async fn publish(&self, c: &str, d: &str) -> (u64, u64) {
        let v = self.call("/v1/mesh/publish", json!({"c": c, "d": d})).await;
        assert!(v["E"].is_null(), "publish failed: {v}");
        (v["r"]["s"].as_u64().unwrap(), v["r"]["f"].as_u64().unwrap())
    }

    /// Publishes until `s` equals `want` (the gateway applies closes
    /// asynchronously); panics at the deadline.
    pub async fn publish_until(&self, c: &str, d: &str, want: u64) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (s, _) = self.publish(c, d).await;
            if s == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "publish to {c} kept reaching {s}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), "TERM");
        wait_exit(&mut child)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Rewrites a file inside the test folder (for hot reload tests).
    pub fn write_file(&self, name: &str, text: &str) {
        let mut f = std::fs::File::create(self.dir.path().join(name)).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("connmix did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client { ws }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Sends any frame (binary, ping, close...).
    pub async fn send_msg(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// Starts a clean close handshake.
    pub async fn close(&mut self) {
        self.ws.close(None).await.unwrap();
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send(&v.to_string()).await;
    }

    /// The next data or close frame (pings/pongs skipped).
    pub async fn next(&mut self) -> Message {
        loop {
            let m = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("no frame before the deadline")
                .expect("connection ended")
                .expect("read error");
            match m {
                Message::Ping(_) | Message::Pong(_) => continue,
                m => return m,
            }
        }
    }

    /// The next frame, which must be text.
    pub async fn recv(&mut self) -> String {
        match self.next().await {
            Message::Text(t) => t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next text frame that is not `skip` (a warm-up payload that a
    /// retried publish may have delivered more than once).
    pub async fn recv_skipping(&mut self, skip: &str) -> String {
        loop {
            let t = self.recv().await;
            if t != skip {
                return t;
            }
        }
    }

    pub async fn recv_json(&mut self) -> Value {
        let t = self.recv().await;
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"))
    }

    /// Sends a request and expects `{"result":true}`.
    pub async fn ok(&mut self, v: Value) {
        self.send_json(v.clone()).await;
        assert_eq!(self.recv_json().await, json!({"result": true}), "for {v}");
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("not closed before the deadline")
            {
                Some(Ok(Message::Close(f))) => {
                    // Keep polling so our close reply is flushed, as a
                    // browser would, until the server ends the TCP stream.
                    let _ = tokio::time::timeout(DEADLINE, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                    return f.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// The message-center login: auth with `tok<uid>` and subscribe to `@user`.
pub async fn login(url: &str, uid: u64) -> Client {
    let mut c = Client::connect(url).await;
    c.ok(json!({"op": "auth", "token": format!("tok{uid}")}))
        .await;
    c.ok(json!({"op": "subscribe", "channel": "@user"})).await;
    c
}

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

impl Client {
    /// Runs `code` through [`PROBE_LUA`] and returns the answer object.
    pub async fn eval(&mut self, code: &str) -> Value {
        self.send(code).await;
        let v = self.recv_json().await;
        assert!(v.get("error").is_none(), "{code}\n-> {v}");
        v
    }

    /// The client id the gateway gave this connection.
    pub async fn id(&mut self) -> String {
        let v = self.eval("return (...):client_id()").await;
        v["r"].as_str().unwrap().to_string()
    }
}

impl Client {
    /// Connects with a tiny socket receive buffer, so a client that stops
    /// reading pushes back on the gateway quickly (slow-client tests).
    pub async fn connect_small_buffer(url: &str) -> Client {
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock.connect(addr.parse().unwrap()).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        Client { ws }
    }
}

/// Reads a gateway's resident memory in bytes (Linux).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

impl Gateway {
    /// The value of a metric line (`name{labels}`) from `/metrics`, 0 if absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(self.api("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.split(' ').next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until a metric reaches at least `want`.
    pub async fn wait_metric(&self, name: &str, want: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let v = self.metric(name).await;
            if v >= want {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stayed at {v}, wanted {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A backend's connection to the WebSocket API (`/ws/v1`).
pub struct ApiClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl ApiClient {
    pub async fn connect(gw: &Gateway) -> ApiClient {
        let url = format!("ws://127.0.0.1:{}/ws/v1", gw.api_port);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ApiClient { ws, next_id: 0 }
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send(&mut self, m: &str, p: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(Message::text(json!({"m": m, "p": p, "i": id}).to_string()))
            .await
            .unwrap();
        id
    }

    /// Closes cleanly and waits until the gateway has let go of it.
    pub async fn close(mut self) {
        self.ws.close(None).await.unwrap();
        let _ = tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Sends a raw text frame.
    pub async fn ws_send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next text frame as JSON (responses and events alike); a frame
    /// that is not JSON comes back as `{"text": ...}`.
    pub async fn next(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("no API frame before the deadline")
                .expect("API connection ended")
                .unwrap();
            if let Message::Text(t) = m {
                return serde_json::from_str(&t).unwrap_or_else(|_| json!({"text": t.to_string()}));
            }
        }
    }

    /// Sends a request and returns its response (events arriving first are
    /// returned in `events`).
    pub async fn request(&mut self, m: &str, p: Value) -> Value {
        let id = self.send(m, p).await;
        loop {
            let v = self.next().await;
            if v["i"] == id {
                return v;
            }
            assert!(v.get("e").is_some(), "unexpected frame {v}");
        }
    }
}

impl Gateway {
    /// Rewrites the config file in place (atomically) with new settings and
    /// the same ports; the running gateway reloads what it can.
    pub fn rewrite_config(&self, servers: &[ServerSpec], engine_extra: &str, top: &str) {
        let yaml = config_yaml(
            self.dir.path(),
            self.api_port,
            &self.ports,
            servers,
            engine_extra,
            top,
        );
        let tmp = self.dir.path().join("connmix.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, &self.config_path).unwrap();
    }

    /// Replaces a file of the test folder atomically (write + rename), as
    /// editors do.
    pub fn replace_file(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.path().join(name)).unwrap();
    }
}

/// A private redis-server on a free loopback port, stopped on drop; it can
/// be stopped and started again on the same port (Redis restart tests).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            child: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (SIGKILL) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs a Redis command and returns its reply.
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::Client::open(format!("redis://{}/", self.addr())).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Gateway {
    /// Starts a cluster node (`connmix engine`) on `redis` with key `prefix`.
    pub async fn start_node(
        servers: Vec<ServerSpec>,
        redis: &RedisServer,
        prefix: &str,
    ) -> Gateway {
        let cluster = format!(
            "  cluster:\n    addr: {}\n    prefix: {prefix}\n    heartbeat: 1\n    nodeExpiry: 3\n    publishTimeoutMs: 2000\n    callTimeoutMs: 2000\n",
            redis.addr()
        );
        Self::start_full(servers, &cluster, "", "engine").await
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The live nodes this node lists at `/v1/mesh/nodes`.
    pub async fn nodes(&self) -> Vec<Value> {
        let text = reqwest::get(self.api("/v1/mesh/nodes"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["r"]["nodes"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until this node lists exactly `n` live nodes.
    pub async fn wait_nodes(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let nodes = self.nodes().await;
            if nodes.len() == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} nodes, have {nodes:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

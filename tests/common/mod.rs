//! Test harness shared by the integration tests: starts the real `connmix`
//! binary on free loopback ports with a generated config, connects real
//! WebSocket clients, calls the real HTTP API, and runs a small real HTTP
//! server standing in for the user's backend (the auth API).
//!
//! Nothing here waits a fixed time to decide a result: waits are for an
//! event, bounded by a generous deadline that only fails a hung test.

#![allow(dead_code)]

mod auth;
mod client;
mod emitter_processes;
mod example_frames;
mod jwt_tokens;
mod queues;
mod redis_server;
mod socketio_listener;

// Each test crate uses some of these.
#[allow(unused_imports)]
pub use auth::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use emitter_processes::*;
#[allow(unused_imports)]
pub use example_frames::*;
#[allow(unused_imports)]
pub use jwt_tokens::*;
#[allow(unused_imports)]
pub use queues::*;
#[allow(unused_imports)]
pub use redis_server::*;
#[allow(unused_imports)]
pub use socketio_listener::*;

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

/// Asks `check` again until it answers `Ok` (what a user would see has
/// happened) and returns that; fails with its last `Err` after [`DEADLINE`].
/// The only poll interval of the harness lives here.
pub async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) => assert!(tokio::time::Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
    /// `websocket` (default), `socketio` or `engineio`.
    pub protocol: String,
    pub script: Script,
    pub options: Vec<(String, String)>,
    /// Extra YAML keys for this server, one per line (`readTimeout: 1`).
    pub extra: Vec<String>,
}

impl ServerSpec {
    pub fn new(path: &str, script: Script) -> Self {
        Self {
            path: path.into(),
            protocol: "websocket".into(),
            script,
            options: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// A `protocol: socketio` server on `/socket.io/`.
    pub fn socketio(script: Script) -> Self {
        let mut s = Self::new("/socket.io/", script);
        s.protocol = "socketio".into();
        s
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
    /// Extra environment variables of the process (test-only hooks).
    env: Vec<(String, String)>,
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
    // `apiServer.<key>: value` lines of `engine_extra` go into apiServer.
    let (api_extra, engine_lines): (Vec<&str>, Vec<&str>) = engine_extra
        .lines()
        .partition(|l| l.trim_start().starts_with("apiServer."));
    y.push_str(&format!(
        "  apiServer:\n    port: {api_port}\n    bind: 127.0.0.1\n"
    ));
    if !engine_extra.contains("apiServer.maxBodySize") {
        y.push_str("    maxBodySize: 65536\n");
    }
    for l in api_extra {
        y.push_str(&format!(
            "    {}\n",
            l.trim_start().trim_start_matches("apiServer.")
        ));
    }
    let engine_extra = engine_lines.join("\n");
    if !engine_extra.contains("workers:") {
        y.push_str("  workers: 2\n");
    }
    y.push_str("  shutdownTimeout: 5\n");
    y.push_str(&engine_extra);
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
            "    - port: {}\n      bind: 127.0.0.1\n      protocol: {}\n      entry: {}\n      options:\n        - {{name: path, value: \"{}\"}}\n",
            ports[i],
            s.protocol,
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
        Self::start_full_env(servers, engine_extra, top, mode, Vec::new()).await
    }

    /// [`Gateway::start_full`] with extra environment variables.
    pub async fn start_full_env(
        servers: Vec<ServerSpec>,
        engine_extra: &str,
        top: &str,
        mode: &str,
        env: Vec<(String, String)>,
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
            env,
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
            .envs(self.env.iter().cloned())
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
    /// The whole `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.api("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of a metric line (`name{labels}`) from `/metrics`, 0 if absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
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

//! What an operator relies on: API access control (and its live edits),
//! Prometheus metrics that move by the right amounts, the log level changed
//! without a restart, and hot reload of the entry script under live
//! connections.

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const USERS: &str = r#"access:
  users:
    - {username: admin, password: pw, roles: [read, write], host: '*'}
    - {username: reader, password: pw, roles: [read], host: '127.0.0.*'}
    - {username: remote, password: pw, roles: [read, write], host: '10.*.*.*'}
"#;

async fn status(req: reqwest::RequestBuilder) -> (u16, Option<String>) {
    let r = req.send().await.unwrap();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), www)
}

#[tokio::test]
async fn access_roles_hosts_and_live_edits() {
    let servers = || vec![probe("/p", "")];
    let gw = Gateway::start_with(servers(), "", USERS).await;
    let http = reqwest::Client::new();
    let publish = || {
        http.post(gw.api("/v1/mesh/publish"))
            .body(r#"{"c":"x","d":"y"}"#)
    };

    let (code, www) = status(publish()).await;
    assert_eq!(code, 401);
    assert_eq!(www.as_deref(), Some("Basic realm=\"connmix\""));
    assert_eq!(
        status(publish().basic_auth("admin", Some("wrong"))).await.0,
        401
    );
    assert_eq!(
        status(publish().basic_auth("reader", Some("pw"))).await.0,
        403,
        "role"
    );
    assert_eq!(
        status(publish().basic_auth("remote", Some("pw"))).await.0,
        401,
        "host: the same answer as a wrong password"
    );
    assert_eq!(
        status(publish().basic_auth("admin", Some("pw"))).await.0,
        200
    );

    let metrics = || http.get(gw.api("/metrics"));
    assert_eq!(status(metrics()).await.0, 401);
    assert_eq!(
        status(metrics().basic_auth("reader", Some("pw"))).await.0,
        200
    );

    // The WebSocket API upgrade is protected too.
    let url = format!("ws://127.0.0.1:{}/ws/v1", gw.api_port);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", "Basic YWRtaW46cHc=".parse().unwrap()); // admin:pw
    tokio_tungstenite::connect_async(req)
        .await
        .expect("admin may use /ws/v1");

    // Live edit: the reader gets the write role, without a restart.
    gw.rewrite_config(
        &servers(),
        "",
        &USERS.replace(
            "roles: [read], host: '127.0.0.*'",
            "roles: [read, write], host: '127.0.0.*'",
        ),
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while status(publish().basic_auth("reader", Some("pw"))).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "access edit never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A broken edit is refused and the running settings stay.
    std::fs::write(&gw.config_path, "engine: [not, a, map]\n").unwrap();
    gw.wait_log("config reload refused").await;
    assert_eq!(
        status(publish().basic_auth("reader", Some("pw"))).await.0,
        200
    );
    assert_eq!(status(publish()).await.0, 401);
}

#[tokio::test]
async fn open_api_warns_at_start() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    gw.wait_log("access.users is empty").await;
}

const METERED: &str = r#"
function on_message(msg, conn)
    if msg.data == "sub" then
        conn:subscribe("m")
        conn:send("ok")
        return
    end
    if msg.data == "boom" then
        error("metered failure")
    end
end
"#;

#[tokio::test]
async fn metrics_move_by_the_right_amounts() {
    let gw = Gateway::start(vec![ServerSpec::new("/m", Script::Inline(METERED.into()))]).await;
    let names = [
        "connmix_engine_servers_clients",
        "connmix_engine_servers_read_messages_total{protocol=\"websocket\"}",
        "connmix_engine_servers_send_messages_total{protocol=\"websocket\"}",
        "connmix_lua_errors_total",
        "connmix_api_requests_total{code=\"0\",path=\"/v1/mesh/publish\"}",
        "connmix_lua_hook_duration_seconds_count{hook=\"on_message\"}",
        "connmix_engine_channels",
    ];
    let mut before = Vec::new();
    for n in names {
        before.push(gw.metric(n).await);
    }

    let mut a = Client::connect(&gw.url(0)).await;
    let mut b = Client::connect(&gw.url(0)).await;
    for c in [&mut a, &mut b] {
        c.send("sub").await;
        assert_eq!(c.recv().await, "ok");
    }
    assert_eq!(gw.publish("m", "news").await, (2, 0));
    assert_eq!(a.recv().await, "news");
    assert_eq!(b.recv().await, "news");
    a.send("boom").await;
    gw.wait_metric("connmix_lua_errors_total", before[3] + 1.0)
        .await;

    let mut after = Vec::new();
    for n in names {
        after.push(gw.metric(n).await);
    }
    let delta: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        vec![2.0, 3.0, 4.0, 1.0, 1.0, 3.0, 1.0],
        "clients, reads, sends, lua errors, publishes, hook calls, channels for {names:?}"
    );
    gw.wait_log("metered failure").await;
}

#[tokio::test]
async fn log_level_changes_without_restart() {
    let servers = || vec![probe("/p", "")];
    let gw = Gateway::start_with(servers(), "", "").await; // level: debug
    let mut c = Client::connect(&gw.url(0)).await;
    c.eval(r#"return mix.log(mix.DEBUG, "first debug line")"#)
        .await;
    gw.wait_log("first debug line").await;
    // The harness writes `level: debug`; switch it to warn.
    let yaml = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .replace("level: debug", "level: warn");
    let tmp = gw.dir.path().join("c.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, &gw.config_path).unwrap();
    gw.wait_log("logging.level is now warn").await;
    c.eval(r#"return mix.log(mix.DEBUG, "hidden debug line")"#)
        .await;
    c.eval(r#"return mix.log(mix.WARN, "visible warn line")"#)
        .await;
    let log = gw.wait_log("visible warn line").await;
    assert!(!log.contains("hidden debug line"), "{log}");
}

const V1: &str = r#"function on_message(msg, conn) conn:send("v1:" .. msg.data) end"#;
const V2: &str = r#"function on_message(msg, conn) conn:send("v2:" .. msg.data) end"#;
const BROKEN: &str = "function on_message(msg, conn)\n  conn:send(\n end\n";

#[tokio::test]
async fn hot_reload_under_a_live_connection() {
    let gw = Gateway::start(vec![
        ServerSpec::new("/r", Script::Inline(V1.into())).extra("byteCodeExpires: 1"),
    ])
    .await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("a").await;
    assert_eq!(c.recv().await, "v1:a");

    gw.replace_file("entry0.lua", V2);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        c.send("b").await;
        let got = c.recv().await; // the same connection answers every time
        if got == "v2:b" {
            break;
        }
        assert_eq!(got, "v1:b");
        assert!(
            tokio::time::Instant::now() < deadline,
            "reload never happened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A new connection gets the new code too.
    let mut fresh = Client::connect(&gw.url(0)).await;
    fresh.send("n").await;
    assert_eq!(fresh.recv().await, "v2:n");

    // A broken edit is refused with file and line; the old code keeps serving.
    gw.replace_file("entry0.lua", BROKEN);
    let log = gw.wait_log("reload refused").await;
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(line.contains("entry0.lua:3"), "{line}");
    c.send("c").await;
    assert_eq!(c.recv().await, "v2:c");
    let v = gw
        .call("/v1/mesh/publish", json!({"c": "none", "d": "x"}))
        .await;
    assert!(v["E"].is_null());
}

#[tokio::test]
async fn logs_go_to_a_dated_file_with_client_ids() {
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "logging:\n  level: debug\n  filename: {}/logs/connmix.log\n  maxFiles: 3\n",
        dir.path().display()
    );
    let gw = Gateway::start_with(vec![probe("/p", "")], "", &top).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let id = c.id().await;
    c.eval(r#"return mix.log(mix.INFO, "written to the file")"#)
        .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let files: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect();
        if text.contains("written to the file") {
            let name = files[0].file_name().unwrap().to_string_lossy().to_string();
            assert!(name.starts_with("connmix.log."), "dated name: {name}");
            let line = text
                .lines()
                .find(|l| l.contains("written to the file"))
                .unwrap();
            assert!(line.contains(&format!("client_id={id}")), "{line}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log file: {files:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

const USES_MODULE: &str = r#"
local greet = require("greet")
function on_message(msg, conn) conn:send(greet.hello(msg.data)) end
"#;

#[tokio::test]
async fn hot_reload_sees_required_modules_too() {
    let gw = Gateway::start(vec![
        ServerSpec::new("/m", Script::Inline(USES_MODULE.into())).extra("byteCodeExpires: 1"),
    ])
    .await;
    gw.replace_file(
        "greet.lua",
        r#"return { hello = function(s) return "v1:" .. s end }"#,
    );
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("a").await;
    assert_eq!(c.recv().await, "v1:a");

    gw.replace_file(
        "greet.lua",
        r#"return { hello = function(s) return "v2:" .. s end }"#,
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        c.send("b").await;
        let got = c.recv().await;
        if got == "v2:b" {
            break;
        }
        assert_eq!(got, "v1:b");
        assert!(
            tokio::time::Instant::now() < deadline,
            "module reload never happened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A module that does not compile is refused with its file and line.
    gw.replace_file(
        "greet.lua",
        "return { hello = function(s) return s .. end }\n",
    );
    let log = gw.wait_log("reload refused").await;
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(line.contains("greet.lua:1"), "{line}");
    c.send("c").await;
    assert_eq!(c.recv().await, "v2:c");
}

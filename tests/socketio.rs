//! Socket.IO servers (`protocol: socketio`) with real clients: the npm
//! `socket.io-client` (tests/socketio/scenarios.mjs, default transports:
//! polling, then the upgrade to WebSocket) against the shipped
//! `lua/entry.socketio.lua` and `lua/examples/socketio_echo.lua`.
//!
//! scripts/test.sh installs the node packages (`npm install` in
//! tests/socketio); without them these tests fail and say so.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Stdio;

const SECRET: &str = "socketio-test-secret";

fn token(uid: u64) -> String {
    sio_token(SECRET, uid)
}

fn node_tests() -> PathBuf {
    let dir = repo().join("tests/socketio");
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "socket.io-client is not installed: run `npm install` in {} (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// A gateway with the shipped Socket.IO script (server 0) and the echo
/// example (server 1).
async fn gateway() -> Gateway {
    Gateway::start(vec![
        ServerSpec::socketio(Script::Repo("lua/entry.socketio.lua")).option("jwt_secret", SECRET),
        ServerSpec::socketio(Script::Repo("lua/examples/socketio_echo.lua")),
    ])
    .await
}

/// Runs one scenario of scenarios.mjs; fails the test with its output.
async fn scenario(gw: &Gateway, name: &str) {
    let dir = node_tests();
    run_client(gw, "node", &dir.join("scenarios.mjs"), name).await;
}

/// Runs one scenario of client_python.py (python-socketio's client).
async fn python_scenario(gw: &Gateway, name: &str) {
    let dir = repo().join("tests/socketio");
    let check = std::process::Command::new("python3")
        .args(["-c", "import socketio, websocket"])
        .status()
        .expect("python3 is required for the python-socketio client tests");
    assert!(
        check.success(),
        "python-socketio is not installed: pip install 'python-socketio[client]' websocket-client (scripts/test.sh does)"
    );
    run_client(gw, "python3", &dir.join("client_python.py"), name).await;
}

async fn run_client(gw: &Gateway, program: &str, script: &std::path::Path, name: &str) {
    let dir = repo().join("tests/socketio");
    let run = tokio::process::Command::new(program)
        .arg(script)
        .arg(name)
        .current_dir(&dir)
        .env("SIO_URL", format!("http://127.0.0.1:{}", gw.ports[0]))
        .env("ECHO_URL", format!("http://127.0.0.1:{}", gw.ports[1]))
        .env("API_URL", gw.api(""))
        .env("TOKEN", token(1001))
        .env("USER_ID", "1001")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("node scenario hung")
        .unwrap_or_else(|e| panic!("{program} is required for the Socket.IO client tests (scripts/test.sh installs it): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("ok {name}")),
        "{program} scenario {name} failed ({}):\n{stdout}\n{}\ngateway log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
}

#[tokio::test]
async fn socketio_client_with_query_token_upgrades_gets_events_and_acks() {
    let gw = gateway().await;
    scenario(&gw, "query-token").await;
}

#[tokio::test]
async fn socketio_client_with_auth_token_upgrades_and_gets_events() {
    let gw = gateway().await;
    scenario(&gw, "auth-token").await;
}

#[tokio::test]
async fn socketio_client_with_bad_token_gets_connect_error_with_the_scripts_message() {
    let gw = gateway().await;
    scenario(&gw, "bad-token").await;
}

#[tokio::test]
async fn socketio_client_binary_events_and_acks_round_trip() {
    let gw = gateway().await;
    scenario(&gw, "binary").await;
}

#[tokio::test]
async fn rooms_of_other_namespaces_are_channels_with_the_namespace_prefix() {
    let gw = gateway().await;
    scenario(&gw, "namespaces").await;
}

/// One publish with `e` reaches a Socket.IO client as the named event and
/// a raw WebSocket subscriber of the same channel as exactly `d`.
#[tokio::test]
async fn raw_websocket_subscribers_still_get_exactly_d() {
    let raw = "function on_connect(conn) conn:subscribe('user:1001') end";
    let gw = Gateway::start(vec![
        ServerSpec::socketio(Script::Repo("lua/entry.socketio.lua")).option("jwt_secret", SECRET),
        ServerSpec::socketio(Script::Repo("lua/examples/socketio_echo.lua")),
        ServerSpec::new("/raw", Script::Inline(raw.into())),
    ])
    .await;
    let mut ws = Client::connect(&gw.url(2)).await;
    eventually(|| async {
        let subs = gw
            .call(
                "/v1/mesh/publish",
                serde_json::json!({"c": "user:1001", "d": "probe"}),
            )
            .await;
        match subs["r"]["s"].as_u64() {
            Some(1) => Ok(()),
            other => Err(format!("raw subscriber not there yet: {other:?}")),
        }
    })
    .await;
    assert_eq!(ws.recv().await, "probe");
    scenario(&gw, "auth-token").await;
    // What the scenario published: a plain publish, then one with `e`.
    assert_eq!(ws.recv().await, r#"{"hello":"world","n":1}"#);
    assert_eq!(ws.recv().await, r#"{"user_id":1}"#);
}

#[tokio::test]
async fn python_socketio_client_with_query_token_upgrades_gets_events_and_acks() {
    let gw = gateway().await;
    python_scenario(&gw, "query-token").await;
}

#[tokio::test]
async fn python_socketio_client_with_auth_token_upgrades_and_gets_events() {
    let gw = gateway().await;
    python_scenario(&gw, "auth-token").await;
}

#[tokio::test]
async fn python_socketio_client_with_bad_token_gets_the_scripts_message() {
    let gw = gateway().await;
    python_scenario(&gw, "bad-token").await;
}

#[tokio::test]
async fn python_socketio_client_binary_events_and_acks_round_trip() {
    let gw = gateway().await;
    python_scenario(&gw, "binary").await;
}

//! `mix.mesh.publish`'s options, from a script on a real gateway:
//! `event` names the event that real socket.io-client sockets get (raw
//! WebSocket subscribers still get the data alone), `key` makes the publish
//! idempotent with the same record an HTTP publish's `k` uses, and a bad
//! option is an error that names it (docs/lua-api.md).

mod common;

use common::{Client, Gateway, Listener, Script, ServerSpec, probe};
use serde_json::json;

const SECRET: &str = "lua-publish-secret";

/// Evaluates a `mix.mesh.publish(...)` call on the probe and returns
/// `{s, f, short}`, or the probe's `{error}` when it raised.
async fn publish(c: &mut Client, args: &str) -> serde_json::Value {
    c.send(&format!(
        "local s, f, short = mix.mesh.publish({args}) return {{s = s, f = f, short = short}}"
    ))
    .await;
    let v = c.recv_json().await;
    v.get("r").cloned().unwrap_or(v)
}

#[tokio::test]
async fn a_script_publish_names_the_socketio_event_and_raw_subscribers_get_the_data() {
    let gw = Gateway::start(vec![
        probe("/p", ""),
        ServerSpec::socketio(Script::Repo("lua/entry.socketio.lua")).option("jwt_secret", SECRET),
    ])
    .await;
    // Three socket.io-client sockets: a and c are user 1001 (c on /chat), b user 1002.
    let mut sio = Listener::start(gw.ports[1], SECRET).await;
    let mut raw = Client::connect(&gw.url(0)).await;
    assert!(raw.eval("return (...):subscribe('user:1001')").await["r"].is_null());
    let mut script = Client::connect(&gw.url(0)).await;

    let r = publish(
        &mut script,
        r#"'user:1001', '{"from":"lua"}', {event = 'following notify'}"#,
    )
    .await;
    assert_eq!(r, json!({"s": 2, "f": 0}), "socket a and the raw client");
    assert_eq!(
        sio.line().await,
        r#"got a following notify [{"from":"lua"}]"#
    );
    assert_eq!(raw.recv().await, r#"{"from":"lua"}"#);

    // A type and options together; no event is Socket.IO's `message`.
    let r = publish(&mut script, "'user:1002', 'plain', 'text', {}").await;
    assert_eq!(r, json!({"s": 1, "f": 0}));
    assert_eq!(sio.line().await, r#"got b message ["plain"]"#);
}

#[tokio::test]
async fn a_keyed_script_publish_delivers_once_and_shares_the_http_record() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut sub = Client::connect(&gw.url(0)).await;
    assert!(sub.eval("return (...):subscribe('room')").await["r"].is_null());
    let mut script = Client::connect(&gw.url(0)).await;

    // The same key twice from Lua: the second answers the first's counts
    // and delivers nothing.
    for _ in 0..2 {
        let r = publish(&mut script, "'room', 'once', {key = 'order-1'}").await;
        assert_eq!(r, json!({"s": 1, "f": 0}));
    }
    // An HTTP retry with that key and channel gets the recorded answer.
    let v = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": "room", "d": "http retry", "k": "order-1"}),
        )
        .await;
    assert_eq!(v["r"], json!({"s": 1, "f": 0}), "{v}");
    // And the other way round: a key an HTTP publish took first.
    let v = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": "room", "d": "from http", "k": "order-2"}),
        )
        .await;
    assert_eq!(v["r"], json!({"s": 1, "f": 0}), "{v}");
    let r = publish(&mut script, "'room', 'lua retry', {key = 'order-2'}").await;
    assert_eq!(r, json!({"s": 1, "f": 0}));
    // A key is per channel: the same key on another channel publishes.
    let r = publish(&mut script, "'elsewhere', 'x', {key = 'order-1'}").await;
    assert_eq!(r, json!({"s": 0, "f": 0}));

    gw.publish("room", "last").await;
    assert_eq!(sub.recv_n(3).await, ["once", "from http", "last"]);
}

#[tokio::test]
async fn a_bad_publish_option_is_an_error_that_names_it() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut sub = Client::connect(&gw.url(0)).await;
    assert!(sub.eval("return (...):subscribe('room')").await["r"].is_null());
    let mut script = Client::connect(&gw.url(0)).await;
    let long = "k".repeat(257);
    for (args, says) in [
        (
            "'room', 'x', {evnt = 'a'}",
            r#"unknown publish option "evnt""#,
        ),
        ("'room', 'x', {event = ''}", "publish option event must be"),
        (
            &format!("'room', 'x', {{key = '{long}'}}") as &str,
            "publish option key must be a non-empty string of at most 256 bytes",
        ),
        ("'room', 'x', 5", "third argument is a type"),
        (
            "'room', 'x', 'text', 'binary'",
            "options of mix.mesh.publish are a table",
        ),
    ] {
        let v = publish(&mut script, args).await;
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{args}: {v}");
    }
    // Nothing of those was delivered.
    gw.publish("room", "after").await;
    assert_eq!(sub.recv().await, "after");
}

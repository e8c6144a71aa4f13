//! The "user message center" end to end: the shipped
//! `lua/entry.websocket.lua`, a real auth API, real WebSocket clients and the
//! real HTTP publish API.

mod common;

use common::*;
use serde_json::{Value, json};

const EVENT: &str = r#"{"event":"@user","data":{"uid":1001,"msg":"Hello"}}"#;

#[tokio::test]
async fn publish_reaches_every_connection_of_the_user_and_nobody_else() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![message_center(&auth)]).await;
    let url = gw.url(0);
    let mut phone = login(&url, 1001).await;
    let mut laptop = login(&url, 1001).await;
    let mut other = login(&url, 1002).await;

    // The auth API got valid JSON built by mix.json_encode.
    let bodies = auth.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    let first: Value = serde_json::from_str(&bodies[0]).expect("auth body is JSON");
    assert_eq!(first, json!({"token": "tok1001"}));

    assert_eq!(gw.publish("user:1001", EVENT).await, (2, 0));
    assert_eq!(phone.recv().await, EVENT, "exact bytes");
    assert_eq!(laptop.recv().await, EVENT);

    // The other user got nothing: the next frame it sees is its own marker.
    assert_eq!(gw.publish("user:1002", "marker").await, (1, 0));
    assert_eq!(other.recv().await, "marker");

    // After unsubscribe, one connection fewer is reached.
    laptop
        .ok(json!({"op": "unsubscribe", "channel": "@user"}))
        .await;
    assert_eq!(gw.publish("user:1001", "second").await, (1, 0));
    assert_eq!(phone.recv().await, "second");
    // The unsubscribed laptop still works and gets its next push only after
    // subscribing again.
    laptop
        .ok(json!({"op": "subscribe", "channel": "@user"}))
        .await;
    assert_eq!(gw.publish("user:1001", "third").await, (2, 0));
    assert_eq!(laptop.recv().await, "third");
    assert_eq!(phone.recv().await, "third");

    // After close, the count drops.
    phone.close().await;
    gw.publish_until("user:1001", "fourth", 1).await;
    drop(laptop);
    gw.publish_until("user:1001", "fifth", 0).await;
}

#[tokio::test]
async fn errors_get_an_error_frame_and_the_connection_stays_usable() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![message_center(&auth)]).await;
    let mut c = Client::connect(&gw.url(0)).await;

    c.send_json(json!({"op": "subscribe", "channel": "@user"}))
        .await;
    assert_eq!(c.recv_json().await, json!({"code": 1, "msg": "Not Auth"}));
    c.send("this is not json").await;
    assert_eq!(c.recv_json().await["code"], 3);
    c.send_json(json!({"op": "dance"})).await;
    assert_eq!(c.recv_json().await["code"], 10);
    // The browser keep-alive needs no login.
    c.ok(json!({"op": "ping"})).await;
    c.send_json(json!({"op": "auth", "token": "wrong"})).await;
    assert_eq!(c.recv_json().await["code"], 7);
    c.send_msg(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await;
    assert_eq!(c.recv_json().await["code"], 2);

    // Still the same connection, and it still works.
    c.ok(json!({"op": "auth", "token": "tok7"})).await;
    c.send_json(json!({"op": "subscribe", "channel": "user"}))
        .await;
    assert_eq!(c.recv_json().await["code"], 8, "bad channel");
    c.send_json(json!({"op": "subscribe", "channel": "@admin"}))
        .await;
    assert_eq!(c.recv_json().await["code"], 8, "unknown channel type");
    c.ok(json!({"op": "subscribe", "channel": "@user"})).await;
    assert_eq!(gw.publish("user:7", "hi").await, (1, 0));
    assert_eq!(c.recv().await, "hi");
}

#[tokio::test]
async fn auth_service_down_is_an_error_frame_not_a_crash() {
    let dead = free_port();
    let spec = ServerSpec::new("/chat", Script::Repo("lua/entry.websocket.lua")).option(
        "auth_url",
        &format!("http://127.0.0.1:{dead}/websocket_auth"),
    );
    let gw = Gateway::start(vec![spec]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send_json(json!({"op": "auth", "token": "tok1"})).await;
    assert_eq!(
        c.recv_json().await,
        json!({"code": 6, "msg": "Auth service unavailable"})
    );
}

/// While one client's auth call is held open by the backend, another client
/// is served completely; the first client's later frame waits for its auth
/// hook and is handled after it, in order.
#[tokio::test]
async fn a_waiting_hook_blocks_only_its_own_connection() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![message_center(&auth)]).await;
    let url = gw.url(0);

    let held = auth.hold("hold-tok1001");
    let mut slow = Client::connect(&url).await;
    slow.send_json(json!({"op": "auth", "token": "hold-tok1001"}))
        .await;
    // Queued behind the auth hook; if it ran first it would get "Not Auth".
    slow.send_json(json!({"op": "subscribe", "channel": "@user"}))
        .await;
    held.arrived
        .await
        .expect("auth request reached the backend");

    let mut fast = login(&url, 2002).await;
    assert_eq!(gw.publish("user:2002", "for fast").await, (1, 0));
    assert_eq!(fast.recv().await, "for fast");

    held.release.send(()).unwrap();
    assert_eq!(
        slow.recv_json().await,
        json!({"result": true}),
        "auth reply first"
    );
    assert_eq!(
        slow.recv_json().await,
        json!({"result": true}),
        "then subscribe"
    );
    assert_eq!(gw.publish("user:1001", "for slow").await, (1, 0));
    assert_eq!(slow.recv().await, "for slow");
}

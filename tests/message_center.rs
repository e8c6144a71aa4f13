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

/// Step 5 of the README's walkthrough: a client learns its id with
/// `{"op":"whoami"}`, a backend pushes to that one connection with
/// `/v1/mesh/send`, and the console's lookup finds the connection by its id
/// and by its user.
#[tokio::test]
async fn whoami_gives_the_id_that_send_and_the_console_lookup_use() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![message_center(&auth)]).await;
    let url = gw.url(0);
    let mut phone = login(&url, 1001).await;
    let mut laptop = login(&url, 1001).await;
    let mut guest = Client::connect(&url).await;

    phone.send_json(json!({"op": "whoami"})).await;
    let me = phone.recv_json().await;
    let id = me["result"]["client_id"]
        .as_str()
        .expect("client_id")
        .to_string();
    assert_eq!(me, json!({"result": {"client_id": id, "uid": 1001}}));
    laptop.send_json(json!({"op": "whoami"})).await;
    let laptop_id = laptop.recv_json().await["result"]["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(laptop_id, id);
    // Before logging in there is an id and no user.
    guest.send_json(json!({"op": "whoami"})).await;
    let g = guest.recv_json().await;
    assert_eq!(g["result"].as_object().unwrap().len(), 1, "{g}");

    let r = gw
        .call("/v1/mesh/send", json!({"c": id, "d": "just you"}))
        .await;
    assert_eq!(r, json!({"E": null, "r": {"s": true}}));
    assert_eq!(phone.recv().await, "just you");
    assert_eq!(gw.publish("user:1001", "marker").await, (2, 0));
    assert_eq!(
        laptop.recv().await,
        "marker",
        "the send reached only the phone"
    );
    assert_eq!(phone.recv().await, "marker");

    let get = |q: &str| {
        let u = gw.api(&format!("/v1/connections?{q}"));
        async move {
            let text = reqwest::get(u).await.unwrap().text().await.unwrap();
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    let by_id = get(&format!("client={id}")).await;
    assert!(by_id["E"].is_null(), "{by_id}");
    let conns = by_id["r"]["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "{by_id}");
    assert_eq!(conns[0]["c"], json!(id));
    assert_eq!(conns[0]["path"], json!("/chat"));
    assert_eq!(conns[0]["channels"], json!(["user:1001"]));

    let by_user = get("user=1001").await;
    let mut ids: Vec<String> = by_user["r"]["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["c"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = vec![id.clone(), laptop_id];
    want.sort();
    assert_eq!(ids, want);

    assert_eq!(get("client=99").await["r"]["connections"], json!([]));
    assert_eq!(get("").await["E"]["c"], json!(101));
}

/// A module that fails to load while the node runs (edited after start,
/// loaded on first use) is logged with the module's file, line and reason,
/// not only "error loading module".
#[tokio::test]
async fn a_module_that_fails_to_load_at_run_time_is_logged_with_its_line_and_reason() {
    let entry =
        "function on_message(msg, conn)\n  local m = require(\"late\")\n  conn:send(m.hi)\nend\n";
    let gw = Gateway::start(vec![ServerSpec::new("/m", Script::Inline(entry.into()))]).await;
    gw.write_file("late.lua", "local M = = {}\nreturn M\n");
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("hello").await;
    gw.wait_log("lua error in on_message").await;
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("lua error in on_message"))
        .unwrap();
    assert!(
        line.contains("error loading module 'late'")
            && line.contains("late.lua:1: unexpected symbol near '='"),
        "{line}"
    );
}

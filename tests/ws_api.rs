//! The WebSocket API (`/ws/v1`, `docs/websocket-api.md`) against live client
//! connections: every method with its result and error codes, id echo,
//! `ping`, malformed requests, and many requests in flight at once.

mod common;

use common::*;
use serde_json::json;
use std::collections::HashSet;

#[tokio::test]
async fn publish_send_and_ids() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.eval("return (...):subscribe('news')").await;
    let id = c.id().await;
    let mut api = ApiClient::connect(&gw).await;

    let v = api
        .request("mesh.publish", json!({"c": "news", "d": "headline"}))
        .await;
    assert_eq!(v, json!({"E": null, "r": {"s": 1, "f": 0}, "i": v["i"]}));
    assert_eq!(c.recv().await, "headline");

    let v = api
        .request("mesh.send", json!({"c": id, "d": "direct"}))
        .await;
    assert_eq!(v["r"], json!({"s": true}), "{v}");
    assert_eq!(c.recv().await, "direct");

    let v = api
        .request("mesh.send", json!({"c": "4294969999", "d": "x"}))
        .await;
    assert_eq!(v["E"]["c"], 401, "{v}");

    // Any JSON id is echoed as given.
    api.ws_send_raw(r#"{"m":"mesh.publish","p":{"c":"news","d":"2"},"i":"req-7"}"#)
        .await;
    assert_eq!(api.next().await["i"], "req-7");
    assert_eq!(c.recv().await, "2");
}

#[tokio::test]
async fn conn_call_changes_a_live_connection() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let id = c.id().await;
    let mut api = ApiClient::connect(&gw).await;

    let call = |f: &str, a: serde_json::Value| json!({"c": id, "f": f, "a": a});
    let v = api
        .request("conn.call", call("set_context_value", json!(["uid", 1001])))
        .await;
    assert_eq!(v["r"], json!({"s": true}), "{v}");
    assert_eq!(c.eval("return (...):context_value('uid')").await["r"], 1001);

    api.request("conn.call", call("set_context", json!([{"room": "r9"}])))
        .await;
    assert_eq!(
        c.eval("return (...):context()").await["r"],
        json!({"room": "r9"})
    );

    let v = api
        .request("conn.call", call("subscribe", json!(["ch1", "ch2"])))
        .await;
    assert_eq!(v["r"], json!({"s": true}), "{v}");
    assert_eq!(gw.publish("ch2", "via call").await, (1, 0));
    assert_eq!(c.recv().await, "via call");
    api.request("conn.call", call("unsubscribe", json!(["ch2"])))
        .await;
    assert_eq!(gw.publish("ch2", "gone").await, (0, 0));

    let v = api
        .request(
            "conn.call",
            json!({"c": "4294969999", "f": "subscribe", "a": ["x"]}),
        )
        .await;
    assert_eq!(v["E"]["c"], 301, "{v}");
    let v = api
        .request("conn.call", call("subscribe", json!(["has space"])))
        .await;
    assert_eq!(v["E"]["c"], 301, "{v}");
    let v = api.request("conn.call", call("explode", json!([]))).await;
    assert_eq!(v["E"]["c"], 101, "{v}");
}

#[tokio::test]
async fn ping_malformed_and_unknown_keep_the_connection() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut api = ApiClient::connect(&gw).await;
    api.ws_send_raw("ping").await;
    assert_eq!(api.next().await, json!({"text": "pong"}));
    api.ws_send_raw("{broken").await;
    assert_eq!(api.next().await["E"]["c"], 101);
    let v = api.request("no.such", json!({})).await;
    assert_eq!(v["E"]["c"], 101);
    let v = api.request("mesh.publish", json!({"c": "x"})).await;
    assert_eq!(v["E"]["c"], 101, "missing d: {v}");
    let v = api
        .request("mesh.publish", json!({"c": "x", "d": "still open"}))
        .await;
    assert!(v["E"].is_null(), "{v}");
}

#[tokio::test]
async fn a_hundred_requests_in_flight_are_all_answered() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.eval("return (...):subscribe('burst')").await;
    let mut api = ApiClient::connect(&gw).await;
    let mut ids = HashSet::new();
    for n in 0..100 {
        ids.insert(
            api.send("mesh.publish", json!({"c": "burst", "d": n.to_string()}))
                .await,
        );
    }
    let mut answered = HashSet::new();
    while answered.len() < 100 {
        let v = api.next().await;
        assert_eq!(v["r"], json!({"s": 1, "f": 0}), "{v}");
        assert!(answered.insert(v["i"].as_u64().unwrap()));
    }
    assert_eq!(answered, ids);
    let mut got = HashSet::new();
    for _ in 0..100 {
        got.insert(c.recv().await);
    }
    assert_eq!(got.len(), 100);
}

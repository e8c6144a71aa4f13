//! The HTTP API (`docs/http-api.md`) through real requests: publish and send,
//! text and binary, and every documented answer to bad input.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn send_reaches_only_the_named_client() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut a = Client::connect(&gw.url(0)).await;
    let mut b = Client::connect(&gw.url(0)).await;
    let a_id = a.id().await;
    let b_id = b.id().await;
    assert_ne!(a_id, b_id);

    let v = gw
        .call("/v1/mesh/send", json!({"c": a_id, "d": "just for a"}))
        .await;
    assert_eq!(v, json!({"E": null, "r": {"s": true}}));
    assert_eq!(a.recv().await, "just for a");
    // b's next frame is its own, so it never got a's message.
    gw.call("/v1/mesh/send", json!({"c": b_id, "d": "for b"}))
        .await;
    assert_eq!(b.recv().await, "for b");

    // A numeric id works too.
    let n: u64 = a_id.parse().unwrap();
    gw.call("/v1/mesh/send", json!({"c": n, "d": "numeric"}))
        .await;
    assert_eq!(a.recv().await, "numeric");
}

#[tokio::test]
async fn send_to_an_unknown_or_closed_client_is_401() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let v = gw
        .call("/v1/mesh/send", json!({"c": "4294967999", "d": "x"}))
        .await;
    assert_eq!(v["E"]["c"], 401, "{v}");
    assert!(v.get("r").is_none() || v["r"].is_null());

    let mut c = Client::connect(&gw.url(0)).await;
    let id = c.id().await;
    c.close().await;
    c.closed().await;
    // The gateway forgets the client once its close is processed.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let v = gw.call("/v1/mesh/send", json!({"c": id, "d": "x"})).await;
        if v["E"]["c"] == 401 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn binary_publish_and_send_arrive_as_binary_frames() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.eval("return (...):subscribe('bin')").await;
    let bytes = vec![0u8, 159, 146, 150, 255, 10];
    let d = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let v = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": "bin", "d": d, "t": "binary"}),
        )
        .await;
    assert_eq!(v["r"]["s"], 1, "{v}");
    assert_eq!(c.next().await, Message::binary(bytes.clone()));

    let id = c.id().await;
    gw.call("/v1/mesh/send", json!({"c": id, "d": d, "t": "binary"}))
        .await;
    assert_eq!(c.next().await, Message::binary(bytes));
}

#[tokio::test]
async fn data_is_delivered_byte_for_byte() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.eval("return (...):subscribe('raw')").await;
    let d = "{\"a\":\"\\u00e9 ü 😀\",\"b\":[1,2]}  trailing spaces ";
    assert_eq!(gw.publish("raw", d).await, (1, 0));
    assert_eq!(c.recv().await, d);
}

#[tokio::test]
async fn bad_input_gets_the_documented_answer_and_nothing_breaks() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.eval("return (...):subscribe('ok')").await;

    let cases = [
        ("/v1/mesh/publish", "{not json"),
        ("/v1/mesh/publish", "[1,2]"),
        ("/v1/mesh/publish", r#"{"d":"x"}"#),
        ("/v1/mesh/publish", r#"{"c":"ok"}"#),
        ("/v1/mesh/publish", r#"{"c":"ok","d":42}"#),
        ("/v1/mesh/publish", r#"{"c":"ok","d":{"x":1}}"#),
        ("/v1/mesh/publish", r#"{"c":"has space","d":"x"}"#),
        ("/v1/mesh/publish", r#"{"c":"ok","d":"%%%","t":"binary"}"#),
        ("/v1/mesh/publish", r#"{"c":"ok","d":"x","t":"video"}"#),
        ("/v1/mesh/send", r#"{"c":"not-a-number","d":"x"}"#),
        ("/v1/mesh/send", r#"{"d":"x"}"#),
        ("/v1/mesh/send", ""),
    ];
    for (path, body) in cases {
        let (status, text) = gw.post_raw(path, body).await;
        assert_eq!(status, 200, "{path} {body}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["E"]["c"], 101, "{path} {body}: {text}");
        assert!(
            v["E"]["m"].as_str().unwrap().len() > 3,
            "message explains: {text}"
        );
    }

    // Oversized body (the test config sets maxBodySize: 65536).
    let big = format!(r#"{{"c":"ok","d":"{}"}}"#, "x".repeat(70_000));
    let (status, _) = gw.post_raw("/v1/mesh/publish", &big).await;
    assert_eq!(status, 413);

    // Wrong method and path.
    let http = reqwest::Client::new();
    let r = http.get(gw.api("/v1/mesh/publish")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = http.post(gw.api("/v1/mesh/nothing")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Everyone is still served.
    assert_eq!(gw.publish("ok", "still here").await, (1, 0));
    assert_eq!(c.recv().await, "still here");
}

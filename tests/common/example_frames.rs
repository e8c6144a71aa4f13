//! Helpers of the example-script tests (`tests/examples.rs`,
//! `tests/example_exchange.rs`): a request and the exact frame it must
//! get, error frames, and "nothing arrived before this marker".

use super::{Client, Gateway};
use serde_json::{Value, json};

/// Sends `v` and expects exactly `want` as the next frame.
pub async fn expect(c: &mut Client, v: Value, want: Value) {
    c.send_json(v.clone()).await;
    assert_eq!(c.recv_json().await, want, "for {v}");
}

/// Sends raw text and expects the error frame `{"code":code,"msg":msg}`.
pub async fn expect_error_raw(c: &mut Client, text: &str, code: u64, msg: &str) {
    c.send(text).await;
    assert_eq!(
        c.recv_json().await,
        json!({"code": code, "msg": msg}),
        "for {text}"
    );
}

pub async fn expect_error(c: &mut Client, v: Value, code: u64, msg: &str) {
    expect_error_raw(c, &v.to_string(), code, msg).await;
}

/// Publishes `marker` to `ch` (which only `c` of the interesting clients is
/// on) and asserts it is the next frame `c` receives: nothing else arrived
/// in between.
pub async fn nothing_before_marker(gw: &Gateway, c: &mut Client, ch: &str, reached: u64) {
    let marker = format!("marker for {ch}");
    assert_eq!(gw.publish(ch, &marker).await, (reached, 0));
    assert_eq!(c.recv().await, marker, "an unexpected frame came first");
}

pub fn is_client_id(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Sends `v` and expects `{"result": true}`.
pub async fn ok(c: &mut Client, v: Value) {
    expect(c, v, json!({"result": true})).await;
}

/// A client subscribed to `channel` (barrage and exchange scripts).
pub async fn watch(url: &str, channel: &str) -> Client {
    let mut c = Client::connect(url).await;
    ok(&mut c, json!({"op": "subscribe", "channel": channel})).await;
    c
}

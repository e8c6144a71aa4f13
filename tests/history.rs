//! Channel history and recovery on one node (`connmix dev`): publish
//! answers positions, `/v1/history` and the WebSocket API's `history` read
//! them, and a client that comes back with its last position gets exactly
//! what it missed, in order, before anything live; the documented error
//! codes for bad input. The cluster runs are in `history_cluster.rs`.

mod common;

use common::*;
use serde_json::{Value, json};

/// `h:*` and `test-pause:*` keep history; everything else does not.
pub const HISTORY: &str = "  history:\n    - channels: 'h:*'\n      historySize: 100\n      historyTtl: 300\n    - channels: 'test-pause:*'\n      historySize: 100\n      historyTtl: 300\n    - channels: 'short:*'\n      historySize: 3\n      historyTtl: 1\n      metaTtl: 600\n";

async fn gateway() -> Gateway {
    Gateway::start_with(vec![probe("/p", "")], HISTORY, "").await
}

/// Publishes and returns the answer's `r`.
async fn publish(gw: &Gateway, c: &str, d: &str) -> Value {
    let v = gw.call("/v1/mesh/publish", json!({"c": c, "d": d})).await;
    assert!(v["E"].is_null(), "{v}");
    v["r"].clone()
}

/// The Lua that subscribes `conn` to `ch` with options `opts` (Lua source)
/// and answers `{r: err, e: info}`.
fn subscribe_lua(ch: &str, opts: &str) -> String {
    format!("return (...):subscribe('{ch}', {opts})")
}

/// Waits until the gateway holds `n` client connections.
pub async fn wait_clients(gw: &Gateway, n: u64) {
    eventually(|| async {
        match gw.metric("connmix_engine_servers_clients").await as u64 {
            got if got == n => Ok(()),
            got => Err(format!("{got} clients, not {n}")),
        }
    })
    .await
}

fn since_lua(offset: u64, epoch: &str) -> String {
    format!("{{since = {{offset = {offset}, epoch = '{epoch}'}}}}")
}

#[tokio::test]
async fn publish_answers_positions_and_history_reads_them_back() {
    let gw = gateway().await;
    let first = publish(&gw, "h:a", "one").await;
    let epoch = first["epoch"].as_str().expect("an epoch").to_string();
    assert_eq!(first, json!({"s": 0, "f": 0, "offset": 1, "epoch": epoch}));
    assert_eq!(publish(&gw, "h:a", "two").await["offset"], 2);
    assert_eq!(publish(&gw, "h:a", "three").await["offset"], 3);
    // Offsets count per channel; a channel without history answers as before.
    assert_eq!(publish(&gw, "h:b", "b").await["offset"], 1);
    assert_eq!(publish(&gw, "plain", "x").await, json!({"s": 0, "f": 0}));

    let all = gw.call("/v1/history", json!({"c": "h:a"})).await;
    assert_eq!(
        all["r"],
        json!({"publications": [
            {"offset": 1, "d": "one"}, {"offset": 2, "d": "two"}, {"offset": 3, "d": "three"}
        ], "offset": 3, "epoch": epoch, "complete": true}),
        "{all}"
    );
    let after = gw
        .call(
            "/v1/history",
            json!({"c": "h:a", "since": {"offset": 1, "epoch": epoch}, "limit": 1}),
        )
        .await;
    assert_eq!(
        after["r"]["publications"],
        json!([{"offset": 2, "d": "two"}])
    );
    // GET with query parameters answers the same.
    let got = reqwest::get(gw.api(&format!("/v1/history?c=h:a&offset=2&epoch={epoch}&limit=5")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(
        got["r"]["publications"],
        json!([{"offset": 3, "d": "three"}])
    );
    assert_eq!(got["r"]["offset"], 3);
    // The WebSocket API's `history`.
    let mut api = ApiClient::connect(&gw).await;
    let v = api
        .request("history", json!({"c": "h:a", "limit": 0}))
        .await;
    assert_eq!(
        v["r"],
        json!({"publications": [], "offset": 3, "epoch": epoch, "complete": true})
    );
}

#[tokio::test]
async fn bad_history_requests_get_their_documented_codes_and_change_nothing() {
    let gw = gateway().await;
    let epoch = publish(&gw, "h:a", "one").await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let code = |v: Value| v["E"]["c"].as_u64().unwrap_or(0);
    let read = |p: Value| gw.call("/v1/history", p);
    assert_eq!(code(read(json!({"c": "plain"})).await), 501);
    assert_eq!(
        code(read(json!({"c": "h:a", "since": {"offset": 9, "epoch": epoch}})).await),
        502
    );
    assert_eq!(
        code(read(json!({"c": "h:a", "since": {"offset": 1}})).await),
        502
    );
    assert_eq!(code(read(json!({"c": "h:a", "since": "1"})).await), 502);
    assert_eq!(
        code(read(json!({"c": "h:a", "since": {"offset": -1, "epoch": epoch}})).await),
        502
    );
    assert_eq!(
        code(read(json!({"c": "h:a", "since": {"offset": 0, "epoch": "other"}})).await),
        503
    );
    assert_eq!(
        code(read(json!({"c": "h:a", "since": {"offset": u64::MAX, "epoch": epoch}})).await),
        502
    );
    assert_eq!(code(read(json!({"limit": 1})).await), 101);
    assert_eq!(code(read(json!({"c": "h:a", "limit": "x"})).await), 101);
    let (status, text) = gw.post_raw("/v1/history", "{not json").await;
    assert_eq!(status, 200);
    assert_eq!(code(serde_json::from_str(&text).unwrap()), 101);
    // Lua: a bad since is an error and does not subscribe.
    let mut c = Client::connect(&gw.url(0)).await;
    let v = c
        .eval(&subscribe_lua("h:a", "{since = {offset = 'x'}}"))
        .await;
    assert!(v["r"].as_str().unwrap().starts_with("invalid since"), "{v}");
    assert_eq!(publish(&gw, "h:a", "two").await["s"], 0);
    // Nothing was disturbed: history still answers in full.
    let all = read(json!({"c": "h:a"})).await;
    assert_eq!(all["r"]["offset"], 2);
    assert_eq!(all["r"]["publications"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_client_back_with_its_position_gets_exactly_what_it_missed_then_live() {
    let gw = gateway().await;
    let url = gw.url(0);
    let mut c = Client::connect(&url).await;
    let v = c.eval(&subscribe_lua("h:u", "{}")).await;
    assert_eq!(v["e"]["recovered"], false);
    assert_eq!(v["e"]["offset"], 0);
    let epoch = v["e"]["epoch"].as_str().unwrap().to_string();
    assert_eq!(publish(&gw, "h:u", "m1").await["s"], 1);
    assert_eq!(c.recv().await, "m1");
    c.close().await;
    c.closed().await;
    wait_clients(&gw, 0).await;
    for m in ["m2", "m3", "m4", "m5", "m6"] {
        assert_eq!(publish(&gw, "h:u", m).await["s"], 0);
    }
    // The five missed ones, in order, then the answer, then live ones.
    let mut c = Client::connect(&url).await;
    c.send(&subscribe_lua("h:u", &since_lua(1, &epoch))).await;
    assert_eq!(c.recv_n(5).await, ["m2", "m3", "m4", "m5", "m6"]);
    let v = c.recv_json().await;
    assert_eq!(
        v["e"],
        json!({"recovered": true, "offset": 6, "epoch": epoch}),
        "{v}"
    );
    assert_eq!(publish(&gw, "h:u", "m7").await["s"], 1);
    assert_eq!(c.recv().await, "m7");
    // Nothing else came: the next frame is the next eval's answer.
    assert_eq!(c.eval("return 'end'").await["r"], "end");
}

/// The race the recovery must win: a publish that lands after the client
/// joined but before history is read (it is both in history and live), and
/// one after history is read but before the live switch (only live). The
/// `test-hooks` build pauses the recovery at each point until a publish
/// arrived there.
#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_both_windows_of_a_recovery_arrive_once_and_in_order() {
    let gw = gateway().await;
    let url = gw.url(0);
    let mut observer = Client::connect(&url).await;
    observer.eval("return (...):subscribe('test-pause')").await;
    let epoch = publish(&gw, "test-pause:x", "m1").await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    publish(&gw, "test-pause:x", "m2").await;
    publish(&gw, "test-pause:x", "m3").await;

    let mut c = Client::connect(&url).await;
    c.send(&subscribe_lua(
        "test-pause:x",
        &format!("{{since = {{offset = 1, epoch = '{epoch}'}}}}"),
    ))
    .await;
    assert_eq!(observer.recv().await, "subscribed test-pause:x");
    assert_eq!(publish(&gw, "test-pause:x", "m4").await["offset"], 4);
    assert_eq!(observer.recv().await, "read test-pause:x");
    assert_eq!(publish(&gw, "test-pause:x", "m5").await["offset"], 5);
    assert_eq!(c.recv_n(4).await, ["m2", "m3", "m4", "m5"]);
    let v = c.recv_json().await;
    assert_eq!(
        v["e"],
        json!({"recovered": true, "offset": 5, "epoch": epoch}),
        "{v}"
    );
    publish(&gw, "test-pause:x", "m6").await;
    assert_eq!(c.recv().await, "m6");
    assert_eq!(c.eval("return 'end'").await["r"], "end");
}

#[tokio::test]
async fn recovery_says_recovered_false_when_the_gap_is_gone_or_the_epoch_unknown() {
    let gw = gateway().await;
    let url = gw.url(0);
    // short:* keeps 3 for 1 second: 5 publishes drop the first two.
    let epoch = publish(&gw, "short:a", "m1").await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for m in ["m2", "m3", "m4", "m5"] {
        publish(&gw, "short:a", m).await;
    }
    let mut c = Client::connect(&url).await;
    let v = c
        .eval(&subscribe_lua("short:a", &since_lua(1, &epoch)))
        .await;
    assert_eq!(
        v["e"],
        json!({"recovered": false, "offset": 5, "epoch": epoch})
    );
    // The history expires (historyTtl 1) while the position stays.
    eventually(|| async {
        let v = gw.call("/v1/history", json!({"c": "short:a"})).await;
        match v["r"]["publications"].as_array().map(Vec::len) {
            Some(0) => Ok(()),
            n => Err(format!("still kept: {n:?}")),
        }
    })
    .await;
    let mut d = Client::connect(&url).await;
    let v = d
        .eval(&subscribe_lua("short:a", &since_lua(4, &epoch)))
        .await;
    assert_eq!(v["e"]["recovered"], false);
    assert_eq!(v["e"]["offset"], 5);
    // An epoch the channel never had: told, and given the current position.
    let mut e = Client::connect(&url).await;
    let v = e
        .eval(&subscribe_lua("h:z", &since_lua(0, "not-an-epoch")))
        .await;
    assert_eq!(v["e"]["recovered"], false);
    assert_eq!(v["e"]["offset"], 0);
    assert_ne!(v["e"]["epoch"], "not-an-epoch");
    // A channel without history: joined, nothing to recover.
    let v = e.eval(&subscribe_lua("plain", &since_lua(3, &epoch))).await;
    assert_eq!(v["e"], json!({"recovered": false}));
    assert_eq!(publish(&gw, "plain", "live").await["s"], 1);
    assert_eq!(e.recv().await, "live");
    // Everybody still gets live publications of their channels.
    publish(&gw, "short:a", "m6").await;
    assert_eq!(c.recv().await, "m6");
    assert_eq!(d.recv().await, "m6");
}

/// The shipped message center on a gateway whose `user:*` channels keep
/// history; `positions` turns the script's `history_positions` option on.
async fn message_center_with_history(auth: &AuthServer, positions: bool) -> Gateway {
    let mut spec = message_center(auth);
    if positions {
        spec = spec.option("history_positions", "true");
    }
    let history =
        "  history:\n    - channels: 'user:*'\n      historySize: 100\n      historyTtl: 300\n";
    Gateway::start_with(vec![spec], history, "").await
}

#[tokio::test]
async fn the_message_center_recovers_with_since_and_keeps_connmix_bytes_by_default() {
    let auth = AuthServer::start().await;
    let gw = message_center_with_history(&auth, false).await;
    let url = gw.url(0);
    // A CONNMIX client: the same answers and bytes as without history.
    let mut c = login(&url, 1001).await;
    let r = publish(&gw, "user:1001", "raw bytes").await;
    assert_eq!(r["s"], 1);
    let epoch = r["epoch"].as_str().unwrap().to_string();
    assert_eq!(c.recv().await, "raw bytes");
    c.close().await;
    c.closed().await;
    wait_clients(&gw, 0).await;
    publish(&gw, "user:1001", "missed 1").await;
    publish(&gw, "user:1001", "missed 2").await;
    // Back with its position: the missed pushes, then the answer.
    let mut c = Client::connect(&url).await;
    c.ok(json!({"op": "auth", "token": "tok1001"})).await;
    c.send_json(
        json!({"op": "subscribe", "channel": "@user", "since": {"offset": 1, "epoch": epoch}}),
    )
    .await;
    assert_eq!(c.recv().await, "missed 1");
    assert_eq!(c.recv().await, "missed 2");
    assert_eq!(
        c.recv_json().await,
        json!({"result": true, "recovered": true, "offset": 3, "epoch": epoch})
    );
    // A bad since: code 9, and the connection stays usable.
    c.send_json(json!({"op": "subscribe", "channel": "@user", "since": {"offset": "x"}}))
        .await;
    let v = c.recv_json().await;
    assert_eq!(v["code"], 9, "{v}");
    c.send_json(json!({"op": "subscribe", "channel": "@user", "since": 5}))
        .await;
    assert_eq!(c.recv_json().await["code"], 9);
    assert_eq!(publish(&gw, "user:1001", "live").await["s"], 1);
    assert_eq!(c.recv().await, "live");
}

#[tokio::test]
async fn with_history_positions_on_pushes_carry_their_position() {
    let auth = AuthServer::start().await;
    let gw = message_center_with_history(&auth, true).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.ok(json!({"op": "auth", "token": "tok1001"})).await;
    c.send_json(json!({"op": "subscribe", "channel": "@user"}))
        .await;
    let v = c.recv_json().await;
    assert_eq!(v["result"], true);
    assert_eq!(v["recovered"], false);
    assert_eq!(v["offset"], 0);
    let epoch = v["epoch"].as_str().unwrap().to_string();
    publish(&gw, "user:1001", r#"{"msg":"hi"}"#).await;
    assert_eq!(
        c.recv_json().await,
        json!({"channel": "user:1001", "offset": 1, "epoch": epoch, "data": r#"{"msg":"hi"}"#})
    );
}

//! End-to-end tests of `lua/examples/exchange.lua` (market data stream):
//! public depth without login, private balance only after auth through a
//! real auth API, and never another user's private channels. Frames are
//! asserted exactly (helpers: `tests/common/example_frames.rs`).

mod common;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn exchange_server(auth: &AuthServer) -> ServerSpec {
    ServerSpec::new("/stream", Script::Repo("lua/examples/exchange.lua"))
        .option("auth_url", &auth.url())
}

fn not_auth() -> Value {
    json!({"code": 1, "msg": "Not Auth"})
}

#[tokio::test]
async fn exchange_public_depth_needs_no_auth() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![exchange_server(&auth)]).await;
    let url = gw.url(0);
    let mut btc = watch(&url, "btcusdt@depth").await;
    let mut btc2 = watch(&url, "btcusdt@depth").await;
    let mut eth = watch(&url, "ethusdt@depth").await;
    ok(
        &mut eth,
        json!({"op": "subscribe", "channel": "btcusdt@trade"}),
    )
    .await;

    let depth = r#"{"stream":"btcusdt@depth","bids":[["100.1","2"]],"asks":[["100.2","1"]]}"#;
    assert_eq!(gw.publish("btcusdt@depth", depth).await, (2, 0));
    assert_eq!(btc.recv().await, depth);
    assert_eq!(btc2.recv().await, depth);
    // The ETH book watcher got no BTC depth.
    nothing_before_marker(&gw, &mut eth, "ethusdt@depth", 1).await;

    let trade = r#"{"stream":"btcusdt@trade","p":"100.15","q":"0.5"}"#;
    assert_eq!(gw.publish("btcusdt@trade", trade).await, (1, 0));
    assert_eq!(eth.recv().await, trade);

    ok(
        &mut btc2,
        json!({"op": "unsubscribe", "channel": "btcusdt@depth"}),
    )
    .await;
    assert_eq!(gw.publish("btcusdt@depth", depth).await, (1, 0));
    assert_eq!(btc.recv().await, depth);

    // Nobody authenticated: the auth API was never called.
    assert!(auth.bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn exchange_private_balance_is_refused_before_auth_and_private_after() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![exchange_server(&auth)]).await;
    let url = gw.url(0);
    let mut alice = Client::connect(&url).await;

    expect(
        &mut alice,
        json!({"op": "subscribe", "channel": "@balance"}),
        not_auth(),
    )
    .await;
    expect(
        &mut alice,
        json!({"op": "subscribe", "channel": "@order"}),
        not_auth(),
    )
    .await;
    expect(
        &mut alice,
        json!({"op": "unsubscribe", "channel": "@balance"}),
        not_auth(),
    )
    .await;
    assert_eq!(gw.publish("balance:1001", "x").await, (0, 0));

    ok(&mut alice, json!({"op": "auth", "token": "tok1001"})).await;
    let bodies = auth.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    let body: Value = serde_json::from_str(&bodies[0]).expect("auth body is JSON");
    assert_eq!(body, json!({"token": "tok1001"}));

    ok(
        &mut alice,
        json!({"op": "subscribe", "channel": "@balance"}),
    )
    .await;
    let mut bob = Client::connect(&url).await;
    ok(&mut bob, json!({"op": "auth", "token": "tok1002"})).await;
    ok(&mut bob, json!({"op": "subscribe", "channel": "@balance"})).await;

    let balance = r#"{"stream":"@balance","asset":"USDT","free":"10.5"}"#;
    assert_eq!(gw.publish("balance:1001", balance).await, (1, 0));
    assert_eq!(alice.recv().await, balance);
    // Bob did not see Alice's balance.
    nothing_before_marker(&gw, &mut bob, "balance:1002", 1).await;

    // A second connection of the same user gets the same pushes.
    let mut alice_phone = Client::connect(&url).await;
    ok(&mut alice_phone, json!({"op": "auth", "token": "tok1001"})).await;
    ok(
        &mut alice_phone,
        json!({"op": "subscribe", "channel": "@balance"}),
    )
    .await;
    assert_eq!(gw.publish("balance:1001", balance).await, (2, 0));
    assert_eq!(alice.recv().await, balance);
    assert_eq!(alice_phone.recv().await, balance);

    // @order is a separate private stream.
    ok(&mut alice, json!({"op": "subscribe", "channel": "@order"})).await;
    assert_eq!(gw.publish("order:1001", "filled").await, (1, 0));
    assert_eq!(alice.recv().await, "filled");

    ok(
        &mut alice,
        json!({"op": "unsubscribe", "channel": "@balance"}),
    )
    .await;
    assert_eq!(gw.publish("balance:1001", balance).await, (1, 0));
    assert_eq!(alice_phone.recv().await, balance);
}

#[tokio::test]
async fn exchange_private_channels_of_others_cannot_be_named() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![exchange_server(&auth)]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    ok(&mut c, json!({"op": "auth", "token": "tok1001"})).await;

    for bad in [
        "1002@balance",
        "balance:1002",
        "1001@balance",
        "@user",
        "@depth",
        "BTCUSDT@depth",
        "btcusdt@kline",
        "btc usdt@depth",
        "btcusdt@depth@x",
        "btcusdt",
    ] {
        expect_error(
            &mut c,
            json!({"op": "subscribe", "channel": bad}),
            8,
            "Invalid channel",
        )
        .await;
    }
    expect_error(&mut c, json!({"op": "subscribe"}), 8, "Invalid channel").await;
    assert_eq!(gw.publish("balance:1002", "x").await, (0, 0));
    assert_eq!(gw.publish("1002@balance", "x").await, (0, 0));
    assert_eq!(gw.publish("1001@balance", "x").await, (0, 0));

    // Still usable.
    ok(&mut c, json!({"op": "subscribe", "channel": "@balance"})).await;
    nothing_before_marker(&gw, &mut c, "balance:1001", 1).await;
}

#[tokio::test]
async fn exchange_reauth_as_another_user_leaves_the_old_private_channels() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![exchange_server(&auth)]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    ok(&mut c, json!({"op": "auth", "token": "tok1001"})).await;
    ok(&mut c, json!({"op": "subscribe", "channel": "@balance"})).await;
    ok(&mut c, json!({"op": "subscribe", "channel": "@order"})).await;
    ok(
        &mut c,
        json!({"op": "subscribe", "channel": "btcusdt@depth"}),
    )
    .await;

    ok(&mut c, json!({"op": "auth", "token": "tok1002"})).await;
    assert_eq!(gw.publish("balance:1001", "old user").await, (0, 0));
    assert_eq!(gw.publish("order:1001", "old user").await, (0, 0));
    // Public streams are kept.
    nothing_before_marker(&gw, &mut c, "btcusdt@depth", 1).await;

    ok(&mut c, json!({"op": "subscribe", "channel": "@balance"})).await;
    nothing_before_marker(&gw, &mut c, "balance:1002", 1).await;

    // A failed auth changes nothing.
    expect_error(
        &mut c,
        json!({"op": "auth", "token": "wrong"}),
        7,
        "Auth failed",
    )
    .await;
    nothing_before_marker(&gw, &mut c, "balance:1002", 1).await;
    // Authenticating again as the same user keeps the subscription.
    ok(&mut c, json!({"op": "auth", "token": "tok1002"})).await;
    nothing_before_marker(&gw, &mut c, "balance:1002", 1).await;
}

#[tokio::test]
async fn exchange_errors_get_an_error_frame_and_the_token_is_sent_as_json() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![exchange_server(&auth)]).await;
    let mut c = Client::connect(&gw.url(0)).await;

    // A token with quotes and backslashes reaches the auth API as valid JSON.
    let nasty = r#"a"b\c","uid":1}"#;
    expect_error(
        &mut c,
        json!({"op": "auth", "token": nasty}),
        7,
        "Auth failed",
    )
    .await;
    let bodies = auth.bodies.lock().unwrap().clone();
    let body: Value = serde_json::from_str(&bodies[0]).expect("auth body is JSON");
    assert_eq!(body, json!({"token": nasty}));

    expect_error(&mut c, json!({"op": "auth"}), 4, "Missing token").await;
    expect_error(
        &mut c,
        json!({"op": "auth", "token": ""}),
        4,
        "Missing token",
    )
    .await;
    expect_error(
        &mut c,
        json!({"op": "auth", "token": 1001}),
        4,
        "Missing token",
    )
    .await;
    expect_error_raw(&mut c, "not json", 3, "Invalid JSON").await;
    expect_error(&mut c, json!({"op": "trade"}), 10, "Unknown op").await;
    c.send_msg(Message::binary(vec![9u8])).await;
    assert_eq!(
        c.recv_json().await,
        json!({"code": 2, "msg": "Only text frames are accepted"})
    );
    expect(
        &mut c,
        json!({"op": "subscribe", "channel": "@balance"}),
        not_auth(),
    )
    .await;
    // Only the first auth (the only one with a token) called the API.
    assert_eq!(auth.bodies.lock().unwrap().len(), 1);

    ok(&mut c, json!({"op": "auth", "token": "tok5"})).await;
    ok(&mut c, json!({"op": "subscribe", "channel": "@balance"})).await;
    nothing_before_marker(&gw, &mut c, "balance:5", 1).await;
}

#[tokio::test]
async fn exchange_auth_down_or_unconfigured_is_an_error_frame() {
    let dead = free_port();
    let down = ServerSpec::new("/stream", Script::Repo("lua/examples/exchange.lua")).option(
        "auth_url",
        &format!("http://127.0.0.1:{dead}/websocket_auth"),
    );
    let unconfigured = ServerSpec::new("/stream", Script::Repo("lua/examples/exchange.lua"));
    let gw = Gateway::start(vec![down, unconfigured]).await;

    let mut c = Client::connect(&gw.url(0)).await;
    expect_error(
        &mut c,
        json!({"op": "auth", "token": "tok1"}),
        6,
        "Auth service unavailable",
    )
    .await;
    expect(
        &mut c,
        json!({"op": "subscribe", "channel": "@balance"}),
        not_auth(),
    )
    .await;
    // Public streams still work.
    ok(
        &mut c,
        json!({"op": "subscribe", "channel": "btcusdt@depth"}),
    )
    .await;
    nothing_before_marker(&gw, &mut c, "btcusdt@depth", 1).await;

    let mut d = Client::connect(&gw.url(1)).await;
    expect_error(
        &mut d,
        json!({"op": "auth", "token": "tok1"}),
        5,
        "Auth not configured",
    )
    .await;
    ok(
        &mut d,
        json!({"op": "subscribe", "channel": "ethusdt@ticker"}),
    )
    .await;
    nothing_before_marker(&gw, &mut d, "ethusdt@ticker", 1).await;
}

//! End-to-end tests of the example scripts under `lua/examples/` (chat room,
//! video barrage; the exchange stream is `tests/example_exchange.rs`): each runs in the real gateway, driven by
//! real WebSocket clients, the real HTTP publish API and, for the exchange,
//! a real auth API. The tests assert what a user sees: exact frames, publish
//! counts `(s, f)`, and that non-members receive nothing (a marker published
//! to a channel the client is on must be its very next frame).

mod common;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

// ------------------------------------------------------------------- chat

fn chat_server() -> ServerSpec {
    ServerSpec::new("/chat", Script::Repo("lua/examples/chat.lua"))
}

fn success() -> Value {
    json!({"status": "success"})
}

async fn join(url: &str, room: u64) -> Client {
    let mut c = Client::connect(url).await;
    expect(&mut c, json!({"op": "join", "room_id": room}), success()).await;
    c
}

/// Sends a chat message; the sender is a member, so it receives its own
/// message first, then the reply. Returns the message it received.
async fn say(c: &mut Client, text: &str) -> Value {
    c.send_json(json!({"op": "send", "msg": text})).await;
    let own = c.recv_json().await;
    assert_eq!(c.recv_json().await, success(), "reply to send");
    own
}

#[tokio::test]
async fn chat_room_members_get_messages_and_other_rooms_do_not() {
    let gw = Gateway::start(vec![chat_server()]).await;
    let url = gw.url(0);
    let mut alice = join(&url, 1002).await;
    let mut bob = join(&url, 1002).await;
    let mut carol = join(&url, 1003).await;

    let from_alice = say(&mut alice, "Hello").await;
    assert_eq!(
        bob.recv_json().await,
        from_alice,
        "both members see the same frame"
    );
    let obj = from_alice.as_object().expect("an object");
    assert_eq!(obj.len(), 4, "{from_alice}");
    assert_eq!(from_alice["event"], "message");
    assert_eq!(from_alice["room_id"], 1002);
    assert_eq!(from_alice["msg"], "Hello");
    assert!(is_client_id(&from_alice["client_id"]), "{from_alice}");

    // Carol, in another room, got nothing.
    nothing_before_marker(&gw, &mut carol, "room:1003", 1).await;

    // Bob answers; his message names him, not Alice.
    let from_bob = say(&mut bob, "Hi Alice").await;
    assert_eq!(alice.recv_json().await, from_bob);
    assert_eq!(from_bob["msg"], "Hi Alice");
    assert!(is_client_id(&from_bob["client_id"]));
    assert_ne!(from_bob["client_id"], from_alice["client_id"]);

    // A backend broadcast reaches both members byte for byte.
    let notice = r#"{"event":"notice","msg":"Welcome"}"#;
    assert_eq!(gw.publish("room:1002", notice).await, (2, 0));
    assert_eq!(alice.recv().await, notice);
    assert_eq!(bob.recv().await, notice);
    nothing_before_marker(&gw, &mut carol, "room:1003", 1).await;
}

#[tokio::test]
async fn chat_message_with_quotes_is_still_valid_json() {
    let gw = Gateway::start(vec![chat_server()]).await;
    let url = gw.url(0);
    let mut sender = join(&url, 42).await;
    let mut reader = join(&url, 42).await;

    let nasty =
        "He said \"hi\" \\o/ \",\"client_id\":\"0\"} {\"op\":\"quit\"}\n\ttab ü 😀 </script>";
    sender.send_json(json!({"op": "send", "msg": nasty})).await;
    let raw = reader.recv().await;
    let v: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"));
    assert_eq!(v["msg"], nasty, "msg survives exactly");
    assert_eq!(v["room_id"], 42);
    assert!(is_client_id(&v["client_id"]));
    assert_ne!(v["client_id"], "0", "msg could not inject a client_id");
    assert_eq!(v.as_object().unwrap().len(), 4, "{raw}");

    let own: Value = serde_json::from_str(&sender.recv().await).unwrap();
    assert_eq!(own, v);
    assert_eq!(sender.recv_json().await, success());
}

#[tokio::test]
async fn chat_quit_and_switching_rooms_leave_the_old_room() {
    let gw = Gateway::start(vec![chat_server()]).await;
    let url = gw.url(0);
    let mut a = join(&url, 7).await;
    let mut b = join(&url, 7).await;
    assert_eq!(gw.publish("room:7", "all").await, (2, 0));
    assert_eq!(a.recv().await, "all");
    assert_eq!(b.recv().await, "all");

    expect(&mut a, json!({"op": "quit"}), success()).await;
    assert_eq!(gw.publish("room:7", "without a").await, (1, 0));
    assert_eq!(b.recv().await, "without a");
    expect_error(
        &mut a,
        json!({"op": "send", "msg": "x"}),
        1,
        "Not in a room",
    )
    .await;
    expect_error(&mut a, json!({"op": "quit"}), 1, "Not in a room").await;

    // Join room 8, then switch to room 9: only room 9 reaches a.
    expect(&mut a, json!({"op": "join", "room_id": 8}), success()).await;
    expect(&mut a, json!({"op": "join", "room_id": 9}), success()).await;
    assert_eq!(gw.publish("room:8", "old room").await, (0, 0));
    nothing_before_marker(&gw, &mut a, "room:9", 1).await;

    // a's message goes to room 9 only: b (room 7) sees nothing.
    let m = say(&mut a, "in nine").await;
    assert_eq!(m["room_id"], 9);
    nothing_before_marker(&gw, &mut b, "room:7", 1).await;

    // Joining the same room again is harmless: still one subscription.
    expect(&mut a, json!({"op": "join", "room_id": 9}), success()).await;
    assert_eq!(gw.publish("room:9", "once").await, (1, 0));
    assert_eq!(a.recv().await, "once");

    // A closed member drops out of the count.
    b.close().await;
    gw.publish_until("room:7", "gone", 0).await;
}

#[tokio::test]
async fn chat_errors_get_an_error_frame_and_the_connection_stays_usable() {
    let gw = Gateway::start(vec![chat_server()]).await;
    let mut c = Client::connect(&gw.url(0)).await;

    expect_error(
        &mut c,
        json!({"op": "send", "msg": "Hello"}),
        1,
        "Not in a room",
    )
    .await;
    expect_error_raw(&mut c, "this is not json", 3, "Invalid JSON").await;
    expect_error_raw(&mut c, "42", 3, "Invalid JSON").await;
    expect_error_raw(&mut c, r#"{"op":"join","room_id":1"#, 3, "Invalid JSON").await;
    expect_error(&mut c, json!({"op": "dance"}), 10, "Unknown op").await;
    expect_error(&mut c, json!({"room_id": 1002}), 10, "Unknown op").await;
    for bad in [
        json!({"op": "join"}),
        json!({"op": "join", "room_id": "1002"}),
        json!({"op": "join", "room_id": 1.5}),
        json!({"op": "join", "room_id": 0}),
        json!({"op": "join", "room_id": -3}),
        json!({"op": "join", "room_id": [1002]}),
        json!({"op": "join", "room_id": null}),
    ] {
        expect_error(&mut c, bad, 4, "Invalid room_id").await;
    }
    c.send_msg(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(
        c.recv_json().await,
        json!({"code": 2, "msg": "Only text frames are accepted"})
    );
    // None of the failed joins subscribed to anything.
    assert_eq!(gw.publish("room:1002", "x").await, (0, 0));

    // Still the same connection, and it still works.
    expect(&mut c, json!({"op": "join", "room_id": 5}), success()).await;
    expect_error(&mut c, json!({"op": "send"}), 5, "Missing msg").await;
    expect_error(&mut c, json!({"op": "send", "msg": ""}), 5, "Missing msg").await;
    expect_error(&mut c, json!({"op": "send", "msg": 42}), 5, "Missing msg").await;
    let m = say(&mut c, "ok now").await;
    assert_eq!(m["msg"], "ok now");
    assert_eq!(gw.publish("room:5", "still here").await, (1, 0));
    assert_eq!(c.recv().await, "still here");
}

// ---------------------------------------------------------------- barrage

fn barrage_server() -> ServerSpec {
    ServerSpec::new("/barrage", Script::Repo("lua/examples/barrage.lua"))
}

#[tokio::test]
async fn barrage_viewers_of_a_video_get_lines_and_backend_broadcasts() {
    let gw = Gateway::start(vec![barrage_server()]).await;
    let url = gw.url(0);
    let mut v1 = watch(&url, "1001@video").await;
    let mut v2 = watch(&url, "1001@video").await;
    let mut v3 = watch(&url, "2002@video").await;

    let text = "666 \"nice\" {}";
    v1.send_json(json!({"op": "send", "channel": "1001@video", "msg": text}))
        .await;
    let line = v1.recv_json().await;
    assert_eq!(v1.recv_json().await, json!({"result": true}));
    assert_eq!(v2.recv_json().await, line);
    let obj = line.as_object().expect("an object");
    assert_eq!(obj.len(), 4, "{line}");
    assert_eq!(line["event"], "barrage");
    assert_eq!(line["channel"], "1001@video");
    assert_eq!(line["msg"], text);
    assert!(is_client_id(&line["client_id"]), "{line}");

    // The viewer of another video saw nothing.
    nothing_before_marker(&gw, &mut v3, "2002@video", 1).await;

    // The backend broadcasts to every viewer, byte for byte.
    let danmaku = r#"{"event":"barrage","msg":"Welcome to the premiere"}"#;
    assert_eq!(gw.publish("1001@video", danmaku).await, (2, 0));
    assert_eq!(v1.recv().await, danmaku);
    assert_eq!(v2.recv().await, danmaku);
    nothing_before_marker(&gw, &mut v3, "2002@video", 1).await;

    // A viewer may watch two videos.
    ok(&mut v1, json!({"op": "subscribe", "channel": "2002@video"})).await;
    assert_eq!(gw.publish("2002@video", "both").await, (2, 0));
    assert_eq!(v1.recv().await, "both");
    assert_eq!(v3.recv().await, "both");
    v1.send_json(json!({"op": "send", "channel": "2002@video", "msg": "hi 2002"}))
        .await;
    let l = v1.recv_json().await;
    assert_eq!(l["channel"], "2002@video");
    assert_eq!(v1.recv_json().await, json!({"result": true}));
    assert_eq!(v3.recv_json().await, l);
    // v2 (1001 only) saw none of it.
    nothing_before_marker(&gw, &mut v2, "1001@video", 2).await;
    assert_eq!(v1.recv().await, "marker for 1001@video");
}

#[tokio::test]
async fn barrage_send_needs_a_subscription_and_unsubscribe_stops_delivery() {
    let gw = Gateway::start(vec![barrage_server()]).await;
    let url = gw.url(0);
    let mut viewer = watch(&url, "1001@video").await;
    let mut outsider = Client::connect(&url).await;

    let send = json!({"op": "send", "channel": "1001@video", "msg": "spam"});
    expect_error(&mut outsider, send.clone(), 5, "Not subscribed").await;
    ok(
        &mut outsider,
        json!({"op": "subscribe", "channel": "2002@video"}),
    )
    .await;
    expect_error(&mut outsider, send.clone(), 5, "Not subscribed").await;
    // Nothing reached the viewer.
    nothing_before_marker(&gw, &mut viewer, "1001@video", 1).await;

    ok(
        &mut viewer,
        json!({"op": "unsubscribe", "channel": "1001@video"}),
    )
    .await;
    assert_eq!(gw.publish("1001@video", "nobody").await, (0, 0));
    expect_error(&mut viewer, send.clone(), 5, "Not subscribed").await;
    // Leaving again is harmless.
    ok(
        &mut viewer,
        json!({"op": "unsubscribe", "channel": "1001@video"}),
    )
    .await;

    // Coming back works.
    ok(
        &mut viewer,
        json!({"op": "subscribe", "channel": "1001@video"}),
    )
    .await;
    viewer.send_json(send).await;
    assert_eq!(viewer.recv_json().await["msg"], "spam");
    assert_eq!(viewer.recv_json().await, json!({"result": true}));
    assert_eq!(gw.publish("1001@video", "back").await, (1, 0));
    assert_eq!(viewer.recv().await, "back");
}

#[tokio::test]
async fn barrage_invalid_channels_and_errors_keep_the_connection_usable() {
    let gw = Gateway::start(vec![barrage_server()]).await;
    let mut c = Client::connect(&gw.url(0)).await;

    let long_id = format!("{}@video", "9".repeat(65));
    for bad in [
        json!("1001"),
        json!("1001@live"),
        json!("@video"),
        json!("1001@video@x"),
        json!("10 01@video"),
        json!("1001@Video"),
        json!(long_id),
        json!(1001),
        Value::Null,
    ] {
        for op in ["subscribe", "unsubscribe", "send"] {
            expect_error(
                &mut c,
                json!({"op": op, "channel": bad, "msg": "x"}),
                8,
                "Invalid channel",
            )
            .await;
        }
    }
    assert_eq!(gw.publish("1001@live", "x").await, (0, 0));
    assert_eq!(gw.publish("1001", "x").await, (0, 0));

    expect_error_raw(&mut c, "{", 3, "Invalid JSON").await;
    expect_error(&mut c, json!({"op": "like"}), 10, "Unknown op").await;
    c.send_msg(Message::binary(vec![0u8])).await;
    assert_eq!(
        c.recv_json().await,
        json!({"code": 2, "msg": "Only text frames are accepted"})
    );

    ok(&mut c, json!({"op": "subscribe", "channel": "a_b-9@video"})).await;
    let ch = "a_b-9@video";
    expect_error(
        &mut c,
        json!({"op": "send", "channel": ch}),
        4,
        "Missing msg",
    )
    .await;
    expect_error(
        &mut c,
        json!({"op": "send", "channel": ch, "msg": ""}),
        4,
        "Missing msg",
    )
    .await;
    expect_error(
        &mut c,
        json!({"op": "send", "channel": ch, "msg": 1}),
        4,
        "Missing msg",
    )
    .await;
    let too_long = "x".repeat(257);
    expect_error(
        &mut c,
        json!({"op": "send", "channel": ch, "msg": too_long}),
        6,
        "Message too long",
    )
    .await;
    // 256 bytes is the limit and is accepted.
    let max = "y".repeat(256);
    c.send_json(json!({"op": "send", "channel": ch, "msg": max}))
        .await;
    assert_eq!(c.recv_json().await["msg"], max);
    assert_eq!(c.recv_json().await, json!({"result": true}));
    assert_eq!(gw.publish(ch, "still here").await, (1, 0));
    assert_eq!(c.recv().await, "still here");
}

//! Backends that push through a queue, end to end: the real python-socketio
//! `KombuManager(write_only=True)` over RabbitMQ and `RedisManager(
//! write_only=True)`, Flask-SocketIO's `SocketIO(message_queue=...)` and
//! Node's `@socket.io/redis-emitter` publish; real `socket.io-client`s
//! (default transports) connected to the real binary receive. Each emit
//! reaches exactly the clients of its rooms (a client in two of them once),
//! `skip_sid` / `except` are honoured, `room=None` reaches the whole
//! namespace and no other; two cluster nodes reading one queue deliver once
//! to each client; garbage on the queue leaves the gateway serving.
//!
//! "Exactly": after the emits under test, the backend emits `done` to every
//! namespace; a client's events are compared once it has `done` (one queue,
//! applied in order, one outbox per client), so nothing missing or extra
//! can hide. scripts/test.sh provides Redis, RabbitMQ, the pip packages and
//! tests/emitters' npm packages. Config mistakes, retries and metrics of
//! the emitters are tested in tests/emitters.rs, the consumers alone in
//! tests/emitters_consumers.rs.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Joins the rooms of `?rooms=a,b` in the client's namespace.
const ROOMS_SCRIPT: &str = r##"
local function channel_of(ns, room)
    if ns == "/" then return room end
    return ns .. "#" .. room
end
function on_connect(info, conn)
    for room in string.gmatch(info.query.rooms or "", "[^,]+") do
        local err = conn:subscribe(channel_of(info.namespace, room))
        if err then return false, err end
    end
end
"##;

/// A gateway (`mode` dev or engine, `engine` extra lines) reading `emitters`
/// (YAML flow maps), waiting until every emitter's queue is read.
async fn gateway(emitters: &[String], engine: &str, mode: &str) -> Gateway {
    let server = ServerSpec::socketio(Script::Inline(ROOMS_SCRIPT.into()));
    gateway_with(server, emitters, engine, mode).await
}

/// A dev gateway reading a python-socketio emitter on a Redis channel of
/// its own: the gateway, the Redis URL and the channel.
async fn python_redis_gateway(test: &str) -> (Gateway, String, String) {
    let channel = unique_name(test);
    let url = test_redis_url();
    let emitter = format!("{{type: python-socketio, url: '{url}', channel: {channel}}}");
    (gateway(&[emitter], "", "dev").await, url, channel)
}

/// [`gateway`] with another Socket.IO server.
async fn gateway_with(
    server: ServerSpec,
    emitters: &[String],
    engine: &str,
    mode: &str,
) -> Gateway {
    let mut lines = String::from(engine);
    lines.push_str("  emitters:\n");
    for e in emitters {
        lines.push_str(&format!("    - {e}\n"));
    }
    let gw = Gateway::start_full(vec![server], &lines, "", mode).await;
    for i in 0..emitters.len() {
        gw.wait_metric(&format!("connmix_emitter_up{{emitter=\"{i}\"}}"), 1.0)
            .await;
    }
    gw
}

const SECRET: &str = "emitters-test-secret";

/// A JWT for `uid`, as `connmix token` makes them.
fn token(uid: u64) -> String {
    sio_token(SECRET, uid)
}

/// The issue's story: a Flask backend's `KombuManager(write_only=True)`
/// emits to `room=str(target)`; browsers logged in with `?token=` through
/// the shipped lua/entry.socketio.lua (`user_room: "{uid}"`) get it in every
/// open tab of that user, and nobody else does.
#[tokio::test(flavor = "multi_thread")]
async fn a_kombu_backend_reaches_every_tab_of_its_user_through_the_shipped_script() {
    let exchange = unique_name("story");
    let url = test_amqp_url();
    let server = ServerSpec::socketio(Script::Repo("lua/entry.socketio.lua"))
        .option("jwt_secret", SECRET)
        .option("user_room", "{uid}");
    let emitter = format!("{{type: python-socketio, url: '{url}', channel: {exchange}}}");
    let gw = gateway_with(server, &[emitter], "", "dev").await;
    let mut tabs = Clients::connect(
        gw.ports[0],
        json!([
            {"name": "tab1", "query": {"token": token(1001)}},
            {"name": "tab2", "query": {"token": token(1001)}},
            {"name": "other", "query": {"token": token(1002)}},
        ]),
    )
    .await;
    let notify = json!({"user_id": 1, "user_name": "a", "timestamp": 1700000000});
    python(
        "kombu",
        &url,
        &exchange,
        json!([
            {"method": "emit", "event": "following notify", "data": notify, "room": "1001"},
            {"method": "emit", "event": "done", "data": 0},
        ]),
    )
    .await;
    let got = format!("following notify [{notify}]");
    assert_eq!(
        tabs.until_done().await,
        BTreeMap::from([
            ("tab1".to_string(), vec![got.clone()]),
            ("tab2".to_string(), vec![got]),
        ])
    );
    tabs.close().await;
}

/// The clients of the room scenario: a in r1; b in r1 and r2; c in r2;
/// d in no room; e in r1 of namespace /chat.
fn room_clients() -> Value {
    json!([
        {"name": "a", "rooms": ["r1"]},
        {"name": "b", "rooms": ["r1", "r2"]},
        {"name": "c", "rooms": ["r2"]},
        {"name": "d", "rooms": []},
        {"name": "e", "namespace": "/chat", "rooms": ["r1"]},
    ])
}

fn expected_rooms() -> BTreeMap<String, Vec<String>> {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let bin = r#"bin [{"b64":"AAEC"},"x"]"#;
    BTreeMap::from([
        (
            "a".into(),
            v(&[r#"to_r1 [{"n":1}]"#, "to_r1_r2 [2]", "everyone [4]"]),
        ),
        (
            "b".into(),
            v(&[
                r#"to_r1 [{"n":1}]"#,
                "to_r1_r2 [2]",
                "skip_a [3]",
                "everyone [4]",
                bin,
            ]),
        ),
        ("c".into(), v(&["to_r1_r2 [2]", "everyone [4]", bin])),
        ("d".into(), v(&["everyone [4]"])),
        ("e".into(), v(&["chat [5]"])),
    ])
}

/// The room scenario as python-socketio commands.
fn python_commands(c: &Clients) -> Value {
    json!([
        {"method": "emit", "event": "to_r1", "data": {"n": 1}, "room": "r1"},
        {"method": "emit", "event": "to_r1_r2", "data": 2, "room": ["r1", "r2"]},
        {"method": "emit", "event": "skip_a", "data": 3, "room": "r1", "skip_sid": c.sid("a")},
        {"method": "emit", "event": "everyone", "data": 4, "room": null},
        {"method": "emit", "event": "chat", "data": 5, "room": "r1", "namespace": "/chat"},
        {"method": "emit", "event": "bin", "data": ["b64:AAEC", "x"], "room": "r2"},
        {"method": "emit", "event": "done", "data": 0},
        {"method": "emit", "event": "done", "data": 0, "namespace": "/chat"},
    ])
}

async fn python_room_scenario(kind: &str, url: String, channel: &str) {
    let emitter = format!("{{type: python-socketio, url: '{url}', channel: {channel}}}");
    let gw = gateway(&[emitter], "", "dev").await;
    let mut clients = Clients::connect(gw.ports[0], room_clients()).await;
    python(kind, &url, channel, python_commands(&clients)).await;
    assert_eq!(clients.until_done().await, expected_rooms());
    clients.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kombu_manager_over_rabbitmq_reaches_exactly_the_rooms() {
    python_room_scenario("kombu", test_amqp_url(), &unique_name("kombu")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_manager_reaches_exactly_the_rooms() {
    python_room_scenario("redis", test_redis_url(), &unique_name("redis")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flask_socketio_message_queue_reaches_exactly_the_rooms() {
    python_room_scenario("flask", test_redis_url(), &unique_name("flask")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_redis_emitter_reaches_exactly_the_rooms() {
    let key = unique_name("node");
    let url = test_redis_url();
    let gw = gateway(
        &[format!(
            "{{type: socket.io-redis, url: '{url}', channel: {key}}}"
        )],
        "",
        "dev",
    )
    .await;
    let mut clients = Clients::connect(gw.ports[0], room_clients()).await;
    let a = clients.sid("a").to_string();
    node_emitter(
        &url,
        &key,
        json!([
            {"event": "to_r1", "args": [{"n": 1}], "rooms": ["r1"]},
            {"event": "to_r1_r2", "args": [2], "rooms": ["r1", "r2"]},
            {"event": "skip_a", "args": [3], "rooms": ["r1"], "except": [a]},
            {"event": "everyone", "args": [4]},
            {"event": "chat", "args": [5], "rooms": ["r1"], "namespace": "/chat"},
            {"event": "bin", "args": ["b64:AAEC", "x"], "rooms": ["r2"]},
            {"event": "done", "args": [0]},
            {"event": "done", "args": [0], "namespace": "/chat"},
        ]),
    )
    .await;
    assert_eq!(clients.until_done().await, expected_rooms());
    clients.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_deliver_one_emit_once_to_each_client() {
    let redis = RedisServer::start().await;
    let exchange = unique_name("nodes");
    let cluster = format!(
        "  cluster:\n    addr: {}\n    prefix: {exchange}\n    heartbeat: 1\n    nodeExpiry: 3\n",
        redis.addr()
    );
    let emitters = [
        format!(
            "{{type: python-socketio, url: '{}', channel: {exchange}}}",
            test_amqp_url()
        ),
        format!(
            "{{type: python-socketio, url: '{}', channel: {exchange}}}",
            test_redis_url()
        ),
    ];
    let n1 = gateway(&emitters, &cluster, "engine").await;
    let n2 = gateway(&emitters, &cluster, "engine").await;
    n1.wait_nodes(2).await;
    let mut on1 = Clients::connect(
        n1.ports[0],
        json!([{"name": "a", "rooms": ["r"]}, {"name": "x", "rooms": []}]),
    )
    .await;
    let mut on2 = Clients::connect(
        n2.ports[0],
        json!([{"name": "b", "rooms": ["r"]}, {"name": "y", "rooms": []}]),
    )
    .await;
    let commands = |event: &str| {
        json!([
            {"method": "emit", "event": event, "data": 1, "room": "r"},
            {"method": "emit", "event": "done", "data": 0},
        ])
    };
    python("kombu", &test_amqp_url(), &exchange, commands("over_amqp")).await;
    let want = |c: &str| BTreeMap::from([(c.to_string(), vec!["over_amqp [1]".to_string()])]);
    assert_eq!(on1.until_done().await, want("a"));
    assert_eq!(on2.until_done().await, want("b"));
    python(
        "redis",
        &test_redis_url(),
        &exchange,
        commands("over_redis"),
    )
    .await;
    let want = |c: &str| BTreeMap::from([(c.to_string(), vec!["over_redis [1]".to_string()])]);
    assert_eq!(on1.until_done().await, want("a"));
    assert_eq!(on2.until_done().await, want("b"));
    on1.close().await;
    on2.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn room_moves_close_room_and_disconnect_from_a_python_server() {
    let (gw, url, channel) = python_redis_gateway("moves").await;
    let mut clients = Clients::connect(
        gw.ports[0],
        json!([
            {"name": "a", "rooms": ["r1"]},
            {"name": "b", "rooms": ["r1"]},
            {"name": "c", "rooms": ["r2"]},
            {"name": "d", "rooms": []},
        ]),
    )
    .await;
    let sid = |n: &str| clients.sid(n).to_string();
    python(
        "redis",
        &url,
        &channel,
        json!([
            {"method": "enter_room", "sid": sid("d"), "room": "r1"},
            {"method": "leave_room", "sid": sid("a"), "room": "r1"},
            {"method": "emit", "event": "moved", "data": 1, "room": "r1"},
            {"method": "close_room", "room": "r2"},
            {"method": "emit", "event": "closed", "data": 2, "room": "r2"},
            {"method": "disconnect", "sid": sid("c")},
            {"method": "emit", "event": "done", "data": 0},
        ]),
    )
    .await;
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        clients.until_done().await,
        BTreeMap::from([
            ("b".to_string(), v(&["moved [1]"])),
            ("c".to_string(), v(&["disconnect io server disconnect"])),
            ("d".to_string(), v(&["moved [1]"])),
        ])
    );
    clients.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_queue_leaves_the_gateway_serving() {
    let (gw, url, channel) = python_redis_gateway("garbage").await;
    let mut clients = Clients::connect(gw.ports[0], json!([{"name": "a", "rooms": ["r"]}])).await;
    for junk in [
        &b"\x00\xff"[..],
        b"{\"method\":\"emit\"}",
        b"[]",
        b"\x80\x04K\x01.",
    ] {
        assert_eq!(redis_publish(&url, &channel, junk).await, 1);
    }
    python(
        "redis",
        &url,
        &channel,
        json!([
            {"method": "emit", "event": "after", "data": "ok", "room": "r"},
            {"method": "emit", "event": "done", "data": 0},
        ]),
    )
    .await;
    assert_eq!(
        clients.until_done().await,
        BTreeMap::from([("a".to_string(), vec![r#"after ["ok"]"#.to_string()])])
    );
    // New clients still connect.
    let again = Clients::connect(gw.ports[0], json!([{"name": "z", "rooms": []}])).await;
    again.close().await;
    clients.close().await;
}

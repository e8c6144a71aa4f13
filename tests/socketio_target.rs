//! The Socket.IO target (what `engine.emitters` deliver through) against
//! real socket.io-client sockets: rooms are channels, a sid is a room, an
//! emit without rooms reaches the whole namespace, `except` rooms are
//! skipped, each socket is reached once, binary attachments arrive, and a
//! server-side disconnect reaches the client. The gateway runs in-process
//! (the target is an API of `connmix::Gateway`); the clients are node
//! processes (tests/socketio/listen.mjs).

mod common;

use common::{Listener, repo};
use connmix::config::Config;
use connmix::{Gateway, Mode};
use serde_json::{Value, json};

const SECRET: &str = "socketio-target-secret";

async fn start() -> (Gateway, Listener, Value) {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let yaml = format!(
        "logging: {{level: warn}}\nengine:\n  workers: 2\n  apiServer: {{port: {}, bind: 127.0.0.1}}\n  servers:\n    - port: {port}\n      bind: 127.0.0.1\n      protocol: socketio\n      entry: {}\n      options:\n        - {{name: jwt_secret, value: {SECRET}}}\n",
        common::free_port(),
        repo().join("lua/entry.socketio.lua").display()
    );
    let path = dir.path().join("connmix.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let config = Config::load(&path).unwrap();
    let gw = Gateway::start(config, Mode::Single, None).await.unwrap();
    let l = Listener::start(port, SECRET).await;
    let sids = l.sids.clone();
    (gw, l, sids)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emits_reach_exactly_the_rooms_sids_and_namespaces_they_name() {
    let (gw, mut l, sids) = start().await;
    let t = gw.socketio_rooms();
    let (a, b, c) = (s(&sids["a"]), s(&sids["b"]), s(&sids["c"]));

    // A room of "/" is the channel of that name: only user 1001's socket.
    assert_eq!(
        t.emit("/", "e1", &[json!(1)], vec![], &["user:1001".into()], &[]),
        1
    );
    assert_eq!(l.line().await, r#"got a e1 [1]"#);

    // No rooms: the whole namespace, less the except rooms (a sid is a room).
    assert_eq!(
        t.emit(
            "/",
            "e2",
            &[json!("x")],
            vec![],
            &[],
            std::slice::from_ref(&a)
        ),
        1
    );
    assert_eq!(
        l.line().await,
        r#"got b e2 ["x"]"#,
        "b is reached, a skipped, b never got e1"
    );

    // A socket in several of the rooms is reached once.
    assert_eq!(t.join("/", &b, "vip", true), 1);
    assert_eq!(
        t.emit("/", "e3", &[], vec![], &["vip".into(), b.clone()], &[]),
        1
    );
    assert_eq!(l.line().await, r#"got b e3 []"#);

    // Namespace /chat: its room user:1001 is the channel /chat#user:1001.
    assert_eq!(
        t.emit(
            "/chat",
            "e4",
            &[json!({"k":true})],
            vec![],
            &["user:1001".into()],
            &[]
        ),
        1
    );
    assert_eq!(l.line().await, r#"got c e4 [{"k":true}]"#);

    // Binary attachments.
    let bin = vec![bytes::Bytes::from_static(&[7, 8])];
    let ph = json!({"_placeholder": true, "num": 0});
    assert_eq!(
        t.emit("/", "e5", &[ph], bin, &[c.clone(), a.clone()], &[]),
        1,
        "c is not a socket of /"
    );
    assert_eq!(l.line().await, r#"got a e5 [{"bin":[7,8]}]"#);

    // close_room empties the room; leave takes one socket out.
    assert_eq!(t.close_room("/", "vip"), 1);
    assert_eq!(t.emit("/", "e6", &[], vec![], &["vip".into()], &[]), 0);
    assert_eq!(t.join("/", &b, "vip", true), 1);
    assert_eq!(t.join("/", &b, "vip", false), 1);
    assert_eq!(t.emit("/", "e6", &[], vec![], &["vip".into()], &[]), 0);

    // A server-side disconnect of one socket; the others stay.
    assert_eq!(t.disconnect("/", &a), 1);
    assert_eq!(l.line().await, "disconnect a io server disconnect");
    assert_eq!(t.emit("/", "e7", &[], vec![], &[], &[]), 1);
    assert_eq!(l.line().await, r#"got b e7 []"#);
    assert_eq!(t.disconnect("/", "no-such-sid"), 0);
    gw.shutdown().await;
}

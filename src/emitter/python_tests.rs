//! Unit tests of the python-socketio decoder, on messages captured from
//! python-socketio 5.18's `PubSubManager` (emit, close_room, disconnect).

use super::*;
use serde_json::json;

fn emit_of(payload: &str) -> Emit {
    match decode(payload.as_bytes()) {
        Ok(Some(Command::Emit(e))) => e,
        other => panic!("not an emit: {other:?}"),
    }
}

#[test]
fn an_emit_to_one_room() {
    let e = emit_of(
        r#"{"method": "emit", "event": "following notify", "data": [{"user_id": 1, "user_name": "a"}], "binary": false, "namespace": "/", "room": "42", "skip_sid": null, "callback": null, "host_id": "ea9c31a9433143c7a6a28f6ffe2235f4"}"#,
    );
    assert_eq!(
        e,
        Emit {
            namespace: "/".into(),
            event: "following notify".into(),
            args: vec![json!({"user_id": 1, "user_name": "a"})],
            attachments: vec![],
            rooms: vec!["42".into()],
            except_rooms: vec![],
            id: None,
        }
    );
}

#[test]
fn several_arguments_rooms_and_a_skipped_sid() {
    let e = emit_of(
        r#"{"method": "emit", "event": "multi", "data": [1, "two", null], "binary": false, "namespace": "/chat", "room": ["a", "b"], "skip_sid": "sidx", "callback": null, "host_id": "h"}"#,
    );
    assert_eq!(e.namespace, "/chat");
    assert_eq!(e.args, vec![json!(1), json!("two"), Value::Null]);
    assert_eq!(e.rooms, vec!["a", "b"]);
    assert_eq!(e.except_rooms, vec!["sidx"]);
}

#[test]
fn room_null_is_the_whole_namespace_and_skip_sid_may_be_a_list() {
    let e = emit_of(
        r#"{"method": "emit", "event": "x", "data": ["a"], "room": null, "skip_sid": ["s1", "s2"], "namespace": null}"#,
    );
    assert!(e.rooms.is_empty());
    assert_eq!(e.except_rooms, vec!["s1", "s2"]);
    assert_eq!(e.namespace, "/");
}

#[test]
fn numeric_rooms_become_their_decimal_name() {
    let e = emit_of(r#"{"method": "emit", "event": "x", "data": [], "room": [7, "b"]}"#);
    assert_eq!(e.rooms, vec!["7", "b"]);
}

#[test]
fn binary_arguments_keep_placeholders_and_decode_attachments() {
    let e = emit_of(
        r#"{"method": "emit", "event": "bin", "data": [[{"_placeholder": true, "num": 0}, {"x": {"_placeholder": true, "num": 1}}], "AAE=", "aGk="], "binary": true, "namespace": "/", "room": null, "skip_sid": null, "callback": null, "host_id": "h"}"#,
    );
    assert_eq!(
        e.args,
        vec![
            json!({"_placeholder": true, "num": 0}),
            json!({"x": {"_placeholder": true, "num": 1}})
        ]
    );
    assert_eq!(
        e.attachments,
        vec![Bytes::from_static(&[0, 1]), Bytes::from_static(b"hi")]
    );
}

#[test]
fn a_placeholder_without_its_attachment_is_refused() {
    let r = decode(
        br#"{"method": "emit", "event": "bin", "data": [[{"_placeholder": true, "num": 1}], "AAE="], "binary": true}"#,
    );
    assert!(matches!(r, Err(DecodeError::Invalid(_))), "{r:?}");
    let r = decode(br#"{"method": "emit", "event": "bin", "data": [[], "%%%"], "binary": true}"#);
    assert!(matches!(r, Err(DecodeError::Invalid(m)) if m.contains("base64")));
}

#[test]
fn room_methods() {
    assert_eq!(
        decode(br#"{"method": "close_room", "room": "r1", "namespace": "/n", "host_id": "h"}"#),
        Ok(Some(Command::CloseRoom {
            namespace: "/n".into(),
            room: "r1".into()
        }))
    );
    assert_eq!(
        decode(br#"{"method": "disconnect", "sid": "sid1", "namespace": "/", "host_id": "h"}"#),
        Ok(Some(Command::Disconnect {
            namespace: "/".into(),
            sid: "sid1".into()
        }))
    );
    assert_eq!(
        decode(br#"{"method": "enter_room", "sid": "s", "room": "lobby", "namespace": "/", "host_id": "h"}"#),
        Ok(Some(Command::EnterRoom {
            namespace: "/".into(),
            sid: "s".into(),
            room: "lobby".into()
        }))
    );
    assert_eq!(
        decode(br#"{"method": "leave_room", "sid": "s", "room": 3}"#),
        Ok(Some(Command::LeaveRoom {
            namespace: "/".into(),
            sid: "s".into(),
            room: "3".into()
        }))
    );
}

#[test]
fn callbacks_between_python_servers_are_not_for_clients() {
    assert_eq!(
        decode(br#"{"method": "callback", "host_id": "h", "sid": "s", "namespace": "/", "id": 1, "args": []}"#),
        Ok(None)
    );
}

#[test]
fn a_json_string_holding_the_message_is_read() {
    let inner = r#"{"method": "close_room", "room": "r", "namespace": "/"}"#;
    let outer = serde_json::to_string(inner).unwrap();
    assert!(matches!(
        decode(outer.as_bytes()),
        Ok(Some(Command::CloseRoom { .. }))
    ));
}

#[test]
fn pickled_messages_are_recognised() {
    // pickle.dumps({'method': 'emit'}) with protocol 4.
    let p =
        b"\x80\x04\x95\x14\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x06method\x94\x8c\x04emit\x94s.";
    assert_eq!(decode(p), Err(DecodeError::Pickled));
}

#[test]
fn garbage_is_invalid_with_a_reason() {
    for (bad, why) in [
        (&b"\xff\xfe"[..], "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b"{}", "method"),
        (br#"{"method": "explode"}"#, "unknown method"),
        (br#"{"method": "emit", "data": []}"#, "event"),
        (
            br#"{"method": "emit", "event": "e", "room": {"a": 1}}"#,
            "room",
        ),
        (
            br#"{"method": "emit", "event": "e", "namespace": 5}"#,
            "namespace",
        ),
        (br#"{"method": "disconnect"}"#, "sid"),
    ] {
        match decode(bad) {
            Err(DecodeError::Invalid(m)) => assert!(m.contains(why), "{m} lacks {why}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

//! Decoding Node's `@socket.io/redis-emitter` messages (the format of
//! `@socket.io/redis-adapter` broadcasts): msgpack `[uid, packet, opts]`,
//! published on `<key>#<nsp>#` or, for exactly one room, `<key>#<nsp>#<room>#`.
//!
//! ```text
//! packet: {type: 2 (EVENT) | 5 (BINARY_EVENT), data: [event, arg, ...], nsp: "/"}
//! opts:   {rooms: [room, ...], except: [room, ...], flags: {volatile?, compress?}}
//! ```
//!
//! msgpack `bin` values (Node Buffers) become `{"_placeholder": true, "num": i}`
//! with the bytes as attachment `i`; other msgpack extensions become `null`.
//! The packet's own `nsp` and `opts.rooms` decide the audience; the channel
//! name is only how Redis routed it. Pure functions: no I/O, no logging.

use super::command::{Command, Emit};
use super::decode::DecodeError;
use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{Map, Value};

/// `EVENT` and `BINARY_EVENT` of the Socket.IO protocol.
const EVENT: u64 = 2;
const BINARY_EVENT: u64 = 5;

fn invalid(m: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(m.into())
}

/// Decodes one message into an [`Command::Emit`].
pub fn decode(payload: &[u8]) -> Result<Command, DecodeError> {
    let mut rest = payload;
    let value =
        rmpv::decode::read_value(&mut rest).map_err(|e| invalid(format!("not msgpack: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid("bytes after the msgpack value"));
    }
    let Mp::Array(mut parts) = value else {
        return Err(invalid("not a msgpack array [uid, packet, opts]"));
    };
    if parts.len() < 2 {
        return Err(invalid("not a msgpack array [uid, packet, opts]"));
    }
    let opts = if parts.len() > 2 {
        parts.swap_remove(2)
    } else {
        Mp::Nil
    };
    let packet = parts.swap_remove(1);
    let packet = map_of(packet, "packet")?;
    let kind = field(&packet, "type").and_then(Mp::as_u64);
    if kind != Some(EVENT) && kind != Some(BINARY_EVENT) {
        return Err(invalid(format!(
            "packet type {kind:?} is not an event (2 or 5)"
        )));
    }
    let namespace = match field(&packet, "nsp") {
        None | Some(Mp::Nil) => "/".to_string(),
        Some(Mp::String(s)) => s
            .as_str()
            .ok_or_else(|| invalid("packet.nsp is not UTF-8"))?
            .to_string(),
        Some(_) => return Err(invalid("packet.nsp is not a string")),
    };
    let mut attachments = Vec::new();
    let mut data = match field(&packet, "data") {
        Some(Mp::Array(items)) => items
            .iter()
            .map(|v| to_json(v, &mut attachments))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(invalid("packet.data is not a list [event, ...args]")),
    };
    if data.is_empty() {
        return Err(invalid("packet.data has no event name"));
    }
    let Value::String(event) = data.remove(0) else {
        return Err(invalid("the event name is not a string"));
    };
    let (rooms, except_rooms) = match opts {
        Mp::Nil => (Vec::new(), Vec::new()),
        opts => {
            let opts = map_of(opts, "opts")?;
            (rooms(&opts, "rooms")?, rooms(&opts, "except")?)
        }
    };
    Ok(Command::Emit(Emit {
        namespace,
        event,
        args: data,
        attachments,
        rooms,
        except_rooms,
        id: None,
    }))
}

fn map_of(v: Mp, what: &str) -> Result<Vec<(Mp, Mp)>, DecodeError> {
    match v {
        Mp::Map(m) => Ok(m),
        _ => Err(invalid(format!("{what} is not a map"))),
    }
}

fn field<'a>(m: &'a [(Mp, Mp)], key: &str) -> Option<&'a Mp> {
    m.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// `opts.rooms` / `opts.except`: absent, or a list of strings (numbers are
/// taken as their decimal name).
fn rooms(opts: &[(Mp, Mp)], key: &str) -> Result<Vec<String>, DecodeError> {
    match field(opts, key) {
        None | Some(Mp::Nil) => Ok(Vec::new()),
        Some(Mp::Array(list)) => list
            .iter()
            .map(|r| match r {
                Mp::String(s) => s
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("opts.{key} has a room that is not UTF-8"))),
                Mp::Integer(n) => Ok(n.to_string()),
                _ => Err(invalid(format!(
                    "opts.{key} has a room that is not a string"
                ))),
            })
            .collect(),
        Some(_) => Err(invalid(format!("opts.{key} is not a list"))),
    }
}

/// msgpack to JSON; `bin` becomes a placeholder and an attachment.
fn to_json(v: &Mp, attachments: &mut Vec<Bytes>) -> Result<Value, DecodeError> {
    Ok(match v {
        Mp::Nil | Mp::Ext(..) => Value::Null,
        Mp::Boolean(b) => Value::Bool(*b),
        Mp::Integer(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::Null,
        },
        Mp::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        Mp::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Mp::String(s) => Value::String(
            s.as_str()
                .ok_or_else(|| invalid("a string argument is not UTF-8"))?
                .to_string(),
        ),
        Mp::Binary(b) => {
            attachments.push(Bytes::copy_from_slice(b));
            let mut p = Map::new();
            p.insert("_placeholder".into(), Value::Bool(true));
            p.insert("num".into(), Value::from(attachments.len() - 1));
            Value::Object(p)
        }
        Mp::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| to_json(i, attachments))
                .collect::<Result<_, _>>()?,
        ),
        Mp::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                let key = match k {
                    Mp::String(s) => s
                        .as_str()
                        .ok_or_else(|| invalid("a map key is not UTF-8"))?
                        .to_string(),
                    Mp::Integer(n) => n.to_string(),
                    _ => return Err(invalid("a map key is not a string")),
                };
                m.insert(key, to_json(v, attachments)?);
            }
            Value::Object(m)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Captured from @socket.io/redis-emitter 5.1.0 (notepack.io 3).
    fn captured(hex_text: &str) -> Emit {
        match decode(&hex::decode(hex_text).unwrap()) {
            Ok(Command::Emit(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn to_one_room() {
        // io.to("room1").emit("hello", { a: 1 }, "two") on socket.io#/#room1#
        let e = captured(
            "93a7656d697474657283a47479706502a46461746193a568656c6c6f81a16101a374776fa36e7370a12f83a5726f6f6d7391a5726f6f6d31a5666c61677380a665786365707490",
        );
        assert_eq!(
            e,
            Emit {
                namespace: "/".into(),
                event: "hello".into(),
                args: vec![json!({"a": 1}), json!("two")],
                attachments: vec![],
                rooms: vec!["room1".into()],
                except_rooms: vec![],
                id: None,
            }
        );
    }

    #[test]
    fn to_everyone_but_a_room() {
        // io.except("x").emit("all", 3.5, null, true)
        let e = captured(
            "93a7656d697474657283a47479706502a46461746194a3616c6ccb400c000000000000c0c3a36e7370a12f83a5726f6f6d7390a5666c61677380a665786365707491a178",
        );
        assert_eq!(e.args, vec![json!(3.5), Value::Null, json!(true)]);
        assert!(e.rooms.is_empty());
        assert_eq!(e.except_rooms, vec!["x"]);
    }

    #[test]
    fn buffers_become_attachments_in_order() {
        // io.of("/chat").to(["r1", "r2"]).emit("bin", Buffer[1,2,3], {nested: Buffer "hi"})
        let e = captured(
            "93a7656d697474657283a47479706502a46461746193a362696ec40301020381a66e6573746564c4026869a36e7370a52f6368617483a5726f6f6d7392a27231a27232a5666c61677380a665786365707490",
        );
        assert_eq!(e.namespace, "/chat");
        assert_eq!(e.rooms, vec!["r1", "r2"]);
        assert_eq!(
            e.args,
            vec![
                json!({"_placeholder": true, "num": 0}),
                json!({"nested": {"_placeholder": true, "num": 1}})
            ]
        );
        assert_eq!(
            e.attachments,
            vec![Bytes::from_static(&[1, 2, 3]), Bytes::from_static(b"hi")]
        );
    }

    #[test]
    fn flags_are_accepted() {
        // io.volatile.emit("v")
        let e = captured(
            "93a7656d697474657283a47479706502a46461746191a176a36e7370a12f83a5726f6f6d7390a5666c61677381a8766f6c6174696c65c3a665786365707490",
        );
        assert_eq!((e.event.as_str(), e.args.len()), ("v", 0));
    }

    #[test]
    fn garbage_is_invalid_with_a_reason() {
        let mp = |v: Mp| {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &v).unwrap();
            out
        };
        let packet = |ty: i64, data: Mp| {
            Mp::Map(vec![
                (Mp::from("type"), Mp::from(ty)),
                (Mp::from("data"), data),
                (Mp::from("nsp"), Mp::from("/")),
            ])
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{\"json\": true}".to_vec(), "msgpack"),
            (vec![0xc1], "msgpack"),
            (mp(Mp::from("x")), "array"),
            (
                mp(Mp::Array(vec![Mp::from("u"), Mp::from(1)])),
                "packet is not a map",
            ),
            (
                mp(Mp::Array(vec![Mp::from("u"), packet(3, Mp::Array(vec![]))])),
                "not an event",
            ),
            (
                mp(Mp::Array(vec![Mp::from("u"), packet(2, Mp::Array(vec![]))])),
                "no event name",
            ),
            (
                mp(Mp::Array(vec![
                    Mp::from("u"),
                    packet(2, Mp::Array(vec![Mp::from(1)])),
                ])),
                "event name",
            ),
            (
                mp(Mp::Array(vec![
                    Mp::from("u"),
                    packet(2, Mp::Array(vec![Mp::from("e")])),
                    Mp::Map(vec![(Mp::from("rooms"), Mp::from("r"))]),
                ])),
                "opts.rooms",
            ),
        ];
        for (bytes, why) in cases {
            match decode(&bytes) {
                Err(DecodeError::Invalid(m)) => assert!(m.contains(why), "{m} lacks {why}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }
}

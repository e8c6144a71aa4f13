//! Decoding python-socketio's pub/sub messages (python-socketio 5.14 and
//! later, Flask-SocketIO's `message_queue=`): one JSON object per message,
//! as `PubSubManager` in python-socketio's `pubsub_manager.py` writes it.
//!
//! ```text
//! {"method": "emit", "event": "e", "data": [arg, ...], "binary": false,
//!  "namespace": "/", "room": null | "r" | ["r", ...],
//!  "skip_sid": null | "sid" | ["sid", ...], "callback": null, "host_id": "..."}
//! {"method": "enter_room" | "leave_room", "sid": "...", "room": "r", "namespace": "/"}
//! {"method": "close_room", "room": "r", "namespace": "/"}
//! {"method": "disconnect", "sid": "...", "namespace": "/"}
//! ```
//!
//! With `"binary": true`, `data` is `[args_with_placeholders, base64, ...]`:
//! the arguments with `{"_placeholder": true, "num": i}` in place of each
//! bytes value, then the attachments in order. Older versions pickled the
//! message instead; those are recognised and refused as
//! [`DecodeError::Pickled`].
//! Pure functions: no I/O, no logging.

use super::command::{Command, Emit};
use super::decode::DecodeError;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};

fn invalid(m: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(m.into())
}

/// Decodes one message. `Ok(None)` for messages that are not for Socket.IO
/// clients (`method: callback`, an ack travelling between python servers).
pub fn decode(payload: &[u8]) -> Result<Option<Command>, DecodeError> {
    if is_pickle(payload) {
        return Err(DecodeError::Pickled);
    }
    let mut value: Value =
        serde_json::from_slice(payload).map_err(|e| invalid(format!("not JSON: {e}")))?;
    // A JSON string holding the JSON text: what a producer that serialises
    // an already-encoded string sends.
    if let Value::String(inner) = &value {
        value = serde_json::from_str(inner)
            .map_err(|e| invalid(format!("a JSON string that is not JSON: {e}")))?;
    }
    let Value::Object(m) = value else {
        return Err(invalid("not a JSON object"));
    };
    let method = m
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("no \"method\""))?;
    let namespace = namespace(&m)?;
    let cmd = match method {
        "emit" => Command::Emit(emit(&m, namespace)?),
        "enter_room" => Command::EnterRoom {
            namespace,
            sid: text(&m, "sid")?,
            room: room_name(m.get("room"), "room")?,
        },
        "leave_room" => Command::LeaveRoom {
            namespace,
            sid: text(&m, "sid")?,
            room: room_name(m.get("room"), "room")?,
        },
        "close_room" => Command::CloseRoom {
            namespace,
            room: room_name(m.get("room"), "room")?,
        },
        "disconnect" => Command::Disconnect {
            namespace,
            sid: text(&m, "sid")?,
        },
        "callback" => return Ok(None),
        other => return Err(invalid(format!("unknown method {other:?}"))),
    };
    Ok(Some(cmd))
}

/// Pickle protocol 2 and later: PROTO opcode first, STOP opcode last.
fn is_pickle(p: &[u8]) -> bool {
    p.len() >= 3 && p[0] == 0x80 && (2..=5).contains(&p[1]) && p[p.len() - 1] == b'.'
}

fn namespace(m: &Map<String, Value>) -> Result<String, DecodeError> {
    match m.get("namespace") {
        None | Some(Value::Null) => Ok("/".into()),
        Some(Value::String(s)) if s.is_empty() => Ok("/".into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid("\"namespace\" is not a string")),
    }
}

fn text(m: &Map<String, Value>, key: &str) -> Result<String, DecodeError> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(invalid(format!("\"{key}\" is not a string"))),
    }
}

/// A room as python allows it: a string, or a number (`room=42`), which
/// Socket.IO clients of this gateway know as the room `"42"`.
fn room_name(v: Option<&Value>, key: &str) -> Result<String, DecodeError> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(invalid(format!("\"{key}\" is not a room name"))),
    }
}

/// `null` (none), one room, or a list of rooms.
fn rooms(v: Option<&Value>, key: &str) -> Result<Vec<String>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list.iter().map(|r| room_name(Some(r), key)).collect(),
        one => Ok(vec![room_name(one, key)?]),
    }
}

fn emit(m: &Map<String, Value>, namespace: String) -> Result<Emit, DecodeError> {
    let event = text(m, "event")?;
    let data = m.get("data").cloned().unwrap_or(Value::Null);
    let binary = m.get("binary").and_then(Value::as_bool).unwrap_or(false);
    let (args, attachments) = if binary {
        let Value::Array(mut parts) = data else {
            return Err(invalid("binary \"data\" is not a list"));
        };
        if parts.is_empty() {
            return Err(invalid("binary \"data\" is empty"));
        }
        let attachments = parts
            .drain(1..)
            .enumerate()
            .map(|(i, a)| match a {
                Value::String(s) => base64::engine::general_purpose::STANDARD
                    .decode(s.as_bytes())
                    .map(Bytes::from)
                    .map_err(|e| invalid(format!("attachment {i} is not base64: {e}"))),
                _ => Err(invalid(format!("attachment {i} is not a string"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let args = into_args(parts.pop().expect("one element left"));
        check_placeholders(&args, attachments.len())?;
        (args, attachments)
    } else {
        (into_args(data), Vec::new())
    };
    Ok(Emit {
        namespace,
        event,
        args,
        attachments,
        rooms: rooms(m.get("room"), "room")?,
        except_rooms: rooms(m.get("skip_sid"), "skip_sid")?,
        id: None,
    })
}

/// `data` is the argument list; anything else is one argument.
fn into_args(data: Value) -> Vec<Value> {
    match data {
        Value::Array(a) => a,
        other => vec![other],
    }
}

/// Every placeholder must name an attachment that is there.
fn check_placeholders(args: &[Value], count: usize) -> Result<(), DecodeError> {
    fn walk(v: &Value, count: usize) -> Result<(), DecodeError> {
        match v {
            Value::Object(o) if o.get("_placeholder") == Some(&Value::Bool(true)) => {
                match o.get("num").and_then(Value::as_u64) {
                    Some(n) if (n as usize) < count => Ok(()),
                    _ => Err(invalid(format!(
                        "a placeholder names a missing attachment ({count} sent)"
                    ))),
                }
            }
            Value::Object(o) => o.values().try_for_each(|v| walk(v, count)),
            Value::Array(a) => a.iter().try_for_each(|v| walk(v, count)),
            _ => Ok(()),
        }
    }
    args.iter().try_for_each(|a| walk(a, count))
}

#[cfg(test)]
#[path = "python_tests.rs"]
mod tests;

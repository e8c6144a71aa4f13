//! Socket.IO v5 packets (carried in Engine.IO message packets): decoding a
//! client's packet with its checks, and encoding the server's. Pure, no I/O.
//!
//! ```text
//! <type>[<attachments>-][<namespace>,][<ack id>][<JSON>]
//! 0 CONNECT  1 DISCONNECT  2 EVENT  3 ACK  4 CONNECT_ERROR  5 BINARY_EVENT  6 BINARY_ACK
//! ```
//! Binary packets carry `{"_placeholder":true,"num":i}` in their JSON and
//! are followed by that many binary Engine.IO messages, in order.

use crate::json_text::json_text;
use serde_json::Value as Json;

/// Packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl Kind {
    fn from_digit(c: u8) -> Option<Kind> {
        Some(match c {
            b'0' => Kind::Connect,
            b'1' => Kind::Disconnect,
            b'2' => Kind::Event,
            b'3' => Kind::Ack,
            b'4' => Kind::ConnectError,
            b'5' => Kind::BinaryEvent,
            b'6' => Kind::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            Kind::Connect => '0',
            Kind::Disconnect => '1',
            Kind::Event => '2',
            Kind::Ack => '3',
            Kind::ConnectError => '4',
            Kind::BinaryEvent => '5',
            Kind::BinaryAck => '6',
        }
    }
}

/// A decoded packet. Binary packets still hold their placeholders; the
/// attachments follow as separate Engine.IO messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: Kind,
    pub namespace: String,
    pub id: Option<u64>,
    pub data: Option<Json>,
    pub attachments: usize,
}

/// Attachments one binary packet may announce.
pub const MAX_ATTACHMENTS: usize = 64;

/// Event names a client may not emit (they are the server's own).
const RESERVED: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Why a packet was refused (the connection is then closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown Socket.IO packet type")]
    UnknownType,
    #[error("invalid attachment count")]
    Attachments,
    #[error("invalid JSON payload")]
    Json,
    #[error("invalid payload for this packet type")]
    Payload,
    #[error("a client may not send CONNECT_ERROR")]
    ConnectError,
}

/// Decodes one packet from a client.
pub fn decode(s: &str) -> Result<Packet, DecodeError> {
    let b = s.as_bytes();
    let kind = b
        .first()
        .copied()
        .and_then(Kind::from_digit)
        .ok_or(DecodeError::UnknownType)?;
    let mut i = 1;
    let mut attachments = 0;
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || b.get(i) != Some(&b'-') {
            return Err(DecodeError::Attachments);
        }
        attachments = s[start..i]
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_ATTACHMENTS)
            .ok_or(DecodeError::Attachments)?;
        i += 1;
    }
    let mut namespace = "/".to_string();
    if b.get(i) == Some(&b'/') {
        let end = s[i..].find(',').map(|p| i + p).unwrap_or(b.len());
        namespace = s[i..end].to_string();
        i = (end + 1).min(b.len());
    }
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let id = if i > start {
        Some(
            s[start..i]
                .parse::<u64>()
                .map_err(|_| DecodeError::Payload)?,
        )
    } else {
        None
    };
    let data = if i < b.len() {
        Some(serde_json::from_str::<Json>(&s[i..]).map_err(|_| DecodeError::Json)?)
    } else {
        None
    };
    let valid = match kind {
        Kind::Connect => matches!(data, None | Some(Json::Object(_))),
        Kind::Disconnect => data.is_none(),
        Kind::Event | Kind::BinaryEvent => match &data {
            Some(Json::Array(a)) => match a.first() {
                Some(Json::String(name)) => !RESERVED.contains(&name.as_str()),
                Some(Json::Number(_)) => true,
                _ => false,
            },
            _ => false,
        },
        Kind::Ack | Kind::BinaryAck => matches!(data, Some(Json::Array(_))) && id.is_some(),
        Kind::ConnectError => return Err(DecodeError::ConnectError),
    };
    if !valid {
        return Err(DecodeError::Payload);
    }
    Ok(Packet {
        kind,
        namespace,
        id,
        data,
        attachments,
    })
}

/// Encodes a packet; `data` is JSON text. Binary kinds need `attachments`.
pub fn encode(
    kind: Kind,
    namespace: &str,
    id: Option<u64>,
    attachments: usize,
    data: Option<&str>,
) -> String {
    let mut s = String::with_capacity(16 + namespace.len() + data.map_or(0, str::len));
    s.push('4'); // the Engine.IO message packet carrying it
    s.push(kind.digit());
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        s.push_str(&attachments.to_string());
        s.push('-');
    }
    if namespace != "/" {
        s.push_str(namespace);
        s.push(',');
    }
    if let Some(id) = id {
        s.push_str(&id.to_string());
    }
    if let Some(d) = data {
        s.push_str(d);
    }
    s
}

/// An EVENT (or BINARY_EVENT) packet for `event` with JSON `args`, as the
/// text of an Engine.IO message packet.
pub fn event(
    namespace: &str,
    event: &str,
    args: &[Json],
    id: Option<u64>,
    attachments: usize,
) -> String {
    let mut arr = Vec::with_capacity(args.len() + 1);
    arr.push(Json::String(event.to_string()));
    arr.extend_from_slice(args);
    let kind = if attachments > 0 {
        Kind::BinaryEvent
    } else {
        Kind::Event
    };
    encode(
        kind,
        namespace,
        id,
        attachments,
        Some(&json_text(&Json::Array(arr))),
    )
}

/// An EVENT (or BINARY_EVENT) packet for `event` with one argument given as
/// JSON text (embedded as it is: a published JSON document keeps its bytes).
pub fn event_raw(namespace: &str, event: &str, arg_json: &str, attachments: usize) -> String {
    let kind = if attachments > 0 {
        Kind::BinaryEvent
    } else {
        Kind::Event
    };
    let name = json_text(&Json::String(event.to_string()));
    let data = format!("[{name},{arg_json}]");
    encode(kind, namespace, None, attachments, Some(&data))
}

/// An ACK (or BINARY_ACK) packet.
pub fn ack(namespace: &str, id: u64, args: &[Json], attachments: usize) -> String {
    let kind = if attachments > 0 {
        Kind::BinaryAck
    } else {
        Kind::Ack
    };
    let data = json_text(&Json::Array(args.to_vec()));
    encode(kind, namespace, Some(id), attachments, Some(&data))
}

/// The CONNECT answer: `40{"sid":..}`.
pub fn connect_ok(namespace: &str, sid: &str) -> String {
    encode(
        Kind::Connect,
        namespace,
        None,
        0,
        Some(&serde_json::json!({ "sid": sid }).to_string()),
    )
}

/// A CONNECT_ERROR: `44{"message":..}` (plus `data` when given).
pub fn connect_error(namespace: &str, message: &str, data: Option<&Json>) -> String {
    let mut v = serde_json::json!({ "message": message });
    if let Some(d) = data {
        v["data"] = d.clone();
    }
    encode(Kind::ConnectError, namespace, None, 0, Some(&v.to_string()))
}

/// A server-side DISCONNECT of a namespace.
pub fn disconnect(namespace: &str) -> String {
    encode(Kind::Disconnect, namespace, None, 0, None)
}

/// Whether a JSON value is an attachment placeholder; its index if so.
pub fn placeholder(v: &Json) -> Option<usize> {
    let o = v.as_object()?;
    if o.get("_placeholder")? != &Json::Bool(true) {
        return None;
    }
    o.get("num")?.as_u64().map(|n| n as usize)
}

/// The placeholder for attachment `n`.
pub fn placeholder_for(n: usize) -> Json {
    serde_json::json!({ "_placeholder": true, "num": n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_connect_with_and_without_namespace_and_auth() {
        let p = decode("0").unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str(), p.data),
            (Kind::Connect, "/", None)
        );
        let p = decode(r#"0/custom,{"token":"abc"}"#).unwrap();
        assert_eq!(p.namespace, "/custom");
        assert_eq!(p.data, Some(json!({"token":"abc"})));
        assert_eq!(decode("0/random").unwrap().namespace, "/random");
        assert_eq!(decode("0[1]"), Err(DecodeError::Payload));
    }

    #[test]
    fn decodes_events_acks_and_binary() {
        let p = decode(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#).unwrap();
        assert_eq!((p.kind, p.id), (Kind::Event, Some(456)));
        let p =
            decode(r#"52-789["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
                .unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.id),
            (Kind::BinaryEvent, 2, Some(789))
        );
        assert_eq!(placeholder(&p.data.unwrap()[1]), Some(0));
        let p = decode("3/chat,7[1]").unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str(), p.id),
            (Kind::Ack, "/chat", Some(7))
        );
    }

    #[test]
    fn refuses_what_the_reference_parser_refuses() {
        assert_eq!(decode("abc"), Err(DecodeError::UnknownType));
        assert_eq!(decode("2{}"), Err(DecodeError::Payload));
        assert_eq!(decode(r#"2abc["m"]"#), Err(DecodeError::Json));
        assert_eq!(decode(r#"2["connect"]"#), Err(DecodeError::Payload));
        assert_eq!(decode("2[]"), Err(DecodeError::Payload));
        assert_eq!(decode("1{}"), Err(DecodeError::Payload));
        assert_eq!(
            decode("3[1]"),
            Err(DecodeError::Payload),
            "an ack needs its id"
        );
        assert_eq!(decode(r#"5["m"]"#), Err(DecodeError::Attachments));
        assert_eq!(decode(r#"5999-["m"]"#), Err(DecodeError::Attachments));
        assert_eq!(
            decode(r#"4{"message":"x"}"#),
            Err(DecodeError::ConnectError)
        );
        assert_eq!(decode(""), Err(DecodeError::UnknownType));
    }

    #[test]
    fn encodes_like_the_reference_server() {
        assert_eq!(
            event("/", "message-back", &[json!(1), json!("2")], None, 0),
            r#"42["message-back",1,"2"]"#
        );
        assert_eq!(
            event("/custom", "auth", &[json!({})], None, 0),
            r#"42/custom,["auth",{}]"#
        );
        assert_eq!(
            ack("/", 789, &[placeholder_for(0), placeholder_for(1)], 2),
            r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
        );
        assert_eq!(
            connect_error("/random", "Invalid namespace", None),
            r#"44/random,{"message":"Invalid namespace"}"#
        );
        assert_eq!(connect_ok("/", "x"), r#"40{"sid":"x"}"#);
        assert_eq!(
            event_raw("/", "n", r#"{"b":1,"a":2}"#, 0),
            r#"42["n",{"b":1,"a":2}]"#
        );
        assert_eq!(disconnect("/chat"), "41/chat,");
    }
}

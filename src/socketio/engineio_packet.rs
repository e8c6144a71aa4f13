//! Engine.IO v4 packets: the codec of one packet over WebSocket and of the
//! `\x1e`-separated payloads of HTTP long-polling. Pure functions, no I/O.
//!
//! ```text
//! 0{"sid":..}  open      1 close    2 ping    3 pong
//! 4<data>      message   5 upgrade  6 noop
//! ```
//! Over WebSocket a binary frame is a binary message packet; in a polling
//! payload a binary message is `b` followed by its base64.
//!
//! Outgoing packets are kept as [`tungstenite::Message`]s (a text packet or
//! a binary message), so a WebSocket writes them as they are and a polling
//! response joins them with [`encode_payload`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use tungstenite::Message;

/// The record separator between packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// One decoded packet from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Close,
    /// Ping from the client (only `probe` during an upgrade).
    Ping(String),
    Pong(String),
    Message(Data),
    Upgrade,
    Noop,
}

/// The data of a message packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Text(String),
    Binary(Bytes),
}

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownType(char),
    #[error("the server does not accept an open packet")]
    Open,
    #[error("invalid base64 in a binary packet")]
    Base64,
    #[error("payload larger than maxPayload")]
    TooLarge,
}

/// Decodes a text packet (a WebSocket text frame, or one packet of a
/// polling payload that does not start with `b`).
pub fn decode_text(s: &str) -> Result<Packet, DecodeError> {
    let mut chars = s.chars();
    let t = chars.next().ok_or(DecodeError::Empty)?;
    let rest = chars.as_str();
    Ok(match t {
        '0' => return Err(DecodeError::Open),
        '1' => Packet::Close,
        '2' => Packet::Ping(rest.to_string()),
        '3' => Packet::Pong(rest.to_string()),
        '4' => Packet::Message(Data::Text(rest.to_string())),
        '5' => Packet::Upgrade,
        '6' => Packet::Noop,
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// Decodes a polling request body into its packets.
pub fn decode_payload(body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    body.split(|b| *b == SEPARATOR)
        .map(|part| {
            if let Some(b64) = part.strip_prefix(b"b") {
                let bin = BASE64.decode(b64).map_err(|_| DecodeError::Base64)?;
                return Ok(Packet::Message(Data::Binary(Bytes::from(bin))));
            }
            // A packet that is not UTF-8 cannot be a valid text packet.
            let s = std::str::from_utf8(part).map_err(|_| DecodeError::Empty)?;
            decode_text(s)
        })
        .collect()
}

/// The open packet; `upgrades` lists `websocket` for a polling session.
pub fn open(
    sid: &str,
    upgrade: bool,
    ping_interval: u64,
    ping_timeout: u64,
    max_payload: usize,
) -> Message {
    let upgrades = if upgrade { r#"["websocket"]"# } else { "[]" };
    Message::text(format!(
        r#"0{{"sid":"{sid}","upgrades":{upgrades},"pingInterval":{ping_interval},"pingTimeout":{ping_timeout},"maxPayload":{max_payload}}}"#
    ))
}

/// A packet without data (`1`, `2`, `6` ...).
pub fn bare(t: u8) -> Message {
    Message::text(char::from(t).to_string())
}

pub const CLOSE: u8 = b'1';
pub const PING: u8 = b'2';
pub const NOOP: u8 = b'6';

/// A text message packet (`4` + text).
pub fn text_message(text: &str) -> Message {
    let mut s = String::with_capacity(text.len() + 1);
    s.push('4');
    s.push_str(text);
    Message::text(s)
}

/// A polling response body: each packet as text, binary ones as `b` + base64,
/// joined by the separator.
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a Message>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, m) in packets.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        match m {
            Message::Text(t) => out.extend_from_slice(t.as_bytes()),
            Message::Binary(b) => {
                out.push(b'b');
                out.extend_from_slice(BASE64.encode(b).as_bytes());
            }
            _ => {}
        }
    }
    out
}

/// Bytes a packet takes in a polling payload (for batching under maxPayload).
pub fn payload_len(m: &Message) -> usize {
    1 + match m {
        Message::Binary(b) => 1 + b.len().div_ceil(3) * 4,
        other => other.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_text_type() {
        assert_eq!(decode_text("1"), Ok(Packet::Close));
        assert_eq!(decode_text("2probe"), Ok(Packet::Ping("probe".into())));
        assert_eq!(decode_text("3"), Ok(Packet::Pong(String::new())));
        assert_eq!(
            decode_text("4hello"),
            Ok(Packet::Message(Data::Text("hello".into())))
        );
        assert_eq!(decode_text("5"), Ok(Packet::Upgrade));
        assert_eq!(decode_text("6"), Ok(Packet::Noop));
        assert_eq!(decode_text(""), Err(DecodeError::Empty));
        assert_eq!(decode_text("abc"), Err(DecodeError::UnknownType('a')));
        assert_eq!(decode_text("0{}"), Err(DecodeError::Open));
    }

    #[test]
    fn payload_round_trips_text_and_binary() {
        let body = b"4hello\x1ebAQIDBA==\x1e3";
        let packets = decode_payload(body).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message(Data::Text("hello".into())),
                Packet::Message(Data::Binary(Bytes::from_static(&[1, 2, 3, 4]))),
                Packet::Pong(String::new()),
            ]
        );
        let out = [
            text_message("hello"),
            Message::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        ];
        assert_eq!(encode_payload(&out), b"4hello\x1ebAQIDBA==");
        assert!(payload_len(&out[1]) >= 9);
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert_eq!(decode_payload(b"abc"), Err(DecodeError::UnknownType('a')));
        assert_eq!(decode_payload(b"b!!"), Err(DecodeError::Base64));
        assert_eq!(decode_payload(b""), Err(DecodeError::Empty));
        assert_eq!(decode_payload(b"4a\x1e"), Err(DecodeError::Empty));
    }

    #[test]
    fn open_packet_lists_the_settings() {
        let Message::Text(t) = open("abc", true, 300, 200, 1_000_000) else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&t[1..]).unwrap();
        assert_eq!(v["upgrades"], serde_json::json!(["websocket"]));
        assert_eq!(v["pingInterval"], 300);
        assert_eq!(v["maxPayload"], 1_000_000);
    }
}

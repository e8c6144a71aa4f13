//! The Socket.IO v4 protocol as the bench speaks it over a raw WebSocket:
//! Engine.IO v4 packets (`0` open, `2` ping, `3` pong, `4` message) carrying
//! Socket.IO packets (`0` connect, `2` event, `3` ack). Only what a push
//! client needs: text packets, no binary attachments, the main namespace.
//!
//! ```text
//! server: 0{"sid":..,"pingInterval":25000,..}   Engine.IO open
//! client: 40  (or 40{"key":..} with an auth payload)  Socket.IO connect
//! server: 40{"sid":..}
//! client: 421["login",{"token":"tok7"}]          event with ack id 1
//! server: 431[{"result":true}]                   ack 1
//! server: 42["msg","<payload>"]                  event
//! server: 2   client: 3                          heartbeat
//! ```
//!
//! Pure functions over bytes; the socket belongs to `ws`/`client`.

use crate::target::parse_digits;

/// Start of every `msg` event frame; the payload string follows.
pub const MSG_EVENT_PREFIX: &[u8] = br#"42["msg",""#;
/// Engine.IO ping from the server; answer with [`PONG`].
pub const PING: &[u8] = b"2";
pub const PONG: &[u8] = b"3";

/// Engine.IO open packet (first frame from the server).
pub fn is_open(frame: &[u8]) -> bool {
    frame.first() == Some(&b'0')
}

/// Socket.IO connect, optionally with an auth object (JSON).
pub fn connect(auth_json: Option<&str>) -> String {
    match auth_json {
        Some(a) => format!("40{a}"),
        None => "40".into(),
    }
}

/// The server's answer to a connect: `40{"sid":..}` (`44` is an error).
pub fn connect_result(frame: &[u8]) -> Result<(), String> {
    if frame.starts_with(b"40") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(frame).into_owned())
    }
}

/// An event with an ack id: `42<id>["<name>",<arg>]`; `arg` is JSON.
pub fn event_with_ack(id: u64, name: &str, arg_json: &str) -> String {
    format!(r#"42{id}["{name}",{arg_json}]"#)
}

/// If `frame` is an ack (`43<id>[...]`), its id and its argument list.
pub fn ack(frame: &[u8]) -> Option<(u64, &[u8])> {
    let rest = frame.strip_prefix(b"43")?;
    let id = parse_digits(rest)?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    Some((id, &rest[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets() {
        assert!(is_open(br#"0{"sid":"x"}"#));
        assert_eq!(connect(None), "40");
        assert_eq!(connect(Some(r#"{"key":"k"}"#)), r#"40{"key":"k"}"#);
        assert!(connect_result(br#"40{"sid":"a"}"#).is_ok());
        assert!(connect_result(br#"44{"message":"no"}"#).is_err());
        assert_eq!(
            event_with_ack(1, "login", r#"{"token":"tok1"}"#),
            r#"421["login",{"token":"tok1"}]"#
        );
        assert_eq!(
            ack(br#"4312[{"result":true}]"#),
            Some((12, &br#"[{"result":true}]"#[..]))
        );
        assert_eq!(ack(b"42[\"msg\"]"), None);
    }
}

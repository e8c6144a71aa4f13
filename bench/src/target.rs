//! The two kinds of server under test and everything that differs between
//! them on the wire: default addresses, the publish request bodies and
//! answers, and where the send timestamp sits in a delivered frame.
//!
//! The client-side handshakes (auth, subscribe, Socket.IO's connect) live in
//! `client`; the Engine.IO/Socket.IO packet details in `socketio`.

use clap::ValueEnum;

/// Which server a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// connmix with the shipped message-center script.
    Connmix,
    /// bench/socketio/server.js (Socket.IO v4).
    Socketio,
    /// connmix's own Socket.IO server (`protocol: socketio`, port 6792 of
    /// bench/connmix.bench.yaml, bench/lua/entry.socketio.bench.lua): the
    /// Socket.IO clients of `Socketio`, the publish API of `Connmix`.
    ConnmixSio,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connmix => "connmix",
            Kind::Socketio => "socketio",
            Kind::ConnmixSio => "connmix-sio",
        }
    }

    /// Whether clients speak Socket.IO to it.
    pub fn speaks_socketio(self) -> bool {
        matches!(self, Kind::Socketio | Kind::ConnmixSio)
    }

    /// Client WebSocket URL used when `--ws` is not given.
    pub fn default_ws(self) -> &'static str {
        match self {
            Kind::Connmix => "ws://127.0.0.1:6790/chat",
            Kind::Socketio => "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket",
            Kind::ConnmixSio => "ws://127.0.0.1:6792/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// Base URL of the publish API used when `--api` is not given.
    pub fn default_api(self) -> &'static str {
        match self {
            Kind::Connmix | Kind::ConnmixSio => "http://127.0.0.1:6789",
            Kind::Socketio => "http://127.0.0.1:3000",
        }
    }

    /// Path of the HTTP publish route.
    pub fn publish_path(self) -> &'static str {
        match self {
            Kind::Connmix | Kind::ConnmixSio => "/v1/mesh/publish",
            Kind::Socketio => "/api",
        }
    }

    /// JSON body of one HTTP publish. `payload` is JSON-safe (digits, `|`, `x`).
    pub fn publish_body(self, channel: &str, payload: &str) -> String {
        match self {
            Kind::Connmix => format!(r#"{{"c":"{channel}","d":"{payload}"}}"#),
            Kind::ConnmixSio => format!(r#"{{"c":"{channel}","e":"msg","d":"{payload}"}}"#),
            Kind::Socketio => {
                format!(r#"{{"room":"{channel}","event":"msg","data":"{payload}"}}"#)
            }
        }
    }

    /// Extracts the send timestamp (unix nanoseconds) from a delivered
    /// frame, or `None` if the frame is not a published payload. A few byte
    /// compares and at most 20 digit steps: no JSON parsing.
    #[inline]
    pub fn timestamp(self, frame: &[u8]) -> Option<u64> {
        let digits = match self {
            Kind::Connmix => frame,
            Kind::Socketio | Kind::ConnmixSio => {
                frame.strip_prefix(crate::socketio::MSG_EVENT_PREFIX)?
            }
        };
        parse_digits(digits)
    }
}

/// The leading decimal number of `b` (at least one digit).
#[inline]
pub fn parse_digits(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b.iter().take(20) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add((c - b'0') as u64);
        n += 1;
    }
    (n > 0).then_some(v)
}

/// The number following `"key":` in a JSON text, without parsing the JSON.
pub fn json_uint(text: &[u8], key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let i = text.windows(pat.len()).position(|w| w == pat.as_bytes())?;
    let rest = &text[i + pat.len()..];
    let rest = &rest[rest.iter().take_while(|c| c.is_ascii_whitespace()).count()..];
    parse_digits(rest)
}

/// A published payload: the send time, then padding to `size` bytes.
pub fn payload(unix_nanos: u64, size: usize) -> String {
    let mut s = format!("{unix_nanos:019}|");
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Nanoseconds since the Unix epoch: the clock every bench process shares.
#[inline]
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `http://host:port` -> (socket address, Host header).
pub fn parse_http_base(url: &str) -> anyhow::Result<(std::net::SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs are supported"))?;
    let host = rest.trim_end_matches('/');
    use std::net::ToSocketAddrs;
    let addr = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{url}: cannot resolve"))?;
    Ok((addr, host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_found_in_both_framings() {
        let p = payload(1_700_000_000_123_456_789, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(
            Kind::Connmix.timestamp(p.as_bytes()),
            Some(1_700_000_000_123_456_789)
        );
        let sio = format!("42[\"msg\",\"{p}\"]");
        assert_eq!(
            Kind::Socketio.timestamp(sio.as_bytes()),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(Kind::Connmix.timestamp(b"{\"result\":true}"), None);
        assert_eq!(Kind::Socketio.timestamp(b"2"), None);
    }

    #[test]
    fn counts_are_read_from_answers() {
        let a = br#"{"E":null,"r":{"s":10000,"f":3}}"#;
        assert_eq!(json_uint(a, "s"), Some(10000));
        assert_eq!(json_uint(a, "f"), Some(3));
        assert_eq!(json_uint(br#"{"s": 7}"#, "s"), Some(7));
        assert_eq!(json_uint(b"{}", "s"), None);
    }
}

//! The options of a `protocol: socketio` (or `engineio`) server entry, read
//! from its `options[]` list and checked: each problem names its key.
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `path` | `/socket.io/` (`/engine.io/` for `engineio`) | URL path of the endpoint |
//! | `pingInterval` | 25000 | ms between the server's pings |
//! | `pingTimeout` | 20000 | ms the client has to answer a ping |
//! | `maxPayload` | 1000000 | largest polling body and WebSocket message, bytes (at most 100 MiB) |
//! | `connectTimeout` | 45000 | ms a session may stay without a Socket.IO namespace before it is closed |
//! | `cors` | (none) | comma-separated browser origins allowed to poll cross-origin (`*` any) |
//! | `transports` | `polling,websocket` | which transports a client may open a session with |

use super::ServerConfig;

/// Largest `maxPayload` accepted.
pub const MAX_PAYLOAD_LIMIT: usize = 100 << 20;

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketIoOptions {
    /// `false` for `protocol: engineio` (Engine.IO messages go to the script
    /// as they are, no Socket.IO layer).
    pub socketio: bool,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub max_payload: usize,
    pub connect_timeout_ms: u64,
    pub cors: Vec<String>,
    pub polling: bool,
    pub websocket: bool,
}

impl SocketIoOptions {
    /// Reads the options of server `index`; the error is `(key, message)`.
    pub fn from_server(index: usize, s: &ServerConfig) -> Result<Self, (String, String)> {
        let key = |k: &str| format!("engine.servers[{index}].options.{k}");
        let num = |k: &str, default: u64, min: u64, max: u64| -> Result<u64, (String, String)> {
            match s.option(k) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        (
                            key(k),
                            format!("must be a number from {min} to {max}, got {v:?}"),
                        )
                    }),
            }
        };
        let transports = s.option("transports").unwrap_or("polling,websocket");
        let (mut polling, mut websocket) = (false, false);
        for t in transports.split(',').map(str::trim) {
            match t {
                "polling" => polling = true,
                "websocket" => websocket = true,
                other => {
                    return Err((
                        key("transports"),
                        format!("unknown transport {other:?}; use polling and/or websocket"),
                    ));
                }
            }
        }
        Ok(Self {
            socketio: s.protocol == "socketio",
            ping_interval_ms: num("pingInterval", 25_000, 10, 3_600_000)?,
            ping_timeout_ms: num("pingTimeout", 20_000, 10, 3_600_000)?,
            max_payload: num("maxPayload", 1_000_000, 64, MAX_PAYLOAD_LIMIT as u64)? as usize,
            connect_timeout_ms: num("connectTimeout", 45_000, 10, 3_600_000)?,
            cors: s
                .option("cors")
                .unwrap_or("")
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            polling,
            websocket,
        })
    }

    /// Whether a browser on `origin` may poll cross-origin.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.cors.iter().any(|o| o == "*" || o == origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerOption;

    fn server(protocol: &str, opts: &[(&str, &str)]) -> ServerConfig {
        let y = format!("port: 1\nentry: x.lua\nprotocol: {protocol}\n");
        let mut s: ServerConfig = serde_yaml::from_str(&y).unwrap();
        s.options = opts
            .iter()
            .map(|(n, v)| ServerOption {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect();
        s
    }

    #[test]
    fn defaults_match_the_reference_server() {
        let o = SocketIoOptions::from_server(0, &server("socketio", &[])).unwrap();
        assert_eq!((o.ping_interval_ms, o.ping_timeout_ms), (25_000, 20_000));
        assert_eq!(o.max_payload, 1_000_000);
        assert!(o.socketio && o.polling && o.websocket);
        assert_eq!(server("socketio", &[]).path(), "/socket.io/");
        assert_eq!(server("engineio", &[]).path(), "/engine.io/");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = SocketIoOptions::from_server(2, &server("socketio", &[("maxPayload", "1e99")]))
            .unwrap_err();
        assert_eq!(e.0, "engine.servers[2].options.maxPayload");
        let e = SocketIoOptions::from_server(0, &server("socketio", &[("transports", "flash")]))
            .unwrap_err();
        assert!(e.1.contains("flash"), "{e:?}");
    }

    #[test]
    fn cors_origins() {
        let o = SocketIoOptions::from_server(
            0,
            &server("socketio", &[("cors", "https://a.example, http://b:8080/")]),
        )
        .unwrap();
        assert!(o.allows_origin("https://a.example"));
        assert!(o.allows_origin("http://b:8080"));
        assert!(!o.allows_origin("https://evil.example"));
    }
}

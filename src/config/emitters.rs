//! The `engine.emitters` block of `connmix.yaml`: the message queues that
//! backends push Socket.IO events through (python-socketio's `RedisManager`
//! and `KombuManager`, Flask-SocketIO's `message_queue=`, Node's
//! `@socket.io/redis-emitter`). Reference: `docs/config.md`.

use serde::Deserialize;

/// The wire format an emitter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum EmitterKind {
    /// python-socketio 5.14+ / Flask-SocketIO JSON messages, over Redis
    /// pub/sub or an AMQP fanout exchange.
    #[serde(rename = "python-socketio")]
    PythonSocketio,
    /// `@socket.io/redis-emitter` msgpack `[uid, packet, opts]` over Redis.
    #[serde(rename = "socket.io-redis")]
    SocketIoRedis,
}

impl EmitterKind {
    /// What `type:` says in the file.
    pub fn name(self) -> &'static str {
        match self {
            EmitterKind::PythonSocketio => "python-socketio",
            EmitterKind::SocketIoRedis => "socket.io-redis",
        }
    }

    /// The channel (python-socketio) or key (socket.io-redis) when absent.
    pub fn default_channel(self) -> &'static str {
        match self {
            EmitterKind::PythonSocketio => "socketio",
            EmitterKind::SocketIoRedis => "socket.io",
        }
    }

    fn schemes(self) -> &'static [&'static str] {
        match self {
            EmitterKind::PythonSocketio => &["redis", "rediss", "amqp", "amqps"],
            EmitterKind::SocketIoRedis => &["redis", "rediss"],
        }
    }
}

/// One entry of `engine.emitters`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmitterConfig {
    #[serde(rename = "type")]
    pub kind: EmitterKind,
    /// `redis://`, `rediss://`, `amqp://` or `amqps://` (the same URL the
    /// backend is given).
    pub url: String,
    /// python-socketio: the Redis channel or AMQP exchange (default
    /// `socketio`; Flask-SocketIO uses `flask-socketio`). socket.io-redis:
    /// the key (default `socket.io`). `key` is accepted as another name.
    #[serde(default, alias = "key")]
    pub channel: Option<String>,
}

impl EmitterConfig {
    /// The channel, exchange or key this emitter reads.
    pub fn channel(&self) -> &str {
        self.channel
            .as_deref()
            .unwrap_or_else(|| self.kind.default_channel())
    }

    /// Whether the URL names an AMQP broker (else Redis).
    pub fn is_amqp(&self) -> bool {
        self.url.starts_with("amqp://") || self.url.starts_with("amqps://")
    }

    /// The URL without its password, for logs.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => self.url.clone(),
        }
    }

    /// `(key suffix, message)` for the first problem of this entry.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        let schemes = self.kind.schemes();
        let parsed = url::Url::parse(&self.url)
            .map_err(|e| ("url", format!("{:?} is not a URL: {e}", self.url)))?;
        if !schemes.contains(&parsed.scheme()) {
            return Err((
                "url",
                format!(
                    "type {} reads {}, not {}://",
                    self.kind.name(),
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    parsed.scheme()
                ),
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(("url", format!("{:?} names no host", self.url)));
        }
        let channel = self.channel();
        if channel.is_empty() || channel.contains(char::is_whitespace) {
            return Err((
                "channel",
                format!("must be a non-empty word, got {channel:?}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(emitters: &str) -> Result<Config, String> {
        let y = format!(
            "engine:\n  servers:\n    - {{port: 7000, entry: a.lua}}\n  emitters:\n{emitters}"
        );
        Config::parse(&y, Path::new("t.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn channels_default_per_type() {
        let c = parse(
            "    - {type: python-socketio, url: 'amqp://guest:guest@localhost:5672//'}\n    - {type: socket.io-redis, url: 'redis://h:6379/0'}\n    - {type: python-socketio, url: 'redis://h', channel: flask-socketio}\n    - {type: socket.io-redis, url: 'rediss://h', key: app}\n",
        )
        .unwrap();
        let e = &c.engine.emitters;
        assert_eq!(e[0].channel(), "socketio");
        assert!(e[0].is_amqp());
        assert_eq!(e[1].channel(), "socket.io");
        assert!(!e[1].is_amqp());
        assert_eq!(e[2].channel(), "flask-socketio");
        assert_eq!(e[3].channel(), "app");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let e = parse("    - {type: kombu, url: 'amqp://h'}\n").unwrap_err();
        assert!(e.contains("engine.emitters[0].type"), "{e}");
        assert!(e.contains("python-socketio"), "{e}");
    }

    #[test]
    fn urls_are_checked_per_type() {
        let e = parse("    - {type: socket.io-redis, url: 'amqp://h'}\n").unwrap_err();
        assert!(e.contains("engine.emitters[0].url"), "{e}");
        assert!(e.contains("redis://"), "{e}");
        let e = parse("    - {type: python-socketio, url: 'redis://h'}\n    - {type: python-socketio, url: 'localhost:6379'}\n").unwrap_err();
        assert!(e.contains("engine.emitters[1].url"), "{e}");
        let e = parse("    - {type: python-socketio}\n").unwrap_err();
        assert!(
            e.contains("engine.emitters[0].url") && e.contains("missing"),
            "{e}"
        );
        let e =
            parse("    - {type: python-socketio, url: 'redis://h', channel: ''}\n").unwrap_err();
        assert!(e.contains("engine.emitters[0].channel"), "{e}");
    }

    #[test]
    fn the_password_stays_out_of_logs() {
        let c = parse("    - {type: python-socketio, url: 'amqp://u:secret@h:5672/v'}\n").unwrap();
        let shown = c.engine.emitters[0].redacted_url();
        assert!(
            !shown.contains("secret") && shown.contains("u:***@h"),
            "{shown}"
        );
    }
}

//! The checks of `connmix.yaml` that serde cannot express: allowed values,
//! ranges, required names, and clashes between entries (two servers on one
//! port). Each failure names the key's path.

use super::Config;

impl Config {
    /// Checks what the types alone cannot: levels, ranges, names and
    /// clashes. The error is `(key path, message)`.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let level = self.logging.level.to_ascii_lowercase();
        if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
            return Err((
                "logging.level".into(),
                format!(
                    "unknown level {:?}; use debug, info, warn or error",
                    self.logging.level
                ),
            ));
        }
        if self.engine.servers.is_empty() {
            return Err((
                "engine.servers".into(),
                "at least one server is required".into(),
            ));
        }
        for (i, s) in self.engine.servers.iter().enumerate() {
            let key = |k: &str| format!("engine.servers[{i}].{k}");
            if !["websocket", "socketio", "engineio"].contains(&s.protocol.as_str()) {
                return Err((
                    key("protocol"),
                    format!(
                        "unsupported protocol {:?}; use websocket, socketio or engineio",
                        s.protocol
                    ),
                ));
            }
            if s.is_engineio() {
                super::SocketIoOptions::from_server(i, s)?;
            }
            if s.port == 0 {
                return Err((key("port"), "must be between 1 and 65535".into()));
            }
            if !s.path().starts_with('/') {
                return Err((
                    key("options.path"),
                    format!("must start with '/', got {:?}", s.path()),
                ));
            }
            if s.entry.trim().is_empty() {
                return Err((key("entry"), "must name a Lua script".into()));
            }
            for (k, v) in [
                ("readBufferSize", s.read_buffer_size),
                ("writeBufferSize", s.write_buffer_size),
                ("maxMessageSize", s.max_message_size),
                ("maxConnections", s.max_connections),
                ("maxChannels", s.max_channels),
                ("outboundQueueSize", s.outbound_queue_size),
                ("outboundQueueBytes", s.outbound_queue_bytes),
            ] {
                if v == 0 {
                    return Err((key(k), "must be greater than 0".into()));
                }
            }
            let body = self.engine.api_server.max_body_size;
            if s.outbound_queue_bytes < body {
                return Err((
                    key("outboundQueueBytes"),
                    format!(
                        "{} is below engine.apiServer.maxBodySize ({body}): a publish the API accepts could never be delivered",
                        s.outbound_queue_bytes
                    ),
                ));
            }
            for (j, other) in self.engine.servers.iter().enumerate().take(i) {
                if other.port == s.port {
                    return Err((
                        key("port"),
                        format!("port {} is already used by engine.servers[{j}]", s.port),
                    ));
                }
            }
            if s.port == self.engine.api_server.port {
                return Err((
                    key("port"),
                    format!("port {} is already used by engine.apiServer", s.port),
                ));
            }
        }
        if let Some(c) = &self.engine.cluster {
            let key = |k: &str| format!("engine.cluster.{k}");
            if c.addr.trim().is_empty() {
                return Err((key("addr"), "must be host:port".into()));
            }
            if c.prefix.is_empty() || c.prefix.contains(char::is_whitespace) {
                return Err((key("prefix"), "must be a non-empty word".into()));
            }
            if c.heartbeat == 0 {
                return Err((key("heartbeat"), "must be at least 1 second".into()));
            }
            if c.node_expiry <= c.heartbeat {
                return Err((
                    key("nodeExpiry"),
                    "must be longer than engine.cluster.heartbeat".into(),
                ));
            }
            if c.publish_timeout_ms == 0 || c.call_timeout_ms == 0 {
                return Err((key("publishTimeoutMs"), "timeouts must be above 0".into()));
            }
        }
        for (k, v) in [
            ("maxBodySize", self.engine.api_server.max_body_size),
            ("wsMaxInFlight", self.engine.api_server.ws_max_in_flight),
            ("maxBatch", self.engine.api_server.max_batch),
            (
                "maxPublishChannels",
                self.engine.api_server.max_publish_channels,
            ),
        ] {
            if v == 0 {
                return Err((
                    format!("engine.apiServer.{k}"),
                    "must be greater than 0".into(),
                ));
            }
        }
        if self.engine.idempotency_ttl == 0 {
            return Err((
                "engine.idempotencyTtl".into(),
                "must be at least 1 second".into(),
            ));
        }
        if self.engine.idempotency_max_keys == 0 {
            return Err((
                "engine.idempotencyMaxKeys".into(),
                "must be greater than 0".into(),
            ));
        }
        let luavm = &self.engine.luavm;
        for (k, v) in [
            ("jsonMaxSize", luavm.json_max_size),
            ("http.maxBodySize", luavm.http.max_body_size),
        ] {
            if v == 0 {
                return Err((format!("engine.luavm.{k}"), "must be greater than 0".into()));
            }
        }
        if luavm.memory_limit != 0 && luavm.memory_limit < 1 << 20 {
            return Err((
                "engine.luavm.memoryLimit".into(),
                "must be 0 (no limit) or at least 1048576 bytes (1 MiB)".into(),
            ));
        }
        for (i, o) in self.engine.api_server.allowed_origins.iter().enumerate() {
            let o = o.trim();
            let bare = o.split_once("://").map(|(_, rest)| rest);
            if o != "*"
                && o != "null"
                && !bare.is_some_and(|b| !b.is_empty() && !b.trim_end_matches('/').contains('/'))
            {
                return Err((
                    format!("engine.apiServer.allowedOrigins[{i}]"),
                    format!(
                        "{o:?} is not an origin; write scheme://host[:port] (e.g. https://ops.example.com), or * for any"
                    ),
                ));
            }
        }
        for (i, r) in self.engine.luavm.redis.iter().enumerate() {
            let key = |k: &str| format!("engine.luavm.redis[{i}].{k}");
            if r.name.trim().is_empty() {
                return Err((key("name"), "must not be empty".into()));
            }
            if let Some(j) = self.engine.luavm.redis[..i]
                .iter()
                .position(|o| o.name == r.name)
            {
                return Err((
                    key("name"),
                    format!("{:?} is already used by engine.luavm.redis[{j}]", r.name),
                ));
            }
            if r.addr.trim().is_empty() || r.addr.contains(char::is_whitespace) {
                return Err((key("addr"), format!("must be host:port, got {:?}", r.addr)));
            }
            if r.db < 0 {
                return Err((key("db"), "must not be negative".into()));
            }
            if r.pool_size == 0 {
                return Err((key("poolSize"), "must be greater than 0".into()));
            }
            for (k, v) in [
                ("connectTimeout", r.connect_timeout),
                ("commandTimeout", r.command_timeout),
            ] {
                if !(v.is_finite() && v > 0.0) || std::time::Duration::try_from_secs_f64(v).is_err()
                {
                    return Err((key(k), "must be a number of seconds above 0".into()));
                }
            }
        }
        for (i, e) in self.engine.emitters.iter().enumerate() {
            e.check()
                .map_err(|(k, m)| (format!("engine.emitters[{i}].{k}"), m))?;
        }
        super::history::validate(&self.engine.history)?;
        for (i, u) in self.access.users.iter().enumerate() {
            for r in &u.roles {
                if r != "read" && r != "write" {
                    return Err((
                        format!("access.users[{i}].roles"),
                        format!("unknown role {r:?}; use read or write"),
                    ));
                }
            }
        }
        Ok(())
    }
}

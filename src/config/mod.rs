//! `connmix.yaml`: the types, their defaults and their validation.
//!
//! This module owns the file format of docs/config.md and nothing else: it
//! reads a file, reports unknown keys as warnings, and turns a wrong type or a
//! missing required value into a [`ConfigError`] that names the file and the
//! key's path (`engine.servers[0].port`). It never starts anything. The
//! checks serde cannot express (ranges, names, clashes) are in [`validate`].

mod emitters;
mod history;
mod locate;
mod luavm;
mod socketio;
mod validate;

pub use emitters::{EmitterConfig, EmitterKind};
pub use history::{HistoryConfig, MAX_HISTORY_SIZE, glob_match, policy_for};
pub use luavm::{LuaHttpConfig, LuaVmConfig, QueueConfig, RedisConnConfig};
pub use socketio::SocketIoOptions;

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Why a configuration could not be used. Every problem prints as one line,
/// `FILE: KEY: problem (line L, column C)` (the position when the key is in
/// the file), and `connmix` exits with [`ConfigError::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {key}: {message}{}", position(*.at))]
    Invalid {
        file: String,
        key: String,
        message: String,
        /// Line and column (1-based) of the key in the file.
        at: Option<(usize, usize)>,
    },
}

fn position(at: Option<(usize, usize)>) -> String {
    at.map(|(l, c)| format!(" (line {l}, column {c})"))
        .unwrap_or_default()
}

impl ConfigError {
    /// The exit status of `connmix` for every configuration problem (an
    /// entry script that cannot be read or compiled included).
    pub const EXIT_CODE: u8 = 2;

    /// A problem with `key` of `file`, placed at the key's line when the
    /// file has it (re-read here: errors are rare, files are small).
    pub fn at_key(file: &Path, key: &str, message: String) -> ConfigError {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        ConfigError::Invalid {
            file: file.display().to_string(),
            key: key.to_string(),
            message,
            at: locate::locate(&text, key),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Config {
    pub logging: LoggingConfig,
    pub access: AccessConfig,
    pub engine: EngineConfig,
    /// The file this was read from; relative entry paths resolve against the
    /// working directory first and then against this file's folder.
    #[serde(skip)]
    pub source: PathBuf,
    /// Keys present in the file that this gateway does not know.
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
    /// The file's modification time when it was read (reload detection).
    #[serde(skip)]
    pub loaded_mtime: Option<std::time::SystemTime>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LoggingConfig {
    /// Log file; empty or absent logs to stdout.
    pub filename: Option<String>,
    /// Rotated daily files kept.
    pub max_files: usize,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            filename: None,
            max_files: 7,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessConfig {
    pub users: Vec<AccessUser>,
}

/// One API user of `access.users`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessUser {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default = "default_host")]
    pub host: String,
}

fn default_host() -> String {
    "*".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EngineConfig {
    pub api_server: ApiServerConfig,
    pub luavm: LuaVmConfig,
    pub servers: Vec<ServerConfig>,
    /// Lua worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Seconds a SIGTERM/SIGINT shutdown may take before the process exits anyway.
    pub shutdown_timeout: u64,
    /// Cluster mode (`connmix engine`): the Redis broker shared by all nodes.
    pub cluster: Option<ClusterConfig>,
    /// Message queues backends push Socket.IO events through.
    pub emitters: Vec<EmitterConfig>,
    /// Channels that keep a history of their publications (see `history.rs`).
    pub history: Vec<HistoryConfig>,
    /// Seconds a publish's idempotency key (`k`) is remembered.
    pub idempotency_ttl: u64,
    /// Idempotency keys one node remembers at most (single node; a cluster
    /// keeps them in Redis); past it the oldest are forgotten early.
    pub idempotency_max_keys: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cluster: None,
            history: Vec::new(),
            api_server: ApiServerConfig::default(),
            luavm: LuaVmConfig::default(),
            servers: Vec::new(),
            workers: 0,
            shutdown_timeout: 10,
            emitters: Vec::new(),
            idempotency_ttl: 300,
            idempotency_max_keys: 100_000,
        }
    }
}

/// `engine.cluster`: how nodes find each other through Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterConfig {
    /// The broker's Redis, `host:port`.
    pub addr: String,
    pub password: String,
    pub db: i64,
    /// Connect to Redis over TLS (`rediss://`).
    pub tls: bool,
    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    pub prefix: String,
    /// This node's name in `/v1/mesh/nodes` and logs; generated when empty.
    pub node_id: String,
    /// Seconds between heartbeats.
    pub heartbeat: u64,
    /// Seconds without a heartbeat after which a node counts as dead.
    pub node_expiry: u64,
    /// Milliseconds a publish waits for other nodes' delivery counts.
    pub publish_timeout_ms: u64,
    /// Milliseconds a send or conn.call to another node waits for its answer.
    pub call_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:6379".into(),
            password: String::new(),
            db: 0,
            tls: false,
            prefix: "connmix".into(),
            node_id: String::new(),
            heartbeat: 1,
            node_expiry: 5,
            publish_timeout_ms: 500,
            call_timeout_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ApiServerConfig {
    pub port: u16,
    pub bind: String,
    /// Seconds to receive a request's headers (and the most a keep-alive
    /// connection may sit idle) and, separately, its body.
    pub read_timeout: u64,
    /// Seconds a write to an API client (an HTTP response, a `/ws/v1`
    /// answer) may stall before the connection is closed; 0 = never.
    pub write_timeout: u64,
    /// Largest request body accepted, in bytes; bigger gets HTTP 413. Also
    /// the largest `/ws/v1` frame (bigger: close 1009).
    pub max_body_size: usize,
    /// `/ws/v1` requests one connection may have in flight; at the bound the
    /// gateway stops reading from that socket until one is answered.
    pub ws_max_in_flight: usize,
    /// Requests one `/v1/mesh/batch` (or `mesh.batch`) may carry.
    pub max_batch: usize,
    /// Channels one publish may name in `c`.
    pub max_publish_channels: usize,
    /// Browser origins (besides the API's own) whose requests the API and
    /// `/ws/v1` accept, e.g. `https://ops.example.com`; `*` globs; requests
    /// without `Origin` are always accepted (see `api/origin.rs`).
    pub allowed_origins: Vec<String>,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            port: 6789,
            bind: "0.0.0.0".into(),
            read_timeout: 60,
            write_timeout: 60,
            max_body_size: 1 << 20,
            ws_max_in_flight: 64,
            max_batch: 1000,
            max_publish_channels: 1000,
            allowed_origins: Vec::new(),
        }
    }
}

/// One client-facing server of `engine.servers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    pub port: u16,
    #[serde(default = "default_bind")]
    pub bind: String,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default)]
    pub options: Vec<ServerOption>,
    pub entry: String,
    /// Seconds between checks for a changed script; 0 disables hot reload.
    #[serde(default)]
    pub byte_code_expires: u64,
    #[serde(default = "default_buffer")]
    pub read_buffer_size: usize,
    #[serde(default = "default_buffer")]
    pub write_buffer_size: usize,
    /// Seconds without any frame from the client before it is closed; 0 = never.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: u64,
    /// Seconds a write may stall before the client is closed as slow; 0 = never.
    #[serde(default = "default_write_timeout")]
    pub write_timeout: u64,
    /// Largest message (and frame) accepted from a client, in bytes; over it: close 1009.
    #[serde(default = "default_max_message")]
    pub max_message_size: usize,
    /// Connections this server holds at once; over it the handshake gets 503.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Channels one connection may join.
    #[serde(default = "default_max_channels")]
    pub max_channels: usize,
    /// Messages queued for one connection before it is closed as a slow client.
    #[serde(default = "default_outbound_queue")]
    pub outbound_queue_size: usize,
    /// Payload bytes queued for one connection before it is closed as a slow
    /// client; also the largest frame it can be sent (at least
    /// `engine.apiServer.maxBodySize`).
    #[serde(default = "default_outbound_queue_bytes")]
    pub outbound_queue_bytes: usize,
}

fn default_bind() -> String {
    "0.0.0.0".into()
}
fn default_protocol() -> String {
    "websocket".into()
}
fn default_buffer() -> usize {
    1024
}
fn default_read_timeout() -> u64 {
    60
}
fn default_write_timeout() -> u64 {
    10
}
fn default_max_message() -> usize {
    64 << 10
}
fn default_max_connections() -> usize {
    100_000
}
fn default_max_channels() -> usize {
    100
}
fn default_outbound_queue() -> usize {
    1024
}
fn default_outbound_queue_bytes() -> usize {
    4 << 20
}

/// A `{name, value}` pair of a server's `options`; the value may be any scalar.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerOption {
    pub name: String,
    #[serde(deserialize_with = "scalar_string")]
    pub value: String,
}

fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    match serde_yaml::Value::deserialize(d)? {
        serde_yaml::Value::String(s) => Ok(s),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        serde_yaml::Value::Bool(b) => Ok(b.to_string()),
        serde_yaml::Value::Null => Ok(String::new()),
        _ => Err(D::Error::custom("expected a string, number or boolean")),
    }
}

impl ServerConfig {
    /// The value of option `name`, as `mix.server.option(name)` sees it.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.value.as_str())
    }

    /// The URL path clients must connect to (option `path`; default `/`,
    /// `/socket.io/` for `protocol: socketio`, `/engine.io/` for `engineio`).
    pub fn path(&self) -> &str {
        self.option("path").unwrap_or(match self.protocol.as_str() {
            "socketio" => "/socket.io/",
            "engineio" => "/engine.io/",
            _ => "/",
        })
    }

    /// Whether clients speak Engine.IO (`protocol: socketio` or `engineio`).
    pub fn is_engineio(&self) -> bool {
        matches!(self.protocol.as_str(), "socketio" | "engineio")
    }
}

impl Config {
    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let mtime = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text, file)?;
        config.loaded_mtime = mtime;
        Ok(config)
    }

    /// Parses and validates YAML text; `file` is used for messages and for
    /// resolving relative entry paths.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let fname = file.display().to_string();
        let invalid =
            |key: String, message: String, at: Option<(usize, usize)>| ConfigError::Invalid {
                file: fname.clone(),
                key,
                message,
                at,
            };
        // Syntax first: the parser knows only a position, so the key is the
        // block around it.
        if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(text) {
            let at = e.location().map(|l| (l.line(), l.column()));
            let key = at
                .and_then(|(l, c)| locate::key_at(text, l, c))
                .unwrap_or_else(|| "(top level)".into());
            return Err(invalid(key, syntax_message(&e.to_string()), at));
        }
        let mut unknown = Vec::new();
        let mut config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            let mut track = |p: serde_ignored::Path| unknown.push(p.to_string());
            let de = serde_ignored::Deserializer::new(de, &mut track);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let mut key = display_path(&e.path().to_string());
                let at = e.inner().location().map(|l| (l.line(), l.column()));
                let mut message = bare_message(&e.inner().to_string());
                if let Some(field) = message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.strip_suffix('`'))
                {
                    key = if key == "(top level)" {
                        field.to_string()
                    } else {
                        format!("{key}.{field}")
                    };
                    message = "required, but missing".into();
                }
                invalid(key, message, at)
            })?
        };
        config.source = file.to_path_buf();
        config.unknown_keys = unknown.iter().map(|p| display_path(p)).collect();
        config
            .validate()
            .map_err(|(k, m)| invalid(k.clone(), m, locate::locate(text, &k)))?;
        Ok(config)
    }

    /// Where a server's entry script lives: relative to the working directory
    /// if it exists there, else relative to the config file's folder.
    pub fn resolve_entry(&self, entry: &str) -> PathBuf {
        let p = PathBuf::from(entry);
        if p.is_absolute() || p.exists() {
            return p;
        }
        match self.source.parent() {
            Some(dir) if dir.join(&p).exists() => dir.join(p),
            _ => p,
        }
    }

    /// Worker threads to run: `engine.workers`, or the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.engine.workers > 0 {
            self.engine.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }
    }
}

/// serde_yaml's message without the key path it prefixes (the error names
/// the key already) and without its " at line N column M" suffix (the
/// position is printed in the common format).
fn bare_message(m: &str) -> String {
    let m = match m.rfind(" at line ") {
        Some(i) if m[i + 9..].contains(" column ") => &m[..i],
        _ => m,
    };
    // "engine.servers[0].port: invalid type ..." -> "invalid type ..."
    match m.split_once(": ") {
        Some((head, tail)) if !head.contains(' ') && !head.is_empty() => tail.to_string(),
        _ => m.to_string(),
    }
}

/// A YAML syntax error's message: the parser's words without positions
/// (printed in the common format), with a hint for the usual cause.
fn syntax_message(m: &str) -> String {
    let first = m.split(", while ").next().unwrap_or(m);
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    if first.contains("did not find expected") || first.contains("mapping values are not allowed") {
        format!("YAML syntax: {first} (check the indentation of this line)")
    } else {
        format!("YAML syntax: {first}")
    }
}

/// Turns serde's `engine.servers.0.port` into `engine.servers[0].port`.
fn display_path(p: &str) -> String {
    let mut out = String::new();
    for part in p.split('.') {
        if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    if out.is_empty() || out == "?" {
        "(top level)".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests;

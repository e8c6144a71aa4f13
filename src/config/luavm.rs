//! The `engine.luavm` block of `connmix.yaml`: the Lua VMs' limits, the
//! `mix.http` and `mix.queue` bounds and the named `mix.redis` connections
//! (reference: `docs/config.md`).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LuaVmConfig {
    pub queue: QueueConfig,
    pub redis: Vec<RedisConnConfig>,
    /// Milliseconds of CPU a hook may run between two waits before it is
    /// aborted as runaway (time spent waiting on I/O does not count).
    pub hook_timeout_ms: u64,
    /// Seconds `conn:wait_context_value` waits before answering `nil, "timeout"`.
    pub wait_context_timeout: u64,
    /// Bytes of Lua heap one VM may use (0: no limit); an allocation past
    /// it is a Lua error in the hook that made it.
    pub memory_limit: usize,
    /// Whether scripts get `io.*`, `os.execute`/`remove`/`rename`/
    /// `tmpname`/`getenv`/`setlocale` and C modules.
    pub system_access: bool,
    /// Largest JSON text `mix.json_encode` produces or `mix.json_decode`
    /// reads, in bytes.
    pub json_max_size: usize,
    /// `mix.http.request`.
    pub http: LuaHttpConfig,
}

/// `engine.luavm.http`: the scripts' HTTP client.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LuaHttpConfig {
    /// Largest response body read, in bytes; a longer one is `nil, err`.
    pub max_body_size: usize,
}

impl Default for LuaHttpConfig {
    fn default() -> Self {
        Self {
            max_body_size: 1 << 20,
        }
    }
}

impl Default for LuaVmConfig {
    fn default() -> Self {
        Self {
            queue: QueueConfig::default(),
            redis: Vec::new(),
            hook_timeout_ms: 1000,
            wait_context_timeout: 30,
            memory_limit: 256 << 20,
            system_access: false,
            json_max_size: 16 << 20,
            http: LuaHttpConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct QueueConfig {
    pub topic_size: usize,
    pub max_topics: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            topic_size: 2000,
            max_topics: 100,
        }
    }
}

/// A named Redis connection for `mix.redis.connection(name)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisConnConfig {
    /// What scripts pass to `mix.redis.connection(name)`; unique.
    pub name: String,
    /// `host:port` (port 6379 when absent).
    pub addr: String,
    /// Sent with `AUTH` on connect; empty sends none.
    #[serde(default)]
    pub password: String,
    /// Database selected on connect.
    #[serde(default)]
    pub db: i64,
    /// Multiplexed connections the whole process keeps for this name, shared
    /// out among the workers (each gets at least one).
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Seconds to connect (TCP plus AUTH/SELECT) before `nil, err`.
    #[serde(default = "default_redis_connect_timeout")]
    pub connect_timeout: f64,
    /// Seconds to wait for a command's reply before `nil, err`.
    #[serde(default = "default_redis_command_timeout")]
    pub command_timeout: f64,
}

fn default_pool() -> usize {
    20
}
fn default_redis_connect_timeout() -> f64 {
    1.0
}
fn default_redis_command_timeout() -> f64 {
    5.0
}

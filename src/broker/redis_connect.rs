//! Connecting a node to the cluster's Redis: the URL from `engine.cluster`,
//! the names of every key and channel under `engine.cluster.prefix`, and
//! claiming a node number.

use super::ConnectError;
use crate::config::ClusterConfig;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// Connection settings and names derived from `engine.cluster`.
pub struct Names {
    pub prefix: String,
    /// The node-view keys every publish script reads (see
    /// `requests::AUDIENCE_LUA`), made once rather than per publish.
    pub view: [String; 4],
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        let view = [
            super::sync::generation_key(prefix),
            format!("{prefix}:nodes"),
            super::sync::synced_key(prefix),
            super::sync::epoch_key(prefix),
        ];
        Self {
            prefix: prefix.to_string(),
            view,
        }
    }
    /// `<prefix><middle><name>` (not `format!`: twice per cross-node
    /// publish, where formatting cost about 1,000 instructions each).
    fn join(&self, middle: &str, name: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + middle.len() + name.len());
        s.push_str(&self.prefix);
        s.push_str(middle);
        s.push_str(name);
        s
    }
    pub fn channel(&self, ch: &str) -> String {
        self.join(":ch:", ch)
    }
    pub fn node_channel(&self, n: u32) -> String {
        self.join(":node:", &n.to_string())
    }
    pub fn node_key(&self, n: u32) -> String {
        format!("{}:node:{n}", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    pub fn seq(&self) -> String {
        format!("{}:node-seq", self.prefix)
    }
    pub fn chnodes(&self, ch: &str) -> String {
        self.join(":chnodes:", ch)
    }
    pub fn nodechans(&self, n: u32) -> String {
        format!("{}:nodechans:{n}", self.prefix)
    }
    /// Where pushes to a queue topic are announced.
    pub fn topic_notify(&self, topic: &str) -> String {
        format!("{}:qn:{topic}", self.prefix)
    }
    /// The mesh channel of a `p:ch:<channel>` name.
    pub fn strip_channel<'a>(&self, redis_channel: &'a str) -> Option<&'a str> {
        redis_channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":ch:")
    }
}

/// The `redis://` URL of the cluster's Redis.
pub fn url(cfg: &ClusterConfig) -> String {
    let scheme = if cfg.tls { "rediss" } else { "redis" };
    let auth = if cfg.password.is_empty() {
        String::new()
    } else {
        let pw = percent_encoding::utf8_percent_encode(
            &cfg.password,
            percent_encoding::NON_ALPHANUMERIC,
        );
        format!(":{pw}@")
    };
    format!("{scheme}://{auth}{}/{}", cfg.addr, cfg.db)
}

/// Connects to Redis and claims a node number (so the hub can be built).
pub async fn connect(
    cfg: &ClusterConfig,
) -> Result<(redis::Client, ConnectionManager, u32), ConnectError> {
    let err = |message: String| ConnectError {
        addr: cfg.addr.clone(),
        message,
    };
    let client = redis::Client::open(url(cfg)).map_err(|e| err(e.to_string()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    let mut cmd = tokio::time::timeout(
        Duration::from_secs(5),
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| err("timed out connecting".into()))?
    .map_err(|e| err(e.to_string()))?;
    let names = Names::new(&cfg.prefix);
    let expiry_ms = cfg.node_expiry * 1000;
    for _ in 0..1000 {
        let n: u32 = redis::cmd("INCR")
            .arg(names.seq())
            .query_async(&mut cmd)
            .await
            .map_err(|e| err(e.to_string()))?;
        let claimed: Option<String> = redis::cmd("SET")
            .arg(names.node_key(n))
            .arg("{}")
            .arg("NX")
            .arg("PX")
            .arg(expiry_ms)
            .query_async(&mut cmd)
            .await
            .map_err(|e| err(e.to_string()))?;
        if claimed.is_some() {
            return Ok((client, cmd, n));
        }
    }
    Err(err("could not claim a node number".into()))
}

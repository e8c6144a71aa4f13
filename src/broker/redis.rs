//! The Redis broker: a node's link to the rest of the cluster.
//!
//! Redis keys and channels (all under `engine.cluster.prefix`, `p` below):
//! - `p:ch:<channel>`: pub/sub channel per mesh channel; a node subscribes on
//!   its first local subscriber and unsubscribes on its last.
//! - `p:node:<n>`: pub/sub channel addressed to node `n` (sends, calls,
//!   reports, acks), and a key with node `n`'s info that expires unless its
//!   heartbeat renews it.
//! - `p:nodes` (set of node numbers), `p:node-seq` (node number counter),
//!   `p:chnodes:<channel>` (nodes with subscribers of a channel) and
//!   `p:nodechans:<n>` (channels of node `n`), so a publish knows whose
//!   delivery counts to wait for, and a dead node's entries can be removed.
//! - `p:epoch`, `p:synced`: which nodes have their subscriptions in place
//!   (see [`super::sync`]).
//!
//! This file holds the handling of what arrives; the requests a node makes
//! (publish, send, call) live in [`super::requests`], the subscription link
//! and the heartbeat in [`super::subscriber`] and [`super::membership`].

use super::deadline::RedisClock;
use super::interest::{Interest, InterestLog};
use super::sync::SyncState;
use super::wire::{AckStatus, Wire};
use super::{BrokerError, NodeInfo};
use crate::config::ClusterConfig;
use crate::hub::{ClientId, Hub};
use crate::mesh::frame;
use crate::metrics::Metrics;
use crate::outbox::{CallFunc, ConnCall, Outbound, PushError};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Connection settings and names derived from `engine.cluster`.
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn channel(&self, ch: &str) -> String {
        format!("{}:ch:{ch}", self.prefix)
    }
    pub fn node_channel(&self, n: u32) -> String {
        format!("{}:node:{n}", self.prefix)
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
        format!("{}:chnodes:{ch}", self.prefix)
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

/// Where a node's delivery counts `(node, success, fail)` for a publish go.
type ReportSender = mpsc::UnboundedSender<(u32, u64, u64)>;

/// See the module documentation.
pub struct RedisBroker {
    pub node: u32,
    pub node_id: String,
    pub names: Names,
    pub cfg: ClusterConfig,
    pub client: redis::Client,
    pub cmd: ConnectionManager,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub started: u64,
    /// Which channels this node listens to, as numbered changes.
    pub interest: InterestLog,
    next_req: AtomicU64,
    pub(super) reports: Mutex<HashMap<u64, ReportSender>>,
    pub(super) acks: Mutex<HashMap<u64, oneshot::Sender<(AckStatus, String)>>>,
    /// Redis's clock as this node sees it (request deadlines).
    pub clock: RedisClock,
    /// Whether this node's subscriptions are marked in place.
    pub sync: SyncState,
    /// Live nodes other than this one, by number.
    pub live: RwLock<HashMap<u32, NodeInfo>>,
    /// Both Redis links work.
    pub subscriber_up: AtomicBool,
    pub commands_up: AtomicBool,
    /// Queue topics with local consumers (reference counted) and who to
    /// wake when one is announced.
    watched: Mutex<HashMap<String, usize>>,
    topic_waker: std::sync::OnceLock<TopicWaker>,
}

/// Called with a topic whose queue may have a new message.
pub type TopicWaker = Box<dyn Fn(&str) + Send + Sync>;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[error("cluster redis at {addr} (engine.cluster.addr): {message}")]
pub struct ConnectError {
    pub addr: String,
    pub message: String,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
    let names = Names {
        prefix: cfg.prefix.clone(),
    };
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

impl RedisBroker {
    /// Builds the broker for a connected node; [`RedisBroker::run`] starts it.
    pub fn new(
        cfg: ClusterConfig,
        client: redis::Client,
        cmd: ConnectionManager,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let node = hub.node();
        let node_id = if cfg.node_id.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "node".into());
            format!("{host}-{}-{node}", std::process::id())
        } else {
            cfg.node_id.clone()
        };
        Arc::new(Self {
            node,
            node_id,
            names: Names {
                prefix: cfg.prefix.clone(),
            },
            cfg,
            client,
            cmd,
            hub,
            metrics,
            started: unix_now(),
            interest: InterestLog::default(),
            next_req: AtomicU64::new(1),
            reports: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            clock: RedisClock::default(),
            sync: SyncState::default(),
            live: RwLock::new(HashMap::new()),
            subscriber_up: AtomicBool::new(false),
            commands_up: AtomicBool::new(true),
            watched: Mutex::new(HashMap::new()),
            topic_waker: std::sync::OnceLock::new(),
        })
    }

    /// Starts the subscription link and the heartbeat.
    pub fn run(self: &Arc<Self>, stop: CancellationToken) {
        if let Some(rx) = self.interest.take_receiver() {
            super::subscriber::spawn(self.clone(), rx, stop.clone());
        }
        super::membership::spawn(self.clone(), stop);
    }

    /// Whether remote operations can be attempted now.
    pub fn is_up(&self) -> bool {
        self.subscriber_up.load(Ordering::Acquire) && self.commands_up.load(Ordering::Acquire)
    }

    pub fn update_up_metric(&self) {
        self.metrics.broker_up.set(self.is_up() as i64);
    }

    /// Waits until Redis applied interest change `seq`, so that a publish on
    /// any node reaches this node's subscribers. Returns at once while the
    /// subscription link is down (local delivery needs no wait), and after
    /// `publishTimeoutMs` at most.
    pub async fn interest_applied(&self, seq: u64) {
        if self.subscriber_up.load(Ordering::Acquire) {
            let limit = Duration::from_millis(self.cfg.publish_timeout_ms);
            self.interest.wait_applied(seq, limit).await;
        }
    }

    /// Who to wake when a queue topic is announced (set once, by the queues).
    pub fn set_topic_waker(&self, waker: TopicWaker) {
        let _ = self.topic_waker.set(waker);
    }

    /// Starts listening for pushes to `topic` (a local consumer wants it).
    pub fn watch_topic(&self, topic: &str) {
        let mut w = self.watched.lock();
        let n = w.entry(topic.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.interest
                .send(Interest::Watch(self.names.topic_notify(topic)));
        }
    }

    pub fn unwatch_topic(&self, topic: &str) {
        let mut w = self.watched.lock();
        if let Some(n) = w.get_mut(topic) {
            *n -= 1;
            if *n == 0 {
                w.remove(topic);
                self.interest
                    .send(Interest::Unwatch(self.names.topic_notify(topic)));
            }
        }
    }

    /// Raw Redis channels to listen to besides mesh channels.
    pub fn watched_channels(&self) -> Vec<String> {
        self.watched
            .lock()
            .keys()
            .map(|t| self.names.topic_notify(t))
            .collect()
    }

    pub(super) fn req(&self) -> u64 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn down(&self) -> Option<BrokerError> {
        (!self.is_up()).then(|| BrokerError::Down("Redis link is down".into()))
    }

    /// The name of a live node, for reports.
    pub(super) fn node_name(&self, n: u32) -> String {
        self.live
            .read()
            .get(&n)
            .map(|i| i.id.clone())
            .unwrap_or_else(|| format!("node {n}"))
    }

    /// Fire-and-forget PUBLISH to a node (reports and acks).
    fn reply(self: &Arc<Self>, node: u32, msg: Wire) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut cmd = this.cmd.clone();
            let _: Result<i64, _> = redis::cmd("PUBLISH")
                .arg(this.names.node_channel(node))
                .arg(msg.encode().as_ref())
                .query_async(&mut cmd)
                .await;
        });
    }

    /// Handles one message that arrived on a subscribed Redis channel.
    pub fn handle(self: &Arc<Self>, redis_channel: &str, payload: Bytes) {
        let qn = format!("{}:qn:", self.names.prefix);
        if let Some(topic) = redis_channel.strip_prefix(qn.as_str()) {
            if let Some(wake) = self.topic_waker.get() {
                wake(topic);
            }
            return;
        }
        let Some(wire) = Wire::decode(payload) else {
            tracing::debug!("ignoring a malformed broker message on {redis_channel}");
            return;
        };
        match wire {
            Wire::Publish {
                origin,
                req,
                deadline,
                ftype,
                data,
            } => {
                // Our own publish comes back to us: it was delivered locally.
                if origin == self.node {
                    return;
                }
                // The publisher has answered "not delivered" by now.
                if self.clock.passed(deadline) {
                    tracing::debug!("dropping a publish that arrived after its deadline");
                    return;
                }
                let Some(ch) = self.names.strip_channel(redis_channel) else {
                    return;
                };
                let (s, f) = match frame(data, ftype) {
                    Ok(msg) => {
                        let d = self.hub.publish(ch, &msg);
                        self.metrics.send_errors.inc_by(d.fail);
                        (d.success, d.fail)
                    }
                    Err(_) => (0, 0),
                };
                if req != 0 {
                    self.reply(
                        origin,
                        Wire::Report {
                            from: self.node,
                            req,
                            s,
                            f,
                        },
                    );
                }
            }
            Wire::Report { from, req, s, f } => {
                if let Some(tx) = self.reports.lock().get(&req) {
                    let _ = tx.send((from, s, f));
                }
            }
            Wire::Ack {
                req,
                status,
                message,
                ..
            } => {
                if let Some(tx) = self.acks.lock().remove(&req) {
                    let _ = tx.send((status, message));
                }
            }
            Wire::Send {
                origin,
                req,
                deadline,
                client,
                ftype,
                data,
            } => {
                let (status, message) = match frame(data, ftype) {
                    _ if self.clock.passed(deadline) => (AckStatus::Expired, String::new()),
                    Err(e) => (AckStatus::Failed, e.to_string()),
                    Ok(msg) => match self.hub.send(client, Outbound::Message(msg)) {
                        Ok(()) => (AckStatus::Ok, String::new()),
                        Err(PushError::Closed) => (
                            AckStatus::UnknownClient,
                            format!("client {client} not found"),
                        ),
                        Err(PushError::Full) => (
                            AckStatus::Busy,
                            format!("client {client} is not accepting messages"),
                        ),
                    },
                };
                self.reply(
                    origin,
                    Wire::Ack {
                        from: self.node,
                        req,
                        status,
                        message,
                    },
                );
            }
            Wire::Call {
                origin,
                req,
                deadline,
                client,
                call,
            } => {
                let this = self.clone();
                tokio::spawn(async move {
                    let (status, message) = if this.clock.passed(deadline) {
                        (AckStatus::Expired, String::new())
                    } else {
                        this.apply_call(client, &call).await
                    };
                    this.reply(
                        origin,
                        Wire::Ack {
                            from: this.node,
                            req,
                            status,
                            message,
                        },
                    );
                });
            }
        }
    }

    async fn apply_call(&self, client: ClientId, call: &[u8]) -> (AckStatus, String) {
        let parsed: serde_json::Value = match serde_json::from_slice(call) {
            Ok(v) => v,
            Err(e) => return (AckStatus::Failed, format!("bad call: {e}")),
        };
        let Some(func) = parsed["f"].as_str().and_then(CallFunc::parse) else {
            return (AckStatus::Failed, "unknown function".into());
        };
        let args = parsed["a"].as_array().cloned().unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        let item = Outbound::Call(ConnCall {
            func,
            args,
            reply: Some(tx),
        });
        match self.hub.send(client, item) {
            Err(PushError::Closed) => {
                return (
                    AckStatus::UnknownClient,
                    format!("client {client} not found"),
                );
            }
            Err(PushError::Full) => return (AckStatus::Busy, format!("client {client} is busy")),
            Ok(()) => {}
        }
        match rx.await {
            Ok(Ok(())) => (AckStatus::Ok, String::new()),
            Ok(Err(e)) => (AckStatus::Failed, e),
            Err(_) => (AckStatus::UnknownClient, format!("client {client} closed")),
        }
    }

    /// Every live node, this one included, ordered by number.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut all: Vec<NodeInfo> = self.live.read().values().cloned().collect();
        all.push(self.self_info());
        all.sort_by_key(|n| n.n);
        all
    }

    /// This node's info as announced in its heartbeat.
    pub fn self_info(&self) -> NodeInfo {
        NodeInfo {
            n: self.node,
            id: self.node_id.clone(),
            clients: self.hub.client_count() as u64,
            channels: self.hub.channel_count() as u64,
            started: self.started,
        }
    }
}

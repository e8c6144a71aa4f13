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
//! - `p:epoch`, `p:synced`, `p:syncgen`: which nodes have their
//!   subscriptions in place, and a token that changes with them (see
//!   [`super::sync`]).
//!
//! This file holds the handling of what arrives and the [`Broker`]
//! implementation; the requests a node makes (publish, send, call) live in
//! [`super::requests`], connecting and key names in
//! [`super::redis_connect`], the batching of the delivery reports this node
//! sends back in [`super::report_batch`], the subscription link and the
//! heartbeat in [`super::subscriber`] and [`super::membership`], the
//! cluster queues in [`super::redis_queue`], idempotency keys in
//! [`super::redis_idempotency`], presence requests in
//! [`super::redis_presence`].

use super::deadline::RedisClock;
use super::history::History;
use super::interest::{PendingInterest, Target};
pub use super::redis_connect::{Names, connect, url};
use super::report_batch::{OutgoingReports, Report};
use super::sync::SyncState;
use super::wire::{AckStatus, Wire};
use super::{
    BoxFuture, Broker, BrokerError, Claim, ConnectError, Local, LocalError, NodeInfo,
    RemoteDelivery,
};
use crate::client_id::ClientId;
use crate::config::{ClusterConfig, HistoryConfig};
use crate::frame::{frame, parts};
use crate::metrics::Metrics;
use crate::outbox::CallFunc;
use crate::presence::Presence;
use crate::publication::Publication;
use crate::queue::{QueueLimits, QueueStore};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tungstenite::Message;

/// Where a node's delivery counts `(node, success, fail)` for a publish go.
pub(super) type ReportSender = mpsc::UnboundedSender<(u32, u64, u64)>;

/// See the module documentation.
pub struct RedisBroker {
    pub node: u32,
    pub node_id: String,
    pub names: Names,
    pub cfg: ClusterConfig,
    pub client: redis::Client,
    pub cmd: ConnectionManager,
    /// Where what other nodes send is delivered (set by `start`).
    local: OnceLock<Arc<dyn Local>>,
    pub metrics: Arc<Metrics>,
    pub started: u64,
    /// Channel interest changes not yet applied in Redis (one per channel).
    pub interest: PendingInterest,
    next_req: AtomicU64,
    pub(super) reports: Mutex<HashMap<u64, ReportSender>>,
    /// This node's reports not yet sent to the publishing nodes.
    outgoing_reports: OutgoingReports,
    pub(super) acks: Mutex<HashMap<u64, oneshot::Sender<(AckStatus, String)>>>,
    /// Presence requests waiting for other nodes' answers.
    pub(super) presence_answers: Mutex<HashMap<u64, super::redis_presence::AnswerSender>>,
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
    topic_waker: OnceLock<TopicWaker>,
    this: Weak<RedisBroker>,
}

/// Called with a topic whose queue may have a new message.
pub type TopicWaker = Box<dyn Fn(&str) + Send + Sync>;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RedisBroker {
    /// Connects to Redis, claims a node number and builds the broker;
    /// [`Broker::start`] starts it.
    pub async fn open(
        cfg: ClusterConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ConnectError> {
        let (client, cmd, node) = connect(&cfg).await?;
        let b = Self::new(cfg, client, cmd, node, metrics);
        b.metrics.broker_up.set(0);
        b.metrics.nodes.set(1);
        tracing::info!(
            "cluster node {} ({}) via Redis {}",
            b.node,
            b.node_id,
            b.cfg.addr
        );
        Ok(b)
    }

    /// Builds the broker for a connected node.
    pub fn new(
        cfg: ClusterConfig,
        client: redis::Client,
        cmd: ConnectionManager,
        node: u32,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let node_id = if cfg.node_id.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "node".into());
            format!("{host}-{}-{node}", std::process::id())
        } else {
            cfg.node_id.clone()
        };
        Arc::new_cyclic(|this| Self {
            node,
            node_id,
            names: Names::new(&cfg.prefix),
            cfg,
            client,
            cmd,
            local: OnceLock::new(),
            metrics,
            started: unix_now(),
            interest: PendingInterest::default(),
            next_req: AtomicU64::new(1),
            reports: Mutex::new(HashMap::new()),
            outgoing_reports: OutgoingReports::default(),
            acks: Mutex::new(HashMap::new()),
            presence_answers: Mutex::new(HashMap::new()),
            clock: RedisClock::default(),
            sync: SyncState::default(),
            live: RwLock::new(HashMap::new()),
            subscriber_up: AtomicBool::new(false),
            commands_up: AtomicBool::new(true),
            watched: Mutex::new(HashMap::new()),
            topic_waker: OnceLock::new(),
            this: this.clone(),
        })
    }

    /// Where what other nodes send is delivered (once started).
    pub fn local(&self) -> Option<&Arc<dyn Local>> {
        self.local.get()
    }

    /// Whether `ch` has a local subscriber now.
    pub fn has_subscribers(&self, ch: &str) -> bool {
        self.local().is_some_and(|l| l.has_subscribers(ch))
    }

    /// Whether remote operations can be attempted now.
    pub fn is_up(&self) -> bool {
        self.subscriber_up.load(Ordering::Acquire) && self.commands_up.load(Ordering::Acquire)
    }

    pub fn update_up_metric(&self) {
        self.metrics.broker_up.set(self.is_up() as i64);
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
                .set(Target::Raw(self.names.topic_notify(topic)), true);
        }
    }

    pub fn unwatch_topic(&self, topic: &str) {
        let mut w = self.watched.lock();
        if let Some(n) = w.get_mut(topic) {
            *n -= 1;
            if *n == 0 {
                w.remove(topic);
                self.interest
                    .set(Target::Raw(self.names.topic_notify(topic)), false);
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

    /// Fire-and-forget PUBLISH to a node (acks, presence answers).
    fn reply(self: &Arc<Self>, node: u32, msg: Wire) {
        let this = self.clone();
        tokio::spawn(async move { this.publish_to_node(node, &msg).await });
    }

    /// Queues a delivery report for the publishing node `to`; the reports
    /// queued together leave as one message per node (see
    /// [`super::report_batch`]).
    fn report(self: &Arc<Self>, to: u32, report: Report) {
        if !self.outgoing_reports.add(to, report) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            #[cfg(feature = "test-hooks")]
            super::sync::hold_while_file(super::report_batch::HOLD_ENV, "reports").await;
            let batch = this.outgoing_reports.take(this.node);
            let sends = batch
                .iter()
                .map(|(node, msg)| this.publish_to_node(*node, msg));
            futures_util::future::join_all(sends).await;
        });
    }

    /// PUBLISHes `msg` on node `node`'s channel; a failure loses it (the
    /// waiting node then names this one in `missing`, or times out).
    async fn publish_to_node(&self, node: u32, msg: &Wire) {
        let mut cmd = self.cmd.clone();
        let (channel, body) = (self.names.node_channel(node), msg.encode());
        // Sized once: a command grown argument by argument reallocates.
        let _: Result<i64, _> = redis::Cmd::with_capacity(3, 16 + channel.len() + body.len())
            .arg("PUBLISH")
            .arg(channel)
            .arg(body.as_ref())
            .query_async(&mut cmd)
            .await;
    }

    /// Hands node `from`'s delivery reports to the publishes waiting for them.
    fn received_reports(&self, from: u32, reports: impl IntoIterator<Item = Report>) {
        let waiting = self.reports.lock();
        for (req, s, f) in reports {
            if let Some(tx) = waiting.get(&req) {
                let _ = tx.send((from, s, f));
            }
        }
    }

    /// Handles one message that arrived on a subscribed Redis channel.
    pub fn handle(self: &Arc<Self>, redis_channel: &str, payload: Bytes) {
        let topic = redis_channel
            .strip_prefix(self.names.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(":qn:"));
        if let Some(topic) = topic {
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
                event,
                position,
            } => {
                // Our own publish comes back to us: it was delivered locally,
                // unless it is a history publish, which every node (this one
                // too) delivers as Redis hands it over, in offset order.
                let own = origin == self.node;
                if own && position.is_none() {
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
                let (s, f) = match (frame(data, ftype), self.local()) {
                    (Ok(frame), Some(local)) => local.deliver(&Arc::new(Publication {
                        event,
                        position,
                        ..Publication::new(ch, frame)
                    })),
                    _ => (0, 0),
                };
                if req != 0 && own {
                    if let Some(tx) = self.reports.lock().get(&req) {
                        let _ = tx.send((self.node, s, f));
                    }
                } else if req != 0 {
                    self.report(origin, (req, s, f));
                }
            }
            Wire::Report { from, req, s, f } => self.received_reports(from, [(req, s, f)]),
            Wire::Reports { from, reports } => self.received_reports(from, reports),
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
            Wire::Who { origin, req, ids } => {
                if origin == self.node {
                    return;
                }
                let (Some(ch), Some(local)) =
                    (self.names.strip_channel(redis_channel), self.local())
                else {
                    return;
                };
                // Off the subscription link's task: a channel with many
                // subscribers takes a while to list.
                let (this, ch, local) = (self.clone(), ch.to_string(), local.clone());
                tokio::spawn(async move {
                    let presence = local.presence(&ch, ids);
                    this.reply(
                        origin,
                        Wire::Present {
                            from: this.node,
                            req,
                            presence,
                        },
                    );
                });
            }
            Wire::Present {
                from,
                req,
                presence,
            } => {
                if let Some(tx) = self.presence_answers.lock().get(&req) {
                    let _ = tx.send((from, presence));
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
                let (status, message) = match (frame(data, ftype), self.local()) {
                    _ if self.clock.passed(deadline) => (AckStatus::Expired, String::new()),
                    (Err(e), _) => (AckStatus::Failed, e.to_string()),
                    (Ok(_), None) => (
                        AckStatus::UnknownClient,
                        format!("client {client} not found"),
                    ),
                    (Ok(msg), Some(local)) => ack(local.send(client, msg)),
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
        let Some(local) = self.local() else {
            return (
                AckStatus::UnknownClient,
                format!("client {client} not found"),
            );
        };
        ack(local.call(client, func, args).await)
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
            clients: self.local().map_or(0, |l| l.client_count()),
            channels: self.local().map_or(0, |l| l.channel_count()),
            started: self.started,
        }
    }
}

/// The ack status and message of what a local client did with a send or call.
fn ack(r: Result<(), LocalError>) -> (AckStatus, String) {
    match r {
        Ok(()) => (AckStatus::Ok, String::new()),
        Err(LocalError::UnknownClient(m)) => (AckStatus::UnknownClient, m),
        Err(LocalError::Busy(m)) => (AckStatus::Busy, m),
        Err(LocalError::Failed(m)) => (AckStatus::Failed, m),
    }
}

impl Broker for RedisBroker {
    fn node(&self) -> u32 {
        self.node
    }

    /// Starts the subscription link and the heartbeat.
    fn start(self: Arc<Self>, local: Arc<dyn Local>, stop: CancellationToken) {
        if self.local.set(local).is_err() {
            return;
        }
        super::subscriber::spawn(self.clone(), stop.clone());
        super::membership::spawn(self, stop);
    }

    fn queue_store(self: Arc<Self>, limits: QueueLimits) -> Arc<dyn QueueStore> {
        super::redis_queue::RedisQueues::new(self, limits)
    }

    fn history(self: Arc<Self>, _list: &[HistoryConfig]) -> Arc<dyn History> {
        super::redis_history::RedisHistory::new(self)
    }

    fn publish<'a>(&'a self, p: &'a Publication) -> Option<BoxFuture<'a, RemoteDelivery>> {
        Some(Box::pin(RedisBroker::publish(self, p)))
    }

    fn send<'a>(&'a self, id: ClientId, msg: &Message) -> BoxFuture<'a, Result<(), BrokerError>> {
        let (ftype, data) = parts(msg);
        Box::pin(RedisBroker::send(self, id, ftype, data))
    }

    fn call<'a>(
        &'a self,
        id: ClientId,
        func: CallFunc,
        args: Vec<serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(RedisBroker::call(self, id, func.name(), args))
    }

    fn subscribe(&self, ch: &str) {
        self.interest.set(Target::Channel(ch.to_string()), true);
    }

    fn unsubscribe(&self, ch: &str) {
        self.interest.set(Target::Channel(ch.to_string()), false);
    }

    /// Waits until Redis applied every interest change made so far, so that
    /// a publish on any node reaches this node's subscribers. Resolves at
    /// once while the subscription link is down (local delivery needs no
    /// wait), and after `publishTimeoutMs` at most.
    fn until_heard(&self) -> Option<BoxFuture<'static, ()>> {
        let this = self.this.upgrade()?;
        let seq = self.interest.last_sent();
        Some(Box::pin(async move {
            if this.subscriber_up.load(Ordering::Acquire) {
                let limit = Duration::from_millis(this.cfg.publish_timeout_ms);
                this.interest.wait_applied(seq, limit).await;
            }
        }))
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        RedisBroker::nodes(self)
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(super::membership::leave(self))
    }

    fn presence<'a>(&'a self, ch: &'a str, ids: bool) -> Option<BoxFuture<'a, Presence>> {
        Some(Box::pin(self.ask_presence(ch, ids)))
    }

    fn claim<'a>(&'a self, scope: &'a str, key: &'a str, _ttl: Duration) -> BoxFuture<'a, Claim> {
        Box::pin(self.claim_key(scope, key))
    }

    fn settle<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        answer: String,
        ttl: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.settle_key(scope, key, answer, ttl))
    }
}

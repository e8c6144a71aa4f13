//! The operations of `docs/http-api.md` and `docs/websocket-api.md`: publish, send, conn.call,
//! subscribe and unsubscribe, whichever door (HTTP API, WebSocket API, Lua)
//! they come through.
//!
//! A publish is turned into one shared frame at the door and handed to the
//! hub for local fan-out and to the broker for every other node. The mesh
//! is the only place that knows whether an operation stays on this node; it
//! never touches sockets or Lua, and it does not know which broker runs.
//!
//! Subscriptions never go stale: the hub change of a channel and the
//! broker's interest change for it happen under one lock per channel (a
//! striped lock, as centrifuge's `subLock(ch)`), so a "last leave" on one
//! worker and a "first join" on another reach the broker in the order the
//! hub saw them.

use crate::broker::history::{History, HistoryError, Page, Position};
use crate::broker::{BoxFuture, Broker, BrokerError, Claim, Local, LocalError, NodeInfo};
use crate::client_id::{ClientId, node_of};
use crate::config::{HistoryConfig, policy_for};
use crate::hub::{Client, Delivery, Hub, SubscribeError};
use crate::metrics::Metrics;
use crate::outbox::{CallFunc, ConnCall, Outbound, PushError};
use crate::presence::Presence;
use crate::publication::Publication;
use crate::queue::Queues;
use parking_lot::{Mutex, MutexGuard};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Stripes of the per-channel lock: channels share a stripe by hash, so
/// the locks cost a fixed few kilobytes however many channels there are.
const SUB_LOCKS: usize = 256;

/// Why a mesh operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("client {0} not found")]
    UnknownClient(String),
    #[error("client {0} is not accepting messages (slow or closing)")]
    ClientBusy(ClientId),
    #[error("text data is not valid UTF-8")]
    InvalidText,
    #[error("{0}")]
    CallFailed(String),
    #[error("{0}")]
    Subscribe(#[from] SubscribeError),
    #[error("{0}")]
    Remote(String),
}

/// What a publish did across the cluster.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Published {
    /// Connections reached and not reached, on every node that reported.
    pub delivery: Delivery,
    /// Nodes that should have reported but did not before the deadline.
    pub missing: Vec<String>,
    /// Why other nodes could not be reached at all (the broker is down).
    pub error: Option<String>,
    /// Its place in the channel's history (channels with history only).
    pub position: Option<Position>,
}

/// See the module documentation.
pub struct Mesh {
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Upstream queues (`mix.queue.push` -> `queue.pop`).
    pub queues: Arc<Queues>,
    /// The link to other nodes (whichever engine runs).
    broker: Arc<dyn Broker>,
    /// Channel history (`engine.history`), of the broker's kind.
    history: Arc<dyn History>,
    history_policies: Vec<HistoryConfig>,
    sub_locks: Box<[Mutex<()>]>,
    #[cfg(test)]
    pause: std::sync::OnceLock<Box<dyn Fn(tests::Point) + Send + Sync>>,
}

impl Mesh {
    pub fn new(
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        queues: Arc<Queues>,
        broker: Arc<dyn Broker>,
        history_policies: Vec<HistoryConfig>,
    ) -> Self {
        Self {
            hub,
            metrics,
            queues,
            history: broker.clone().history(&history_policies),
            history_policies,
            broker,
            sub_locks: (0..SUB_LOCKS).map(|_| Mutex::new(())).collect(),
            #[cfg(test)]
            pause: std::sync::OnceLock::new(),
        }
    }

    /// Where the broker delivers what other nodes send to this one.
    pub fn local(&self) -> Arc<dyn Local> {
        Arc::new(LocalNode {
            hub: self.hub.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// Delivers `p` to every subscriber of its channel, on every node.
    pub async fn publish(&self, p: Arc<Publication>) -> Published {
        if let Some(policy) = self.history_policy(&p.channel) {
            return self.publish_with_history(p, policy).await;
        }
        let start = Instant::now();
        let local = self.hub.publish(&p);
        self.metrics.send_errors.inc_by(local.fail);
        self.metrics
            .send_local
            .observe(start.elapsed().as_secs_f64());
        let Some(forward) = self.broker.publish(&p) else {
            return Published {
                delivery: local,
                ..Default::default()
            };
        };
        let remote = forward.await;
        self.metrics
            .send_forward
            .observe(start.elapsed().as_secs_f64());
        Published {
            delivery: Delivery {
                success: local.success + remote.success,
                fail: local.fail + remote.fail,
            },
            missing: remote.missing,
            error: remote.error,
            position: None,
        }
    }

    /// A publish to a channel with history: the history engine appends it
    /// and delivers it everywhere in offset order (one node: to the hub,
    /// under the channel's lock; a cluster: through the broker, this node
    /// included).
    async fn publish_with_history(&self, p: Arc<Publication>, policy: &HistoryConfig) -> Published {
        let start = Instant::now();
        let hub = &self.hub;
        let deliver = |p: &Arc<Publication>| {
            let d = hub.publish(p);
            (d.success, d.fail)
        };
        let appended = self
            .history
            .publish(Arc::unwrap_or_clone(p), policy, &deliver)
            .await;
        self.metrics.send_errors.inc_by(appended.fail);
        self.metrics
            .send_forward
            .observe(start.elapsed().as_secs_f64());
        Published {
            delivery: Delivery {
                success: appended.success,
                fail: appended.fail,
            },
            missing: appended.missing,
            error: appended.error,
            position: appended.position,
        }
    }

    /// The `engine.history` entry that applies to `ch`, if any.
    pub fn history_policy(&self, ch: &str) -> Option<&HistoryConfig> {
        policy_for(&self.history_policies, ch)
    }

    /// The publications of `ch` after `since` (all kept when `None`), at
    /// most `limit` (the channel's `historySize` when `None`), and its top
    /// position.
    pub async fn history(
        &self,
        ch: &str,
        since: Option<Position>,
        limit: Option<usize>,
    ) -> Result<Page, HistoryError> {
        let policy = self
            .history_policy(ch)
            .ok_or_else(|| HistoryError::NoHistory(ch.to_string()))?;
        let limit = limit.unwrap_or(policy.history_size);
        self.history.read(ch, since, limit, policy).await
    }

    /// Delivers `msg` to one client, on whichever node it is.
    pub async fn send(&self, id: ClientId, msg: Message) -> Result<(), MeshError> {
        if node_of(id) == self.hub.node() {
            return self.push(id, Outbound::Message(msg));
        }
        let start = Instant::now();
        let r = self.broker.send(id, &msg).await.map_err(MeshError::from);
        self.metrics
            .send_forward
            .observe(start.elapsed().as_secs_f64());
        r
    }

    fn push(&self, id: ClientId, item: Outbound) -> Result<(), MeshError> {
        match self.hub.send(id, item) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(MeshError::UnknownClient(id.to_string())),
            Err(PushError::Full) => {
                self.metrics.send_errors.inc();
                Err(MeshError::ClientBusy(id))
            }
        }
    }

    /// Runs `conn.call` on a client: the connection applies it on its own
    /// thread and this returns once it has, on whichever node it is.
    pub async fn call(
        &self,
        id: ClientId,
        func: CallFunc,
        args: Vec<serde_json::Value>,
    ) -> Result<(), MeshError> {
        if node_of(id) != self.hub.node() {
            return self
                .broker
                .call(id, func, args)
                .await
                .map_err(|e| MeshError::CallFailed(e.to_string()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.push(
            id,
            Outbound::Call(ConnCall {
                func,
                args,
                reply: Some(tx),
            }),
        )?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MeshError::CallFailed(e)),
            Err(_) => Err(MeshError::CallFailed(format!("client {id} closed"))),
        }
    }

    /// The lock of `ch`'s stripe: held across a hub change and the broker
    /// interest change it causes.
    fn sub_lock(&self, ch: &str) -> MutexGuard<'_, ()> {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(ch);
        let lock = &self.sub_locks[hash as usize % self.sub_locks.len()];
        #[cfg(test)]
        {
            if let Some(g) = lock.try_lock() {
                return g;
            }
            self.paused(tests::Point::Contended);
        }
        lock.lock()
    }

    #[cfg(test)]
    fn paused(&self, at: tests::Point) {
        if let Some(p) = self.pause.get() {
            p(at);
        }
    }

    /// Joins a local client to a channel.
    pub fn subscribe(&self, client: &Arc<Client>, ch: &str) -> Result<(), MeshError> {
        let _g = self.sub_lock(ch);
        if self.hub.subscribe(client, ch)? {
            #[cfg(test)]
            self.paused(tests::Point::HubChanged { joined: true });
            self.metrics.channels.inc();
            self.broker.subscribe(ch);
        }
        Ok(())
    }

    /// Removes a local client from a channel.
    pub fn unsubscribe(&self, client: &Client, ch: &str) {
        let _g = self.sub_lock(ch);
        if self.hub.unsubscribe(client, ch) {
            self.left(ch);
        }
    }

    /// `ch` just lost its last local subscriber (its lock held).
    fn left(&self, ch: &str) {
        #[cfg(test)]
        self.paused(tests::Point::HubChanged { joined: false });
        self.metrics.channels.dec();
        self.broker.unsubscribe(ch);
    }

    /// Removes a closed client from the hub and every channel.
    pub fn unregister(&self, client: &Client) {
        for ch in self.hub.unregister(client) {
            let _g = self.sub_lock(&ch);
            if self.hub.leave(&ch, client.id) {
                self.left(&ch);
            }
        }
        self.metrics.clients.set(self.hub.client_count() as i64);
    }

    /// Makes a new local client reachable.
    pub fn register(&self, client: Arc<Client>) {
        self.hub.register(client);
        self.metrics.clients.set(self.hub.client_count() as i64);
    }

    /// Resolves once every channel joined so far is heard by the whole
    /// cluster, so a publish on any node reaches it; `None` when there is
    /// nothing to wait for (one node). Takes its snapshot now.
    pub fn until_heard(&self) -> Option<BoxFuture<'static, ()>> {
        self.broker.until_heard()
    }

    /// Every live node (just this one on a single node).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.broker.nodes()
    }

    /// Who is subscribed to `ch` on every node: connections (their client
    /// ids when `ids`) and distinct users; nodes that did not answer in
    /// time are named in `missing`.
    pub async fn presence(&self, ch: &str, ids: bool) -> Presence {
        let local = self.hub.presence(ch, ids);
        match self.broker.presence(ch, ids) {
            None => local,
            Some(remote) => Presence::combine([local, remote.await]),
        }
    }

    /// Claims a publish's idempotency key in `scope` cluster-wide (see
    /// [`crate::broker::idempotency`]).
    pub async fn claim(&self, scope: &str, key: &str, ttl: Duration) -> Claim {
        self.broker.claim(scope, key, ttl).await
    }

    /// Records the answer of the publish that claimed `key`.
    pub async fn settle(&self, scope: &str, key: &str, answer: String, ttl: Duration) {
        self.broker.settle(scope, key, answer, ttl).await
    }

    /// Leaves the cluster at once (clean shutdown).
    pub async fn leave(&self) {
        self.broker.leave().await
    }
}

impl From<BrokerError> for MeshError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::UnknownClient(m) => MeshError::UnknownClient(m),
            BrokerError::UnknownNode(n) => {
                MeshError::UnknownClient(format!("on node {n}, which is not alive"))
            }
            other => MeshError::Remote(other.to_string()),
        }
    }
}

/// This node as the broker sees it: what other nodes send lands in the hub.
struct LocalNode {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

impl Local for LocalNode {
    fn deliver(&self, p: &Arc<Publication>) -> (u64, u64) {
        let d = self.hub.publish(p);
        self.metrics.send_errors.inc_by(d.fail);
        (d.success, d.fail)
    }

    fn send(&self, id: ClientId, msg: Message) -> Result<(), LocalError> {
        self.hub
            .send(id, Outbound::Message(msg))
            .map_err(|e| match e {
                PushError::Closed => LocalError::UnknownClient(format!("client {id} not found")),
                PushError::Full => {
                    LocalError::Busy(format!("client {id} is not accepting messages"))
                }
            })
    }

    fn call(
        &self,
        id: ClientId,
        func: CallFunc,
        args: Vec<serde_json::Value>,
    ) -> BoxFuture<'static, Result<(), LocalError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let item = Outbound::Call(ConnCall {
            func,
            args,
            reply: Some(tx),
        });
        let pushed = self.hub.send(id, item);
        Box::pin(async move {
            match pushed {
                Err(PushError::Closed) => {
                    return Err(LocalError::UnknownClient(format!("client {id} not found")));
                }
                Err(PushError::Full) => {
                    return Err(LocalError::Busy(format!("client {id} is busy")));
                }
                Ok(()) => {}
            }
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(LocalError::Failed(e)),
                Err(_) => Err(LocalError::UnknownClient(format!("client {id} closed"))),
            }
        })
    }

    fn channels(&self) -> Vec<String> {
        self.hub.channel_names()
    }

    fn has_subscribers(&self, ch: &str) -> bool {
        self.hub.subscriber_count(ch) > 0
    }

    fn client_count(&self) -> u64 {
        self.hub.client_count() as u64
    }

    fn channel_count(&self) -> u64 {
        self.hub.channel_count() as u64
    }

    fn presence(&self, ch: &str, ids: bool) -> Presence {
        self.hub.presence(ch, ids)
    }
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
mod tests;

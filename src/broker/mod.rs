//! How a node reaches the others, behind one seam.
//!
//! [`Broker`] is what the mesh asks of the cluster: publish to every other
//! node, send or call to one, keep the cluster told which channels this node
//! wants (its channel interest), list the live nodes, and wait until an
//! interest change is heard cluster-wide. What other nodes send back comes in
//! through [`Local`], which the mesh implements, so a broker never reaches
//! into the hub, the outboxes or the queues.
//!
//! Presence in a cluster is asked of the nodes with subscribers of the
//! channel, at the moment it is asked (nothing is stored per subscriber): a
//! node that dies stops answering at once, and stops being expected once
//! its heartbeat expires.
//!
//! Engines: [`memory::MemoryBroker`] (`dev`/`single`: the node is the whole
//! mesh, nothing external) and [`redis::RedisBroker`] (`engine`: nodes share
//! one Redis). [`open`] picks one from the config; nothing outside this module
//! knows which one runs, and a new engine (NATS, Redis Cluster) is a new file
//! here plus its config. Each engine also provides the queue storage and the
//! channel history of its kind ([`Broker::queue_store`], [`Broker::history`]).

pub mod deadline;
pub mod history;
pub mod idempotency;
pub mod interest;
pub mod membership;
pub mod memory;
pub mod memory_history;
pub mod redis;
pub mod redis_connect;
pub mod redis_history;
pub mod redis_idempotency;
pub mod redis_presence;
pub mod redis_queue;
pub mod redis_script;
pub mod report_batch;
pub mod requests;
pub mod subscriber;
pub mod sync;
pub mod wire;

use crate::client_id::ClientId;
use crate::config::{EngineConfig, HistoryConfig};
use crate::metrics::Metrics;
use crate::outbox::CallFunc;
use crate::presence::Presence;
use crate::publication::Publication;
use crate::queue::{QueueLimits, QueueStore};
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tungstenite::Message;

pub use idempotency::Claim;

/// A boxed future, for the seam's async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A node of the cluster as `/v1/mesh/nodes` lists it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct NodeInfo {
    /// The node number (the high half of its client ids).
    pub n: u32,
    /// The node's name (`engine.cluster.nodeId`, or generated).
    pub id: String,
    /// Client connections it holds.
    pub clients: u64,
    /// Channels with local subscribers on it.
    pub channels: u64,
    /// Unix time (seconds) it started.
    pub started: u64,
}

/// What the other nodes did with a publish.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RemoteDelivery {
    pub success: u64,
    pub fail: u64,
    /// Nodes whose delivery is unknown: expected to report and did not
    /// before the deadline, or subscriptions not known to be in place.
    pub missing: Vec<String>,
    /// Set when the broker could not be used at all.
    pub error: Option<String>,
}

/// Why a remote operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Down(String),
    #[error("node {0} is not alive")]
    UnknownNode(u32),
    #[error("{0}")]
    Remote(String),
    #[error("client not found: {0}")]
    UnknownClient(String),
    #[error("client busy: {0}")]
    Busy(String),
}

/// Why a local client could not take what another node sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    UnknownClient(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
}

/// This node as a broker sees it: where what other nodes send is delivered.
/// Implemented by the mesh.
pub trait Local: Send + Sync {
    /// Delivers a publish from another node to the local subscribers of
    /// its channel; returns `(success, fail)`.
    fn deliver(&self, p: &Arc<Publication>) -> (u64, u64);
    /// Queues a frame to one local client.
    fn send(&self, id: ClientId, msg: Message) -> Result<(), LocalError>;
    /// Applies `conn.call` on a local client; resolves once it is applied.
    fn call(
        &self,
        id: ClientId,
        func: CallFunc,
        args: Vec<serde_json::Value>,
    ) -> BoxFuture<'static, Result<(), LocalError>>;
    /// Every channel with a local subscriber now.
    fn channels(&self) -> Vec<String>;
    /// Whether `ch` has a local subscriber now.
    fn has_subscribers(&self, ch: &str) -> bool;
    /// Connections held now.
    fn client_count(&self) -> u64;
    /// Channels with local subscribers now.
    fn channel_count(&self) -> u64;
    /// The local presence of `ch` (client ids only when `ids`).
    fn presence(&self, ch: &str, ids: bool) -> Presence;
}

/// The cluster as the mesh sees it (see the module documentation).
pub trait Broker: Send + Sync {
    /// This node's number (the high half of its client ids).
    fn node(&self) -> u32;
    /// Starts the broker's tasks; what arrives from other nodes goes to
    /// `local`. Called once.
    fn start(self: Arc<Self>, local: Arc<dyn Local>, stop: CancellationToken);
    /// The queue storage that goes with this engine.
    fn queue_store(self: Arc<Self>, limits: QueueLimits) -> Arc<dyn QueueStore>;
    /// The channel history that goes with this engine (`engine.history`).
    fn history(self: Arc<Self>, list: &[HistoryConfig]) -> Arc<dyn history::History>;
    /// Publishes to the other nodes and collects what they delivered;
    /// `None` when there is no other node to publish to (nothing to wait
    /// for, nothing to count as forwarded).
    fn publish<'a>(&'a self, p: &'a Publication) -> Option<BoxFuture<'a, RemoteDelivery>>;
    /// Sends a frame to a client of another node.
    fn send<'a>(&'a self, id: ClientId, msg: &Message) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Runs `conn.call` on a client of another node.
    fn call<'a>(
        &'a self,
        id: ClientId,
        func: CallFunc,
        args: Vec<serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// `ch` got its first local subscriber: other nodes' publishes to it
    /// must reach this node. Called under the channel's lock, right after
    /// the hub changed; must not block.
    fn subscribe(&self, ch: &str);
    /// `ch` lost its last local subscriber. Same rules as `subscribe`.
    fn unsubscribe(&self, ch: &str);
    /// Resolves once every interest change made so far is heard by the
    /// whole cluster (bounded by the engine's deadline); `None` when there
    /// is nothing to wait for.
    fn until_heard(&self) -> Option<BoxFuture<'static, ()>>;
    /// Every live node, this one included, ordered by number.
    fn nodes(&self) -> Vec<NodeInfo>;
    /// Leaves the cluster at once (clean shutdown).
    fn leave(&self) -> BoxFuture<'_, ()>;
    /// Asks the other nodes for their presence in `ch` (client ids only
    /// when `ids`) and collects what they answer before the publish
    /// deadline; nodes that do not answer are named in `missing`. `None`
    /// when there is no other node to ask.
    fn presence<'a>(&'a self, ch: &'a str, ids: bool) -> Option<BoxFuture<'a, Presence>>;
    /// Claims the publish key `key` in `scope` (a channel or a channel
    /// list) cluster-wide, for `ttl`; see [`idempotency`].
    fn claim<'a>(&'a self, scope: &'a str, key: &'a str, ttl: Duration) -> BoxFuture<'a, Claim>;
    /// Records `answer` (JSON) as the result of the publish that claimed
    /// `key`, for `ttl`.
    fn settle<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        answer: String,
        ttl: Duration,
    ) -> BoxFuture<'a, ()>;
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[error("cluster redis at {addr} (engine.cluster.addr): {message}")]
pub struct ConnectError {
    pub addr: String,
    pub message: String,
}

/// Why no broker could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cluster mode needs engine.cluster (the broker's Redis) in the config")]
    NoCluster,
    #[error("{0}")]
    Connect(#[from] ConnectError),
}

/// The broker for this node: the single-node one unless `clustered`, else
/// the engine the config names (`engine.cluster`: Redis).
pub async fn open(
    engine: &EngineConfig,
    clustered: bool,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn Broker>, OpenError> {
    if !clustered {
        return Ok(memory::MemoryBroker::new(
            1,
            metrics,
            engine.idempotency_max_keys,
        ));
    }
    let cfg = engine.cluster.clone().ok_or(OpenError::NoCluster)?;
    Ok(redis::RedisBroker::open(cfg, metrics).await?)
}

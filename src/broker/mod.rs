//! How a node reaches the others. `dev`/`single` run with no broker (the
//! node is the whole mesh); `engine` runs with [`redis::RedisBroker`], which
//! carries publishes, sends and calls between nodes through Redis pub/sub and
//! keeps the list of live nodes.
//!
//! The broker only moves bytes between nodes and answers for remote
//! clients; local delivery stays in the hub, and deciding what is local
//! stays in [`crate::mesh`].

pub mod deadline;
pub mod interest;
pub mod membership;
pub mod redis;
pub mod requests;
pub mod subscriber;
pub mod sync;
pub mod wire;

use serde::Serialize;

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
    #[error("node {0} did not answer in time")]
    Timeout(u32),
    #[error("{0}")]
    Remote(String),
    #[error("client not found: {0}")]
    UnknownClient(String),
    #[error("client busy: {0}")]
    Busy(String),
}

//! The single-node broker (`dev` / `single`, the embedded default): this
//! node is the whole mesh, so there is nobody to publish to, no interest to
//! announce and nothing to wait for. Queues and idempotency keys live in
//! this process.

use super::history::History;
use super::idempotency::{Claim, MemoryKeys};
use super::memory_history::MemoryHistory;
use super::{BoxFuture, Broker, BrokerError, Local, NodeInfo, RemoteDelivery};
use crate::client_id::ClientId;
use crate::config::HistoryConfig;
use crate::metrics::Metrics;
use crate::outbox::CallFunc;
use crate::presence::Presence;
use crate::publication::Publication;
use crate::queue::local::LocalQueues;
use crate::queue::{QueueLimits, QueueStore};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tungstenite::Message;

/// See the module documentation.
pub struct MemoryBroker {
    node: u32,
    local: OnceLock<Arc<dyn Local>>,
    keys: MemoryKeys,
}

impl MemoryBroker {
    /// `max_keys`: the bound of the idempotency key store.
    pub fn new(node: u32, metrics: Arc<Metrics>, max_keys: usize) -> Arc<Self> {
        metrics.broker_up.set(1);
        metrics.nodes.set(1);
        Arc::new(Self {
            node,
            local: OnceLock::new(),
            keys: MemoryKeys::new(max_keys),
        })
    }
}

impl Broker for MemoryBroker {
    fn node(&self) -> u32 {
        self.node
    }

    fn start(self: Arc<Self>, local: Arc<dyn Local>, _stop: CancellationToken) {
        let _ = self.local.set(local);
    }

    fn queue_store(self: Arc<Self>, limits: QueueLimits) -> Arc<dyn QueueStore> {
        Arc::new(LocalQueues::new(limits))
    }

    fn history(self: Arc<Self>, list: &[HistoryConfig]) -> Arc<dyn History> {
        MemoryHistory::new(list)
    }

    fn publish<'a>(&'a self, _p: &'a Publication) -> Option<BoxFuture<'a, RemoteDelivery>> {
        None
    }

    fn send<'a>(&'a self, id: ClientId, _msg: &Message) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { Err(BrokerError::UnknownClient(id.to_string())) })
    }

    fn call<'a>(
        &'a self,
        id: ClientId,
        _func: CallFunc,
        _args: Vec<serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { Err(BrokerError::UnknownClient(id.to_string())) })
    }

    fn subscribe(&self, _ch: &str) {}

    fn unsubscribe(&self, _ch: &str) {}

    fn until_heard(&self) -> Option<BoxFuture<'static, ()>> {
        None
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        let local = self.local.get();
        vec![NodeInfo {
            n: self.node,
            id: "single".into(),
            clients: local.map_or(0, |l| l.client_count()),
            channels: local.map_or(0, |l| l.channel_count()),
            started: 0,
        }]
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn presence<'a>(&'a self, _ch: &'a str, _ids: bool) -> Option<BoxFuture<'a, Presence>> {
        None
    }

    fn claim<'a>(&'a self, scope: &'a str, key: &'a str, ttl: Duration) -> BoxFuture<'a, Claim> {
        self.keys.claim(scope, key, ttl)
    }

    fn settle<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        answer: String,
        ttl: Duration,
    ) -> BoxFuture<'a, ()> {
        self.keys.settle(scope, key, answer, ttl);
        Box::pin(async {})
    }
}

//! Upstream queues: `mix.queue.push(topic, data)` from Lua, consumed by
//! backends with `queue.pop` on the WebSocket API.
//!
//! The same rules hold in every [`QueueStore`]: on one node
//! ([`local::LocalQueues`], in memory) and in a cluster (the broker's store,
//! shared, so a message pushed on any node reaches a consumer on any node): bounded topics whose
//! overflow is refused without losing anything, each message to exactly one
//! consumer, consumers pulling only when they can write, and messages a
//! consumer could not write handed back.

pub mod local;

use prometheus::IntGaugeVec;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One queued message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedMessage {
    #[serde(rename = "t")]
    pub topic: String,
    /// The node and client id of the connection that pushed it.
    #[serde(rename = "n")]
    pub node: u32,
    #[serde(rename = "c")]
    pub client_id: String,
    #[serde(rename = "d")]
    pub data: serde_json::Value,
}

/// Why a push was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    #[error("topic {0:?} is full ({1} messages; engine.luavm.queue.topicSize)")]
    TopicFull(String, usize),
    #[error("too many topics ({0}; engine.luavm.queue.maxTopics)")]
    TooManyTopics(usize),
    #[error("invalid topic name")]
    InvalidTopic,
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

/// A registered consumer.
pub type ConsumerId = u64;

/// What bounds a queue store and where it reports depth.
#[derive(Clone)]
pub struct QueueLimits {
    /// `engine.luavm.queue.topicSize`.
    pub topic_size: usize,
    /// `engine.luavm.queue.maxTopics`.
    pub max_topics: usize,
    /// The per-topic depth gauge; a topic's label goes when the topic does.
    pub depth: IntGaugeVec,
}

/// A boxed future, for the store's async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where queued messages live: in this process ([`local::LocalQueues`]) or
/// shared by the cluster (the broker's store).
pub trait QueueStore: Send + Sync {
    /// Queues a valid message; returns the topic's depth after the push.
    fn push(&self, msg: QueuedMessage) -> BoxFuture<'_, Result<usize, PushError>>;
    /// Registers a consumer of `topics`; its `Notify` fires when one may
    /// have a message.
    fn register(&self, topics: Vec<String>) -> (ConsumerId, Arc<Notify>);
    fn unregister(&self, id: ConsumerId);
    /// Takes the next message for consumer `id`, if there is one now.
    fn try_take(&self, id: ConsumerId) -> BoxFuture<'_, Option<QueuedMessage>>;
    /// How often a waiting consumer looks again without being woken
    /// (`None`: wake-ups are never missed).
    fn poll_interval(&self) -> Option<Duration>;
    /// Hands back a message a consumer took but could not write.
    fn requeue(&self, msg: QueuedMessage) -> BoxFuture<'_, ()>;
    /// Brings the depth gauges up to date.
    fn refresh_depth(&self) -> BoxFuture<'_, ()>;
}

/// The queues of this node or of the cluster, whichever store holds them.
pub struct Queues {
    store: Arc<dyn QueueStore>,
}

impl Queues {
    pub fn new(store: Arc<dyn QueueStore>) -> Self {
        Self { store }
    }

    /// Queues a message; returns the topic's depth after the push.
    pub async fn push(&self, msg: QueuedMessage) -> Result<usize, PushError> {
        if !valid_topic(&msg.topic) {
            return Err(PushError::InvalidTopic);
        }
        self.store.push(msg).await
    }

    /// Registers a consumer of `topics`; its `Notify` fires when one may
    /// have a message.
    pub fn register(&self, topics: Vec<String>) -> (ConsumerId, Arc<Notify>) {
        self.store.register(topics)
    }

    pub fn unregister(&self, id: ConsumerId) {
        self.store.unregister(id)
    }

    /// Waits for and takes the next message for consumer `id`; `None` once
    /// `stop` fires. Stop with `stop`, never by dropping this future: a
    /// shared store's take in flight has already removed its message,
    /// so `stop` is only watched between takes.
    pub async fn take(
        &self,
        id: ConsumerId,
        notify: &Notify,
        stop: &CancellationToken,
    ) -> Option<QueuedMessage> {
        let poll = self.store.poll_interval();
        loop {
            let notified = notify.notified();
            if stop.is_cancelled() {
                return None;
            }
            let taken = self.store.try_take(id).await;
            if taken.is_some() {
                return taken;
            }
            // A shared store is also looked at now and then, in case a
            // wake-up was missed.
            let wake = async {
                match poll {
                    Some(p) => drop(tokio::time::timeout(p, notified).await),
                    None => notified.await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = wake => {}
            }
        }
    }

    /// Brings the depth gauges up to date.
    pub async fn refresh_depth(&self) {
        self.store.refresh_depth().await
    }

    /// Hands back a message a consumer took but could not write.
    pub async fn requeue(&self, msg: QueuedMessage) {
        self.store.requeue(msg).await
    }
}

/// Whether a topic name is acceptable: non-empty, at most 256 bytes, no
/// whitespace.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 256 && !t.contains(char::is_whitespace)
}

//! Upstream queues: `mix.queue.push(topic, data)` from Lua, consumed by
//! backends with `queue.pop` on the WebSocket API.
//!
//! The same rules hold on one node ([`local::LocalQueues`], in memory) and in
//! a cluster ([`redis::RedisQueues`], one Redis list per topic, so a message
//! pushed on any node reaches a consumer on any node): bounded topics whose
//! overflow is refused without losing anything, each message to exactly one
//! consumer, consumers pulling only when they can write, and messages a
//! consumer could not write handed back.

pub mod local;
pub mod redis;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
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

/// The queues of this node or of the cluster.
pub enum Queues {
    Local(local::LocalQueues),
    Cluster(Arc<redis::RedisQueues>),
}

impl Queues {
    /// Queues a message; returns the topic's depth after the push.
    pub async fn push(&self, msg: QueuedMessage) -> Result<usize, PushError> {
        if msg.topic.is_empty() || msg.topic.len() > 256 || msg.topic.contains(char::is_whitespace)
        {
            return Err(PushError::InvalidTopic);
        }
        match self {
            Queues::Local(q) => q.push(msg),
            Queues::Cluster(q) => q.push(msg).await,
        }
    }

    /// Registers a consumer of `topics`; its `Notify` fires when one may
    /// have a message.
    pub fn register(&self, topics: Vec<String>) -> (ConsumerId, Arc<Notify>) {
        match self {
            Queues::Local(q) => q.register(topics),
            Queues::Cluster(q) => q.register(topics),
        }
    }

    pub fn unregister(&self, id: ConsumerId) {
        match self {
            Queues::Local(q) => q.unregister(id),
            Queues::Cluster(q) => q.unregister(id),
        }
    }

    /// Waits for and takes the next message for consumer `id`; `None` once
    /// `stop` fires. Stop with `stop`, never by dropping this future: a
    /// cluster take in flight has already removed its message from Redis,
    /// so `stop` is only watched between takes.
    pub async fn take(
        &self,
        id: ConsumerId,
        notify: &Notify,
        stop: &CancellationToken,
    ) -> Option<QueuedMessage> {
        loop {
            let notified = notify.notified();
            if stop.is_cancelled() {
                return None;
            }
            let (taken, poll) = match self {
                Queues::Local(q) => (q.try_take(id), None),
                Queues::Cluster(q) => (q.try_take(id).await, Some(redis::POLL)),
            };
            if taken.is_some() {
                return taken;
            }
            // A cluster consumer also looks again now and then, in case an
            // announcement was missed.
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

    /// Brings the depth gauges up to date (cluster: read from Redis; the
    /// local queues keep them exact as they go).
    pub async fn refresh_depth(&self) {
        if let Queues::Cluster(q) = self {
            q.refresh_depth().await;
        }
    }

    /// Hands back a message a consumer took but could not write.
    pub async fn requeue(&self, msg: QueuedMessage) {
        match self {
            Queues::Local(q) => q.requeue(msg),
            Queues::Cluster(q) => q.requeue(msg).await,
        }
    }
}

//! Cluster queues: one Redis list per topic (`<prefix>:q:<topic>`) and a set
//! of topics (`<prefix>:qtopics`), changed only by scripts so the bounds
//! hold across nodes. A push announces itself on `<prefix>:qn:<topic>`,
//! which nodes with local consumers of the topic listen to; a consumer
//! also looks again every second, so a missed announcement only delays.
//! Depth gauges are read back from Redis when `/metrics` is scraped, so
//! every node reports the cluster's depth, whoever pushed or popped.

use super::redis::RedisBroker;
use crate::queue::{BoxFuture, ConsumerId, PushError, QueueLimits, QueueStore, QueuedMessage};
use parking_lot::Mutex;
use prometheus::IntGaugeVec;
use prometheus::core::Collector;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// -1: topic full, -2: too many topics, else the new length.
const PUSH_SCRIPT: &str = r#"
local len = redis.call('LLEN', KEYS[1])
if len == 0 and redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0
   and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return -2
end
if len >= tonumber(ARGV[3]) then return -1 end
redis.call('SADD', KEYS[2], ARGV[2])
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[3], '')
return n
"#;

/// Pops the oldest message and forgets the topic once it is empty.
const POP_SCRIPT: &str = r#"
local v = redis.call('LPOP', KEYS[1])
if not v then return false end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return {v, left}
"#;

/// Puts a message back at the front.
const REQUEUE_SCRIPT: &str = r#"
redis.call('SADD', KEYS[2], ARGV[2])
local n = redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[3], '')
return n
"#;

/// How often a waiting consumer looks again without an announcement.
pub const POLL: Duration = Duration::from_secs(1);

struct Consumer {
    topics: Vec<String>,
    notify: Arc<Notify>,
    next: usize,
}

/// See the module documentation.
pub struct RedisQueues {
    broker: Arc<RedisBroker>,
    topic_size: usize,
    max_topics: usize,
    depth: IntGaugeVec,
    consumers: Mutex<HashMap<ConsumerId, Consumer>>,
    next_id: Mutex<ConsumerId>,
}

impl RedisQueues {
    pub fn new(broker: Arc<RedisBroker>, limits: QueueLimits) -> Arc<Self> {
        let q = Arc::new(Self {
            broker: broker.clone(),
            topic_size: limits.topic_size,
            max_topics: limits.max_topics,
            depth: limits.depth,
            consumers: Mutex::new(HashMap::new()),
            next_id: Mutex::new(0),
        });
        let weak = Arc::downgrade(&q);
        broker.set_topic_waker(Box::new(move |topic: &str| {
            if let Some(q) = weak.upgrade() {
                q.wake(topic);
            }
        }));
        q
    }

    fn keys(&self, topic: &str) -> (String, String, String) {
        let p = &self.broker.names.prefix;
        (
            format!("{p}:q:{topic}"),
            format!("{p}:qtopics"),
            format!("{p}:qn:{topic}"),
        )
    }

    pub async fn push(&self, msg: QueuedMessage) -> Result<usize, PushError> {
        let payload =
            serde_json::to_string(&msg).map_err(|e| PushError::Unavailable(e.to_string()))?;
        let (list, topics, notify) = self.keys(&msg.topic);
        let mut cmd = self.broker.cmd.clone();
        let script = redis::Script::new(PUSH_SCRIPT);
        let mut inv = script.key(list);
        inv.key(topics)
            .key(notify)
            .arg(payload)
            .arg(&msg.topic)
            .arg(self.topic_size)
            .arg(self.max_topics);
        let n: i64 = tokio::time::timeout(Duration::from_secs(2), inv.invoke_async(&mut cmd))
            .await
            .map_err(|_| PushError::Unavailable("Redis did not answer".into()))?
            .map_err(|e| PushError::Unavailable(e.to_string()))?;
        match n {
            -1 => Err(PushError::TopicFull(msg.topic, self.topic_size)),
            -2 => Err(PushError::TooManyTopics(self.max_topics)),
            n => {
                self.depth.with_label_values(&[&msg.topic]).set(n);
                Ok(n as usize)
            }
        }
    }

    pub fn register(&self, topics: Vec<String>) -> (ConsumerId, Arc<Notify>) {
        let id = {
            let mut n = self.next_id.lock();
            *n += 1;
            *n
        };
        let notify = Arc::new(Notify::new());
        for t in &topics {
            self.broker.watch_topic(t);
        }
        self.consumers.lock().insert(
            id,
            Consumer {
                topics,
                notify: notify.clone(),
                next: 0,
            },
        );
        (id, notify)
    }

    pub fn unregister(&self, id: ConsumerId) {
        let removed = self.consumers.lock().remove(&id);
        if let Some(c) = removed {
            for t in &c.topics {
                self.broker.unwatch_topic(t);
            }
        }
    }

    fn wake(&self, topic: &str) {
        for c in self.consumers.lock().values() {
            if c.topics.iter().any(|t| t == topic) {
                c.notify.notify_one();
            }
        }
    }

    /// Takes the next message for consumer `id` from Redis, if any.
    pub async fn try_take(&self, id: ConsumerId) -> Option<QueuedMessage> {
        let (topics, start) = {
            let g = self.consumers.lock();
            let c = g.get(&id)?;
            (c.topics.clone(), c.next)
        };
        let mut cmd = self.broker.cmd.clone();
        let n = topics.len();
        for k in 0..n {
            let i = (start + k) % n;
            let (list, set, _) = self.keys(&topics[i]);
            let script = redis::Script::new(POP_SCRIPT);
            let mut inv = script.key(list);
            inv.key(set).arg(&topics[i]);
            let got: Option<(String, i64)> = match tokio::time::timeout(
                Duration::from_secs(2),
                inv.invoke_async(&mut cmd),
            )
            .await
            {
                Ok(Ok(v)) => v,
                _ => return None,
            };
            if let Some((payload, left)) = got {
                if let Some(c) = self.consumers.lock().get_mut(&id) {
                    c.next = (i + 1) % n;
                }
                if left == 0 {
                    let _ = self.depth.remove_label_values(&[&topics[i]]);
                } else {
                    self.depth.with_label_values(&[&topics[i]]).set(left);
                }
                match serde_json::from_str(&payload) {
                    Ok(m) => return Some(m),
                    Err(e) => tracing::warn!("dropping a malformed queue message: {e}"),
                }
            }
        }
        None
    }

    /// Reads every topic's length from Redis into the depth gauges (the
    /// label of a topic that is gone is removed). Leaves the gauges as they are when Redis does
    /// not answer within a second.
    pub async fn refresh_depth(&self) {
        let mut cmd = self.broker.cmd.clone();
        let (_, set, _) = self.keys("");
        let read = async {
            let topics: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&set)
                .query_async(&mut cmd)
                .await?;
            if topics.is_empty() {
                return Ok(HashMap::new());
            }
            let mut pipe = redis::pipe();
            for t in &topics {
                pipe.cmd("LLEN").arg(self.keys(t).0);
            }
            let lens: Vec<i64> = pipe.query_async(&mut cmd).await?;
            Ok::<_, redis::RedisError>(topics.into_iter().zip(lens).collect::<HashMap<_, _>>())
        };
        let Ok(Ok(lens)) = tokio::time::timeout(Duration::from_secs(1), read).await else {
            return;
        };
        for family in self.depth.collect() {
            for m in family.get_metric() {
                let topic = m.get_label().first().map(|l| l.value());
                if let Some(t) = topic.filter(|t| !lens.contains_key(*t)) {
                    let _ = self.depth.remove_label_values(&[t]);
                }
            }
        }
        for (t, n) in lens {
            self.depth.with_label_values(&[&t]).set(n);
        }
    }

    pub async fn requeue(&self, msg: QueuedMessage) {
        let Ok(payload) = serde_json::to_string(&msg) else {
            return;
        };
        let (list, topics, notify) = self.keys(&msg.topic);
        let mut cmd = self.broker.cmd.clone();
        let script = redis::Script::new(REQUEUE_SCRIPT);
        let mut inv = script.key(list);
        inv.key(topics).key(notify).arg(payload).arg(&msg.topic);
        if let Err(e) = inv.invoke_async::<i64>(&mut cmd).await {
            tracing::error!("could not hand back a queue message of {}: {e}", msg.topic);
        }
    }
}

impl QueueStore for RedisQueues {
    fn push(&self, msg: QueuedMessage) -> BoxFuture<'_, Result<usize, PushError>> {
        Box::pin(RedisQueues::push(self, msg))
    }
    fn register(&self, topics: Vec<String>) -> (ConsumerId, Arc<Notify>) {
        RedisQueues::register(self, topics)
    }
    fn unregister(&self, id: ConsumerId) {
        RedisQueues::unregister(self, id)
    }
    fn try_take(&self, id: ConsumerId) -> BoxFuture<'_, Option<QueuedMessage>> {
        Box::pin(RedisQueues::try_take(self, id))
    }
    fn poll_interval(&self) -> Option<Duration> {
        Some(POLL)
    }
    fn requeue(&self, msg: QueuedMessage) -> BoxFuture<'_, ()> {
        Box::pin(RedisQueues::requeue(self, msg))
    }
    fn refresh_depth(&self) -> BoxFuture<'_, ()> {
        Box::pin(RedisQueues::refresh_depth(self))
    }
}

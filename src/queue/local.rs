//! Upstream queues held in this process (single node): `mix.queue.push`
//! from Lua, consumed by backends with `queue.pop` on the WebSocket API.
//!
//! Rules kept here: a topic holds at most `topicSize` messages and there are
//! at most `maxTopics` topics; past either bound a push fails and nothing
//! already queued is lost. Consumers pull: a message leaves its topic only
//! when a consumer is ready to write it, so each message goes to exactly one
//! consumer, ready consumers share the load in turn, and a consumer that goes
//! away hands back what it had not written. This module knows nothing about
//! sockets or Lua.

use super::{BoxFuture, ConsumerId, PushError, QueueLimits, QueueStore, QueuedMessage};
use parking_lot::Mutex;
use prometheus::IntGaugeVec;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

struct Consumer {
    topics: Vec<String>,
    notify: Arc<Notify>,
    /// Where the next scan of `topics` starts (fairness across topics).
    next: usize,
}

#[derive(Default)]
struct Inner {
    topics: HashMap<String, VecDeque<QueuedMessage>>,
    consumers: HashMap<ConsumerId, Consumer>,
    /// Consumers waiting for a message, per topic, first come first served.
    waiting: HashMap<String, VecDeque<ConsumerId>>,
    next_id: ConsumerId,
}

impl Inner {
    /// Wakes the consumer that has waited longest on `topic`.
    fn wake_one(&mut self, topic: &str) {
        let woken = self.waiting.get_mut(topic).and_then(|w| w.pop_front());
        if let Some(c) = woken.and_then(|id| self.consumers.get(&id)) {
            c.notify.notify_one();
        }
    }
}

/// See the module documentation.
pub struct LocalQueues {
    inner: Mutex<Inner>,
    topic_size: usize,
    max_topics: usize,
    depth: IntGaugeVec,
}

impl LocalQueues {
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            topic_size: limits.topic_size,
            max_topics: limits.max_topics,
            depth: limits.depth,
        }
    }

    /// Sets a topic's depth gauge, or removes its label once the topic is
    /// gone (called under the lock, so a concurrent push cannot interleave).
    fn set_depth(&self, topic: &str, n: usize) {
        if n == 0 {
            let _ = self.depth.remove_label_values(&[topic]);
        } else {
            self.depth.with_label_values(&[topic]).set(n as i64);
        }
    }

    /// Queues a message; returns the topic's depth after the push.
    pub fn push(&self, msg: QueuedMessage) -> Result<usize, PushError> {
        if !super::valid_topic(&msg.topic) {
            return Err(PushError::InvalidTopic);
        }
        let mut g = self.inner.lock();
        let exists = g.topics.contains_key(&msg.topic);
        if !exists && g.topics.len() >= self.max_topics {
            return Err(PushError::TooManyTopics(self.max_topics));
        }
        let topic = msg.topic.clone();
        let q = g.topics.entry(topic.clone()).or_default();
        if q.len() >= self.topic_size {
            return Err(PushError::TopicFull(topic, self.topic_size));
        }
        q.push_back(msg);
        let depth = q.len();
        g.wake_one(&topic);
        self.set_depth(&topic, depth);
        Ok(depth)
    }

    /// Registers a consumer of `topics`.
    pub fn register(&self, topics: Vec<String>) -> (ConsumerId, Arc<Notify>) {
        let mut g = self.inner.lock();
        g.next_id += 1;
        let id = g.next_id;
        let notify = Arc::new(Notify::new());
        g.consumers.insert(
            id,
            Consumer {
                topics,
                notify: notify.clone(),
                next: 0,
            },
        );
        (id, notify)
    }

    /// Removes a consumer; what it had taken but not written must be handed
    /// back with [`LocalQueues::requeue`] first.
    pub fn unregister(&self, id: ConsumerId) {
        let mut g = self.inner.lock();
        if let Some(c) = g.consumers.remove(&id) {
            for t in &c.topics {
                if let Some(w) = g.waiting.get_mut(t) {
                    w.retain(|x| *x != id);
                    if w.is_empty() {
                        g.waiting.remove(t);
                    }
                }
            }
        }
    }

    /// Takes the next message for consumer `id`, or registers it as waiting
    /// (its `Notify` fires when a message arrives) and returns `None`.
    pub fn try_take(&self, id: ConsumerId) -> Option<QueuedMessage> {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let c = inner.consumers.get_mut(&id)?;
        let n = c.topics.len();
        for k in 0..n {
            let i = (c.next + k) % n;
            let topic = &c.topics[i];
            let Some(q) = inner.topics.get_mut(topic) else {
                continue;
            };
            if let Some(m) = q.pop_front() {
                c.next = (i + 1) % n;
                let depth = q.len();
                if q.is_empty() {
                    inner.topics.remove(topic);
                }
                self.set_depth(&m.topic, depth);
                return Some(m);
            }
        }
        for t in c.topics.clone() {
            let w = inner.waiting.entry(t).or_default();
            if !w.contains(&id) {
                w.push_back(id);
            }
        }
        None
    }

    /// Puts a message a consumer could not write back at the front of its
    /// topic (even past the bound: it was already accepted once).
    pub fn requeue(&self, msg: QueuedMessage) {
        let mut g = self.inner.lock();
        let topic = msg.topic.clone();
        let q = g.topics.entry(topic.clone()).or_default();
        q.push_front(msg);
        let depth = q.len();
        g.wake_one(&topic);
        self.set_depth(&topic, depth);
    }

    /// Messages waiting in `topic` now.
    pub fn depth(&self, topic: &str) -> usize {
        self.inner.lock().topics.get(topic).map_or(0, |q| q.len())
    }
}

impl QueueStore for LocalQueues {
    fn push(&self, msg: QueuedMessage) -> BoxFuture<'_, Result<usize, PushError>> {
        let r = LocalQueues::push(self, msg);
        Box::pin(async move { r })
    }
    fn register(&self, topics: Vec<String>) -> (ConsumerId, Arc<Notify>) {
        LocalQueues::register(self, topics)
    }
    fn unregister(&self, id: ConsumerId) {
        LocalQueues::unregister(self, id)
    }
    fn try_take(&self, id: ConsumerId) -> BoxFuture<'_, Option<QueuedMessage>> {
        let r = LocalQueues::try_take(self, id);
        Box::pin(async move { r })
    }
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
    fn requeue(&self, msg: QueuedMessage) -> BoxFuture<'_, ()> {
        LocalQueues::requeue(self, msg);
        Box::pin(async {})
    }
    fn refresh_depth(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(size: usize, topics: usize) -> LocalQueues {
        let depth = IntGaugeVec::new(prometheus::Opts::new("d", "d"), &["topic"]).unwrap();
        LocalQueues::new(QueueLimits {
            topic_size: size,
            max_topics: topics,
            depth,
        })
    }

    fn labels(q: &LocalQueues) -> usize {
        use prometheus::core::Collector;
        q.depth.collect().iter().map(|f| f.get_metric().len()).sum()
    }

    fn msg(topic: &str, n: i64) -> QueuedMessage {
        QueuedMessage {
            topic: topic.into(),
            node: 1,
            client_id: "1".into(),
            data: n.into(),
        }
    }

    #[test]
    fn bounds_refuse_without_losing_anything() {
        let q = queues(2, 1);
        assert_eq!(q.push(msg("a", 1)), Ok(1));
        assert_eq!(q.push(msg("a", 2)), Ok(2));
        assert!(matches!(q.push(msg("a", 3)), Err(PushError::TopicFull(..))));
        assert!(matches!(
            q.push(msg("b", 1)),
            Err(PushError::TooManyTopics(1))
        ));
        let (id, _) = q.register(vec!["a".into()]);
        assert_eq!(q.try_take(id).unwrap().data, 1);
        assert_eq!(q.try_take(id).unwrap().data, 2);
        assert!(q.try_take(id).is_none());
    }

    #[test]
    fn each_message_goes_to_one_consumer_and_requeue_hands_back() {
        let q = queues(10, 10);
        let (a, _) = q.register(vec!["t".into()]);
        let (b, _) = q.register(vec!["t".into()]);
        q.push(msg("t", 1)).unwrap();
        q.push(msg("t", 2)).unwrap();
        let first = q.try_take(a).unwrap();
        let second = q.try_take(b).unwrap();
        assert_ne!(first.data, second.data);
        q.requeue(second);
        q.unregister(b);
        assert_eq!(q.try_take(a).unwrap().data, 2);
    }

    #[test]
    fn a_topic_label_goes_with_the_topic() {
        let q = queues(10, 10);
        let (id, _) = q.register(vec!["t".into()]);
        q.push(msg("t", 1)).unwrap();
        assert_eq!(labels(&q), 1);
        let m = q.try_take(id).unwrap();
        assert_eq!(labels(&q), 0, "an emptied topic leaves no depth label");
        q.requeue(m);
        assert_eq!(labels(&q), 1);
    }
}

//! Idempotent publish: what a publish key (`k`) is when it is claimed, and
//! the single-node key store (the memory engine's; the Redis engine's is
//! [`super::redis_idempotency`]).
//!
//! A publish with a key first claims it for its scope (the channel, or the
//! channel list). The first claim wins ([`Claim::First`]): that publish runs
//! and then settles the key with its answer, which is remembered for
//! `engine.idempotencyTtl`. A later claim of the same key gets that answer
//! ([`Claim::Done`]) and delivers nothing. A claim made while the first
//! publish is still running waits for its answer, for a bounded time, and
//! is then told [`Claim::Pending`] (it delivers nothing either).
//!
//! Bound: at most `engine.idempotencyMaxKeys` keys; past it the oldest key
//! is forgotten before its time (a retry of that key would deliver again).
//! A remembered key costs its answer plus about 100 bytes: the store keeps
//! a SHA-1 of the scope and key, never the names themselves.

use super::BoxFuture;
use parking_lot::Mutex;
use sha1::{Digest, Sha1};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What claiming a publish key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Nobody had it: this publish runs and must settle the key.
    First,
    /// The answer (JSON) of the publish that had the key first.
    Done(String),
    /// The publish that had it first is still running past the wait bound.
    Pending,
    /// The key store cannot be reached (its reason).
    Unavailable(String),
}

/// The longest a claim waits for a running publish with the same key on one
/// node (a single-node publish takes microseconds; this covers a stalled one).
pub const PENDING_WAIT: Duration = Duration::from_secs(5);

/// The digest that stands for a key in its scope.
pub fn digest(scope: &str, key: &str) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(scope.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    h.finalize().into()
}

enum State {
    /// Claimed; the answer is sent here when the publish settles it.
    Running(
        watch::Receiver<Option<String>>,
        watch::Sender<Option<String>>,
    ),
    Done(String),
}

struct Entry {
    expires: Instant,
    state: State,
}

#[derive(Default)]
struct Keys {
    map: HashMap<[u8; 20], Entry>,
    /// Keys in the order they (re)started their lifetime; an item whose
    /// instant no longer matches its entry is stale and skipped.
    order: VecDeque<([u8; 20], Instant)>,
}

impl Keys {
    /// Forgets expired keys, and the oldest beyond `max`.
    fn prune(&mut self, now: Instant, max: usize) {
        while let Some(&(k, at)) = self.order.front() {
            let current = self.map.get(&k).map(|e| e.expires);
            let stale = current != Some(at);
            if !stale && at > now && self.map.len() < max {
                break;
            }
            self.order.pop_front();
            if !stale {
                self.map.remove(&k);
            }
        }
    }

    fn insert(&mut self, k: [u8; 20], entry: Entry) {
        self.order.push_back((k, entry.expires));
        self.map.insert(k, entry);
    }
}

/// The memory engine's key store (see the module documentation).
pub struct MemoryKeys {
    max: usize,
    /// How long a claim waits for a running publish's answer.
    wait: Duration,
    keys: Mutex<Keys>,
}

impl MemoryKeys {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            wait: PENDING_WAIT,
            keys: Mutex::new(Keys::default()),
        }
    }

    /// Keys remembered now (running or settled).
    pub fn len(&self) -> usize {
        self.keys.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn claim(&self, scope: &str, key: &str, ttl: Duration) -> BoxFuture<'static, Claim> {
        let k = digest(scope, key);
        let now = Instant::now();
        let mut rx = {
            let mut keys = self.keys.lock();
            keys.prune(now, self.max);
            match keys.map.get(&k) {
                Some(Entry {
                    state: State::Done(a),
                    ..
                }) => {
                    let a = a.clone();
                    return Box::pin(async move { Claim::Done(a) });
                }
                Some(Entry {
                    state: State::Running(rx, _),
                    ..
                }) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    keys.insert(
                        k,
                        Entry {
                            expires: now + ttl,
                            state: State::Running(rx, tx),
                        },
                    );
                    return Box::pin(async { Claim::First });
                }
            }
        };
        let wait = self.wait;
        Box::pin(async move {
            let settled = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
            match settled {
                Ok(Ok(a)) => Claim::Done(a.clone().unwrap_or_default()),
                _ => Claim::Pending,
            }
        })
    }

    pub fn settle(&self, scope: &str, key: &str, answer: String, ttl: Duration) {
        let k = digest(scope, key);
        let now = Instant::now();
        let mut keys = self.keys.lock();
        if let Some(Entry {
            state: State::Running(_, tx),
            ..
        }) = keys.map.get(&k)
        {
            tx.send_replace(Some(answer.clone()));
        }
        keys.insert(
            k,
            Entry {
                expires: now + ttl,
                state: State::Done(answer),
            },
        );
        keys.prune(now, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn first_claim_wins_and_later_ones_get_its_answer() {
        let s = MemoryKeys::new(10);
        assert_eq!(s.claim("news", "k1", TTL).await, Claim::First);
        // A concurrent duplicate waits for the answer.
        let waiting = s.claim("news", "k1", TTL);
        s.settle("news", "k1", "{\"s\":3}".into(), TTL);
        assert_eq!(waiting.await, Claim::Done("{\"s\":3}".into()));
        assert_eq!(
            s.claim("news", "k1", TTL).await,
            Claim::Done("{\"s\":3}".into())
        );
        // Another channel, or another key: its own claim.
        assert_eq!(s.claim("other", "k1", TTL).await, Claim::First);
        assert_eq!(s.claim("news", "k2", TTL).await, Claim::First);
    }

    #[tokio::test]
    async fn a_claim_never_settled_is_pending_after_the_wait() {
        let mut s = MemoryKeys::new(10);
        s.wait = Duration::from_millis(10);
        assert_eq!(s.claim("c", "k", TTL).await, Claim::First);
        assert_eq!(s.claim("c", "k", TTL).await, Claim::Pending);
    }

    #[tokio::test]
    async fn keys_expire_and_the_store_is_bounded() {
        let s = MemoryKeys::new(3);
        let short = Duration::from_millis(1);
        assert_eq!(s.claim("c", "gone", short).await, Claim::First);
        s.settle("c", "gone", "{}".into(), short);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.claim("c", "gone", TTL).await, Claim::First);
        for k in ["a", "b", "c", "d", "e"] {
            assert_eq!(s.claim("c", k, TTL).await, Claim::First);
            s.settle("c", k, "{}".into(), TTL);
        }
        assert!(s.len() <= 3, "{} keys kept", s.len());
        // The newest are the ones kept.
        assert_eq!(s.claim("c", "e", TTL).await, Claim::Done("{}".into()));
    }
}

//! A node's channel interest as the Redis broker keeps it: the changes not
//! yet applied (first local subscriber of a channel, last one gone, a queue
//! topic watched), coalesced per channel so that the latest state wins and
//! the pending set never holds more entries than there are channels, however
//! long Redis is away.
//!
//! Every change also counts one more in `sent`; the subscription link takes
//! everything pending together with that count, applies it, and reports the
//! count as applied. Waiting for "applied >= sent at the time of a subscribe"
//! is how a subscribe knows the whole cluster hears the channel.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// What an interest change is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A mesh channel (`p:ch:<channel>`, registered in `p:chnodes`).
    Channel(String),
    /// A raw Redis channel (queue announcements).
    Raw(String),
}

/// The changes not yet applied: target -> wanted (listen or not).
#[derive(Default)]
struct Pending {
    changes: HashMap<Target, bool>,
    sent: u64,
}

/// See the module documentation.
pub struct PendingInterest {
    pending: Mutex<Pending>,
    /// Wakes the subscription link when something is pending.
    changed: Notify,
    applied: watch::Sender<u64>,
}

impl Default for PendingInterest {
    fn default() -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            changed: Notify::new(),
            applied: watch::Sender::new(0),
        }
    }
}

impl PendingInterest {
    /// Records that this node wants (or no longer wants) `target`; replaces
    /// whatever was pending for it.
    pub fn set(&self, target: Target, want: bool) {
        {
            let mut p = self.pending.lock();
            p.changes.insert(target, want);
            p.sent += 1;
        }
        self.changed.notify_one();
    }

    /// Resolves when something may be pending.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Takes everything pending and the count it brings the log up to.
    pub fn take(&self) -> (u64, Vec<(Target, bool)>) {
        let mut p = self.pending.lock();
        let changes = p.changes.drain().collect();
        (p.sent, changes)
    }

    /// Puts back changes that could not be applied, unless a newer change
    /// of the same target came in meanwhile.
    pub fn restore(&self, changes: Vec<(Target, bool)>) {
        if changes.is_empty() {
            return;
        }
        {
            let mut p = self.pending.lock();
            for (t, want) in changes {
                p.changes.entry(t).or_insert(want);
            }
        }
        self.changed.notify_one();
    }

    /// Changes pending now (bounded by the number of targets).
    pub fn pending_len(&self) -> usize {
        self.pending.lock().changes.len()
    }

    /// The count of changes made so far.
    pub fn last_sent(&self) -> u64 {
        self.pending.lock().sent
    }

    /// Records that Redis applied every change counted up to `seq`.
    pub fn mark_applied(&self, seq: u64) {
        self.applied.send_if_modified(|v| {
            let newer = seq > *v;
            if newer {
                *v = seq;
            }
            newer
        });
    }

    /// Waits until change `seq` is applied, or `limit` passes.
    pub async fn wait_applied(&self, seq: u64, limit: Duration) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|v| *v >= seq)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_coalesce_per_target_and_the_latest_wins() {
        let log = PendingInterest::default();
        for i in 0..100_000u32 {
            log.set(
                Target::Channel(format!("c{}", i % 100)),
                i.is_multiple_of(2),
            );
        }
        assert_eq!(log.pending_len(), 100);
        let (sent, changes) = log.take();
        assert_eq!(sent, 100_000);
        assert_eq!(changes.len(), 100);
        // 99_900..99_999: even i (subscribe) for even channel numbers.
        for (t, want) in changes {
            let Target::Channel(c) = t else { panic!() };
            let n: usize = c[1..].parse().unwrap();
            assert_eq!(want, n.is_multiple_of(2), "{c}");
        }
        assert_eq!(log.pending_len(), 0);
    }

    #[test]
    fn restore_never_overrides_a_newer_change() {
        let log = PendingInterest::default();
        log.set(Target::Channel("a".into()), true);
        let (_, taken) = log.take();
        log.set(Target::Channel("a".into()), false);
        log.restore(taken);
        let (_, now) = log.take();
        assert_eq!(now, vec![(Target::Channel("a".into()), false)]);
    }
}

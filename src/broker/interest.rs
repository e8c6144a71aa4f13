//! A node's channel interest as a numbered log: every change (first local
//! subscriber of a channel, last one gone, a queue topic watched) gets the
//! next number and goes, in order, to the subscription link, which reports
//! the last number Redis has applied. Waiting for "applied >= n" is how a
//! subscribe knows the whole cluster hears the channel.

use parking_lot::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A change of this node's channel interest, applied in order.
#[derive(Debug, Clone)]
pub enum Interest {
    /// First local subscriber of a mesh channel.
    Subscribe(String),
    /// Last local subscriber of a mesh channel left.
    Unsubscribe(String),
    /// Listen to a raw Redis channel (queue announcements).
    Watch(String),
    Unwatch(String),
}

/// Numbered interest changes and how far Redis has applied them.
pub struct InterestLog {
    /// The last number given out, and where changes go (one lock, so the
    /// numbers arrive in order).
    sent: Mutex<(u64, mpsc::UnboundedSender<(u64, Interest)>)>,
    /// Taken once by the subscription link.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<(u64, Interest)>>>,
    applied: watch::Sender<u64>,
}

impl Default for InterestLog {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            sent: Mutex::new((0, tx)),
            receiver: Mutex::new(Some(rx)),
            applied: watch::Sender::new(0),
        }
    }
}

impl InterestLog {
    /// Numbers `change` and queues it for the subscription link.
    pub fn send(&self, change: Interest) {
        let mut g = self.sent.lock();
        g.0 += 1;
        let seq = g.0;
        let _ = g.1.send((seq, change));
    }

    /// The number of the last change sent so far.
    pub fn last_sent(&self) -> u64 {
        self.sent.lock().0
    }

    /// The subscription link's end (once).
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<(u64, Interest)>> {
        self.receiver.lock().take()
    }

    /// Records that Redis applied every change up to `seq`.
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

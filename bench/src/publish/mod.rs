//! Publishing load: what to publish ([`Spec`]), how fast, and what came of
//! it ([`Outcome`]). Three doors: the HTTP API (`http`), connmix's batch
//! publish (`batch`) and a WebSocket API (`wsapi`).
//!
//! "Max sustained rate" is measured with end-to-end flow control, not by
//! firing as fast as the API answers: a publish may go out only while fewer
//! than `window` publishes' worth of deliveries are still unreceived by the
//! clients ([`Gate`]). An API that answers before the frames are written
//! (both do: they queue) would otherwise be pushed into unbounded queueing,
//! which measures the queue, not the server. The window keeps the server
//! saturated but its queues short, so the rate found is one it can keep up.
//!
//! Every payload carries its send time (see `target::payload`).

pub mod batch;
pub mod http;
pub mod wsapi;

use crate::fleet::Fleet;
use std::cell::{Cell, RefCell};
use std::time::Duration;
use tokio::time::Instant;

/// Where publishes go.
#[derive(Debug, Clone)]
pub enum Pick {
    /// Always this channel (broadcast).
    One(String),
    /// `user:<1..=users>`, uniformly at random (personal).
    RandomUser { users: u64 },
}

impl Pick {
    pub fn channel(&self, rng: &mut u64) -> String {
        match self {
            Pick::One(c) => c.clone(),
            Pick::RandomUser { users } => {
                // xorshift64*
                *rng ^= *rng >> 12;
                *rng ^= *rng << 25;
                *rng ^= *rng >> 27;
                let r = rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
                format!("user:{}", 1 + r % users.max(&1))
            }
        }
    }
}

/// What one run publishes.
#[derive(Debug, Clone)]
pub struct Spec {
    pub pick: Pick,
    /// Payload size in bytes.
    pub size: usize,
    /// Deliveries one publish is expected to cause (subscribers per channel).
    pub per_publish: u64,
    /// Publishes whose deliveries may be outstanding at once (max runs).
    pub window: u64,
}

/// What a run did, as the API reported it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub published: u64,
    /// Sum of the answers' delivered counts (`s`).
    pub delivered: u64,
    /// Sum of the answers' failed counts (`f`; connmix only).
    pub failed: u64,
    /// Requests that got an error or no answer.
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.published as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Accumulates an [`Outcome`] from concurrent publishers on one thread.
#[derive(Default)]
pub struct Tally {
    published: Cell<u64>,
    delivered: Cell<u64>,
    failed: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
}

impl Tally {
    pub fn ok(&self, s: u64, f: u64) {
        self.published.set(self.published.get() + 1);
        self.delivered.set(self.delivered.get() + s);
        self.failed.set(self.failed.get() + f);
    }

    pub fn error(&self, e: String) {
        self.errors.set(self.errors.get() + 1);
        self.first_error.borrow_mut().get_or_insert(e);
    }

    pub fn outcome(&self, elapsed: Duration) -> Outcome {
        Outcome {
            published: self.published.get(),
            delivered: self.delivered.get(),
            failed: self.failed.get(),
            errors: self.errors.get(),
            first_error: self.first_error.borrow().clone(),
            elapsed,
        }
    }
}

/// End-to-end flow control; see the module documentation.
pub struct Gate<'a> {
    fleet: &'a Fleet,
    base: u64,
    expected: Cell<u64>,
    limit: u64,
}

impl<'a> Gate<'a> {
    pub fn new(fleet: &'a Fleet, spec: &Spec) -> Self {
        Self {
            fleet,
            base: fleet.received(),
            expected: Cell::new(0),
            limit: spec.window.max(1) * spec.per_publish.max(1),
        }
    }

    fn outstanding(&self) -> u64 {
        let got = self.fleet.received().saturating_sub(self.base);
        self.expected.get().saturating_sub(got)
    }

    /// Waits until one more publish may go out; `false` once `deadline` passed.
    pub async fn wait(&self, deadline: Instant) -> bool {
        loop {
            if Instant::now() >= deadline {
                return false;
            }
            let changed = self.fleet.changed();
            if self.outstanding() < self.limit {
                return true;
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }

    /// Counts a publish about to go out, expecting `n` deliveries.
    pub fn sent(&self, n: u64) {
        self.expected.set(self.expected.get() + n);
    }

    /// Replaces the expectation `predicted` by the API's answer `actual`.
    pub fn settle(&self, predicted: u64, actual: u64) {
        self.expected
            .set((self.expected.get() + actual).saturating_sub(predicted));
    }
}

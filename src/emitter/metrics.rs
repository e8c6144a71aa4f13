//! The emitters' metrics (`connmix_emitter_*` in docs/metrics.md), labelled
//! by the entry's index in `engine.emitters` (`emitter="0"`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Name, help and type of each family; announced on `/metrics` before the
/// first emitter is configured.
pub const FAMILIES: [(&str, &str, &str); 4] = [
    (
        "connmix_emitter_messages_total",
        "Messages read from an emitter's queue, by result: applied, ignored, invalid, unsupported.",
        "counter",
    ),
    (
        "connmix_emitter_sockets_reached_total",
        "Local Socket.IO sockets the emitter's commands reached.",
        "counter",
    ),
    (
        "connmix_emitter_up",
        "1 while the emitter's queue is being read, 0 while it is retried.",
        "gauge",
    ),
    (
        "connmix_emitter_failures_total",
        "Connects to an emitter's queue that failed and links that dropped (each is retried with backoff).",
        "counter",
    ),
];

/// The metric families, registered once per gateway.
#[derive(Clone)]
pub struct EmitterMetrics {
    messages: IntCounterVec,
    sockets: IntCounterVec,
    up: IntGaugeVec,
    failures: IntCounterVec,
}

/// One emitter's resolved handles.
pub struct EmitterStats {
    pub applied: IntCounter,
    /// Read but not for clients (python servers' ack traffic).
    pub ignored: IntCounter,
    pub invalid: IntCounter,
    /// Pickled (python-socketio before 5.14).
    pub unsupported: IntCounter,
    pub sockets: IntCounter,
    pub up: IntGauge,
    pub failures: IntCounter,
}

impl EmitterMetrics {
    pub fn register(registry: &Registry) -> Self {
        let opts = |i: usize| Opts::new(FAMILIES[i].0, FAMILIES[i].1);
        let counter = |i: usize, labels: &[&str]| {
            let c = IntCounterVec::new(opts(i), labels).unwrap();
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let up = IntGaugeVec::new(opts(2), &["emitter"]).unwrap();
        registry
            .register(Box::new(up.clone()))
            .expect("unique name");
        Self {
            messages: counter(0, &["emitter", "result"]),
            sockets: counter(1, &["emitter"]),
            up,
            failures: counter(3, &["emitter"]),
        }
    }

    /// The handles of emitter `index` (its samples appear at once).
    pub fn stats(&self, index: usize) -> EmitterStats {
        let e = index.to_string();
        let m = |r: &str| self.messages.with_label_values(&[e.as_str(), r]);
        let up = self.up.with_label_values(&[e.as_str()]);
        up.set(0);
        EmitterStats {
            applied: m("applied"),
            ignored: m("ignored"),
            invalid: m("invalid"),
            unsupported: m("unsupported"),
            sockets: self.sockets.with_label_values(&[e.as_str()]),
            up,
            failures: self.failures.with_label_values(&[e.as_str()]),
        }
    }
}

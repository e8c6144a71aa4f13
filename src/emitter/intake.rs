//! What happens to one message an emitter's consumer read, whatever queue
//! it came from: decode, hand to the [`SocketIoTarget`], count. A message
//! that cannot be decoded is counted and skipped; the warning about it is
//! rate-limited (one line per [`WARN_EVERY`], saying how many were skipped
//! meanwhile) and a pickled one is reported once per emitter.

use super::command::SocketIoTarget;
use super::decode::{DecodeError, decode};
use super::metrics::EmitterStats;
use crate::config::EmitterKind;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Least time between two warnings about skipped messages of one emitter.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// Bytes of a skipped message quoted in its warning.
const QUOTED: usize = 64;

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; this many local sockets reached.
    Applied(usize),
    Ignored,
    Invalid,
    Unsupported,
}

/// One emitter's message handling (shared by its consumer task).
pub struct Intake {
    /// `engine.emitters[i]`, as logs name it.
    pub name: String,
    kind: EmitterKind,
    target: Arc<dyn SocketIoTarget>,
    pub stats: EmitterStats,
    pickle_reported: AtomicBool,
    /// When the last warning went out, and messages skipped since.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl Intake {
    pub fn new(
        name: String,
        kind: EmitterKind,
        target: Arc<dyn SocketIoTarget>,
        stats: EmitterStats,
    ) -> Self {
        Self {
            name,
            kind,
            target,
            stats,
            pickle_reported: AtomicBool::new(false),
            warned: Mutex::new((None, 0)),
        }
    }

    /// Decodes `payload` and applies it to this node's sockets.
    pub fn handle(&self, payload: &[u8]) -> Outcome {
        match decode(self.kind, payload) {
            Ok(Some(cmd)) => {
                let target = &self.target;
                // A panic in the target is a bug there; it must not end
                // this emitter's consumer.
                let reached =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.apply(cmd)));
                match reached {
                    Ok(n) => {
                        self.stats.applied.inc();
                        self.stats.sockets.inc_by(n as u64);
                        Outcome::Applied(n)
                    }
                    Err(_) => {
                        tracing::error!("{}: applying a message panicked (skipped)", self.name);
                        self.stats.invalid.inc();
                        Outcome::Invalid
                    }
                }
            }
            Ok(None) => {
                self.stats.ignored.inc();
                Outcome::Ignored
            }
            Err(DecodeError::Pickled) => {
                self.stats.unsupported.inc();
                if !self.pickle_reported.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "{}: {} (this and every later pickled message is skipped; reported once)",
                        self.name,
                        DecodeError::Pickled
                    );
                }
                Outcome::Unsupported
            }
            Err(DecodeError::Invalid(why)) => {
                self.stats.invalid.inc();
                self.warn_skipped(&why, payload);
                Outcome::Invalid
            }
        }
    }

    fn warn_skipped(&self, why: &str, payload: &[u8]) {
        let suppressed = {
            let mut w = self.warned.lock();
            if w.0.is_some_and(|at| at.elapsed() < WARN_EVERY) {
                w.1 += 1;
                return;
            }
            let skipped = w.1;
            *w = (Some(Instant::now()), 0);
            skipped
        };
        let shown = &payload[..payload.len().min(QUOTED)];
        tracing::warn!(
            "{}: skipped a message that is not a {} message: {why} ({} bytes: {:?}{}){}",
            self.name,
            self.kind.name(),
            payload.len(),
            String::from_utf8_lossy(shown),
            if payload.len() > QUOTED { "..." } else { "" },
            if suppressed > 0 {
                format!("; {suppressed} more skipped since the last warning")
            } else {
                String::new()
            }
        );
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emitter::command::Command;
    use crate::emitter::metrics::EmitterMetrics;

    /// Reaches two sockets per command; panics on the event `boom`.
    struct Target;

    impl SocketIoTarget for Target {
        fn apply(&self, cmd: Command) -> usize {
            match cmd {
                Command::Emit(e) if e.event == "boom" => panic!("a bug in the target"),
                _ => 2,
            }
        }
    }

    fn intake() -> Intake {
        let metrics = EmitterMetrics::register(&prometheus::Registry::new());
        Intake::new(
            "engine.emitters[0]".into(),
            EmitterKind::PythonSocketio,
            Arc::new(Target),
            metrics.stats(0),
        )
    }

    #[test]
    fn every_message_is_counted_by_what_became_of_it() {
        let i = intake();
        let emit = br#"{"method": "emit", "event": "e", "data": [1], "room": "r"}"#;
        assert_eq!(i.handle(emit), Outcome::Applied(2));
        assert_eq!(i.handle(b"garbage"), Outcome::Invalid);
        assert_eq!(i.handle(b"\x80\x04K\x01."), Outcome::Unsupported);
        assert_eq!(i.handle(b"\x80\x04K\x02."), Outcome::Unsupported);
        assert_eq!(
            i.handle(br#"{"method": "callback", "id": 1, "args": []}"#),
            Outcome::Ignored
        );
        assert_eq!(i.handle(emit), Outcome::Applied(2));
        let s = &i.stats;
        assert_eq!(
            (
                s.applied.get(),
                s.invalid.get(),
                s.unsupported.get(),
                s.ignored.get()
            ),
            (2, 1, 2, 1)
        );
        assert_eq!(s.sockets.get(), 4);
        assert!(i.pickle_reported.load(Ordering::Relaxed));
    }

    #[test]
    fn a_panicking_target_skips_that_message_only() {
        let i = intake();
        let boom = br#"{"method": "emit", "event": "boom", "data": []}"#;
        assert_eq!(i.handle(boom), Outcome::Invalid);
        let fine = br#"{"method": "emit", "event": "fine", "data": []}"#;
        assert_eq!(i.handle(fine), Outcome::Applied(2));
    }

    #[test]
    fn skipped_messages_are_warned_about_at_most_every_interval() {
        let i = intake();
        for _ in 0..5 {
            i.handle(b"garbage");
        }
        let (at, suppressed) = *i.warned.lock();
        assert!(at.is_some(), "the first one is warned about");
        assert_eq!(suppressed, 4, "the next ones wait for the interval");
        assert_eq!(i.stats.invalid.get(), 5, "but all are counted");
    }
}

//! The wait between two attempts to reach an emitter's queue: doubling from
//! [`MIN`] to [`MAX`], with jitter so nodes restarted together do not retry
//! in step.

use super::intake::Intake;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const MIN: Duration = Duration::from_millis(200);
pub const MAX: Duration = Duration::from_secs(15);

pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Self { next: MIN }
    }

    /// After a success: the next failure waits [`MIN`] again.
    pub fn reset(&mut self) {
        self.next = MIN;
    }

    /// The wait before the next attempt (then doubled).
    pub fn step(&mut self) -> Duration {
        let jitter = rand::random_range(0..=self.next.as_millis() as u64 / 4);
        let wait = self.next + Duration::from_millis(jitter);
        self.next = (self.next * 2).min(MAX);
        wait
    }

    /// After a failure to reach or keep `intake`'s queue: counts it, marks
    /// the emitter down, logs `why` and waits; `false` when `stop` fired.
    pub async fn retry(&mut self, intake: &Intake, why: &str, stop: &CancellationToken) -> bool {
        intake.stats.up.set(0);
        intake.stats.failures.inc();
        tracing::warn!("{}: {why}; retrying", intake.name);
        self.pause(stop).await
    }

    /// Waits [`Backoff::step`]; `false` when `stop` fired meanwhile.
    pub async fn pause(&mut self, stop: &CancellationToken) -> bool {
        let wait = self.step();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

impl Backoff {
    /// Runs `attempt` (each bounded by `limit`) until it links `intake`'s
    /// queue, retrying after each failure; then marks the emitter up and
    /// resets the backoff. `None` when `stop` fired first.
    pub async fn link<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
        &mut self,
        intake: &Intake,
        shown: &str,
        limit: Duration,
        stop: &CancellationToken,
        mut attempt: impl FnMut() -> F,
    ) -> Option<T> {
        loop {
            let why = match tokio::time::timeout(limit, attempt()).await {
                Ok(Ok(linked)) => {
                    self.reset();
                    intake.stats.up.set(1);
                    return Some(linked);
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {limit:?}"),
            };
            if !self
                .retry(intake, &format!("cannot read {shown}: {why}"), stop)
                .await
            {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_bound_and_resets() {
        let mut b = Backoff::new();
        let first = b.step();
        assert!(first >= MIN && first <= MIN + MIN / 4, "{first:?}");
        for _ in 0..20 {
            b.step();
        }
        let capped = b.step();
        assert!(capped >= MAX && capped <= MAX + MAX / 4, "{capped:?}");
        b.reset();
        assert!(b.step() < MIN * 2);
    }
}

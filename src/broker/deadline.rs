//! Deadlines on Redis's clock, so that a request this node has given up on
//! is not carried out later.
//!
//! When Redis stalls (a SIGSTOP, a long fork, a swapped-out process), the
//! commands a node sent keep waiting in the socket and run once it resumes,
//! seconds after the node answered the caller "timed out". To keep that
//! answer true, every publish, send and call carries a deadline:
//! - the receiving node drops it if it arrives after the deadline
//!   ([`RedisClock::passed`]), which covers a message Redis ran late as well
//!   as one it accepted just before stalling and forwarded just after;
//! - for a send or call, the script that hands it to Redis also refuses it
//!   once Redis's `TIME` is past the deadline ([`with_deadline`]), so the
//!   sender can say "not delivered" at once. A publish skips that check:
//!   it runs on every cross-node publish, where `TIME` cost more than the
//!   rest of the publish script, and the receivers' check alone keeps its
//!   answer true (a node that drops it does not report, so the publisher
//!   names it in `missing` or has already answered with an error).
//!
//! The deadline sits at three quarters of the caller's timeout, so the
//! last quarter (at least [`MIN_MARGIN`] when the timeout allows) absorbs
//! the error of each node's clock-offset estimate.
//!
//! Each node estimates the offset between its clock and Redis's at every
//! heartbeat (`TIME`, corrected by half the round trip).

use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A Lua script that runs `body` only if Redis's clock has not passed the
/// deadline in `ARGV[2]` (unix ms, 0 = none), and returns `expired` (a Lua
/// expression whose first number is [`EXPIRED`]) otherwise.
pub fn with_deadline(body: &str, expired: &str) -> String {
    format!(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[2])
if deadline > 0 and now > deadline then return {expired} end
{body}
"#
    )
}

/// What a script returns for a request whose deadline had passed.
pub const EXPIRED: i64 = -1;

/// The least part of a timeout kept between the deadline and the answer.
const MIN_MARGIN: Duration = Duration::from_millis(250);

/// Samples of the offset with a longer round trip than this are ignored
/// (after the first): their error would be too large.
const MAX_SAMPLE_RTT: Duration = Duration::from_millis(200);

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// This node's estimate of Redis's clock.
#[derive(Default)]
pub struct RedisClock {
    /// Redis's clock minus this node's, in milliseconds.
    offset_ms: AtomicI64,
    /// Whether a sample was taken yet.
    sampled: std::sync::atomic::AtomicBool,
}

impl RedisClock {
    /// Redis's clock now, as far as this node can tell (unix ms).
    pub fn now_ms(&self) -> i64 {
        unix_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// The deadline (on Redis's clock) of a request that the caller gives
    /// up on after `timeout`.
    pub fn deadline(&self, timeout: Duration) -> u64 {
        let margin = (timeout / 4).max(MIN_MARGIN.min(timeout / 2));
        (self.now_ms() + (timeout - margin).as_millis() as i64).max(1) as u64
    }

    /// Whether a request with `deadline` (0 = none) came too late to run.
    pub fn passed(&self, deadline: u64) -> bool {
        deadline != 0 && self.now_ms() > deadline as i64
    }

    /// Takes a sample of the offset (one `TIME` round trip).
    pub async fn measure(&self, cmd: &mut ConnectionManager) -> redis::RedisResult<()> {
        let before = Instant::now();
        let local = unix_ms();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(cmd).await?;
        let rtt = before.elapsed();
        let sampled = self.sampled.load(Ordering::Relaxed);
        if sampled && rtt > MAX_SAMPLE_RTT {
            return Ok(());
        }
        let remote = secs * 1000 + micros / 1000;
        let offset = remote - (local + rtt.as_millis() as i64 / 2);
        self.offset_ms.store(offset, Ordering::Relaxed);
        self.sampled.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_leaves_a_margin_before_the_timeout() {
        let c = RedisClock::default();
        let now = c.now_ms();
        let d = c.deadline(Duration::from_millis(2000)) as i64 - now;
        assert!((1490..=1510).contains(&d), "{d}");
        // Short timeouts keep half of it as the margin.
        let d = c.deadline(Duration::from_millis(100)) as i64 - now;
        assert!((40..=60).contains(&d), "{d}");
        assert!(!c.passed(0));
        assert!(c.passed((now - 10) as u64));
        assert!(!c.passed((now + 60_000) as u64));
    }
}

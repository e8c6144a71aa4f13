//! Idempotent publish keys in a cluster (see [`super::idempotency`]): one
//! Redis key per claimed publish key, so a retry reaching any node finds it.
//!
//! - Key `<prefix>:idem:<hex SHA-1 of scope and key>`.
//! - Claim: one script, `SET key "?" NX PX <running>`, else the key's value:
//!   nothing means this node won ([`Claim::First`]); `"?"` means the first
//!   publish is still running, so the claim asks again (every
//!   [`POLL`]) until the answer is there or [`Self::pending_wait`] passed
//!   ([`Claim::Pending`]); `"=<json>"` is the first publish's answer.
//! - Settle: `SET key "=<json>" PX <engine.idempotencyTtl>`.
//!
//! The running marker lives `publishTimeoutMs` + [`RUNNING_MARGIN`]: a
//! node that dies between claim and settle holds the key that long and no
//! longer (a retry after that publishes).

use super::idempotency::{Claim, digest};
use super::redis::RedisBroker;
use std::sync::LazyLock;
use std::time::Duration;

/// Claims `KEYS[1]` for `ARGV[1]` ms, or returns what it holds.
static CLAIM_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('SET', KEYS[1], '?', 'NX', 'PX', ARGV[1]) then return false end
return redis.call('GET', KEYS[1])
"#,
    )
});

/// How long a claim's running marker outlives the publish timeout.
pub const RUNNING_MARGIN: Duration = Duration::from_secs(10);

/// Interval at which a waiting claim asks again.
pub const POLL: Duration = Duration::from_millis(20);

impl RedisBroker {
    fn idem_key(&self, scope: &str, key: &str) -> String {
        format!(
            "{}:idem:{}",
            self.names.prefix,
            hex::encode(digest(scope, key))
        )
    }

    /// The longest a claim waits for the first publish's answer.
    fn pending_wait(&self) -> Duration {
        Duration::from_millis(self.cfg.publish_timeout_ms) + Duration::from_secs(1)
    }

    pub async fn claim_key(&self, scope: &str, key: &str) -> Claim {
        if let Some(e) = self.down() {
            return Claim::Unavailable(e.to_string());
        }
        let running = Duration::from_millis(self.cfg.publish_timeout_ms) + RUNNING_MARGIN;
        let k = self.idem_key(scope, key);
        let give_up = tokio::time::Instant::now() + self.pending_wait();
        loop {
            let mut cmd = self.cmd.clone();
            let held: Option<Vec<u8>> = match CLAIM_SCRIPT
                .key(&k)
                .arg(running.as_millis() as u64)
                .invoke_async(&mut cmd)
                .await
            {
                Ok(v) => v,
                Err(e) => return Claim::Unavailable(e.to_string()),
            };
            match held.as_deref() {
                None => return Claim::First,
                Some([b'=', answer @ ..]) => {
                    return Claim::Done(String::from_utf8_lossy(answer).into_owned());
                }
                Some(_) if tokio::time::Instant::now() + POLL > give_up => return Claim::Pending,
                Some(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    pub async fn settle_key(&self, scope: &str, key: &str, answer: String, ttl: Duration) {
        let mut cmd = self.cmd.clone();
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.idem_key(scope, key))
            .arg(format!("={answer}"))
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut cmd)
            .await;
        if let Err(e) = r {
            // The running marker expires on its own; a retry after that
            // publishes again.
            tracing::warn!("could not record an idempotent publish's answer: {e}");
        }
    }
}

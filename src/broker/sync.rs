//! "My subscriptions are in place": the marker each node keeps in Redis so
//! that a publisher can tell a node with no subscribers for a channel from a
//! node whose subscriptions are missing.
//!
//! Keys (prefix `p`):
//! - `p:epoch`: a random token naming the Redis data set; created by the
//!   first node that finds it missing, so it changes whenever Redis
//!   restarts empty (or is flushed).
//! - `p:synced`: the nodes that re-subscribed every channel of theirs and
//!   registered it in `p:chnodes:*` since `p:epoch` was created.
//!
//! A node reads the epoch before it opens its subscription link, subscribes
//! and registers everything, and then adds itself to `p:synced` only if
//! the epoch is unchanged (one script): so the marker never outlives the
//! subscriptions it vouches for. The publish script returns the live nodes
//! not in `p:synced`, and the publisher lists them in `missing` unless they
//! reported. A node that finds itself missing from `p:synced` while its
//! link is up (another node forgot it after its key expired during a
//! stall) re-registers on its link (see [`SyncState::resync_wanted`]).

use super::redis::RedisBroker;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Returns the epoch, creating it if Redis has none.
const EPOCH_SCRIPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"#;

/// Marks node `ARGV[2]` synced if the epoch is still `ARGV[1]`.
const MARK_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"#;

/// Test-only pause point: while the file named by this variable exists, a
/// node's subscription link waits after connecting and before it
/// re-subscribes (so tests can hold a node in the "not yet re-subscribed"
/// state deterministically).
pub const HOLD_ENV: &str = "CONNMIX_TEST_HOLD_RESUBSCRIBE";

/// A node's side of the marker.
#[derive(Default)]
pub struct SyncState {
    resync: Notify,
    /// The epoch the heartbeat last read (empty before the first beat).
    seen_epoch: parking_lot::Mutex<String>,
    /// Nodes counted as live only because Redis may have lost or expired
    /// their entries: they have not announced themselves again.
    held: parking_lot::Mutex<Vec<u32>>,
}

impl SyncState {
    /// Records the nodes the heartbeat keeps without their announcement.
    pub fn set_held(&self, nodes: Vec<u32>) {
        *self.held.lock() = nodes;
    }

    /// See [`SyncState::set_held`]: a publish names them in `missing`.
    pub fn held(&self) -> Vec<u32> {
        self.held.lock().clone()
    }

    /// Records the epoch read by the heartbeat.
    pub fn set_seen_epoch(&self, epoch: &str) {
        *self.seen_epoch.lock() = epoch.to_string();
    }

    /// The epoch of the data set the heartbeat last saw: while Redis still
    /// has it, a node missing from `p:nodes` has left (or was forgotten),
    /// rather than not yet announced itself again after a restart.
    pub fn seen_epoch(&self) -> String {
        self.seen_epoch.lock().clone()
    }

    /// Asks the subscription link to subscribe and register everything again.
    pub fn request_resync(&self) {
        self.resync.notify_one();
    }

    /// Resolves when a resync was asked for.
    pub async fn resync_wanted(&self) {
        self.resync.notified().await
    }
}

pub fn epoch_key(prefix: &str) -> String {
    format!("{prefix}:epoch")
}

pub fn synced_key(prefix: &str) -> String {
    format!("{prefix}:synced")
}

/// The current epoch (created if missing). Read before the subscription
/// link connects.
pub async fn epoch(b: &Arc<RedisBroker>) -> redis::RedisResult<String> {
    let token = format!("{:016x}", rand::random::<u64>());
    let mut cmd = b.cmd.clone();
    redis::Script::new(EPOCH_SCRIPT)
        .key(epoch_key(&b.names.prefix))
        .arg(token)
        .invoke_async(&mut cmd)
        .await
}

/// Marks this node synced in `epoch`; an error if Redis's data set changed
/// since (the caller reconnects and starts over).
pub async fn mark_synced(b: &Arc<RedisBroker>, epoch: &str) -> redis::RedisResult<()> {
    let mut cmd = b.cmd.clone();
    let marked: i64 = redis::Script::new(MARK_SCRIPT)
        .key(epoch_key(&b.names.prefix))
        .key(synced_key(&b.names.prefix))
        .arg(epoch)
        .arg(b.node)
        .invoke_async(&mut cmd)
        .await?;
    if marked == 1 {
        Ok(())
    } else {
        Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "Redis lost its data while this node re-subscribed",
        )))
    }
}

/// Removes this node's marker after its link dropped (best effort: other
/// nodes must not count on subscriptions that the link took with it).
pub async fn unmark(b: &Arc<RedisBroker>) {
    let mut cmd = b.cmd.clone();
    let mut srem = redis::cmd("SREM");
    srem.arg(synced_key(&b.names.prefix)).arg(b.node);
    let _ = tokio::time::timeout(Duration::from_secs(1), srem.query_async::<i64>(&mut cmd)).await;
}

/// The test-only pause point of [`HOLD_ENV`].
pub async fn test_hold() {
    let Some(path) = std::env::var_os(HOLD_ENV) else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    if path.exists() {
        tracing::info!("broker: holding re-subscription while {path:?} exists (test)");
    }
    while path.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

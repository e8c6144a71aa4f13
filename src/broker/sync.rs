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
//! - `p:syncgen`: a random token replaced by every change to `p:nodes` or
//!   `p:synced` (and set when `p:epoch` is created), so a publish can tell
//!   with one `GET` that both sets are still what this node last read
//!   ([`SyncView`]) instead of reading them again. A token is never reused,
//!   and Redis losing its data loses the key, so a match also means the same
//!   data set (the same epoch).
//!
//! A node reads the epoch before it opens its subscription link, subscribes
//! and registers everything, and then adds itself to `p:synced` only if
//! the epoch is unchanged (one script): so the marker never outlives the
//! subscriptions it vouches for. The publish script compares `p:syncgen`
//! with the token of this node's [`SyncView`] and returns both sets only
//! when it differs; the publisher lists the nodes not in `p:synced` in
//! `missing` unless they reported. A node that finds itself missing from `p:synced` while its
//! link is up (another node forgot it after its key expired during a
//! stall) re-registers on its link (see [`SyncState::resync_wanted`]).

use super::redis::RedisBroker;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Returns the epoch, creating it (and a first generation `ARGV[2]`) if
/// Redis has none.
const EPOCH_SCRIPT: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then redis.call('SET', KEYS[2], ARGV[2]) end
return redis.call('GET', KEYS[1])
"#;

/// Marks node `ARGV[2]` synced if the epoch is still `ARGV[1]`.
const MARK_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('SADD', KEYS[2], ARGV[2]) == 1 then redis.call('SET', KEYS[3], ARGV[3]) end
return 1
"#;

/// Removes node `ARGV[1]`'s marker.
const UNMARK_SCRIPT: &str = r#"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"#;

/// Adds node `ARGV[1]` to `p:nodes` (a heartbeat), with a new generation
/// `ARGV[2]` if it was not there; creates the generation if it is missing.
pub const REGISTER_SCRIPT: &str = r#"
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('SET', KEYS[2], ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[2], 'NX')
end
return 1
"#;

/// Test-only pause point: while the file named by this variable exists, a
/// node's subscription link waits after connecting and before it
/// re-subscribes (so tests can hold a node in the "not yet re-subscribed"
/// state deterministically).
pub const HOLD_ENV: &str = "CONNMIX_TEST_HOLD_RESUBSCRIBE";

/// What a publish last read of `p:nodes` and `p:synced`, valid while
/// `p:syncgen` still holds `generation`.
#[derive(Default)]
pub struct SyncView {
    /// `p:syncgen` when read (empty: none yet; never matches).
    pub generation: String,
    /// `p:epoch` when read.
    pub epoch: String,
    /// Members of `p:nodes` not in `p:synced`.
    pub unsynced: Vec<u32>,
    /// Members of `p:synced`.
    pub synced: Vec<u32>,
}

/// A node's side of the marker.
#[derive(Default)]
pub struct SyncState {
    resync: Notify,
    /// The epoch the heartbeat last read (empty before the first beat).
    seen_epoch: parking_lot::Mutex<String>,
    /// Nodes counted as live only because Redis may have lost or expired
    /// their entries: they have not announced themselves again.
    held: parking_lot::Mutex<Vec<u32>>,
    /// The last [`SyncView`] a publish read.
    view: parking_lot::RwLock<Arc<SyncView>>,
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

    /// Whether the heartbeat saw no nodes held (the usual case).
    pub fn none_held(&self) -> bool {
        self.held.lock().is_empty()
    }

    /// Records the epoch read by the heartbeat.
    pub fn set_seen_epoch(&self, epoch: &str) {
        *self.seen_epoch.lock() = epoch.to_string();
    }

    /// Whether `epoch` is the data set the heartbeat last saw: while Redis
    /// still has it, a node missing from `p:nodes` has left (or was
    /// forgotten), rather than not yet announced itself again after a
    /// restart.
    pub fn is_seen_epoch(&self, epoch: &str) -> bool {
        *self.seen_epoch.lock() == epoch
    }

    /// The last view of the sets a publish read.
    pub fn view(&self) -> Arc<SyncView> {
        self.view.read().clone()
    }

    /// Keeps a view a publish just read.
    pub fn set_view(&self, view: Arc<SyncView>) {
        *self.view.write() = view;
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

pub fn generation_key(prefix: &str) -> String {
    format!("{prefix}:syncgen")
}

/// A fresh `p:syncgen` token.
pub fn new_generation() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// The current epoch (created if missing). Read before the subscription
/// link connects.
pub async fn epoch(b: &Arc<RedisBroker>) -> redis::RedisResult<String> {
    let token = format!("{:016x}", rand::random::<u64>());
    let mut cmd = b.cmd.clone();
    redis::Script::new(EPOCH_SCRIPT)
        .key(epoch_key(&b.names.prefix))
        .key(generation_key(&b.names.prefix))
        .arg(token)
        .arg(new_generation())
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
        .key(generation_key(&b.names.prefix))
        .arg(epoch)
        .arg(b.node)
        .arg(new_generation())
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
    let script = redis::Script::new(UNMARK_SCRIPT);
    let mut unmark = script.key(synced_key(&b.names.prefix));
    unmark
        .key(generation_key(&b.names.prefix))
        .arg(b.node)
        .arg(new_generation());
    let _ =
        tokio::time::timeout(Duration::from_secs(1), unmark.invoke_async::<i64>(&mut cmd)).await;
}

/// The test-only pause point of [`HOLD_ENV`].
pub async fn test_hold() {
    hold_while_file(HOLD_ENV, "re-subscription").await;
}

/// A test-only pause point: while the file named by the environment
/// variable `env` exists, waits (holding `what`).
pub async fn hold_while_file(env: &str, what: &str) {
    let Some(path) = std::env::var_os(env) else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    if path.exists() {
        tracing::info!("broker: holding {what} while {path:?} exists (test)");
    }
    while path.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

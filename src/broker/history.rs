//! Channel history behind one seam: the publications of the channels that
//! `engine.history` names, each with its place in the channel ([`Position`]:
//! an offset that grows by one per publish, and the epoch of the stream the
//! offset counts in).
//!
//! A [`History`] engine appends and delivers in one step, so that offsets
//! are gap-free and every node delivers a channel's publications in offset
//! order: [`super::memory_history::MemoryHistory`] on one node (appends and
//! fans out under the channel's lock), [`super::redis_history`] in a
//! cluster (one script appends to a Redis stream and publishes to every
//! node, this one included, which delivers what Redis hands it in order).
//! [`super::Broker::history`] gives the engine that goes with the broker.
//!
//! Reads answer the publications after a position, oldest first, and the
//! channel's current top position. A position of another epoch (the stream
//! was lost: a Redis restarted empty, a channel idle past `metaTtl`) is
//! [`HistoryError::UnknownEpoch`]; one past the top is
//! [`HistoryError::InvalidSince`]; `complete` says whether every
//! publication after it is still kept.

use super::BoxFuture;
use crate::config::HistoryConfig;
pub use crate::publication::{Position, Publication};
use std::sync::Arc;

/// What a publish to a channel with history did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Appended {
    /// Its place in the channel's history (`None` when it could not be
    /// appended: then nobody got it, see `error`).
    pub position: Option<Position>,
    /// Connections reached and not reached, on every node that reported.
    pub success: u64,
    pub fail: u64,
    /// Nodes that should have reported and did not before the deadline.
    pub missing: Vec<String>,
    /// Why it could not be appended or other nodes not reached.
    pub error: Option<String>,
}

/// A read of a channel's history.
#[derive(Debug, Clone)]
pub struct Page {
    /// The publications after `since` (or from the oldest kept), oldest
    /// first, at most `limit`.
    pub publications: Vec<Arc<Publication>>,
    /// The channel's last position now (offset 0: nothing published yet
    /// in this epoch).
    pub top: Position,
    /// Every publication after `since` is still kept (the first of
    /// `publications` follows `since` directly). Always true without `since`.
    pub complete: bool,
}

/// Why a history read failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistoryError {
    #[error("channel {0:?} keeps no history (engine.history)")]
    NoHistory(String),
    #[error(
        "since.epoch {given:?} is not the channel's epoch {current:?}: its history was lost or restarted"
    )]
    UnknownEpoch { given: String, current: String },
    #[error("since.offset {given} is past the channel's last offset {top}")]
    InvalidSince { given: u64, top: u64 },
    #[error("history unavailable: {0}")]
    Unavailable(String),
}

/// Delivers a publication to this node's subscribers; `(success, fail)`.
pub type Deliver<'a> = &'a (dyn Fn(&Arc<Publication>) -> (u64, u64) + Sync);

/// See the module documentation.
pub trait History: Send + Sync {
    /// Appends `p` to `policy`'s channel `p.channel` and delivers it to
    /// every subscriber of every node, in offset order. On one node
    /// `deliver` reaches the local subscribers; a cluster engine delivers
    /// through the broker instead.
    fn publish<'a>(
        &'a self,
        p: Publication,
        policy: &'a HistoryConfig,
        deliver: Deliver<'a>,
    ) -> BoxFuture<'a, Appended>;

    /// The publications of `ch` after `since` (all kept when `None`), at
    /// most `limit`, and the top position.
    fn read<'a>(
        &'a self,
        ch: &'a str,
        since: Option<Position>,
        limit: usize,
        policy: &'a HistoryConfig,
    ) -> BoxFuture<'a, Result<Page, HistoryError>>;
}

/// Checks `since` against the current `top` (the rules of the module
/// documentation); shared by the engines.
pub fn check_since(since: &Position, top: &Position) -> Result<(), HistoryError> {
    if since.epoch != top.epoch {
        return Err(HistoryError::UnknownEpoch {
            given: since.epoch.to_string(),
            current: top.epoch.to_string(),
        });
    }
    if since.offset > top.offset {
        return Err(HistoryError::InvalidSince {
            given: since.offset,
            top: top.offset,
        });
    }
    Ok(())
}

/// A fresh epoch: 8 random bytes, hex.
pub fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

//! PROVISIONAL copy of the lead's `Publication` seam (SEAM.md); replaced by
//! main's file at merge.

use std::sync::Arc;
use tungstenite::Message;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: Arc<str>,
    pub frame: Message,
    pub event: Option<Arc<str>>,
    pub position: Option<Position>,
}

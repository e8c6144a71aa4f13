//! One publish as its subscribers receive it: the raw frame, and what other
//! protocols and features need besides it.
//!
//! A publish is built once at the door (HTTP API, WebSocket API, Lua, another
//! node) and shared by every subscriber through an `Arc`: raw WebSocket
//! clients get [`Publication::frame`] byte for byte; a protocol that wraps
//! messages (Socket.IO events) uses [`Publication::event`]; channels that
//! keep history carry their [`Position`].
//!
//! A leaf module: it imports nothing of the crate.

use std::sync::{Arc, OnceLock};
use tungstenite::Message;

/// A publication's place in its channel's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Gap-free, increasing per channel.
    pub offset: u64,
    /// Changes when the channel's history was lost (offsets restart).
    pub epoch: Arc<str>,
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// The channel it was published to.
    pub channel: Arc<str>,
    /// What raw WebSocket subscribers receive (the publish's `d` and `t`).
    pub frame: Message,
    /// The Socket.IO event name (the publish's `e`); `None` means `message`.
    pub event: Option<Arc<str>>,
    /// Its place in the channel's history, when the channel keeps one.
    pub position: Option<Position>,
    /// What Socket.IO subscribers are sent (the event packet and its binary
    /// attachments), encoded by the first one that needs it and shared by
    /// the rest: a broadcast is encoded once, not once per client.
    pub socketio: OnceLock<Arc<[Message]>>,
}

impl Publication {
    /// A plain publication of `frame` to `channel`.
    pub fn new(channel: &str, frame: Message) -> Self {
        Self {
            channel: channel.into(),
            frame,
            event: None,
            position: None,
            socketio: OnceLock::new(),
        }
    }

    /// Payload bytes, as the outbox counts them.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }
}

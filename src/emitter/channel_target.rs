//! The [`SocketIoTarget`] for raw WebSocket clients: an emit reaches the
//! local subscribers of the channels its rooms name (a room `R` of namespace
//! `/` is the channel `R`, of namespace `N` the channel `N#R`), each once
//! however many of the rooms it is in, less the subscribers of the `except`
//! rooms, as one text frame `{"event": E, "args": [...]}` (binary arguments
//! stay placeholders; attachments are not sent). An emit without rooms
//! (everyone in the namespace) and the room commands (enter/leave/close,
//! disconnect), which name Socket.IO sids, reach no raw client.
//!
//! Local only: every node reads the emitter's queue itself.

use super::command::{Command, Emit, SocketIoTarget};
use crate::hub::Hub;
use crate::outbox::Outbound;
use std::collections::HashSet;
use std::sync::Arc;
use tungstenite::Message;

pub struct ChannelTarget {
    hub: Arc<Hub>,
}

impl ChannelTarget {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

/// The channel of room `room` of `namespace`.
pub fn channel_of(namespace: &str, room: &str) -> String {
    if namespace == "/" {
        room.to_string()
    } else {
        format!("{namespace}#{room}")
    }
}

impl SocketIoTarget for ChannelTarget {
    fn apply(&self, cmd: Command) -> usize {
        let Command::Emit(e) = cmd else { return 0 };
        self.emit(&e)
    }
}

impl ChannelTarget {
    fn emit(&self, e: &Emit) -> usize {
        let ids = |rooms: &[String]| -> HashSet<_> {
            rooms
                .iter()
                .flat_map(|r| self.hub.subscribers(&channel_of(&e.namespace, r)))
                .map(|c| c.id)
                .collect()
        };
        let skip = ids(&e.except_rooms);
        let text = serde_json::json!({"event": e.event, "args": e.args}).to_string();
        let msg = Message::text(text);
        ids(&e.rooms)
            .into_iter()
            .filter(|id| !skip.contains(id))
            .filter(|id| self.hub.send(*id, Outbound::Message(msg.clone())).is_ok())
            .count()
    }
}

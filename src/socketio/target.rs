//! This node's Socket.IO sockets as backends address them: by namespace,
//! by room, by sid. The emitter consumers (`engine.emitters`) hand their
//! decoded commands here (`SocketIoTarget`); delivery is to local sockets
//! only, since every node reads the emitter queue itself.
//!
//! Semantics (python-socketio's): a room `R` of namespace `/` is the
//! channel `R`, of namespace `N` the channel `N#R` (so `POST
//! /v1/mesh/publish` reaches the same sockets); a socket's sid is itself a
//! room; an emit without rooms reaches every socket of the namespace; each
//! socket is reached once however many of the rooms it is in, less those in
//! any `except` room. Raw WebSocket subscribers of a room's channel get the
//! emit as `{"event": E, "args": [...]}`.
//!
//! An emit is encoded once ([`Publication`] with its Socket.IO packets
//! filled in) and shared by every socket it reaches.

use super::Command as SessionCommand;
use super::socketio_packet as sio;
use crate::client_id::ClientId;
use crate::hub::Client;
use crate::mesh::Mesh;
use crate::outbox::Outbound;
use crate::publication::Publication;
use bytes::Bytes;
use dashmap::DashMap;
use serde_json::Value as Json;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tungstenite::Message;

/// One connected Socket.IO socket (a session in one namespace).
pub struct SocketRef {
    pub client: Arc<Client>,
    pub namespace: Arc<str>,
    /// Its session's request queue (for a server-side disconnect).
    pub session: mpsc::Sender<SessionCommand>,
}

/// See the module documentation.
pub struct SocketIoRooms {
    mesh: Arc<Mesh>,
    /// Socket.IO sid -> socket, for this node's sockets.
    sockets: DashMap<Arc<str>, SocketRef>,
}

/// The channel of room `room` of `namespace`.
pub fn channel_of(namespace: &str, room: &str) -> String {
    if namespace == "/" {
        room.to_string()
    } else {
        format!("{namespace}#{room}")
    }
}

impl SocketIoRooms {
    pub fn new(mesh: Arc<Mesh>) -> Self {
        Self {
            mesh,
            sockets: DashMap::new(),
        }
    }

    /// A socket joined its namespace.
    pub fn add(&self, sid: Arc<str>, socket: SocketRef) {
        self.sockets.insert(sid, socket);
    }

    /// A socket left its namespace (or its session ended).
    pub fn remove(&self, sid: &str) {
        self.sockets.remove(sid);
    }

    /// Sockets connected on this node now.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The clients `rooms` of `namespace` name (sids and channels).
    fn members(&self, namespace: &str, rooms: &[String]) -> Vec<Arc<Client>> {
        let mut out = Vec::new();
        for room in rooms {
            match self.sockets.get(room.as_str()) {
                Some(s) if &*s.namespace == namespace => out.push(s.client.clone()),
                _ => out.extend(self.mesh.hub.subscribers(&channel_of(namespace, room))),
            }
        }
        out
    }

    /// Emits `event` with `args` (placeholders resolved against
    /// `attachments`) to the sockets of `namespace` in `rooms` (all of them
    /// when empty), less those in `except`; returns the sockets reached.
    pub fn emit(
        &self,
        namespace: &str,
        event: &str,
        args: &[Json],
        attachments: Vec<Bytes>,
        rooms: &[String],
        except: &[String],
    ) -> usize {
        let skip: HashSet<ClientId> = self
            .members(namespace, except)
            .iter()
            .map(|c| c.id)
            .collect();
        let targets = if rooms.is_empty() {
            self.sockets
                .iter()
                .filter(|s| &*s.namespace == namespace)
                .map(|s| s.client.clone())
                .collect()
        } else {
            self.members(namespace, rooms)
        };
        let text = sio::event(namespace, event, args, None, attachments.len());
        let packets: Arc<[Message]> = std::iter::once(Message::text(text))
            .chain(attachments.into_iter().map(Message::Binary))
            .collect();
        let raw = serde_json::json!({ "event": event, "args": args }).to_string();
        let socketio = OnceLock::new();
        let _ = socketio.set(packets);
        let p = Arc::new(Publication {
            socketio,
            ..Publication::new(&format!("{namespace}#"), Message::text(raw))
        });
        let mut seen = HashSet::new();
        targets
            .into_iter()
            .filter(|c| !skip.contains(&c.id) && seen.insert(c.id))
            .filter(|c| c.outbox.push(Outbound::Publication(p.clone())).is_ok())
            .count()
    }

    /// Socket `sid` of `namespace` joins (or leaves) `room`; 1 when it is
    /// a socket of this node.
    pub fn join(&self, namespace: &str, sid: &str, room: &str, join: bool) -> usize {
        let Some(s) = self.sockets.get(sid).filter(|s| &*s.namespace == namespace) else {
            return 0;
        };
        let ch = channel_of(namespace, room);
        if join {
            if let Err(e) = self.mesh.subscribe(&s.client, &ch) {
                tracing::warn!("socket {sid} cannot join room {room}: {e}");
                return 0;
            }
        } else {
            self.mesh.unsubscribe(&s.client, &ch);
        }
        1
    }

    /// Every local socket of `namespace` leaves `room`.
    pub fn close_room(&self, namespace: &str, room: &str) -> usize {
        let ch = channel_of(namespace, room);
        let members = self.mesh.hub.subscribers(&ch);
        for c in &members {
            self.mesh.unsubscribe(c, &ch);
        }
        members.len()
    }

    /// Disconnects socket `sid` of `namespace` (its client gets DISCONNECT).
    pub fn disconnect(&self, namespace: &str, sid: &str) -> usize {
        let Some(s) = self.sockets.get(sid).filter(|s| &*s.namespace == namespace) else {
            return 0;
        };
        let ns = s.namespace.to_string();
        usize::from(s.session.try_send(SessionCommand::Disconnect(ns)).is_ok())
    }
}

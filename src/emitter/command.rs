//! The contract between the emitter consumers (src/emitter/) and the
//! Socket.IO server (src/socketio/): one decoded emitter message as an
//! engine-neutral [`Command`], and the [`SocketIoTarget`] it is applied to.
//!
//! A consumer decodes what a backend pushed (python-socketio / Flask-SocketIO
//! JSON, @socket.io/redis-emitter msgpack) into a `Command`; the target applies
//! it to this node's local sockets only. Every node reads the emitter fanout
//! itself, so a message reaches each client exactly once per cluster.

/// One decoded emitter message, engine-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Emit(Emit),
    /// `enter_room`: socket `sid` of `namespace` joins `room`.
    EnterRoom {
        namespace: String,
        sid: String,
        room: String,
    },
    LeaveRoom {
        namespace: String,
        sid: String,
        room: String,
    },
    /// Every socket of `namespace` leaves `room`.
    CloseRoom {
        namespace: String,
        room: String,
    },
    /// Disconnect socket `sid` of `namespace` (the client gets a DISCONNECT packet).
    Disconnect {
        namespace: String,
        sid: String,
    },
}

/// An event to emit to the sockets of a namespace, optionally limited to rooms.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    /// `"/"` by default.
    pub namespace: String,
    pub event: String,
    /// Binary arguments appear as `{"_placeholder":true,"num":i}`.
    pub args: Vec<serde_json::Value>,
    /// The binary attachments, in placeholder order.
    pub attachments: Vec<bytes::Bytes>,
    /// Empty = every socket of the namespace; a sid is also a room.
    pub rooms: Vec<String>,
    /// Skip sockets in any of these rooms (a `skip_sid` is a room too).
    pub except_rooms: Vec<String>,
    /// Ack id: never set by emitters (no acks through queues).
    pub id: Option<u64>,
}

/// Where emitter commands go. Implemented by src/socketio/ (local delivery:
/// each node applies a command to ITS OWN local sockets only; every node reads
/// the emitter fanout itself, so a message reaches each client exactly once
/// per cluster). Returns sockets reached (for tests/metrics).
pub trait SocketIoTarget: Send + Sync {
    fn apply(&self, cmd: Command) -> usize;
}

//! Backends that push through a message queue, unchanged: python-socketio's
//! `RedisManager` / `KombuManager`, Flask-SocketIO's `message_queue=` and
//! Node's `@socket.io/redis-emitter` (`engine.emitters` in docs/config.md).
//!
//! Each emitter's consumer reads its queue, decodes every message into a
//! [`Command`] and hands it to a [`SocketIoTarget`], which delivers to this
//! node's local sockets.

pub mod command;

pub use command::{Command, Emit, SocketIoTarget};

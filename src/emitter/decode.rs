//! Which decoder reads an emitter's messages, and why one was refused.

use super::command::Command;
use crate::config::EmitterKind;

/// Why a message could not be turned into a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A pickled message from python-socketio before 5.14.
    #[error(
        "a pickled message (python-socketio before 5.14) is not supported: upgrade the backend's python-socketio to 5.14 or later"
    )]
    Pickled,
    #[error("{0}")]
    Invalid(String),
}

/// Decodes one message of an emitter of `kind`. `Ok(None)`: a message that
/// is not meant for Socket.IO clients (python servers' ack traffic).
pub fn decode(kind: EmitterKind, payload: &[u8]) -> Result<Option<Command>, DecodeError> {
    match kind {
        EmitterKind::PythonSocketio => super::python::decode(payload),
        EmitterKind::SocketIoRedis => super::socketio_redis::decode(payload).map(Some),
    }
}

//! The emitters' [`SocketIoTarget`] is this node's Socket.IO server: each
//! command is applied by [`SocketIoRooms`] to the local sockets only (every
//! node reads the emitter's queue itself).

use super::command::{Command, SocketIoTarget};
use crate::socketio::target::SocketIoRooms;

impl SocketIoTarget for SocketIoRooms {
    fn apply(&self, cmd: Command) -> usize {
        match cmd {
            Command::Emit(e) => self.emit(
                &e.namespace,
                &e.event,
                &e.args,
                e.attachments,
                &e.rooms,
                &e.except_rooms,
            ),
            Command::EnterRoom {
                namespace,
                sid,
                room,
            } => self.join(&namespace, &sid, &room, true),
            Command::LeaveRoom {
                namespace,
                sid,
                room,
            } => self.join(&namespace, &sid, &room, false),
            Command::CloseRoom { namespace, room } => self.close_room(&namespace, &room),
            Command::Disconnect { namespace, sid } => self.disconnect(&namespace, &sid),
        }
    }
}

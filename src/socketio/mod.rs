//! Socket.IO (and bare Engine.IO) client servers: `protocol: socketio` and
//! `protocol: engineio` entries of `engine.servers`.
//!
//! - [`engineio_packet`], [`socketio_packet`]: the two codecs, pure;
//! - [`http`]: one TCP connection served by hyper: the handshake, polling
//!   requests, and WebSocket upgrades (of new sessions and of polling ones);
//! - [`session`]: one Engine.IO session from open to `on_close`, on the
//!   worker that opened it: transports, heartbeat, Socket.IO namespaces,
//!   the Lua hooks, the outbox;
//! - [`events`]: what Lua touches (`conn:emit`, acks, argument conversion);
//! - [`SioShared`]: the per-server state, with the sid table that routes a
//!   polling request or an upgrade (possibly accepted by another worker) to
//!   its session.
//!
//! A session is one connection of the gateway (one client id, one Lua
//! environment, one outbox), whatever its transport and namespaces.

pub mod engineio_packet;
pub mod events;
pub mod http;
pub mod packets;
pub mod session;
pub mod session_open;
pub mod socketio_packet;
pub mod target;

use crate::config::SocketIoOptions;
use crate::worker::{Job, WorkerHandle};
use crate::ws::ServerShared;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Requests one session may have waiting (a poll, a post, an upgrade).
pub const SESSION_QUEUE: usize = 4;

/// What the HTTP side hands a session.
pub enum Command {
    /// A polling GET: answered with the payload (or refused).
    Get(oneshot::Sender<Reply>),
    /// The packets of a polling POST.
    Post(Vec<engineio_packet::Packet>),
    /// A bad polling request: the session closes with this reason.
    Fail(&'static str),
    /// An upgraded WebSocket for this session (the upgrade's probe).
    Upgrade(hyper::upgrade::Upgraded),
    /// A backend disconnects the session's socket in this namespace.
    Disconnect(String),
}

/// A session's answer to a polling GET.
pub enum Reply {
    Payload(Vec<u8>),
    /// 400 with this message (the session is upgraded, or closed).
    Refused(&'static str),
}

/// Per-server state shared by every worker.
pub struct SioShared {
    pub server: Arc<ServerShared>,
    pub opts: SocketIoOptions,
    /// Engine.IO sid -> its session's request queue.
    pub sessions: DashMap<Arc<str>, mpsc::Sender<Command>>,
    /// Every Socket.IO socket of this node, by sid (shared by all servers).
    pub rooms: Arc<target::SocketIoRooms>,
}

impl SioShared {
    pub fn new(server: Arc<ServerShared>, rooms: Arc<target::SocketIoRooms>) -> Self {
        let opts = SocketIoOptions::from_server(server.index, &server.cfg)
            .expect("options were validated when the config was loaded");
        Self {
            server,
            opts,
            sessions: DashMap::new(),
            rooms,
        }
    }

    /// Whether a request path is this server's endpoint (with or without
    /// its trailing slash).
    pub fn is_endpoint(&self, path: &str) -> bool {
        let own = self.server.cfg.path();
        path == own || path.trim_end_matches('/') == own.trim_end_matches('/')
    }
}

/// Accepts connections for a Socket.IO server until `stop` is cancelled;
/// each goes to the least-loaded worker, which serves it with [`http::serve`].
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<SioShared>,
    workers: Arc<Vec<WorkerHandle>>,
    stop: CancellationToken,
) {
    let index = shared.server.index;
    crate::ws::accept_each(listener, index, &workers, stop, |worker, stream, peer| {
        let shared = shared.clone();
        worker.submit(Job::new(move |state| {
            Box::pin(http::serve(state, stream, peer, shared))
        }));
    })
    .await
}

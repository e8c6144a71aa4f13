//! The client-facing WebSocket servers: one listener per `engine.servers`
//! entry, each handing accepted sockets to the least-loaded worker.
//!
//! The listener only accepts; the handshake, the Lua hooks and the frame loop
//! run on the worker ([`connection`]). This module depends on
//! [`crate::worker`], never the other way round: a worker runs whatever
//! [`Job`] it is given.

pub mod connection;
pub mod handshake;
pub mod hook_handshake;
#[cfg(test)]
pub(crate) mod memory_tests;
pub(crate) mod upgrade;

use crate::config::ServerConfig;
use crate::worker::{Job, WorkerHandle};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tungstenite::protocol::WebSocketConfig;

/// Room in a connection's write buffer beyond its largest frame, for the
/// control frames (a pong, our close) queued while that frame waits.
const CONTROL_FRAME_ROOM: usize = 4096;

/// Per-server state shared by every worker.
pub struct ServerShared {
    pub index: usize,
    pub cfg: ServerConfig,
    /// Connections open (from accepted handshake until `on_close` returned).
    pub active: AtomicUsize,
    pub ws_config: WebSocketConfig,
}

impl ServerShared {
    pub fn new(index: usize, cfg: ServerConfig) -> Self {
        // The write buffer must take any frame the outbox can hold (up to
        // `outboundQueueBytes`): a smaller bound turns a large publish into
        // "write buffer full" and a silent disconnect. Writing only starts a
        // frame once the previous ones are flushed, so the buffer stays at
        // `writeBufferSize` plus one frame.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(cfg.read_buffer_size)
            .write_buffer_size(cfg.write_buffer_size)
            .max_write_buffer_size(
                cfg.write_buffer_size + cfg.outbound_queue_bytes + CONTROL_FRAME_ROOM,
            )
            .max_message_size(Some(cfg.max_message_size))
            .max_frame_size(Some(cfg.max_message_size));
        Self {
            index,
            cfg,
            active: AtomicUsize::new(0),
            ws_config,
        }
    }
}

impl ServerShared {
    /// Takes one of the server's `maxConnections` slots for a new
    /// connection, held until the guard drops; `None` (counted in
    /// `connmix_connections_refused_total`) when the server is full.
    pub(crate) fn admit(
        self: &Arc<Self>,
        metrics: &crate::metrics::Metrics,
    ) -> Option<upgrade::ActiveGuard> {
        if self.active.fetch_add(1, Ordering::AcqRel) >= self.cfg.max_connections {
            self.active.fetch_sub(1, Ordering::AcqRel);
            metrics
                .connections_refused
                .with_label_values(&["max_connections"])
                .inc();
            return None;
        }
        Some(upgrade::ActiveGuard(self.clone()))
    }
}

/// Accepts connections for `server` until `stop` is cancelled.
pub async fn accept_loop(
    listener: TcpListener,
    server: Arc<ServerShared>,
    workers: Arc<Vec<WorkerHandle>>,
    stop: CancellationToken,
) {
    let index = server.index;
    accept_each(listener, index, &workers, stop, |worker, stream, peer| {
        let srv = server.clone();
        worker.submit(Job::new(move |state| {
            Box::pin(connection::serve(state, stream, peer, srv))
        }));
    })
    .await
}

/// Accepts connections on `listener` (server `index`) until `stop` is
/// cancelled and hands each, as a std stream, to `dispatch` with the
/// least-loaded worker. Shared by the WebSocket and Socket.IO servers.
pub async fn accept_each(
    listener: TcpListener,
    index: usize,
    workers: &[WorkerHandle],
    stop: CancellationToken,
    mut dispatch: impl FnMut(&WorkerHandle, std::net::TcpStream, std::net::SocketAddr),
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                tracing::warn!("accept on server {index}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept on server {index}: {e}");
                continue;
            }
        };
        let Some(worker) = workers.iter().min_by_key(|w| w.load()) else {
            return;
        };
        dispatch(worker, std_stream, peer);
    }
}

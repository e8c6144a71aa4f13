//! The client-facing WebSocket servers: one listener per `engine.servers`
//! entry, each handing accepted sockets to the least-loaded worker.
//!
//! The listener only accepts; the handshake, the Lua hooks and the frame loop
//! run on the worker ([`connection`]).

pub mod connection;
pub mod handshake;

use crate::worker::{Job, WorkerHandle};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Accepts connections for server `server` until `stop` is cancelled.
pub async fn accept_loop(
    listener: TcpListener,
    server: usize,
    workers: Arc<Vec<WorkerHandle>>,
    stop: CancellationToken,
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
                tracing::warn!("accept on server {server}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept on server {server}: {e}");
                continue;
            }
        };
        let Some(worker) = workers.iter().min_by_key(|w| w.load()) else {
            return;
        };
        worker.submit(Job::Accept {
            stream: std_stream,
            peer,
            server,
        });
    }
}

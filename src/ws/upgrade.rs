//! From an accepted socket to an open WebSocket: reads the upgrade request,
//! takes a slot of `maxConnections`, creates the client, its Lua VM lease
//! and `conn`, runs `on_handshake`, and answers the upgrade. A refusal is
//! answered with its HTTP status and everything taken so far is given back.
//!
//! It is a future of its own so that its state (the request, the socket
//! before it became a WebSocket) is not kept in every connection's task
//! beside the frame loop's: [`super::connection::serve`] awaits it, then
//! reuses its room for the frame loop.

use super::ServerShared;
use super::{handshake, hook_handshake};
use crate::hub::Client;
use crate::lua::conn::ConnLocal;
use crate::lua::pool::VmLease;
use crate::lua::report_error;
use crate::worker::WorkerState;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::Role;

/// Time to read the upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an upgraded connection holds until it ends (besides its socket).
/// Dropped field by field, in this order: the guards first.
pub struct Open {
    /// Leaves every channel and drops the Lua references.
    _release: ReleaseGuard,
    pub conn: Rc<ConnLocal>,
    pub vm: VmLease,
    pub client: Arc<Client>,
    /// Holds the slot of `maxConnections`.
    _active: ActiveGuard,
}

/// Upgrades `stream`; `None` when the connection was refused or went away.
pub async fn open(
    state: &Rc<WorkerState>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    srv: &Arc<ServerShared>,
) -> Option<(Open, WebSocketStream<TcpStream>)> {
    let mut stream = TcpStream::from_std(stream).ok()?;
    let server = srv.index;
    let (req, leftover) =
        // Boxed: the read buffer lives only while the request is read.
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(handshake::read_request(&mut stream))).await {
            Ok(Ok(r)) => r,
            Ok(Err(handshake::HandshakeError::Eof)) | Err(_) => return None,
            Ok(Err(e)) => {
                handshake::refuse(&mut stream, 400, &e.to_string()).await;
                return None;
            }
        };
    if req.path() != srv.cfg.path() {
        handshake::refuse(&mut stream, 404, "Not Found").await;
        return None;
    }
    let key = match req.check_upgrade() {
        Ok(k) => k.to_string(),
        Err((status, why)) => {
            handshake::refuse(&mut stream, status, why).await;
            return None;
        }
    };
    let metrics = &state.mesh.metrics;
    let Some(active) = srv.admit(metrics) else {
        handshake::refuse(&mut stream, 503, "Too many connections").await;
        return None;
    };

    let id = state.mesh.hub.next_id();
    let client = Arc::new(Client::new(
        id,
        server,
        (srv.cfg.outbound_queue_size, srv.cfg.outbound_queue_bytes),
        srv.cfg.max_channels,
    ));
    let vm = match state.vms.acquire() {
        Ok(vm) => vm,
        Err(e) => {
            tracing::error!("no Lua VM for a new connection: {e}");
            handshake::refuse(&mut stream, 500, "Internal Server Error").await;
            return None;
        }
    };
    let Ok(conn) = ConnLocal::new(vm.lua(), client.clone(), server, peer, vm.ctx.clone()) else {
        handshake::refuse(&mut stream, 500, "Internal Server Error").await;
        return None;
    };
    let release = ReleaseGuard(conn.clone(), state.mesh.clone());
    match vm.new_env(&conn).and_then(|env| conn.set_env(env)) {
        Ok(()) => {}
        Err(e) => {
            let script = vm.script_path(server).display().to_string();
            report_error(&conn, "main chunk", &script, &e);
            handshake::refuse(&mut stream, 500, "Internal Server Error").await;
            return None;
        }
    }
    if let Some(refusal) = Box::pin(hook_handshake::run(&vm, &conn, &req)).await {
        metrics
            .connections_refused
            .with_label_values(&["on_handshake"])
            .inc();
        handshake::refuse(&mut stream, refusal.0, &refusal.1).await;
        return None;
    }
    let protocol = req
        .header("sec-websocket-protocol")
        .and_then(|p| p.split(',').next())
        .map(|p| p.trim().to_string());
    let accepted = handshake::accept(&mut stream, &key, protocol.as_deref()).await;
    // The request is not needed any more; free it before the connection
    // goes on.
    drop((req, key, protocol));
    accepted.ok()?;
    let ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(srv.ws_config))
            .await;
    let open = Open {
        _release: release,
        conn,
        vm,
        client,
        _active: active,
    };
    Some((open, ws))
}

/// Releases the connection's slot of `maxConnections` once it is fully gone.
pub(crate) struct ActiveGuard(pub(crate) Arc<ServerShared>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// However the connection ends (a refused handshake included): leaves every
/// channel the hooks joined and drops the connection's Lua references.
pub(crate) struct ReleaseGuard(pub(crate) Rc<ConnLocal>, pub(crate) Arc<crate::mesh::Mesh>);
impl Drop for ReleaseGuard {
    fn drop(&mut self) {
        self.1.unregister(&self.0.client);
        self.0.release();
    }
}

//! Opening a Socket.IO server's Engine.IO session, before its loop runs
//! ([`super::session`]): the connection limit, a client id, the Lua
//! environment and `on_handshake`, then the session's registration (its
//! sid in the server's table, its client in the hub) with guards that undo
//! each of them however the session ends.

use super::events::{Registration, SessionIo};
use super::{Command, SioShared};
use crate::hub::Client;
use crate::lua::conn::ConnLocal;
use crate::lua::pool::VmLease;
use crate::lua::report_error;
use crate::worker::WorkerState;
use crate::ws::handshake::UpgradeRequest;
use crate::ws::upgrade::{ActiveGuard, ReleaseGuard};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A session opened and registered, not yet running.
pub struct Session {
    pub(super) state: Rc<WorkerState>,
    pub(super) shared: Arc<SioShared>,
    pub(super) vm: VmLease,
    pub(super) conn: Rc<ConnLocal>,
    pub(super) io: Rc<SessionIo>,
    pub(super) sid: Arc<str>,
    pub(super) query: Vec<(String, String)>,
    pub(super) rx: mpsc::Receiver<Command>,
    pub(super) websocket_only: bool,
    _sid: SidGuard,
    _release: ReleaseGuard,
    _active: ActiveGuard,
}

/// Removes the sid from the table however the session ends.
struct SidGuard(Arc<SioShared>, Arc<str>);
impl Drop for SidGuard {
    fn drop(&mut self) {
        self.0.sessions.remove(&self.1);
    }
}

/// A fresh random id (Engine.IO session or Socket.IO socket).
pub fn new_sid() -> Arc<str> {
    use base64::Engine as _;
    let bytes: [u8; 15] = rand::random();
    Arc::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Opens a session: the connection limit, a client id, the Lua
/// environment and `on_handshake`. The error is the HTTP status and body.
pub async fn open(
    state: &Rc<WorkerState>,
    shared: &Arc<SioShared>,
    req: &UpgradeRequest,
    peer: SocketAddr,
    websocket_only: bool,
) -> Result<Session, (u16, String)> {
    let srv = &shared.server;
    let metrics = &state.mesh.metrics;
    let active = srv
        .admit(metrics)
        .ok_or((503, "Too many connections".to_string()))?;
    let internal = || (500, "Internal Server Error".to_string());
    let client = Arc::new(Client::new(
        state.mesh.hub.next_id(),
        srv.index,
        (srv.cfg.outbound_queue_size, srv.cfg.outbound_queue_bytes),
        srv.cfg.max_channels,
    ));
    let vm = state.vms.acquire().map_err(|e| {
        tracing::error!("no Lua VM for a new session: {e}");
        internal()
    })?;
    let conn = ConnLocal::new(vm.lua(), client.clone(), srv.index, peer, vm.ctx.clone())
        .map_err(|_| internal())?;
    let release = ReleaseGuard(conn.clone(), state.mesh.clone());
    if let Err(e) = vm.new_env(&conn).and_then(|env| conn.set_env(env)) {
        let script = vm.script_path(srv.index).display().to_string();
        report_error(&conn, "main chunk", &script, &e);
        return Err(internal());
    }
    if let Some(refusal) = Box::pin(crate::ws::hook_handshake::run(&vm, &conn, req)).await {
        metrics
            .connections_refused
            .with_label_values(&["on_handshake"])
            .inc();
        return Err(refusal);
    }
    let sid = new_sid();
    let (tx, rx) = mpsc::channel(super::SESSION_QUEUE);
    let io = SessionIo::new(
        srv.cfg.outbound_queue_size,
        Some(Registration {
            rooms: shared.rooms.clone(),
            client: client.clone(),
            session: tx.clone(),
        }),
    );
    if shared.opts.socketio {
        conn.set_events(io.clone());
    }
    shared.sessions.insert(sid.clone(), tx);
    state.mesh.register(client);
    let query = req
        .uri
        .split_once('?')
        .map(|(_, q)| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    Ok(Session {
        state: state.clone(),
        shared: shared.clone(),
        vm,
        conn,
        io,
        _sid: SidGuard(shared.clone(), sid.clone()),
        sid,
        query,
        rx,
        websocket_only,
        _release: release,
        _active: active,
    })
}

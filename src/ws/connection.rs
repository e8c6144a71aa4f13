//! One client connection from accept to `on_close`: the handshake with its
//! `on_handshake` hook, then the frame loop, then cleanup.
//!
//! The frame loop is a single future per connection (no split halves, no
//! extra tasks) that, each time it is woken:
//! 1. moves what the outbox holds into a local batch (only when the batch is
//!    empty, so queued memory stays bounded) and writes it, flushing once;
//! 2. drives the running hook, starting the next `on_message` when it ends
//!    (hooks of one connection run one at a time, in arrival order);
//! 3. reads frames: one starts its `on_message` at once when no hook runs,
//!    else waits in a small inbound queue (pings are answered by
//!    tungstenite while reading, even while a hook waits);
//! 4. checks one timer for read timeout, write stall and close handshake.
//!
//! A panic in the frame loop (a bug) is caught: the client gets a 1011 close
//! (best effort), `on_close` runs with reason "internal error", and every
//! counter is restored by the RAII guards below, so shutdown still completes.

use super::ServerShared;
use super::upgrade;
use crate::lua::conn::ConnLocal;
use crate::lua::recovery::Gate;
use crate::lua::{HookCall, LuaRuntime};
use crate::outbox::{CallFunc, Outbound};
use crate::worker::WorkerState;
use futures_util::{FutureExt, Sink, Stream};
use mlua::Lua;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// Frames read ahead while a hook is still running.
const MAX_INBOUND: usize = 32;
/// The longest a `conn.call` subscribe waits for the cluster to hear it.
const HEARD_WAIT: Duration = Duration::from_secs(10);
/// Time the peer gets to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves one accepted TCP connection to the end.
pub async fn serve(
    state: Rc<WorkerState>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    srv: Arc<ServerShared>,
) {
    // The upgrade is one future of its own: what it needs (the request, the
    // socket before it became a WebSocket) then shares its room in this
    // future with the frame loop's instead of adding to it (see
    // memory_tests). Not boxed: a short-lived box per connection, freed
    // between long-lived allocations, fragments the heap (measured: +1 KiB
    // per idle connection).
    let Some((open, ws)) = upgrade::open(&state, stream, peer, &srv).await else {
        return;
    };
    let (vm, conn, client) = (&open.vm, &open.conn, &open.client);
    let id = client.id;
    state.mesh.register(client.clone());
    tracing::debug!(client_id = %id, "connected from {peer}");

    let first_hook = vm.hook(conn, "on_connect", ());
    // Awaited by value: the driver then shares its room in this future with
    // the handshake's state instead of adding to it (see memory_tests).
    let reason = Driver {
        ws,
        vm,
        conn,
        hook: first_hook,
        inbound: VecDeque::new(),
        batch: VecDeque::new(),
        timer: None,
        last_read: Instant::now(),
        stalled_since: None,
        closing_since: None,
        hold: None,
        close_reason: None,
        need_flush: false,
        panicked: false,
        read_timeout: secs(srv.cfg.read_timeout),
        write_timeout: secs(srv.cfg.write_timeout),
    }
    .await;

    state.mesh.unregister(client);
    tracing::debug!(client_id = %id, "closed: {}", reason.as_deref().unwrap_or("clean"));
    if let Some(call) = vm.hook(conn, "on_close", (id.to_string(), reason))
        && let Err(panic) = AssertUnwindSafe(call).catch_unwind().await
    {
        state.mesh.metrics.connection_panics.inc();
        tracing::error!(client_id = %id, "on_close panicked: {}", panic_text(&panic));
    }
}

/// The message of a caught panic.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Test builds only: a client text frame that makes the frame loop panic,
/// to prove that a panicking connection task cleans up.
#[cfg(feature = "test-hooks")]
const TEST_PANIC_FRAME: &[u8] = b"connmix-test-panic";

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

/// The frame loop; see the module documentation.
pub(super) struct Driver<'a> {
    ws: WebSocketStream<TcpStream>,
    vm: &'a LuaRuntime,
    conn: &'a Rc<ConnLocal>,
    hook: Option<HookCall>,
    inbound: VecDeque<Message>,
    batch: VecDeque<Outbound>,
    timer: Option<Pin<Box<Sleep>>>,
    last_read: Instant,
    stalled_since: Option<Instant>,
    /// Set once our close frame is queued.
    closing_since: Option<Instant>,
    /// What `on_close` will be told (None: a clean close).
    close_reason: Option<String>,
    need_flush: bool,
    /// The frame loop panicked: only our 1011 close is flushed now.
    panicked: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Cluster: frames wait until the broker has the channels just joined.
    hold: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

/// What ends the loop.
enum End {
    /// The socket is done; the reason for `on_close` (None: clean).
    Done(Option<String>),
}

/// The driver is its own future (not an `async fn`): an `async fn` taking
/// `self` would hold the driver twice in every connection's task. A panic
/// is caught here too, per poll, so that no second future (and no second
/// room for the driver) is needed to clean up after one.
impl Future for Driver<'_> {
    type Output = Option<String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        let this = &mut *self;
        if this.panicked {
            return this.poll_abort(cx);
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.poll_step(cx))) {
            Ok(Poll::Ready(End::Done(reason))) => {
                // Cancel a hook still waiting (HTTP, wait_context_value): its
                // connection is gone.
                this.hook = None;
                Poll::Ready(reason)
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => {
                this.conn.metrics().connection_panics.inc();
                tracing::error!(client_id = %this.conn.client.id, "connection task panicked: {}", panic_text(&panic));
                this.start_abort();
                this.poll_abort(cx)
            }
        }
    }
}

impl Driver<'_> {
    fn lua(&self) -> &Lua {
        self.vm.lua()
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            let mut progressed = false;

            // 1. Outbound. While a batch is still being written the outbox
            // is not drained, but its overflow is still watched.
            let outbox = &self.conn.client.outbox;
            let overflowed = if self.batch.is_empty() {
                match outbox.poll_drain(cx, &mut self.batch) {
                    Poll::Ready(overflowed) => {
                        progressed |= !self.batch.is_empty();
                        overflowed
                    }
                    Poll::Pending => false,
                }
            } else {
                self.closing_since.is_none() && outbox.poll_overflowed(cx)
            };
            if overflowed && self.closing_since.is_none() {
                self.close_slow("outbound queue full");
            }
            let had_batch = !self.batch.is_empty();
            if let Some(end) = self.write_batch(cx) {
                return Poll::Ready(end);
            }
            // A batch written out (after a hold, say): drain the outbox again
            // so it wakes us for what comes next.
            progressed |= had_batch && self.batch.is_empty();

            // 2. The running hook, then the next one.
            if let Some(h) = self.hook.as_mut()
                && Pin::new(h).poll(cx).is_ready()
            {
                self.hook = None;
                progressed = true;
            }
            // A recovery the hook just ended released frames to write.
            progressed |= self.conn.tracks().is_some_and(|t| t.has_released());
            if self.hook.is_none()
                && self.closing_since.is_none()
                && let Some(msg) = self.inbound.pop_front()
            {
                if self.inbound.is_empty() {
                    // Frames queue only while a hook runs: once a burst is
                    // worked off, an idle connection keeps no room for it
                    // (224 bytes in each, README "Benchmarks").
                    self.inbound = VecDeque::new();
                }
                self.hook = self.message_hook(msg);
                continue;
            }

            // 3. Read.
            if self.inbound.len() < MAX_INBOUND {
                match Pin::new(&mut self.ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(msg))) => {
                        self.last_read = Instant::now();
                        // A received ping queues a pong inside tungstenite; a
                        // received close queues the reply. Flush either out.
                        self.need_flush = true;
                        match msg {
                            Message::Text(_) | Message::Binary(_) => {
                                self.conn.metrics().read_messages.inc();
                                if self.closing_since.is_none() {
                                    if self.hook.is_none() && self.inbound.is_empty() {
                                        // Nothing to wait for: its hook starts
                                        // now, not through the queue (which
                                        // then never allocates).
                                        self.hook = self.message_hook(msg);
                                    } else {
                                        self.inbound.push_back(msg);
                                    }
                                }
                            }
                            // Peer-initiated close: tungstenite queues the reply.
                            Message::Close(_) if self.closing_since.is_none() => {
                                self.closing_since = Some(Instant::now());
                            }
                            _ => {}
                        }
                        progressed = true;
                    }
                    Poll::Ready(None) => {
                        let _ = Pin::new(&mut self.ws).poll_flush(cx);
                        return Poll::Ready(End::Done(self.close_reason.take()));
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(self.read_error(cx, e)),
                    Poll::Pending => {}
                }
            }

            // 4. Timers.
            if let Some(end) = self.poll_timer(cx) {
                return Poll::Ready(end);
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// Whether frames must wait for the broker (see `ConnLocal::take_hold`).
    fn held(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(wait) = self.conn.take_hold() {
            self.hold = Some(wait);
        }
        let Some(wait) = self.hold.as_mut() else {
            return false;
        };
        if wait.as_mut().poll(cx).is_pending() {
            return true;
        }
        self.hold = None;
        false
    }

    /// Writes the batch until it is empty or the socket pushes back.
    fn write_batch(&mut self, cx: &mut Context<'_>) -> Option<End> {
        let mut sent = 0u64;
        let held = self.closing_since.is_none() && self.held(cx);
        // What a recovery released goes before what was queued after it.
        if let Some(t) = self.conn.tracks() {
            for m in t.take_released().into_iter().rev() {
                self.batch.push_front(Outbound::Message(m));
            }
        }
        while let Some(front) = self.batch.front() {
            if let Outbound::Publication(p) = front
                && p.position.is_some()
                && self.closing_since.is_none()
                && let Some(tracks) = self.conn.tracks()
            {
                match tracks.gate(p) {
                    Gate::Write(m) => self.batch[0] = Outbound::Message(m),
                    Gate::Drop | Gate::Held => {
                        self.batch.pop_front();
                        continue;
                    }
                    Gate::Overflow => {
                        self.close_slow("too many publications held while recovering");
                        continue;
                    }
                }
            }
            let Some(front) = self.batch.front() else {
                break;
            };
            match front {
                Outbound::Message(_) | Outbound::Publication(_) if self.closing_since.is_some() => {
                    self.batch.pop_front();
                }
                Outbound::Message(_) | Outbound::Publication(_) if held => break,
                Outbound::Message(_) | Outbound::Publication(_) => match Pin::new(&mut self.ws)
                    .poll_ready(cx)
                {
                    Poll::Ready(Ok(())) => {
                        let Some(m) = self.batch.pop_front().and_then(Outbound::into_frame) else {
                            unreachable!()
                        };
                        if let Err(e) = Pin::new(&mut self.ws).start_send(m) {
                            return Some(End::Done(Some(format!("write failed: {e}"))));
                        }
                        sent += 1;
                        self.need_flush = true;
                    }
                    Poll::Ready(Err(e)) => {
                        return Some(End::Done(Some(format!("write failed: {e}"))));
                    }
                    Poll::Pending => {
                        self.stalled_since.get_or_insert_with(Instant::now);
                        break;
                    }
                },
                Outbound::Call(_) => {
                    let Some(Outbound::Call(mut call)) = self.batch.pop_front() else {
                        unreachable!()
                    };
                    let res = self.conn.apply_call(self.lua(), &call);
                    let subscribed = res.is_ok() && matches!(call.func, CallFunc::Subscribe);
                    let heard = subscribed.then(|| self.conn.until_heard()).flatten();
                    match (call.reply.take(), heard) {
                        // Answer once the cluster hears the channels.
                        (Some(reply), Some(heard)) => {
                            tokio::task::spawn_local(async move {
                                let res = match tokio::time::timeout(HEARD_WAIT, heard).await {
                                    Ok(()) => res,
                                    Err(_) => Err("subscribed here, but the cluster did not confirm it in time".into()),
                                };
                                let _ = reply.send(res);
                            });
                        }
                        (Some(reply), _) => {
                            let _ = reply.send(res);
                        }
                        (None, _) => {}
                    }
                }
                Outbound::Close(..) => {
                    let Some(Outbound::Close(code, reason)) = self.batch.pop_front() else {
                        unreachable!()
                    };
                    if self.closing_since.is_none() {
                        self.start_close(code, &reason, None);
                    }
                }
            }
        }
        if sent > 0 {
            self.conn.metrics().send_messages.inc_by(sent);
        }
        if self.need_flush {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.need_flush = false;
                    if self.batch.is_empty() {
                        self.stalled_since = None;
                    }
                }
                Poll::Ready(Err(e)) => {
                    if self.closing_since.is_some() {
                        return Some(End::Done(self.close_reason.take()));
                    }
                    return Some(End::Done(Some(format!("write failed: {e}"))));
                }
                Poll::Pending => {
                    self.stalled_since.get_or_insert_with(Instant::now);
                }
            }
        } else if self.batch.is_empty() {
            self.stalled_since = None;
        }
        None
    }

    /// Closes a client that cannot keep up (1013), dropping what is queued.
    fn close_slow(&mut self, why: &str) {
        self.conn.metrics().slow_clients_closed.inc();
        tracing::warn!(client_id = %self.conn.client.id, "slow client: {why}, closing");
        self.batch.clear();
        self.start_close(
            1013,
            "slow client: outbound queue full",
            Some("slow client"),
        );
    }

    /// Queues our close frame; the loop then waits for the peer's reply.
    fn start_close(&mut self, code: u16, reason: &str, on_close_reason: Option<&str>) {
        self.closing_since = Some(Instant::now());
        // Nothing queued from now on would be written: refuse it, so a
        // publish counts this client as a failure, not a delivery.
        self.conn.client.outbox.close();
        self.close_reason = on_close_reason.map(str::to_string);
        self.inbound.clear();
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        // The frame is queued even if the socket is full; poll_flush sends it.
        let _ = Pin::new(&mut self.ws).start_send(Message::Close(Some(frame)));
        self.need_flush = true;
    }

    /// After a panic: drops the running hook and what was to be written and
    /// queues a 1011 close, which [`Driver::poll_abort`] then flushes.
    fn start_abort(&mut self) {
        self.panicked = true;
        self.hook = None;
        self.batch.clear();
        if self.closing_since.is_none() {
            self.start_close(1011, "internal error", None);
        }
        // The flush gets CLOSE_TIMEOUT from now.
        self.closing_since = Some(Instant::now());
    }

    /// Flushes the close frame if the socket still takes it (bounded by
    /// [`CLOSE_TIMEOUT`]); `on_close` is then told "internal error".
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        let deadline = self.closing_since.unwrap_or_else(Instant::now) + CLOSE_TIMEOUT;
        let flushed = Pin::new(&mut self.ws).poll_flush(cx).is_ready();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if flushed || timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some("internal error".to_string()));
        }
        Poll::Pending
    }

    fn message_hook(&self, msg: Message) -> Option<HookCall> {
        let lua = self.lua();
        let (kind, data): (&str, &[u8]) = match &msg {
            Message::Text(t) => ("text", t.as_bytes()),
            Message::Binary(b) => ("binary", b),
            _ => return None,
        };
        #[cfg(feature = "test-hooks")]
        if data == TEST_PANIC_FRAME {
            panic!("test-hooks: injected panic");
        }
        let t = lua.create_table().ok()?;
        t.raw_set("type", kind).ok()?;
        t.raw_set("data", lua.create_string(data).ok()?).ok()?;
        self.vm.hook(self.conn, "on_message", t)
    }

    /// A read error ends the connection; protocol and size violations get the
    /// matching close code first (best effort).
    fn read_error(&mut self, cx: &mut Context<'_>, e: WsError) -> End {
        let (code, why) = match &e {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => (1009, "message too big"),
            WsError::Capacity(_) => (1009, "frame too big"),
            WsError::Utf8(_) => (1007, "invalid UTF-8 in text frame"),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                return End::Done(Some("connection reset".into()));
            }
            WsError::Protocol(_) => (1002, "protocol error"),
            WsError::Io(_) => return End::Done(Some(format!("read failed: {e}"))),
            _ => return End::Done(Some(e.to_string())),
        };
        tracing::debug!(client_id = %self.conn.client.id, "closing with {code}: {e}");
        if self.closing_since.is_none() {
            self.start_close(code, why, None);
            let _ = Pin::new(&mut self.ws).poll_flush(cx);
        }
        End::Done(Some(why.to_string()))
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Option<End> {
        loop {
            let now = Instant::now();
            if let Some(since) = self.closing_since {
                if now >= since + CLOSE_TIMEOUT {
                    return Some(End::Done(self.close_reason.take()));
                }
            } else {
                if let (Some(t), Some(since)) = (self.write_timeout, self.stalled_since)
                    && now >= since + t
                {
                    self.conn.metrics().slow_clients_closed.inc();
                    tracing::warn!(client_id = %self.conn.client.id, "slow client: write stalled, closing");
                    return Some(End::Done(Some("slow client: write timeout".into())));
                }
                if let Some(t) = self.read_timeout
                    && now >= self.last_read + t
                {
                    self.batch.clear();
                    self.start_close(1000, "read timeout", Some("read timeout"));
                    if let Some(end) = self.write_batch(cx) {
                        return Some(end);
                    }
                    continue;
                }
            }
            let deadline = self.next_deadline()?;
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            // Only move the timer earlier (or re-arm it once fired): moving
            // it later on every frame read would cost a timer-wheel update
            // per message; firing early just re-checks.
            if deadline < timer.deadline() || timer.deadline() <= now {
                timer.as_mut().reset(deadline);
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return None,
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        if let Some(since) = self.closing_since {
            return Some(since + CLOSE_TIMEOUT);
        }
        let read = self.read_timeout.map(|t| self.last_read + t);
        let write = self
            .write_timeout
            .zip(self.stalled_since)
            .map(|(t, s)| s + t);
        match (read, write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

//! One Engine.IO session from open to `on_close`, on the worker that
//! opened it: its transport (long-polling, WebSocket, or polling upgraded
//! to WebSocket through a probe), the heartbeat, the Socket.IO layer
//! (namespaces, CONNECT with the `on_connect` hook, events to
//! `on_message`, acks both ways, binary attachments) and the outbox.
//!
//! The session is a loop that, each turn: starts the hook for the next
//! packet received (hooks of one session run one at a time, in order),
//! writes what is queued to the transport (a pending polling GET gets it
//! as one payload), then waits for the next thing to happen: the hook
//! ends, a polling request or an upgrade arrives, a frame is read, the
//! outbox has something, or a timer fires. Malformed packets close the
//! session; nothing else is affected. Opening it is [`super::session_open`]'s.

use super::engineio_packet::{self as eio, Data, Packet};
use super::events;
use super::session_open::Session;
use super::socketio_packet as sio;
use super::{Command, Reply};
use crate::lua::HookCall;
use crate::outbox::Outbound;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use mlua::MultiValue;
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::Role;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Engine.IO messages read ahead while a hook still runs.
const MAX_INBOUND: usize = 32;
/// Pause between a CONNECT answer and the events emitted in `on_connect`.
const CONNECT_GAP: Duration = Duration::from_millis(2);
/// Time our close frame gets to reach the peer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The hook running now and what its end means.
pub(super) enum Running {
    None,
    /// `on_connect` of a namespace (and the socket's sid): its verdict
    /// answers the CONNECT.
    Connect(Rc<str>, Arc<str>),
    /// `on_message` of an event with an ack id: unless the script acked,
    /// its return values are the ack.
    Event {
        ns: Rc<str>,
        id: u64,
        acked: Rc<Cell<bool>>,
    },
}

/// Why and how the session ends.
struct End {
    /// For `on_close` (None: a clean close).
    reason: Option<String>,
    /// The client asked to close (a pending poll gets a noop, not a close).
    by_client: bool,
    /// Tell the client its namespaces are disconnected by the server.
    disconnect: bool,
}

impl End {
    fn client(reason: Option<&str>) -> End {
        End {
            reason: reason.map(str::to_string),
            by_client: true,
            disconnect: false,
        }
    }
    fn error(reason: impl Into<String>) -> End {
        End {
            reason: Some(reason.into()),
            by_client: false,
            disconnect: false,
        }
    }
}

/// What woke the loop.
enum Event {
    Hook(Option<MultiValue>),
    Command(Option<Command>),
    Frame(Option<Result<Message, tungstenite::Error>>),
    Probe(Option<Result<Message, tungstenite::Error>>),
    Outbox(bool),
    Wake,
    Timer,
}

/// The loop's state; see the module documentation.
pub(super) struct Loop {
    ws: Option<Ws>,
    /// An upgrade in progress: the WebSocket being probed (boxed: most
    /// sessions never have one), and whether it answered the probe.
    probe: Option<Box<Ws>>,
    probed: bool,
    pending: Option<oneshot::Sender<Reply>>,
    inbound: VecDeque<Data>,
    /// A binary packet waiting for its attachments.
    pub(super) partial: Option<(sio::Packet, Vec<bytes::Bytes>)>,
    pub(super) hook: Option<HookCall>,
    pub(super) running: Running,
    batch: VecDeque<Outbound>,
    ping_at: Instant,
    pong_by: Option<Instant>,
    connect_by: Option<Instant>,
    end: Option<End>,
}

async fn next_frame(ws: &mut Option<Ws>) -> Option<Result<Message, tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn next_probe_frame(ws: &mut Option<Box<Ws>>) -> Option<Result<Message, tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn hook_done(hook: &mut Option<HookCall>) -> Option<MultiValue> {
    match hook {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// The Engine.IO open packet of this session.
    pub fn open_packet(&self) -> Message {
        let o = &self.shared.opts;
        eio::open(
            &self.sid,
            !self.websocket_only && o.websocket,
            o.ping_interval_ms,
            o.ping_timeout_ms,
            o.max_payload,
        )
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Runs the session to its end; `ws` is the socket of a WebSocket-only
    /// session (a polling one gets its socket through an upgrade).
    pub async fn run(mut self, ws: Option<Upgraded>) {
        let opts = &self.shared.opts;
        let now = Instant::now();
        let mut lp = Loop {
            ws: None,
            probe: None,
            probed: false,
            pending: None,
            inbound: VecDeque::new(),
            partial: None,
            hook: None,
            running: Running::None,
            batch: VecDeque::new(),
            ping_at: now + Self::ms(opts.ping_interval_ms),
            pong_by: None,
            connect_by: opts
                .socketio
                .then(|| now + Self::ms(opts.connect_timeout_ms)),
            end: None,
        };
        if let Some(up) = ws {
            lp.ws = Some(Box::pin(self.websocket(up)).await);
            self.io.push(self.open_packet());
        }
        if !self.shared.opts.socketio {
            lp.hook = self.vm.hook(&self.conn, "on_connect", ());
        }
        let reason = self.drive(&mut lp).await;
        lp.hook = None;
        drop(lp);
        let id = self.conn.client.id;
        self.shared.sessions.remove(&self.sid);
        self.state.mesh.unregister(&self.conn.client);
        tracing::debug!(client_id = %id, "session closed: {}", reason.as_deref().unwrap_or("clean"));
        if let Some(call) = self
            .vm
            .hook(&self.conn, "on_close", (id.to_string(), reason))
        {
            call.await;
        }
    }

    async fn websocket(&self, up: Upgraded) -> Ws {
        let max = self.shared.opts.max_payload;
        let cfg = self
            .shared
            .server
            .ws_config
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, Some(cfg)).await
    }

    async fn drive(&mut self, lp: &mut Loop) -> Option<String> {
        loop {
            while lp.hook.is_none() && lp.end.is_none() {
                let Some(d) = lp.inbound.pop_front() else {
                    break;
                };
                if let Err(why) = self.on_message(lp, d) {
                    tracing::debug!(client_id = %self.conn.client.id, "closing: {why}");
                    lp.end = Some(End::error(why));
                }
            }
            if let Err(e) = self.flush(lp).await {
                return Some(e);
            }
            if let Some(end) = lp.end.take() {
                Box::pin(self.finish(lp, &end)).await;
                return end.reason;
            }
            let ev = self.wait(lp).await;
            self.on_event(lp, ev).await;
        }
    }

    async fn wait(&mut self, lp: &mut Loop) -> Event {
        let deadline = [
            Some(lp.ping_at).filter(|_| lp.pong_by.is_none()),
            lp.pong_by,
            lp.connect_by,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(lp.ping_at);
        let room = lp.inbound.len() < MAX_INBOUND;
        let out_room = self.io.out.borrow().len() < self.shared.server.cfg.outbound_queue_size;
        let outbox = &self.conn.client.outbox;
        tokio::select! {
            biased;
            r = hook_done(&mut lp.hook) => Event::Hook(r),
            c = self.rx.recv(), if room => Event::Command(c),
            f = next_frame(&mut lp.ws), if room => Event::Frame(f),
            f = next_probe_frame(&mut lp.probe) => Event::Probe(f),
            o = std::future::poll_fn(|cx| outbox.poll_drain(cx, &mut lp.batch)), if out_room => Event::Outbox(o),
            // A polling client that does not poll: its queue is full, so the
            // outbox is not drained, but its overflow still closes it as slow.
            o = std::future::poll_fn(|cx| match outbox.poll_overflowed(cx) {
                true => std::task::Poll::Ready(true),
                false => std::task::Poll::Pending,
            }), if !out_room => Event::Outbox(o),
            _ = self.io.wake.notified() => Event::Wake,
            _ = tokio::time::sleep_until(deadline) => Event::Timer,
        }
    }

    async fn on_event(&mut self, lp: &mut Loop, ev: Event) {
        // A missed pong ends the session before anything else is served,
        // whichever woke the loop first.
        if lp.pong_by.is_some_and(|t| Instant::now() >= t) {
            lp.end = Some(End::error("ping timeout"));
            return;
        }
        match ev {
            Event::Hook(r) => {
                lp.hook = None;
                self.hook_ended(lp, r);
            }
            Event::Command(None) | Event::Wake => {}
            Event::Command(Some(c)) => self.on_command(lp, c).await,
            Event::Frame(None) => lp.end = Some(End::client(Some("transport close"))),
            Event::Frame(Some(Err(e))) => {
                lp.end = Some(End::error(format!("transport error: {e}")));
            }
            Event::Frame(Some(Ok(m))) => match m {
                Message::Text(t) => match eio::decode_text(t.as_str()) {
                    Ok(p) => self.on_packet(lp, p),
                    Err(e) => lp.end = Some(End::error(e.to_string())),
                },
                Message::Binary(b) => self.on_packet(lp, Packet::Message(Data::Binary(b))),
                Message::Close(_) => lp.end = Some(End::client(None)),
                _ => {}
            },
            // Boxed, like the other rare paths: the session's task keeps
            // room only for what it does while idle.
            Event::Probe(f) => Box::pin(self.on_probe(lp, f)).await,
            Event::Outbox(overflowed) => {
                if overflowed {
                    self.conn.metrics().slow_clients_closed.inc();
                    lp.end = Some(End::error("slow client"));
                    return;
                }
                while let Some(item) = lp.batch.pop_front() {
                    self.on_outbound(lp, item);
                }
            }
            Event::Timer => {
                let now = Instant::now();
                if lp.pong_by.is_some_and(|t| now >= t) {
                    lp.end = Some(End::error("ping timeout"));
                } else if lp.connect_by.is_some_and(|t| now >= t) {
                    if self.io.namespaces.borrow().is_empty() {
                        lp.end = Some(End::error("no namespace connected in time"));
                    }
                    lp.connect_by = None;
                } else if lp.pong_by.is_none() && now >= lp.ping_at {
                    self.io.push(eio::bare(eio::PING));
                    lp.pong_by = Some(now + Self::ms(self.shared.opts.ping_timeout_ms));
                }
            }
        }
    }

    async fn on_command(&mut self, lp: &mut Loop, c: Command) {
        match c {
            Command::Get(tx) => {
                if lp.ws.is_some() {
                    let _ = tx.send(Reply::Refused("Bad request"));
                } else if lp.probed {
                    let _ = tx.send(Reply::Payload(vec![eio::NOOP]));
                } else if lp.pending.as_ref().is_some_and(|p| !p.is_closed()) {
                    // A second concurrent GET breaks the protocol: the
                    // first gets a close packet, this one an error.
                    let _ = tx.send(Reply::Refused("Bad request"));
                    lp.end = Some(End::error("second concurrent polling GET"));
                } else {
                    lp.pending = Some(tx);
                }
            }
            Command::Post(packets) => {
                for p in packets {
                    self.on_packet(lp, p);
                }
            }
            Command::Fail(why) => lp.end = Some(End::error(why)),
            Command::Disconnect(ns) => {
                if self.io.leave(&ns) {
                    self.io.push(Message::text(sio::disconnect(&ns)));
                }
            }
            Command::Upgrade(up) => {
                if lp.ws.is_some() || lp.probe.is_some() {
                    // Already upgraded (or upgrading): this socket is refused.
                    drop(up);
                    return;
                }
                lp.probe = Some(Box::new(Box::pin(self.websocket(up)).await));
            }
        }
    }

    /// A frame of the WebSocket being probed for an upgrade.
    async fn on_probe(&mut self, lp: &mut Loop, f: Option<Result<Message, tungstenite::Error>>) {
        let text = match &f {
            Some(Ok(Message::Text(t))) => Some(t.as_str()),
            _ => None,
        };
        match (text, lp.probed) {
            (Some("2probe"), false) => {
                let ok = match lp.probe.as_mut() {
                    Some(ws) => ws.send(Message::text("3probe")).await.is_ok(),
                    None => false,
                };
                if ok {
                    lp.probed = true;
                    if let Some(tx) = lp.pending.take() {
                        let _ = tx.send(Reply::Payload(vec![eio::NOOP]));
                    }
                } else {
                    lp.probe = None;
                }
            }
            (Some("5"), true) => {
                lp.ws = lp.probe.take().map(|ws| *ws);
                lp.probed = false;
                if let Some(tx) = lp.pending.take() {
                    let _ = tx.send(Reply::Payload(vec![eio::NOOP]));
                }
            }
            (Some(_), _) | (None, _)
                if matches!(f, Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            _ => {
                // Anything else ends the upgrade; the session stays on polling.
                lp.probe = None;
                lp.probed = false;
            }
        }
    }

    /// An Engine.IO packet from the client.
    fn on_packet(&mut self, lp: &mut Loop, p: Packet) {
        match p {
            Packet::Close => lp.end = Some(End::client(None)),
            Packet::Ping(data) => self.io.push(Message::text(format!("3{data}"))),
            Packet::Pong(_) => {
                lp.pong_by = None;
                lp.ping_at = Instant::now() + Self::ms(self.shared.opts.ping_interval_ms);
            }
            Packet::Message(d) => lp.inbound.push_back(d),
            Packet::Upgrade | Packet::Noop => {}
        }
    }

    /// Something other threads queued for this session.
    fn on_outbound(&mut self, lp: &mut Loop, item: Outbound) {
        match item {
            Outbound::Message(m) => {
                if !self.shared.opts.socketio {
                    self.io.push(match m {
                        Message::Text(t) => eio::text_message(t.as_str()),
                        other => other,
                    });
                } else if self.io.sid_of("/").is_some() {
                    for p in events::data_event("/", "message", &m).iter() {
                        self.io.push(p.clone());
                    }
                }
            }
            Outbound::Publication(p) => {
                if !self.shared.opts.socketio {
                    self.io.push(match &p.frame {
                        Message::Text(t) => eio::text_message(t.as_str()),
                        other => other.clone(),
                    });
                    return;
                }
                let ns = events::namespace_of(&p.channel);
                if self.io.sid_of(ns).is_some() {
                    let packets = p.socketio.get_or_init(|| events::publication_packets(&p));
                    for m in packets.iter() {
                        self.io.push(m.clone());
                    }
                }
            }
            Outbound::Call(mut call) => {
                let res = self.conn.apply_call(self.vm.lua(), &call);
                if let Some(reply) = call.reply.take() {
                    let _ = reply.send(res);
                }
            }
            Outbound::Close(..) => {
                lp.end = Some(End {
                    reason: None,
                    by_client: false,
                    disconnect: true,
                });
            }
        }
    }

    /// Writes what is queued: to the WebSocket, or to a waiting poll.
    async fn flush(&mut self, lp: &mut Loop) -> Result<(), String> {
        if let Some(ws) = lp.ws.as_mut() {
            if self.io.out.borrow().is_empty() {
                return Ok(());
            }
            let timeout = self.shared.server.cfg.write_timeout;
            let write = async {
                loop {
                    let next = self.io.out.borrow_mut().pop_front();
                    let Some(m) = next else { break };
                    // A CONNECT answer goes out on its own TCP write, a
                    // moment before what the script emitted in `on_connect`:
                    // clients that read several frames at once and listen
                    // for the next one only after handling the answer (the
                    // protocol test suite does) would miss the first event.
                    let connect_answer = matches!(&m, Message::Text(t) if t.starts_with("40"));
                    ws.feed(m).await?;
                    if connect_answer && !self.io.out.borrow().is_empty() {
                        ws.flush().await?;
                        tokio::time::sleep(CONNECT_GAP).await;
                    }
                }
                ws.flush().await
            };
            let sent = if timeout > 0 {
                tokio::time::timeout(Duration::from_secs(timeout), write)
                    .await
                    .map_err(|_| "slow client: write timeout".to_string())?
            } else {
                write.await
            };
            self.conn.metrics().send_messages.inc();
            return sent.map_err(|e| format!("write failed: {e}"));
        }
        if lp.pending.as_ref().is_some_and(|p| p.is_closed()) {
            lp.pending = None;
        }
        if lp.probed || self.io.out.borrow().is_empty() {
            return Ok(());
        }
        let Some(tx) = lp.pending.take() else {
            return Ok(());
        };
        let (body, n) = self.payload(&[]);
        if tx.send(Reply::Payload(body)).is_ok() {
            self.io.out.borrow_mut().drain(..n);
        }
        Ok(())
    }

    /// A polling payload of the queued packets (at most `maxPayload`
    /// bytes, at least one packet) followed by `extra`; and how many
    /// queued packets it holds.
    fn payload(&self, extra: &[Message]) -> (Vec<u8>, usize) {
        let out = self.io.out.borrow();
        let max = self.shared.opts.max_payload;
        let mut size = 0;
        let n = out
            .iter()
            .take_while(|m| {
                size += eio::payload_len(m);
                size <= max
            })
            .count()
            .max(1)
            .min(out.len());
        (eio::encode_payload(out.iter().take(n).chain(extra)), n)
    }

    /// Ends the transport: the client learns why when it can.
    async fn finish(&mut self, lp: &mut Loop, end: &End) {
        if end.disconnect && self.shared.opts.socketio {
            let names: Vec<Rc<str>> = self
                .io
                .namespaces
                .borrow()
                .iter()
                .map(|n| n.name.clone())
                .collect();
            for ns in names {
                self.io.push(Message::text(sio::disconnect(&ns)));
            }
        }
        self.conn.client.outbox.close();
        if let Some(mut ws) = lp.ws.take() {
            if !end.by_client {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    let queued: Vec<Message> = self.io.out.borrow_mut().drain(..).collect();
                    for m in queued {
                        ws.feed(m).await?;
                    }
                    ws.close(None).await
                })
                .await;
            }
            return;
        }
        if let Some(tx) = lp.pending.take() {
            let body = if end.by_client {
                vec![eio::NOOP]
            } else {
                self.payload(&[eio::bare(eio::CLOSE)]).0
            };
            let _ = tx.send(Reply::Payload(body));
        }
    }
}

#[cfg(test)]
#[path = "session_memory_tests.rs"]
mod memory_tests;

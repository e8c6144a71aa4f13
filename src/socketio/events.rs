//! The Socket.IO side of one session that Lua touches: the queue of
//! Engine.IO packets waiting for the transport, the namespaces connected,
//! `conn:emit`, the `ack` function handed to `on_message`, and the
//! conversions between event arguments and Lua values (binary attachments
//! are `mix.binary` values).
//!
//! Everything here lives on the session's worker thread (`Rc`, `RefCell`);
//! other threads reach the session through its outbox only.

use super::Command;
use super::socketio_packet as sio;
use super::target::{SocketIoRooms, SocketRef};
use crate::hub::Client;
use crate::lua::conn::EventSink;
use crate::lua::json;
use crate::publication::Publication;
use bytes::Bytes;
use mlua::{Lua, MultiValue, Table, Value};
use serde_json::Value as Json;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};
use tungstenite::Message;

/// A namespace this session has joined.
pub struct Namespace {
    pub name: Rc<str>,
    /// The Socket.IO sid of the session's socket in it.
    pub sid: Arc<str>,
}

/// Where the session's sockets are registered for backends (the target).
pub struct Registration {
    pub rooms: Arc<SocketIoRooms>,
    pub client: Arc<Client>,
    pub session: mpsc::Sender<Command>,
}

/// See the module documentation.
pub struct SessionIo {
    /// Packets waiting for the transport, in order.
    pub out: RefCell<VecDeque<Message>>,
    /// Wakes the session when a packet is queued from outside its loop.
    pub wake: Notify,
    pub namespaces: RefCell<Vec<Namespace>>,
    /// A namespace whose `on_connect` is running, and what was emitted to
    /// it meanwhile (sent after the CONNECT answer, dropped on refusal).
    connecting: RefCell<Option<(Rc<str>, Vec<Message>)>>,
    /// Packets `out` may hold (the server's `outboundQueueSize`).
    capacity: usize,
    registration: Option<Registration>,
}

impl Drop for SessionIo {
    fn drop(&mut self) {
        if let Some(r) = &self.registration {
            for n in self.namespaces.borrow().iter() {
                r.rooms.remove(&n.sid);
            }
        }
    }
}

impl SessionIo {
    pub fn new(capacity: usize, registration: Option<Registration>) -> Rc<Self> {
        Rc::new(Self {
            registration,
            out: RefCell::new(VecDeque::new()),
            wake: Notify::new(),
            namespaces: RefCell::new(Vec::new()),
            connecting: RefCell::new(None),
            capacity,
        })
    }

    /// Queues a packet for the transport.
    pub fn push(&self, m: Message) {
        self.out.borrow_mut().push_back(m);
        self.wake.notify_one();
    }

    /// The sid of the session's socket in `ns`, if connected.
    pub fn sid_of(&self, ns: &str) -> Option<Arc<str>> {
        self.namespaces
            .borrow()
            .iter()
            .find(|n| &*n.name == ns)
            .map(|n| n.sid.clone())
    }

    /// Starts holding what is emitted to `ns` while its `on_connect` runs.
    pub fn begin_connect(&self, ns: Rc<str>) {
        *self.connecting.borrow_mut() = Some((ns, Vec::new()));
    }

    /// Ends the connect of the namespace begun last: `Some(sid)` joins it,
    /// answers CONNECT and sends what was held; `None` drops what was held.
    pub fn end_connect(&self, sid: Option<Arc<str>>) {
        let Some((ns, held)) = self.connecting.borrow_mut().take() else {
            return;
        };
        if let Some(sid) = sid {
            self.push(Message::text(sio::connect_ok(&ns, &sid)));
            if let Some(r) = &self.registration {
                r.rooms.add(
                    sid.clone(),
                    SocketRef {
                        client: r.client.clone(),
                        namespace: Arc::from(&*ns),
                        session: r.session.clone(),
                    },
                );
            }
            self.namespaces
                .borrow_mut()
                .push(Namespace { name: ns, sid });
            for m in held {
                self.push(m);
            }
        }
    }

    /// Leaves `ns`; whether it was joined.
    pub fn leave(&self, ns: &str) -> bool {
        let mut list = self.namespaces.borrow_mut();
        let Some(pos) = list.iter().position(|n| &*n.name == ns) else {
            return false;
        };
        let gone = list.remove(pos);
        if let Some(r) = &self.registration {
            r.rooms.remove(&gone.sid);
        }
        true
    }

    /// Queues a packet of namespace `ns` and its attachments, if `ns` is
    /// connected (or connecting).
    pub fn send_packet(
        &self,
        ns: &str,
        text: String,
        attachments: Vec<Bytes>,
    ) -> Result<(), String> {
        let mut packets = Vec::with_capacity(1 + attachments.len());
        packets.push(Message::text(text));
        packets.extend(attachments.into_iter().map(Message::Binary));
        if let Some((connecting, held)) = &mut *self.connecting.borrow_mut()
            && &**connecting == ns
        {
            held.extend(packets);
            return Ok(());
        }
        if self.sid_of(ns).is_none() {
            return Err(format!("namespace {ns} is not connected"));
        }
        if self.out.borrow().len() + packets.len() > self.capacity {
            return Err("outbound queue full".into());
        }
        for p in packets {
            self.push(p);
        }
        Ok(())
    }
}

impl EventSink for SessionIo {
    fn emit(
        &self,
        lua: &Lua,
        namespace: &str,
        event: &str,
        args: MultiValue,
    ) -> Result<(), String> {
        let (args, attachments) = args_to_json(lua, args)?;
        let text = sio::event(namespace, event, &args, None, attachments.len());
        self.send_packet(namespace, text, attachments)
    }
}

/// Lua values -> JSON arguments and the attachments their `mix.binary`
/// values became.
pub fn args_to_json(lua: &Lua, args: MultiValue) -> Result<(Vec<Json>, Vec<Bytes>), String> {
    let max = json::max_size(lua);
    let mut attachments = Vec::new();
    let mut out = Vec::with_capacity(args.len());
    for v in args {
        match json::to_json_with_binary(&v, max, Some(&mut attachments)) {
            Ok(Ok(j)) => out.push(j),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok((out, attachments))
}

/// JSON arguments (placeholders resolved against `attachments`) -> a Lua
/// array, with `n` = the count (a `null` argument is a hole).
pub fn args_to_lua(lua: &Lua, args: &[Json], attachments: &[Bytes]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(args.len(), 1)?;
    for (i, a) in args.iter().enumerate() {
        t.raw_set(i + 1, json::to_lua_with_binary(lua, a, attachments)?)?;
    }
    t.raw_set("n", args.len())?;
    Ok(t)
}

/// The `ack` function of an event the client wants acknowledged; `acked`
/// records that the script answered (else the hook's return values are sent).
pub fn ack_function(
    lua: &Lua,
    io: &Rc<SessionIo>,
    ns: Rc<str>,
    id: u64,
    acked: Rc<Cell<bool>>,
) -> mlua::Result<mlua::Function> {
    let io: Weak<SessionIo> = Rc::downgrade(io);
    lua.create_function(move |lua, args: MultiValue| {
        let r = if acked.replace(true) {
            Err("already acknowledged".to_string())
        } else {
            match io.upgrade() {
                Some(io) => send_ack(lua, &io, &ns, id, args),
                None => Err("connection is closed".into()),
            }
        };
        match r {
            Ok(()) => Ok(Value::Nil),
            Err(e) => Ok(Value::String(lua.create_string(e)?)),
        }
    })
}

/// Sends ACK `id` of namespace `ns` with `args`.
pub fn send_ack(
    lua: &Lua,
    io: &SessionIo,
    ns: &str,
    id: u64,
    args: MultiValue,
) -> Result<(), String> {
    let (args, attachments) = args_to_json(lua, args)?;
    io.send_packet(ns, sio::ack(ns, id, &args, attachments.len()), attachments)
}

/// What the session makes of data sent with `conn:send`, `mesh.send` or a
/// publish: the argument of a Socket.IO event (JSON when the text is JSON,
/// else a string; binary as an attachment).
pub fn data_argument(data: &Message) -> (Json, Vec<Bytes>) {
    match data {
        Message::Text(t) => (
            serde_json::from_str::<Json>(t.as_str())
                .unwrap_or_else(|_| Json::String(t.to_string())),
            Vec::new(),
        ),
        Message::Binary(b) => (sio::placeholder_for(0), vec![b.clone()]),
        _ => (Json::Null, Vec::new()),
    }
}

/// The namespace a channel's publications go to: `N` for a channel `N#R`
/// (a room of namespace `N`), else `/`.
pub fn namespace_of(channel: &str) -> &str {
    match channel.split_once('#') {
        Some((ns, _)) if ns.starts_with('/') => ns,
        _ => "/",
    }
}

/// The Socket.IO packets of a publication: event `e` (default `message`) of
/// the channel's namespace with `d` as its argument.
pub fn publication_packets(p: &Publication) -> Arc<[Message]> {
    let (arg, attachments) = data_argument(&p.frame);
    let event = p.event.as_deref().unwrap_or("message");
    let text = sio::event(
        namespace_of(&p.channel),
        event,
        &[arg],
        None,
        attachments.len(),
    );
    std::iter::once(Message::text(text))
        .chain(attachments.into_iter().map(Message::Binary))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_wait_for_their_namespace_connect() {
        let io = SessionIo::new(8, None);
        assert!(io.send_packet("/", "42[\"x\"]".into(), vec![]).is_err());
        io.begin_connect(Rc::from("/"));
        io.send_packet("/", "42[\"auth\",{}]".into(), vec![])
            .unwrap();
        assert!(io.out.borrow().is_empty(), "held until the CONNECT answer");
        io.end_connect(Some(Arc::from("s1")));
        let out: Vec<Message> = io.out.borrow_mut().drain(..).collect();
        assert_eq!(out[0], Message::text(r#"40{"sid":"s1"}"#));
        assert_eq!(out[1], Message::text(r#"42["auth",{}]"#));
        assert!(io.leave("/"));
        assert!(!io.leave("/"));
    }

    #[test]
    fn binary_round_trips_through_lua() {
        let lua = Lua::new();
        let args = vec![serde_json::json!("a"), sio::placeholder_for(0)];
        let bins = vec![Bytes::from_static(&[1, 2, 3])];
        let t = args_to_lua(&lua, &args, &bins).unwrap();
        let mv: MultiValue = (1..=2).map(|i| t.raw_get::<Value>(i).unwrap()).collect();
        let (back, attachments) = args_to_json(&lua, mv).unwrap();
        assert_eq!(back, args);
        assert_eq!(attachments, bins);
    }

    #[test]
    fn publications_are_events_of_the_channels_namespace() {
        assert_eq!(namespace_of("news"), "/");
        assert_eq!(namespace_of("/chat#lobby"), "/chat");
        assert_eq!(namespace_of("a#b"), "/");
        let mut p = Publication::new("/chat#lobby", Message::text(r#"{"x":1}"#));
        p.event = Some(Arc::from("notify"));
        assert_eq!(
            &publication_packets(&p)[..],
            &[Message::text(r#"42/chat,["notify",{"x":1}]"#)]
        );
        let p = Publication::new("r", Message::Binary(Bytes::from_static(&[1])));
        let packets = publication_packets(&p);
        assert_eq!(
            packets[0],
            Message::text(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        );
        assert_eq!(packets[1], Message::Binary(Bytes::from_static(&[1])));
    }

    #[test]
    fn published_text_is_json_when_it_parses() {
        assert_eq!(
            data_argument(&Message::text(r#"{"a":1}"#)).0,
            serde_json::json!({"a":1})
        );
        assert_eq!(
            data_argument(&Message::text("hi")).0,
            Json::String("hi".into())
        );
    }
}

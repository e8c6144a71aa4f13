//! The Socket.IO layer of a session: an Engine.IO message becomes a
//! Socket.IO packet (binary attachments collected), a packet starts its
//! hook (`on_connect` for CONNECT, `on_message` for events, acks and
//! DISCONNECT), and a hook's end answers the CONNECT or acks the event.
//! The transport, the heartbeat and the outbox stay in [`super::session`].

use super::engineio_packet::Data;
use super::events;
use super::session::{Loop, Running};
use super::session_open::{Session, new_sid};
use super::socketio_packet::{self as sio, Kind};
use crate::lua::json;
use mlua::{MultiValue, Table, Value};
use std::cell::Cell;
use std::rc::Rc;
use tungstenite::Message;

impl Session {
    /// An Engine.IO message: to the script (Engine.IO only) or through the
    /// Socket.IO layer. An error closes the session.
    pub(super) fn on_message(&mut self, lp: &mut Loop, d: Data) -> Result<(), String> {
        let lua = self.vm.lua();
        if !self.shared.opts.socketio {
            let t = lua.create_table().map_err(|e| e.to_string())?;
            let (kind, data) = match &d {
                Data::Text(s) => ("text", s.as_bytes()),
                Data::Binary(b) => ("binary", &b[..]),
            };
            let _ = t.raw_set("type", kind);
            let _ = t.raw_set("data", lua.create_string(data).map_err(|e| e.to_string())?);
            lp.hook = self.vm.hook(&self.conn, "on_message", t);
            return Ok(());
        }
        match d {
            Data::Binary(b) => {
                let Some((_, atts)) = lp.partial.as_mut() else {
                    return Err("binary message without a binary packet".into());
                };
                atts.push(b);
                if lp
                    .partial
                    .as_ref()
                    .is_some_and(|(p, a)| a.len() == p.attachments)
                {
                    let (p, atts) = lp.partial.take().expect("checked");
                    self.dispatch(lp, p, atts)?;
                }
                Ok(())
            }
            Data::Text(t) => {
                if lp.partial.is_some() {
                    return Err("a binary packet's attachments are missing".into());
                }
                let p = sio::decode(&t).map_err(|e| e.to_string())?;
                if p.attachments > 0 {
                    lp.partial = Some((p, Vec::new()));
                    return Ok(());
                }
                self.dispatch(lp, p, Vec::new())
            }
        }
    }

    /// A complete Socket.IO packet: starts its hook.
    fn dispatch(
        &mut self,
        lp: &mut Loop,
        p: sio::Packet,
        atts: Vec<bytes::Bytes>,
    ) -> Result<(), String> {
        let lua = self.vm.lua().clone();
        let lua_err = |e: mlua::Error| e.to_string();
        let ns: Rc<str> = Rc::from(p.namespace.as_str());
        match p.kind {
            Kind::Connect => {
                if self.io.sid_of(&ns).is_some() {
                    return Ok(());
                }
                self.io.begin_connect(ns.clone());
                let info = lua.create_table().map_err(lua_err)?;
                info.raw_set("namespace", &*ns).map_err(lua_err)?;
                if let Some(auth) = &p.data {
                    info.raw_set("auth", json::to_lua(&lua, auth).map_err(lua_err)?)
                        .map_err(lua_err)?;
                }
                let q = lua.create_table().map_err(lua_err)?;
                for (k, v) in &self.query {
                    q.raw_set(k.as_str(), v.as_str()).map_err(lua_err)?;
                }
                info.raw_set("query", q).map_err(lua_err)?;
                let sid = new_sid();
                info.raw_set("sid", &*sid).map_err(lua_err)?;
                lp.hook = self.vm.hook(&self.conn, "on_connect", info);
                if lp.hook.is_some() {
                    lp.running = Running::Connect(ns, sid);
                } else {
                    self.io.end_connect(Some(sid));
                }
            }
            Kind::Disconnect => {
                if self.io.leave(&ns) {
                    let t = lua.create_table().map_err(lua_err)?;
                    t.raw_set("type", "disconnect").map_err(lua_err)?;
                    t.raw_set("namespace", &*ns).map_err(lua_err)?;
                    lp.hook = self.vm.hook(&self.conn, "on_message", t);
                }
            }
            Kind::Event | Kind::BinaryEvent | Kind::Ack | Kind::BinaryAck => {
                if self.io.sid_of(&ns).is_none() {
                    return Ok(());
                }
                let Some(serde_json::Value::Array(mut args)) = p.data else {
                    return Err("invalid payload".into());
                };
                let t = lua.create_table().map_err(lua_err)?;
                t.raw_set("namespace", &*ns).map_err(lua_err)?;
                if let Some(id) = p.id {
                    t.raw_set("id", id).map_err(lua_err)?;
                }
                let is_event = matches!(p.kind, Kind::Event | Kind::BinaryEvent);
                if is_event {
                    let name = match args.remove(0) {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    t.raw_set("type", "event").map_err(lua_err)?;
                    t.raw_set("event", name).map_err(lua_err)?;
                } else {
                    t.raw_set("type", "ack").map_err(lua_err)?;
                }
                let list = events::args_to_lua(&lua, &args, &atts).map_err(lua_err)?;
                t.raw_set("data", list.raw_get::<Value>(1).map_err(lua_err)?)
                    .map_err(lua_err)?;
                t.raw_set("args", list).map_err(lua_err)?;
                let running = match (is_event, p.id) {
                    (true, Some(id)) => {
                        let acked = Rc::new(Cell::new(false));
                        let f = events::ack_function(&lua, &self.io, ns.clone(), id, acked.clone())
                            .map_err(lua_err)?;
                        t.raw_set("ack", f).map_err(lua_err)?;
                        Running::Event { ns, id, acked }
                    }
                    _ => Running::None,
                };
                lp.hook = self.vm.hook(&self.conn, "on_message", t);
                if lp.hook.is_some() {
                    lp.running = running;
                }
            }
            Kind::ConnectError => return Err("a client may not send CONNECT_ERROR".into()),
        }
        Ok(())
    }

    /// A hook ended: answers a CONNECT, or acks an event with the hook's
    /// return values when the script did not ack it.
    pub(super) fn hook_ended(&mut self, lp: &mut Loop, r: Option<MultiValue>) {
        let lua = self.vm.lua().clone();
        match std::mem::replace(&mut lp.running, Running::None) {
            Running::None => {}
            Running::Connect(ns, sid) => {
                // A hook that failed refuses: it may have been checking auth.
                let errored = r.is_none();
                let mut vals = r.map(|v| v.into_iter()).into_iter().flatten();
                let refused = match (errored || r_is_refusal(vals.next()), vals.next()) {
                    (false, _) => None,
                    (true, Some(Value::String(s))) => Some((s.to_string_lossy(), vals.next())),
                    (true, Some(Value::Table(t))) => Some(refusal_table(&t)),
                    (true, _) => Some(("Not authorized".to_string(), None)),
                };
                match refused {
                    None => self.io.end_connect(Some(sid)),
                    Some((message, data)) => {
                        self.io.end_connect(None);
                        let data = data.and_then(|d| json::to_json(&d, usize::MAX).ok()?.ok());
                        self.io.push(Message::text(sio::connect_error(
                            &ns,
                            &message,
                            data.as_ref(),
                        )));
                    }
                }
            }
            Running::Event { ns, id, acked } => {
                if !acked.get() {
                    let args = r.unwrap_or_default();
                    if let Err(e) = events::send_ack(&lua, &self.io, &ns, id, args) {
                        tracing::warn!(client_id = %self.conn.client.id, "ack {id} not sent: {e}");
                    }
                }
            }
        }
    }
}

fn r_is_refusal(v: Option<Value>) -> bool {
    matches!(v, Some(Value::Boolean(false)))
}

/// `return false, {message = .., data = ..}` of `on_connect`.
fn refusal_table(t: &Table) -> (String, Option<Value>) {
    let message = t
        .raw_get::<Option<String>>("message")
        .ok()
        .flatten()
        .unwrap_or_else(|| "Not authorized".into());
    (
        message,
        t.raw_get::<Value>("data").ok().filter(|v| !v.is_nil()),
    )
}

//! The connection as Lua sees it: [`ConnLocal`] (worker-local state: the
//! environment, the context table) and the `conn` userdata with the methods
//! of the Lua API (`docs/lua-api.md`).
//!
//! The userdata holds only a weak reference, so a script that keeps a `conn`
//! after it closed gets an error value instead of keeping the connection's
//! memory alive.
//!
//! The connection's Lua objects (environment, userdata, context) are kept as
//! registry keys, not as handles: mlua keeps each live handle in a slot of
//! one auxiliary Lua stack, which LuaJIT caps at 8,000 slots per VM, so
//! handles held for a connection's whole life would cap a VM at a few
//! thousand connections. Handles exist only while they are used.

use super::WorkerCtx;
use super::json;
use super::recovery::{Recovery, Tracks, recovery_table, subscribe_options};
use crate::broker::BoxFuture;
use crate::broker::history::{HistoryError, Position};
use crate::client_id::ClientId;
use crate::frame::{FrameType, frame};
use crate::hub::Client;
use crate::metrics::Metrics;
use crate::outbox::{CallFunc, ConnCall, Outbound};
use crate::presence::MAX_USER_LEN;
use bytes::Bytes;
use mlua::{AnyUserData, Lua, MultiValue, RegistryKey, Table, UserData, UserDataMethods, Value};
use std::cell::{Cell, OnceCell, RefCell};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// What a protocol with named events (Socket.IO) adds to `conn`: the
/// server implements it and attaches it with [`ConnLocal::set_events`];
/// plain WebSocket connections have none and `conn:emit` is an error there.
pub trait EventSink {
    /// `conn:emit(event, ...)` (namespace `/`) and
    /// `conn:emit_to(namespace, event, ...)`.
    fn emit(&self, lua: &Lua, namespace: &str, event: &str, args: MultiValue)
    -> Result<(), String>;
}

/// The context key whose value is the connection's user for presence.
pub const USER_KEY: &str = "uid";

/// The user id a context value `uid` stands for: a string (1 to
/// [`MAX_USER_LEN`] bytes) as is, a whole number in decimal (`1001`, never
/// `1001.0`); anything else is no user.
pub fn user_id(v: &Value) -> Option<Arc<str>> {
    let s = match v {
        Value::String(s) => s.to_str().ok()?.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => format!("{}", *n as i64),
        _ => return None,
    };
    (!s.is_empty() && s.len() <= MAX_USER_LEN).then(|| Arc::from(s))
}

/// Worker-local state of one connection.
pub struct ConnLocal {
    pub client: Arc<Client>,
    pub server: usize,
    pub remote_addr: SocketAddr,
    /// The VM this connection lives in.
    lua: Lua,
    env: RefCell<Option<RegistryKey>>,
    ud: RefCell<Option<RegistryKey>>,
    context: RefCell<Option<RegistryKey>>,
    context_changed: Notify,
    /// Version of the entry script last run in `env` (hot reload).
    pub script_version: Cell<u64>,
    /// Cluster: what this connection's next frames wait for (the broker
    /// hearing its latest channels), set by `conn:subscribe`.
    /// (A `Cell`, not a `RefCell`: 8 bytes less in every connection.)
    hold_interest: Cell<Option<BoxFuture<'static, ()>>>,
    /// What only some connections use, made on first use (8 bytes in
    /// every other connection).
    extra: OnceCell<Box<Extra>>,
    ctx: Rc<CtxRef>,
}

/// The parts of [`ConnLocal`] few connections use.
#[derive(Default)]
struct Extra {
    /// Channels subscribed with a position and their writer gate; made on
    /// the first such subscribe.
    tracks: OnceCell<Tracks>,
    /// Named events (Socket.IO); `None` on WebSocket servers.
    events: RefCell<Option<Rc<dyn EventSink>>>,
}

/// Shared, worker-wide handles a connection needs outside Lua callbacks.
pub struct CtxRef {
    pub mesh: Arc<crate::mesh::Mesh>,
    pub wait_timeout: Duration,
    /// `outboundQueueSize` of each server (the bound of a recovery's buffer).
    pub outbound_queue_sizes: Vec<usize>,
}

impl ConnLocal {
    /// Creates the state and its `conn` userdata; the environment is attached
    /// by [`ConnLocal::set_env`] once the entry chunk has run in it.
    pub fn new(
        lua: &Lua,
        client: Arc<Client>,
        server: usize,
        remote_addr: SocketAddr,
        ctx: Rc<CtxRef>,
    ) -> mlua::Result<Rc<ConnLocal>> {
        let conn = Rc::new(ConnLocal {
            client,
            server,
            remote_addr,
            lua: lua.clone(),
            env: RefCell::new(None),
            ud: RefCell::new(None),
            context: RefCell::new(None),
            context_changed: Notify::new(),
            script_version: Cell::new(0),
            hold_interest: Cell::new(None),
            extra: OnceCell::new(),
            ctx,
        });
        let ud = lua.create_userdata(LuaConn {
            id: conn.client.id,
            conn: Rc::downgrade(&conn),
        })?;
        *conn.ud.borrow_mut() = Some(lua.create_registry_value(ud)?);
        Ok(conn)
    }

    /// Gives the connection named events (`conn:emit`).
    pub fn set_events(&self, sink: Rc<dyn EventSink>) {
        *self.extra().events.borrow_mut() = Some(sink);
    }

    fn extra(&self) -> &Extra {
        self.extra.get_or_init(Box::default)
    }

    /// Its named events, on a Socket.IO server.
    fn events(&self) -> Option<Rc<dyn EventSink>> {
        self.extra.get()?.events.borrow().clone()
    }

    fn emit(
        &self,
        lua: &Lua,
        namespace: &str,
        event: &str,
        args: MultiValue,
    ) -> Result<(), String> {
        let sink = self.events();
        match sink {
            Some(s) => s.emit(lua, namespace, event, args),
            None => Err("conn:emit needs a Socket.IO connection (protocol: socketio)".into()),
        }
    }

    pub fn set_env(&self, env: Table) -> mlua::Result<()> {
        *self.env.borrow_mut() = Some(self.lua.create_registry_value(env)?);
        Ok(())
    }

    /// A handle on the connection's environment (drop it after use).
    pub fn env(&self) -> Option<Table> {
        let key = self.env.borrow();
        self.lua.registry_value(key.as_ref()?).ok()
    }

    /// The `conn` object handed to hooks.
    pub fn userdata(&self) -> Option<AnyUserData> {
        let key = self.ud.borrow();
        self.lua.registry_value(key.as_ref()?).ok()
    }

    /// The VM this connection lives in.
    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    pub fn metrics(&self) -> &Metrics {
        &self.ctx.mesh.metrics
    }

    /// Releases every Lua reference so the VM can collect them.
    pub fn release(&self) {
        if let Some(extra) = self.extra.get() {
            extra.events.borrow_mut().take();
        }
        for slot in [&self.env, &self.ud, &self.context] {
            if let Some(key) = slot.borrow_mut().take() {
                let _ = self.lua.remove_registry_value(key);
            }
        }
    }

    fn context_table(&self, lua: &Lua) -> mlua::Result<Table> {
        if let Some(key) = &*self.context.borrow() {
            return lua.registry_value(key);
        }
        let t = lua.create_table()?;
        *self.context.borrow_mut() = Some(lua.create_registry_value(t.clone())?);
        Ok(t)
    }

    pub fn set_context_value(&self, lua: &Lua, k: Value, v: Value) -> mlua::Result<()> {
        if matches!(&k, Value::String(s) if s.as_bytes() == USER_KEY.as_bytes()) {
            self.ctx.mesh.hub.set_user(&self.client, user_id(&v));
        }
        self.context_table(lua)?.raw_set(k, v)?;
        self.context_changed.notify_waiters();
        Ok(())
    }

    pub fn set_context(&self, lua: &Lua, t: Option<Table>) -> mlua::Result<()> {
        let fresh = lua.create_table()?;
        if let Some(t) = t {
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair?;
                fresh.raw_set(k, v)?;
            }
        }
        let user = user_id(&fresh.raw_get::<Value>(USER_KEY)?);
        self.ctx.mesh.hub.set_user(&self.client, user);
        let key = lua.create_registry_value(fresh)?;
        if let Some(old) = self.context.borrow_mut().replace(key) {
            let _ = lua.remove_registry_value(old);
        }
        self.context_changed.notify_waiters();
        Ok(())
    }

    /// Cluster: resolves once the cluster hears every channel joined so
    /// far; `None` on one node.
    pub fn until_heard(&self) -> Option<BoxFuture<'static, ()>> {
        self.ctx.mesh.until_heard()
    }

    /// Cluster: holds this connection's outgoing frames (the subscribe
    /// reply first of all) until the broker has the channels just joined, so a
    /// publish the client's reply prompts is never missed. No-op on one node.
    fn hold_until_heard(&self) {
        if let Some(wait) = self.ctx.mesh.until_heard() {
            self.hold_interest.set(Some(wait));
        }
    }

    /// The channels subscribed with a position, if any was.
    pub fn tracks(&self) -> Option<&Tracks> {
        self.extra.get()?.tracks.get()
    }

    fn tracks_made(&self) -> &Tracks {
        self.extra().tracks.get_or_init(|| {
            let size = self.ctx.outbound_queue_sizes.get(self.server).copied();
            Tracks::new(size.unwrap_or(1))
        })
    }

    /// `ch` is no longer tracked (unsubscribed).
    fn untrack(&self, ch: &str) {
        if let Some(t) = self.tracks() {
            t.end(ch);
        }
    }

    /// `conn:subscribe(ch, {since = ..., positions = ...})`: joins `ch` and,
    /// when it keeps history, replays what came after `since` before any
    /// live publication, without gap or duplicate (see [`super::recovery`]).
    pub async fn subscribe_tracked(
        &self,
        ch: &str,
        since: Option<Position>,
        positions: bool,
    ) -> Result<Recovery, String> {
        let mesh = self.ctx.mesh.clone();
        // Socket.IO sessions write their own frames: no replay there.
        let socketio = self.events().is_some();
        if socketio || mesh.history_policy(ch).is_none() {
            mesh.subscribe(&self.client, ch)
                .map_err(|e| e.to_string())?;
            self.hold_until_heard();
            return Ok(Recovery {
                error: socketio.then(|| "recovery is for WebSocket servers only".to_string()),
                ..Default::default()
            });
        }
        let tracks = self.tracks_made();
        tracks.begin(ch, positions);
        if let Err(e) = mesh.subscribe(&self.client, ch) {
            tracks.end(ch);
            return Err(e.to_string());
        }
        // Cluster: live publications from every node reach this node
        // before history is read, or one published in between is lost.
        if let Some(heard) = mesh.until_heard() {
            heard.await;
        }
        #[cfg(feature = "test-hooks")]
        self.pause(ch, "subscribed").await;
        let read = mesh.history(ch, since.clone(), None).await;
        #[cfg(feature = "test-hooks")]
        self.pause(ch, "read").await;
        let (replay, top, recovered) = match read {
            Ok(page) => {
                let recovered = since.is_some() && page.complete;
                let replay = if recovered {
                    page.publications
                } else {
                    Vec::new()
                };
                (replay, page.top, recovered)
            }
            // The client's position is of a lost stream or bogus: it
            // starts over from the top.
            Err(HistoryError::UnknownEpoch { .. } | HistoryError::InvalidSince { .. }) => {
                match mesh.history(ch, None, Some(0)).await {
                    Ok(page) => (Vec::new(), page.top, false),
                    Err(e) => return Ok(self.untracked(ch, e)),
                }
            }
            Err(e) => return Ok(self.untracked(ch, e)),
        };
        let position = tracks.release(ch, replay, top);
        Ok(Recovery {
            recovered,
            position: Some(position),
            error: None,
        })
    }

    /// History could not be read: the channel is delivered as it comes.
    fn untracked(&self, ch: &str, e: HistoryError) -> Recovery {
        self.tracks_made().abandon(ch);
        Recovery {
            recovered: false,
            position: None,
            error: Some(e.to_string()),
        }
    }

    /// Test builds: on channels `test-pause:*`, announces `<point> <ch>` on
    /// channel `test-pause` and waits until one more live publication of
    /// `ch` is held, so a test can publish into each window of a recovery.
    #[cfg(feature = "test-hooks")]
    async fn pause(&self, ch: &str, point: &str) {
        if !ch.starts_with("test-pause:") {
            return;
        }
        let tracks = self.tracks_made();
        let before = tracks.buffered(ch);
        let marker = Arc::new(crate::publication::Publication::new(
            "test-pause",
            tungstenite::Message::text(format!("{point} {ch}")),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut announced = false;
        while tracks.buffered(ch) <= before {
            let held = tracks.held.notified();
            tokio::pin!(held);
            held.as_mut().enable();
            if !announced {
                self.ctx.mesh.publish(marker.clone()).await;
                announced = true;
            }
            if tokio::time::timeout_at(deadline, held).await.is_err() {
                return;
            }
        }
    }

    /// The wait set by `hold_until_heard`, taken once.
    pub fn take_hold(&self) -> Option<BoxFuture<'static, ()>> {
        self.hold_interest.take()
    }

    /// Applies a remote `conn.call`.
    pub fn apply_call(&self, lua: &Lua, call: &ConnCall) -> Result<(), String> {
        let arg = |i: usize| call.args.get(i).cloned().unwrap_or(serde_json::Value::Null);
        let lua_err = |e: mlua::Error| e.to_string();
        match call.func {
            CallFunc::SetContextValue => {
                let key = match arg(0) {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return Err("set_context_value needs a key as its first argument".into()),
                };
                let v = json::to_lua(lua, &arg(1)).map_err(lua_err)?;
                let k = Value::String(lua.create_string(&key).map_err(lua_err)?);
                self.set_context_value(lua, k, v).map_err(lua_err)
            }
            CallFunc::SetContext => match json::to_lua(lua, &arg(0)).map_err(lua_err)? {
                Value::Table(t) => self.set_context(lua, Some(t)).map_err(lua_err),
                Value::Nil => self.set_context(lua, None).map_err(lua_err),
                _ => Err("set_context needs an object".into()),
            },
            CallFunc::Close => self
                .client
                .outbox
                .push(Outbound::Close(1000, String::new()))
                .map_err(|e| format!("close failed: {e:?}")),
            CallFunc::Subscribe | CallFunc::Unsubscribe => {
                let mut names = Vec::new();
                for a in &call.args {
                    match a {
                        serde_json::Value::String(s) => names.push(s.clone()),
                        serde_json::Value::Array(v) => {
                            names.extend(v.iter().filter_map(|x| x.as_str().map(str::to_string)))
                        }
                        _ => return Err("channels must be strings".into()),
                    }
                }
                if names.is_empty() {
                    return Err("no channel given".into());
                }
                for ch in names {
                    if matches!(call.func, CallFunc::Subscribe) {
                        self.ctx
                            .mesh
                            .subscribe(&self.client, &ch)
                            .map_err(|e| e.to_string())?;
                    } else {
                        self.ctx.mesh.unsubscribe(&self.client, &ch);
                        self.untrack(&ch);
                    }
                }
                Ok(())
            }
        }
    }
}

/// The `conn` userdata.
pub struct LuaConn {
    id: ClientId,
    conn: Weak<ConnLocal>,
}

impl LuaConn {
    fn get(&self) -> Result<Rc<ConnLocal>, String> {
        self.conn
            .upgrade()
            .ok_or_else(|| format!("connection {} is closed", self.id))
    }
}

/// `nil` on success, the message on failure: the `err` convention.
fn err_value(lua: &Lua, r: Result<(), String>) -> mlua::Result<Value> {
    match r {
        Ok(()) => Ok(Value::Nil),
        Err(e) => Ok(Value::String(lua.create_string(e)?)),
    }
}

/// Collects channel names from `conn:subscribe("a", "b")` or `conn:subscribe({"a","b"})`.
fn channel_args(args: MultiValue) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for v in args {
        match v {
            Value::String(s) => out.push(s.to_string_lossy()),
            Value::Table(t) => {
                for s in t.sequence_values::<String>() {
                    out.push(s.map_err(|e| e.to_string())?);
                }
            }
            Value::Number(n) => out.push(n.to_string()),
            Value::Integer(n) => out.push(n.to_string()),
            other => {
                return Err(format!(
                    "channel must be a string, got {}",
                    other.type_name()
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("no channel given".into());
    }
    Ok(out)
}

impl UserData for LuaConn {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("client_id", |_, this, ()| Ok(this.id.to_string()));
        m.add_method("remote_addr", |_, this, ()| {
            Ok(this.conn.upgrade().map(|c| c.remote_addr.to_string()))
        });
        m.add_method("context", |lua, this, ()| match this.conn.upgrade() {
            Some(c) => c.context_table(lua).map(Value::Table),
            None => Ok(Value::Nil),
        });
        m.add_method("context_value", |lua, this, k: Value| {
            match this.conn.upgrade() {
                Some(c) => c.context_table(lua)?.raw_get::<Value>(k),
                None => Ok(Value::Nil),
            }
        });
        m.add_method(
            "set_context_value",
            |lua, this, (k, v): (Value, Value)| match this.get() {
                Ok(c) => c.set_context_value(lua, k, v).map(|_| Value::Nil),
                Err(e) => err_value(lua, Err(e)),
            },
        );
        m.add_method("set_context", |lua, this, t: Option<Table>| {
            match this.get() {
                Ok(c) => c.set_context(lua, t).map(|_| Value::Nil),
                Err(e) => err_value(lua, Err(e)),
            }
        });
        m.add_async_method("wait_context_value", |lua, this, k: Value| async move {
            let c = match this.get() {
                Ok(c) => c,
                Err(e) => return Ok((Value::Nil, Value::String(lua.create_string(e)?))),
            };
            // Capped: a huge waitContextTimeout must not overflow the clock.
            let wait = c
                .ctx
                .wait_timeout
                .min(Duration::from_secs(100 * 365 * 86_400));
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let changed = c.context_changed.notified();
                let v: Value = c.context_table(&lua)?.raw_get(k.clone())?;
                if !v.is_nil() {
                    return Ok((v, Value::Nil));
                }
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Ok((Value::Nil, Value::String(lua.create_string("timeout")?)));
                }
            }
        });
        m.add_async_method("subscribe", |lua, this, args: MultiValue| async move {
            let c = match this.get() {
                Ok(c) => c,
                Err(e) => return err_value(&lua, Err(e)).map(|v| (v, Value::Nil)),
            };
            let (ch, opts) = match subscribe_options(&args) {
                Ok(Some(o)) => o,
                Ok(None) => {
                    let r = channel_args(args).and_then(|names| {
                        let joined = names.iter().try_for_each(|ch| {
                            c.ctx
                                .mesh
                                .subscribe(&c.client, ch)
                                .map_err(|e| e.to_string())
                        });
                        c.hold_until_heard();
                        joined
                    });
                    return err_value(&lua, r).map(|v| (v, Value::Nil));
                }
                Err(e) => return err_value(&lua, Err(e)).map(|v| (v, Value::Nil)),
            };
            match c.subscribe_tracked(&ch, opts.since, opts.positions).await {
                Ok(r) => Ok((Value::Nil, Value::Table(recovery_table(&lua, &r)?))),
                Err(e) => err_value(&lua, Err(e)).map(|v| (v, Value::Nil)),
            }
        });
        m.add_method("unsubscribe", |lua, this, args: MultiValue| {
            let r = this.get().and_then(|c| {
                for ch in channel_args(args)? {
                    c.ctx.mesh.unsubscribe(&c.client, &ch);
                    c.untrack(&ch);
                }
                Ok(())
            });
            err_value(lua, r)
        });
        m.add_method(
            "send",
            |lua, this, (data, t): (mlua::LuaString, Option<String>)| {
                let r = this.get().and_then(|c| {
                    let ft = FrameType::parse(t.as_deref())
                        .ok_or_else(|| format!("unknown type {:?}; use text or binary", t))?;
                    let msg = frame(Bytes::copy_from_slice(&data.as_bytes()), ft)
                        .map_err(|e| e.to_string())?;
                    c.client
                        .outbox
                        .push(Outbound::Message(msg))
                        .map_err(|e| format!("send failed: {e:?}"))
                });
                err_value(lua, r)
            },
        );
        m.add_method("emit", |lua, this, (event, args): (String, MultiValue)| {
            let r = this.get().and_then(|c| c.emit(lua, "/", &event, args));
            err_value(lua, r)
        });
        m.add_method(
            "emit_to",
            |lua, this, (namespace, event, args): (String, String, MultiValue)| {
                let r = this
                    .get()
                    .and_then(|c| c.emit(lua, &namespace, &event, args));
                err_value(lua, r)
            },
        );
        m.add_method("close", |lua, this, ()| {
            let r = this.get().and_then(|c| {
                c.client
                    .outbox
                    .push(Outbound::Close(1000, String::new()))
                    .map_err(|e| format!("close failed: {e:?}"))
            });
            err_value(lua, r)
        });
        m.add_meta_method("__tostring", |_, this, ()| Ok(format!("conn({})", this.id)));
    }
}

/// Worker-wide handles for connections, from the VM's app data.
pub fn ctx_ref(lua: &Lua) -> Rc<CtxRef> {
    let ctx = lua
        .app_data_ref::<WorkerCtx>()
        .expect("worker context is installed before connections");
    Rc::new(CtxRef {
        mesh: ctx.mesh.clone(),
        wait_timeout: Duration::from_secs(ctx.config.engine.luavm.wait_context_timeout.max(1)),
        outbound_queue_sizes: ctx
            .config
            .engine
            .servers
            .iter()
            .map(|s| s.outbound_queue_size)
            .collect(),
    })
}

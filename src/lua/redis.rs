//! `mix.redis`: the named Redis connections of `engine.luavm.redis`, for
//! scripts.
//!
//! This module owns the Lua side (`mix.redis.connection(name)` and
//! `redis:command(cmd, ...)`), the per-worker connection pools behind it, and
//! the conversion between Lua values and Redis commands and replies. It never
//! raises a Lua error for a Redis or network problem: every failure is
//! `nil, err`.
//!
//! Connections:
//! - `mix.redis.connection(name)` only looks the name up (`nil, "unknown redis
//!   connection <name>"` when it is not configured); nothing connects until a
//!   command needs it.
//! - Each worker (one Lua VM, one thread) keeps its own pool per name. A pool
//!   is `ceil(poolSize / workers)` slots (at least one), each one multiplexed
//!   (pipelined) connection, connected on first use and used round-robin, so
//!   the whole process holds at most about `poolSize` connections per name.
//! - A connection whose socket closed (Redis restarted, network reset) is
//!   noticed by its reader task and replaced on the slot's next command; one
//!   whose command timed out or failed with an I/O error is dropped as well.
//!   Redis going away and coming back needs no gateway restart.
//! - Connecting (TCP, `AUTH` with `password`, `SELECT` with `db`) is bounded
//!   by `connectTimeout` (default 1 s); a command's reply by `commandTimeout`
//!   (default 5 s). An unreachable Redis is `nil, err`, never a hang.
//! - Commands that would change the shared connection's state or take it over
//!   (`SELECT`, `AUTH`, `HELLO`, `MULTI`/`EXEC`/`WATCH`, `SUBSCRIBE` and friends,
//!   `MONITOR`, `QUIT`, `RESET`) are refused with `nil, err`: use `db` in the
//!   config, and `EVAL` for atomic groups. Blocking commands (`BLPOP`...) work
//!   but hold their connection's pipeline; give them their own named
//!   connection and a `commandTimeout` above their own timeout.
//!
//! `redis:command(cmd, args...)`, e.g. `redis:command("set", "k", "v")`,
//! yields the hook's coroutine (other connections keep running) and returns
//! `reply, nil` or `nil, err`.
//!
//! Arguments: strings are sent as they are (binary-safe); numbers as decimal
//! text, integral ones without `.0` (`5`, `1.5`, `inf`); booleans as `1` /
//! `0` (as go-redis does). `nil`, tables and functions are refused.
//!
//! Replies:
//! - nil (missing key) → `nil` (and no error);
//! - integer → number (exact up to 2^53, LuaJIT numbers are doubles);
//! - status (`OK`, `PONG`) → string; bulk string → string, binary-safe;
//! - array → table indexed from 1; a nil element inside it (`MGET` of a
//!   missing key) is `false`, so `#t` and `ipairs` see every element;
//! - error reply (`WRONGTYPE ...`) → `nil, "WRONGTYPE ..."` (Redis's text);
//!   an error nested inside an array (from `EVAL`) is `{err = "<text>"}`, as
//!   Redis's own Lua scripting represents it;
//! - connection failure or timeout → `nil, "redis <name> (<addr>): ..."`.

use super::WorkerCtx;
use crate::config::RedisConnConfig;
use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, Shared};
use mlua::{Lua, MetaMethod, MultiValue, Table, UserData, UserDataMethods, Value};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisConnectionInfo, RedisError};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Commands refused because they would break a shared, multiplexed connection.
const REFUSED: &[&str] = &[
    "SELECT",
    "AUTH",
    "HELLO",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "QUIT",
    "RESET",
];

/// Builds the `mix.redis` table.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    lua.set_app_data(Pools::default());
    let t = lua.create_table()?;
    t.set(
        "connection",
        lua.create_function(|lua, name: Value| match pool(lua, name) {
            Ok(pool) => Ok((
                Value::UserData(lua.create_userdata(Redis { pool })?),
                Value::Nil,
            )),
            Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e)?))),
        })?,
    )?;
    Ok(t)
}

/// This VM's pools, by connection name.
#[derive(Default)]
struct Pools(RefCell<HashMap<String, Rc<Pool>>>);

/// The pool of `name`, created (unconnected) on first use.
fn pool(lua: &Lua, name: Value) -> Result<Rc<Pool>, String> {
    let name = match name {
        Value::String(s) => s.to_string_lossy(),
        _ => return Err("mix.redis.connection needs a connection name".into()),
    };
    let name = name.as_str();
    let pools = lua
        .app_data_ref::<Pools>()
        .ok_or("mix.redis is not installed")?;
    if let Some(p) = pools.0.borrow().get(name) {
        return Ok(p.clone());
    }
    let ctx = lua.app_data_ref::<WorkerCtx>().ok_or("no worker context")?;
    let conf = ctx
        .config
        .engine
        .luavm
        .redis
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| format!("unknown redis connection {name}"))?;
    let p = Rc::new(Pool::new(conf, ctx.config.worker_count()));
    pools.0.borrow_mut().insert(name.to_string(), p.clone());
    Ok(p)
}

/// What a connection attempt needs; shared by the attempts of one pool.
struct Params {
    /// `redis <name> (<addr>)`, the prefix of connection errors.
    label: String,
    addr: String,
    info: RedisConnectionInfo,
    connect_timeout: Duration,
    command_timeout: Duration,
}

/// A connected slot: the connection and whether its reader task has ended.
#[derive(Clone)]
struct Live {
    id: u64,
    conn: MultiplexedConnection,
    closed: Arc<AtomicBool>,
}

type Connecting = Shared<LocalBoxFuture<'static, Result<Live, String>>>;

enum Slot {
    Empty,
    /// An attempt in flight; every command for this slot awaits the same one.
    Connecting(u64, Connecting),
    Ready(Live),
}

/// One worker's connections for one name; see the module documentation.
struct Pool {
    params: Rc<Params>,
    slots: Vec<RefCell<Slot>>,
    next_slot: Cell<usize>,
    next_id: Cell<u64>,
}

impl Pool {
    fn new(c: &RedisConnConfig, workers: usize) -> Self {
        let addr = if c.addr.contains(':') && !c.addr.ends_with(']') {
            c.addr.clone()
        } else {
            format!("{}:6379", c.addr)
        };
        let mut info = RedisConnectionInfo::default()
            .set_db(c.db)
            .set_lib_name("connmix", env!("CARGO_PKG_VERSION"));
        if !c.password.is_empty() {
            info = info.set_password(&c.password);
        }
        let size = c.pool_size.div_ceil(workers.max(1)).max(1);
        Self {
            params: Rc::new(Params {
                label: format!("redis {} ({})", c.name, addr),
                addr,
                info,
                // Validated at start; never panic on a value that slipped by.
                connect_timeout: Duration::try_from_secs_f64(c.connect_timeout)
                    .unwrap_or(Duration::from_secs(1)),
                command_timeout: Duration::try_from_secs_f64(c.command_timeout)
                    .unwrap_or(Duration::from_secs(5)),
            }),
            slots: (0..size).map(|_| RefCell::new(Slot::Empty)).collect(),
            next_slot: Cell::new(0),
            next_id: Cell::new(0),
        }
    }

    /// A usable connection of slot `i`: the current one, the attempt already
    /// in flight, or a new attempt.
    async fn live(&self, i: usize) -> Result<Live, String> {
        let (id, attempt) = {
            let mut slot = self.slots[i].borrow_mut();
            match &*slot {
                Slot::Ready(l) if !l.closed.load(Ordering::Acquire) => return Ok(l.clone()),
                Slot::Connecting(id, f) => (*id, f.clone()),
                _ => {
                    let id = self.next_id.get() + 1;
                    self.next_id.set(id);
                    let f = connect(self.params.clone(), id).boxed_local().shared();
                    *slot = Slot::Connecting(id, f.clone());
                    (id, f)
                }
            }
        };
        let res = attempt.await;
        let mut slot = self.slots[i].borrow_mut();
        if matches!(&*slot, Slot::Connecting(cur, _) if *cur == id) {
            *slot = match &res {
                Ok(l) => Slot::Ready(l.clone()),
                Err(_) => Slot::Empty,
            };
        }
        res
    }

    /// Drops slot `i`'s connection if it is still connection `id`.
    fn discard(&self, i: usize, id: u64) {
        let mut slot = self.slots[i].borrow_mut();
        if matches!(&*slot, Slot::Ready(l) if l.id == id) {
            *slot = Slot::Empty;
        }
    }

    /// Runs one command; a Redis error reply is `Err` with Redis's text.
    async fn command(&self, cmd: redis::Cmd) -> Result<redis::Value, String> {
        let i = self.next_slot.get() % self.slots.len();
        self.next_slot.set(self.next_slot.get().wrapping_add(1));
        let mut live = self.live(i).await?;
        let p = &self.params;
        match tokio::time::timeout(p.command_timeout, live.conn.req_packed_command(&cmd)).await {
            Err(_) => {
                self.discard(i, live.id);
                Err(format!(
                    "{}: timeout: no reply within {:?} (commandTimeout)",
                    p.label, p.command_timeout
                ))
            }
            Ok(Ok(redis::Value::ServerError(e))) => Err(server_error_text(e.code(), e.details())),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => match e.code() {
                Some(code) => Err(server_error_text(code, e.detail())),
                None => {
                    if e.is_io_error() || e.is_unrecoverable_error() {
                        self.discard(i, live.id);
                    }
                    Err(format!("{}: {e}", p.label))
                }
            },
        }
    }
}

/// Opens a connection: TCP, then AUTH/SELECT, all within `connect_timeout`.
async fn connect(p: Rc<Params>, id: u64) -> Result<Live, String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(p.addr.as_str())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let (conn, driver) = MultiplexedConnection::new_with_config(&p.info, stream, config)
            .await
            .map_err(|e| format!("connect: {}", error_text(&e)))?;
        // The reader/writer task ends when the socket does (or when every
        // handle is gone); the flag lets the slot notice before its next use.
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        tokio::spawn(async move {
            driver.await;
            flag.store(true, Ordering::Release);
        });
        Ok::<_, String>(Live { id, conn, closed })
    };
    match tokio::time::timeout(p.connect_timeout, attempt).await {
        Ok(Ok(live)) => Ok(live),
        Ok(Err(e)) => Err(format!("{}: {e}", p.label)),
        Err(_) => Err(format!(
            "{}: connect: timeout after {:?} (connectTimeout)",
            p.label, p.connect_timeout
        )),
    }
}

/// `WRONGTYPE Operation against a key...`: the reply as Redis wrote it.
fn server_error_text(code: &str, detail: Option<&str>) -> String {
    match detail {
        Some(d) if !d.is_empty() => format!("{code} {d}"),
        _ => code.to_string(),
    }
}

fn error_text(e: &RedisError) -> String {
    match e.code() {
        Some(code) => server_error_text(code, e.detail()),
        None => e.to_string(),
    }
}

/// The `redis` object that `mix.redis.connection(name)` returns.
struct Redis {
    pool: Rc<Pool>,
}

impl UserData for Redis {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_method("command", |lua, this, args: MultiValue| {
            let pool = this.pool.clone();
            drop(this);
            async move {
                let res = match build_command(args) {
                    Ok(cmd) => pool.command(cmd).await,
                    Err(e) => Err(e),
                };
                match res.and_then(|v| {
                    reply_to_lua(&lua, v, false).map_err(|e| format!("reply conversion: {e}"))
                }) {
                    Ok(v) => Ok((v, Value::Nil)),
                    Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e)?))),
                }
            }
        });
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(this.pool.params.label.clone())
        });
    }
}

/// Turns `cmd, args...` into a Redis command; see the module documentation.
fn build_command(args: MultiValue) -> Result<redis::Cmd, String> {
    let mut it = args.into_iter();
    let name = match it.next() {
        Some(Value::String(s)) if !s.as_bytes().is_empty() => s.as_bytes().to_vec(),
        Some(Value::String(_)) | None | Some(Value::Nil) => {
            return Err("redis:command needs a command name".into());
        }
        Some(other) => {
            return Err(format!(
                "redis:command: command name must be a string, got {}",
                other.type_name()
            ));
        }
    };
    let upper = String::from_utf8_lossy(&name).to_ascii_uppercase();
    if REFUSED.contains(&upper.as_str()) {
        return Err(format!(
            "redis:command: {upper} is not supported on a shared connection"
        ));
    }
    let mut cmd = redis::Cmd::new();
    cmd.arg(name);
    for (n, v) in it.enumerate() {
        let bytes: Vec<u8> = match v {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Integer(i) => i.to_string().into_bytes(),
            Value::Number(f) if f.is_nan() => {
                return Err(format!("redis:command: argument #{} is NaN", n + 2));
            }
            // Rust prints integral floats without ".0" and never in
            // exponent form; infinities as "inf" / "-inf", as Redis reads them.
            Value::Number(f) => format!("{f}").into_bytes(),
            Value::Boolean(b) => {
                if b {
                    b"1".to_vec()
                } else {
                    b"0".to_vec()
                }
            }
            other => {
                return Err(format!(
                    "redis:command: argument #{} is {}; use a string, number or boolean",
                    n + 2,
                    if other.is_nil() {
                        "nil"
                    } else {
                        other.type_name()
                    }
                ));
            }
        };
        cmd.arg(bytes);
    }
    Ok(cmd)
}

/// Converts a reply; `nested` is true inside an array (nil → `false`, an
/// error → `{err = text}`).
fn reply_to_lua(lua: &Lua, v: redis::Value, nested: bool) -> mlua::Result<Value> {
    use redis::Value as R;
    let list = |items: Vec<R>| -> mlua::Result<Value> {
        let t = lua.create_table_with_capacity(items.len(), 0)?;
        for (i, item) in items.into_iter().enumerate() {
            t.raw_set(i + 1, reply_to_lua(lua, item, true)?)?;
        }
        Ok(Value::Table(t))
    };
    Ok(match v {
        R::Nil if nested => Value::Boolean(false),
        R::Nil => Value::Nil,
        R::Int(i) => Value::Integer(i),
        R::BulkString(b) => Value::String(lua.create_string(b)?),
        R::SimpleString(s) => Value::String(lua.create_string(s)?),
        R::Okay => Value::String(lua.create_string("OK")?),
        R::Array(items) | R::Set(items) => list(items)?,
        R::Push { data, .. } => list(data)?,
        // RESP3 only (never negotiated here): flattened as RESP2 sends it.
        R::Map(pairs) => list(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())?,
        R::Attribute { data, .. } => reply_to_lua(lua, *data, nested)?,
        R::Double(f) => Value::Number(f),
        R::Boolean(b) => Value::Boolean(b),
        R::VerbatimString { text, .. } => Value::String(lua.create_string(text)?),
        R::BigNumber(n) => Value::String(lua.create_string(n)?),
        R::ServerError(e) => {
            let t = lua.create_table()?;
            t.set("err", server_error_text(e.code(), e.details()))?;
            Value::Table(t)
        }
        other => Value::String(lua.create_string(format!("{other:?}"))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(lua: &Lua, code: &str) -> MultiValue {
        lua.load(code).eval::<MultiValue>().unwrap()
    }

    fn packed(cmd: &redis::Cmd) -> String {
        String::from_utf8(cmd.get_packed_command()).unwrap()
    }

    #[test]
    fn arguments_become_redis_text() {
        let lua = Lua::new();
        let cmd = build_command(args(&lua, r#"return "zadd", "k", 5, 1.5, true, false"#)).unwrap();
        assert_eq!(
            packed(&cmd),
            "*6\r\n$4\r\nzadd\r\n$1\r\nk\r\n$1\r\n5\r\n$3\r\n1.5\r\n$1\r\n1\r\n$1\r\n0\r\n"
        );
        let cmd = build_command(args(&lua, r#"return "set", "k", math.huge"#)).unwrap();
        assert!(packed(&cmd).ends_with("$3\r\ninf\r\n"), "{}", packed(&cmd));
        let e = build_command(args(&lua, r#"return "set", "k", nil"#)).unwrap_err();
        assert!(e.contains("argument #3 is nil"), "{e}");
        let e = build_command(args(&lua, r#"return "get", {}"#)).unwrap_err();
        assert!(e.contains("argument #2 is table"), "{e}");
        let e = build_command(args(&lua, r#"return "select", 1"#)).unwrap_err();
        assert!(e.contains("SELECT is not supported"), "{e}");
        assert!(build_command(MultiValue::new()).is_err());
    }

    #[test]
    fn replies_become_lua_values() {
        use redis::Value as R;
        let lua = Lua::new();
        let v = reply_to_lua(
            &lua,
            R::Array(vec![
                R::BulkString(b"a\0b".to_vec()),
                R::Nil,
                R::Int(7),
                R::Okay,
                R::Array(vec![]),
            ]),
            false,
        )
        .unwrap();
        lua.globals().set("v", v).unwrap();
        let ok: bool = lua
            .load(r#"return v[1] == "a\0b" and v[2] == false and v[3] == 7 and v[4] == "OK" and #v[5] == 0 and #v == 5"#)
            .eval()
            .unwrap();
        assert!(ok);
        assert!(reply_to_lua(&lua, R::Nil, false).unwrap().is_nil());
    }
}

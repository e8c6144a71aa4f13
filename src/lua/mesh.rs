//! `mix.mesh`: publish to a channel, send to a client id and ask a channel's
//! presence from Lua, through the same [`crate::mesh::Mesh`] the HTTP API
//! uses, so a script reaches subscribers on every node.

use super::WorkerCtx;
use crate::client_id::parse_client_id;
use crate::frame::{FrameType, frame};
use crate::mesh::Published;
use crate::presence::Presence;
use crate::publication::Publication;
use crate::publish_once::{MAX_EVENT_LEN, MAX_KEY_LEN, Once, answer, from_answer, publish_once};
use bytes::Bytes;
use mlua::{Lua, Table, Value};
use std::sync::Arc;
use std::time::Duration;

fn mesh(lua: &Lua) -> mlua::Result<Arc<crate::mesh::Mesh>> {
    Ok(lua
        .app_data_ref::<WorkerCtx>()
        .ok_or_else(|| mlua::Error::runtime("no worker context"))?
        .mesh
        .clone())
}

fn build(data: &mlua::LuaString, t: Option<String>) -> Result<tungstenite::Message, String> {
    let ft = FrameType::parse(t.as_deref())
        .ok_or_else(|| format!("unknown type {t:?}; use text or binary"))?;
    frame(Bytes::copy_from_slice(&data.as_bytes()), ft).map_err(|e| e.to_string())
}

pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "publish",
        lua.create_async_function(
            |lua, (ch, data, third, fourth): (String, mlua::LuaString, Value, Value)| async move {
                let (ty, opts) = match (third, fourth) {
                    (Value::Table(o), Value::Nil) => (None, Some(o)),
                    (Value::Nil, o) => (None, options_table(o)?),
                    (Value::String(t), o) => (Some(t.to_str()?.to_string()), options_table(o)?),
                    (other, _) => {
                        return Err(mlua::Error::runtime(format!(
                            "the third argument is a type (\"text\" or \"binary\") or an options table, not {}",
                            other.type_name()
                        )));
                    }
                };
                let opts = PublishOptions::read(opts)?;
                let msg = build(&data, ty).map_err(mlua::Error::runtime)?;
                if !crate::hub::valid_channel(&ch) {
                    return Err(mlua::Error::runtime(format!("invalid channel {ch:?}")));
                }
                let p = Arc::new(Publication {
                    event: opts.event,
                    ..Publication::new(&ch, msg)
                });
                let mesh = mesh(&lua)?;
                let Some(key) = opts.key else {
                    return counts(&lua, mesh.publish(p).await);
                };
                // Boxed: the keyed path's state stays out of every plain
                // publish's future.
                Box::pin(publish_keyed(&lua, mesh, ch, key, p)).await
            },
        )?,
    )?;
    t.set(
        "send",
        lua.create_async_function(
            |lua, (id, data, ty): (Value, mlua::LuaString, Option<String>)| async move {
                let id = match &id {
                    Value::String(s) => parse_client_id(&s.to_string_lossy()),
                    Value::Number(n) if *n >= 0.0 => Some(*n as u64),
                    Value::Integer(n) if *n >= 0 => Some(*n as u64),
                    _ => None,
                };
                let r = match (id, build(&data, ty)) {
                    (None, _) => Err("invalid client id".to_string()),
                    (_, Err(e)) => Err(e),
                    (Some(id), Ok(msg)) => {
                        mesh(&lua)?.send(id, msg).await.map_err(|e| e.to_string())
                    }
                };
                match r {
                    Ok(()) => Ok(Value::Nil),
                    Err(e) => Ok(Value::String(lua.create_string(e)?)),
                }
            },
        )?,
    )?;
    t.set(
        "presence",
        lua.create_async_function(|lua, ch: String| async move {
            let p = presence(&lua, &ch, true).await?;
            let t = lua.create_table()?;
            t.set("count", p.count)?;
            t.set(
                "clients",
                lua.create_sequence_from(p.clients.iter().map(u64::to_string))?,
            )?;
            t.set(
                "users",
                lua.create_sequence_from(p.users.iter().map(|u| &**u))?,
            )?;
            cluster_fields(&lua, &t, &p)?;
            Ok(t)
        })?,
    )?;
    t.set(
        "presence_stats",
        lua.create_async_function(|lua, ch: String| async move {
            let p = presence(&lua, &ch, false).await?;
            let t = lua.create_table()?;
            t.set("count", p.count)?;
            t.set("users", p.users.len())?;
            cluster_fields(&lua, &t, &p)?;
            Ok(t)
        })?,
    )?;
    Ok(t)
}

/// A script's publish with an idempotency key: the scope is that of an
/// HTTP publish to this one channel, so a retry through either door
/// answers the same.
async fn publish_keyed(
    lua: &Lua,
    mesh: Arc<crate::mesh::Mesh>,
    ch: String,
    key: String,
    p: Arc<Publication>,
) -> mlua::Result<(u64, u64, Value)> {
    let ttl = Duration::from_secs(
        lua.app_data_ref::<WorkerCtx>()
            .map_or(300, |w| w.config.engine.idempotency_ttl),
    );
    let run = {
        let mesh = mesh.clone();
        async move { answer(&mesh.publish(p).await) }
    };
    match publish_once(&mesh, ch, key, ttl, run).await {
        Once::Published(r) => counts(lua, from_answer(&r)),
        Once::Recorded(text) => match serde_json::from_str(&text) {
            Ok(r) => counts(lua, from_answer(&r)),
            Err(e) => retry(
                lua,
                format!("the recorded answer for this key is unreadable: {e}"),
            ),
        },
        Once::Pending => retry(
            lua,
            "a publish with this key is still running; this call delivered nothing, retry".into(),
        ),
        Once::Unavailable(e) => retry(
            lua,
            format!(
                "the idempotency key store is unavailable ({e}); this call delivered nothing, retry"
            ),
        ),
        Once::Failed(e) => Err(mlua::Error::runtime(format!("publish failed: {e}"))),
    }
}

/// `mix.mesh.publish`'s options table: `event` (the Socket.IO event name)
/// and `key` (an idempotency key, as the HTTP API's `k`).
struct PublishOptions {
    event: Option<Arc<str>>,
    key: Option<String>,
}

impl PublishOptions {
    fn read(t: Option<Table>) -> mlua::Result<Self> {
        let mut o = PublishOptions {
            event: None,
            key: None,
        };
        let Some(t) = t else {
            return Ok(o);
        };
        for pair in t.pairs::<String, Value>() {
            let (k, v) = pair?;
            let text = |max: usize| match &v {
                Value::String(s) if !s.as_bytes().is_empty() && s.as_bytes().len() <= max => {
                    Ok(s.to_str()?.to_string())
                }
                _ => Err(mlua::Error::runtime(format!(
                    "publish option {k} must be a non-empty string of at most {max} bytes"
                ))),
            };
            match k.as_str() {
                "event" => o.event = Some(Arc::from(text(MAX_EVENT_LEN)?)),
                "key" => o.key = Some(text(MAX_KEY_LEN)?),
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "unknown publish option {other:?}; use event or key"
                    )));
                }
            }
        }
        Ok(o)
    }
}

/// The fourth argument of `mix.mesh.publish`: nothing or an options table.
fn options_table(v: Value) -> mlua::Result<Option<Table>> {
    match v {
        Value::Nil => Ok(None),
        Value::Table(t) => Ok(Some(t)),
        other => Err(mlua::Error::runtime(format!(
            "the options of mix.mesh.publish are a table, not {}",
            other.type_name()
        ))),
    }
}

/// What `mix.mesh.publish` returns: `s`, `f`, and `{missing, error}` when
/// the counts may be short (else `nil`), as the HTTP API's `missing` and
/// `error`: the counts are only what the nodes reported.
fn counts(lua: &Lua, out: Published) -> mlua::Result<(u64, u64, Value)> {
    let (s, f) = (out.delivery.success, out.delivery.fail);
    if out.missing.is_empty() && out.error.is_none() {
        return Ok((s, f, Value::Nil));
    }
    let t = lua.create_table()?;
    if !out.missing.is_empty() {
        t.set("missing", lua.create_sequence_from(out.missing)?)?;
    }
    if let Some(e) = out.error {
        t.set("error", e)?;
    }
    Ok((s, f, Value::Table(t)))
}

/// A keyed publish that delivered nothing and may be retried: `0, 0,
/// {error = why, retry = true}`.
fn retry(lua: &Lua, why: String) -> mlua::Result<(u64, u64, Value)> {
    let t = lua.create_table()?;
    t.set("error", why)?;
    t.set("retry", true)?;
    Ok((0, 0, Value::Table(t)))
}

async fn presence(lua: &Lua, ch: &str, ids: bool) -> mlua::Result<Presence> {
    if !crate::hub::valid_channel(ch) {
        return Err(mlua::Error::runtime(format!("invalid channel {ch:?}")));
    }
    Ok(mesh(lua)?.presence(ch, ids).await)
}

/// `missing` and `error` of a cluster answer, when there are any.
fn cluster_fields(lua: &Lua, t: &Table, p: &Presence) -> mlua::Result<()> {
    if !p.missing.is_empty() {
        t.set(
            "missing",
            lua.create_sequence_from(p.missing.iter().cloned())?,
        )?;
    }
    if let Some(e) = &p.error {
        t.set("error", e.as_str())?;
    }
    Ok(())
}

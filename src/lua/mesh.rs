//! `mix.mesh`: publish to a channel, send to a client id and ask a channel's
//! presence from Lua, through the same [`crate::mesh::Mesh`] the HTTP API
//! uses, so a script reaches subscribers on every node.

use super::WorkerCtx;
use crate::client_id::parse_client_id;
use crate::frame::{FrameType, frame};
use crate::presence::Presence;
use crate::publication::Publication;
use bytes::Bytes;
use mlua::{Lua, Table, Value};

fn mesh(lua: &Lua) -> mlua::Result<std::sync::Arc<crate::mesh::Mesh>> {
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
            |lua, (ch, data, ty): (String, mlua::LuaString, Option<String>)| async move {
                let msg = match build(&data, ty) {
                    Ok(m) => m,
                    Err(e) => return Err(mlua::Error::runtime(e)),
                };
                if !crate::hub::valid_channel(&ch) {
                    return Err(mlua::Error::runtime(format!("invalid channel {ch:?}")));
                }
                let p = std::sync::Arc::new(Publication::new(&ch, msg));
                let out = mesh(&lua)?.publish(p).await;
                // As the HTTP API's `missing` and `error`: the counts are
                // only what the nodes reported.
                let incomplete = if out.missing.is_empty() && out.error.is_none() {
                    Value::Nil
                } else {
                    let t = lua.create_table()?;
                    if !out.missing.is_empty() {
                        t.set("missing", lua.create_sequence_from(out.missing)?)?;
                    }
                    if let Some(e) = out.error {
                        t.set("error", e)?;
                    }
                    Value::Table(t)
                };
                Ok((out.delivery.success, out.delivery.fail, incomplete))
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

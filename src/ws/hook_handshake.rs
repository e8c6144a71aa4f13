//! The `on_handshake` hook of a client connection: its arguments built from
//! the upgrade request (headers as Go presents them, the `server` table), and
//! its verdict read back (accept, or refuse with a status and a body).

use super::handshake::UpgradeRequest;
use crate::lua::LuaRuntime;
use crate::lua::conn::ConnLocal;
use mlua::{Lua, Value};
use std::rc::Rc;

/// Runs `on_handshake`; `Some((status, body))` when it refused the upgrade.
pub async fn run(
    vm: &LuaRuntime,
    conn: &Rc<ConnLocal>,
    req: &UpgradeRequest,
) -> Option<(u16, String)> {
    // Most scripts have no on_handshake: make no tables for nobody (they
    // would be garbage in every connection's VM until the next collection).
    if !vm.defines(conn, "on_handshake") {
        return None;
    }
    let lua = vm.lua();
    let build = || -> mlua::Result<(String, mlua::Table, mlua::Table)> {
        let headers = headers_table(lua, &req.headers)?;
        let server = lua.create_table()?;
        server.raw_set("Method", req.method.as_str())?;
        server.raw_set("RequestUri", req.uri.as_str())?;
        server.raw_set("ServerProtocol", req.version.as_str())?;
        server.raw_set("Host", req.header("host").unwrap_or(""))?;
        server.raw_set("RemoteAddr", conn.remote_addr.to_string())?;
        Ok((conn.client.id.to_string(), headers, server))
    };
    let args = build().ok()?;
    let call = vm.hook(conn, "on_handshake", args)?;
    let Some(ret) = call.await else {
        // The hook raised an error: fail closed, it may have been checking auth.
        return Some((500, "Internal Server Error".into()));
    };
    let mut ret = ret.into_iter();
    if !matches!(ret.next(), Some(Value::Boolean(false))) {
        return None;
    }
    let status = match ret.next() {
        Some(Value::Integer(n)) => n as u16,
        Some(Value::Number(n)) => n as u16,
        _ => 403,
    };
    let status = if (400..600).contains(&status) {
        status
    } else {
        403
    };
    let body = match ret.next() {
        Some(Value::String(s)) => s.to_string_lossy(),
        _ => "Forbidden".into(),
    };
    Some((status, body))
}

/// Request headers as Go presents them (`X-Forwarded-For`, repeated headers
/// joined with ", "); lookups with any other case work too.
fn headers_table(lua: &Lua, headers: &[(String, String)]) -> mlua::Result<mlua::Table> {
    let t = lua.create_table()?;
    for (k, v) in headers {
        let key = crate::lua::http::canonical_header(&k.to_ascii_lowercase());
        let merged = match t.raw_get::<Option<String>>(key.as_str())? {
            Some(prev) => format!("{prev}, {v}"),
            None => v.clone(),
        };
        t.raw_set(key, merged)?;
    }
    let meta = lua.create_table()?;
    meta.raw_set(
        "__index",
        lua.create_function(|_, (t, k): (mlua::Table, String)| {
            let key = crate::lua::http::canonical_header(&k.to_ascii_lowercase());
            t.raw_get::<Value>(key)
        })?,
    )?;
    t.set_metatable(Some(meta))?;
    Ok(t)
}

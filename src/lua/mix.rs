//! The `mix` global: the utility functions of `docs/lua-api.md` (JSON,
//! base64, string and URL helpers, hashes, logging, server options,
//! `mix.websocket()`), plus the wiring of the sub-modules that live in their
//! own files (`mix.http`, `mix.mesh`).

use super::{WorkerCtx, current, json};
use crate::json_text::json_text;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::Digest as _;
use mlua::{Lua, MultiValue, Table, Value};

/// Installs `mix` into the VM's globals.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let mix = lua.create_table()?;
    mix.set("DEBUG", "debug")?;
    mix.set("INFO", "info")?;
    mix.set("WARN", "warn")?;
    mix.set("ERROR", "error")?;

    mix.set(
        "json_encode",
        lua.create_function(|lua, v: Value| {
            Ok(match json::to_json(&v, json::max_size(lua))? {
                Ok(j) => (Value::String(lua.create_string(json_text(&j))?), Value::Nil),
                Err(e) => (Value::Nil, Value::String(lua.create_string(e)?)),
            })
        })?,
    )?;
    mix.set(
        "json_decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            let max = json::max_size(lua);
            if s.as_bytes().len() > max {
                let e = format!("JSON text larger than {max} bytes (engine.luavm.jsonMaxSize)");
                return Ok((Value::Nil, Value::String(lua.create_string(e)?)));
            }
            Ok(
                match serde_json::from_slice::<serde_json::Value>(&s.as_bytes()) {
                    Ok(j) => (json::to_lua(lua, &j)?, Value::Nil),
                    Err(e) => (Value::Nil, Value::String(lua.create_string(e.to_string())?)),
                },
            )
        })?,
    )?;
    mix.set(
        "base64_encode",
        lua.create_function(|_, s: mlua::LuaString| Ok(B64.encode(s.as_bytes())))?,
    )?;
    mix.set(
        "base64_decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            Ok(match B64.decode(s.as_bytes()) {
                Ok(b) => (Value::String(lua.create_string(b)?), Value::Nil),
                Err(e) => (
                    Value::String(lua.create_string("")?),
                    Value::String(lua.create_string(e.to_string())?),
                ),
            })
        })?,
    )?;
    mix.set(
        "str_split",
        lua.create_function(|lua, (s, sep): (mlua::LuaString, mlua::LuaString)| {
            let s = s.as_bytes().to_vec();
            let sep = sep.as_bytes().to_vec();
            let t = lua.create_table()?;
            for (i, part) in split_bytes(&s, &sep).into_iter().enumerate() {
                t.raw_set(i + 1, lua.create_string(part)?)?;
            }
            Ok(t)
        })?,
    )?;
    mix.set(
        "parse_str",
        lua.create_function(|lua, q: String| {
            let q = q.split_once('?').map(|(_, r)| r).unwrap_or(&q);
            let t = parse_query(lua, q)?;
            Ok((t, Value::Nil))
        })?,
    )?;
    mix.set(
        "parse_url",
        lua.create_function(|lua, u: String| parse_url(lua, &u))?,
    )?;
    mix.set(
        "md5",
        lua.create_function(|_, s: mlua::LuaString| {
            Ok(hex::encode(md5::Md5::digest(s.as_bytes())))
        })?,
    )?;
    mix.set(
        "md5_bin",
        lua.create_function(|lua, s: mlua::LuaString| {
            lua.create_string(md5::Md5::digest(s.as_bytes()))
        })?,
    )?;
    mix.set(
        "sha1",
        lua.create_function(|_, s: mlua::LuaString| {
            Ok(hex::encode(sha1::Sha1::digest(s.as_bytes())))
        })?,
    )?;
    mix.set(
        "sha1_bin",
        lua.create_function(|lua, s: mlua::LuaString| {
            lua.create_string(sha1::Sha1::digest(s.as_bytes()))
        })?,
    )?;
    mix.set(
        "bytes_tostring",
        lua.create_function(|lua, t: Table| {
            let mut out = Vec::new();
            for b in t.sequence_values::<f64>() {
                let b = b?;
                if !(0.0..=255.0).contains(&b) {
                    return Err(mlua::Error::runtime(format!("byte value {b} out of range")));
                }
                out.push(b as u8);
            }
            lua.create_string(out)
        })?,
    )?;
    mix.set("log", lua.create_function(log)?)?;

    let server = lua.create_table()?;
    server.set(
        "option",
        lua.create_function(|lua, name: String| {
            let conn = current().ok_or_else(|| {
                mlua::Error::runtime("mix.server.option must be called from a hook")
            })?;
            let ctx = lua
                .app_data_ref::<WorkerCtx>()
                .ok_or_else(|| mlua::Error::runtime("no worker context"))?;
            Ok(ctx.config.engine.servers[conn.server]
                .option(&name)
                .map(str::to_string))
        })?,
    )?;
    mix.set("server", server)?;

    mix.set(
        "websocket",
        lua.create_function(|lua, ()| match current().and_then(|c| c.userdata()) {
            Some(ud) => Ok((Value::UserData(ud), Value::Nil)),
            None => Ok((
                Value::Nil,
                Value::String(lua.create_string("mix.websocket() called outside a hook")?),
            )),
        })?,
    )?;

    mix.set("http", super::http::module(lua)?)?;
    mix.set("mesh", super::mesh::module(lua)?)?;
    mix.set("redis", super::redis::module(lua)?)?;
    mix.set("queue", super::queue::module(lua)?)?;
    mix.set("jwt", super::jwt::module(lua)?)?;
    super::binary::install(lua, &mix)?;
    lua.globals().set("mix", mix.clone())?;
    // `require("mix")` works too.
    let package: Table = lua.globals().get("package")?;
    let loaded: Table = package.get("loaded")?;
    loaded.set("mix", mix)?;
    // print() goes to the gateway's log (with the client id), not to a
    // buffered stdout where lines would appear late or never.
    lua.globals().set("print", lua.create_function(print)?)?;
    // CONNMIX scripts start with `require("prettyprint")`.
    let preload: Table = package.get("preload")?;
    preload.set(
        "prettyprint",
        lua.load(include_str!("prettyprint.lua"))
            .set_name("=prettyprint")
            .into_function()?,
    )?;
    Ok(())
}

/// Go's `strings.Split`: an empty separator splits into characters.
fn split_bytes<'a>(s: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    if sep.is_empty() {
        let text = std::str::from_utf8(s);
        return match text {
            Ok(t) => t
                .char_indices()
                .map(|(i, c)| &s[i..i + c.len_utf8()])
                .collect(),
            Err(_) => s.chunks(1).collect(),
        };
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= s.len() {
        if &s[i..i + sep.len()] == sep {
            out.push(&s[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// PHP-style `parse_str`: `a=1&b=2`, with `k[]=` collecting an array.
fn parse_query(lua: &Lua, q: &str) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        if let Some(base) = k.strip_suffix("[]") {
            let arr = match t.raw_get::<Value>(base)? {
                Value::Table(a) => a,
                _ => {
                    let a = lua.create_table()?;
                    t.raw_set(base, a.clone())?;
                    a
                }
            };
            arr.raw_set(arr.raw_len() + 1, v.as_ref())?;
        } else {
            t.raw_set(k.as_ref(), v.as_ref())?;
        }
    }
    Ok(t)
}

fn parse_url(lua: &Lua, u: &str) -> mlua::Result<(Value, Value)> {
    let parsed = match url::Url::parse(u) {
        Ok(p) => p,
        Err(e) => return Ok((Value::Nil, Value::String(lua.create_string(e.to_string())?))),
    };
    let t = lua.create_table()?;
    t.set("scheme", parsed.scheme())?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    t.set("host", host)?;
    t.set("path", parsed.path())?;
    t.set("raw_query", parsed.query().unwrap_or(""))?;
    t.set("fragment", parsed.fragment().unwrap_or(""))?;
    t.set("query", parse_query(lua, parsed.query().unwrap_or(""))?)?;
    Ok((Value::Table(t), Value::Nil))
}

/// `print(...)`: arguments through `tostring`, tab-separated, logged at INFO.
fn print(lua: &Lua, args: MultiValue) -> mlua::Result<()> {
    let tostring: mlua::Function = lua.globals().get("tostring")?;
    let mut parts = Vec::with_capacity(args.len());
    for v in args {
        // `__tostring` may print again: one more level of native nesting.
        super::budget::enter_coroutine()?;
        let s = tostring.call::<mlua::LuaString>(v);
        super::budget::leave_coroutine();
        let s = s?;
        parts.push(s.to_string_lossy());
    }
    let line = parts.join("\t");
    let client = current()
        .map(|c| c.client.id.to_string())
        .unwrap_or_default();
    tracing::info!(target: "lua", client_id = %client, "{line}");
    Ok(())
}

/// `mix.log(level, msg...)`: into the gateway's log, with the client id when
/// called from a hook.
fn log(_: &Lua, args: MultiValue) -> mlua::Result<bool> {
    let mut it = args.into_iter();
    let level = match it.next() {
        Some(Value::String(s)) => s.to_string_lossy().to_ascii_lowercase(),
        Some(Value::Integer(n)) => ["debug", "info", "warn", "error"]
            .get(n as usize)
            .unwrap_or(&"info")
            .to_string(),
        _ => "info".into(),
    };
    let msg: Vec<String> = it
        .map(|v| match v {
            Value::String(s) => s.to_string_lossy(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Boolean(b) => b.to_string(),
            Value::Nil => "nil".into(),
            other => format!("<{}>", other.type_name()),
        })
        .collect();
    let msg = msg.join(" ");
    let client = current()
        .map(|c| c.client.id.to_string())
        .unwrap_or_default();
    match level.as_str() {
        "debug" => tracing::debug!(target: "lua", client_id = %client, "{msg}"),
        "warn" | "warning" => tracing::warn!(target: "lua", client_id = %client, "{msg}"),
        "error" => tracing::error!(target: "lua", client_id = %client, "{msg}"),
        _ => tracing::info!(target: "lua", client_id = %client, "{msg}"),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_go() {
        assert_eq!(split_bytes(b"@user", b"@"), vec![&b""[..], &b"user"[..]]);
        assert_eq!(
            split_bytes(b"a,b,,c", b","),
            vec![&b"a"[..], b"b", b"", b"c"]
        );
        assert_eq!(split_bytes(b"", b","), vec![&b""[..]]);
        assert_eq!(split_bytes(b"ab", b""), vec![&b"a"[..], b"b"]);
    }
}

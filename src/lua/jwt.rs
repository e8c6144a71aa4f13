//! `mix.jwt.verify(token, key[, opts])`: checks a JSON Web Token locally
//! (no HTTP call) and returns its claims as a table, or `nil, err`; it never
//! raises. The work is done by [`crate::jwt::verify`].
//!
//! `key` is a shared secret (HS256/384/512) or a PEM public key (RS*/PS*,
//! ES256/384, EdDSA). `opts`: `algorithms` (list of accepted `alg` names;
//! default HS256/384/512 for a secret, RS256 for an RSA key, ES256 for an EC
//! key), `leeway` (seconds of clock skew on `exp`/`nbf`, default 30), `iss`
//! and `aud` (a string or a list), `required` (claim names that must exist).

use crate::jwt::{self, JwtError, VerifyOptions};
use mlua::{Lua, Table, Value};

/// Largest `leeway` (seconds) a script may pass: a year.
const MAX_LEEWAY: u64 = 365 * 86_400;

pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "verify",
        lua.create_function(|lua, (token, key, opts): (Value, Value, Value)| {
            let result = run(&token, &key, &opts);
            Ok(match result {
                Ok(claims) => (
                    super::json::to_lua(lua, &serde_json::Value::Object(claims))?,
                    Value::Nil,
                ),
                Err(e) => (Value::Nil, Value::String(lua.create_string(e)?)),
            })
        })?,
    )?;
    Ok(t)
}

fn run(
    token: &Value,
    key: &Value,
    opts: &Value,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let token = match token {
        Value::String(s) => s.to_string_lossy(),
        Value::Nil => return Err(JwtError::Malformed("no token".into()).to_string()),
        other => {
            return Err(
                JwtError::Malformed(format!("token is a {}", other.type_name())).to_string(),
            );
        }
    };
    let key = match key {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Nil => return Err(JwtError::InvalidKey("no key".into()).to_string()),
        other => {
            return Err(
                JwtError::InvalidKey(format!("key is a {}", other.type_name())).to_string(),
            );
        }
    };
    let opts = options(opts)?;
    jwt::verify(&token, &key, &opts).map_err(|e| e.to_string())
}

/// A string, or a list of strings, as `Vec<String>`.
fn strings(v: Value, name: &str) -> Result<Option<Vec<String>>, String> {
    let bad = || format!("invalid option: {name} must be a string or a list of strings");
    match v {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(vec![s.to_string_lossy()])),
        Value::Table(t) => {
            let mut out = Vec::new();
            for item in t.sequence_values::<Value>() {
                match item.map_err(|_| bad())? {
                    Value::String(s) => out.push(s.to_string_lossy()),
                    _ => return Err(bad()),
                }
            }
            Ok(Some(out))
        }
        _ => Err(bad()),
    }
}

fn options(opts: &Value) -> Result<VerifyOptions, String> {
    let mut o = VerifyOptions::default();
    let t = match opts {
        Value::Nil => return Ok(o),
        Value::Table(t) => t,
        other => {
            return Err(format!(
                "invalid option: opts must be a table, got a {}",
                other.type_name()
            ));
        }
    };
    // Raw reads: no metamethod (Lua code) runs inside this helper.
    let get = |k: &str| t.raw_get::<Value>(k).map_err(|e| e.to_string());
    if let Some(names) = strings(get("algorithms")?, "algorithms")? {
        if names.is_empty() {
            return Err("invalid option: algorithms is empty".into());
        }
        let algs = names
            .iter()
            .map(|n| jwt::parse_algorithm(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        o.algorithms = Some(algs);
    }
    match get("leeway")? {
        Value::Nil => {}
        // Bounded: the validator computes `now - leeway` and `now + leeway`.
        Value::Integer(n) if (0..=MAX_LEEWAY as i64).contains(&n) => o.leeway = n as u64,
        Value::Number(n) if (0.0..=MAX_LEEWAY as f64).contains(&n) => o.leeway = n as u64,
        _ => {
            return Err(format!(
                "invalid option: leeway must be seconds from 0 to {MAX_LEEWAY}"
            ));
        }
    }
    o.iss = strings(get("iss")?, "iss")?;
    o.aud = strings(get("aud")?, "aud")?;
    o.required = strings(get("required")?, "required")?.unwrap_or_default();
    Ok(o)
}

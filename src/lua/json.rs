//! Conversions between Lua values and JSON (`mix.json_encode`,
//! `mix.json_decode`, and JSON arriving through `conn.call`).
//!
//! Rules, chosen to match what CONNMIX scripts expect: a table whose keys are
//! exactly 1..n is an array, any other table an object (an empty table is
//! `{}`); integral numbers encode without a fraction; JSON `null` decodes to
//! `nil`; numbers stay numbers.

use mlua::{Lua, Table, Value};
use serde_json::{Map, Number, Value as Json};

const MAX_DEPTH: usize = 64;

/// Lua -> JSON. Functions, userdata and threads are an error.
pub fn to_json(v: &Value) -> Result<Json, String> {
    to_json_depth(v, 0)
}

fn to_json_depth(v: &Value, depth: usize) -> Result<Json, String> {
    if depth > MAX_DEPTH {
        return Err("nesting too deep (or a table contains itself)".into());
    }
    Ok(match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::Number((*i).into()),
        Value::Number(n) => number(*n)?,
        Value::String(s) => Json::String(
            s.to_str()
                .map_err(|_| "string is not valid UTF-8")?
                .to_string(),
        ),
        Value::Table(t) => table_to_json(t, depth)?,
        Value::LightUserData(p) if p.0.is_null() => Json::Null,
        other => return Err(format!("cannot encode a {} as JSON", other.type_name())),
    })
}

fn number(n: f64) -> Result<Json, String> {
    if !n.is_finite() {
        return Err("cannot encode NaN or infinity as JSON".into());
    }
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        return Ok(Json::Number((n as i64).into()));
    }
    Number::from_f64(n)
        .map(Json::Number)
        .ok_or_else(|| "invalid number".into())
}

fn table_to_json(t: &Table, depth: usize) -> Result<Json, String> {
    let len = t.raw_len();
    let mut count = 0usize;
    let mut array_like = true;
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        count += 1;
        let idx = match k {
            Value::Integer(i) => Some(i as f64),
            Value::Number(n) => Some(n),
            _ => None,
        };
        match idx {
            Some(i) if i >= 1.0 && i.fract() == 0.0 && (i as usize) <= len => {}
            _ => array_like = false,
        }
    }
    if array_like && count == len && len > 0 {
        let mut arr = Vec::with_capacity(len);
        for i in 1..=len {
            let v: Value = t.raw_get(i).map_err(|e| e.to_string())?;
            arr.push(to_json_depth(&v, depth + 1)?);
        }
        return Ok(Json::Array(arr));
    }
    let mut obj = Map::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let key = match &k {
            Value::String(s) => s
                .to_str()
                .map_err(|_| "key is not valid UTF-8")?
                .to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => match number(*n)? {
                Json::Number(n) => n.to_string(),
                _ => unreachable!(),
            },
            Value::Boolean(b) => b.to_string(),
            other => return Err(format!("cannot use a {} as a JSON key", other.type_name())),
        };
        obj.insert(key, to_json_depth(&v, depth + 1)?);
    }
    Ok(Json::Object(obj))
}

/// JSON -> Lua.
pub fn to_lua(lua: &Lua, j: &Json) -> mlua::Result<Value> {
    Ok(match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(a) => {
            let t = lua.create_table_with_capacity(a.len(), 0)?;
            for (i, v) in a.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, v)?)?;
            }
            Value::Table(t)
        }
        Json::Object(o) => {
            let t = lua.create_table_with_capacity(0, o.len())?;
            for (k, v) in o {
                t.raw_set(k.as_str(), to_lua(lua, v)?)?;
            }
            Value::Table(t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_scripts_use() {
        let lua = Lua::new();
        let v: Value = lua
            .load(r#"return {uid = 1001, tags = {"a", "b"}, ok = true, f = 1.5, e = {}}"#)
            .eval()
            .unwrap();
        let j = to_json(&v).unwrap();
        assert_eq!(j["uid"], Json::from(1001));
        assert_eq!(j["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(j["f"], Json::from(1.5));
        assert_eq!(j["e"], serde_json::json!({}));
        let back = to_lua(&lua, &j).unwrap();
        assert_eq!(to_json(&back).unwrap(), j);
    }

    #[test]
    fn self_referencing_table_is_an_error() {
        let lua = Lua::new();
        let v: Value = lua.load("local t = {} t.t = t return t").eval().unwrap();
        assert!(to_json(&v).is_err());
    }
}

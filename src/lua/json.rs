//! Conversions between Lua values and JSON (`mix.json_encode`,
//! `mix.json_decode`, and JSON arriving through `conn.call`).
//!
//! Rules, chosen to match what CONNMIX scripts expect: a table whose keys are
//! exactly 1..n is an array, any other table an object (an empty table is
//! `{}`); integral numbers encode without a fraction; JSON `null` decodes to
//! `nil`; numbers stay numbers.
//!
//! Bounds (a script cannot block or grow the worker through them): the text
//! produced or read is at most `engine.luavm.jsonMaxSize` bytes, counted
//! while encoding (a table whose subtables are shared 40 levels deep would
//! expand to 2^40 nodes), and encoding ticks the CPU budget per value.

use super::binary::Binary;
use super::budget::Ticker;
use bytes::Bytes;
use mlua::{Lua, Table, Value};
use serde_json::{Map, Number, Value as Json};

const MAX_DEPTH: usize = 64;

/// Lua -> JSON. Functions, userdata and threads are an error, and so is
/// text longer than `max_size` (the inner `Err`, for `nil, err`); the outer
/// `Err` is the CPU budget's abort, which must be raised.
pub fn to_json(v: &Value, max_size: usize) -> mlua::Result<Result<Json, String>> {
    to_json_with_binary(v, max_size, None)
}

/// [`to_json`], where `mix.binary` values become Socket.IO attachment
/// placeholders (`{"_placeholder":true,"num":i}`) and their bytes are
/// appended to `attachments` (without it they are an error).
pub fn to_json_with_binary(
    v: &Value,
    max_size: usize,
    attachments: Option<&mut Vec<Bytes>>,
) -> mlua::Result<Result<Json, String>> {
    let mut enc = Encoder {
        size: 0,
        max_size,
        ticker: Ticker::new("mix.json_encode"),
        attachments,
    };
    match enc.value(v, 0) {
        Ok(j) => Ok(Ok(j)),
        Err(EncodeError::Invalid(e)) => Ok(Err(e)),
        Err(EncodeError::Abort(e)) => Err(e),
    }
}

/// `engine.luavm.jsonMaxSize` of the VM's worker.
pub fn max_size(lua: &Lua) -> usize {
    lua.app_data_ref::<super::WorkerCtx>()
        .map(|c| c.config.engine.luavm.json_max_size)
        .unwrap_or(usize::MAX)
}

enum EncodeError {
    Invalid(String),
    Abort(mlua::Error),
}

impl From<String> for EncodeError {
    fn from(e: String) -> Self {
        Self::Invalid(e)
    }
}

impl From<&str> for EncodeError {
    fn from(e: &str) -> Self {
        Self::Invalid(e.to_string())
    }
}

struct Encoder<'a> {
    /// About how many bytes of text the values so far make.
    size: usize,
    max_size: usize,
    ticker: Ticker,
    attachments: Option<&'a mut Vec<Bytes>>,
}

impl Encoder<'_> {
    fn grow(&mut self, n: usize) -> Result<(), EncodeError> {
        self.ticker.tick().map_err(EncodeError::Abort)?;
        self.size = self.size.saturating_add(n);
        if self.size > self.max_size {
            return Err(format!(
                "JSON text larger than {} bytes (engine.luavm.jsonMaxSize)",
                self.max_size
            )
            .into());
        }
        Ok(())
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<Json, EncodeError> {
        if depth > MAX_DEPTH {
            return Err("nesting too deep (or a table contains itself)".into());
        }
        Ok(match v {
            Value::Nil => {
                self.grow(4)?;
                Json::Null
            }
            Value::Boolean(b) => {
                self.grow(5)?;
                Json::Bool(*b)
            }
            Value::Integer(i) => {
                self.grow(20)?;
                Json::Number((*i).into())
            }
            Value::Number(n) => {
                self.grow(24)?;
                number(*n)?
            }
            Value::String(s) => {
                let s = s.to_str().map_err(|_| "string is not valid UTF-8")?;
                self.grow(s.len() + 2)?;
                Json::String(s.to_string())
            }
            Value::Table(t) => self.table(t, depth)?,
            Value::LightUserData(p) if p.0.is_null() => {
                self.grow(4)?;
                Json::Null
            }
            Value::UserData(ud) if self.attachments.is_some() && ud.is::<Binary>() => {
                let bytes = ud.borrow::<Binary>().map_err(|e| e.to_string())?.0.clone();
                self.grow(bytes.len() + 32)?;
                let list = self.attachments.as_mut().expect("checked above");
                list.push(bytes);
                serde_json::json!({"_placeholder": true, "num": list.len() - 1})
            }
            other => return Err(format!("cannot encode a {} as JSON", other.type_name()).into()),
        })
    }

    fn table(&mut self, t: &Table, depth: usize) -> Result<Json, EncodeError> {
        self.grow(2)?;
        let len = t.raw_len();
        let mut count = 0usize;
        let mut array_like = true;
        for pair in t.pairs::<Value, Value>() {
            let (k, _) = pair.map_err(|e| e.to_string())?;
            self.ticker.tick().map_err(EncodeError::Abort)?;
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
                self.grow(1)?;
                arr.push(self.value(&v, depth + 1)?);
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
                other => {
                    return Err(format!("cannot use a {} as a JSON key", other.type_name()).into());
                }
            };
            self.grow(key.len() + 4)?;
            obj.insert(key, self.value(&v, depth + 1)?);
        }
        Ok(Json::Object(obj))
    }
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

/// JSON -> Lua.
pub fn to_lua(lua: &Lua, j: &Json) -> mlua::Result<Value> {
    to_lua_with_binary(lua, j, &[])
}

/// [`to_lua`], where Socket.IO attachment placeholders whose `num` indexes
/// `attachments` become `mix.binary` values.
pub fn to_lua_with_binary(lua: &Lua, j: &Json, attachments: &[Bytes]) -> mlua::Result<Value> {
    let to_lua = |lua: &Lua, j: &Json| to_lua_with_binary(lua, j, attachments);
    if !attachments.is_empty()
        && let Json::Object(o) = j
        && o.get("_placeholder") == Some(&Json::Bool(true))
        && let Some(b) = o
            .get("num")
            .and_then(Json::as_u64)
            .and_then(|n| attachments.get(n as usize))
    {
        return lua.create_userdata(Binary(b.clone())).map(Value::UserData);
    }
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
        let j = to_json(&v, usize::MAX).unwrap().unwrap();
        assert_eq!(j["uid"], Json::from(1001));
        assert_eq!(j["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(j["f"], Json::from(1.5));
        assert_eq!(j["e"], serde_json::json!({}));
        let back = to_lua(&lua, &j).unwrap();
        assert_eq!(to_json(&back, usize::MAX).unwrap().unwrap(), j);
    }

    #[test]
    fn self_referencing_table_is_an_error() {
        let lua = Lua::new();
        let v: Value = lua.load("local t = {} t.t = t return t").eval().unwrap();
        assert!(to_json(&v, usize::MAX).unwrap().is_err());
    }

    #[test]
    fn shared_subtables_stop_at_the_size_limit() {
        let lua = Lua::new();
        let v: Value = lua
            .load("local t = {} for i = 1, 40 do t = {t, t} end return t")
            .eval()
            .unwrap();
        let e = to_json(&v, 1 << 20).unwrap().unwrap_err();
        assert!(e.contains("jsonMaxSize"), "{e}");
    }
}

//! `mix.http.request(method, url[, opts])`: a non-blocking HTTP client for
//! scripts (calling the backend's auth API is the common case).
//!
//! The hook's coroutine yields while the request is in flight, so other
//! connections on the worker carry on. Every failure (DNS, refused, timeout,
//! bad option) is returned as `nil, err`, never raised.

use super::WorkerCtx;
use mlua::{Lua, Table, Value};
use std::time::Duration;

/// Default when `opts.timeout` is absent.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "request",
        lua.create_async_function(
            |lua, (method, url, opts): (String, String, Option<Table>)| async move {
                super::budget::check_not_aborting()?;
                let result = request(&lua, &method, &url, opts).await;
                match result {
                    Ok(resp) => Ok((Value::Table(resp), Value::Nil)),
                    Err(e) => {
                        // An abort raised while reading `opts` stays raised.
                        super::budget::check_not_aborting()?;
                        Ok((Value::Nil, Value::String(lua.create_string(e)?)))
                    }
                }
            },
        )?,
    )?;
    Ok(t)
}

/// Parses `timeout`: a number of seconds, or a string such as `"1h"`,
/// `"30s"`, `"500ms"`, `"1m30s"`. Negative, NaN, infinite and values past
/// what a `Duration` holds are errors (never a panic).
pub fn parse_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Integer(n) => seconds(*n as f64),
        Value::Number(n) => seconds(*n),
        Value::String(s) => parse_duration_str(&s.to_string_lossy()),
        _ => Err("timeout must be seconds or a duration string like \"1h\"".into()),
    }
}

fn seconds(n: f64) -> Result<Duration, String> {
    if n.is_nan() || n < 0.0 {
        return Err(format!("invalid timeout {n}: must be 0 or more seconds"));
    }
    Duration::try_from_secs_f64(n).map_err(|_| format!("invalid timeout {n}: too large"))
}

fn parse_duration_str(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return seconds(n);
    }
    let bad = || format!("invalid duration {s:?}");
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    seconds(total).map_err(|e| format!("{e} ({s:?})"))
}

fn string_pairs(t: &Table) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let text = |v: &Value| match v {
            Value::String(s) => Ok(s.to_string_lossy()),
            Value::Integer(i) => Ok(i.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Boolean(b) => Ok(b.to_string()),
            other => Err(format!("expected a string, got {}", other.type_name())),
        };
        out.push((text(&k)?, text(&v)?));
    }
    Ok(out)
}

async fn request(lua: &Lua, method: &str, url: &str, opts: Option<Table>) -> Result<Table, String> {
    let (client, max_body) = {
        let ctx = lua.app_data_ref::<WorkerCtx>().ok_or("no worker context")?;
        (ctx.http.clone(), ctx.config.engine.luavm.http.max_body_size)
    };
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid method {method:?}"))?;
    let mut url = reqwest::Url::parse(url).map_err(|e| format!("invalid url {url:?}: {e}"))?;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut builder_parts: Vec<(String, String)> = Vec::new();
    let mut body: Option<Vec<u8>> = None;
    let mut auth: Option<(String, String)> = None;
    let mut cookies: Vec<(String, String)> = Vec::new();
    if let Some(o) = &opts {
        // Raw reads: no metamethod (Lua code) runs inside this helper.
        let get = |k: &str| o.raw_get::<Value>(k).map_err(|e| e.to_string());
        match get("query")? {
            Value::Nil => {}
            Value::String(q) => {
                let q = q.to_string_lossy();
                let q = q.trim_start_matches('?');
                let merged = match url.query() {
                    Some(existing) if !existing.is_empty() => format!("{existing}&{q}"),
                    _ => q.to_string(),
                };
                url.set_query(Some(&merged));
            }
            Value::Table(t) => {
                let pairs = string_pairs(&t)?;
                url.query_pairs_mut().extend_pairs(pairs);
            }
            _ => return Err("query must be a string".into()),
        }
        match get("headers")? {
            Value::Nil => {}
            Value::Table(t) => builder_parts = string_pairs(&t)?,
            _ => return Err("headers must be a table".into()),
        }
        match get("cookies")? {
            Value::Nil => {}
            Value::Table(t) => cookies = string_pairs(&t)?,
            _ => return Err("cookies must be a table".into()),
        }
        match get("body")? {
            Value::Nil => {}
            Value::String(s) => body = Some(s.as_bytes().to_vec()),
            _ => return Err("body must be a string".into()),
        }
        match get("timeout")? {
            Value::Nil => {}
            v => timeout = parse_duration(&v)?,
        }
        match get("auth")? {
            Value::Nil => {}
            Value::Table(t) => {
                let u: String = t
                    .raw_get("username")
                    .map_err(|_| "auth.username must be a string")?;
                let p: Option<String> = t
                    .raw_get("password")
                    .map_err(|_| "auth.password must be a string")?;
                auth = Some((u, p.unwrap_or_default()));
            }
            _ => return Err("auth must be a table".into()),
        }
    }
    let mut req = client.request(method, url).timeout(timeout);
    let mut has_content_type = false;
    for (k, v) in &builder_parts {
        has_content_type |= k.eq_ignore_ascii_case("content-type");
        req = req.header(k.as_str(), v.as_str());
    }
    if !cookies.is_empty() {
        let c: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        req = req.header(reqwest::header::COOKIE, c.join("; "));
    }
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    if let Some(b) = body {
        if !has_content_type {
            // JSON bodies are the norm for backend auth APIs; say so when it is.
            let ct = if serde_json::from_slice::<serde_json::Value>(&b).is_ok() {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            };
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        req = req.body(b);
    }
    let resp = req.send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    let final_url = resp.url().to_string();
    let headers = lua.create_table().map_err(|e| e.to_string())?;
    let cookie_table = lua.create_table().map_err(|e| e.to_string())?;
    for (name, value) in resp.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).to_string();
        if name == reqwest::header::SET_COOKIE
            && let Some((ck, cv)) = v.split(';').next().and_then(|p| p.split_once('='))
        {
            let _ = cookie_table.set(ck.trim(), cv.trim());
        }
        let key = canonical_header(name.as_str());
        let merged = match headers.get::<Option<String>>(key.as_str()).ok().flatten() {
            Some(prev) => format!("{prev}, {v}"),
            None => v,
        };
        let _ = headers.set(key, merged);
    }
    let bytes = read_body(resp, max_body).await?;
    let t = lua.create_table().map_err(|e| e.to_string())?;
    let set = |k: &str, v: Value| t.set(k, v).map_err(|e| e.to_string());
    set(
        "body",
        Value::String(lua.create_string(&bytes).map_err(|e| e.to_string())?),
    )?;
    set("body_size", Value::Number(bytes.len() as f64))?;
    set("headers", Value::Table(headers))?;
    set("cookies", Value::Table(cookie_table))?;
    set("status_code", Value::Number(status as f64))?;
    set(
        "url",
        Value::String(lua.create_string(&final_url).map_err(|e| e.to_string())?),
    )?;
    Ok(t)
}

/// Reads the body chunk by chunk and stops at `max` bytes: a backend that
/// streams for ever cannot grow the gateway.
async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let too_large =
        || format!("response body larger than {max} bytes (engine.luavm.http.maxBodySize)");
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `content-type` -> `Content-Type`, as Go's http package presents headers.
pub fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        format!("timeout: {e}")
    } else if e.is_connect() {
        format!("connect failed: {e}")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_str("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration_str("1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration_str("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration_str("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration_str("soon").is_err());
        for bad in ["1e300", "inf", "-1", "NaN", "99999999999999999999h"] {
            assert!(parse_duration_str(bad).is_err(), "{bad}");
        }
        for bad in [1e300, f64::INFINITY, 18446744073709551616.0, -1.0, f64::NAN] {
            assert!(parse_duration(&Value::Number(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical_header("content-type"), "Content-Type");
    }
}

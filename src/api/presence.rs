//! `presence` / `GET|POST /v1/presence` and `presence_stats` /
//! `GET|POST /v1/presence/stats`: who is subscribed to a channel, across the
//! cluster (`docs/http-api.md`, "Presence").
//!
//! - `presence`: `{"count": n, "clients": [client ids], "users": [user ids]}`;
//! - `presence_stats`: `{"count": n, "users": distinct users}`;
//!
//! plus, in a cluster, `missing` (nodes that did not answer in time) and
//! `error` (why other nodes could not be asked), as a publish answers them.
//! A user is a connection's context value `uid`; users are distinct and in
//! no particular order.

use super::ApiState;
use super::ops::{ApiError, object};
use crate::presence::Presence;
use serde_json::{Value, json};

/// The channel `c` of the parameters.
fn channel(params: &Value) -> Result<&str, ApiError> {
    match object(params)?.get("c") {
        Some(Value::String(s)) if crate::hub::valid_channel(s) => Ok(s),
        Some(Value::String(s)) => Err(ApiError::invalid(format!(
            "channel {s:?} is not valid: use a non-empty name without spaces (at most 256 bytes)"
        ))),
        None | Some(Value::Null) => Err(ApiError::invalid("missing c (channel)")),
        Some(_) => Err(ApiError::invalid("c must be a channel name (string)")),
    }
}

/// The parameters of a `GET` (`?c=<channel>`).
pub fn query_params(query: Option<&str>) -> Value {
    let c = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "c")
        .map(|(_, v)| v.into_owned());
    json!({ "c": c })
}

fn cluster_fields(r: &mut Value, p: &Presence) {
    if !p.missing.is_empty() {
        r["missing"] = json!(p.missing);
    }
    if let Some(e) = &p.error {
        r["error"] = json!(e);
    }
}

/// `presence`.
pub async fn presence(state: &ApiState, params: &Value) -> Result<Value, ApiError> {
    let p = state.mesh.presence(channel(params)?, true).await;
    let clients: Vec<String> = p.clients.iter().map(u64::to_string).collect();
    let users: Vec<&str> = p.users.iter().map(|u| &**u).collect();
    let mut r = json!({"count": p.count, "clients": clients, "users": users});
    cluster_fields(&mut r, &p);
    Ok(r)
}

/// `presence_stats`.
pub async fn stats(state: &ApiState, params: &Value) -> Result<Value, ApiError> {
    let p = state.mesh.presence(channel(params)?, false).await;
    let mut r = json!({"count": p.count, "users": p.users.len()});
    cluster_fields(&mut r, &p);
    Ok(r)
}

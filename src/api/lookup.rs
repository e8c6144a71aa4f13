//! `GET /v1/connections` (ext, role `read`): finds the connections of a
//! client id, a user or a channel on this node, for the operator console
//! and for support ("which connection is user 1001, and what did it join?").
//!
//! - `?client=<id>`: that connection (a client id names its node; an id of
//!   another node answers with that node's number and no connections);
//! - `?user=<uid>`: the connections in channel `user:<uid>` (the channel the
//!   shipped script joins a logged-in user to);
//! - `?channel=<name>`: the channel's subscribers on this node.
//!
//! The answer is the API envelope: `{"E": null, "r": {"node": n,
//! "connections": [{"c": id, "server": i, "path": p, "channels": [..],
//! "queued": q}]}}`, at most [`MAX_LISTED`] connections with `"more": true`
//! beyond that; a missing or bad parameter is code 101.

use super::ApiState;
use super::ops::{ApiError, envelope};
use crate::client_id::{node_of, parse_client_id};
use crate::hub::Client;
use serde_json::{Value, json};
use std::sync::Arc;

/// Connections listed at most in one answer.
pub const MAX_LISTED: usize = 100;

/// Answers a lookup; `query` is the request's query string.
pub fn lookup(state: &ApiState, query: Option<&str>) -> Value {
    envelope(&find(state, query.unwrap_or("")))
}

fn find(state: &ApiState, query: &str) -> Result<Value, ApiError> {
    let hub = &state.mesh.hub;
    let param = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| matches!(k.as_ref(), "client" | "user" | "channel") && !v.trim().is_empty())
        .ok_or_else(|| {
            ApiError::invalid("give one of ?client=<id>, ?user=<uid>, ?channel=<name>")
        })?;
    let value = param.1.trim();
    let (node, found) = match param.0.as_ref() {
        "client" => {
            let id = parse_client_id(value)
                .ok_or_else(|| ApiError::invalid(format!("client id {value:?} is not a number")))?;
            (node_of(id), hub.client(id).into_iter().collect())
        }
        "user" => (hub.node(), hub.subscribers(&format!("user:{value}"))),
        _ => (hub.node(), hub.subscribers(value)),
    };
    let listed: Vec<Value> = found
        .iter()
        .take(MAX_LISTED)
        .map(|c| describe(state, c))
        .collect();
    let mut r = json!({"node": node, "connections": listed});
    if found.len() > MAX_LISTED {
        r["more"] = json!(true);
    }
    Ok(r)
}

fn describe(state: &ApiState, c: &Arc<Client>) -> Value {
    let path = state
        .config
        .engine
        .servers
        .get(c.server)
        .map(|s| s.path().to_string());
    json!({
        "c": c.id.to_string(),
        "server": c.server,
        "path": path,
        "channels": c.channels().iter().map(|ch| ch.as_ref()).collect::<Vec<_>>(),
        "queued": c.outbox.len(),
    })
}

//! The API operations with their parameter checking, shared by the HTTP API
//! and the WebSocket API: each takes the request's JSON parameters and
//! returns the `r` object or an [`ApiError`] with its documented code (`docs/http-api.md`).

use crate::client_id::parse_client_id;
use crate::frame::{FrameType, frame};
use crate::mesh::{Mesh, MeshError};
use crate::publication::Publication;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;

/// Error codes of `docs/http-api.md` and `docs/websocket-api.md`.
pub mod code {
    pub const INVALID_ARGUMENT: u32 = 101;
    pub const CONSUME_FAILED: u32 = 201;
    pub const REPEATED_CONSUME: u32 = 202;
    pub const CANCEL_FAILED: u32 = 203;
    pub const CALL_FAILED: u32 = 301;
    pub const SEND_FAILED: u32 = 401;
}

/// An `{"c": code, "m": message}` error.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_ARGUMENT, message)
    }
}

/// The response envelope: `{"E": null, "r": {...}}` or `{"E": {"c", "m"}}`.
pub fn envelope(result: &Result<Value, ApiError>) -> Value {
    match result {
        Ok(r) => json!({"E": null, "r": r}),
        Err(e) => json!({"E": {"c": e.code, "m": e.message}}),
    }
}

fn object(p: &Value) -> Result<&serde_json::Map<String, Value>, ApiError> {
    p.as_object()
        .ok_or_else(|| ApiError::invalid("parameters must be a JSON object"))
}

/// Builds the frame from `d` and `t`: `d` must be a string, base64 when `t` is binary.
fn data_frame(p: &serde_json::Map<String, Value>) -> Result<tungstenite::Message, ApiError> {
    let t = match p.get("t") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ApiError::invalid("t must be \"text\" or \"binary\"")),
    };
    let ft =
        FrameType::parse(t).ok_or_else(|| ApiError::invalid("t must be \"text\" or \"binary\""))?;
    let d = match p.get("d") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(ApiError::invalid("missing d (data)")),
        Some(_) => return Err(ApiError::invalid("d must be a string")),
    };
    let bytes = match ft {
        FrameType::Text => Bytes::copy_from_slice(d.as_bytes()),
        FrameType::Binary => base64::engine::general_purpose::STANDARD
            .decode(d)
            .map(Bytes::from)
            .map_err(|e| ApiError::invalid(format!("d is not valid base64: {e}")))?,
    };
    frame(bytes, ft).map_err(|e| ApiError::invalid(e.to_string()))
}

/// `mesh.publish` / `POST /v1/mesh/publish`.
pub async fn publish(mesh: &Mesh, params: &Value) -> Result<Value, ApiError> {
    let p = object(params)?;
    let ch = match p.get("c") {
        Some(Value::String(s)) if crate::hub::valid_channel(s) => s.as_str(),
        Some(Value::String(_)) => {
            return Err(ApiError::invalid(
                "c must be a non-empty channel name without spaces",
            ));
        }
        None | Some(Value::Null) => return Err(ApiError::invalid("missing c (channel)")),
        Some(_) => return Err(ApiError::invalid("c must be a string")),
    };
    let msg = data_frame(p)?;
    // `e`: the Socket.IO event name (raw WebSocket subscribers get `d` alone).
    let event = match p.get("e") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) if !e.is_empty() && e.len() <= 256 => Some(Arc::from(e.as_str())),
        Some(_) => {
            return Err(ApiError::invalid(
                "e must be a non-empty string of at most 256 bytes",
            ));
        }
    };
    let out = mesh
        .publish(Arc::new(Publication {
            event,
            ..Publication::new(ch, msg)
        }))
        .await;
    let mut r = json!({"s": out.delivery.success, "f": out.delivery.fail});
    // Cluster extensions: who did not report, or why nobody could.
    if !out.missing.is_empty() {
        r["missing"] = json!(out.missing);
    }
    if let Some(e) = out.error {
        r["error"] = json!(e);
    }
    Ok(r)
}

/// The client id of `c`: a decimal string or a number.
fn client_id(p: &serde_json::Map<String, Value>) -> Result<u64, ApiError> {
    match p.get("c") {
        Some(Value::String(s)) => parse_client_id(s),
        Some(Value::Number(n)) => n.as_u64(),
        None | Some(Value::Null) => return Err(ApiError::invalid("missing c (client id)")),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid("c must be a client id (decimal string)"))
}

/// `mesh.send` / `POST /v1/mesh/send`.
pub async fn send(mesh: &Mesh, params: &Value) -> Result<Value, ApiError> {
    let p = object(params)?;
    let id = client_id(p)?;
    let msg = data_frame(p)?;
    match mesh.send(id, msg).await {
        Ok(()) => Ok(json!({"s": true})),
        Err(MeshError::InvalidText) => Err(ApiError::invalid("text data is not valid UTF-8")),
        Err(e) => Err(ApiError::new(code::SEND_FAILED, e.to_string())),
    }
}

/// `conn.call`: `{c: client_id, f: name, a: [args]}`.
pub async fn call(mesh: &Mesh, params: &Value) -> Result<Value, ApiError> {
    let p = object(params)?;
    let id = client_id(p)?;
    let f = p
        .get("f")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("missing f (function name)"))?;
    let func = crate::outbox::CallFunc::parse(f).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown function {f:?}; use set_context_value, set_context, subscribe, unsubscribe or close"
        ))
    })?;
    let args = match p.get("a") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ApiError::invalid("a must be an array")),
    };
    match tokio::time::timeout(CALL_TIMEOUT, mesh.call(id, func, args)).await {
        Ok(r) => r
            .map(|()| json!({"s": true}))
            .map_err(|e| ApiError::new(code::CALL_FAILED, e.to_string())),
        Err(_) => Err(ApiError::new(
            code::CALL_FAILED,
            format!("client {id} did not apply the call within {CALL_TIMEOUT:?}"),
        )),
    }
}

/// The longest a `conn.call` answer waits for the connection to apply it
/// (a connection whose writes are stalled applies calls late).
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

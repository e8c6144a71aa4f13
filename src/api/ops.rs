//! The API operations with their parameter checking, shared by the HTTP API,
//! the WebSocket API and batches: each takes the request's JSON parameters
//! and returns the `r` object or an [`ApiError`] with its documented code
//! (`docs/http-api.md`). [`dispatch`] is the one place a method name picks
//! its operation; publish is [`super::publish`]'s, batches
//! [`super::batch`]'s.

use super::ApiState;
use crate::client_id::parse_client_id;
use crate::frame::{FrameType, frame};
use crate::json_text::json_text;
use crate::mesh::{Mesh, MeshError};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

/// Error codes of `docs/http-api.md` and `docs/websocket-api.md`.
pub mod code {
    pub const INVALID_ARGUMENT: u32 = 101;
    pub const CONSUME_FAILED: u32 = 201;
    pub const REPEATED_CONSUME: u32 = 202;
    pub const CANCEL_FAILED: u32 = 203;
    pub const CALL_FAILED: u32 = 301;
    pub const SEND_FAILED: u32 = 401;
    /// History (`api/history.rs`): the channel keeps no history.
    pub const NO_HISTORY: u32 = 501;
    /// `since` is malformed or past the channel's top offset.
    pub const INVALID_SINCE: u32 = 502;
    /// `since.epoch` is not the channel's epoch (its history was lost).
    pub const UNKNOWN_EPOCH: u32 = 503;
    /// The history engine cannot be reached (cluster: Redis is down).
    pub const HISTORY_UNAVAILABLE: u32 = 504;
    /// A batch over `apiServer.maxBatch`, or a channel list over
    /// `apiServer.maxPublishChannels`.
    pub const LIMIT_EXCEEDED: u32 = 106;
    /// An idempotent publish that could not be decided now (the first
    /// publish with its key is still running, or the key store is
    /// unreachable): this request delivered nothing; retry.
    pub const IDEMPOTENCY_PENDING: u32 = 120;
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

/// [`envelope`] as the bytes of its JSON text, without building the outer
/// object: the same text `envelope(result).to_string()` gives.
pub fn envelope_bytes(result: &Result<Value, ApiError>) -> Vec<u8> {
    match result {
        Ok(r) => {
            let mut out = Vec::with_capacity(64);
            out.extend_from_slice(br#"{"E":null,"r":"#);
            // Writing a `Value` into a `Vec` cannot fail.
            serde_json::to_writer(&mut out, r).expect("a JSON value serializes");
            out.push(b'}');
            out
        }
        Err(_) => json_text(&envelope(result)).into_bytes(),
    }
}

pub(super) fn object(p: &Value) -> Result<&serde_json::Map<String, Value>, ApiError> {
    p.as_object()
        .ok_or_else(|| ApiError::invalid("parameters must be a JSON object"))
}

/// Builds the frame from `d` and `t`: `d` must be a string, base64 when `t` is binary.
pub(super) fn data_frame(
    p: &serde_json::Map<String, Value>,
) -> Result<tungstenite::Message, ApiError> {
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

/// Runs the API method `method` (a WebSocket API request's `m`, a batch
/// item's `m`) with its parameters.
pub async fn dispatch(state: &ApiState, method: &str, params: &Value) -> Result<Value, ApiError> {
    match method {
        "mesh.batch" => super::batch::run(state, params).await,
        _ => single(state, method, params).await,
    }
}

/// A method that can be a batch item: any but `mesh.batch`.
pub async fn single(state: &ApiState, method: &str, params: &Value) -> Result<Value, ApiError> {
    let mesh = &state.mesh;
    match method {
        "mesh.publish" => super::publish::publish(state, params).await,
        "mesh.send" => send(mesh, params).await,
        "conn.call" => call(mesh, params).await,
        "presence" => super::presence::presence(state, params).await,
        "presence_stats" => super::presence::stats(state, params).await,
        "history" => super::history::history(mesh, params).await,
        "mesh.batch" => Err(ApiError::invalid("a batch cannot contain mesh.batch")),
        "" => Err(ApiError::invalid("missing m (method)")),
        other => Err(ApiError::invalid(format!("unknown method {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_bytes_are_the_envelope_text() {
        for result in [
            Ok(json!({"s": 3, "f": 1, "missing": ["b"], "error": "why \"quoted\" \u{e9}"})),
            Ok(json!([])),
            Err(ApiError::invalid("missing d (data)")),
            Err(ApiError::new(code::IDEMPOTENCY_PENDING, "retry \n now")),
        ] {
            let bytes = envelope_bytes(&result);
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                envelope(&result).to_string()
            );
        }
    }
}

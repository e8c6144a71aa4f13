//! `GET`/`POST /v1/history` and the WebSocket API's `history` method: a
//! channel's kept publications after a position, and its top position
//! (`docs/http-api.md`, "History").
//!
//! Parameters: `c` (channel), `limit` (at most this many; default the
//! channel's `historySize`; 0 answers the top position only), `since`
//! (`{"offset": n, "epoch": "e"}`: only what came after it). In a GET they
//! are query parameters: `c`, `limit`, `offset` and `epoch` (both or none).
//!
//! Answer: `{"publications": [{"offset": n, "d": data, "t": "binary"
//! (binary only, `d` in base64), "e": event (if any)}], "offset": top,
//! "epoch": e, "complete": bool}`.

use super::ops::{ApiError, code};
use crate::broker::history::{HistoryError, Position, Publication};
use crate::frame::FrameType;
use crate::frame::parts;
use crate::mesh::Mesh;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// `history` / `GET`/`POST /v1/history`.
pub async fn history(mesh: &Mesh, params: &Value) -> Result<Value, ApiError> {
    let p = params
        .as_object()
        .ok_or_else(|| ApiError::invalid("parameters must be a JSON object"))?;
    let ch = match p.get("c") {
        Some(Value::String(s)) if crate::hub::valid_channel(s) => s.as_str(),
        None | Some(Value::Null) => return Err(ApiError::invalid("missing c (channel)")),
        _ => {
            return Err(ApiError::invalid(
                "c must be a non-empty channel name without spaces",
            ));
        }
    };
    let limit = match p.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| ApiError::invalid("limit must be a non-negative integer"))?
                as usize,
        ),
    };
    let since = since(p.get("since"))?;
    let page = mesh.history(ch, since, limit).await.map_err(api_error)?;
    let publications: Vec<Value> = page.publications.iter().map(|p| publication(p)).collect();
    Ok(json!({
        "publications": publications,
        "offset": page.top.offset,
        "epoch": &*page.top.epoch,
        "complete": page.complete,
    }))
}

/// The parameters of a `GET /v1/history?c=..&limit=..&offset=..&epoch=..`
/// in the shape of the POST body.
pub fn query_params(query: Option<&str>) -> Value {
    let mut p = Map::new();
    let mut since = Map::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let number = || {
            v.parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(v.to_string()))
        };
        match k.as_ref() {
            "c" => {
                p.insert("c".into(), Value::String(v.to_string()));
            }
            "limit" => {
                p.insert("limit".into(), number());
            }
            "offset" => {
                since.insert("offset".into(), number());
            }
            "epoch" => {
                since.insert("epoch".into(), Value::String(v.to_string()));
            }
            _ => {}
        }
    }
    if !since.is_empty() {
        p.insert("since".into(), Value::Object(since));
    }
    Value::Object(p)
}

/// Parses `since`: absent/null, or `{"offset": n >= 0, "epoch": "e"}`.
pub fn since(v: Option<&Value>) -> Result<Option<Position>, ApiError> {
    let bad = |why: &str| {
        ApiError::new(
            code::INVALID_SINCE,
            format!("since must be {{\"offset\": n, \"epoch\": \"e\"}}: {why}"),
        )
    };
    let s = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(s)) => s,
        Some(_) => return Err(bad("not an object")),
    };
    let offset = s
        .get("offset")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("offset must be a non-negative integer"))?;
    let epoch = match s.get("epoch") {
        Some(Value::String(e)) if !e.is_empty() => e,
        _ => return Err(bad("epoch must be a non-empty string")),
    };
    Ok(Some(Position {
        offset,
        epoch: Arc::from(epoch.as_str()),
    }))
}

/// The documented error of a failed history read.
pub fn api_error(e: HistoryError) -> ApiError {
    let c = match &e {
        HistoryError::NoHistory(_) => code::NO_HISTORY,
        HistoryError::InvalidSince { .. } => code::INVALID_SINCE,
        HistoryError::UnknownEpoch { .. } => code::UNKNOWN_EPOCH,
        HistoryError::Unavailable(_) => code::HISTORY_UNAVAILABLE,
    };
    ApiError::new(c, e.to_string())
}

/// One publication as the API answers it.
fn publication(p: &Publication) -> Value {
    let (ftype, data) = parts(&p.frame);
    let mut v = json!({"offset": p.position.as_ref().map_or(0, |p| p.offset)});
    match ftype {
        FrameType::Text => v["d"] = json!(String::from_utf8_lossy(&data)),
        FrameType::Binary => {
            v["d"] = json!(base64::engine::general_purpose::STANDARD.encode(&data));
            v["t"] = json!("binary");
        }
    }
    if let Some(e) = &p.event {
        v["e"] = json!(&**e);
    }
    v
}

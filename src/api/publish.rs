//! `mesh.publish` / `POST /v1/mesh/publish`: one channel or a list of them
//! (`"c": [..]`, the same frame to each, counts summed), and the optional
//! idempotency key `k` (`docs/http-api.md`, "Idempotent publish").
//! A publish with a key goes through [`crate::publish_once`], which Lua's
//! `mix.mesh.publish` shares: the same key and channels answer the same,
//! whichever door a retry comes through.

use super::ApiState;
use super::ops::{ApiError, code, data_frame, object};
use crate::mesh::{Mesh, Published};
use crate::publication::Publication;
use crate::publish_once::{MAX_EVENT_LEN, MAX_KEY_LEN, Once, answer, publish_once};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tungstenite::Message;

const CHANNEL_RULE: &str = "a non-empty channel name without spaces (at most 256 bytes)";

/// The channels of `c`: one name, or a non-empty list of at most `max`
/// (borrowed from the request: a personal push allocates no list).
fn channels(p: &serde_json::Map<String, Value>, max: usize) -> Result<Channels<'_>, ApiError> {
    fn one(v: &Value) -> Result<&str, ApiError> {
        match v {
            Value::String(s) if crate::hub::valid_channel(s) => Ok(s.as_str()),
            Value::String(s) => Err(ApiError::invalid(format!(
                "channel {s:?} is not valid: use {CHANNEL_RULE}"
            ))),
            _ => Err(ApiError::invalid(
                "c must be a channel name or a list of channel names",
            )),
        }
    }
    match p.get("c") {
        None | Some(Value::Null) => Err(ApiError::invalid("missing c (channel)")),
        Some(Value::Array(list)) if list.is_empty() => {
            Err(ApiError::invalid("c is an empty list of channels"))
        }
        Some(Value::Array(list)) if list.len() > max => Err(ApiError::new(
            code::LIMIT_EXCEEDED,
            format!(
                "c names {} channels; at most {max} (engine.apiServer.maxPublishChannels)",
                list.len()
            ),
        )),
        Some(Value::Array(list)) => list
            .iter()
            .map(one)
            .collect::<Result<_, _>>()
            .map(Channels::Many),
        Some(v) => one(v).map(Channels::One),
    }
}

/// What [`channels`] found.
enum Channels<'a> {
    One(&'a str),
    Many(Vec<&'a str>),
}

impl<'a> Channels<'a> {
    fn as_slice(&self) -> &[&'a str] {
        match self {
            Channels::One(ch) => std::slice::from_ref(ch),
            Channels::Many(list) => list,
        }
    }
}

/// The idempotency key `k`, if any: a string of 1 to [`MAX_KEY_LEN`] bytes.
fn idempotency_key(p: &serde_json::Map<String, Value>) -> Result<Option<String>, ApiError> {
    match p.get("k") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_KEY_LEN => Ok(Some(k.clone())),
        Some(Value::String(_)) => Err(ApiError::invalid(format!(
            "k (idempotency key) must be 1 to {MAX_KEY_LEN} bytes"
        ))),
        Some(_) => Err(ApiError::invalid("k (idempotency key) must be a string")),
    }
}

/// `e`: the Socket.IO event name (raw WebSocket subscribers get `d` alone).
fn event_name(p: &serde_json::Map<String, Value>) -> Result<Option<Arc<str>>, ApiError> {
    match p.get("e") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(e)) if !e.is_empty() && e.len() <= MAX_EVENT_LEN => {
            Ok(Some(Arc::from(e.as_str())))
        }
        Some(_) => Err(ApiError::invalid(format!(
            "e must be a non-empty string of at most {MAX_EVENT_LEN} bytes"
        ))),
    }
}

/// `mesh.publish` / `POST /v1/mesh/publish`.
pub async fn publish(state: &ApiState, params: &Value) -> Result<Value, ApiError> {
    let p = object(params)?;
    let chans = channels(p, state.config.engine.api_server.max_publish_channels)?;
    let msg = data_frame(p)?;
    let event = event_name(p)?;
    let key = idempotency_key(p)?;
    let mesh = state.mesh.clone();
    let Some(key) = key else {
        return Ok(deliver(&mesh, chans.as_slice(), msg, event).await);
    };
    // Boxed: the keyed path's state stays out of every plain publish's
    // future (the WebSocket API boxes one per request).
    Box::pin(publish_keyed(&mesh, &chans, msg, event, key, state)).await
}

/// A publish with an idempotency key ([`publish_once`]).
async fn publish_keyed(
    mesh: &Arc<Mesh>,
    chans: &Channels<'_>,
    msg: Message,
    event: Option<Arc<str>>,
    key: String,
    state: &ApiState,
) -> Result<Value, ApiError> {
    // Channel names contain no spaces, so the list joined by one is unique.
    let scope = chans.as_slice().join(" ");
    let chans: Vec<String> = chans.as_slice().iter().map(|c| c.to_string()).collect();
    let ttl = Duration::from_secs(state.config.engine.idempotency_ttl);
    let run = {
        let mesh = mesh.clone();
        async move { deliver(&mesh, &chans, msg, event).await }
    };
    match publish_once(mesh, scope, key, ttl, run).await {
        Once::Published(r) => Ok(r),
        Once::Failed(e) => Err(ApiError::invalid(format!("publish failed: {e}"))),
        Once::Recorded(answer) => serde_json::from_str(&answer).map_err(|e| {
            ApiError::new(
                code::IDEMPOTENCY_PENDING,
                format!("the recorded answer for this key is unreadable: {e}"),
            )
        }),
        Once::Pending => Err(ApiError::new(
            code::IDEMPOTENCY_PENDING,
            "a publish with this key is still running; this request delivered nothing, retry",
        )),
        Once::Unavailable(e) => Err(ApiError::new(
            code::IDEMPOTENCY_PENDING,
            format!(
                "the idempotency key store is unavailable ({e}); this request delivered nothing, retry"
            ),
        )),
    }
}

/// Publishes `msg` to every channel of `chans` and answers the summed counts.
async fn deliver<C: AsRef<str>>(
    mesh: &Arc<Mesh>,
    chans: &[C],
    msg: Message,
    event: Option<Arc<str>>,
) -> Value {
    let publication = |ch: &str, msg: Message| {
        Arc::new(Publication {
            event: event.clone(),
            ..Publication::new(ch, msg)
        })
    };
    if let [ch] = chans {
        return answer(&mesh.publish(publication(ch.as_ref(), msg)).await);
    }
    let outs = futures_util::future::join_all(
        chans
            .iter()
            .map(|ch| mesh.publish(publication(ch.as_ref(), msg.clone()))),
    );
    let mut sum = Published::default();
    let mut positions = serde_json::Map::new();
    for (ch, out) in chans.iter().zip(outs.await) {
        if let Some(pos) = &out.position {
            positions.insert(
                ch.as_ref().to_string(),
                json!({"offset": pos.offset, "epoch": &*pos.epoch}),
            );
        }
        sum.delivery.success += out.delivery.success;
        sum.delivery.fail += out.delivery.fail;
        for m in out.missing {
            if !sum.missing.contains(&m) {
                sum.missing.push(m);
            }
        }
        sum.error = sum.error.or(out.error);
    }
    let mut r = answer(&sum);
    // History extension: each channel's position, for those with history.
    if !positions.is_empty() {
        r["positions"] = Value::Object(positions);
    }
    r
}

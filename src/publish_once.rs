//! A publish with an idempotency key, the same for every door (the HTTP
//! and WebSocket APIs' `k`, Lua's `mix.mesh.publish` option `key`;
//! `docs/http-api.md`, "Idempotent publish").
//!
//! The key is claimed in the broker's key store (cluster-wide in a
//! cluster) for a scope (the channels). The first claim publishes and
//! records its answer; a later one gets that answer and delivers nothing.
//! The claimed publish runs as its own task, so a caller that goes away
//! mid-publish still leaves its answer recorded for the retry.

use crate::broker::Claim;
use crate::hub::Delivery;
use crate::json_text::json_text;
use crate::mesh::{Mesh, Published};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// The longest Socket.IO event name a publish may carry, in bytes.
pub const MAX_EVENT_LEN: usize = 256;

/// What a keyed publish came to.
#[derive(Debug)]
pub enum Once {
    /// This call claimed the key and published: its answer, now recorded.
    Published(Value),
    /// An earlier publish with the key: the answer it recorded (JSON text;
    /// unreadable if someone else wrote the key).
    Recorded(String),
    /// The first publish with the key is still running: this call
    /// delivered nothing; retry.
    Pending,
    /// The key store cannot be reached: this call delivered nothing; retry.
    Unavailable(String),
    /// The publish task failed (a bug): what it said.
    Failed(String),
}

/// Runs `publish` once per `key` in `scope`, recording its answer for `ttl`.
pub async fn publish_once<F>(
    mesh: &Arc<Mesh>,
    scope: String,
    key: String,
    ttl: Duration,
    publish: F,
) -> Once
where
    F: Future<Output = Value> + Send + 'static,
{
    match mesh.claim(&scope, &key, ttl).await {
        Claim::First => {
            let mesh = mesh.clone();
            let task = tokio::spawn(async move {
                let r = publish.await;
                mesh.settle(&scope, &key, json_text(&r), ttl).await;
                r
            });
            match task.await {
                Ok(r) => Once::Published(r),
                Err(e) => Once::Failed(e.to_string()),
            }
        }
        Claim::Done(answer) => Once::Recorded(answer),
        Claim::Pending => Once::Pending,
        Claim::Unavailable(e) => Once::Unavailable(e),
    }
}

/// A publish's answer object (the API's `r`, and what a key records):
/// `s`, `f`, and in a cluster `missing` and `error` when the counts may be
/// short, and a history channel's `offset` and `epoch`.
pub fn answer(out: &Published) -> Value {
    let mut r = json!({"s": out.delivery.success, "f": out.delivery.fail});
    if !out.missing.is_empty() {
        r["missing"] = json!(out.missing);
    }
    if let Some(e) = &out.error {
        r["error"] = json!(e);
    }
    if let Some(pos) = &out.position {
        r["offset"] = json!(pos.offset);
        r["epoch"] = json!(&*pos.epoch);
    }
    r
}

/// The counts and cluster fields of an answer [`answer`] wrote (a recorded
/// one included); what is missing or unreadable counts as zero or none.
pub fn from_answer(r: &Value) -> Published {
    let n = |k| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    Published {
        delivery: Delivery {
            success: n("s"),
            fail: n("f"),
        },
        missing: r
            .get("missing")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        error: r.get("error").and_then(Value::as_str).map(str::to_string),
        position: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reads_back_as_its_counts() {
        let out = Published {
            delivery: Delivery {
                success: 3,
                fail: 1,
            },
            missing: vec!["b".into()],
            error: Some("redis down".into()),
            position: None,
        };
        let r = answer(&out);
        assert_eq!(
            r,
            json!({"s": 3, "f": 1, "missing": ["b"], "error": "redis down"})
        );
        assert_eq!(from_answer(&r), out);
        let plain = Published::default();
        assert_eq!(answer(&plain), json!({"s": 0, "f": 0}));
        assert_eq!(from_answer(&answer(&plain)), plain);
    }
}

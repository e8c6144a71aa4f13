//! `mesh.batch` / `POST /v1/mesh/batch`: many API requests in one, for a
//! backend that notifies many users at once.
//!
//! The parameters are an array of requests in the WebSocket API's shape,
//! `[{"m": "mesh.publish", "p": {...}}, {"m": "mesh.send", "p": {...}}, ...]`;
//! the result is the array of their envelopes (`{"E": null, "r": ...}` or
//! `{"E": {"c", "m"}}`), in the same order. Each item runs through
//! [`super::ops::single`], the same operations as a request of its own; one
//! item's error does not stop the others. Items are started in order (each
//! runs until its first wait before the next starts, as requests on one
//! WebSocket API connection do) and then finish concurrently.
//!
//! Bound: at most `engine.apiServer.maxBatch` items (else code 106 and
//! nothing runs); a batch cannot contain `mesh.batch`.

use super::ApiState;
use super::ops::{self, ApiError, code, envelope};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

type Item<'a> = Pin<Box<dyn Future<Output = Value> + Send + 'a>>;

/// Runs one batch (see the module documentation).
pub async fn run(state: &ApiState, params: &Value) -> Result<Value, ApiError> {
    let Value::Array(items) = params else {
        return Err(ApiError::invalid(
            "a batch is an array of requests [{\"m\": method, \"p\": params}, ...]",
        ));
    };
    let max = state.config.engine.api_server.max_batch;
    if items.len() > max {
        return Err(ApiError::new(
            code::LIMIT_EXCEEDED,
            format!(
                "the batch has {} requests; at most {max} (engine.apiServer.maxBatch)",
                items.len()
            ),
        ));
    }
    let mut answers: Vec<Option<Value>> = Vec::with_capacity(items.len());
    let mut running: Vec<(usize, Item<'_>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut fut: Item<'_> = Box::pin(async move { envelope(&one(state, item).await) });
        // Started now, before the next item: this keeps items in order.
        match futures_util::poll!(&mut fut) {
            Poll::Ready(v) => answers.push(Some(v)),
            Poll::Pending => {
                answers.push(None);
                running.push((i, fut));
            }
        }
    }
    let finished = futures_util::future::join_all(
        running
            .into_iter()
            .map(|(i, f)| async move { (i, f.await) }),
    );
    for (i, v) in finished.await {
        answers[i] = Some(v);
    }
    Ok(Value::Array(answers.into_iter().flatten().collect()))
}

/// One item: `{"m": method, "p": params}`.
async fn one(state: &ApiState, item: &Value) -> Result<Value, ApiError> {
    let Value::Object(req) = item else {
        return Err(ApiError::invalid(
            "a batch item must be an object {\"m\", \"p\"}",
        ));
    };
    let method = match req.get("m") {
        Some(Value::String(m)) => m.as_str(),
        None | Some(Value::Null) => "",
        Some(_) => return Err(ApiError::invalid("m (method) must be a string")),
    };
    let empty = json!({});
    let params = req.get("p").unwrap_or(&empty);
    ops::single(state, method, params).await
}

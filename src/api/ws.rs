//! The WebSocket API at `/ws/v1` (CONTRACT section 5): JSON requests
//! `{"m", "p", "i"}` answered `{"E", "r", "i"}`, many in flight at once on
//! one connection, and `queue.pop` events pushed to a consumer.
//!
//! One reader loop dispatches requests (each in its own task, so a slow
//! `conn.call` does not hold up a publish), one writer task owns the socket.
//! A queue consumer only takes a message from its topic once the writer has
//! room for it, and hands back whatever it could not write when the
//! connection ends, so nothing is lost when a backend disconnects.

use super::ApiState;
use super::ops::{self, ApiError, code};
use crate::queue::QueuedMessage;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// What the writer sends.
enum Outgoing {
    Text(String),
    Event(QueuedMessage),
    Close(u16, &'static str),
}

/// The answer frame to a request.
fn response(id: &Value, result: Result<Value, ApiError>) -> String {
    match result {
        Ok(r) => json!({"E": null, "r": r, "i": id}),
        Err(e) => json!({"E": {"c": e.code, "m": e.message}, "r": null, "i": id}),
    }
    .to_string()
}

fn event_json(m: &QueuedMessage) -> String {
    json!({"e": "queue.pop", "p": {"n": m.node, "c": m.client_id, "t": m.topic, "d": m.data}})
        .to_string()
}

/// Serves one upgraded API connection until it closes or `stop` fires.
pub async fn serve(ws: Socket, state: Arc<ApiState>, stop: CancellationToken) {
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::channel::<Outgoing>(256);
    let writer = tokio::spawn(write_loop(sink, rx, state.clone()));
    let mut consumer: Option<Consumer> = None;
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => {
                let _ = tx.send(Outgoing::Close(1001, "server shutting down")).await;
                break;
            }
            f = stream.next() => f,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let r = response(
                    &Value::Null,
                    Err(ApiError::invalid("send JSON text frames")),
                );
                let _ = tx.send(Outgoing::Text(r)).await;
                continue;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        if text.as_str() == "ping" {
            let _ = tx.send(Outgoing::Text("pong".into())).await;
            continue;
        }
        let req: Value = match serde_json::from_str(text.as_str()) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) | Err(_) => {
                let r = response(
                    &Value::Null,
                    Err(ApiError::invalid(
                        "request must be a JSON object {\"m\", \"p\", \"i\"}",
                    )),
                );
                let _ = tx.send(Outgoing::Text(r)).await;
                continue;
            }
        };
        let id = req.get("i").cloned().unwrap_or(Value::Null);
        let params = req.get("p").cloned().unwrap_or(json!({}));
        let method = req
            .get("m")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match method.as_str() {
            "queue.pop" => {
                let r = start_consuming(&state, &mut consumer, &params, &tx);
                let _ = tx.send(Outgoing::Text(response(&id, r))).await;
            }
            "queue.unpop" => {
                let r = match consumer.take() {
                    Some(c) => {
                        c.stop(&state);
                        Ok(json!({"s": true}))
                    }
                    None => Err(ApiError::new(
                        code::CANCEL_FAILED,
                        "this connection is not consuming",
                    )),
                };
                let _ = tx.send(Outgoing::Text(response(&id, r))).await;
            }
            _ => {
                let (state, tx) = (state.clone(), tx.clone());
                tokio::spawn(async move {
                    let r = dispatch(&state, &method, &params).await;
                    let _ = tx.send(Outgoing::Text(response(&id, r))).await;
                });
            }
        }
    }
    if let Some(c) = consumer.take() {
        c.stop(&state);
    }
    drop(tx);
    let _ = writer.await;
}

async fn dispatch(state: &ApiState, method: &str, params: &Value) -> Result<Value, ApiError> {
    let mesh = &state.mesh;
    let r = match method {
        "mesh.publish" => ops::publish(mesh, params).await,
        "mesh.send" => ops::send(mesh, params).await,
        "conn.call" => ops::call(mesh, params).await,
        "" => Err(ApiError::invalid("missing m (method)")),
        other => Err(ApiError::invalid(format!("unknown method {other:?}"))),
    };
    let code = match &r {
        Ok(_) => "0".to_string(),
        Err(e) => e.code.to_string(),
    };
    mesh.metrics
        .api_requests
        .with_label_values(&[method_label(method), &code])
        .inc();
    r
}

fn method_label(m: &str) -> &'static str {
    match m {
        "mesh.publish" => "ws:mesh.publish",
        "mesh.send" => "ws:mesh.send",
        "conn.call" => "ws:conn.call",
        _ => "ws:other",
    }
}

/// A running `queue.pop`.
struct Consumer {
    id: crate::queue::ConsumerId,
    stop: CancellationToken,
}

impl Consumer {
    /// Stops taking; a message already being taken is handed back.
    fn stop(self, state: &ApiState) {
        self.stop.cancel();
        state.mesh.queues.unregister(self.id);
    }
}

fn start_consuming(
    state: &Arc<ApiState>,
    consumer: &mut Option<Consumer>,
    params: &Value,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<Value, ApiError> {
    if consumer.is_some() {
        return Err(ApiError::new(
            code::REPEATED_CONSUME,
            "this connection already consumes; queue.unpop first",
        ));
    }
    let topics: Vec<String> = match params.get("t") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid("t must be an array of topic names"))?,
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => {
            return Err(ApiError::invalid(
                "t must be a non-empty array of topic names",
            ));
        }
    };
    let queues = state.mesh.queues.clone();
    let (id, notify) = queues.register(topics);
    let tx = tx.clone();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            // Room in the writer first, so a taken message always has a slot.
            let permit = tokio::select! {
                _ = stopped.cancelled() => return,
                p = tx.reserve() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let Some(m) = queues.take(id, &notify, &stopped).await else {
                return;
            };
            if stopped.is_cancelled() {
                queues.requeue(m).await;
                return;
            }
            permit.send(Outgoing::Event(m));
        }
    });
    *consumer = Some(Consumer { id, stop });
    Ok(json!({"s": true}))
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
    state: Arc<ApiState>,
) {
    while let Some(o) = rx.recv().await {
        let sent = match o {
            Outgoing::Text(t) => sink.send(Message::text(t)).await.is_ok(),
            Outgoing::Event(m) => {
                let ok = sink.send(Message::text(event_json(&m))).await.is_ok();
                if !ok {
                    state.mesh.queues.requeue(m).await;
                }
                ok
            }
            Outgoing::Close(code, reason) => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    })))
                    .await;
                false
            }
        };
        if !sent {
            break;
        }
    }
    // Hand back queue messages that were taken but never written.
    rx.close();
    while let Ok(o) = rx.try_recv() {
        if let Outgoing::Event(m) = o {
            state.mesh.queues.requeue(m).await;
        }
    }
    let _ = sink.close().await;
}

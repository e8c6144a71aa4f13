//! The WebSocket API at `/ws/v1` (`docs/websocket-api.md`): JSON requests
//! `{"m", "p", "i"}` answered `{"E", "r", "i"}`, many in flight at once on
//! one connection, and `queue.pop` events pushed to a consumer.
//!
//! Order: requests take effect in the order they were sent. Each request is
//! started (run up to its first wait: a publish has queued its frame to every
//! local subscriber and handed it to the broker, a send or `conn.call` has
//! queued it to the client) before the next frame is read. Answers come back
//! as requests finish, so a slow `conn.call` does not hold up a publish.
//!
//! Bounds (README "Limits"), so a backend that sends without reading cannot
//! grow the gateway:
//! - at most `apiServer.wsMaxInFlight` requests in flight; at the bound the
//!   reader stops reading the socket (TCP pushes back on the sender);
//! - at most [`MAX_QUEUED_ANSWERS`] answers queued for the writer; when that
//!   is full, finished requests wait and so does the reader;
//! - a write that stalls longer than `apiServer.writeTimeout` closes the
//!   connection ([`super::stall`]);
//! - a frame over `apiServer.maxBodySize` is refused with close 1009.
//!
//! A queue consumer only takes a message from its topic once the writer has
//! room for it, and hands back whatever it could not write when the
//! connection ends, so nothing is lost when a backend disconnects.

use super::ApiState;
use super::ops::{self, ApiError, code};
use crate::json_text::json_text;
use crate::queue::QueuedMessage;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Answers (and queue events) waiting for the writer.
pub const MAX_QUEUED_ANSWERS: usize = 64;

/// A request started and not yet answered; yields its answer frame.
type InFlight = Pin<Box<dyn Future<Output = String> + Send>>;

/// What the writer sends.
enum Outgoing {
    Text(String),
    Event(QueuedMessage),
    Close(u16, &'static str),
}

/// The answer frame to a request.
fn response(id: &Value, result: Result<Value, ApiError>) -> String {
    json_text(&match result {
        Ok(r) => json!({"E": null, "r": r, "i": id}),
        Err(e) => json!({"E": {"c": e.code, "m": e.message}, "r": null, "i": id}),
    })
}

fn event_json(m: &QueuedMessage) -> String {
    json_text(
        &json!({"e": "queue.pop", "p": {"n": m.node, "c": m.client_id, "t": m.topic, "d": m.data}}),
    )
}

/// Bytes read from the socket at a time. tungstenite zero-fills this much
/// of its buffer before every read, also the reads that find nothing (its
/// default, 128 KiB, cost more than the publish itself, `bench/delivery_cost.sh`);
/// a larger frame is read in several steps.
const READ_BUFFER: usize = 8 * 1024;

/// The socket limits of `/ws/v1`: no frame or message over `maxBodySize`.
pub fn socket_config(max_body_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_body_size))
        .max_frame_size(Some(max_body_size))
}

/// What the reader loop does next.
enum Step {
    Frame(Option<Result<Message, WsError>>),
    Answer(String),
    Stop,
}

/// Serves one upgraded API connection until it closes or `stop` fires.
pub async fn serve(ws: Socket, state: Arc<ApiState>, stop: CancellationToken) {
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::channel::<Outgoing>(MAX_QUEUED_ANSWERS);
    let writer = tokio::spawn(write_loop(sink, rx, state.clone()));
    let max_in_flight = state.config.engine.api_server.ws_max_in_flight;
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut consumer: Option<Consumer> = None;
    loop {
        let step = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                let _ = tx.try_send(Outgoing::Close(1001, "server shutting down"));
                break;
            }
            // The writer is gone (the socket failed or stalled): stop.
            _ = tx.closed() => Step::Stop,
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => Step::Answer(answer),
            f = stream.next(), if in_flight.len() < max_in_flight => Step::Frame(f),
        };
        let out = match step {
            Step::Stop => break,
            Step::Answer(a) => Outgoing::Text(a),
            Step::Frame(frame) => {
                match read_frame(frame, &state, &mut consumer, &tx) {
                    Read::Nothing => continue,
                    Read::Answer(a) => Outgoing::Text(a),
                    Read::Start(mut request) => {
                        // Started now, before the next frame is read: this
                        // is what keeps requests in order.
                        match futures_util::poll!(&mut request) {
                            Poll::Ready(a) => Outgoing::Text(a),
                            Poll::Pending => {
                                in_flight.push(request);
                                continue;
                            }
                        }
                    }
                    Read::End(close) => {
                        if let Some((code, why)) = close {
                            let _ = tx.try_send(Outgoing::Close(code, why));
                        }
                        break;
                    }
                }
            }
        };
        let queued = tokio::select! {
            r = tx.send(out) => r.is_ok(),
            _ = stop.cancelled() => false,
        };
        if !queued {
            if stop.is_cancelled() {
                let _ = tx.try_send(Outgoing::Close(1001, "server shutting down"));
            }
            break;
        }
    }
    if let Some(c) = consumer.take() {
        c.stop(&state);
    }
    drop(in_flight);
    drop(tx);
    let _ = writer.await;
}

/// What one frame asks for.
enum Read {
    Nothing,
    /// Answered at once.
    Answer(String),
    /// A request to start.
    Start(InFlight),
    /// The connection ends, with this close frame if any.
    End(Option<(u16, &'static str)>),
}

fn read_frame(
    frame: Option<Result<Message, WsError>>,
    state: &Arc<ApiState>,
    consumer: &mut Option<Consumer>,
    tx: &mpsc::Sender<Outgoing>,
) -> Read {
    let text = match frame {
        Some(Ok(Message::Text(t))) => t,
        Some(Ok(Message::Binary(_))) => {
            return Read::Answer(response(
                &Value::Null,
                Err(ApiError::invalid("send JSON text frames")),
            ));
        }
        Some(Err(WsError::Capacity(e))) => {
            state.mesh.metrics.api_frames_refused.inc();
            let why = match e {
                CapacityError::MessageTooLong { .. } => "message too big (apiServer.maxBodySize)",
                _ => "frame too big (apiServer.maxBodySize)",
            };
            tracing::debug!("ws api: {e}; closing with 1009");
            return Read::End(Some((1009, why)));
        }
        Some(Err(WsError::Utf8(_))) => return Read::End(Some((1007, "invalid UTF-8"))),
        Some(Err(WsError::Protocol(_))) => return Read::End(Some((1002, "protocol error"))),
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Read::End(None),
        Some(Ok(_)) => return Read::Nothing,
    };
    if text.as_str() == "ping" {
        return Read::Answer("pong".into());
    }
    let mut req = match serde_json::from_str(text.as_str()) {
        Ok(Value::Object(map)) => map,
        Ok(_) | Err(_) => {
            return Read::Answer(response(
                &Value::Null,
                Err(ApiError::invalid(
                    "request must be a JSON object {\"m\", \"p\", \"i\"}",
                )),
            ));
        }
    };
    drop(text);
    let id = req.remove("i").unwrap_or(Value::Null);
    let params = req.remove("p").unwrap_or_else(|| json!({}));
    let method = match req.remove("m") {
        Some(Value::String(m)) => m,
        _ => String::new(),
    };
    match method.as_str() {
        "queue.pop" => {
            let r = start_consuming(state, consumer, &params, tx);
            Read::Answer(response(&id, r))
        }
        "queue.unpop" => {
            let r = match consumer.take() {
                Some(c) => {
                    c.stop(state);
                    Ok(json!({"s": true}))
                }
                None => Err(ApiError::new(
                    code::CANCEL_FAILED,
                    "this connection is not consuming",
                )),
            };
            Read::Answer(response(&id, r))
        }
        _ => {
            let state = state.clone();
            Read::Start(Box::pin(async move {
                let r = dispatch(&state, &method, &params).await;
                response(&id, r)
            }))
        }
    }
}

async fn dispatch(state: &ApiState, method: &str, params: &Value) -> Result<Value, ApiError> {
    let r = ops::dispatch(state, method, params).await;
    let code = r.as_ref().map_or_else(|e| e.code, |_| 0);
    state
        .mesh
        .metrics
        .count_api_request(method_label(method), code);
    r
}

fn method_label(m: &str) -> &'static str {
    match m {
        "mesh.publish" => "ws:mesh.publish",
        "mesh.send" => "ws:mesh.send",
        "mesh.batch" => "ws:mesh.batch",
        "conn.call" => "ws:conn.call",
        "history" => "ws:history",
        "presence" => "ws:presence",
        "presence_stats" => "ws:presence_stats",
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

//! Publishing through a WebSocket API, pipelined (many requests in flight per
//! connection, matched to answers by id), with tokio-tungstenite.
//!
//! - connmix: `ws://<api>/ws/v1`, `{"m":"mesh.publish","p":{"c","d"},"i":id}`
//!   -> `{"E":null,"r":{"s","f"},"i":id}` (CONTRACT section 5). A gateway
//!   without this endpoint refuses the upgrade; the caller reports "n/a".
//! - Socket.IO: a backend Socket.IO client (connect with auth
//!   `{"key":"bench-backend"}`) emitting `publish` {room, event, data} with an
//!   ack `{"s": n}`, the way backends often push through a Socket.IO server.

use super::http::Api;
use super::{Gate, Outcome, Spec, Tally};
use crate::fleet::Fleet;
use crate::socketio;
use crate::target::{Kind, json_uint, payload, unix_nanos};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Requests in flight per connection.
const IN_FLIGHT: usize = 32;
/// The key bench/socketio/server.js accepts for backend connections.
pub const BACKEND_KEY: &str = "bench-backend";

/// One WebSocket API connection, past its handshake.
pub struct WsApi {
    ws: Ws,
    kind: Kind,
}

impl WsApi {
    /// Connects; `Err` carries why (e.g. the upgrade was refused with 404).
    pub async fn connect(api: &Api) -> Result<WsApi, String> {
        let url = match api.kind {
            Kind::Connmix | Kind::ConnmixSio => format!("ws://{}/ws/v1", api.host),
            Kind::Socketio => format!("ws://{}/socket.io/?EIO=4&transport=websocket", api.host),
        };
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {e}"))?;
        if api.kind == Kind::Socketio {
            let open = next_text(&mut ws).await?;
            if !socketio::is_open(open.as_bytes()) {
                return Err(format!("unexpected {open:?}"));
            }
            let auth = format!(r#"{{"key":"{BACKEND_KEY}"}}"#);
            ws.send(Message::text(socketio::connect(Some(&auth))))
                .await
                .map_err(|e| e.to_string())?;
            let ok = next_text(&mut ws).await?;
            socketio::connect_result(ok.as_bytes())?;
        }
        Ok(WsApi { ws, kind: api.kind })
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

/// An answer to one request: Ok((s, f)) or the error text.
enum Answer {
    Counts(u64, u64),
    Error(String),
    /// Not an answer (heartbeat, event).
    Other,
}

fn parse_answer(kind: Kind, text: &str) -> Answer {
    let b = text.as_bytes();
    match kind {
        Kind::Connmix | Kind::ConnmixSio => {
            if !text.contains("\"i\":") {
                return Answer::Other;
            }
            if text.contains("\"E\":null") {
                match json_uint(b, "s") {
                    Some(s) => Answer::Counts(s, json_uint(b, "f").unwrap_or(0)),
                    None => Answer::Error(text.to_string()),
                }
            } else {
                Answer::Error(text.to_string())
            }
        }
        Kind::Socketio => match socketio::ack(b) {
            Some((_, args)) => match json_uint(args, "s") {
                Some(s) => Answer::Counts(s, 0),
                None => Answer::Error(text.to_string()),
            },
            None => Answer::Other,
        },
    }
}

/// Publishes as fast as the flow control allows for `duration`, pipelining
/// up to 32 requests per connection.
pub async fn run_max(fleet: &Fleet, conns: Vec<WsApi>, spec: &Spec, duration: Duration) -> Outcome {
    let gate = Gate::new(fleet, spec);
    let tally = Tally::default();
    let t0 = Instant::now();
    let deadline = t0 + duration;
    futures_util::future::join_all(conns.into_iter().enumerate().map(|(j, api)| {
        let (gate, tally) = (&gate, &tally);
        async move {
            let kind = api.kind;
            let (mut tx, mut rx) = api.ws.split();
            let mut rng = 0xA076_1D64_78BD_642Fu64 ^ (j as u64 + 1);
            let mut in_flight = 0usize;
            let mut next_id = 1u64;
            let mut stopping = false;
            let give_up = deadline + Duration::from_secs(10);
            loop {
                if stopping && in_flight == 0 {
                    break;
                }
                tokio::select! {
                    biased;
                    m = rx.next() => {
                        let text = match m {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(_)) => continue,
                            Some(Err(e)) => { tally.error(e.to_string()); break }
                            None => { tally.error("closed".into()); break }
                        };
                        if kind == Kind::Socketio && text.as_bytes() == socketio::PING {
                            let _ = tx.send(Message::text("3")).await;
                            continue;
                        }
                        match parse_answer(kind, &text) {
                            Answer::Counts(s, f) => {
                                in_flight -= 1;
                                gate.settle(spec.per_publish, s);
                                tally.ok(s, f);
                            }
                            Answer::Error(e) => {
                                in_flight -= 1;
                                gate.settle(spec.per_publish, 0);
                                tally.error(e);
                            }
                            Answer::Other => {}
                        }
                    }
                    open = gate.wait(deadline), if !stopping && in_flight < IN_FLIGHT => {
                        if !open {
                            stopping = true;
                            continue;
                        }
                        gate.sent(spec.per_publish);
                        let ch = spec.pick.channel(&mut rng);
                        let req = api_request(kind, next_id, &ch, &payload(unix_nanos(), spec.size));
                        next_id += 1;
                        if let Err(e) = tx.send(Message::text(req)).await {
                            tally.error(e.to_string());
                            break;
                        }
                        in_flight += 1;
                    }
                    () = tokio::time::sleep_until(give_up) => {
                        tally.error(format!("{in_flight} requests unanswered"));
                        break;
                    }
                }
            }
        }
    }))
    .await;
    tally.outcome(t0.elapsed())
}

/// One `mesh.publish` request (connmix) or `publish` event with ack id (Socket.IO).
fn api_request(kind: Kind, id: u64, channel: &str, data: &str) -> String {
    match kind {
        Kind::Connmix => {
            format!(r#"{{"m":"mesh.publish","p":{{"c":"{channel}","d":"{data}"}},"i":{id}}}"#)
        }
        Kind::ConnmixSio => format!(
            r#"{{"m":"mesh.publish","p":{{"c":"{channel}","e":"msg","d":"{data}"}},"i":{id}}}"#
        ),
        Kind::Socketio => socketio::event_with_ack(
            id,
            "publish",
            &format!(r#"{{"room":"{channel}","event":"msg","data":"{data}"}}"#),
        ),
    }
}

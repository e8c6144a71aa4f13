//! One bench client connection: connect, authenticate and join channels the
//! way the target's protocol wants, then receive published frames and record
//! their publish-to-receive latency.
//!
//! connmix (shipped message-center script):
//!   `{"op":"auth","token":"tok<uid>"}` -> `{"result":true}`, then
//!   `{"op":"subscribe","channel":"@user"}` -> `{"result":true}` (joins user:<uid>),
//!   then one subscribe per extra channel (bench script only).
//! Socket.IO: open, `40`, then `login` {token} with an ack (the server calls
//!   the same auth API and joins room user:<uid>), then `subscribe` per extra
//!   channel.
//!
//! The receive loop is the hot path: one clock read per socket read, a
//! prefix check and a digit scan per frame, two counter bumps.

use crate::socketio;
use crate::stats::Histogram;
use crate::target::{Kind, unix_nanos};
use crate::ws::{Endpoint, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, WsConn};
use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Who a connection logs in as and what it joins besides its own user channel.
pub struct Login {
    pub uid: u64,
    pub extra_channels: Vec<String>,
}

/// Per-process receive counters, shared by every connection task on the
/// (single) thread.
#[derive(Default)]
pub struct Counters {
    /// Published frames received (monotonic).
    pub received: Cell<u64>,
    /// Connections that ended after setup.
    pub closed: Cell<u64>,
    /// Latency of frames received since the last reset.
    pub latency: RefCell<Histogram>,
}

/// Connects and completes the target's login and subscribe exchange.
pub async fn establish(
    kind: Kind,
    ep: &Endpoint,
    src: Option<Ipv4Addr>,
    login: &Login,
    seed: u32,
) -> Result<WsConn, String> {
    let mut ws = WsConn::connect(ep, src, seed)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match kind {
        Kind::Connmix => setup_connmix(&mut ws, login).await?,
        Kind::Socketio | Kind::ConnmixSio => setup_socketio(&mut ws, login).await?,
    }
    Ok(ws)
}

async fn request_connmix(ws: &mut WsConn, req: String, what: &str) -> Result<(), String> {
    ws.send_text(req.as_bytes())
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let reply = ws
        .recv_message()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if contains(&reply, br#""result":true"#) {
        Ok(())
    } else {
        Err(format!("{what}: {}", String::from_utf8_lossy(&reply)))
    }
}

async fn setup_connmix(ws: &mut WsConn, login: &Login) -> Result<(), String> {
    let uid = login.uid;
    request_connmix(ws, format!(r#"{{"op":"auth","token":"tok{uid}"}}"#), "auth").await?;
    request_connmix(
        ws,
        r#"{"op":"subscribe","channel":"@user"}"#.into(),
        "subscribe",
    )
    .await?;
    for ch in &login.extra_channels {
        request_connmix(
            ws,
            format!(r#"{{"op":"subscribe","channel":"{ch}"}}"#),
            "subscribe",
        )
        .await?;
    }
    Ok(())
}

/// Next Engine.IO packet that is not a heartbeat (pings are answered).
async fn recv_socketio(ws: &mut WsConn, what: &str) -> Result<Vec<u8>, String> {
    loop {
        let m = ws
            .recv_message()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        if m == socketio::PING {
            ws.send_text(socketio::PONG)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            continue;
        }
        return Ok(m);
    }
}

async fn ack_socketio(ws: &mut WsConn, id: u64, name: &str, arg: &str) -> Result<(), String> {
    let req = socketio::event_with_ack(id, name, arg);
    ws.send_text(req.as_bytes())
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    loop {
        let m = recv_socketio(ws, name).await?;
        if let Some((got, args)) = socketio::ack(&m) {
            if got != id {
                continue;
            }
            if contains(args, br#""result":true"#) {
                return Ok(());
            }
            return Err(format!("{name}: {}", String::from_utf8_lossy(args)));
        }
    }
}

async fn setup_socketio(ws: &mut WsConn, login: &Login) -> Result<(), String> {
    let open = recv_socketio(ws, "open").await?;
    if !socketio::is_open(&open) {
        return Err(format!("open: {}", String::from_utf8_lossy(&open)));
    }
    ws.send_text(socketio::connect(None).as_bytes())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let answer = recv_socketio(ws, "connect").await?;
    socketio::connect_result(&answer).map_err(|e| format!("connect: {e}"))?;
    let uid = login.uid;
    ack_socketio(ws, 1, "login", &format!(r#"{{"token":"tok{uid}"}}"#)).await?;
    for (i, ch) in login.extra_channels.iter().enumerate() {
        ack_socketio(ws, 2 + i as u64, "subscribe", &format!(r#""{ch}""#)).await?;
    }
    Ok(())
}

/// Receives until the connection ends, counting published frames and their
/// latency. connmix clients send a WebSocket ping every `ping_every` (the
/// gateway closes silent clients after `readTimeout`); Socket.IO clients
/// answer the server's heartbeats.
pub async fn receive(kind: Kind, mut ws: WsConn, c: &Counters, ping_every: Option<Duration>) {
    let period = ping_every.unwrap_or(Duration::from_secs(1 << 30));
    let sleep = tokio::time::sleep(period);
    tokio::pin!(sleep);
    let mut pong: Option<Vec<u8>> = None;
    let mut heartbeat = false;
    loop {
        tokio::select! {
            r = ws.fill() => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            () = &mut sleep, if ping_every.is_some() => {
                if ws.send(OP_PING, b"").await.is_err() {
                    break;
                }
                sleep.as_mut().reset(tokio::time::Instant::now() + period);
                continue;
            }
        }
        let now = unix_nanos();
        let mut got = 0u64;
        {
            let mut hist = c.latency.borrow_mut();
            loop {
                let f = match ws.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => {
                        c.closed.set(c.closed.get() + 1);
                        return;
                    }
                };
                match f.op {
                    OP_TEXT | OP_BINARY => {
                        let data = ws.payload(&f);
                        if let Some(ts) = kind.timestamp(data) {
                            hist.record(now.saturating_sub(ts));
                            got += 1;
                        } else if kind.speaks_socketio() && data == socketio::PING {
                            heartbeat = true;
                        }
                    }
                    OP_PING => pong = Some(ws.payload(&f).to_vec()),
                    OP_CLOSE => {
                        c.closed.set(c.closed.get() + 1);
                        return;
                    }
                    _ => {}
                }
            }
        }
        c.received.set(c.received.get() + got);
        if let Some(p) = pong.take()
            && ws.send(OP_PONG, &p).await.is_err()
        {
            break;
        }
        if std::mem::take(&mut heartbeat) && ws.send_text(socketio::PONG).await.is_err() {
            break;
        }
    }
    c.closed.set(c.closed.get() + 1);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

//! Publishing through the HTTP API: several keep-alive HTTP/1.1 connections
//! (hyper), each sending one request at a time, either as fast as the flow
//! control allows ([`run_max`]) or on a fixed schedule ([`run_rate`]).
//!
//! Fixed-rate runs stamp a payload with the time it was *due* when it goes
//! out more than 2 ms late (a slow answer to the previous request held the
//! connection up), so a server that falls behind shows up as latency
//! instead of silently lowering the rate (no coordinated omission). Smaller
//! lateness is tokio's 1 ms timer granularity, and is not charged.

use super::{Gate, Outcome, Spec, Tally};
use crate::fleet::Fleet;
use crate::target::{Kind, json_uint, payload, unix_nanos};
use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A fixed-rate publish this late is stamped with its due time.
const LATE_NS: u64 = 2_000_000;

/// The publish API of one target.
#[derive(Debug, Clone)]
pub struct Api {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// `Host` header (`127.0.0.1:6789`).
    pub host: String,
}

/// One keep-alive connection to the publish API.
pub struct HttpPub {
    sender: SendRequest<Full<Bytes>>,
    api: Api,
}

impl HttpPub {
    pub async fn connect(api: &Api) -> anyhow::Result<HttpPub> {
        let stream = TcpStream::connect(api.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        Ok(HttpPub {
            sender,
            api: api.clone(),
        })
    }

    /// Publishes once; returns the answer's (delivered, failed) counts.
    pub async fn publish(&mut self, channel: &str, data: &str) -> Result<(u64, u64), String> {
        let body = self.api.kind.publish_body(channel, data);
        let path = self.api.kind.publish_path();
        let body = self.post(path, body).await?;
        match json_uint(&body, "s") {
            Some(s) => Ok((s, json_uint(&body, "f").unwrap_or(0))),
            None => Err(format!(
                "unexpected answer {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }

    /// POSTs a JSON body; returns the answer's body (an error unless 2xx).
    pub async fn post(&mut self, path: &str, body: String) -> Result<Bytes, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let req = Request::post(path)
            .header(header::HOST, self.api.host.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(body)
    }
}

pub async fn connect_all(api: &Api, n: usize) -> anyhow::Result<Vec<HttpPub>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(HttpPub::connect(api).await?);
    }
    Ok(v)
}

/// Publishes as fast as the flow control allows, for `duration`.
pub async fn run_max(
    fleet: &Fleet,
    api: &Api,
    spec: &Spec,
    publishers: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let conns = connect_all(api, publishers).await?;
    let gate = Gate::new(fleet, spec);
    let tally = Tally::default();
    let t0 = Instant::now();
    let deadline = t0 + duration;
    join_all(conns.into_iter().enumerate().map(|(j, mut p)| {
        let (gate, tally) = (&gate, &tally);
        async move {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (j as u64 + 1);
            while gate.wait(deadline).await {
                gate.sent(spec.per_publish);
                let ch = spec.pick.channel(&mut rng);
                match p.publish(&ch, &payload(unix_nanos(), spec.size)).await {
                    Ok((s, f)) => {
                        gate.settle(spec.per_publish, s);
                        tally.ok(s, f);
                    }
                    Err(e) => {
                        gate.settle(spec.per_publish, 0);
                        tally.error(e);
                        return;
                    }
                }
            }
        }
    }))
    .await;
    Ok(tally.outcome(t0.elapsed()))
}

/// Publishes `rate` times per second for `duration`, spread over
/// `publishers` connections, on a fixed schedule.
pub async fn run_rate(
    api: &Api,
    spec: &Spec,
    publishers: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let conns = connect_all(api, publishers).await?;
    let tally = Tally::default();
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let n = conns.len() as u64;
    let t0 = Instant::now() + Duration::from_millis(10);
    let unix0 = unix_nanos() + 10_000_000;
    join_all(conns.into_iter().enumerate().map(|(j, mut p)| {
        let tally = &tally;
        async move {
            let mut rng = 0xD1B5_4A32_D192_ED03u64 ^ (j as u64 + 1);
            let mut k = j as u64;
            while k < total {
                let offset = Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(t0 + offset).await;
                let ch = spec.pick.channel(&mut rng);
                // The due time if we are behind schedule (the server held
                // us up), else the actual time (tokio timers are 1 ms coarse:
                // that jitter is ours, not the server's).
                let due = unix0 + offset.as_nanos() as u64;
                let now = unix_nanos();
                let stamp = if now > due + LATE_NS {
                    due
                } else {
                    now.max(due)
                };
                match p.publish(&ch, &payload(stamp, spec.size)).await {
                    Ok((s, f)) => tally.ok(s, f),
                    Err(e) => {
                        tally.error(e);
                        return;
                    }
                }
                k += n;
            }
        }
    }))
    .await;
    Ok(tally.outcome(t0.elapsed()))
}

//! `recovery` (connmix only): what channel history costs a client and Redis.
//!
//! - Recovery time: a user misses `--missed` publications of its channel
//!   (`user:<uid>`, which must keep history: `engine.history`); then it
//!   connects, logs in and subscribes with its last position
//!   (`{"op":"subscribe","channel":"@user","since":...}` of the shipped
//!   script). Measured: from the start of the TCP connect to the last
//!   replayed frame, `--rounds` times (a new user each round).
//! - Redis memory (`--redis host:port`, the cluster's Redis; the gateway
//!   must be a cluster node): `used_memory` of `INFO memory` before and
//!   after publishing `--per-channel` publications of `--size` bytes to
//!   each of `--channels` new history channels, per 1,000 channels.

use super::Common;
use crate::auth;
use crate::publish::http::HttpPub;
use crate::report::RunResult;
use crate::stats::Histogram;
use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args, Debug, Clone)]
pub struct RecoveryArgs {
    #[command(flatten)]
    pub common: Common,
    /// Publications missed before each reconnect.
    #[arg(long, default_value_t = 100)]
    pub missed: u64,
    /// Reconnects to time (one user each).
    #[arg(long, default_value_t = 20)]
    pub rounds: u64,
    /// The cluster's Redis, to measure its memory (skipped when absent).
    #[arg(long)]
    pub redis: Option<String>,
    /// History channels created for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    pub channels: u64,
    /// Publications per channel for the memory measurement.
    #[arg(long, default_value_t = 1)]
    pub per_channel: u64,
    /// Bytes of each publication.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

pub async fn run(args: RecoveryArgs) -> anyhow::Result<RunResult> {
    let c = &args.common;
    let mut res = c.result("recovery");
    let _auth = auth::spawn(c.auth_listen).await?;
    let mut api = HttpPub::connect(&c.api()?).await?;
    let mut hist = Histogram::new();
    let data = "x".repeat(args.size);
    for round in 0..args.rounds {
        let uid = 900_000 + round;
        let ch = format!("user:{uid}");
        let top = post(&mut api, "/v1/history", json!({"c": ch, "limit": 0})).await?;
        let since = json!({"offset": top["offset"], "epoch": top["epoch"]});
        for _ in 0..args.missed {
            api.publish(&ch, &data).await.map_err(|e| anyhow!(e))?;
        }
        let took = reconnect(&c.ws_url(), uid, since, args.missed).await?;
        hist.record(took.as_nanos() as u64);
    }
    res.latency(
        "recovery.time",
        &format!(
            "recovery: reconnect to the last of {} replayed frames",
            args.missed
        ),
        &hist.summary(),
    );
    if let Some(redis) = &args.redis {
        let before = used_memory(redis).await?;
        for i in 0..args.channels {
            for _ in 0..args.per_channel {
                api.publish(&format!("user:mem{}-{i}", args.per_channel), &data)
                    .await
                    .map_err(|e| anyhow!(e))?;
            }
        }
        let after = used_memory(redis).await?;
        let per_1000 = (after.saturating_sub(before)) as f64 * 1000.0 / args.channels as f64;
        res.metric(
            "recovery.redis_memory",
            &format!(
                "Redis memory per 1,000 history channels ({} x {} B each)",
                args.per_channel, args.size
            ),
            Some(per_1000),
            "B",
        );
        res.note(format!(
            "INFO memory used_memory {before} -> {after} after {} channels",
            args.channels
        ));
    }
    res.finish(c.out.as_deref())?;
    Ok(res)
}

async fn post(api: &mut HttpPub, path: &str, body: Value) -> anyhow::Result<Value> {
    let answer = api
        .post(path, body.to_string())
        .await
        .map_err(|e| anyhow!(e))?;
    let v: Value = serde_json::from_slice(&answer)?;
    if !v["E"].is_null() {
        bail!("{path} failed: {v}");
    }
    Ok(v["r"].clone())
}

/// Connects, logs in as `uid`, subscribes from `since`; the time until the
/// last of `missed` replayed frames arrived.
async fn reconnect(url: &str, uid: u64, since: Value, missed: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("connect")?;
    let mut send = async |v: Value| ws.send(Message::text(v.to_string())).await;
    send(json!({"op": "auth", "token": format!("tok{uid}")})).await?;
    send(json!({"op": "subscribe", "channel": "@user", "since": since})).await?;
    let (mut replayed, mut last) = (0u64, start.elapsed());
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no frame in 30 s")?
            .ok_or_else(|| anyhow!("closed"))??;
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
        if v.get("recovered").is_some() {
            if v["recovered"] != true || replayed != missed {
                bail!("not recovered: {v} after {replayed} frames");
            }
            return Ok(last);
        }
        if v.get("result").is_none() && v.get("code").is_none() {
            replayed += 1;
            last = start.elapsed();
        } else if v.get("code").is_some() {
            bail!("refused: {v}");
        }
    }
}

/// `used_memory` of Redis at `addr`.
async fn used_memory(addr: &str) -> anyhow::Result<u64> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"INFO memory\r\n").await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(2).rev().take(1).any(|w| w == b"\r\n") || buf.len() < 8 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&buf).contains("used_memory_peak:") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no used_memory in INFO: {text}"))
}

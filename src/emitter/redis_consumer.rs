//! Reading an emitter from Redis pub/sub: `SUBSCRIBE <channel>` for
//! python-socketio (`RedisManager`, Flask-SocketIO), `PSUBSCRIBE <key>#*`
//! for `@socket.io/redis-emitter` (it publishes on `<key>#<nsp>#` and
//! `<key>#<nsp>#<room>#`). Every node subscribes itself and delivers to its
//! own sockets. A failed connect, a dropped link or one that stops
//! answering PINGs is counted and retried with backoff until the gateway
//! stops.

use super::backoff::Backoff;
use super::intake::Intake;
use crate::config::{EmitterConfig, EmitterKind};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest wait for a connect and its SUBSCRIBE.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the link is checked with a PING, and how long its answer may
/// take: a Redis that stops answering without closing the connection is
/// noticed within 8 s.
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The `PSUBSCRIBE` pattern of a socket.io-redis `key`: glob characters in
/// the key are escaped so they match only themselves.
pub fn pattern(key: &str) -> String {
    let mut p = String::with_capacity(key.len() + 2);
    for c in key.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push_str("#*");
    p
}

pub async fn run(intake: Arc<Intake>, cfg: EmitterConfig, stop: CancellationToken) {
    let mut backoff = Backoff::new();
    let shown = cfg.redacted_url();
    loop {
        let linked = backoff.link(&intake, &shown, CONNECT_TIMEOUT, &stop, || subscribe(&cfg));
        let Some((mut sink, mut stream)) = linked.await else {
            return;
        };
        tracing::info!(
            "{}: reading {} messages from {shown} ({} {})",
            intake.name,
            cfg.kind.name(),
            match cfg.kind {
                EmitterKind::PythonSocketio => "channel",
                EmitterKind::SocketIoRedis => "pattern",
            },
            subscription(&cfg)
        );
        let mut probe =
            tokio::time::interval_at(tokio::time::Instant::now() + PROBE_EVERY, PROBE_EVERY);
        let why = loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    intake.stats.up.set(0);
                    return;
                }
                m = stream.next() => match m {
                    Some(msg) => {
                        intake.handle(msg.get_payload_bytes());
                    }
                    None => break "the connection closed".to_string(),
                },
                _ = probe.tick() => {
                    match tokio::time::timeout(PROBE_TIMEOUT, sink.ping::<()>()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break format!("PING failed: {e}"),
                        Err(_) => break format!("no answer to PING within {PROBE_TIMEOUT:?}"),
                    }
                }
            }
        };
        let why = format!("lost the link to {shown}: {why}");
        if !backoff.retry(&intake, &why, &stop).await {
            return;
        }
    }
}

fn subscription(cfg: &EmitterConfig) -> String {
    match cfg.kind {
        EmitterKind::PythonSocketio => cfg.channel().to_string(),
        EmitterKind::SocketIoRedis => pattern(cfg.channel()),
    }
}

async fn subscribe(
    cfg: &EmitterConfig,
) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let client = redis::Client::open(cfg.url.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    match cfg.kind {
        EmitterKind::PythonSocketio => pubsub.subscribe(cfg.channel()).await?,
        EmitterKind::SocketIoRedis => pubsub.psubscribe(pattern(cfg.channel())).await?,
    }
    Ok(pubsub.split())
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_glob_characters_are_escaped() {
        assert_eq!(super::pattern("socket.io"), "socket.io#*");
        assert_eq!(super::pattern("a*b?[c]"), "a\\*b\\?\\[c\\]#*");
    }
}

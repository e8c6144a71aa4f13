//! The subscription link of the Redis broker: one pub/sub connection that
//! listens on this node's own channel and on `p:ch:<channel>` for every
//! channel with local subscribers.
//!
//! Interest changes arrive in order and are applied in batches (one
//! SUBSCRIBE for many channels). When the link drops, the node keeps
//! delivering locally, reconnects with backoff and jitter, and subscribes
//! again to exactly what the hub has now, so nothing is missed twice and
//! nothing is delivered twice.

use super::interest::Interest;
use super::redis::RedisBroker;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BATCH: usize = 1000;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub fn spawn(
    b: Arc<RedisBroker>,
    mut rx: mpsc::UnboundedReceiver<(u64, Interest)>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            if stop.is_cancelled() {
                return;
            }
            // The epoch is read first, so the marker set below never vouches
            // for subscriptions made on an earlier Redis data set.
            let connected = tokio::time::timeout(Duration::from_secs(2), async {
                let epoch = super::sync::epoch(&b).await?;
                Ok::<_, redis::RedisError>((epoch, b.client.get_async_pubsub().await?))
            })
            .await;
            let Ok(Ok((epoch, pubsub))) = connected else {
                let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 2);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            backoff = MIN_BACKOFF;
            let (mut sink, mut stream) = pubsub.split();
            super::sync::test_hold().await;
            if let Err(e) = resync(&b, &mut sink, &epoch).await {
                tracing::warn!("broker: subscribing after connect failed: {e}");
                continue;
            }
            b.subscriber_up.store(true, Ordering::Release);
            b.update_up_metric();
            tracing::info!(
                "broker: subscription link up (node {} = {})",
                b.node,
                b.node_id
            );
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = b.sync.resync_wanted() => {
                        if let Err(e) = resync(&b, &mut sink, &epoch).await {
                            tracing::warn!("broker: registering again failed: {e}");
                            break;
                        }
                    }
                    m = stream.next() => match m {
                        Some(msg) => {
                            let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
                            b.handle(msg.get_channel_name(), payload);
                        }
                        None => break,
                    },
                    Some(first) = rx.recv() => {
                        let (mut last, mut batch) = (first.0, vec![first.1]);
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok((seq, x)) => {
                                    last = seq;
                                    batch.push(x);
                                }
                                Err(_) => break,
                            }
                        }
                        if let Err(e) = apply(&b, &mut sink, batch).await {
                            tracing::warn!("broker: changing subscriptions failed: {e}");
                            break;
                        }
                        b.interest.mark_applied(last);
                    }
                }
            }
            b.subscriber_up.store(false, Ordering::Release);
            b.update_up_metric();
            tracing::warn!("broker: subscription link lost; delivering locally and reconnecting");
            super::sync::unmark(&b).await;
        }
    });
}

/// Subscribes and registers everything, then marks this node synced.
async fn resync(
    b: &Arc<RedisBroker>,
    sink: &mut redis::aio::PubSubSink,
    epoch: &str,
) -> redis::RedisResult<()> {
    resubscribe(b, sink).await?;
    super::sync::mark_synced(b, epoch).await
}

/// Subscribes to this node's channel and every channel the hub has now, and
/// re-registers them in Redis (which may have restarted empty). That covers
/// every interest change sent before it began.
async fn resubscribe(
    b: &Arc<RedisBroker>,
    sink: &mut redis::aio::PubSubSink,
) -> redis::RedisResult<()> {
    let covered = b.interest.last_sent();
    sink.subscribe(b.names.node_channel(b.node)).await?;
    let watched = b.watched_channels();
    if !watched.is_empty() {
        sink.subscribe(watched).await?;
    }
    let channels = b.hub.channel_names();
    for chunk in channels.chunks(BATCH) {
        let names: Vec<String> = chunk.iter().map(|c| b.names.channel(c)).collect();
        sink.subscribe(names).await?;
        register(b, chunk, true).await?;
    }
    b.interest.mark_applied(covered);
    Ok(())
}

/// Applies interest changes in order, grouping runs of the same kind.
async fn apply(
    b: &Arc<RedisBroker>,
    sink: &mut redis::aio::PubSubSink,
    batch: Vec<Interest>,
) -> redis::RedisResult<()> {
    let kind = |i: &Interest| match i {
        Interest::Subscribe(_) => 0,
        Interest::Unsubscribe(_) => 1,
        Interest::Watch(_) => 2,
        Interest::Unwatch(_) => 3,
    };
    let mut i = 0;
    while i < batch.len() {
        let k = kind(&batch[i]);
        let mut run = Vec::new();
        while i < batch.len() && kind(&batch[i]) == k {
            match &batch[i] {
                Interest::Subscribe(c)
                | Interest::Unsubscribe(c)
                | Interest::Watch(c)
                | Interest::Unwatch(c) => run.push(c.clone()),
            }
            i += 1;
        }
        match k {
            0 | 1 => {
                let names: Vec<String> = run.iter().map(|c| b.names.channel(c)).collect();
                if k == 0 {
                    sink.subscribe(names).await?;
                } else {
                    sink.unsubscribe(names).await?;
                }
                register(b, &run, k == 0).await?;
            }
            2 => sink.subscribe(run).await?,
            _ => sink.unsubscribe(run).await?,
        }
    }
    Ok(())
}

/// Records (or removes) this node as a subscriber of `channels` in Redis.
async fn register(b: &Arc<RedisBroker>, channels: &[String], add: bool) -> redis::RedisResult<()> {
    if channels.is_empty() {
        return Ok(());
    }
    let op = if add { "SADD" } else { "SREM" };
    let mut pipe = redis::pipe();
    for c in channels {
        pipe.cmd(op).arg(b.names.chnodes(c)).arg(b.node).ignore();
    }
    pipe.cmd(op)
        .arg(b.names.nodechans(b.node))
        .arg(channels)
        .ignore();
    let mut cmd = b.cmd.clone();
    pipe.query_async::<()>(&mut cmd).await
}

//! The subscription link of the Redis broker: one pub/sub connection that
//! listens on this node's own channel and on `p:ch:<channel>` for every
//! channel with local subscribers.
//!
//! Interest changes are taken from the coalesced pending set
//! ([`super::interest`]) and applied in batches (one SUBSCRIBE for many
//! channels). An unsubscribe is re-checked against this node's subscribers
//! before it is applied: if the channel has one again, it stays subscribed.
//! When the link drops, the node keeps delivering locally, reconnects with
//! backoff and jitter, and subscribes again to exactly the channels it has
//! now, so nothing is missed twice and nothing is delivered twice. Once all
//! of that is in place it marks the node synced ([`super::sync`]); a failed
//! re-subscription backs off like a failed connect.

use super::interest::Target;
use super::redis::RedisBroker;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BATCH: usize = 1000;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub fn spawn(b: Arc<RedisBroker>, stop: CancellationToken) {
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
                if !pause(&stop, &mut backoff).await {
                    return;
                }
                continue;
            };
            let (mut sink, mut stream) = pubsub.split();
            super::sync::test_hold().await;
            if let Err(e) = resync(&b, &mut sink, &epoch).await {
                // Connecting works but subscribing does not (Redis refuses,
                // or lost its data meanwhile): back off as for a failed
                // connect instead of retrying at once.
                tracing::warn!("broker: subscribing after connect failed: {e}");
                if !pause(&stop, &mut backoff).await {
                    return;
                }
                continue;
            }
            backoff = MIN_BACKOFF;
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
                    _ = b.interest.changed() => {
                        let (covered, changes) = b.interest.take();
                        if let Err(e) = apply(&b, &mut sink, changes).await {
                            tracing::warn!("broker: changing subscriptions failed: {e}");
                            break;
                        }
                        b.interest.mark_applied(covered);
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

/// Waits `backoff` plus jitter before the next attempt and doubles it (up to
/// [`MAX_BACKOFF`]); `false` when the node stops meanwhile.
async fn pause(stop: &CancellationToken, backoff: &mut Duration) -> bool {
    let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 2);
    let stopped = tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(*backoff + Duration::from_millis(jitter)) => false,
    };
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    !stopped
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

/// Subscribes to this node's channel and every channel it has subscribers
/// for now, and re-registers them in Redis (which may have restarted empty).
/// What was pending is taken first, so every change made before the hub is
/// read is covered, and every change after it stays pending.
async fn resubscribe(
    b: &Arc<RedisBroker>,
    sink: &mut redis::aio::PubSubSink,
) -> redis::RedisResult<()> {
    let (covered, pending) = b.interest.take();
    let result = async {
        sink.subscribe(b.names.node_channel(b.node)).await?;
        let watched = b.watched_channels();
        if !watched.is_empty() {
            sink.subscribe(watched).await?;
        }
        let channels = b.local().map(|l| l.channels()).unwrap_or_default();
        for chunk in channels.chunks(BATCH) {
            let names: Vec<String> = chunk.iter().map(|c| b.names.channel(c)).collect();
            sink.subscribe(names).await?;
            register(b, chunk, true).await?;
        }
        // Channels left while the link was down: drop their registrations
        // (the new connection subscribed only to what is wanted now).
        let left: Vec<String> = pending
            .iter()
            .filter_map(|(t, want)| match t {
                Target::Channel(c) if !want && !b.has_subscribers(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        for chunk in left.chunks(BATCH) {
            register(b, chunk, false).await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => b.interest.mark_applied(covered),
        Err(_) => b.interest.restore(pending),
    }
    result
}

/// Applies interest changes: subscribes first, then unsubscribes that still
/// hold (the channel has no local subscriber now), then raw channels. What
/// could not be applied goes back to the pending set.
async fn apply(
    b: &Arc<RedisBroker>,
    sink: &mut redis::aio::PubSubSink,
    changes: Vec<(Target, bool)>,
) -> redis::RedisResult<()> {
    let mut join = Vec::new();
    let mut leave = Vec::new();
    let mut watch = Vec::new();
    let mut unwatch = Vec::new();
    for (t, want) in &changes {
        match (t, want) {
            (Target::Channel(c), true) => join.push(c.clone()),
            (Target::Channel(c), false) => {
                if b.has_subscribers(c) {
                    // A subscriber came back before this was applied: the
                    // channel stays heard.
                    join.push(c.clone());
                } else {
                    leave.push(c.clone());
                }
            }
            (Target::Raw(r), true) => watch.push(r.clone()),
            (Target::Raw(r), false) => unwatch.push(r.clone()),
        }
    }
    let result = async {
        for chunk in join.chunks(BATCH) {
            let names: Vec<String> = chunk.iter().map(|c| b.names.channel(c)).collect();
            sink.subscribe(names).await?;
            register(b, chunk, true).await?;
        }
        // The registration goes first: a publish between the two steps then
        // does not wait for (and name as `missing`) a node that no longer
        // listens, while the node may still deliver it (it has nobody to).
        for chunk in leave.chunks(BATCH) {
            register(b, chunk, false).await?;
            let names: Vec<String> = chunk.iter().map(|c| b.names.channel(c)).collect();
            sink.unsubscribe(names).await?;
        }
        for chunk in watch.chunks(BATCH) {
            sink.subscribe(chunk.to_vec()).await?;
        }
        for chunk in unwatch.chunks(BATCH) {
            sink.unsubscribe(chunk.to_vec()).await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        b.interest.restore(changes);
    }
    result
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

//! Cluster membership through Redis: each node renews a key with its info
//! every `heartbeat` seconds (it expires after `nodeExpiry`), lists the
//! others, forgets those whose key expired and removes their leftovers from
//! the channel bookkeeping. A clean shutdown leaves at once.
//!
//! Each beat also samples Redis's clock (request deadlines) and checks this
//! node's "subscriptions in place" marker, asking the subscription link to
//! restore it when another node removed it (see [`super::sync`]).
//!
//! After Redis lost its data (restarted empty) or was unreachable, a node
//! that vanished from the member set without its key being seen to expire
//! stays counted until `nodeExpiry` plus two heartbeats after Redis is back,
//! so that it is reported as `missing` (it has not re-registered yet)
//! rather than silently forgotten.

use super::NodeInfo;
use super::redis::RedisBroker;
use super::sync::{REGISTER_SCRIPT, epoch_key, generation_key, new_generation, synced_key};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Removes a node's channel registrations and its membership (idempotent),
/// with a new generation `ARGV[3]` (see [`super::sync`]).
const FORGET_SCRIPT: &str = r#"
local p, n = ARGV[1], ARGV[2]
local chans = redis.call('SMEMBERS', p .. ':nodechans:' .. n)
for _, ch in ipairs(chans) do redis.call('SREM', p .. ':chnodes:' .. ch, n) end
redis.call('DEL', p .. ':nodechans:' .. n)
local gone = redis.call('SREM', p .. ':nodes', n) + redis.call('SREM', p .. ':synced', n)
if gone > 0 then redis.call('SET', p .. ':syncgen', ARGV[3]) end
return #chans
"#;

/// Keeps the node-number counter above every live node's number (after a
/// Redis restart it starts from zero again).
const REASSERT_SEQ_SCRIPT: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#;

pub fn spawn(b: Arc<RedisBroker>, stop: CancellationToken) {
    tokio::spawn(async move {
        let every = Duration::from_secs(b.cfg.heartbeat);
        let mut was_down = false;
        let mut view = View::default();
        loop {
            match tokio::time::timeout(every * 2, beat(&b, &mut view)).await {
                Ok(Ok(())) => {
                    if was_down {
                        tracing::info!("broker: Redis reachable again");
                        view.recovered_at = Some(Instant::now());
                        let _ = reassert_seq(&b).await;
                    }
                    was_down = false;
                    b.commands_up.store(true, Ordering::Release);
                }
                Ok(Err(e)) => {
                    if !was_down {
                        tracing::warn!("broker: heartbeat failed: {e}");
                    }
                    was_down = true;
                    view.recovered_at = Some(Instant::now());
                    b.commands_up.store(false, Ordering::Release);
                }
                Err(_) => {
                    if !was_down {
                        tracing::warn!("broker: heartbeat timed out");
                    }
                    was_down = true;
                    view.recovered_at = Some(Instant::now());
                    b.commands_up.store(false, Ordering::Release);
                }
            }
            b.update_up_metric();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

/// What the heartbeat remembers between beats.
#[derive(Default)]
struct View {
    /// The Redis data set's epoch at the last beat.
    epoch: Option<String>,
    /// When Redis was last back after an outage or a loss of its data.
    recovered_at: Option<Instant>,
}

/// Renews this node's key and refreshes the live set.
async fn beat(b: &Arc<RedisBroker>, view: &mut View) -> redis::RedisResult<()> {
    let started = Instant::now();
    let mut cmd = b.cmd.clone();
    b.clock.measure(&mut cmd).await?;
    let info = serde_json::to_string(&b.self_info()).unwrap_or_else(|_| "{}".into());
    let (members, epoch, synced): (Vec<u32>, Option<String>, bool) = redis::pipe()
        .cmd("SET")
        .arg(b.names.node_key(b.node))
        .arg(info)
        .arg("PX")
        .arg(b.cfg.node_expiry * 1000)
        .ignore()
        .cmd("EVAL")
        .arg(REGISTER_SCRIPT)
        .arg(2)
        .arg(b.names.nodes())
        .arg(generation_key(&b.names.prefix))
        .arg(b.node)
        .arg(new_generation())
        .ignore()
        .cmd("SMEMBERS")
        .arg(b.names.nodes())
        .cmd("GET")
        .arg(epoch_key(&b.names.prefix))
        .cmd("SISMEMBER")
        .arg(synced_key(&b.names.prefix))
        .arg(b.node)
        .query_async(&mut cmd)
        .await?;
    if view.epoch.is_some() && epoch != view.epoch {
        tracing::info!("broker: Redis lost its data; waiting for every node to re-register");
        view.recovered_at = Some(Instant::now());
    }
    b.sync.set_seen_epoch(epoch.as_deref().unwrap_or(""));
    view.epoch = epoch;
    // A beat slower than a heartbeat means Redis stalled: keys may have
    // expired by its clock while no node could renew them.
    let every = Duration::from_secs(b.cfg.heartbeat);
    if started.elapsed() > every {
        view.recovered_at = Some(Instant::now());
    }
    // A node vanished from the member set while Redis kept its data set has
    // left (or was forgotten). After Redis lost its data, or after an outage
    // or a stall (keys may have expired meanwhile), nodes stay counted until
    // they had `nodeExpiry` and two heartbeats to announce themselves again.
    let hold = Duration::from_secs(b.cfg.node_expiry) + every * 2;
    let recovering = view.recovered_at.is_some_and(|t| t.elapsed() < hold);
    // Forgotten by another node (our key expired during a stall) while our
    // link stayed up: register again.
    if !synced && b.subscriber_up.load(Ordering::Acquire) {
        b.sync.request_resync();
    }
    let others: Vec<u32> = members.into_iter().filter(|n| *n != b.node).collect();
    let infos: Vec<Option<String>> = if others.is_empty() {
        Vec::new()
    } else {
        let keys: Vec<String> = others.iter().map(|n| b.names.node_key(*n)).collect();
        redis::cmd("MGET").arg(keys).query_async(&mut cmd).await?
    };
    let mut live = HashMap::new();
    let mut expired = Vec::new();
    for (n, info) in others.into_iter().zip(infos) {
        match info {
            Some(text) => {
                let parsed = serde_json::from_str::<NodeInfo>(&text).unwrap_or(NodeInfo {
                    n,
                    id: format!("node {n}"),
                    clients: 0,
                    channels: 0,
                    started: 0,
                });
                live.insert(n, parsed);
            }
            None if recovering => {}
            None => {
                let removed: i64 = redis::Script::new(FORGET_SCRIPT)
                    .arg(&b.names.prefix)
                    .arg(n)
                    .arg(new_generation())
                    .invoke_async(&mut cmd)
                    .await?;
                tracing::info!(
                    "broker: node {n} expired; removed its {removed} channel registrations"
                );
                expired.push(n);
            }
        }
    }
    let mut held = Vec::new();
    for (n, info) in b.live.read().iter() {
        if recovering && !live.contains_key(n) && !expired.contains(n) {
            live.insert(*n, info.clone());
            held.push(*n);
        }
    }
    b.sync.set_held(held);
    let before: Vec<u32> = b.live.read().keys().copied().collect();
    for n in live.keys().filter(|n| !before.contains(n)) {
        tracing::info!("broker: node {n} ({}) joined", live[n].id);
    }
    for n in before.iter().filter(|n| !live.contains_key(n)) {
        tracing::info!("broker: node {n} left");
    }
    b.metrics.nodes.set(live.len() as i64 + 1);
    *b.live.write() = live;
    Ok(())
}

async fn reassert_seq(b: &Arc<RedisBroker>) -> redis::RedisResult<()> {
    let mut cmd = b.cmd.clone();
    redis::Script::new(REASSERT_SEQ_SCRIPT)
        .key(b.names.seq())
        .arg(b.node)
        .invoke_async::<i64>(&mut cmd)
        .await
        .map(|_| ())
}

/// Leaves the cluster at once (clean shutdown): other nodes stop counting
/// this one without waiting for its key to expire.
pub async fn leave(b: &RedisBroker) {
    let mut cmd = b.cmd.clone();
    let script = redis::Script::new(FORGET_SCRIPT);
    let mut forget = script.arg(&b.names.prefix);
    forget.arg(b.node).arg(new_generation());
    let _ =
        tokio::time::timeout(Duration::from_secs(1), forget.invoke_async::<i64>(&mut cmd)).await;
    let mut del = redis::cmd("DEL");
    del.arg(b.names.node_key(b.node));
    let _ = tokio::time::timeout(Duration::from_secs(1), del.query_async::<i64>(&mut cmd)).await;
}

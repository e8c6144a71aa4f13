//! Cluster membership through Redis: each node renews a key with its info
//! every `heartbeat` seconds (it expires after `nodeExpiry`), lists the
//! others, forgets those whose key expired and removes their leftovers from
//! the channel bookkeeping. A clean shutdown leaves at once.

use super::NodeInfo;
use super::redis::RedisBroker;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Removes a node's channel registrations and its membership (idempotent).
const FORGET_SCRIPT: &str = r#"
local p, n = ARGV[1], ARGV[2]
local chans = redis.call('SMEMBERS', p .. ':nodechans:' .. n)
for _, ch in ipairs(chans) do redis.call('SREM', p .. ':chnodes:' .. ch, n) end
redis.call('DEL', p .. ':nodechans:' .. n)
redis.call('SREM', p .. ':nodes', n)
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
        let mut last_seen = HashMap::new();
        loop {
            match tokio::time::timeout(every * 2, beat(&b, &mut last_seen)).await {
                Ok(Ok(())) => {
                    if was_down {
                        tracing::info!("broker: Redis reachable again");
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
                    b.commands_up.store(false, Ordering::Release);
                }
                Err(_) => {
                    if !was_down {
                        tracing::warn!("broker: heartbeat timed out");
                    }
                    was_down = true;
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

/// Renews this node's key and refreshes the live set. `last_seen`: when each
/// live node's key was last read.
async fn beat(
    b: &Arc<RedisBroker>,
    last_seen: &mut HashMap<u32, Instant>,
) -> redis::RedisResult<()> {
    let mut cmd = b.cmd.clone();
    let info = serde_json::to_string(&b.self_info()).unwrap_or_else(|_| "{}".into());
    let (members,): (Vec<u32>,) = redis::pipe()
        .cmd("SET")
        .arg(b.names.node_key(b.node))
        .arg(info)
        .arg("PX")
        .arg(b.cfg.node_expiry * 1000)
        .ignore()
        .cmd("SADD")
        .arg(b.names.nodes())
        .arg(b.node)
        .ignore()
        .cmd("SMEMBERS")
        .arg(b.names.nodes())
        .query_async(&mut cmd)
        .await?;
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
            None => {
                let removed: i64 = redis::Script::new(FORGET_SCRIPT)
                    .arg(&b.names.prefix)
                    .arg(n)
                    .invoke_async(&mut cmd)
                    .await?;
                tracing::info!(
                    "broker: node {n} expired; removed its {removed} channel registrations"
                );
                expired.push(n);
            }
        }
    }
    let now = Instant::now();
    for n in live.keys() {
        last_seen.insert(*n, now);
    }
    // A live node that vanished from the member set without its key expiring
    // means Redis lost its data (a restart): the node announces itself again
    // within a heartbeat, so it stays counted for two.
    let grace = Duration::from_secs(b.cfg.heartbeat * 2);
    for (n, info) in b.live.read().iter() {
        let recent = last_seen.get(n).is_some_and(|t| now - *t < grace);
        if recent && !live.contains_key(n) && !expired.contains(n) {
            live.insert(*n, info.clone());
        }
    }
    last_seen.retain(|n, _| live.contains_key(n));
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
    forget.arg(b.node);
    let _ =
        tokio::time::timeout(Duration::from_secs(1), forget.invoke_async::<i64>(&mut cmd)).await;
    let mut del = redis::cmd("DEL");
    del.arg(b.names.node_key(b.node));
    let _ = tokio::time::timeout(Duration::from_secs(1), del.query_async::<i64>(&mut cmd)).await;
}

//! Presence across the cluster: a request published on the channel itself
//! (`<prefix>:ch:<channel>`), so that exactly the nodes with subscribers of
//! it hear it, each answering its local presence on the asker's node
//! channel.
//!
//! Nothing is stored per subscriber: subscribing costs nothing more, and a
//! node that dies (SIGKILL included) stops answering at once, so its clients
//! are never listed after it died. Until its heartbeat expires
//! (`nodeExpiry`) it is still registered for the channel, so it is named in
//! `missing`; after that it is forgotten and the answer is complete again.
//!
//! The rules of a publish's counts apply: the asker waits (up to
//! `publishTimeoutMs`) for every node registered for the channel
//! (`<prefix>:chnodes:<channel>`), and names in `missing` every such node
//! that did not answer and every live node whose subscriptions are not
//! known to be in place (not in `<prefix>:synced`) that did not answer.

use super::redis::RedisBroker;
use super::sync::synced_key;
use super::wire::Wire;
use crate::presence::Presence;
use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Publishes the request and returns the number of receiving links, the
/// nodes registered for the channel, and the live nodes not marked synced.
static WHO_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local n = redis.call('PUBLISH', KEYS[1], ARGV[1])
local unsynced = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('SISMEMBER', KEYS[4], m) == 0 then unsynced[#unsynced + 1] = m end
end
return {n, redis.call('SMEMBERS', KEYS[2]), unsynced}
"#,
    )
});

/// Where the answers `(node, presence)` to a presence request go.
pub type AnswerSender = mpsc::UnboundedSender<(u32, Presence)>;

/// Forgets a request's answer slot when the request ends, however it ends.
struct Slot<'a> {
    broker: &'a RedisBroker,
    req: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.broker.presence_answers.lock().remove(&self.req);
    }
}

fn failed(error: String) -> Presence {
    Presence {
        error: Some(error),
        ..Default::default()
    }
}

impl RedisBroker {
    /// Asks every other node with subscribers of `ch` for its presence.
    pub async fn ask_presence(&self, ch: &str, ids: bool) -> Presence {
        if let Some(e) = self.down() {
            return failed(e.to_string());
        }
        let until = Instant::now() + Duration::from_millis(self.cfg.publish_timeout_ms);
        let req = self.req();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.presence_answers.lock().insert(req, tx);
        let _slot = Slot { broker: self, req };
        let payload = Wire::Who {
            origin: self.node,
            req,
            ids,
        }
        .encode();
        let mut invocation = WHO_SCRIPT.key(self.names.channel(ch));
        invocation
            .key(self.names.chnodes(ch))
            .key(self.names.nodes())
            .key(synced_key(&self.names.prefix))
            .arg(payload.as_ref());
        let mut cmd = self.cmd.clone();
        let invoked = invocation.invoke_async::<(i64, Vec<u32>, Vec<u32>)>(&mut cmd);
        let (receivers, members, unsynced) = match tokio::time::timeout_at(until, invoked).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return failed(format!("broker unavailable: {e}")),
            Err(_) => return failed("broker unavailable: presence request timed out".into()),
        };
        let unsynced: HashSet<u32> = unsynced
            .into_iter()
            .chain(self.sync.held())
            .filter(|n| *n != self.node)
            .collect();
        let mut expected: HashSet<u32> = members
            .into_iter()
            .filter(|m| *m != self.node && !unsynced.contains(m))
            .collect();
        let mut answered: HashSet<u32> = HashSet::new();
        let mut parts = Vec::new();
        let mut take = |(from, p): (u32, Presence), parts: &mut Vec<Presence>| {
            if answered.insert(from) {
                parts.push(p);
            }
        };
        while receivers > 0 && !expected.is_empty() {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(answer)) => {
                    expected.remove(&answer.0);
                    take(answer, &mut parts);
                }
                Ok(None) | Err(_) => break,
            }
        }
        while let Ok(answer) = rx.try_recv() {
            take(answer, &mut parts);
        }
        let mut missing: Vec<u32> = expected
            .into_iter()
            .chain(unsynced)
            .filter(|n| !answered.contains(n))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let mut all = Presence::combine(parts);
        all.missing = missing.into_iter().map(|n| self.node_name(n)).collect();
        all
    }
}

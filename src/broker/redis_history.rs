//! Channel history in a cluster: one Redis stream per channel.
//!
//! Keys (under `engine.cluster.prefix`, `p` below), hash-tagged by channel
//! so that a channel's two keys live in one Redis Cluster slot:
//! - `p:hs:{<channel>}`: the stream; entry id `<offset>-0`, fields `d`
//!   (data), `t` (`0` text, `1` binary), `e` (event, may be empty);
//!   trimmed to `historySize` (`XADD MAXLEN =`), expires `historyTtl`
//!   seconds after the last publish;
//! - `p:hm:{<channel>}`: the meta hash: `s` (top offset), `e` (epoch);
//!   expires `metaTtl` seconds after the last publish or read. When it is
//!   missing (never used, expired, Redis restarted empty) the next publish
//!   or read starts a new epoch and drops what the stream still held.
//!
//! A publish is one script ([`PUBLISH_SCRIPT`]): it increments the offset,
//! appends to the stream and publishes to every node with subscribers,
//! this one included, so offsets are gap-free and every node hears a
//! channel's publications in offset order. Whose delivery counts to wait
//! for is decided as for any publish ([`super::requests::AUDIENCE_LUA`]),
//! except that this node counts too: it delivers the publication when
//! Redis hands it back, in order with the other nodes' publications.

use super::BoxFuture;
use super::deadline::{EXPIRED, with_deadline};
use super::history::{
    Appended, Deliver, History, HistoryError, Page, Position, Publication, check_since, new_epoch,
};
use super::redis::RedisBroker;
use super::redis_script::Eval;
use super::requests::{
    AUDIENCE_KEY_BYTES, AUDIENCE_KEYS, AUDIENCE_LUA, Audience, PUBLISH_TIMED_OUT, ViewRead,
};
use super::wire::history_publish_head;
use crate::config::HistoryConfig;
use crate::frame::{FrameType, frame, parts};
use bytes::Bytes;
use std::sync::{Arc, LazyLock};

/// Starts a new epoch `new_e` when the meta hash `km` is missing (the
/// stream `ks` is dropped with it); `e` is the epoch after it.
const ENSURE_EPOCH_LUA: &str = r#"
local e = redis.call('HGET', km, 'e')
if not e then
  e = new_e
  redis.call('DEL', ks)
  redis.call('HSET', km, 'e', e, 's', 0)
end
"#;

/// Appends and publishes unless the deadline passed (a late publish must
/// not land in history either). Keys: 1 the channel's pub/sub channel,
/// 2..6 the audience keys, 7 the stream, 8 the meta hash. Args: 1 the wire
/// head (everything before the position), 2 deadline, 3 the node-view
/// token, 4 data, 5 frame type, 6 event, 7 historySize, 8 historyTtl,
/// 9 metaTtl, 10 a new epoch (used if none). Returns `{receivers,
/// members, view, offset, epoch}`.
static PUBLISH_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&with_deadline(
        &format!(
            r#"local ks, km, new_e = KEYS[7], KEYS[8], ARGV[10]
{ENSURE_EPOCH_LUA}
local off = redis.call('HINCRBY', km, 's', 1)
redis.call('XADD', ks, 'MAXLEN', '=', ARGV[7], off .. '-0', 'd', ARGV[4], 't', ARGV[5], 'e', ARGV[6])
redis.call('EXPIRE', ks, ARGV[8])
redis.call('EXPIRE', km, ARGV[9])
local function le64(n)
  local b = {{}}
  for i = 1, 8 do b[i] = string.char(n % 256); n = math.floor(n / 256) end
  return table.concat(b)
end
local n = redis.call('PUBLISH', KEYS[1], ARGV[1] .. le64(off) .. string.char(#e % 256, math.floor(#e / 256)) .. e .. ARGV[4])
local token = ARGV[3]
{AUDIENCE_LUA}
return {{n, members, view, off, e}}"#
        ),
        "{-1, {}, false, 0, ''}",
    ))
});

/// Reads. Keys: 1 the stream, 2 the meta hash. Args: 1 the first offset
/// wanted (0: from the oldest), 2 limit, 3 a new epoch, 4 metaTtl.
/// Returns `{top, epoch, entries}`.
static READ_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r#"local ks, km, new_e = KEYS[1], KEYS[2], ARGV[3]
{ENSURE_EPOCH_LUA}
redis.call('EXPIRE', km, ARGV[4])
local top = tonumber(redis.call('HGET', km, 's'))
local entries = {{}}
if tonumber(ARGV[2]) > 0 then
  local from = '-'
  if tonumber(ARGV[1]) > 0 then from = ARGV[1] .. '-0' end
  entries = redis.call('XRANGE', ks, from, '+', 'COUNT', ARGV[2])
end
return {{top, e, entries}}"#
    ))
});

/// One stream entry as XRANGE answers it.
type Entry = (String, Vec<(String, Vec<u8>)>);

/// See the module documentation.
pub struct RedisHistory {
    broker: Arc<RedisBroker>,
}

impl RedisHistory {
    pub fn new(broker: Arc<RedisBroker>) -> Arc<Self> {
        Arc::new(Self { broker })
    }

    fn stream_key(&self, ch: &str) -> String {
        format!("{}:hs:{{{ch}}}", self.broker.names.prefix)
    }

    fn meta_key(&self, ch: &str) -> String {
        format!("{}:hm:{{{ch}}}", self.broker.names.prefix)
    }

    async fn append(&self, p: Publication, policy: &HistoryConfig) -> Appended {
        let b = &self.broker;
        let failed = |e: String| Appended {
            error: Some(e),
            ..Default::default()
        };
        if let Some(e) = b.down() {
            return failed(e.to_string());
        }
        let mut request = b.open_publish();
        let (ftype, data) = parts(&p.frame);
        let head = history_publish_head(
            b.node,
            request.req,
            request.deadline,
            ftype,
            p.event.as_deref(),
        );
        let ch = &*p.channel;
        let bytes = AUDIENCE_KEY_BYTES + 4 * (b.names.prefix.len() + ch.len()) + data.len() + 128;
        let mut eval = Eval::new(&PUBLISH_SCRIPT, AUDIENCE_KEYS + 2, 10, bytes);
        b.audience_keys(&mut eval, ch);
        eval.key(self.stream_key(ch))
            .key(self.meta_key(ch))
            .arg(head.as_ref())
            .arg(request.deadline)
            .arg(b.sync.view().generation.as_str())
            .arg(data.as_ref())
            .arg(if ftype == FrameType::Binary { "1" } else { "0" })
            .arg(p.event.as_deref().unwrap_or(""))
            .arg(policy.history_size)
            .arg(policy.history_ttl)
            .arg(policy.meta_ttl)
            .arg(&*new_epoch());
        let mut cmd = b.cmd.clone();
        let invoked = eval.invoke::<(i64, Vec<u32>, Option<ViewRead>, u64, String)>(&mut cmd);
        let (receivers, members, read, offset, epoch) =
            match tokio::time::timeout_at(request.until, invoked).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return failed(format!("history unavailable: {e}")),
                Err(_) => return failed(PUBLISH_TIMED_OUT.into()),
            };
        if receivers == EXPIRED {
            return failed(
                "history unavailable: Redis took the publish after its deadline; nobody got it"
                    .into(),
            );
        }
        let audience = Audience {
            receivers,
            members,
            read,
            with_self: true,
        };
        let remote = b.collect_reports(audience, &mut request).await;
        Appended {
            position: Some(Position {
                offset,
                epoch: Arc::from(epoch),
            }),
            success: remote.success,
            fail: remote.fail,
            missing: remote.missing,
            error: remote.error,
        }
    }

    async fn read_page(
        &self,
        ch: &str,
        since: Option<Position>,
        limit: usize,
        policy: &HistoryConfig,
    ) -> Result<Page, HistoryError> {
        let b = &self.broker;
        let unavailable = |e: String| HistoryError::Unavailable(e);
        if let Some(e) = b.down() {
            return Err(unavailable(e.to_string()));
        }
        let from = since.as_ref().map_or(0, |s| s.offset.saturating_add(1));
        let mut invocation = READ_SCRIPT.key(self.stream_key(ch));
        invocation
            .key(self.meta_key(ch))
            .arg(from)
            .arg(limit)
            .arg(&*new_epoch())
            .arg(policy.meta_ttl);
        let mut cmd = b.cmd.clone();
        let timeout = std::time::Duration::from_millis(b.cfg.publish_timeout_ms);
        let invoked = invocation.invoke_async::<(u64, String, Vec<Entry>)>(&mut cmd);
        let (top, epoch, entries) = match tokio::time::timeout(timeout, invoked).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(unavailable(e.to_string())),
            Err(_) => return Err(unavailable("Redis did not answer in time".into())),
        };
        let top = Position {
            offset: top,
            epoch: Arc::from(epoch),
        };
        if let Some(since) = &since {
            check_since(since, &top)?;
        }
        let publications: Vec<Arc<Publication>> = entries
            .into_iter()
            .filter_map(|e| entry(ch, &top.epoch, e))
            .collect();
        let complete = match &since {
            None => true,
            Some(s) if s.offset >= top.offset => true,
            Some(s) => publications
                .first()
                .and_then(|p| p.position.as_ref())
                .is_some_and(|p| p.offset == s.offset + 1),
        };
        Ok(Page {
            publications,
            top,
            complete,
        })
    }
}

/// A stream entry as a publication; `None` if it is not one of ours.
fn entry(ch: &str, epoch: &Arc<str>, (id, fields): Entry) -> Option<Arc<Publication>> {
    let offset = id.split_once('-')?.0.parse().ok()?;
    let (mut data, mut ftype, mut event) = (Bytes::new(), FrameType::Text, None);
    for (k, v) in fields {
        match k.as_str() {
            "d" => data = Bytes::from(v),
            "t" if v == b"1" => ftype = FrameType::Binary,
            "e" if !v.is_empty() => event = Some(Arc::from(String::from_utf8_lossy(&v))),
            _ => {}
        }
    }
    let mut p = Publication::new(ch, frame(data, ftype).ok()?);
    p.event = event;
    p.position = Some(Position {
        offset,
        epoch: epoch.clone(),
    });
    Some(Arc::new(p))
}

impl History for RedisHistory {
    fn publish<'a>(
        &'a self,
        p: Publication,
        policy: &'a HistoryConfig,
        _deliver: Deliver<'a>,
    ) -> BoxFuture<'a, Appended> {
        Box::pin(self.append(p, policy))
    }

    fn read<'a>(
        &'a self,
        ch: &'a str,
        since: Option<Position>,
        limit: usize,
        policy: &'a HistoryConfig,
    ) -> BoxFuture<'a, Result<Page, HistoryError>> {
        Box::pin(self.read_page(ch, since, limit, policy))
    }
}

//! The requests a node makes of the others (publish, send, call), and the
//! rules that keep their answers true:
//! - a publish counts only the deliveries that nodes reported; a node that
//!   should have reported and did not, or whose subscriptions may be missing
//!   (not marked synced, see [`super::sync`]), is named in `missing`;
//! - a request that this node answers as failed is not carried out later:
//!   it carries a deadline that the receiving node enforces, and for a send
//!   or call Redis as well (see [`super::deadline`]);
//! - a send or call whose confirmation did not come back in time says that
//!   it may have been carried out (before its deadline, never after).

use super::deadline::{EXPIRED, with_deadline};
use super::redis::RedisBroker;
use super::redis_script::Eval;
use super::sync::SyncView;
use super::wire::{AckStatus, Wire};
use super::{BrokerError, RemoteDelivery};
use crate::client_id::{ClientId, node_of};
use crate::frame::{FrameType, parts};
use crate::publication::Publication;
use bytes::Bytes;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Publishes and returns the number of receiving links and the nodes
/// registered for the channel; plus, unless `p:syncgen` still holds the
/// publisher's token `ARGV[2]`, what it needs to see which nodes'
/// subscriptions are in place: `{generation, members of p:nodes not in
/// p:synced, members of p:synced, epoch}` (see [`super::sync`]).
///
/// No `TIME` check here (it cost more than the rest of the script): a late
/// publish is dropped by every receiving node past its deadline.
static PUBLISH_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r#"
local n = redis.call('PUBLISH', KEYS[1], ARGV[1])
local token = ARGV[2]
{AUDIENCE_LUA}
return {{n, members, view}}
"#
    ))
});

/// The part of a publish script that says whose delivery counts to wait
/// for: `members`, the nodes registered for the channel (`KEYS[2]`), and
/// `view`: `false` while `p:syncgen` (`KEYS[3]`) still holds the
/// publisher's `token`, else `{generation, members of p:nodes (KEYS[4])
/// not in p:synced (KEYS[5]), members of p:synced, epoch (KEYS[6])}`.
/// Shared with [`super::redis_history`].
pub(super) const AUDIENCE_LUA: &str = r#"
local members = redis.call('SMEMBERS', KEYS[2])
local gen = redis.call('GET', KEYS[3])
local view = false
if gen ~= token then
  view = {gen or '', redis.call('SDIFF', KEYS[4], KEYS[5]),
    redis.call('SMEMBERS', KEYS[5]), redis.call('GET', KEYS[6]) or ''}
end
"#;

/// Publishes to a node's channel unless the deadline `ARGV[2]` passed.
static NODE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&with_deadline(
        "return redis.call('PUBLISH', KEYS[1], ARGV[1])",
        "-1",
    ))
});

/// Keys [`RedisBroker::audience_keys`] adds: a publish script's first six.
pub(super) const AUDIENCE_KEYS: usize = 6;
/// Their bytes, about, besides the prefix and channel name in the first two
/// (which [`Eval::new`] is told of separately) and the argument bytes.
pub(super) const AUDIENCE_KEY_BYTES: usize = 160;

/// What [`PUBLISH_SCRIPT`] returns: receivers, registered nodes and, when
/// the view changed, `(generation, unsynced, synced, epoch)`.
type PublishReply = (i64, Vec<u32>, Option<ViewRead>);

/// The node view a publish script read (see [`AUDIENCE_LUA`]).
pub(super) type ViewRead = (String, Vec<u32>, Vec<u32>, String);

/// Who a publish reached in Redis, as its script answers.
pub(super) struct Audience {
    /// Links that received it (0: nobody will report).
    pub receivers: i64,
    /// Nodes registered for the channel.
    pub members: Vec<u32>,
    /// The node view, when it changed since this node's last read.
    pub read: Option<ViewRead>,
    /// This node delivers it too, and reports to itself (history publishes).
    pub with_self: bool,
}

/// A publish in progress (see [`RedisBroker::open_publish`]).
pub(super) struct PublishRequest<'a> {
    pub req: u64,
    rx: mpsc::UnboundedReceiver<(u32, u64, u64)>,
    /// When this node stops waiting for reports.
    pub until: Instant,
    /// When the other nodes drop it (see [`super::deadline`]).
    pub deadline: u64,
    _pending: Pending<'a, super::redis::ReportSender>,
}

/// Why a publish reached no other node.
pub(super) const PUBLISH_TIMED_OUT: &str = "broker unavailable: publish timed out; \
     no other node delivers it (it is dropped past its deadline)";

/// Removes a pending request's entry when the request ends, however it ends.
struct Pending<'a, T> {
    map: &'a parking_lot::Mutex<std::collections::HashMap<u64, T>>,
    req: u64,
}

impl<T> Drop for Pending<'_, T> {
    fn drop(&mut self) {
        self.map.lock().remove(&self.req);
    }
}

pub(super) fn failed(error: impl Into<String>) -> RemoteDelivery {
    RemoteDelivery {
        error: Some(error.into()),
        ..Default::default()
    }
}

impl RedisBroker {
    /// Publishes to other nodes and collects their delivery counts.
    pub async fn publish(&self, p: &Publication) -> RemoteDelivery {
        let ch = &*p.channel;
        let (ftype, data) = parts(&p.frame);
        if let Some(e) = self.down() {
            return failed(e.to_string());
        }
        let mut request = self.open_publish();
        let payload = Wire::Publish {
            origin: self.node,
            req: request.req,
            deadline: request.deadline,
            ftype,
            data,
            event: p.event.clone(),
            position: p.position.clone(),
        }
        .encode();
        let bytes = AUDIENCE_KEY_BYTES + 2 * (self.names.prefix.len() + ch.len()) + payload.len();
        let mut eval = Eval::new(&PUBLISH_SCRIPT, AUDIENCE_KEYS, 2, bytes);
        self.audience_keys(&mut eval, ch);
        eval.arg(payload.as_ref())
            .arg(self.sync.view().generation.as_str());
        let mut cmd = self.cmd.clone();
        let invoked = eval.invoke::<PublishReply>(&mut cmd);
        let (receivers, members, read) = match tokio::time::timeout_at(request.until, invoked).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return failed(format!("broker unavailable: {e}")),
            Err(_) => return failed(PUBLISH_TIMED_OUT),
        };
        let audience = Audience {
            receivers,
            members,
            read,
            with_self: false,
        };
        self.collect_reports(audience, &mut request).await
    }

    /// Starts a publish request: reports for it are collected until it is
    /// dropped.
    pub(super) fn open_publish(&self) -> PublishRequest<'_> {
        let timeout = Duration::from_millis(self.cfg.publish_timeout_ms);
        let req = self.req();
        let (tx, rx) = mpsc::unbounded_channel();
        self.reports.lock().insert(req, tx);
        PublishRequest {
            req,
            rx,
            until: Instant::now() + timeout,
            deadline: self.clock.deadline(timeout),
            _pending: Pending {
                map: &self.reports,
                req,
            },
        }
    }

    /// `KEYS[1..6]` of a publish script: the channel, then what
    /// [`AUDIENCE_LUA`] reads.
    pub(super) fn audience_keys(&self, eval: &mut Eval<'_>, ch: &str) {
        let [generation, nodes, synced, epoch] = &self.names.view;
        eval.key(self.names.channel(ch))
            .key(self.names.chnodes(ch))
            .key(generation)
            .key(nodes)
            .key(synced)
            .key(epoch);
    }

    /// Waits for the reports of a publish's audience until the request's
    /// `until` and names the nodes that did not report.
    pub(super) async fn collect_reports(
        &self,
        audience: Audience,
        request: &mut PublishRequest<'_>,
    ) -> RemoteDelivery {
        let Audience {
            receivers,
            members,
            read,
            with_self,
        } = audience;
        let (rx, until) = (&mut request.rx, request.until);
        let mut view = self.sync.view();
        if let Some((generation, unsynced, synced, epoch)) = read {
            view = Arc::new(SyncView {
                generation,
                epoch,
                unsynced,
                synced,
            });
            self.sync.set_view(view.clone());
        }
        // Nodes whose subscriptions may be missing are named unless they
        // report; they are not waited for (they may never hear it).
        let unsynced = self.unsynced(&view);
        // Every registered node is waited for, also one this node's live
        // view does not have yet (it re-registered since the last heartbeat):
        // ignoring it would answer its subscribers as a silent s:0.
        // Node sets are a handful of numbers: vectors, not hash sets (a
        // publish builds several).
        let mut expected: Vec<u32> = members
            .into_iter()
            .filter(|m| (with_self || *m != self.node) && !unsynced.contains(m))
            .collect();
        let mut out = RemoteDelivery::default();
        let mut reported = Vec::new();
        let mut count = |(from, s, f): (u32, u64, u64), out: &mut RemoteDelivery| {
            if !reported.contains(&from) {
                reported.push(from);
                out.success += s;
                out.fail += f;
            }
        };
        // No link received it: nobody will report.
        while receivers > 0 && !expected.is_empty() {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(report)) => {
                    expected.retain(|n| *n != report.0);
                    count(report, &mut out);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Reports already here from nodes not waited for still count.
        while let Ok(report) = rx.try_recv() {
            count(report, &mut out);
        }
        let mut missing: Vec<u32> = expected
            .into_iter()
            .chain(unsynced)
            .filter(|n| !reported.contains(n))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        out.missing = missing.into_iter().map(|n| self.node_name(n)).collect();
        out
    }

    /// The other nodes whose subscriptions are not known to be in place:
    /// members of `p:nodes` not in `p:synced`; when Redis has no epoch or
    /// lost its data since the last heartbeat (the epoch changed), every
    /// live node not in `p:synced`; and the nodes the heartbeat holds (see
    /// [`super::sync::SyncState::held`]).
    fn unsynced(&self, view: &SyncView) -> Vec<u32> {
        let mut out: Vec<u32> = view.unsynced.clone();
        if view.epoch.is_empty() || !self.sync.is_seen_epoch(&view.epoch) {
            let live = self.live.read();
            out.extend(live.keys().filter(|n| !view.synced.contains(n)));
        }
        if !self.sync.none_held() {
            out.extend(self.sync.held());
        }
        out.retain(|n| *n != self.node);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Sends a frame to a client of another node.
    pub async fn send(
        &self,
        client: ClientId,
        ftype: FrameType,
        data: Bytes,
    ) -> Result<(), BrokerError> {
        let (req, until, deadline) = self.request_limits();
        let msg = Wire::Send {
            origin: self.node,
            req,
            deadline,
            client,
            ftype,
            data,
        };
        self.request(node_of(client), req, until, msg).await
    }

    /// Runs `conn.call` on a client of another node.
    pub async fn call(
        &self,
        client: ClientId,
        func: &str,
        args: Vec<serde_json::Value>,
    ) -> Result<(), BrokerError> {
        let (req, until, deadline) = self.request_limits();
        let call = serde_json::json!({"f": func, "a": args}).to_string();
        let msg = Wire::Call {
            origin: self.node,
            req,
            deadline,
            client,
            call: Bytes::from(call),
        };
        self.request(node_of(client), req, until, msg).await
    }

    /// A request number, when this node gives up waiting, and the deadline
    /// after which the request must not be carried out.
    fn request_limits(&self) -> (u64, Instant, u64) {
        let timeout = Duration::from_millis(self.cfg.call_timeout_ms);
        let until = Instant::now() + timeout;
        (self.req(), until, self.clock.deadline(timeout))
    }

    async fn request(
        &self,
        node: u32,
        req: u64,
        until: Instant,
        msg: Wire,
    ) -> Result<(), BrokerError> {
        if let Some(e) = self.down() {
            return Err(e);
        }
        if !self.live.read().contains_key(&node) {
            return Err(BrokerError::UnknownNode(node));
        }
        let deadline = match &msg {
            Wire::Send { deadline, .. } | Wire::Call { deadline, .. } => *deadline,
            _ => 0,
        };
        let (tx, rx) = oneshot::channel();
        self.acks.lock().insert(req, tx);
        let _pending = Pending {
            map: &self.acks,
            req,
        };
        let mut cmd = self.cmd.clone();
        let mut invocation = NODE_SCRIPT.key(self.names.node_channel(node));
        invocation.arg(msg.encode().as_ref()).arg(deadline);
        let receivers: i64 =
            match tokio::time::timeout_at(until, invocation.invoke_async(&mut cmd)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(BrokerError::Down(e.to_string())),
                Err(_) => {
                    return Err(BrokerError::Down(
                    "no answer from Redis in time; not delivered (it is dropped past its deadline)"
                        .into(),
                ));
                }
            };
        if receivers == EXPIRED {
            return Err(BrokerError::Down(
                "Redis took it after its deadline; not delivered".into(),
            ));
        }
        if receivers == 0 {
            // Alive by its heartbeat but not listening: its link to Redis is
            // being restored.
            return Err(if self.live.read().contains_key(&node) {
                BrokerError::Down(format!(
                    "node {} is not listening right now (its Redis link is being restored); not delivered",
                    self.node_name(node)
                ))
            } else {
                BrokerError::UnknownNode(node)
            });
        }
        let Ok(Ok((status, message))) = tokio::time::timeout_at(until, rx).await else {
            return Err(BrokerError::Remote(format!(
                "node {} did not confirm in time: it may have been delivered before its deadline, never after",
                self.node_name(node)
            )));
        };
        match status {
            AckStatus::Ok => Ok(()),
            AckStatus::UnknownClient => Err(BrokerError::UnknownClient(message)),
            AckStatus::Busy => Err(BrokerError::Busy(message)),
            AckStatus::Failed => Err(BrokerError::Remote(message)),
            AckStatus::Expired => Err(BrokerError::Down(format!(
                "it reached node {} after its deadline; not delivered",
                self.node_name(node)
            ))),
        }
    }
}

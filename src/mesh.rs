//! The operations of CONTRACT sections 4 and 5: publish, send, conn.call,
//! subscribe and unsubscribe, whichever door (HTTP API, WebSocket API, Lua)
//! they come through.
//!
//! A publish is turned into one shared frame here and handed to the hub for
//! local fan-out. The mesh is the only place that knows whether an operation
//! stays on this node; it never touches sockets or Lua.

use crate::broker::interest::Interest;
use crate::broker::redis::RedisBroker;
use crate::broker::{BrokerError, NodeInfo};
use crate::hub::{ClientId, Delivery, Hub, SubscribeError, node_of};
use crate::metrics::Metrics;
use crate::outbox::{CallFunc, ConnCall, Outbound, PushError};
use crate::queue::Queues;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use tungstenite::Message;

/// Frame type of a publish or send (`t` in the API, `type` in Lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Text,
    Binary,
}

impl FrameType {
    /// Parses `"text"`/`"binary"`; absent means text.
    pub fn parse(t: Option<&str>) -> Option<FrameType> {
        match t {
            None | Some("text") | Some("") => Some(FrameType::Text),
            Some("binary") => Some(FrameType::Binary),
            _ => None,
        }
    }
}

/// Why a mesh operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("client {0} not found")]
    UnknownClient(String),
    #[error("client {0} is not accepting messages (slow or closing)")]
    ClientBusy(ClientId),
    #[error("text data is not valid UTF-8")]
    InvalidText,
    #[error("{0}")]
    CallFailed(String),
    #[error("{0}")]
    Subscribe(#[from] SubscribeError),
    #[error("{0}")]
    Remote(String),
}

/// Builds the frame once; every subscriber shares its payload.
pub fn frame(data: Bytes, t: FrameType) -> Result<Message, MeshError> {
    match t {
        FrameType::Binary => Ok(Message::Binary(data)),
        FrameType::Text => tungstenite::Utf8Bytes::try_from(data)
            .map(Message::Text)
            .map_err(|_| MeshError::InvalidText),
    }
}

/// What a publish did across the cluster.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Published {
    /// Connections reached and not reached, on every node that reported.
    pub delivery: Delivery,
    /// Nodes that should have reported but did not before the deadline.
    pub missing: Vec<String>,
    /// Why other nodes could not be reached at all (the broker is down).
    pub error: Option<String>,
}

/// The frame's type and payload, as they travel between nodes.
fn parts(msg: &Message) -> (FrameType, Bytes) {
    match msg {
        Message::Binary(b) => (FrameType::Binary, b.clone()),
        Message::Text(t) => (FrameType::Text, AsRef::<Bytes>::as_ref(t).clone()),
        _ => (FrameType::Binary, Bytes::new()),
    }
}

/// See the module documentation.
pub struct Mesh {
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Upstream queues (`mix.queue.push` -> `queue.pop`).
    pub queues: Arc<Queues>,
    /// The link to other nodes (`connmix engine`); `None` on a single node.
    pub broker: Option<Arc<RedisBroker>>,
}

impl Mesh {
    pub fn new(
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        queues: Arc<Queues>,
        broker: Option<Arc<RedisBroker>>,
    ) -> Self {
        Self {
            hub,
            metrics,
            queues,
            broker,
        }
    }

    /// Delivers `msg` to every subscriber of `ch`, on every node.
    pub async fn publish(&self, ch: &str, msg: Message) -> Published {
        let start = Instant::now();
        let local = self.hub.publish(ch, &msg);
        self.metrics.send_errors.inc_by(local.fail);
        self.metrics
            .send_local
            .observe(start.elapsed().as_secs_f64());
        let Some(broker) = &self.broker else {
            return Published {
                delivery: local,
                ..Default::default()
            };
        };
        let (ftype, data) = parts(&msg);
        let remote = broker.publish(ch, ftype, data).await;
        self.metrics
            .send_forward
            .observe(start.elapsed().as_secs_f64());
        Published {
            delivery: Delivery {
                success: local.success + remote.success,
                fail: local.fail + remote.fail,
            },
            missing: remote.missing,
            error: remote.error,
        }
    }

    /// Delivers `msg` to one client, on whichever node it is.
    pub async fn send(&self, id: ClientId, msg: Message) -> Result<(), MeshError> {
        if node_of(id) == self.hub.node() {
            return self.push(id, Outbound::Message(msg));
        }
        let Some(broker) = &self.broker else {
            return Err(MeshError::UnknownClient(id.to_string()));
        };
        let start = Instant::now();
        let (ftype, data) = parts(&msg);
        let r = broker.send(id, ftype, data).await.map_err(MeshError::from);
        self.metrics
            .send_forward
            .observe(start.elapsed().as_secs_f64());
        r
    }

    fn push(&self, id: ClientId, item: Outbound) -> Result<(), MeshError> {
        match self.hub.send(id, item) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(MeshError::UnknownClient(id.to_string())),
            Err(PushError::Full) => {
                self.metrics.send_errors.inc();
                Err(MeshError::ClientBusy(id))
            }
        }
    }

    /// Runs `conn.call` on a client: the connection applies it on its own
    /// thread and this returns once it has, on whichever node it is.
    pub async fn call(
        &self,
        id: ClientId,
        func: CallFunc,
        args: Vec<serde_json::Value>,
    ) -> Result<(), MeshError> {
        if node_of(id) != self.hub.node() {
            let Some(broker) = &self.broker else {
                return Err(MeshError::UnknownClient(id.to_string()));
            };
            return broker
                .call(id, func.name(), args)
                .await
                .map_err(|e| MeshError::CallFailed(e.to_string()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.push(
            id,
            Outbound::Call(ConnCall {
                func,
                args,
                reply: Some(tx),
            }),
        )?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MeshError::CallFailed(e)),
            Err(_) => Err(MeshError::CallFailed(format!("client {id} closed"))),
        }
    }

    /// Joins a local client to a channel.
    pub fn subscribe(&self, client: &Arc<crate::hub::Client>, ch: &str) -> Result<(), MeshError> {
        if self.hub.subscribe(client, ch)? {
            self.metrics.channels.inc();
            if let Some(b) = &self.broker {
                b.interest.send(Interest::Subscribe(ch.to_string()));
            }
        }
        Ok(())
    }

    /// Cluster: the number of the last broker interest change sent. Once
    /// it is applied (`interest_applied`), every channel joined so far is
    /// heard from the whole cluster, so a publish on any node reaches it.
    pub fn interest_sent(&self) -> Option<u64> {
        self.broker.as_ref().map(|b| b.interest.last_sent())
    }

    /// Resolves once the broker applied interest change `seq` (bounded by
    /// `publishTimeoutMs`; at once on a single node).
    pub fn interest_applied(&self, seq: u64) -> impl Future<Output = ()> + Send + 'static + use<> {
        let broker = self.broker.clone();
        async move {
            if let Some(b) = broker {
                b.interest_applied(seq).await;
            }
        }
    }

    /// Removes a local client from a channel.
    pub fn unsubscribe(&self, client: &crate::hub::Client, ch: &str) {
        if self.hub.unsubscribe(client, ch) {
            self.left(std::iter::once(ch.to_string()));
        }
    }

    /// Channels that just lost their last local subscriber.
    fn left(&self, channels: impl Iterator<Item = String>) {
        for ch in channels {
            self.metrics.channels.dec();
            if let Some(b) = &self.broker {
                b.interest.send(Interest::Unsubscribe(ch));
            }
        }
    }

    /// Removes a closed client from the hub and every channel.
    pub fn unregister(&self, client: &crate::hub::Client) {
        let emptied = self.hub.unregister(client);
        self.left(emptied.into_iter().map(|c| c.to_string()));
        self.metrics.clients.set(self.hub.client_count() as i64);
    }

    /// Makes a new local client reachable.
    pub fn register(&self, client: Arc<crate::hub::Client>) {
        self.hub.register(client);
        self.metrics.clients.set(self.hub.client_count() as i64);
    }

    /// Every live node (just this one without a broker).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        match &self.broker {
            Some(b) => b.nodes(),
            None => vec![NodeInfo {
                n: self.hub.node(),
                id: "single".into(),
                clients: self.hub.client_count() as u64,
                channels: self.hub.channel_count() as u64,
                started: 0,
            }],
        }
    }
}

impl From<BrokerError> for MeshError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::UnknownClient(m) => MeshError::UnknownClient(m),
            BrokerError::UnknownNode(n) => {
                MeshError::UnknownClient(format!("on node {n}, which is not alive"))
            }
            other => MeshError::Remote(other.to_string()),
        }
    }
}

//! The node-local registry: client id -> connection, channel -> subscribers.
//!
//! Everything here is local to this process and thread-safe without a global
//! lock: both maps are sharded (`DashMap`), a publish to a channel holds only
//! that channel's shard for reading, and a channel with no subscriber left is
//! removed so churn leaves nothing behind. The hub never talks to a broker or
//! to Lua; [`crate::mesh`] decides what crosses nodes and tells the broker
//! about the first/last local subscriber the hub reports.

use crate::client_id::{self, ClientId};
use crate::outbox::{Outbound, Outbox, PushError};
use crate::presence::Presence;
use crate::publication::Publication;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The part of a connection that other threads may touch.
pub struct Client {
    pub id: ClientId,
    /// Index of the `engine.servers` entry it connected to.
    pub server: usize,
    pub outbox: Outbox,
    max_channels: usize,
    state: Mutex<ClientState>,
    /// Its user id for presence (the context key `uid`). A lock of its own,
    /// never held while taking another: presence reads it under a channel's
    /// shard lock, which a subscribe takes under `state`.
    user: Mutex<Option<Arc<str>>>,
}

struct ClientState {
    channels: Vec<Arc<str>>,
    gone: bool,
}

impl Client {
    pub fn new(
        id: ClientId,
        server: usize,
        (queue_size, queue_bytes): (usize, usize),
        max_channels: usize,
    ) -> Self {
        Self {
            id,
            server,
            outbox: Outbox::new(queue_size, queue_bytes),
            max_channels,
            state: Mutex::new(ClientState {
                channels: Vec::new(),
                gone: false,
            }),
            user: Mutex::new(None),
        }
    }

    /// Channels this client has joined, in join order.
    pub fn channels(&self) -> Vec<Arc<str>> {
        self.state.lock().channels.clone()
    }

    /// Sets (or clears) the user id presence counts it as.
    pub fn set_user(&self, user: Option<Arc<str>>) {
        *self.user.lock() = user;
    }

    /// The user id presence counts it as.
    pub fn user(&self) -> Option<Arc<str>> {
        self.user.lock().clone()
    }
}

/// Why a subscribe was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("invalid channel {0:?}: must be non-empty and contain no spaces")]
    InvalidChannel(String),
    #[error("too many channels: at most {0} per connection")]
    TooMany(usize),
    #[error("connection is closed")]
    Gone,
}

/// Whether a channel name is acceptable: non-empty, no whitespace or control
/// characters, at most 256 bytes.
pub fn valid_channel(ch: &str) -> bool {
    !ch.is_empty() && ch.len() <= 256 && !ch.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Local delivery counts of one publish.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Connections the message was queued to.
    pub success: u64,
    /// Subscribers it could not be queued to (slow or closing).
    pub fail: u64,
}

/// See the module documentation.
pub struct Hub {
    node: u32,
    seq: AtomicU64,
    clients: DashMap<ClientId, Arc<Client>>,
    channels: DashMap<Arc<str>, HashMap<ClientId, Arc<Client>>>,
    client_count: AtomicUsize,
}

impl Hub {
    pub fn new(node: u32) -> Self {
        Self {
            node,
            seq: AtomicU64::new(1),
            clients: DashMap::new(),
            channels: DashMap::new(),
            client_count: AtomicUsize::new(0),
        }
    }

    /// This node's number.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// A fresh client id for this node.
    pub fn next_id(&self) -> ClientId {
        client_id::make(self.node, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Makes a connection reachable by id.
    pub fn register(&self, client: Arc<Client>) {
        self.clients.insert(client.id, client);
        self.client_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes a connection unreachable and refuses its further subscribes.
    /// Returns the channels it had joined: it is still their subscriber
    /// until [`Hub::leave`] is called for each (the mesh does so under each
    /// channel's lock).
    pub fn unregister(&self, client: &Client) -> Vec<Arc<str>> {
        if self.clients.remove(&client.id).is_some() {
            self.client_count.fetch_sub(1, Ordering::Relaxed);
        }
        client.outbox.close();
        let mut st = client.state.lock();
        st.gone = true;
        std::mem::take(&mut st.channels)
    }

    pub fn client(&self, id: ClientId) -> Option<Arc<Client>> {
        self.clients.get(&id).map(|c| c.clone())
    }

    /// Connections registered now.
    pub fn client_count(&self) -> usize {
        self.client_count.load(Ordering::Relaxed)
    }

    /// Channels with at least one local subscriber now.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Every channel with a local subscriber now.
    pub fn channel_names(&self) -> Vec<String> {
        self.channels.iter().map(|e| e.key().to_string()).collect()
    }

    /// The local subscribers of `ch` (the console's connection lookup).
    pub fn subscribers(&self, ch: &str) -> Vec<Arc<Client>> {
        self.channels
            .get(ch)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Local subscribers of a channel now.
    pub fn subscriber_count(&self, ch: &str) -> usize {
        self.channels.get(ch).map(|s| s.len()).unwrap_or(0)
    }

    /// The `n` channels with most local subscribers, most first.
    pub fn top_channels(&self, n: usize) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> = self
            .channels
            .iter()
            .map(|e| (e.key().to_string(), e.value().len()))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Joins `client` to `ch`. `Ok(true)` when `ch` had no local subscriber
    /// before (the broker must start listening to it).
    pub fn subscribe(&self, client: &Arc<Client>, ch: &str) -> Result<bool, SubscribeError> {
        if !valid_channel(ch) {
            return Err(SubscribeError::InvalidChannel(ch.to_string()));
        }
        let mut st = client.state.lock();
        if st.gone {
            return Err(SubscribeError::Gone);
        }
        // Already joined? Asked of the channel's map (constant time), not of
        // the client's list, so a client with many channels joins fast.
        if self
            .channels
            .get(ch)
            .is_some_and(|s| s.contains_key(&client.id))
        {
            return Ok(false);
        }
        if st.channels.len() >= client.max_channels {
            return Err(SubscribeError::TooMany(client.max_channels));
        }
        let name: Arc<str> = Arc::from(ch);
        let mut first = false;
        self.channels
            .entry(name.clone())
            .or_insert_with(|| {
                first = true;
                HashMap::new()
            })
            .insert(client.id, client.clone());
        st.channels.push(name);
        Ok(first)
    }

    /// Removes `client` from `ch`. `true` when `ch` has no local subscriber
    /// left (the broker may stop listening to it).
    pub fn unsubscribe(&self, client: &Client, ch: &str) -> bool {
        let mut st = client.state.lock();
        let Some(pos) = st.channels.iter().position(|c| &**c == ch) else {
            return false;
        };
        st.channels.swap_remove(pos);
        self.leave(ch, client.id)
    }

    /// Removes client `id` from the subscribers of `ch` (after
    /// [`Hub::unregister`]). `true` when `ch` has no local subscriber left.
    pub fn leave(&self, ch: &str, id: ClientId) -> bool {
        let mut emptied = false;
        if let Some(mut subs) = self.channels.get_mut(ch) {
            subs.remove(&id);
            emptied = subs.is_empty();
        }
        if emptied {
            // Re-check under the shard's write lock: a subscribe may have
            // raced in between.
            return self.channels.remove_if(ch, |_, s| s.is_empty()).is_some();
        }
        false
    }

    /// Queues `p` to every local subscriber of its channel; the publication
    /// is shared, not copied.
    pub fn publish(&self, p: &Arc<Publication>) -> Delivery {
        let mut d = Delivery::default();
        if let Some(subs) = self.channels.get(&*p.channel) {
            for c in subs.values() {
                match c.outbox.push(Outbound::Publication(p.clone())) {
                    Ok(()) => d.success += 1,
                    Err(_) => d.fail += 1,
                }
            }
        }
        d
    }

    /// The local presence of `ch`: its subscribers, their client ids when
    /// `ids`, and their distinct users. Reads the channel's shard once.
    pub fn presence(&self, ch: &str, ids: bool) -> Presence {
        let Some(subs) = self.channels.get(ch) else {
            return Presence::default();
        };
        let mut users: HashSet<Arc<str>> = HashSet::new();
        let mut clients = Vec::with_capacity(if ids { subs.len() } else { 0 });
        for c in subs.values() {
            if ids {
                clients.push(c.id);
            }
            if let Some(u) = &*c.user.lock()
                && !users.contains(u)
            {
                users.insert(u.clone());
            }
        }
        Presence {
            count: subs.len() as u64,
            clients,
            users: users.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Queues `item` to one local client.
    pub fn send(&self, id: ClientId, item: Outbound) -> Result<(), PushError> {
        match self.clients.get(&id) {
            Some(c) => c.outbox.push(item),
            None => Err(PushError::Closed),
        }
    }

    /// Asks every local connection to close with `code` (shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        for c in self.clients.iter() {
            let _ = c.outbox.push(Outbound::Close(code, reason.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(hub: &Hub) -> Arc<Client> {
        let c = Arc::new(Client::new(hub.next_id(), 0, (8, 1 << 20), 3));
        hub.register(c.clone());
        c
    }

    #[test]
    fn ids_name_their_node() {
        let hub = Hub::new(7);
        assert_eq!(client_id::node_of(hub.next_id()), 7);
    }

    #[test]
    fn first_and_last_subscriber_are_reported() {
        let hub = Hub::new(1);
        let (a, b) = (client(&hub), client(&hub));
        assert_eq!(hub.subscribe(&a, "x"), Ok(true));
        assert_eq!(hub.subscribe(&b, "x"), Ok(false));
        assert!(!hub.unsubscribe(&a, "x"));
        assert!(hub.unsubscribe(&b, "x"));
        assert_eq!(hub.channel_count(), 0);
    }

    #[test]
    fn unregister_leaves_every_channel() {
        let hub = Hub::new(1);
        let a = client(&hub);
        hub.subscribe(&a, "x").unwrap();
        hub.subscribe(&a, "y").unwrap();
        let held = hub.unregister(&a);
        assert_eq!(held.len(), 2);
        assert!(held.iter().all(|ch| hub.leave(ch, a.id)));
        assert_eq!(hub.channel_count(), 0);
        assert_eq!(hub.client_count(), 0);
        assert_eq!(hub.subscribe(&a, "z"), Err(SubscribeError::Gone));
    }

    #[test]
    fn channel_limit_and_validation() {
        let hub = Hub::new(1);
        let a = client(&hub);
        for ch in ["a", "b", "c"] {
            hub.subscribe(&a, ch).unwrap();
        }
        assert_eq!(hub.subscribe(&a, "d"), Err(SubscribeError::TooMany(3)));
        assert!(matches!(
            hub.subscribe(&a, "has space"),
            Err(SubscribeError::InvalidChannel(_))
        ));
    }

    #[test]
    fn publish_counts_success_and_fail() {
        let hub = Hub::new(1);
        let a = client(&hub);
        hub.subscribe(&a, "x").unwrap();
        let m = Arc::new(Publication::new("x", tungstenite::Message::text("hi")));
        for _ in 0..8 {
            assert_eq!(hub.publish(&m).success, 1);
        }
        assert_eq!(
            hub.publish(&m),
            Delivery {
                success: 0,
                fail: 1
            }
        );
        let nobody = Arc::new(Publication::new("nobody", tungstenite::Message::text("hi")));
        assert_eq!(hub.publish(&nobody), Delivery::default());
    }
}

//! The node-local registry: client id -> connection, channel -> subscribers.
//!
//! Everything here is local to this process and thread-safe without a global
//! lock: both maps are sharded (`DashMap`), a publish to a channel holds only
//! that channel's shard for reading, and a channel with no subscriber left is
//! removed so churn leaves nothing behind. The hub never talks to a broker or
//! to Lua; [`crate::mesh`] decides what crosses nodes and tells the broker
//! about the first/last local subscriber the hub reports.
//!
//! Presence reads a channel's entry: its subscribers, and the users they
//! are (the connection's `uid`, see [`Hub::set_user`]); a large channel
//! keeps its users counted, so it is answered without visiting every client.

use crate::client_id::{self, ClientId};
use crate::outbox::{Outbound, Outbox, PushError};
use crate::presence::Presence;
use crate::publication::Publication;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::collections::HashMap;
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
    /// Its user id for presence (the context key `uid`); a large channel
    /// also records it in its counts (see [`UserCounts`]). Changed only
    /// under `state`'s lock; a leaf lock: nothing else is taken while it is
    /// held.
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

    /// The user id presence counts it as (set with [`Hub::set_user`]).
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

/// Channels with at least this many subscribers count their users, so
/// presence of a large channel reads one small map instead of visiting every
/// subscriber; smaller channels are visited when asked (at most this many
/// entries), which keeps the many one-user channels (`user:<uid>`) as small
/// as they were before presence.
const COUNT_USERS_FROM: usize = 128;
/// A channel that shrinks below this drops its user counts again (not at
/// [`COUNT_USERS_FROM`]: a channel hovering there would rebuild them on
/// every join).
const DROP_USER_COUNTS_BELOW: usize = COUNT_USERS_FROM / 2;

/// The local subscribers of one channel; a large one also counts its users.
#[derive(Default)]
struct Subscribers {
    clients: HashMap<ClientId, Arc<Client>>,
    /// Kept from [`COUNT_USERS_FROM`] subscribers on.
    users: Option<Box<UserCounts>>,
}

/// The users of a large channel. Changed only under the channel's shard
/// lock. Each subscriber's user is recorded as counted here, so a change
/// of user ([`Hub::set_user`]) moves exactly what was counted, whether the
/// counts were built before or after the client's user changed.
#[derive(Default)]
struct UserCounts {
    /// The user each subscriber that has one is counted as.
    of: HashMap<ClientId, Arc<str>>,
    /// Subscribers per user.
    count: HashMap<Arc<str>, u32>,
}

impl UserCounts {
    fn set(&mut self, id: ClientId, user: Option<Arc<str>>) {
        if let Some(old) = self.of.remove(&id)
            && let Some(n) = self.count.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.count.remove(&old);
            }
        }
        if let Some(u) = user {
            *self.count.entry(u.clone()).or_insert(0) += 1;
            self.of.insert(id, u);
        }
    }
}

impl Subscribers {
    fn add(&mut self, client: Arc<Client>) {
        if let Some(users) = self.users.as_mut() {
            users.set(client.id, client.user());
        }
        self.clients.insert(client.id, client);
        if self.users.is_none() && self.clients.len() >= COUNT_USERS_FROM {
            let mut users = Box::<UserCounts>::default();
            for c in self.clients.values() {
                users.set(c.id, c.user());
            }
            self.users = Some(users);
        }
    }

    fn remove(&mut self, id: ClientId) {
        self.clients.remove(&id);
        if self.clients.len() < DROP_USER_COUNTS_BELOW {
            self.users = None;
        } else if let Some(users) = self.users.as_mut() {
            users.set(id, None);
        }
    }

    fn set_user(&mut self, id: ClientId, user: Option<Arc<str>>) {
        if let Some(users) = self.users.as_mut()
            && self.clients.contains_key(&id)
        {
            users.set(id, user);
        }
    }

    /// The distinct users among the subscribers.
    fn users(&self) -> Vec<Arc<str>> {
        match &self.users {
            Some(users) => users.count.keys().cloned().collect(),
            None => {
                let mut all: Vec<Arc<str>> =
                    self.clients.values().filter_map(|c| c.user()).collect();
                all.sort_unstable();
                all.dedup();
                all
            }
        }
    }
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
    channels: DashMap<Arc<str>, Subscribers>,
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
            .map(|m| m.clients.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Local subscribers of a channel now.
    pub fn subscriber_count(&self, ch: &str) -> usize {
        self.channels.get(ch).map(|s| s.clients.len()).unwrap_or(0)
    }

    /// The `n` channels with most local subscribers, most first.
    pub fn top_channels(&self, n: usize) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> = self
            .channels
            .iter()
            .map(|e| (e.key().to_string(), e.value().clients.len()))
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
            .is_some_and(|s| s.clients.contains_key(&client.id))
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
                Subscribers::default()
            })
            .add(client.clone());
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
            subs.remove(id);
            emptied = subs.clients.is_empty();
        }
        if emptied {
            // Re-check under the shard's write lock: a subscribe may have
            // raced in between.
            return self
                .channels
                .remove_if(ch, |_, s| s.clients.is_empty())
                .is_some();
        }
        false
    }

    /// Queues `p` to every local subscriber of its channel; the publication
    /// is shared, not copied.
    pub fn publish(&self, p: &Arc<Publication>) -> Delivery {
        let mut d = Delivery::default();
        if let Some(subs) = self.channels.get(&*p.channel) {
            for c in subs.clients.values() {
                match c.outbox.push(Outbound::Publication(p.clone())) {
                    Ok(()) => d.success += 1,
                    Err(_) => d.fail += 1,
                }
            }
        }
        d
    }

    /// Sets (or clears) the user presence counts `client` as, in every
    /// channel it is in. A closed client keeps the user it had.
    pub fn set_user(&self, client: &Client, user: Option<Arc<str>>) {
        let st = client.state.lock();
        if st.gone {
            return;
        }
        *client.user.lock() = user.clone();
        for ch in &st.channels {
            if let Some(mut subs) = self.channels.get_mut(&**ch) {
                subs.set_user(client.id, user.clone());
            }
        }
    }

    /// The local presence of `ch`: its subscribers, their client ids when
    /// `ids`, and their distinct users (a large channel's from its counts).
    pub fn presence(&self, ch: &str, ids: bool) -> Presence {
        let Some(subs) = self.channels.get(ch) else {
            return Presence::default();
        };
        Presence {
            count: subs.clients.len() as u64,
            clients: if ids {
                subs.clients.keys().copied().collect()
            } else {
                Vec::new()
            },
            users: subs.users(),
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
#[path = "hub_tests.rs"]
mod tests;

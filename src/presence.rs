//! Who is in a channel: its subscribed connections and their distinct
//! users, as one node sees them and summed over the cluster.
//!
//! A connection's user is the value of its context key `uid` (set by the
//! script with `conn:set_context_value("uid", ...)` or by a backend's
//! `conn.call`); a connection without one counts as a client and not as a
//! user. A leaf module: it imports nothing of the crate.

use std::collections::HashSet;
use std::sync::Arc;

/// The longest user id counted, in bytes; a longer `uid` is not a user.
pub const MAX_USER_LEN: usize = 256;

/// The presence of one channel (on one node, or summed over the cluster).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Presence {
    /// Subscribed connections.
    pub count: u64,
    /// Their client ids; empty when only the counts were asked for.
    pub clients: Vec<u64>,
    /// The distinct user ids among them, in no particular order.
    pub users: Vec<Arc<str>>,
    /// Nodes that should have answered and did not in time.
    pub missing: Vec<String>,
    /// Why other nodes could not be asked at all.
    pub error: Option<String>,
}

impl Presence {
    /// Adds another node's part; users stay distinct.
    pub fn combine(parts: impl IntoIterator<Item = Presence>) -> Presence {
        let mut out = Presence::default();
        let mut users: HashSet<Arc<str>> = HashSet::new();
        for p in parts {
            out.count += p.count;
            out.clients.extend(p.clients);
            users.extend(p.users);
            for m in p.missing {
                if !out.missing.contains(&m) {
                    out.missing.push(m);
                }
            }
            out.error = out.error.or(p.error);
        }
        out.users = users.into_iter().collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combining_sums_clients_and_keeps_users_distinct() {
        let a = Presence {
            count: 2,
            clients: vec![1, 2],
            users: vec!["u1".into(), "u2".into()],
            ..Default::default()
        };
        let b = Presence {
            count: 1,
            clients: vec![7],
            users: vec!["u1".into()],
            missing: vec!["n3".into()],
            ..Default::default()
        };
        let mut all = Presence::combine([a, b]);
        all.users.sort();
        assert_eq!(all.count, 3);
        assert_eq!(all.clients, vec![1, 2, 7]);
        assert_eq!(all.users, vec![Arc::from("u1"), Arc::from("u2")]);
        assert_eq!(all.missing, vec!["n3".to_string()]);
    }
}

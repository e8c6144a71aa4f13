//! Client ids: the node number in the high 32 bits, a sequence in the low.
//! Written as a decimal string to users, so a client id names its node.
//!
//! A leaf module: it imports nothing of the crate.

/// A client id (see the module documentation).
pub type ClientId = u64;

/// The node number encoded in a client id.
pub fn node_of(id: ClientId) -> u32 {
    (id >> 32) as u32
}

/// The id of client number `seq` of node `node` (the low 32 bits of `seq`).
pub fn make(node: u32, seq: u64) -> ClientId {
    ((node as u64) << 32) | (seq & 0xffff_ffff)
}

/// Parses the decimal string form (also accepts a JSON number's text).
pub fn parse_client_id(s: &str) -> Option<ClientId> {
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_node() {
        assert_eq!(node_of(make(7, 3)), 7);
        assert_eq!(parse_client_id(" 30064771075 "), Some(make(7, 3)));
    }
}

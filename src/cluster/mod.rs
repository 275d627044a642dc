//! Several hosts as one cache (DESIGN.md "Cluster"): the ketama ring that
//! places keys on nodes, each key's preference list and the node acting
//! for it; the frames key operations are forwarded in (wire.rs; the links
//! that carry them are the server's, server/node_links.rs). Still to come
//! here: membership (SWIM, who is alive). Per-key copies travel on the
//! replication machinery (replication/primary.rs filters each record by
//! `replicates_to`).

pub mod ring;
pub mod wire;

use crate::config::ClusterConfig;
use ring::{Ring, point_of};

/// The node list as this node holds it, and the ring built from it.
pub struct Cluster {
    pub config: ClusterConfig,
    pub ring: Ring,
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Cluster {
        let ring = Ring::new(&config.nodes);
        Cluster { config, ring }
    }

    /// A key's preference list: its owner, then the next distinct nodes
    /// clockwise, `--copies` in all.
    pub fn preference_list(&self, key: &[u8]) -> impl Iterator<Item = usize> + '_ {
        self.ring.clockwise(point_of(key)).take(self.config.copies)
    }

    /// The node acting for a key: takes its writes and answers its reads.
    /// Until failure detection, that is its owner on the ring.
    pub fn acting_for(&self, key: &[u8]) -> usize {
        self.ring.owner(point_of(key))
    }

    /// Whether this node sends its record of `key` to `node`: it acts for
    /// the key and `node` holds a copy (only the acting node sends on).
    pub fn replicates_to(&self, key: &[u8], node: usize) -> bool {
        let mut list = self.preference_list(key);
        list.next() == Some(self.config.me) && list.any(|other| other == node)
    }

    pub fn is_me(&self, node: usize) -> bool {
        node == self.config.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_node_list;

    #[test]
    fn preference_lists_hold_copies_distinct_nodes_owner_first() {
        let cluster = Cluster::new(ClusterConfig {
            nodes: parse_node_list("127.0.0.2:11211,127.0.0.3:11211,127.0.0.4:11211").unwrap(),
            me: 0,
            copies: 2,
            cluster_port_offset: 10000,
        });
        for i in 0..1000 {
            let key = format!("key:{i}");
            let list: Vec<usize> = cluster.preference_list(key.as_bytes()).collect();
            assert_eq!(list.len(), 2);
            assert_ne!(list[0], list[1]);
            assert_eq!(list[0], cluster.ring.owner(point_of(key.as_bytes())));
        }
    }
}

//! Several hosts as one cache (DESIGN.md "Cluster"): the ketama ring that
//! places keys on nodes, each key's preference list and the node acting
//! for it; who is alive (membership.rs, kept by SWIM in swim.rs); the
//! frames key operations are forwarded in (wire.rs; the links that carry
//! them are the server's, server/node_links.rs). Per-key copies travel on
//! the replication machinery (replication/primary.rs filters each record
//! by `replicates_to`).

pub mod membership;
pub mod ring;
pub mod swim;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};

use membership::{Membership, PartitionPolicy, View};
use ring::{NodeAddress, Ring, point_of};

/// Cluster mode: the node list and where this node is in it.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: Vec<NodeAddress>,
    /// This node's index in `nodes`.
    pub me: usize,
    pub copies: usize,
    /// Every node's cluster port is its client port plus this.
    pub cluster_port_offset: i32,
    pub partition_policy: PartitionPolicy,
    pub swim: swim::Timing,
}

impl ClusterConfig {
    pub fn cluster_port_of(&self, node: usize) -> u16 {
        (i32::from(self.nodes[node].port) + self.cluster_port_offset) as u16
    }
}

/// Where a request for a key runs (`Cluster::place`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Here,
    Node(usize),
    /// A write no node may take now (`Refusal::Handover`).
    Handover,
}

/// The node list as this node holds it, the ring built from it, and who
/// of it is alive.
pub struct Cluster {
    pub config: ClusterConfig,
    pub ring: Ring,
    pub membership: Membership,
    /// Key operations sent to other nodes, and received from them (counted
    /// per batch).
    pub forwarded_out: AtomicU64,
    pub forwarded_in: AtomicU64,
    /// Quorum reads answered here, and those that repaired a copy.
    pub quorum_reads: AtomicU64,
    pub quorum_repairs: AtomicU64,
    /// Per node, per shard of this node: the offset of this node's log that
    /// node has applied (its copies), as its acks say. `wait` reads it.
    acked: Vec<Box<[AtomicU64]>>,
}

impl Cluster {
    /// The cluster as this node, with `shards` worker shards, holds it.
    pub fn new(config: ClusterConfig, shards: usize) -> Cluster {
        let ring = Ring::new(&config.nodes);
        let membership = Membership::new(config.me, config.nodes.len(), config.partition_policy);
        let acked = (0..config.nodes.len())
            .map(|_| (0..shards).map(|_| AtomicU64::new(0)).collect())
            .collect();
        Cluster {
            config,
            ring,
            membership,
            forwarded_out: AtomicU64::new(0),
            forwarded_in: AtomicU64::new(0),
            quorum_reads: AtomicU64::new(0),
            quorum_repairs: AtomicU64::new(0),
            acked,
        }
    }

    /// `node` has applied this node's log of `shard` up to `offset`.
    pub fn set_acked(&self, node: usize, shard: usize, offset: u64) {
        if let Some(slot) = self.acked.get(node).and_then(|shards| shards.get(shard)) {
            slot.store(offset, Ordering::Release);
        }
    }

    pub fn acked(&self, node: usize, shard: usize) -> u64 {
        self.acked[node][shard].load(Ordering::Acquire)
    }

    /// The share of the key space each node acts for now (down nodes' share
    /// has gone to the next live node of each of their ring segments).
    pub fn shares(&self) -> Vec<f64> {
        let mut shares = vec![0.0; self.config.nodes.len()];
        let mut previous = self.ring.points().last().map_or(0, |&(point, _)| point);
        for &(point, _) in self.ring.points() {
            // The segment after the previous point up to this one (wrapping).
            let length = point.wrapping_sub(previous);
            previous = point;
            shares[self.acting_at(point)] += f64::from(length) / 4_294_967_296.0;
        }
        shares
    }

    /// A key's preference list: the first `--copies` live nodes clockwise
    /// from its point (the owner first while it is alive): the nodes that
    /// hold its copies. A down node is skipped, so the next one takes its
    /// place.
    pub fn preference_list(&self, key: &[u8]) -> impl Iterator<Item = usize> + '_ {
        self.preference_at(point_of(key))
    }

    fn preference_at(&self, point: ring::Point) -> impl Iterator<Item = usize> + '_ {
        self.preference_by(point, |node| self.membership.is_down(node))
    }

    /// The preference list at a point, with `is_down` telling down nodes:
    /// this node's view now, or another's (`View`).
    fn preference_by<'a>(&'a self, point: ring::Point, is_down: impl Fn(usize) -> bool + 'a) -> impl Iterator<Item = usize> + 'a {
        self.ring
            .clockwise(point)
            .filter(move |&node| !is_down(node))
            .take(self.config.copies)
    }

    /// The node acting for a key: the first node clockwise that may act
    /// (live, and not catching up after a return; membership.rs). It takes
    /// the key's writes, answers its reads, and sends its copies on. A node
    /// that sees none acts itself (a minority serving reads).
    pub fn acting_for(&self, key: &[u8]) -> usize {
        self.acting_at(point_of(key))
    }

    fn acting_at(&self, point: ring::Point) -> usize {
        self.acting_by(point, |node| self.membership.may_act(node))
            .unwrap_or(self.config.me)
    }

    /// The node acting at a point with `may_act` telling who may (this
    /// node's view now, or another's); None if none may.
    fn acting_by(&self, point: ring::Point, may_act: impl Fn(usize) -> bool) -> Option<usize> {
        self.ring.clockwise(point).find(|&node| may_act(node))
    }

    /// Where a request for `key` runs, as this node sees it.
    #[inline]
    pub fn place(&self, key: &[u8], mutates: bool) -> Placement {
        match self.acting_by(point_of(key), |node| self.membership.may_act(node)) {
            Some(node) if self.is_me(node) => Placement::Here,
            Some(node) => Placement::Node(node),
            // No node may act: a minority serves what it holds (its policy
            // refuses what it must); in the majority a write waits for the
            // handover to end rather than land where nobody acts, and a
            // read is answered from what this node holds (a node just
            // restarted empty answers misses until it hears the others).
            None if mutates && self.membership.has_majority() => Placement::Handover,
            None => Placement::Here,
        }
    }

    /// Whether this node sends its record of `key` to `node`: it acts for
    /// the key and `node` holds a copy (only the acting node sends on).
    pub fn replicates_to(&self, key: &[u8], node: usize) -> bool {
        self.resyncs_to(key, node, false)
    }

    /// `replicates_to`, and while handing `node` over (membership.rs) its
    /// own keys too: the copies this node took while acting in its place.
    pub fn resyncs_to(&self, key: &[u8], node: usize, handing_over: bool) -> bool {
        // One MD5 per record and follower, on the replication core.
        let point = point_of(key);
        let me = self.config.me;
        node != me
            && self
                .acting_by(point, |node| self.membership.may_act(node))
                .is_some_and(|acting| acting == me || handing_over && acting == node)
            && self.preference_at(point).any(|other| other == node)
    }

    /// Whether `source`, seeing the cluster as `view`, sends this node its
    /// copy of `key` (what `replicates_to` says on `source`), so that a
    /// full resync from it replaces the key here. Never a key this node
    /// acts for now (or, seeing no node that may, could): the view may be
    /// older than the say that made it act, and its own writes are newest.
    pub fn replicated_from(&self, view: &View, source: usize, key: &[u8]) -> bool {
        // One MD5 per key dropped, on the worker applying the resync.
        let point = point_of(key);
        let me = self.config.me;
        source != me
            && self.acting_by(point, |node| view.may_act(node)).unwrap_or(source) == source
            && self.preference_by(point, |node| view.is_down(node)).any(|other| other == me)
            && self.acting_at(point) != me
    }

    /// Whether `node` holds a copy of `key` (is in its preference list),
    /// whoever acts for it: what a merge resync sends a node that may not
    /// act (membership.rs).
    pub fn holds_copy(&self, key: &[u8], node: usize) -> bool {
        self.preference_list(key).any(|other| other == node)
    }

    pub fn is_me(&self, node: usize) -> bool {
        node == self.config.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_nodes() -> Vec<NodeAddress> {
        ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .into_iter()
            .map(|host| NodeAddress {
                host: host.to_string(),
                port: 11211,
                weight: 1,
            })
            .collect()
    }

    #[test]
    fn preference_lists_hold_copies_distinct_nodes_owner_first() {
        let cluster = Cluster::new(
            ClusterConfig {
                nodes: three_nodes(),
                me: 0,
                copies: 2,
                cluster_port_offset: 10000,
                partition_policy: PartitionPolicy::ReadOnly,
                swim: swim::Timing::default(),
            },
            1,
        );
        for i in 0..1000 {
            let key = format!("key:{i}");
            let list: Vec<usize> = cluster.preference_list(key.as_bytes()).collect();
            assert_eq!(list.len(), 2);
            assert_ne!(list[0], list[1]);
            assert_eq!(list[0], cluster.ring.owner(point_of(key.as_bytes())));
        }
    }

    #[test]
    fn a_down_node_is_skipped_and_the_next_acts_for_its_keys() {
        let cluster = Cluster::new(
            ClusterConfig {
                nodes: three_nodes(),
                me: 1,
                copies: 2,
                cluster_port_offset: 10000,
                partition_policy: PartitionPolicy::ReadOnly,
                swim: swim::Timing::default(),
            },
            1,
        );
        cluster.membership.refreshed();
        for node in [0, 2] {
            cluster.membership.set_said(node, false, true);
        }
        let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
        let before: Vec<Vec<usize>> = keys.iter().map(|k| cluster.preference_list(k.as_bytes()).collect()).collect();
        cluster.membership.set(0, membership::NodeState::Down);
        for (key, before) in keys.iter().zip(&before) {
            let after: Vec<usize> = cluster.preference_list(key.as_bytes()).collect();
            // The survivors keep their order; the down node's place goes to the next.
            let survivors: Vec<usize> = before.iter().copied().filter(|&n| n != 0).collect();
            assert_eq!(after[..survivors.len()], survivors[..], "{key}");
            assert_eq!(after.len(), 2);
            assert!(!after.contains(&0));
            assert_eq!(cluster.acting_for(key.as_bytes()), after[0]);
            assert_eq!(cluster.replicates_to(key.as_bytes(), after[1]), after[0] == 1);
            assert!(after.iter().all(|&node| cluster.holds_copy(key.as_bytes(), node)));
        }
        // A node that says it is stale acts for nothing; the next one acts.
        cluster.membership.set_said(2, true, false);
        for key in &keys {
            let list: Vec<usize> = cluster.preference_list(key.as_bytes()).collect();
            assert_eq!(cluster.acting_for(key.as_bytes()), 1, "{key}: {list:?}");
            assert!(cluster.holds_copy(key.as_bytes(), 2) == list.contains(&2));
        }
    }
}

//! Several hosts as one cache (DESIGN.md "Cluster"): the node list
//! (node_list.rs; it changes, and spreads by gossip, replication/gossip.rs),
//! the ketama ring of its members that places keys on nodes, each key's
//! preference list and the node acting for it; who is alive
//! (membership.rs, kept by SWIM in swim.rs); the frames key operations are
//! forwarded in (wire.rs; the links that carry them are the server's,
//! server/node_links.rs). Per-key copies travel on the replication
//! machinery (replication/primary.rs filters each record by
//! `replicates_to`).
//!
//! A list change moves the keys whose acting node changes, by handoff:
//! `apply_list` works out (giver, receiver) pairs from the rings before and
//! after; until a pair's handoff ends (membership.rs), the giver acts for
//! those keys, placed by the ring from before the change (givers.rs).

pub mod givers;
pub mod membership;
pub mod node_list;
/// The ketama ring lives in the client crate: one ring for the server and
/// its clients.
pub use corecache_client::ring;
pub mod swim;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use givers::Givers;
use membership::{Membership, PartitionPolicy, View};
use node_list::NodeList;
use ring::{MAX_NODES, NodeAddress, Point, Ring, point_of};

/// Cluster mode as the node starts: the node list it was given, and where
/// this node is in it.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: Vec<NodeAddress>,
    /// This node's index in `nodes`.
    pub me: usize,
    /// This node starts outside the list (`--cluster-join`): its entry is
    /// not a member until a `cluster add` names it.
    pub joining: bool,
    pub copies: usize,
    /// Every node's cluster port is its client port plus this.
    pub cluster_port_offset: i32,
    pub partition_policy: PartitionPolicy,
    pub swim: swim::Timing,
    /// How long a membership change waits before the full resyncs it calls
    /// for start (replication/primary.rs): the changes of that time share them.
    pub resync_delay: std::time::Duration,
}

impl ClusterConfig {
    /// A start-up node's cluster port (by its index in `nodes`).
    pub fn cluster_port_of(&self, node: usize) -> u16 {
        (i32::from(self.nodes[node].port) + self.cluster_port_offset) as u16
    }

    /// The node list this node starts with.
    pub fn initial_list(&self) -> NodeList {
        let mut list = NodeList::initial(&self.nodes);
        if self.joining {
            list.leave_out(self.me);
        }
        list
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

/// The node list as this node holds it now, and the ring of its members.
/// Replaced whole when the list changes (`Cluster::apply_list`).
pub struct Layout {
    pub list: NodeList,
    pub ring: Ring,
    /// The ring before the last change (per segment: givers.rs), and that
    /// change's handoffs (giver, receiver): while one goes on, the giver
    /// acts for the keys it gives (membership.rs).
    previous: Option<Givers>,
    handoffs: Vec<(usize, usize)>,
}

impl Layout {
    fn new(list: NodeList) -> Layout {
        let ring = Ring::of_slots(list.members());
        Layout {
            list,
            ring,
            previous: None,
            handoffs: Vec::new(),
        }
    }
}

/// The node list as this node holds it, the ring built from it, and who
/// of it is alive. Nodes are named by slot (node_list.rs).
pub struct Cluster {
    pub config: ClusterConfig,
    layout: ArcSwap<Layout>,
    pub membership: Membership,
    /// Key operations sent to other nodes, and received from them (counted
    /// per batch).
    pub forwarded_out: AtomicU64,
    pub forwarded_in: AtomicU64,
    /// Quorum reads answered here, and those that repaired a copy.
    pub quorum_reads: AtomicU64,
    pub quorum_repairs: AtomicU64,
    /// Node list changes taken in (made here or heard of).
    pub list_changes: AtomicU64,
    /// Per slot, per shard of this node: the offset of this node's log
    /// that node has applied (its copies), as its acks say. `wait` reads it.
    acked: Vec<Box<[AtomicU64]>>,
}

impl Cluster {
    /// The cluster as this node, with `shards` worker shards, holds it.
    pub fn new(config: ClusterConfig, shards: usize) -> Cluster {
        let list = config.initial_list();
        let membership = Membership::new(config.me, config.partition_policy);
        membership.set_members(&list);
        let acked = (0..MAX_NODES)
            .map(|_| (0..shards).map(|_| AtomicU64::new(0)).collect())
            .collect();
        Cluster {
            config,
            layout: ArcSwap::from_pointee(Layout::new(list)),
            membership,
            forwarded_out: AtomicU64::new(0),
            forwarded_in: AtomicU64::new(0),
            quorum_reads: AtomicU64::new(0),
            quorum_repairs: AtomicU64::new(0),
            list_changes: AtomicU64::new(0),
            acked,
        }
    }

    /// The node list and ring now.
    pub fn layout(&self) -> Arc<Layout> {
        self.layout.load_full()
    }

    /// Slots in the node list (members or not).
    pub fn slots(&self) -> usize {
        self.layout.load().list.len()
    }

    pub fn me(&self) -> usize {
        self.config.me
    }

    /// This node's name on the wire: its client address.
    pub fn my_name(&self) -> String {
        self.config.nodes[self.config.me].to_string()
    }

    pub fn node(&self, slot: usize) -> NodeAddress {
        self.layout.load().list.node(slot).clone()
    }

    pub fn cluster_port_of(&self, slot: usize) -> u16 {
        (i32::from(self.node(slot).port) + self.config.cluster_port_offset) as u16
    }

    /// Takes in a new node list (on the replication core, which alone
    /// changes membership). The nodes that start acting for keys another
    /// node acted for wait for that node to hand them over (membership.rs).
    /// Returns whether anything changed.
    pub fn apply_list(&self, list: NodeList) -> bool {
        let old = self.layout.load_full();
        if old.list == list {
            return false;
        }
        let mut new = Layout::new(list);
        let joining: Vec<usize> = (0..new.list.len())
            .filter(|&node| new.list.is_member(node) && !old.list.is_member(node))
            .collect();
        // Every ring's segment boundaries, those placing an earlier change's
        // handoffs included: each segment has one owner in each ring.
        let mut probes: Vec<Point> = old
            .ring
            .points()
            .iter()
            .chain(new.ring.points())
            .map(|&(point, _)| point)
            .chain(old.previous.iter().flat_map(Givers::boundaries))
            .collect();
        probes.sort_unstable();
        probes.dedup();
        let handoffs = self.handoffs(&old, &new.ring, &probes, &joining);
        // Handoffs of an earlier change still going on stay, their givers
        // placed by the ring from before it (a change soon after another,
        // as when two are made at once and heard of one by one); where one
        // has ended, the receiver holds the keys and gives them on.
        let earlier: Vec<(usize, usize)> = match (&old.previous, self.membership.handoffs()) {
            (Some(_), true) => old
                .handoffs
                .iter()
                .copied()
                .filter(|&(giver, receiver)| self.membership.handing_off(giver, receiver, true))
                .filter(|pair| !handoffs.contains(pair))
                .collect(),
            _ => Vec::new(),
        };
        new.previous = Some(match &old.previous {
            Some(givers) => givers.for_change(&old.ring, &probes, |point| self.holder_in(&old, point).1),
            None => Givers::of(old.ring.clone()),
        });
        self.membership.list_changed(&new.list, &handoffs);
        new.handoffs = handoffs.iter().copied().chain(earlier).collect();
        tracing::info!(
            "node list epoch {} ({:016x}): {} (handoffs {handoffs:?})",
            new.list.epoch(),
            new.list.digest(),
            new.list
        );
        self.layout.store(Arc::new(new));
        self.membership.settle_list();
        self.list_changes.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The (giver, receiver) pairs of a ring change: per ring segment, the
    /// node holding its keys now and the one that will act on the new ring
    /// (a node joining, or still receiving keys, counts as one that may: it
    /// takes its keys by handoff).
    fn handoffs(&self, old: &Layout, new: &Ring, probes: &[Point], joining: &[usize]) -> Vec<(usize, usize)> {
        // A node still receiving an earlier change's keys will act too.
        let receiving = |node: usize| joining.contains(&node) || old.handoffs.iter().any(|&(_, to)| to == node);
        let will_act = |node: usize| self.membership.may_act(node) || receiving(node) && !self.membership.is_down(node);
        let mut pairs = Vec::new();
        for &point in probes {
            // The segment ending at `point` has one owner in each ring.
            if let (Some(giver), Some(receiver)) = (self.holder_in(old, point).0, acting_on(new, point, will_act))
                && giver != receiver
                && !pairs.contains(&(giver, receiver))
            {
                pairs.push((giver, receiver));
            }
        }
        pairs
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

    /// The share of the key space each slot's node acts for now (down
    /// nodes' share has gone to the next live node of each of their ring
    /// segments).
    pub fn shares(&self) -> Vec<f64> {
        let layout = self.layout.load();
        let mut shares = vec![0.0; layout.list.len()];
        let mut previous = layout.ring.points().last().map_or(0, |&(point, _)| point);
        for &(point, _) in layout.ring.points() {
            // The segment after the previous point up to this one (wrapping).
            let length = point.wrapping_sub(previous);
            previous = point;
            if let Some(share) = shares.get_mut(self.acting_in(&layout, point).unwrap_or(self.config.me)) {
                *share += f64::from(length) / 4_294_967_296.0;
            }
        }
        shares
    }

    /// A key's preference list: the first `--copies` live nodes clockwise
    /// from its point (the owner first while it is alive): the nodes that
    /// hold its copies. A down node is skipped, so the next one takes its
    /// place.
    pub fn preference_list(&self, key: &[u8]) -> Vec<usize> {
        let layout = self.layout.load();
        self.preference_in(&layout.ring, point_of(key), |node| self.membership.is_down(node))
            .collect()
    }

    /// The preference list at a point of `ring`, with `is_down` telling
    /// down nodes: this node's view now, or another's (`View`).
    fn preference_in<'a>(
        &self,
        ring: &'a Ring,
        point: Point,
        is_down: impl Fn(usize) -> bool + 'a,
    ) -> impl Iterator<Item = usize> + 'a {
        ring.clockwise(point)
            .filter(move |&node| !is_down(node))
            .take(self.config.copies)
    }

    /// The node acting for a key: the first node clockwise that may act
    /// (live, and not catching up after a return; membership.rs). It takes
    /// the key's writes, answers its reads, and sends its copies on. A node
    /// that sees none acts itself (a minority serving reads).
    pub fn acting_for(&self, key: &[u8]) -> usize {
        self.acting_in(&self.layout.load(), point_of(key)).unwrap_or(self.config.me)
    }

    /// The node acting at a point, None if no node may: the first that may
    /// on the ring, unless a handoff of that point's keys to their
    /// receiver has not ended: then the giver, the node acting there
    /// before the change.
    #[inline]
    fn acting_in(&self, layout: &Layout, point: Point) -> Option<usize> {
        let membership = &self.membership;
        let acting = acting_on(&layout.ring, point, |node| membership.may_act(node));
        let (Some(previous), true) = (&layout.previous, membership.handoffs()) else {
            return acting;
        };
        let listed = |giver: usize, receiver: usize| layout.handoffs.contains(&(giver, receiver));
        match (self.giver_in(layout, previous, point), self.receiver_in(layout, point)) {
            (Some(giver), Some(receiver))
                if giver != receiver && membership.handing_off(giver, receiver, listed(giver, receiver)) =>
            {
                Some(giver)
            }
            _ => acting,
        }
    }

    /// The node taking the keys at a point by the last change's handoffs:
    /// the first on the ring that may act or receives keys (a node that
    /// joins, or returns, receives them before it may act).
    fn receiver_in(&self, layout: &Layout, point: Point) -> Option<usize> {
        let membership = &self.membership;
        let receiving = |node: usize| layout.handoffs.iter().any(|&(_, to)| to == node) && !membership.is_down(node);
        acting_on(&layout.ring, point, |node| membership.may_act(node) || receiving(node))
    }

    /// The node acting at a point by the ring from before the last change.
    fn giver_in(&self, layout: &Layout, previous: &Givers, point: Point) -> Option<usize> {
        let membership = &self.membership;
        let handing = |giver: usize| {
            layout
                .handoffs
                .iter()
                .any(|&(from, to)| from == giver && membership.handing_off(from, to, true))
        };
        // A giver that left the list may not act, but acts for what it gives.
        acting_on(previous.ring_at(point), point, |node| {
            membership.may_act(node) || handing(node)
        })
    }

    /// Who holds the keys at a point, for a new list change to move them
    /// on from (the giver of its handoff there): the giver of the last
    /// change's handoff there unless this node knows that handoff ended
    /// (one not begun yet, as for a change heard just before this one, has
    /// not), else the node acting there. The bool says it is that giver.
    fn holder_in(&self, layout: &Layout, point: Point) -> (Option<usize>, bool) {
        if let Some(previous) = &layout.previous
            && let (Some(giver), Some(receiver)) = (self.giver_in(layout, previous, point), self.receiver_in(layout, point))
            && giver != receiver
            && !self.membership.handoff_ended(giver, receiver)
        {
            return (Some(giver), true);
        }
        (self.acting_in(layout, point), false)
    }

    /// Whether a handoff to this node of the key's keys has not ended: it
    /// will act for the key once it has (the giver acts meanwhile).
    pub fn taking_over(&self, key: &[u8]) -> bool {
        if !self.membership.handoffs() {
            return false;
        }
        let layout = self.layout.load();
        let point = point_of(key);
        let me = self.config.me;
        self.receiver_in(&layout, point) == Some(me) && self.acting_in(&layout, point) != Some(me)
    }

    /// Where a request for `key` runs, as this node sees it.
    #[inline]
    pub fn place(&self, key: &[u8], mutates: bool) -> Placement {
        let layout = self.layout.load();
        match self.acting_in(&layout, point_of(key)) {
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
        let layout = self.layout.load();
        node != me
            && self
                .acting_in(&layout, point)
                .is_some_and(|acting| acting == me || handing_over && acting == node)
            && self
                .preference_in(&layout.ring, point, |node| self.membership.is_down(node))
                .any(|other| other == node)
    }

    /// Whether `source`, seeing the cluster as `view`, acts for `key` (so
    /// that a full resync from it replaces the key here: it sends what
    /// this node should hold of it, and nothing if this node should hold
    /// none). Never a key this node acts for now (or, seeing no node that
    /// may, could): the view may be older than the say that made it act,
    /// and its own writes are newest. Nor one being handed off, unless to
    /// the source and the source's view says it takes nothing any more
    /// (its handoffs ended: this node may not have heard yet, and no later
    /// resync from it would sweep the key).
    pub fn replicated_from(&self, view: &View, source: usize, key: &[u8]) -> bool {
        // One MD5 per key dropped, on the worker applying the resync.
        let point = point_of(key);
        let layout = self.layout.load();
        let me = self.config.me;
        let acting = acting_on(&layout.ring, point, |node| self.membership.may_act(node));
        let acting_now = self.acting_in(&layout, point);
        let handed_to_source = acting == Some(source) && !view.is_taking(source) && acting_now != Some(me);
        source != me
            && acting_on(&layout.ring, point, |node| view.may_act(node)).unwrap_or(source) == source
            && acting.is_some_and(|acting| acting != me)
            && (acting_now == acting || handed_to_source)
    }

    /// Whether `node` holds a copy of `key` (is in its preference list),
    /// whoever acts for it: what a merge resync sends a node that may not
    /// act (membership.rs).
    pub fn holds_copy(&self, key: &[u8], node: usize) -> bool {
        let layout = self.layout.load();
        self.preference_in(&layout.ring, point_of(key), |node| self.membership.is_down(node))
            .any(|other| other == node)
    }

    pub fn is_me(&self, node: usize) -> bool {
        node == self.config.me
    }
}

/// The node acting at a point of `ring`, with `may_act` telling who may
/// (this node's view now, or another's); None if none may.
fn acting_on(ring: &Ring, point: Point, may_act: impl Fn(usize) -> bool) -> Option<usize> {
    ring.clockwise(point).find(|&node| may_act(node))
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

    /// Three nodes, as node `me`, copies 2, one shard.
    fn cluster_as(me: usize) -> Cluster {
        Cluster::new(
            ClusterConfig {
                nodes: three_nodes(),
                me,
                joining: false,
                copies: 2,
                cluster_port_offset: 10000,
                partition_policy: PartitionPolicy::ReadOnly,
                swim: swim::Timing::default(),
                resync_delay: std::time::Duration::ZERO,
            },
            1,
        )
    }

    /// Node 0 of three, acting, the other two alive and fresh.
    fn acting_as_0() -> Cluster {
        let cluster = cluster_as(0);
        cluster.membership.refreshed();
        for node in [1, 2] {
            cluster.membership.set(node, membership::NodeState::Alive);
            membership::tests::say(&cluster.membership, node, false, true);
        }
        cluster
    }

    #[test]
    fn preference_lists_hold_copies_distinct_nodes_owner_first() {
        let cluster = cluster_as(0);
        for i in 0..1000 {
            let key = format!("key:{i}");
            let list: Vec<usize> = cluster.preference_list(key.as_bytes());
            assert_eq!(list.len(), 2);
            assert_ne!(list[0], list[1]);
            assert_eq!(list[0], cluster.layout().ring.owner(point_of(key.as_bytes())));
        }
    }

    #[test]
    fn a_down_node_is_skipped_and_the_next_acts_for_its_keys() {
        let cluster = cluster_as(1);
        cluster.membership.refreshed();
        for node in [0, 2] {
            membership::tests::say(&cluster.membership, node, false, true);
        }
        let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
        let before: Vec<Vec<usize>> = keys.iter().map(|k| cluster.preference_list(k.as_bytes())).collect();
        cluster.membership.set(0, membership::NodeState::Down);
        for (key, before) in keys.iter().zip(&before) {
            let after: Vec<usize> = cluster.preference_list(key.as_bytes());
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
        membership::tests::say(&cluster.membership, 2, true, false);
        for key in &keys {
            let list: Vec<usize> = cluster.preference_list(key.as_bytes());
            assert_eq!(cluster.acting_for(key.as_bytes()), 1, "{key}: {list:?}");
            assert!(cluster.holds_copy(key.as_bytes(), 2) == list.contains(&2));
        }
    }

    #[test]
    fn keys_a_joining_node_takes_stay_with_their_giver_until_the_handoff_ends() {
        use membership::{Handoff, NodeState, Said};
        let cluster = acting_as_0();
        assert!(cluster.membership.is_acting());
        let keys: Vec<String> = (0..2000).map(|i| format!("key:{i}")).collect();
        let before: Vec<usize> = keys.iter().map(|key| cluster.acting_for(key.as_bytes())).collect();
        let added = cluster
            .layout()
            .list
            .changed(
                &node_list::Change::Add(NodeAddress {
                    host: "127.0.0.5".into(),
                    port: 11211,
                    weight: 1,
                }),
                "127.0.0.2:11211",
            )
            .unwrap();
        assert!(cluster.apply_list(added.clone()) && !cluster.apply_list(added));
        assert!(
            cluster.membership.is_acting(),
            "a join stops no node acting for the keys it keeps"
        );
        assert_eq!(cluster.membership.handoff(3), Handoff::Handing);
        let unchanged = |cluster: &Cluster| {
            keys.iter()
                .zip(&before)
                .all(|(key, &was)| cluster.acting_for(key.as_bytes()) == was)
        };
        assert!(unchanged(&cluster), "node 3 is not heard from yet");
        // Node 3 is up, fresh and acting, and says it still takes keys.
        cluster.membership.set(3, NodeState::Alive);
        let said = |taking| Said {
            stale: false,
            grants: true,
            handed: true,
            taking,
            acting: true,
        };
        let digest = cluster.membership.list_digest();
        cluster.membership.set_said(3, said(true), digest);
        assert!(unchanged(&cluster), "every giver still acts for what it gives");
        let moving = |giver: usize| -> Vec<&String> {
            keys.iter()
                .zip(&before)
                .filter(|&(key, &was)| was == giver && cluster.layout().ring.owner(point_of(key.as_bytes())) == 3)
                .map(|(key, _)| key)
                .collect()
        };
        let (mine, theirs) = (moving(0), moving(1));
        assert!(!mine.is_empty() && !theirs.is_empty());
        // Cut: what this node gives goes to node 3 (which waits for the end).
        cluster.membership.cut(3);
        assert!(
            mine.iter()
                .all(|key| cluster.place(key.as_bytes(), true) == Placement::Node(3))
        );
        cluster.membership.handed_off(3);
        assert_eq!(cluster.membership.handoff(3), Handoff::None);
        // Node 1's handoff: this node forwards those keys to node 1 while
        // node 3 says it is taking; then to node 3.
        assert!(theirs.iter().all(|key| cluster.acting_for(key.as_bytes()) == 1));
        // A full resync from node 3 replaces node 1's keys here once node
        // 3's view says it takes nothing any more (this node may hear so
        // only later), not before.
        let view_of_3 = |taking: bool| {
            let list = &cluster.layout().list;
            let mut wire = Vec::new();
            for slot in 0..list.len() {
                let name = list.node(slot).to_string();
                wire.push(name.len() as u8);
                wire.extend_from_slice(name.as_bytes());
                // May act; node 3 taking, or not.
                wire.push(if taking && slot == 3 { 1 | 4 } else { 1 });
            }
            View::from_wire(&wire, list).unwrap()
        };
        assert!(
            !theirs
                .iter()
                .any(|key| cluster.replicated_from(&view_of_3(true), 3, key.as_bytes()))
        );
        assert!(
            theirs
                .iter()
                .all(|key| cluster.replicated_from(&view_of_3(false), 3, key.as_bytes()))
        );
        assert!(
            !theirs
                .iter()
                .any(|key| cluster.replicated_from(&view_of_3(false), 1, key.as_bytes()))
        );
        cluster.membership.set_said(3, said(false), digest);
        assert!(theirs.iter().all(|key| cluster.acting_for(key.as_bytes()) == 3));
        // What node 3 says under another list is not taken as said of this one.
        cluster.membership.set_said(3, said(true), digest ^ 1);
        assert!(theirs.iter().all(|key| cluster.acting_for(key.as_bytes()) == 3));
    }

    #[test]
    fn a_change_during_earlier_handoffs_has_the_keys_given_on_by_whoever_holds_them() {
        use membership::{NodeState, Said};
        let cluster = acting_as_0();
        let add = |cluster: &Cluster, host: &str| {
            let list = cluster.layout().list.clone();
            let change = node_list::Change::Add(NodeAddress {
                host: host.into(),
                port: 11211,
                weight: 1,
            });
            assert!(cluster.apply_list(list.changed(&change, "127.0.0.2:11211").unwrap()));
        };
        let taking = |cluster: &Cluster, node: usize, taking: bool| {
            let said = Said {
                stale: false,
                grants: true,
                handed: true,
                taking,
                acting: true,
            };
            cluster.membership.set(node, NodeState::Alive);
            cluster.membership.set_said(node, said, cluster.membership.list_digest());
        };
        let keys: Vec<String> = (0..4000).map(|i| format!("key:{i}")).collect();
        let owners = |cluster: &Cluster| -> Vec<usize> {
            keys.iter()
                .map(|key| cluster.layout().ring.owner(point_of(key.as_bytes())))
                .collect()
        };
        let first = owners(&cluster);
        // Node 3 joins: this node hands its keys over (ended), node 1's go on.
        add(&cluster, "127.0.0.5");
        taking(&cluster, 3, true);
        cluster.membership.cut(3);
        cluster.membership.handed_off(3);
        let second = owners(&cluster);
        // Node 4 joins before node 1's handoff to node 3 ended, and takes keys.
        add(&cluster, "127.0.0.6");
        taking(&cluster, 3, true);
        taking(&cluster, 4, true);
        let third = owners(&cluster);
        let path = |path: [usize; 3]| -> Vec<&String> {
            keys.iter()
                .enumerate()
                .filter(|&(i, _)| [first[i], second[i], third[i]] == path)
                .map(|(_, key)| key)
                .collect()
        };
        let acting_in = |cluster: &Cluster, keys: &[&String]| -> Vec<usize> {
            let mut acting: Vec<usize> = keys.iter().map(|key| cluster.acting_for(key.as_bytes())).collect();
            acting.sort_unstable();
            acting.dedup();
            acting
        };
        let acting = |keys: &[&String]| acting_in(&cluster, keys);
        // Handed from this node to node 3, now moving on to node 4: node 3
        // holds them and gives them on; this node does not act for them.
        let (given_on, still_giving) = (path([0, 3, 4]), path([1, 3, 4]));
        assert!(!given_on.is_empty() && !still_giving.is_empty() && !path([1, 3, 3]).is_empty());
        assert_eq!(acting(&given_on), vec![3]);
        // Node 1's handoff to node 3 had not ended: node 1 still gives them.
        assert_eq!(acting(&still_giving), vec![1]);
        assert_eq!(acting(&path([1, 3, 3])), vec![1]);
        assert!(cluster.layout().handoffs.contains(&(3, 4)) && cluster.layout().handoffs.contains(&(1, 4)));
        // Once node 4 takes nothing any more, it acts for all of them.
        taking(&cluster, 4, false);
        assert_eq!(acting(&given_on), vec![4]);
        assert_eq!(acting(&still_giving), vec![4]);
        assert_eq!(acting(&path([1, 3, 3])), vec![1], "node 3 still takes from node 1");

        // Two changes heard one right after the other: node 3 has not said
        // it takes keys yet, so its handoffs have not begun, not ended: the
        // keys move on from the nodes that hold them (as on a node that
        // heard of both changes at once).
        let cluster = acting_as_0();
        add(&cluster, "127.0.0.5");
        add(&cluster, "127.0.0.6");
        taking(&cluster, 3, true);
        taking(&cluster, 4, true);
        let handoffs = &cluster.layout().handoffs;
        assert!(
            handoffs.contains(&(1, 4)) && handoffs.contains(&(0, 4)) && !handoffs.contains(&(3, 4)),
            "{handoffs:?}"
        );
        assert_eq!(acting_in(&cluster, &path([1, 3, 4])), vec![1]);
        assert_eq!(acting_in(&cluster, &path([0, 3, 4])), vec![0]);
        // A receiver still taking fresh copies (stale: it may not act yet)
        // is still the one its givers hand to: they act, not the next node.
        let stale = Said {
            stale: true,
            grants: true,
            handed: true,
            taking: true,
            acting: false,
        };
        cluster.membership.set_said(3, stale, cluster.membership.list_digest());
        taking(&cluster, 4, false);
        assert!(!cluster.membership.may_act(3));
        assert_eq!(acting_in(&cluster, &path([1, 3, 3])), vec![1]);
        assert_eq!(acting_in(&cluster, &path([2, 3, 3])), vec![2]);
    }

    #[test]
    fn a_node_taken_off_the_list_stays_granted_and_hands_off_its_keys() {
        use membership::{Handoff, NodeState};
        for me in [0, 1] {
            let cluster = cluster_as(me);
            cluster.membership.refreshed();
            for node in (0..3).filter(|&node| node != me) {
                cluster.membership.set(node, NodeState::Alive);
                membership::tests::say(&cluster.membership, node, false, true);
                cluster.membership.handed_over(node);
            }
            assert!(cluster.membership.is_acting() && cluster.membership.grants(1 - me));
            let removed = cluster
                .layout()
                .list
                .changed(
                    &node_list::Change::Remove {
                        host: "127.0.0.3".into(),
                        port: 11211,
                    },
                    "127.0.0.4:11211",
                )
                .unwrap();
            assert!(cluster.apply_list(removed));
            if me == 0 {
                // It learnt of the change before node 1 did: node 1 must not
                // stop acting for its keys before it has heard of it.
                assert!(cluster.membership.grants(1), "a grant is not withdrawn by a list change");
                assert!(cluster.membership.is_acting());
            } else {
                // Node 1 itself: it acts for nothing of its own, but goes on
                // acting for every key it gives until it has handed them off.
                assert!(!cluster.membership.is_acting());
                assert_eq!(cluster.membership.handoff(0), Handoff::Handing);
                assert_eq!(cluster.membership.handoff(2), Handoff::Handing);
                let keys: Vec<String> = (0..500).map(|i| format!("key:{i}")).collect();
                let given: Vec<&String> = keys
                    .iter()
                    .filter(|key| cluster.layout().ring.owner(point_of(key.as_bytes())) != 1)
                    .filter(|key| {
                        let before = Ring::new(&three_nodes());
                        before.owner(point_of(key.as_bytes())) == 1
                    })
                    .collect();
                assert!(!given.is_empty());
                assert!(given.iter().all(|key| cluster.place(key.as_bytes(), true) == Placement::Here));
            }
        }
    }
}

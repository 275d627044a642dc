//! Who is alive, as this node sees it. The failure detector (swim.rs, run
//! by the replication core) writes each node's state here; every worker
//! reads it on each request to skip down nodes in preference lists, and
//! asks the partition policy whether a request may run. One relaxed
//! atomic load per node consulted: no lock on the request path.
//!
//! Coming back from down: a node that returns while this node kept the
//! majority is `returning` here: this node goes on acting for its keys
//! (and sends it their copies) until it has had a full resync from here.
//! A node that lost the majority is `stale` to itself: once the majority
//! is back it acts for nothing until it has had a merge from every live
//! node (below), so the majority's writes win. A node starts stale too:
//! it may be back from a crash, empty, while the others hold its keys.
//!
//! Views differ for a while after every change (a heal can even make the
//! failure detector declare healthy nodes down), so no node trusts its own
//! view alone:
//! - Each node tells the others (over the replication link it follows them
//!   by) whether it is stale, and whether it takes them as acting for their
//!   keys. It acts for no key in their eyes until it says it is fresh.
//! - A node acts for its keys only once every live node that may act in
//!   its place (not stale, not returning here) says it takes it as acting:
//!   one that still acts for them (it saw it down, or returning) says no,
//!   and the node forwards to it. Between the two, writes of those keys
//!   fail for a moment (`Refusal::Handover`) rather than land on two nodes
//!   at once.
//! - A node says so only after handing over: once it takes the other as
//!   acting (and so stopped acting in its place), it sends it every copy
//!   it holds of its keys in a full resync, and says so once that resync
//!   is applied. The writes it took in the other's place until the very
//!   last moment are then there before the other acts (and, acting,
//!   resyncs this node from its own copies).
//! - A stale node is sent, by every live node, every copy that node holds
//!   of its keys (a merge: the larger CAS wins), and refreshes only once
//!   each live node has done so. A merge has no record of deletes: a key
//!   deleted meanwhile can come back.
//! - While a node waits for a grant, the others forward its keys to it and
//!   it refuses them as not acting (`NotActing`); a grant that never comes
//!   is undone only by failure detection (a node seen down says again).
//!   A node failure detection never heard from is not waited for.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use super::node_list::NodeList;
use super::ring::MAX_NODES;
use crate::request::Refusal;

/// A node's state as the failure detector last reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeState {
    /// Not heard from yet: taken as alive (a node is down once SWIM says so).
    Unknown = 0,
    Alive = 1,
    /// Suspected by some node; still acts for its keys until declared down.
    Suspect = 2,
    Down = 3,
}

impl NodeState {
    fn from_u8(value: u8) -> NodeState {
        match value {
            1 => NodeState::Alive,
            2 => NodeState::Suspect,
            3 => NodeState::Down,
            _ => NodeState::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeState::Unknown => "unknown",
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
        }
    }
}

/// What a node that cannot see a majority of the configured nodes does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PartitionPolicy {
    /// Serve reads, refuse writes (the default: a minority never takes
    /// writes the majority will overwrite).
    ReadOnly,
    /// Serve reads and writes (availability first; the minority's writes
    /// may be lost when the partition heals).
    Available,
    /// Refuse reads and writes.
    Unavailable,
}

/// Who may act and who is down, as one node sees it. A full resync's
/// FULL_BEGIN carries the sender's, so that the node receiving it drops
/// exactly the keys the sender is about to send: views differ while they
/// change, and by its own view the receiver would drop keys nobody sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View(Vec<u8>);

impl View {
    const MAY_ACT: u8 = 1;
    const DOWN: u8 = 2;

    /// The view as it travels: per node, its name (`host:port`) and bits,
    /// since each node numbers slots its own way.
    pub fn to_wire(&self, list: &NodeList) -> Vec<u8> {
        let mut out = Vec::new();
        for (slot, &bits) in self.0.iter().enumerate().take(list.len()) {
            let name = list.node(slot).to_string();
            out.push(name.len().min(255) as u8);
            out.extend_from_slice(&name.as_bytes()[..name.len().min(255)]);
            out.push(bits);
        }
        out
    }

    /// A view from the wire, by this node's slots (a node it does not name
    /// is down in it). None if malformed.
    pub fn from_wire(mut bytes: &[u8], list: &NodeList) -> Option<View> {
        let mut view = vec![View::DOWN; list.len()];
        while let [length, rest @ ..] = bytes {
            let length = usize::from(*length);
            let (name, &bits) = (rest.get(..length)?, rest.get(length)?);
            if let Some(slot) = std::str::from_utf8(name).ok().and_then(|name| list.slot_named(name)) {
                view[slot] = bits;
            }
            bytes = &rest[length + 1..];
        }
        Some(View(view))
    }

    pub fn may_act(&self, node: usize) -> bool {
        self.0.get(node).is_some_and(|bits| bits & View::MAY_ACT != 0)
    }

    /// A node the view does not name is down in it.
    pub fn is_down(&self, node: usize) -> bool {
        self.0.get(node).is_none_or(|bits| bits & View::DOWN != 0)
    }
}

/// What another node last said of its own copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reported {
    /// Not said since it started or came back from down.
    Unknown = 0,
    Stale = 1,
    Fresh = 2,
}

pub struct Membership {
    me: usize,
    /// Slots in the node list (every table below has MAX_NODES, so a
    /// list that grows needs no new tables).
    slots: AtomicUsize,
    /// Per slot: on the ring now (node_list.rs).
    members: Vec<AtomicBool>,
    /// Per slot: not a member, but a node that acted for keys this node
    /// acts for now and has not handed them over yet (it left the list).
    leaving: Vec<AtomicBool>,
    /// Per slot: the handover it waits for from here follows a change of
    /// the list, so it is a merge (the node acted for its other keys all
    /// along, and a copy here may be older than its own).
    merge_handover: Vec<AtomicBool>,
    /// The digest of the node list: a grant counts only when said under
    /// the same list (one said before a change would be taken as after).
    list_digest: AtomicU64,
    states: Vec<AtomicU8>,
    /// Per node: `Reported`, as it last said, and whether it said it takes
    /// this node as acting for its keys (it acts for them itself otherwise).
    reported: Vec<AtomicU8>,
    granted: Vec<AtomicBool>,
    /// This node acts for its keys: it is not stale, and every live node
    /// that may act in its place (not stale as it said, not returning
    /// here) says it takes it as acting.
    acting: AtomicBool,
    /// Bumped whenever who may act changes (a node declared down, back,
    /// returned, refreshed, or saying so): copies are re-sent.
    epoch: AtomicU64,
    /// Nodes declared down, counted.
    failovers: AtomicU64,
    majority: AtomicBool,
    policy: PartitionPolicy,
    /// Per node: microseconds the copies this node sends it trail by
    /// (u64::MAX: no link).
    lag_micros: Vec<AtomicU64>,
    /// Per node: back from down, not yet resynced from here; and the epoch
    /// it came back at (a full resync started at or after it counts).
    returning: Vec<AtomicBool>,
    returning_epoch: Vec<AtomicU64>,
    /// Per node: it may act, and a full resync from here started at or
    /// after the epoch it became so (`handoff_epoch`) has been applied.
    handed_over: Vec<AtomicBool>,
    handoff_epoch: Vec<AtomicU64>,
    /// This node started, lost the majority, or missed a node's time down,
    /// and has not yet taken fresh copies since.
    stale: AtomicBool,
    /// Per node: it was down while this node was stale.
    missed: Vec<AtomicBool>,
}

impl Membership {
    pub fn new(me: usize, policy: PartitionPolicy) -> Membership {
        let nodes = MAX_NODES;
        let membership = Membership {
            me,
            slots: AtomicUsize::new(0),
            members: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            leaving: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            merge_handover: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            list_digest: AtomicU64::new(0),
            states: (0..nodes).map(|_| AtomicU8::new(NodeState::Unknown as u8)).collect(),
            reported: (0..nodes).map(|_| AtomicU8::new(Reported::Unknown as u8)).collect(),
            granted: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            acting: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            majority: AtomicBool::new(true),
            policy,
            lag_micros: (0..nodes).map(|_| AtomicU64::new(u64::MAX)).collect(),
            returning: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            returning_epoch: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            handed_over: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            handoff_epoch: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            stale: AtomicBool::new(true),
            missed: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
        };
        membership.set(me, NodeState::Alive);
        membership
    }

    /// The node list a node starts with.
    pub fn set_members(&self, list: &NodeList) {
        self.slots.store(list.len(), Ordering::Release);
        for slot in 0..list.len() {
            self.members[slot].store(list.is_member(slot), Ordering::Relaxed);
        }
        self.list_digest.store(list.digest(), Ordering::Release);
        self.update_majority();
    }

    /// The node list changed (`Cluster::apply_list`): a node that became a
    /// member comes in as one returning (this node acts for its keys until
    /// it has had them); `handoffs` are the (giver, receiver) pairs of the
    /// ring change: a receiver waits for the giver's grant, a giver hands
    /// the receiver over (membership.rs). Every grant is said again, under
    /// the new list. `settle_list` follows, once the new ring is in place.
    pub fn list_changed(&self, list: &NodeList, handoffs: &[(usize, usize)]) {
        let could_act: Vec<bool> = (0..list.len()).map(|node| self.may_act(node)).collect();
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        for slot in 0..list.len() {
            let (was, is) = (self.is_member(slot), list.is_member(slot));
            self.members[slot].store(is, Ordering::Relaxed);
            if is && !was {
                if slot == self.me {
                    // Its copies (if any) are from before it left.
                    self.stale.store(true, Ordering::Relaxed);
                } else if !self.is_stale() {
                    self.returning[slot].store(true, Ordering::Relaxed);
                    self.returning_epoch[slot].store(epoch, Ordering::Relaxed);
                }
            }
        }
        for &(giver, receiver) in handoffs {
            if receiver == self.me && giver != self.me {
                self.granted[giver].store(false, Ordering::Relaxed);
                if !list.is_member(giver) && !self.is_down(giver) {
                    self.leaving[giver].store(true, Ordering::Relaxed);
                }
            }
            if giver == self.me && receiver != self.me {
                self.handed_over[receiver].store(false, Ordering::Relaxed);
                self.handoff_epoch[receiver].store(epoch, Ordering::Relaxed);
                self.merge_handover[receiver].store(true, Ordering::Relaxed);
            }
        }
        for (node, could) in could_act.into_iter().enumerate() {
            if node != self.me && self.may_act(node) != could {
                self.handed_over[node].store(false, Ordering::Relaxed);
                self.handoff_epoch[node].store(epoch, Ordering::Relaxed);
            }
        }
        self.list_digest.store(list.digest(), Ordering::Release);
        self.slots.store(list.len(), Ordering::Release);
    }

    /// After `list_changed`: who acts, and the majority, under the new list.
    pub fn settle_list(&self) {
        self.update_majority();
        self.update_acting();
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(
            "membership: node list changed (epoch {epoch}, member {}, acting {}, stale {})",
            self.is_member(self.me),
            self.is_acting(),
            self.is_stale()
        );
    }

    pub fn is_member(&self, node: usize) -> bool {
        self.members[node].load(Ordering::Relaxed)
    }

    /// Slots in the node list.
    pub fn slots(&self) -> usize {
        self.slots.load(Ordering::Acquire)
    }

    pub fn list_digest(&self) -> u64 {
        self.list_digest.load(Ordering::Acquire)
    }

    /// Whether the handover `node` waits for from here is a merge.
    pub fn merges_handover(&self, node: usize) -> bool {
        self.merge_handover[node].load(Ordering::Relaxed)
    }

    fn update_majority(&self) {
        let members = (0..self.slots()).filter(|&node| self.is_member(node));
        let (count, live) = members.fold((0, 0), |(count, live), node| {
            (count + 1, live + usize::from(!self.is_down(node)))
        });
        let majority = live * 2 > count;
        if !majority {
            self.stale.store(true, Ordering::Relaxed);
            for other in (0..self.slots()).filter(|&other| self.is_down(other)) {
                self.missed[other].store(true, Ordering::Relaxed);
            }
        }
        self.majority.store(majority, Ordering::Relaxed);
    }

    pub fn state(&self, node: usize) -> NodeState {
        NodeState::from_u8(self.states[node].load(Ordering::Relaxed))
    }

    #[inline]
    pub fn is_down(&self, node: usize) -> bool {
        self.states[node].load(Ordering::Relaxed) == NodeState::Down as u8
    }

    /// Records a node's state (this node is never down to itself).
    pub fn set(&self, node: usize, state: NodeState) {
        let state = if node == self.me { NodeState::Alive } else { state };
        let could_act = self.may_act(node);
        let before = NodeState::from_u8(self.states[node].swap(state as u8, Ordering::AcqRel));
        if before == NodeState::Unknown && state != NodeState::Unknown && self.update_acting() {
            // First heard of: now its say is waited for.
            let epoch = self.bump(node, could_act);
            tracing::info!(
                "membership: node {node} first heard of (epoch {epoch}, acting {})",
                self.is_acting()
            );
        }
        if (before == NodeState::Down) != (state == NodeState::Down) {
            if state == NodeState::Down {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                self.returning[node].store(false, Ordering::Relaxed);
                // It may come back stale; until it says, it acts for nothing.
                self.reported[node].store(Reported::Unknown as u8, Ordering::Relaxed);
                self.granted[node].store(false, Ordering::Relaxed);
                self.leaving[node].store(false, Ordering::Relaxed);
                if self.is_stale() {
                    self.missed[node].store(true, Ordering::Relaxed);
                }
            } else if self.missed[node].swap(false, Ordering::AcqRel) {
                // Back, and this node was stale while it was away (it may have
                // refreshed without it): that node may have acted for this
                // node's keys, so take fresh copies again, its included.
                self.stale.store(true, Ordering::Relaxed);
            } else if !self.is_stale() {
                // Back while this side kept the majority: its data is old.
                self.returning[node].store(true, Ordering::Relaxed);
            }
            self.update_majority();
            let majority = self.has_majority();
            self.update_acting();
            let epoch = self.bump(node, could_act);
            if state != NodeState::Down {
                self.returning_epoch[node].store(epoch, Ordering::Relaxed);
            }
            tracing::info!(
                "membership: node {node} {} -> {} (epoch {epoch}, majority {majority}, stale {}, returning {})",
                before.name(),
                state.name(),
                self.is_stale(),
                self.is_returning(node)
            );
        }
    }

    /// Whether a node may act for keys now: this node when `acting`,
    /// another when not down, not returning, and fresh as it said.
    #[inline]
    pub fn may_act(&self, node: usize) -> bool {
        if node == self.me {
            self.acting.load(Ordering::Relaxed)
        } else {
            !self.is_down(node)
                && self.members[node].load(Ordering::Relaxed)
                && !self.returning[node].load(Ordering::Relaxed)
                && self.reported[node].load(Ordering::Relaxed) == Reported::Fresh as u8
        }
    }

    /// What another node last said of its copies.
    pub fn reported(&self, node: usize) -> Reported {
        match self.reported[node].load(Ordering::Relaxed) {
            1 => Reported::Stale,
            2 => Reported::Fresh,
            _ => Reported::Unknown,
        }
    }

    /// Another node says whether it is stale and whether it takes this
    /// node as acting, under the node list of `digest` (a grant under
    /// another list is none). Returns whether that changed who may act (a
    /// new epoch; a node still returning here acts for nothing either way,
    /// and the resync it is having goes on).
    pub fn set_said(&self, node: usize, stale: bool, grants: bool, digest: u64) -> bool {
        if node == self.me {
            return false;
        }
        let grants = grants && digest == self.list_digest();
        let could_act = self.may_act(node);
        self.granted[node].store(grants, Ordering::Relaxed);
        let now = if stale { Reported::Stale } else { Reported::Fresh };
        self.reported[node].store(now as u8, Ordering::Release);
        if !self.update_acting() && self.may_act(node) == could_act {
            return false;
        }
        let epoch = self.bump(node, could_act);
        tracing::info!(
            "membership: node {node} says it is {}{} (epoch {epoch}, acting {})",
            if stale { "stale" } else { "fresh" },
            if grants { " and takes this node as acting" } else { "" },
            self.is_acting()
        );
        true
    }

    /// This node's view now.
    pub fn view(&self) -> View {
        View(
            (0..self.slots())
                .map(|node| (u8::from(self.may_act(node)) * View::MAY_ACT) | (u8::from(self.is_down(node)) * View::DOWN))
                .collect(),
        )
    }

    /// Whether this node acts for its keys (`acting`).
    pub fn is_acting(&self) -> bool {
        self.acting.load(Ordering::Relaxed)
    }

    /// Recomputes `acting`; returns whether it changed. Only the
    /// replication core changes membership, so this is never raced.
    fn update_acting(&self) -> bool {
        let granted = (0..self.slots()).filter(|&node| node != self.me).all(|node| {
            // A returning node was down while this one kept the majority:
            // it acted for nothing meanwhile. One never heard from has not
            // acted either (this node refreshes without it after a grace).
            // A node off the list acts for nothing, unless it is leaving
            // and has yet to hand over what it acted for.
            self.is_down(node)
                || !(self.is_member(node) || self.leaving[node].load(Ordering::Relaxed))
                || self.state(node) == NodeState::Unknown
                || self.is_returning(node)
                || self.reported(node) == Reported::Stale
                || self.granted[node].load(Ordering::Relaxed)
        });
        let acting = !self.is_stale() && self.is_member(self.me) && granted;
        self.acting.swap(acting, Ordering::AcqRel) != acting
    }

    pub fn is_returning(&self, node: usize) -> bool {
        self.returning[node].load(Ordering::Relaxed)
    }

    /// The epoch a returning node came back at.
    pub fn returning_epoch(&self, node: usize) -> u64 {
        self.returning_epoch[node].load(Ordering::Relaxed)
    }

    /// A returning node has had its full resync from here: it acts for its keys again.
    pub fn returned(&self, node: usize) {
        let could_act = self.may_act(node);
        if self.returning[node].swap(false, Ordering::AcqRel) {
            self.update_acting();
            let epoch = self.bump(node, could_act);
            tracing::info!("membership: node {node} returned (epoch {epoch})");
        }
    }

    /// A new epoch after `node`'s state changed (it could act before):
    /// one that may act now and could not waits for a handover from here.
    fn bump(&self, node: usize, could_act: bool) -> u64 {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        if node != self.me && self.may_act(node) != could_act {
            self.handed_over[node].store(false, Ordering::Relaxed);
            self.handoff_epoch[node].store(epoch, Ordering::Relaxed);
        }
        epoch
    }

    /// Whether this node takes another as acting for its keys: it may act,
    /// and has been handed over what this node took in its place.
    pub fn grants(&self, node: usize) -> bool {
        self.may_act(node) && self.handed_over[node].load(Ordering::Relaxed)
    }

    /// The epoch a full resync of `node` must have started at to hand it
    /// over, while it waits for one.
    pub fn awaits_handover(&self, node: usize) -> Option<u64> {
        (self.may_act(node) && !self.handed_over[node].load(Ordering::Relaxed))
            .then(|| self.handoff_epoch[node].load(Ordering::Relaxed))
    }

    /// A full resync started at or after `awaits_handover`'s epoch has
    /// been applied by `node`.
    pub fn handed_over(&self, node: usize) {
        self.merge_handover[node].store(false, Ordering::Relaxed);
        if !self.handed_over[node].swap(true, Ordering::AcqRel) {
            tracing::info!("membership: handed node {node} its keys (epoch {})", self.epoch());
        }
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// This node has taken fresh copies from every live node.
    pub fn refreshed(&self) {
        if self.stale.swap(false, Ordering::AcqRel) {
            self.update_acting();
            let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            tracing::info!("membership: refreshed (epoch {epoch}, acting {})", self.is_acting());
        }
    }

    /// What `cluster nodes` says of a node.
    pub fn describe(&self, node: usize) -> &'static str {
        let syncing = if node == self.me {
            !self.is_acting()
        } else {
            self.is_returning(node) || self.reported(node) != Reported::Fresh
        };
        match self.state(node) {
            NodeState::Down => "down",
            NodeState::Unknown => "unknown",
            _ if syncing => "syncing",
            state => state.name(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// Whether this node sees more than half of the configured nodes (itself included).
    pub fn has_majority(&self) -> bool {
        self.majority.load(Ordering::Relaxed)
    }

    /// Why a request may not run here now, if it may not: the partition
    /// policy of a node without a majority.
    #[inline]
    pub fn refusal(&self, mutates: bool) -> Option<Refusal> {
        if self.has_majority() {
            return None;
        }
        match self.policy {
            PartitionPolicy::ReadOnly if mutates => Some(Refusal::NoMajority),
            PartitionPolicy::Unavailable => Some(Refusal::NoMajority),
            _ => None,
        }
    }

    pub fn set_lag(&self, node: usize, lag: Option<std::time::Duration>) {
        let micros = lag.map_or(u64::MAX, |lag| lag.as_micros() as u64);
        self.lag_micros[node].store(micros, Ordering::Relaxed);
    }

    pub fn lag(&self, node: usize) -> Option<std::time::Duration> {
        let micros = self.lag_micros[node].load(Ordering::Relaxed);
        (micros != u64::MAX).then(|| std::time::Duration::from_micros(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ring::NodeAddress;

    /// A membership of three nodes, as node `me`.
    fn three(me: usize, policy: PartitionPolicy) -> Membership {
        let nodes: Vec<NodeAddress> = (2..5)
            .map(|host| NodeAddress {
                host: format!("127.0.0.{host}"),
                port: 11211,
                weight: 1,
            })
            .collect();
        let membership = Membership::new(me, policy);
        membership.set_members(&NodeList::initial(&nodes));
        membership
    }

    #[test]
    fn a_minority_refuses_what_its_policy_says() {
        for (policy, write, read) in [
            (PartitionPolicy::ReadOnly, true, false),
            (PartitionPolicy::Available, false, false),
            (PartitionPolicy::Unavailable, true, true),
        ] {
            let membership = three(0, policy);
            membership.refreshed();
            assert_eq!(membership.refusal(true), None, "everyone is taken as alive at first");
            membership.set(1, NodeState::Down);
            assert!(membership.has_majority(), "two of three");
            membership.set(2, NodeState::Suspect);
            assert!(membership.has_majority(), "a suspect still counts");
            membership.set(2, NodeState::Down);
            assert!(!membership.has_majority());
            assert_eq!(membership.refusal(true).is_some(), write, "{policy:?}");
            assert_eq!(membership.refusal(false).is_some(), read, "{policy:?}");
            membership.set(1, NodeState::Alive);
            assert_eq!(membership.refusal(true), None);
            assert_eq!(membership.failovers(), 2);
        }
    }

    #[test]
    fn a_node_back_from_down_waits_and_a_minority_node_is_stale_until_refreshed() {
        let membership = three(0, PartitionPolicy::ReadOnly);
        assert!(membership.is_stale() && !membership.may_act(0), "a node starts stale");
        membership.refreshed();
        assert!(membership.may_act(0), "nodes never heard from are not waited for");
        membership.set(1, NodeState::Alive);
        membership.set(2, NodeState::Alive);
        assert!(!membership.may_act(0), "not before the others take it as acting");
        assert!(!membership.may_act(1), "not before it says it is fresh");
        assert_eq!(membership.describe(1), "syncing");
        let epoch = membership.epoch();
        assert!(
            membership.set_said(1, false, true, membership.list_digest())
                && !membership.set_said(1, false, true, membership.list_digest())
        );
        assert_eq!(membership.epoch(), epoch + 1, "a new say is a new epoch");
        assert!(membership.may_act(1), "first sight is not a return");
        assert!(!membership.may_act(0), "node 2 has not said yet");
        membership.set_said(2, true, false, membership.list_digest());
        assert!(membership.may_act(0), "what a stale node says is not waited for");
        membership.set_said(2, false, true, membership.list_digest());
        assert!(membership.may_act(0) && membership.may_act(2));

        membership.set(1, NodeState::Down);
        assert_eq!(membership.reported(1), Reported::Unknown, "back from down, it says again");
        assert!(membership.may_act(0), "a down node's say is not waited for");
        membership.set(1, NodeState::Alive);
        assert_eq!(membership.returning_epoch(1), membership.epoch());
        assert!(membership.may_act(0), "a returning node acted for nothing meanwhile");
        membership.set_said(1, false, true, membership.list_digest());
        assert!(!membership.may_act(1) && membership.is_returning(1) && membership.may_act(0));
        assert_eq!(membership.describe(1), "syncing");
        membership.returned(1);
        assert!(membership.may_act(1));

        // Cut off: both others down, this node is stale.
        membership.set(1, NodeState::Down);
        membership.set(2, NodeState::Down);
        assert!(membership.is_stale() && !membership.may_act(0));
        // Back: the others are not returning to a stale node, it is.
        membership.set(1, NodeState::Alive);
        membership.set_said(1, false, false, membership.list_digest());
        assert!(membership.may_act(1) && !membership.may_act(0));
        // Refreshed, it acts once node 1 has stopped acting in its place.
        membership.refreshed();
        assert!(!membership.may_act(0), "node 1 still acts for its keys");
        membership.set_said(1, false, true, membership.list_digest());
        assert!(membership.may_act(0));
        // That one's return makes it stale again: it may have refreshed without it.
        membership.set(2, NodeState::Alive);
        membership.set_said(2, false, true, membership.list_digest());
        assert!(
            membership.is_stale() && membership.may_act(2) && !membership.may_act(0),
            "node 2 acted meanwhile: refresh again"
        );
        membership.refreshed();
        assert!(membership.may_act(0));
    }

    #[test]
    fn a_node_is_taken_as_acting_only_once_handed_over() {
        let membership = three(0, PartitionPolicy::ReadOnly);
        membership.refreshed();
        membership.set(1, NodeState::Alive);
        assert_eq!(membership.awaits_handover(1), None, "it may not act yet");
        membership.set_said(1, false, false, membership.list_digest());
        let since = membership.epoch();
        assert!(membership.may_act(1) && !membership.grants(1));
        assert_eq!(
            membership.awaits_handover(1),
            Some(since),
            "a resync from this epoch on hands over"
        );
        membership.set_said(2, true, false, membership.list_digest());
        assert_eq!(
            membership.awaits_handover(1),
            Some(since),
            "another node's change does not restart it"
        );
        membership.handed_over(1);
        assert!(membership.grants(1) && membership.awaits_handover(1).is_none());
        membership.set(1, NodeState::Down);
        assert!(!membership.grants(1));
        membership.set(1, NodeState::Alive);
        membership.set_said(1, false, false, membership.list_digest());
        membership.returned(1);
        let since = membership.epoch();
        assert!(!membership.grants(1), "back from down: handed over again");
        assert_eq!(membership.awaits_handover(1), Some(since));
    }

    #[test]
    fn the_epoch_moves_when_a_node_goes_down_or_comes_back_not_when_suspected() {
        let membership = three(1, PartitionPolicy::ReadOnly);
        membership.refreshed();
        membership.set(0, NodeState::Alive);
        let start = membership.epoch();
        membership.set(0, NodeState::Suspect);
        assert_eq!(membership.epoch(), start);
        membership.set(0, NodeState::Down);
        assert_eq!(membership.epoch(), start + 1);
        membership.set(0, NodeState::Alive);
        assert_eq!(membership.epoch(), start + 2);
        membership.set(1, NodeState::Down);
        assert_eq!(membership.state(1), NodeState::Alive, "a node is never down to itself");
    }
}

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
//!
//! A change of the node list moves keys by handoff, per (giver, receiver)
//! pair of nodes (`Cluster::apply_list` finds them): the giver goes on
//! acting for the keys it gives (`Handoff::Handing`), every node that knows
//! of the pair forwards them to it (a third node, while the receiver says
//! it is `taking`), and the receiver leaves them to it (`taking`). Once the
//! receiver acts and has applied a full resync from the giver made since
//! the change, the giver stops (`Cut`: they are forwarded to the receiver,
//! which holds them until the end); once the receiver has applied the
//! giver's log up to where it stood just after the cut, the giver says it
//! has handed them over (`Said::handed`, under the same list), and the
//! receiver acts for them. Grants are untouched: a list change stops no
//! node acting for the keys it keeps.

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

/// Who may act, who is down and who still takes keys, as one node sees
/// it. A full resync's FULL_BEGIN carries the sender's, so that the node
/// receiving it drops exactly the keys the sender is about to send: views
/// differ while they change, and by its own view the receiver would drop
/// keys nobody sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View(Vec<u8>);

impl View {
    const MAY_ACT: u8 = 1;
    const DOWN: u8 = 2;
    /// It still takes keys from some node (a handoff to it has not ended).
    const TAKING: u8 = 4;

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

    /// Whether a handoff to the node has not ended, as the view's owner
    /// knows (its own, or what the node last said to it).
    pub fn is_taking(&self, node: usize) -> bool {
        self.0.get(node).is_some_and(|bits| bits & View::TAKING != 0)
    }
}

/// Where this node stands in handing keys to another after a list change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Handoff {
    None = 0,
    /// It still acts for the keys it gives.
    Handing = 1,
    /// It stopped (they are forwarded to the other); the other has yet to
    /// apply its log up to the cut.
    Cut = 2,
}

/// What a node tells another on the replication link it follows it by
/// (a STATE frame, replication/wire.rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Said {
    /// It is stale (has not taken fresh copies since it started or lost
    /// the majority).
    pub stale: bool,
    /// It takes the other as acting for its keys.
    pub grants: bool,
    /// It has no handoff to the other going on.
    pub handed: bool,
    /// It still takes keys from some node.
    pub taking: bool,
    /// It acts for its keys.
    pub acting: bool,
}

impl Said {
    pub fn to_bits(self) -> u64 {
        u64::from(self.stale)
            | u64::from(self.grants) << 1
            | u64::from(self.handed) << 2
            | u64::from(self.taking) << 3
            | u64::from(self.acting) << 4
    }

    pub fn from_bits(bits: u64) -> Said {
        Said {
            stale: bits & 1 != 0,
            grants: bits & 2 != 0,
            handed: bits & 4 != 0,
            taking: bits & 8 != 0,
            acting: bits & 16 != 0,
        }
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
    /// Per slot, the handoffs of the last list change (module doc):
    /// `handoff_to`, keys this node gives that node (Handoff); the epoch a
    /// full resync to it must have started at to count (`handoff_epoch`
    /// is the grant's); `taking`, keys this node takes from that node and
    /// still leaves to it; `peer_taking` and `peer_acting`, what that node
    /// says of itself.
    handoff_to: Vec<AtomicU8>,
    handing_epoch: Vec<AtomicU64>,
    taking: Vec<AtomicBool>,
    peer_taking: Vec<AtomicBool>,
    peer_acting: Vec<AtomicBool>,
    /// Per slot: what it last said (`Said` bits) and the digest of the
    /// list it said it under. Taken in again when this node's list
    /// changes: a node that heard of a change first says so under it.
    said_bits: Vec<AtomicU64>,
    said_digest: Vec<AtomicU64>,
    /// Any of the above set: requests are placed with the ring before the
    /// change too (one more walk), until every handoff has ended.
    handoffs: AtomicBool,
    /// The digest of the node list: what a node says of handoffs counts
    /// only when said under the same list (one said before a change would
    /// be taken as after).
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
            handoff_to: (0..nodes).map(|_| AtomicU8::new(Handoff::None as u8)).collect(),
            handing_epoch: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            taking: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            peer_taking: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            peer_acting: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            said_bits: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            said_digest: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            handoffs: AtomicBool::new(false),
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

    /// The node list changed (`Cluster::apply_list`); `handoffs` are the
    /// (giver, receiver) pairs of the ring change: this node, as a giver,
    /// goes on acting for the keys it gives until it has handed them over;
    /// as a receiver it leaves them to the giver until then. Everything
    /// said under the old list is said again. `settle_list` follows, once
    /// the new ring is in place.
    pub fn list_changed(&self, list: &NodeList, handoffs: &[(usize, usize)]) {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        for slot in 0..list.len() {
            let (was, is) = (self.is_member(slot), list.is_member(slot));
            self.members[slot].store(is, Ordering::Relaxed);
            if slot == self.me && is && !was {
                // Its copies (if any) are from before it left.
                self.stale.store(true, Ordering::Relaxed);
            } else if is && !was {
                // A new member is handed over by a resync from now on.
                self.handed_over[slot].store(false, Ordering::Relaxed);
                self.handoff_epoch[slot].store(epoch, Ordering::Relaxed);
            }
        }
        for &(giver, receiver) in handoffs {
            if giver == self.me && receiver != self.me {
                self.handoff_to[receiver].store(Handoff::Handing as u8, Ordering::Relaxed);
                self.handing_epoch[receiver].store(epoch, Ordering::Relaxed);
            }
            if receiver == self.me && giver != self.me && !self.is_down(giver) {
                self.taking[giver].store(true, Ordering::Relaxed);
            }
        }
        self.list_digest.store(list.digest(), Ordering::Release);
        self.slots.store(list.len(), Ordering::Release);
        for node in (0..list.len()).filter(|&node| node != self.me) {
            self.take_said(node);
        }
        self.recount_handoffs();
    }

    /// Whether a handoff `giver` -> `receiver` of the last list change has
    /// not ended, as this node knows: its own as giver until it cut, as
    /// receiver until the giver says it handed over; another pair's while
    /// the receiver says it is taking (`listed`: the pair is one of the
    /// change's).
    #[inline]
    pub fn handing_off(&self, giver: usize, receiver: usize, listed: bool) -> bool {
        if giver == self.me {
            self.handoff(receiver) == Handoff::Handing
        } else if receiver == self.me {
            self.taking[giver].load(Ordering::Relaxed)
        } else {
            listed && self.peer_taking[receiver].load(Ordering::Relaxed)
        }
    }

    /// Whether this node knows the handoff `giver` -> `receiver` of the
    /// last list change ended: its own as giver once it has, as receiver
    /// once the giver said so; another pair's once the receiver, speaking
    /// under this list, says it takes nothing (a node that hears of a
    /// change takes its keys from then on: until it has said so under the
    /// list, its handoffs have not begun, which is not `!handing_off`). A
    /// handoff to or from a down node ended with it.
    pub fn handoff_ended(&self, giver: usize, receiver: usize) -> bool {
        if self.is_down(giver) || self.is_down(receiver) {
            true
        } else if giver == self.me {
            self.handoff(receiver) == Handoff::None
        } else if receiver == self.me {
            !self.taking[giver].load(Ordering::Relaxed)
        } else {
            self.said_digest[receiver].load(Ordering::Relaxed) == self.list_digest()
                && !self.peer_taking[receiver].load(Ordering::Relaxed)
        }
    }

    /// Whether any handoff may be going on (`handing_off`).
    #[inline]
    pub fn handoffs(&self) -> bool {
        self.handoffs.load(Ordering::Relaxed)
    }

    pub fn handoff(&self, node: usize) -> Handoff {
        match self.handoff_to[node].load(Ordering::Relaxed) {
            1 => Handoff::Handing,
            2 => Handoff::Cut,
            _ => Handoff::None,
        }
    }

    /// The epoch a full resync to `node` must have started at for the
    /// handoff to it to be cut.
    pub fn handing_epoch(&self, node: usize) -> u64 {
        self.handing_epoch[node].load(Ordering::Relaxed)
    }

    /// Whether `node` says it acts for its keys.
    pub fn says_acting(&self, node: usize) -> bool {
        self.peer_acting[node].load(Ordering::Relaxed)
    }

    /// This node stops acting for the keys it gives `node` (they are
    /// forwarded to it from now on) and waits for it to apply the log up
    /// to the cut.
    pub fn cut(&self, node: usize) {
        self.handoff_to[node].store(Handoff::Cut as u8, Ordering::Relaxed);
        tracing::info!("membership: handoff to node {node} cut (epoch {})", self.epoch());
    }

    /// `node` has applied this node's log up to the cut: the handoff ended.
    pub fn handed_off(&self, node: usize) {
        self.handoff_to[node].store(Handoff::None as u8, Ordering::Relaxed);
        self.recount_handoffs();
        tracing::info!("membership: handoff to node {node} ended (epoch {})", self.epoch());
    }

    /// Whether this node still takes keys from any node.
    pub fn is_taking(&self) -> bool {
        (0..self.slots()).any(|node| self.taking[node].load(Ordering::Relaxed))
    }

    fn recount_handoffs(&self) {
        let any = (0..self.slots()).any(|node| {
            self.handoff(node) != Handoff::None
                || self.taking[node].load(Ordering::Relaxed)
                || self.peer_taking[node].load(Ordering::Relaxed)
        });
        self.handoffs.store(any, Ordering::Relaxed);
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
                // A handoff to or from it ends with it (its keys go by failover).
                self.taking[node].store(false, Ordering::Relaxed);
                self.peer_taking[node].store(false, Ordering::Relaxed);
                self.peer_acting[node].store(false, Ordering::Relaxed);
                self.said_bits[node].store(0, Ordering::Relaxed);
                self.recount_handoffs();
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
            self.members[node].load(Ordering::Relaxed) && self.could_act(node)
        }
    }

    /// Whether another node could act, wherever it is on the list: not
    /// down, not returning, fresh as it said. (A grant is given on this: a
    /// node taken off the list goes on acting for what it hands off, and
    /// must not stop before it has heard of the change itself.)
    #[inline]
    fn could_act(&self, node: usize) -> bool {
        !self.is_down(node)
            && !self.returning[node].load(Ordering::Relaxed)
            && self.reported[node].load(Ordering::Relaxed) == Reported::Fresh as u8
    }

    /// What another node last said of its copies.
    pub fn reported(&self, node: usize) -> Reported {
        match self.reported[node].load(Ordering::Relaxed) {
            1 => Reported::Stale,
            2 => Reported::Fresh,
            _ => Reported::Unknown,
        }
    }

    /// What another node says (`Said`), under the node list of `digest`
    /// (what it says of a handoff under another list counts as nothing).
    /// Returns whether the links should look again: who may act changed (a
    /// new epoch; a node still returning here acts for nothing either way,
    /// and the resync it is having goes on), or whether it acts.
    pub fn set_said(&self, node: usize, said: Said, digest: u64) -> bool {
        if node == self.me {
            return false;
        }
        let could_act = self.may_act(node);
        let was_taking = self.peer_taking[node].load(Ordering::Relaxed);
        let was_acting = self.peer_acting[node].load(Ordering::Relaxed);
        self.said_bits[node].store(said.to_bits(), Ordering::Relaxed);
        self.said_digest[node].store(digest, Ordering::Relaxed);
        let handed = self.take_said(node);
        let grants = self.granted[node].load(Ordering::Relaxed);
        self.recount_handoffs();
        let now = if said.stale { Reported::Stale } else { Reported::Fresh };
        self.reported[node].store(now as u8, Ordering::Release);
        let taking = self.peer_taking[node].load(Ordering::Relaxed);
        if !self.update_acting() && self.may_act(node) == could_act && !handed && was_taking == taking {
            // Whether it acts matters only to a handoff to it (its cut
            // waits for that): the links look again, no new epoch.
            return was_acting != said.acting;
        }
        let epoch = self.bump(node, could_act);
        tracing::info!(
            "membership: node {node} says it is {}{} (epoch {epoch}, acting {})",
            if said.stale { "stale" } else { "fresh" },
            if grants { " and takes this node as acting" } else { "" },
            self.is_acting()
        );
        true
    }

    /// Takes in what `node` last said, under the list it said it under: a
    /// handoff's end or taking said under another list count for nothing
    /// (a grant is not of the list: a list change moves keys by handoff).
    /// Returns whether this ended a handoff from it.
    fn take_said(&self, node: usize) -> bool {
        let said = Said::from_bits(self.said_bits[node].load(Ordering::Relaxed));
        let same_list = self.said_digest[node].load(Ordering::Relaxed) == self.list_digest();
        self.granted[node].store(said.grants, Ordering::Relaxed);
        self.peer_acting[node].store(said.acting, Ordering::Relaxed);
        self.peer_taking[node].store(said.taking && same_list, Ordering::Relaxed);
        let handed = said.handed && same_list && self.taking[node].swap(false, Ordering::Relaxed);
        if handed {
            tracing::info!("membership: node {node} handed this node the keys it gave it");
        }
        handed
    }

    /// What this node says to `node` (`Said`).
    pub fn said_to(&self, node: usize) -> Said {
        Said {
            stale: self.is_stale(),
            grants: self.grants(node),
            handed: self.handoff(node) == Handoff::None,
            taking: self.is_taking(),
            acting: self.is_acting(),
        }
    }

    /// This node's view now.
    pub fn view(&self) -> View {
        View(
            (0..self.slots())
                .map(|node| {
                    let taking = if node == self.me {
                        self.is_taking()
                    } else {
                        self.peer_taking[node].load(Ordering::Relaxed)
                    };
                    (u8::from(self.may_act(node)) * View::MAY_ACT)
                        | (u8::from(self.is_down(node)) * View::DOWN)
                        | (u8::from(taking) * View::TAKING)
                })
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
                || !self.is_member(node)
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
            // What a resync sends it changed: one from now on counts.
            self.handing_epoch[node].store(epoch, Ordering::Relaxed);
        }
        epoch
    }

    /// Whether this node takes another as acting for its keys: it could
    /// act (`could_act`), and has been handed over what this node took in
    /// its place.
    pub fn grants(&self, node: usize) -> bool {
        node != self.me && self.could_act(node) && self.handed_over[node].load(Ordering::Relaxed)
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
pub(crate) mod tests {
    use super::*;
    use crate::cluster::ring::NodeAddress;

    /// `node` says it is stale or not and grants this node or not.
    pub(crate) fn say(membership: &Membership, node: usize, stale: bool, grants: bool) -> bool {
        let said = Said {
            stale,
            grants,
            handed: true,
            taking: false,
            acting: !stale,
        };
        membership.set_said(node, said, membership.list_digest())
    }

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
        assert!(say(&membership, 1, false, true) && !say(&membership, 1, false, true));
        assert_eq!(membership.epoch(), epoch + 1, "a new say is a new epoch");
        assert!(membership.may_act(1), "first sight is not a return");
        assert!(!membership.may_act(0), "node 2 has not said yet");
        say(&membership, 2, true, false);
        assert!(membership.may_act(0), "what a stale node says is not waited for");
        say(&membership, 2, false, true);
        assert!(membership.may_act(0) && membership.may_act(2));

        membership.set(1, NodeState::Down);
        assert_eq!(membership.reported(1), Reported::Unknown, "back from down, it says again");
        assert!(membership.may_act(0), "a down node's say is not waited for");
        membership.set(1, NodeState::Alive);
        assert_eq!(membership.returning_epoch(1), membership.epoch());
        assert!(membership.may_act(0), "a returning node acted for nothing meanwhile");
        say(&membership, 1, false, true);
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
        say(&membership, 1, false, false);
        assert!(membership.may_act(1) && !membership.may_act(0));
        // Refreshed, it acts once node 1 has stopped acting in its place.
        membership.refreshed();
        assert!(!membership.may_act(0), "node 1 still acts for its keys");
        say(&membership, 1, false, true);
        assert!(membership.may_act(0));
        // That one's return makes it stale again: it may have refreshed without it.
        membership.set(2, NodeState::Alive);
        say(&membership, 2, false, true);
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
        say(&membership, 1, false, false);
        let since = membership.epoch();
        assert!(membership.may_act(1) && !membership.grants(1));
        assert_eq!(
            membership.awaits_handover(1),
            Some(since),
            "a resync from this epoch on hands over"
        );
        say(&membership, 2, true, false);
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
        say(&membership, 1, false, false);
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

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
//! is back it acts for nothing until it has had full resyncs from every
//! live node (which drop what it held of their keys and send it fresh
//! copies), so the majority's writes win. A node starts stale too: it may
//! be back from a crash, empty, while the others hold its keys.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

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

pub struct Membership {
    me: usize,
    states: Vec<AtomicU8>,
    /// Bumped whenever a node is declared down or comes back: preference
    /// lists changed, so copies are re-sent.
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
    /// This node started, lost the majority, or missed a node's time down,
    /// and has not yet taken fresh copies since.
    stale: AtomicBool,
    /// Per node: it was down while this node was stale.
    missed: Vec<AtomicBool>,
}

impl Membership {
    pub fn new(me: usize, nodes: usize, policy: PartitionPolicy) -> Membership {
        let membership = Membership {
            me,
            states: (0..nodes).map(|_| AtomicU8::new(NodeState::Unknown as u8)).collect(),
            epoch: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            majority: AtomicBool::new(true),
            policy,
            lag_micros: (0..nodes).map(|_| AtomicU64::new(u64::MAX)).collect(),
            returning: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            returning_epoch: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            stale: AtomicBool::new(true),
            missed: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
        };
        membership.set(me, NodeState::Alive);
        membership
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
        let before = NodeState::from_u8(self.states[node].swap(state as u8, Ordering::AcqRel));
        if (before == NodeState::Down) != (state == NodeState::Down) {
            if state == NodeState::Down {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                self.returning[node].store(false, Ordering::Relaxed);
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
            let live = (0..self.states.len()).filter(|&node| !self.is_down(node)).count();
            let majority = live * 2 > self.states.len();
            if !majority {
                self.stale.store(true, Ordering::Relaxed);
                for other in (0..self.states.len()).filter(|&other| self.is_down(other)) {
                    self.missed[other].store(true, Ordering::Relaxed);
                }
            }
            self.majority.store(majority, Ordering::Relaxed);
            let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            if state != NodeState::Down {
                self.returning_epoch[node].store(epoch, Ordering::Relaxed);
            }
        }
    }

    /// Whether a node may act for keys now: not down, not returning, and
    /// (this node itself) not stale.
    #[inline]
    pub fn may_act(&self, node: usize) -> bool {
        if node == self.me {
            !self.is_stale()
        } else {
            !self.is_down(node) && !self.returning[node].load(Ordering::Relaxed)
        }
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
        if self.returning[node].swap(false, Ordering::AcqRel) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// This node has taken fresh copies from every live node.
    pub fn refreshed(&self) {
        if self.stale.swap(false, Ordering::AcqRel) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// What `cluster nodes` says of a node.
    pub fn describe(&self, node: usize) -> &'static str {
        let syncing = if node == self.me {
            self.is_stale()
        } else {
            self.is_returning(node)
        };
        match self.state(node) {
            NodeState::Down => "down",
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

    #[test]
    fn a_minority_refuses_what_its_policy_says() {
        for (policy, write, read) in [
            (PartitionPolicy::ReadOnly, true, false),
            (PartitionPolicy::Available, false, false),
            (PartitionPolicy::Unavailable, true, true),
        ] {
            let membership = Membership::new(0, 3, policy);
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
        let membership = Membership::new(0, 3, PartitionPolicy::ReadOnly);
        assert!(membership.is_stale() && !membership.may_act(0), "a node starts stale");
        membership.refreshed();
        membership.set(1, NodeState::Alive);
        assert!(membership.may_act(1), "first sight is not a return");
        membership.set(1, NodeState::Down);
        membership.set(1, NodeState::Alive);
        assert!(!membership.may_act(1) && membership.is_returning(1));
        assert_eq!(membership.returning_epoch(1), membership.epoch());
        assert_eq!(membership.describe(1), "syncing");
        membership.returned(1);
        assert!(membership.may_act(1));
        // Cut off: both others down, this node is stale.
        membership.set(1, NodeState::Down);
        membership.set(2, NodeState::Down);
        assert!(membership.is_stale() && !membership.may_act(0));
        // Back: the others are not returning to a stale node, it is.
        membership.set(1, NodeState::Alive);
        assert!(membership.may_act(1) && !membership.may_act(0));
        // It may refresh before the last one is back; that one's return makes it stale again.
        membership.refreshed();
        assert!(membership.may_act(0));
        membership.set(2, NodeState::Alive);
        assert!(
            membership.is_stale() && membership.may_act(2),
            "node 2 acted meanwhile: refresh again"
        );
        membership.refreshed();
        assert!(membership.may_act(0));
    }

    #[test]
    fn the_epoch_moves_only_when_a_node_goes_down_or_comes_back() {
        let membership = Membership::new(1, 3, PartitionPolicy::ReadOnly);
        membership.refreshed();
        let start = membership.epoch();
        membership.set(0, NodeState::Alive);
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

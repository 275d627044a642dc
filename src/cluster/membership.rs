//! Who is alive, as this node sees it. The failure detector (swim.rs, run
//! by the replication core) writes each node's state here; every worker
//! reads it on each request to skip down nodes in preference lists, and
//! asks the partition policy whether a request may run. One relaxed
//! atomic load per node consulted: no lock on the request path.

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
            }
            let live = (0..self.states.len()).filter(|&node| !self.is_down(node)).count();
            self.majority.store(live * 2 > self.states.len(), Ordering::Relaxed);
            self.epoch.fetch_add(1, Ordering::AcqRel);
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
    fn the_epoch_moves_only_when_a_node_goes_down_or_comes_back() {
        let membership = Membership::new(1, 3, PartitionPolicy::ReadOnly);
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

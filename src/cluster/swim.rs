//! SWIM failure detection (the `foca` crate) as plain code: datagrams and
//! the clock go in, datagrams and each node's state come out. The
//! replication core runs it over UDP on the cluster port
//! (replication/gossip.rs) and writes the states to membership.rs.
//!
//! A node's SWIM identity is its name (its client address `host:port`:
//! slots are each node's own numbering), the time it started and a
//! renewal count: a restarted node is a new identity that
//! wins over its old one, and a node declared down (a partition, or after
//! one a healed node's stale news) renews its identity to rejoin. Only a
//! new start is a restart: a renewal is the same process, copies intact.
//! Nodes not known to be active are announced to every ANNOUNCE_INTERVAL,
//! which is how a node finds the others at start and after a partition.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{AccumulatingRuntime, Config, Foca, NoCustomBroadcast, PostcardCodec, State, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::membership::NodeState;

/// How nodes not known to be active are looked for.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(500);

/// The failure detector's timeouts (flags; defaults declare a dead node
/// down in about 1.5 s on a LAN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub suspect_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            suspect_timeout: Duration::from_millis(800),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeId {
    pub name: String,
    /// When the node started (nanoseconds since the epoch).
    pub boot: u64,
    /// Times it renewed its identity since.
    pub renewal: u32,
}

impl NodeId {
    /// Which of two identities of one node is newer.
    fn age(&self) -> (u64, u32) {
        (self.boot, self.renewal)
    }
}

impl foca::Identity for NodeId {
    type Addr = String;

    fn renew(&self) -> Option<NodeId> {
        Some(NodeId {
            renewal: self.renewal + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.name.clone()
    }

    fn win_addr_conflict(&self, adversary: &NodeId) -> bool {
        self.age() > adversary.age()
    }
}

pub struct Swim {
    /// Each slot's name (the node list's addresses).
    names: Vec<String>,
    foca: Foca<NodeId, PostcardCodec, SmallRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<NodeId>,
    timers: Vec<(Instant, Timer<NodeId>)>,
    next_announce: Instant,
    /// Each node's last known state: foca forgets a member a day after it
    /// went down, and a forgotten node must stay down, not turn unknown.
    known: Vec<NodeState>,
    /// Each node's identity's boot as last seen, and the nodes seen with a
    /// new one since `restarts` was last asked (a new process: back from
    /// down, perhaps too fast to be seen down).
    boots: Vec<Option<u64>>,
    restarted: Vec<usize>,
    /// Errors foca reported (bad datagrams, mostly), counted.
    pub errors: u64,
}

impl Swim {
    /// The detector of node `me` of the nodes `names` (by slot).
    pub fn new(me: usize, names: Vec<String>, timing: Timing, boot: u64, now: Instant) -> Swim {
        let nodes = names.len();
        let mut config = Config::new_lan(NonZeroU32::new(nodes.max(1) as u32).expect("at least one node"));
        config.probe_period = timing.probe_interval;
        config.probe_rtt = timing.probe_timeout;
        config.suspect_to_down_after = timing.suspect_timeout;
        config.num_indirect_probes = NonZeroUsize::new(nodes.saturating_sub(2).clamp(1, 3)).expect("nonzero");
        // Down and unknown nodes are announced to here, more often than foca would.
        config.periodic_announce_to_down_members = None;
        let identity = NodeId {
            name: names[me].clone(),
            boot,
            renewal: 0,
        };
        let rng = SmallRng::seed_from_u64(boot ^ (me as u64).rotate_left(32));
        let mut swim = Swim {
            names,
            foca: Foca::new(identity, config, rng, PostcardCodec),
            runtime: AccumulatingRuntime::new(),
            timers: Vec::new(),
            next_announce: now,
            known: vec![NodeState::Unknown; nodes],
            boots: vec![None; nodes],
            restarted: Vec::new(),
            errors: 0,
        };
        swim.tick(now);
        swim
    }

    /// The node list grew: new slots' names (a name never changes slot).
    pub fn set_names(&mut self, names: &[String]) {
        for name in names.iter().skip(self.names.len()) {
            self.names.push(name.clone());
            self.known.push(NodeState::Unknown);
            self.boots.push(None);
        }
    }

    fn slot_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|known| known == name)
    }

    /// Runs the timers that are due, and announces to inactive nodes.
    pub fn tick(&mut self, now: Instant) {
        while let Some(at) = self.timers.iter().position(|(when, _)| *when <= now) {
            let (_, timer) = self.timers.swap_remove(at);
            let result = self.foca.handle_timer(timer, &mut self.runtime);
            self.after(result, now);
        }
        if now >= self.next_announce {
            self.next_announce = now + ANNOUNCE_INTERVAL;
            self.states();
            let inactive: Vec<usize> = (0..self.names.len())
                .filter(|&node| matches!(self.known[node], NodeState::Unknown | NodeState::Down))
                .filter(|&node| self.names[node] != self.foca.identity().name)
                .collect();
            for node in inactive {
                // Its boot is unknown here; the reply carries its identity.
                let target = NodeId {
                    name: self.names[node].clone(),
                    boot: 0,
                    renewal: 0,
                };
                let result = self.foca.announce(target, &mut self.runtime);
                self.after(result, now);
            }
        }
    }

    /// A datagram from another node.
    pub fn receive(&mut self, datagram: &[u8], now: Instant) {
        let result = self.foca.handle_data(datagram, &mut self.runtime);
        self.after(result, now);
    }

    /// When `tick` has something to do next.
    pub fn next_deadline(&self) -> Instant {
        self.timers
            .iter()
            .map(|(when, _)| *when)
            .fold(self.next_announce, Instant::min)
    }

    /// Datagrams to send: (node index, bytes).
    pub fn outgoing(&mut self) -> Vec<(usize, Bytes)> {
        let sends: Vec<(NodeId, Bytes)> = std::iter::from_fn(|| self.runtime.to_send()).collect();
        sends
            .into_iter()
            .filter_map(|(to, data)| Some((self.slot_of(&to.name)?, data)))
            .collect()
    }

    /// Every node's state (this node's own is Alive).
    pub fn states(&mut self) -> &[NodeState] {
        let mut newest: Vec<Option<(u64, u32, NodeState)>> = vec![None; self.names.len()];
        for member in self.foca.iter_membership_state() {
            let Some(slot) = self.slot_of(&member.id().name).and_then(|slot| newest.get_mut(slot)) else {
                continue;
            };
            let state = match member.state() {
                State::Alive => NodeState::Alive,
                State::Suspect => NodeState::Suspect,
                State::Down => NodeState::Down,
            };
            if slot.is_none_or(|(boot, renewal, _)| member.id().age() >= (boot, renewal)) {
                *slot = Some((member.id().boot, member.id().renewal, state));
            }
        }
        let me = self.slot_of(&self.foca.identity().name);
        for (node, state) in newest.into_iter().enumerate() {
            match state {
                _ if Some(node) == me => self.known[node] = NodeState::Alive,
                Some((boot, _, state)) => {
                    if self.boots[node].is_some_and(|seen| seen != boot) && !self.restarted.contains(&node) {
                        self.restarted.push(node);
                    }
                    self.boots[node] = Some(boot);
                    self.known[node] = state;
                }
                None => {} // never heard of, or forgotten: as last known
            }
        }
        &self.known
    }

    /// The nodes seen with a new identity since the last call (see `boots`).
    pub fn restarts(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.restarted)
    }

    fn after(&mut self, result: Result<(), foca::Error>, now: Instant) {
        if result.is_err() {
            self.errors += 1;
        }
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            self.timers.push((now + delay, timer));
        }
        // States are read from foca itself; the notifications add nothing.
        while self.runtime.to_notify().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|node| format!("127.0.0.{}:11211", node + 2)).collect()
    }

    /// Nodes on a simulated network and clock; `cut` nodes neither send nor receive.
    struct Net {
        nodes: Vec<Swim>,
        cut: Vec<bool>,
        now: Instant,
    }

    impl Net {
        fn new(count: usize) -> Net {
            let now = Instant::now();
            let nodes = (0..count)
                .map(|me| Swim::new(me, names(count), Timing::default(), 1_000 + me as u64, now))
                .collect();
            Net {
                nodes,
                cut: vec![false; count],
                now,
            }
        }

        /// Runs the network for `duration` in 10 ms steps.
        fn run(&mut self, duration: Duration) {
            let end = self.now + duration;
            while self.now < end {
                self.now += Duration::from_millis(10);
                for index in 0..self.nodes.len() {
                    self.nodes[index].tick(self.now);
                }
                // Deliver until quiet (replies within the same step: a fast LAN).
                loop {
                    let mut delivered = false;
                    for from in 0..self.nodes.len() {
                        for (to, data) in self.nodes[from].outgoing() {
                            if !self.cut[from] && !self.cut[to] {
                                self.nodes[to].receive(&data, self.now);
                                delivered = true;
                            }
                        }
                    }
                    if !delivered {
                        break;
                    }
                }
            }
        }

        fn states(&mut self, node: usize) -> Vec<NodeState> {
            self.nodes[node].states().to_vec()
        }
    }

    #[test]
    fn nodes_find_each_other_a_cut_node_is_declared_down_and_a_healed_one_returns() {
        use NodeState::*;
        let mut net = Net::new(3);
        net.run(Duration::from_secs(1));
        for node in 0..3 {
            assert_eq!(net.states(node), vec![Alive; 3], "node {node} after start");
        }
        for node in 0..3 {
            net.nodes[node].restarts();
        }
        net.cut[2] = true;
        net.run(Duration::from_millis(2000));
        for node in 0..2 {
            assert_eq!(net.states(node)[2], Down, "node {node} sees the cut node down");
        }
        assert_eq!(net.states(2), vec![Down, Down, Alive], "the cut node sees the others down");
        net.cut[2] = false;
        net.run(Duration::from_secs(3));
        for node in 0..3 {
            assert_eq!(net.states(node), vec![Alive; 3], "node {node} after the cut healed");
            assert!(
                net.nodes[node].restarts().is_empty(),
                "node {node}: renewals are not restarts"
            );
        }
    }

    #[test]
    fn a_restarted_node_is_reported_once() {
        let mut net = Net::new(3);
        net.run(Duration::from_secs(1));
        net.nodes[0].restarts();
        net.nodes[2] = Swim::new(2, names(3), Timing::default(), 5_000, net.now);
        net.run(Duration::from_secs(1));
        assert_eq!(net.nodes[0].restarts(), vec![2]);
        assert_eq!(net.states(0), vec![NodeState::Alive; 3]);
        net.run(Duration::from_secs(1));
        assert!(net.nodes[0].restarts().is_empty());
    }

    #[test]
    fn a_dead_node_is_down_within_two_seconds() {
        let mut net = Net::new(3);
        net.run(Duration::from_secs(1));
        net.cut[1] = true;
        let mut waited = Duration::ZERO;
        while net.states(0)[1] != NodeState::Down || net.states(2)[1] != NodeState::Down {
            net.run(Duration::from_millis(50));
            waited += Duration::from_millis(50);
            assert!(waited < Duration::from_secs(2), "not down after {waited:?}");
        }
    }
}

//! What a driver keeps between calls, as plain code: the topology, the
//! cluster's `--copies`, when the node list is due to be asked again, the
//! hot keys; where a call goes, what its result says of the node, and when
//! a call is tried again (`Attempts`). Every driver holds one `State`
//! behind a lock it never holds across I/O.

use std::time::{Duration, Instant};

use crate::call::{Call, Wire};
use crate::codec::ClusterNodes;
use crate::config::Config;
use crate::error::Error;
use crate::hot::{Heat, HotKeyConfig, HotKeys, copy_key};
use crate::topology::Topology;

/// What a driver keeps between calls.
#[derive(Debug)]
pub struct State {
    pub topology: Topology,
    /// The cluster's `--copies` (1 for a fixed list).
    pub copies: u32,
    refreshed: Instant,
    /// A failure since the last refresh: refresh before the next call.
    stale: bool,
    /// The hot keys the nodes last reported (with `Config::hot_keys`).
    pub hot: HotKeys,
}

/// Where a hot key's read goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HotRead {
    /// The node acting for it, as any read.
    Acting,
    /// Another live copy of its preference list (`cluster local`).
    Copy(usize),
    /// An extra copy, a key of its own.
    Extra(Vec<u8>),
}

/// What a request's result says of its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Fine,
    /// A timeout: closer to down.
    Slow,
    /// Refused, reset, or out of step: down, and its idle connections are
    /// to a process that failed (close them).
    Failed,
}

impl Seen {
    /// What a request's result says of its node.
    pub fn of(result: Result<(), &Error>) -> Seen {
        match result {
            Ok(()) => Seen::Fine,
            Err(Error::Io { source, .. }) if is_timeout(source) => Seen::Slow,
            Err(Error::Io { .. } | Error::Decode { .. }) => Seen::Failed,
            // The node answered: it is up.
            Err(_) => Seen::Fine,
        }
    }
}

/// A read or write that ran out of time (std::net and tokio say it apart).
pub fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

impl State {
    /// A driver's start: `topology`, one copy per key until told more.
    pub fn new(topology: Topology, now: Instant) -> State {
        State {
            topology,
            copies: 1,
            refreshed: now,
            stale: false,
            hot: HotKeys::default(),
        }
    }

    /// The node list's epoch (None for a fixed list) and each node's
    /// address and whether it is taken as up.
    pub fn nodes(&self) -> (Option<u64>, Vec<(String, bool)>) {
        let nodes = self.topology.nodes().iter();
        let nodes = nodes.map(|n| (n.address.clone(), n.health.is_up() && !n.reported_down));
        (self.topology.epoch(), nodes.collect())
    }

    /// The addresses of the members taken as up.
    pub fn live(&self) -> Vec<String> {
        let nodes = self.topology.nodes().iter();
        nodes
            .filter(|n| n.health.is_up() && !n.reported_down)
            .map(|n| n.address.clone())
            .collect()
    }

    /// Whether the list is due to be asked again (after a failure, or the
    /// interval); true claims it, so one caller asks.
    pub fn refresh_due(&mut self, interval: Duration, now: Instant) -> bool {
        let due = self.stale || now.duration_since(self.refreshed) >= interval;
        if due {
            self.stale = false;
            self.refreshed = now;
        }
        due
    }

    /// A cluster's answer: the list, its copies.
    pub fn refreshed(&mut self, nodes: &ClusterNodes, copies: u32, now: Instant) -> Result<(), Error> {
        self.topology.apply(nodes)?;
        self.copies = copies;
        self.refreshed = now;
        self.stale = false;
        Ok(())
    }

    /// Asks for a refresh at the next call (after a node failed).
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// The address a call goes to: node `to` if named, else the key's.
    pub fn route(&mut self, key: &[u8], to: Option<usize>, now: Instant) -> Result<String, Error> {
        let node = match to {
            Some(node) if node < self.topology.nodes().len() => node,
            _ => self.topology.route(key, now).ok_or(Error::NoLiveNode)?,
        };
        Ok(self.topology.nodes()[node].address.clone())
    }

    /// How requests are spelled now: the dialect, copies, `wait`'s limit.
    pub fn wire(&self, config: &Config) -> Wire {
        Wire {
            protocol: config.protocol,
            copies: self.copies,
            wait_ms: config.wait_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
        }
    }

    /// Marks what a request to `address` showed of it.
    pub fn report(&mut self, address: &str, seen: Seen, now: Instant) {
        let policy = *self.topology.policy();
        let Some(index) = self.topology.nodes().iter().position(|n| n.address == address) else {
            return;
        };
        let node = self.topology.node_mut(index);
        match seen {
            Seen::Fine if !node.health.is_up() => node.health.success(),
            Seen::Fine => {}
            Seen::Slow => node.health.soft_failure(&policy, now),
            Seen::Failed => {
                node.health.hard_failure(&policy, now);
                self.stale = true;
            }
        }
    }

    /// Where the next read of `key` goes, with hot-key relief on: a cold
    /// key's to the node acting for it; a hot key's to each live copy of
    /// its preference list in turn, and the hottest's to its extra copies too.
    pub fn hot_read(&mut self, config: &HotKeyConfig, key: &[u8]) -> HotRead {
        let heat = self.hot.heat(config, key);
        if heat == Heat::Cold {
            return HotRead::Acting;
        }
        let listed = self.topology.preference(key, self.copies as usize);
        let live: Vec<usize> = listed
            .into_iter()
            .filter(|&n| self.topology.nodes()[n].health.is_up())
            .collect();
        if live.is_empty() {
            return HotRead::Acting;
        }
        let extra = match heat {
            Heat::Copied => self.extra_copies(config, key),
            _ => Vec::new(),
        };
        let pick = self.hot.next(live.len() + extra.len());
        match pick.checked_sub(live.len()) {
            Some(at) => HotRead::Extra(extra[at].clone()),
            None if pick == 0 => HotRead::Acting,
            None => HotRead::Copy(live[pick]),
        }
    }

    /// The extra copies to write after a write of `key`: none unless it is
    /// among the hottest.
    pub fn copies_to_write(&self, config: &HotKeyConfig, key: &[u8]) -> Vec<Vec<u8>> {
        match self.hot.heat(config, key) {
            Heat::Copied => self.extra_copies(config, key),
            _ => Vec::new(),
        }
    }

    /// The names of a key's extra copies: `key#i` for the first `i` whose
    /// node holds no copy yet (not in the key's preference list, nor
    /// another extra copy's), up to `extra_copies`: each copy adds a node.
    fn extra_copies(&self, config: &HotKeyConfig, key: &[u8]) -> Vec<Vec<u8>> {
        let mut holders = self.topology.preference(key, self.copies as usize);
        let mut names = Vec::new();
        for i in 1..=64 {
            if names.len() == config.extra_copies as usize || holders.len() >= self.topology.nodes().len() {
                break;
            }
            let Some(name) = copy_key(key, i) else { break };
            if let Some(&node) = self.topology.preference(&name, 1).first()
                && !holders.contains(&node)
            {
                holders.push(node);
                names.push(name);
            }
        }
        names
    }
}

/// When a call is tried again: after a connection that could not be made
/// (nothing was sent: the next node), after a broken connection (a
/// repeatable call, once), after corecache's "try again" refusals; all
/// within `retry_for`. A timeout is returned (the node may be slow, not gone).
#[derive(Debug)]
pub struct Attempts {
    deadline: Instant,
    repeatable: bool,
    resent: bool,
}

impl Attempts {
    /// The first attempt of `call`.
    pub fn new(call: &Call, config: &Config, now: Instant) -> Attempts {
        Attempts {
            deadline: now + config.retry_for,
            repeatable: call.repeatable(),
            resent: false,
        }
    }

    /// Connecting failed with `error`.
    pub fn unsent(&self, error: &Error, now: Instant) -> bool {
        matches!(error, Error::Io { .. }) && now < self.deadline
    }

    /// The reply was lost with `error`.
    pub fn lost(&mut self, error: &Error, now: Instant) -> bool {
        let broken = matches!(error, Error::Io { source, .. } if !is_timeout(source));
        let again = broken && self.repeatable && !self.resent && now < self.deadline;
        self.resent |= again;
        again
    }

    /// The server answered `error`.
    pub fn refused(&self, error: &Error, now: Instant) -> bool {
        error.is_transient() && now < self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ServerError, StoreMode};
    use crate::ring::NodeAddress;
    use crate::topology::parse_address;

    fn state(copies: u32) -> State {
        let nodes: Vec<NodeAddress> = (2..5)
            .map(|i| parse_address(&format!("127.0.0.{i}:11211")).unwrap())
            .collect();
        let mut state = State::new(Topology::fixed(&nodes, Default::default()), Instant::now());
        state.copies = copies;
        state
    }

    fn io(kind: std::io::ErrorKind) -> Error {
        Error::Io {
            address: "a".into(),
            source: kind.into(),
        }
    }

    #[test]
    fn a_hot_key_s_reads_take_each_copy_and_extra_copy_in_turn() {
        let mut state = state(2);
        let config = HotKeyConfig {
            spread_above: 10,
            copies_above: 100,
            extra_copies: 2,
            copy_ttl: 30,
        };
        state.hot.learn(&[
            ("read:warm".to_string(), "50".to_string()),
            ("read:hot".to_string(), "500".to_string()),
        ]);
        assert_eq!(state.hot_read(&config, b"cold"), HotRead::Acting);
        let reads: Vec<HotRead> = (0..4).map(|_| state.hot_read(&config, b"warm")).collect();
        assert_eq!(reads.iter().filter(|r| **r == HotRead::Acting).count(), 2, "{reads:?}");
        // Two copies and one extra copy (on the third node): each a node of its own.
        let extra = state.copies_to_write(&config, b"hot");
        assert_eq!(extra.len(), 1, "three nodes: one more than the two copies");
        let reads: Vec<HotRead> = (0..6).map(|_| state.hot_read(&config, b"hot")).collect();
        assert_eq!(
            reads.iter().filter(|r| matches!(r, HotRead::Extra(_))).count(),
            2,
            "{reads:?}"
        );
        assert!(state.copies_to_write(&config, b"warm").is_empty());
    }

    #[test]
    fn calls_are_tried_again_only_where_that_is_safe() {
        let config = Config::default();
        let now = Instant::now();
        let set = Call::Store {
            mode: StoreMode::Set,
            key: b"k",
            value: b"v",
            flags: 0,
            exptime: 0,
            consistency: Default::default(),
        };
        let incr = Call::Arith {
            key: b"k",
            delta: 1,
            increment: true,
            consistency: Default::default(),
        };
        let reset = io(std::io::ErrorKind::ConnectionReset);
        let mut attempts = Attempts::new(&set, &config, now);
        assert!(attempts.unsent(&reset, now));
        assert!(attempts.lost(&reset, now), "a set is sent once more");
        assert!(!attempts.lost(&reset, now), "only once");
        assert!(
            !Attempts::new(&set, &config, now).lost(&io(std::io::ErrorKind::TimedOut), now),
            "not after a timeout"
        );
        assert!(
            !Attempts::new(&incr, &config, now).lost(&reset, now),
            "an incr might have been applied"
        );
        let busy = Error::Server(ServerError::Server(
            "no node acts for the key while the cluster changes; try again".into(),
        ));
        assert!(attempts.refused(&busy, now));
        assert!(!attempts.refused(&busy, now + config.retry_for));
        assert!(!attempts.refused(&Error::Server(ServerError::UnknownCommand), now));
        assert_eq!(Seen::of(Err(&reset)), Seen::Failed);
        assert_eq!(Seen::of(Err(&io(std::io::ErrorKind::WouldBlock))), Seen::Slow);
        assert_eq!(Seen::of(Err(&busy)), Seen::Fine);
    }
}

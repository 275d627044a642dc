//! Where each key goes: the node list (fixed, or corecache's `cluster
//! nodes`), the ketama ring over it (the server's own ring, so a key goes
//! straight to the node acting for it), and each node's health. A key goes
//! to the first node of its clockwise walk that is neither marked down
//! here nor reported down by the cluster: the node a corecache cluster
//! fails over to, and what a ketama client does with plain memcached.
//! Plain code: the caller passes the time and does the I/O.

use std::time::Instant;

use crate::codec::ClusterNodes;
use crate::health::{Health, HealthPolicy};
use crate::ring::{NodeAddress, Ring, point_of};

/// One node of the list.
#[derive(Clone, Debug)]
pub struct Node {
    /// `host:port`, as connected to.
    pub address: String,
    pub weight: u32,
    /// What this client saw of it.
    pub health: Health,
    /// The cluster declared it down (`cluster nodes`).
    pub reported_down: bool,
}

/// The node list, its ring, and who may be sent to.
#[derive(Clone, Debug)]
pub struct Topology {
    nodes: Vec<Node>,
    ring: Ring,
    /// The node list's epoch, for a corecache cluster.
    epoch: Option<u64>,
    digest: String,
    policy: HealthPolicy,
}

/// A bad entry in a node list.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad node address {0:?} (host:port[:weight])")]
pub struct BadAddress(pub String);

/// `host:port[:weight]` into the ring's address.
pub fn parse_address(text: &str) -> Result<NodeAddress, BadAddress> {
    let bad = || BadAddress(text.to_string());
    let mut parts = text.rsplitn(3, ':').collect::<Vec<_>>();
    parts.reverse();
    let (host, port, weight) = match parts.as_slice() {
        [host, port] => (*host, *port, "1"),
        [host, port, weight] => (*host, *port, *weight),
        _ => return Err(bad()),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(NodeAddress {
        host: host.to_string(),
        port: port.parse().map_err(|_| bad())?,
        weight: weight.parse().map_err(|_| bad())?,
    })
}

impl Topology {
    /// A fixed list (plain memcached servers, or a cluster not asked).
    pub fn fixed(nodes: &[NodeAddress], policy: HealthPolicy) -> Topology {
        let nodes = nodes
            .iter()
            .map(|node| Node {
                address: node.to_string(),
                weight: node.weight,
                health: Health::default(),
                reported_down: false,
            })
            .collect();
        let mut topology = Topology {
            nodes,
            ring: Ring::new(&[]),
            epoch: None,
            digest: String::new(),
            policy,
        };
        topology.build_ring();
        topology
    }

    fn build_ring(&mut self) {
        let addresses: Vec<NodeAddress> = self
            .nodes
            .iter()
            .map(|node| {
                let mut address = parse_address(&node.address).expect("addresses are checked when they enter");
                address.weight = node.weight;
                address
            })
            .collect();
        self.ring = Ring::new(&addresses);
    }

    /// Takes a cluster's `cluster nodes`: a new list when its epoch or
    /// digest differs (each node keeps its health by address); the states
    /// every time. True if the list changed.
    pub fn apply(&mut self, reported: &ClusterNodes) -> Result<bool, BadAddress> {
        let same_list = self.epoch == Some(reported.epoch) && self.digest == reported.digest;
        if !same_list {
            let mut nodes = Vec::with_capacity(reported.nodes.len());
            for node in &reported.nodes {
                parse_address(&node.address)?;
                let health = self
                    .nodes
                    .iter()
                    .find(|old| old.address == node.address)
                    .map(|old| old.health.clone());
                nodes.push(Node {
                    address: node.address.clone(),
                    weight: node.weight,
                    health: health.unwrap_or_default(),
                    reported_down: false,
                });
            }
            self.nodes = nodes;
            self.epoch = Some(reported.epoch);
            self.digest = reported.digest.clone();
            self.build_ring();
        }
        for node in &reported.nodes {
            if let Some(ours) = self.nodes.iter_mut().find(|ours| ours.address == node.address) {
                ours.reported_down = node.state == "down";
            }
        }
        Ok(!same_list)
    }

    /// Every node of the list, in its order (a node's index is its slot).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `node`, to report what was seen of it.
    pub fn node_mut(&mut self, node: usize) -> &mut Node {
        &mut self.nodes[node]
    }

    /// The cluster's epoch for this list; None for a fixed list.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// When a node is marked down and probed back.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// The node a key goes to now, or None if every node is down. A down
    /// node whose probe is due is chosen once (the caller probes it).
    ///
    /// ```
    /// use std::time::Instant;
    /// use corecache_client::health::HealthPolicy;
    /// use corecache_client::topology::{Topology, parse_address};
    ///
    /// let nodes = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"];
    /// let nodes: Vec<_> = nodes.iter().map(|n| parse_address(n).unwrap()).collect();
    /// let mut topology = Topology::fixed(&nodes, HealthPolicy::default());
    /// let now = Instant::now();
    /// let owner = topology.route(b"user:1", now).unwrap();
    /// // Its connection was refused: the key goes to the next node.
    /// let policy = topology.policy().clone();
    /// topology.node_mut(owner).health.hard_failure(&policy, now);
    /// let next = topology.route(b"user:1", now).unwrap();
    /// assert_ne!(next, owner);
    /// ```
    pub fn route(&mut self, key: &[u8], now: Instant) -> Option<usize> {
        self.route_point(point_of(key), now)
    }

    fn route_point(&mut self, point: u32, now: Instant) -> Option<usize> {
        if self.nodes.is_empty() {
            return None;
        }
        let Topology { ring, nodes, .. } = self;
        ring.clockwise(point)
            .find(|&node| !nodes[node].reported_down && nodes[node].health.admit(now))
    }

    /// The key's preference list: its first `copies` nodes clockwise that
    /// the cluster has not reported down (health here aside).
    pub fn preference(&self, key: &[u8], copies: usize) -> Vec<usize> {
        if self.nodes.is_empty() {
            return Vec::new();
        }
        self.ring
            .clockwise(point_of(key))
            .filter(|&node| !self.nodes[node].reported_down)
            .take(copies)
            .collect()
    }

    /// Keys grouped by the node each goes to, each group in the keys'
    /// order, the groups in node order; the indexes of keys no node takes
    /// come last, as node None.
    pub fn split(&mut self, keys: &[&[u8]], now: Instant) -> Vec<(Option<usize>, Vec<usize>)> {
        let mut groups: Vec<(Option<usize>, Vec<usize>)> = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let node = self.route(key, now);
            match groups.iter_mut().find(|(n, _)| *n == node) {
                Some((_, members)) => members.push(index),
                None => groups.push((node, vec![index])),
            }
        }
        groups.sort_by_key(|(node, _)| node.map_or(usize::MAX, |n| n));
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ClusterNode;

    fn three() -> Topology {
        let nodes: Vec<NodeAddress> = ["127.0.0.2:11211", "127.0.0.3:11211", "127.0.0.4:11211"]
            .iter()
            .map(|a| parse_address(a).unwrap())
            .collect();
        Topology::fixed(&nodes, HealthPolicy::default())
    }

    #[test]
    fn addresses_parse_with_and_without_weight() {
        let address = parse_address("10.0.0.1:11211:3").unwrap();
        assert_eq!((address.host.as_str(), address.port, address.weight), ("10.0.0.1", 11211, 3));
        assert_eq!(parse_address("h:1").unwrap().weight, 1);
        for bad in ["h", ":1", "h:x", "h:1:x", "h:70000"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_goes_to_its_ring_owner_and_past_a_down_node_to_the_next() {
        let mut topology = three();
        let now = Instant::now();
        let ring = topology.ring.clone();
        for i in 0..300 {
            let key = format!("key:{i}");
            let walk: Vec<usize> = ring.clockwise(point_of(key.as_bytes())).collect();
            assert_eq!(topology.route(key.as_bytes(), now), Some(walk[0]));
        }
        let policy = *topology.policy();
        topology.node_mut(1).health.hard_failure(&policy, now);
        for i in 0..300 {
            let key = format!("key:{i}");
            let walk: Vec<usize> = ring.clockwise(point_of(key.as_bytes())).filter(|&n| n != 1).collect();
            assert_eq!(topology.route(key.as_bytes(), now), Some(walk[0]), "{key}");
        }
        assert_eq!(topology.preference(b"key:1", 3).len(), 3, "health aside");
    }

    #[test]
    fn a_cluster_list_replaces_the_nodes_and_keeps_health_by_address() {
        let mut topology = three();
        let now = Instant::now();
        let policy = *topology.policy();
        topology.node_mut(2).health.hard_failure(&policy, now);
        let node = |address: &str, state: &str| ClusterNode {
            address: address.into(),
            weight: 1,
            state: state.into(),
            is_self: false,
        };
        let reported = ClusterNodes {
            epoch: 4,
            digest: "d".into(),
            nodes: vec![node("127.0.0.4:11211", "alive"), node("127.0.0.5:11211", "down")],
        };
        assert_eq!(topology.apply(&reported), Ok(true));
        assert_eq!(topology.apply(&reported), Ok(false));
        assert_eq!(topology.nodes().len(), 2);
        assert!(!topology.nodes()[0].health.is_up(), "marked down before, by address");
        assert!(topology.nodes()[1].reported_down);
        assert_eq!(
            topology.route(b"anything", now),
            None,
            "one down here, one down in the cluster"
        );
        assert_eq!(topology.preference(b"anything", 2), [0]);
    }

    #[test]
    fn keys_split_by_node_in_their_order() {
        let mut topology = three();
        let now = Instant::now();
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let groups = topology.split(&keys, now);
        let mut all: Vec<usize> = groups.iter().flat_map(|(_, members)| members.clone()).collect();
        for (node, members) in &groups {
            assert!(members.windows(2).all(|w| w[0] < w[1]));
            assert!(members.iter().all(|&i| topology.route(keys[i], now) == *node));
        }
        all.sort();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        assert!(groups.windows(2).all(|w| w[0].0 < w[1].0));
    }
}

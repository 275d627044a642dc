//! The ketama ring, exactly as libmemcached's weighted mode builds it (and
//! twemproxy with `hash: md5`, uhashring's `ketama`, php-memcached with
//! OPT_LIBKETAMA_COMPATIBLE), so that a ketama client and the cluster agree
//! on every key's owner. This is the workspace's one ring.
//!
//! Per node, `floor(weight / total * 40 * nodes)` MD5 digests of
//! `"host:port-i"` (`"host-i"` on port 11211), each read as four
//! little-endian u32 points; a key's point is the first four bytes of
//! MD5(key), little-endian; its owner is the first point at or after it,
//! wrapping. Its preference list continues clockwise over distinct nodes.

use md5::{Digest, Md5};

/// One entry of the node list: a client address and its weight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAddress {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

impl NodeAddress {
    /// The string ketama hashes for this node: libmemcached leaves out the
    /// default port.
    fn ring_name(&self) -> String {
        if self.port == 11211 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The most nodes a ring holds (the configuration refuses more).
pub const MAX_NODES: usize = 256;

/// A key's place on the ring.
pub type Point = u32;

/// The point of a key: the first four bytes of its MD5, little-endian.
pub fn point_of(key: &[u8]) -> Point {
    let digest = Md5::digest(key);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Points of the continuum, sorted, each naming its node (an index into the
/// node list the ring was built from).
#[derive(Clone, Debug)]
pub struct Ring {
    points: Vec<(Point, u16)>,
    nodes: usize,
    /// Nodes with points (a node whose weight earns none has none).
    placed: usize,
}

impl Ring {
    /// The ring of `nodes`, node i named by i.
    ///
    /// ```
    /// use corecache_client::ring::{NodeAddress, Ring, point_of};
    ///
    /// let node = |host: &str| NodeAddress { host: host.into(), port: 11211, weight: 1 };
    /// let ring = Ring::new(&[node("10.0.0.1"), node("10.0.0.2"), node("10.0.0.3")]);
    /// let owner = ring.owner(point_of(b"user:1"));
    /// assert!(owner < 3);
    /// // The key's preference list: its owner first, then the next nodes clockwise.
    /// let preference: Vec<usize> = ring.clockwise(point_of(b"user:1")).collect();
    /// assert_eq!(preference[0], owner);
    /// ```
    pub fn new(nodes: &[NodeAddress]) -> Ring {
        Ring::of_slots(nodes.iter().enumerate())
    }

    /// The ring of the given nodes, each named by its slot (its index in
    /// the node list, which also holds nodes that are not on the ring).
    pub fn of_slots<'a>(nodes: impl Iterator<Item = (usize, &'a NodeAddress)> + Clone) -> Ring {
        let count = nodes.clone().count();
        assert!(count <= MAX_NODES, "a ring holds at most {MAX_NODES} nodes");
        // libmemcached treats weight 0 as 1.
        let weight = |node: &NodeAddress| node.weight.max(1);
        let total: u64 = nodes.clone().map(|(_, node)| u64::from(weight(node))).sum();
        let mut points = Vec::new();
        for (slot, node) in nodes {
            assert!(slot < MAX_NODES, "slots are below {MAX_NODES}");
            let digests = digests_per_node(weight(node), total, count);
            let name = node.ring_name();
            for i in 0..digests {
                let digest = Md5::digest(format!("{name}-{i}").as_bytes());
                for word in digest.chunks_exact(4) {
                    let point = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                    points.push((point, slot as u16));
                }
            }
        }
        points.sort_unstable();
        let mut seen = [false; MAX_NODES];
        points.iter().for_each(|&(_, node)| seen[usize::from(node)] = true);
        Ring {
            points,
            nodes: count,
            placed: seen.iter().filter(|&&placed| placed).count(),
        }
    }

    /// Nodes named, with points or not.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// The continuum's points, sorted, each with its node.
    pub fn points(&self) -> &[(Point, u16)] {
        &self.points
    }

    /// The node owning `point`: the first ring point at or after it, wrapping.
    pub fn owner(&self, point: Point) -> usize {
        usize::from(self.points[self.first_at_or_after(point)].1)
    }

    /// The distinct nodes clockwise from `point`, the owner first: a key's
    /// preference list is the first `--copies` live ones.
    pub fn clockwise(&self, point: Point) -> Clockwise<'_> {
        Clockwise {
            ring: self,
            next: self.first_at_or_after(point),
            steps: 0,
            left: self.placed,
            seen: [0; MAX_NODES / 64],
        }
    }

    fn first_at_or_after(&self, point: Point) -> usize {
        let index = self.points.partition_point(|&(at, _)| at < point);
        if index == self.points.len() { 0 } else { index }
    }
}

/// How many MD5 digests (four points each) a node gets: libmemcached's
/// weighted formula, in its single-precision arithmetic (twemproxy's too),
/// so that fractional shares round the same way.
fn digests_per_node(weight: u32, total: u64, nodes: usize) -> u32 {
    let share = weight as f32 / total as f32;
    let points = (share * 160.0 / 4.0 * nodes as f32) as f64 + 0.000_000_000_1;
    points.floor() as u32
}

/// Iterator of distinct nodes clockwise (see `Ring::clockwise`).
pub struct Clockwise<'a> {
    ring: &'a Ring,
    next: usize,
    steps: usize,
    /// Nodes not yielded yet: none left ends the walk (no full lap to
    /// find that a skipped node has no further point).
    left: usize,
    /// Nodes already yielded, as a bit set of MAX_NODES bits.
    seen: [u64; MAX_NODES / 64],
}

impl Iterator for Clockwise<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let points = &self.ring.points;
        while self.left > 0 && self.steps < points.len() {
            let node = usize::from(points[self.next].1);
            self.next = (self.next + 1) % points.len();
            self.steps += 1;
            let (word, bit) = (node / 64, 1u64 << (node % 64));
            if self.seen[word] & bit == 0 {
                self.seen[word] |= bit;
                self.left -= 1;
                return Some(node);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16, weight: u32) -> NodeAddress {
        NodeAddress {
            host: host.to_string(),
            port,
            weight,
        }
    }

    fn owners(ring: &Ring, keys: usize) -> String {
        (0..keys)
            .map(|i| char::from(b'0' + ring.owner(point_of(format!("key:{i}").as_bytes())) as u8))
            .collect()
    }

    #[test]
    fn a_walk_yields_each_placed_node_once_and_stops() {
        // Weight 1 against 1000 earns no points: that node is never yielded.
        let ring = Ring::new(&[
            node("10.0.0.1", 11211, 1),
            node("10.0.0.2", 11211, 1000),
            node("10.0.0.3", 11211, 1000),
        ]);
        assert!(ring.points().iter().all(|&(_, node)| node != 0));
        for point in [0, 1 << 31, u32::MAX] {
            let mut walk = ring.clockwise(point);
            let mut nodes: Vec<usize> = walk.by_ref().collect();
            assert!(walk.steps < ring.points().len(), "it stops once every placed node is found");
            nodes.sort_unstable();
            assert_eq!(nodes, [1, 2]);
        }
    }

    // The owners of key:0 .. key:199, printed by libmemcached 1.1.4
    // (tests/ketama/libmemcached_vectors.c) and, identically, by uhashring
    // 2.x (tests/ketama/uhashring_vectors.py).
    const EQUAL: &str = "00102000001022000110201200201100120102212112220122101101110020120110011022011202002120022200002211110021222101200121102012221020010222110111120110101122120122001201211121211022001212110212220021022001";
    const WEIGHTED: &str = "11233331233321222122123333123322330231323302303333331033022323333303333232122331311223323312333233311133210323322312232332313333333311333022312333303133332201231213312322111333332101320233133323212332";

    #[test]
    fn equal_weights_with_a_default_port_node_match_libmemcached() {
        let ring = Ring::new(&[
            node("127.0.0.1", 11211, 1),
            node("127.0.0.2", 21211, 1),
            node("127.0.0.3", 21211, 1),
        ]);
        assert_eq!(ring.points.len(), 3 * 160);
        assert_eq!(owners(&ring, 200), EQUAL);
    }

    #[test]
    fn unequal_weights_match_libmemcached() {
        let ring = Ring::new(&[
            node("10.0.0.1", 11211, 1),
            node("10.0.0.2", 11212, 2),
            node("10.0.0.3", 11213, 3),
            node("10.0.0.4", 11214, 5),
        ]);
        // floor(w / 11 * 160) rounded down to whole digests of four points.
        assert_eq!(ring.points.len(), 4 * (14 + 29 + 43 + 72));
        assert_eq!(owners(&ring, 200), WEIGHTED);
    }

    #[test]
    fn key_point_is_md5_little_endian() {
        // MD5("foo") = acbd18db 4cc2f85c ...
        assert_eq!(point_of(b"foo"), 0xdb18_bdac);
    }

    #[test]
    fn clockwise_yields_each_node_once_owner_first() {
        let nodes: Vec<_> = (1..=5).map(|i| node(&format!("127.0.0.{i}"), 11211, 1)).collect();
        let ring = Ring::new(&nodes);
        for i in 0..1000 {
            let point = point_of(format!("k{i}").as_bytes());
            let walk: Vec<usize> = ring.clockwise(point).collect();
            assert_eq!(walk.len(), 5);
            assert_eq!(walk[0], ring.owner(point));
            let mut sorted = walk.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn removing_a_node_gives_its_keys_to_their_first_replica() {
        // The property failover rests on: a ketama client that ejects a
        // node lands each of its keys on that key's second node.
        let nodes: Vec<_> = (1..=4).map(|i| node(&format!("127.0.0.{i}"), 21211, 1)).collect();
        let full = Ring::new(&nodes);
        let without_first = Ring::new(&nodes[1..]);
        for i in 0..5000 {
            let point = point_of(format!("key:{i}").as_bytes());
            let mut walk = full.clockwise(point);
            if walk.next() == Some(0) {
                let replica = walk.next().unwrap();
                assert_eq!(without_first.owner(point) + 1, replica);
            }
        }
    }

    #[test]
    fn the_largest_ring_walks_every_node_once() {
        let nodes: Vec<_> = (0..MAX_NODES as u16).map(|i| node("10.1.0.1", 20000 + i, 1)).collect();
        let ring = Ring::new(&nodes);
        let mut walk: Vec<usize> = ring.clockwise(point_of(b"x")).collect();
        walk.sort();
        assert_eq!(walk, (0..MAX_NODES).collect::<Vec<_>>());
    }
}

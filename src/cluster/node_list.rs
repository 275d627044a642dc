//! The node list: every node's client address and weight, whether it is a
//! member (on the ring) now, and which change made it so. Any node takes a
//! change (`cluster add|remove|weight`); lists spread by gossip and merge.
//!
//! The list is a map from address to its last change (a last-writer-wins
//! register per address): a change is stamped with the list's epoch plus
//! one and the address of the node that made it, and of two entries for
//! one address the larger stamp wins. Merging is commutative, associative
//! and idempotent, so two changes made at once on different nodes (each
//! at the same new epoch) end in one list on every node, with both in it
//! (or, for one address, the same winner everywhere). The list's epoch is
//! its largest stamp; `digest` tells two lists of one epoch apart.
//!
//! Entries are never deleted: a removed node stays as a non-member, so its
//! place (its slot, the index every per-node table of this node uses) is
//! stable. Slots are this node's own numbering, in the order it learnt of
//! each address; between nodes, nodes are named by address.

use std::fmt;

use super::ring::{MAX_NODES, NodeAddress};

/// Which change made an entry what it is: larger wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub epoch: u64,
    /// The node that made the change (`host:port`; empty for the list a
    /// node started with).
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub node: NodeAddress,
    pub member: bool,
    pub stamp: Stamp,
}

impl Entry {
    /// The order two entries for one address are merged by: the stamp,
    /// then (for start-up lists that disagree, both at epoch 0) the content.
    fn rank(&self) -> (&Stamp, bool, u32) {
        (&self.stamp, self.member, self.node.weight)
    }

    fn same_address(&self, host: &str, port: u16) -> bool {
        self.node.host == host && self.node.port == port
    }
}

/// An admin command's change of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Add(NodeAddress),
    Remove { host: String, port: u16 },
    Weight { host: String, port: u16, weight: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error("{0} is already in the node list")]
    AlreadyMember(String),
    #[error("{0} is not in the node list")]
    NotMember(String),
    #[error("the node list cannot be left empty")]
    LastNode,
    #[error("the node list holds at most {MAX_NODES} addresses, removed ones included")]
    Full,
    #[error("weight must be 1 or more")]
    Weight,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed node list")]
pub struct DecodeError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeList {
    entries: Vec<Entry>,
}

impl NodeList {
    /// The list a node starts with (`--cluster-nodes`): every entry a
    /// member, at epoch 0.
    pub fn initial(nodes: &[NodeAddress]) -> NodeList {
        let stamp = Stamp {
            epoch: 0,
            origin: String::new(),
        };
        NodeList {
            entries: nodes
                .iter()
                .map(|node| Entry {
                    node: node.clone(),
                    member: true,
                    stamp: stamp.clone(),
                })
                .collect(),
        }
    }

    /// A start-up list's entry that is not a member (a node started to
    /// join: it is on the list as an address, not on the ring).
    pub fn leave_out(&mut self, slot: usize) {
        self.entries[slot].member = false;
    }

    /// Every entry, by slot.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn node(&self, slot: usize) -> &NodeAddress {
        &self.entries[slot].node
    }

    pub fn is_member(&self, slot: usize) -> bool {
        self.entries.get(slot).is_some_and(|entry| entry.member)
    }

    /// The members, by slot.
    pub fn members(&self) -> impl Iterator<Item = (usize, &NodeAddress)> + Clone + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.member)
            .map(|(slot, entry)| (slot, &entry.node))
    }

    pub fn slot_of(&self, host: &str, port: u16) -> Option<usize> {
        self.entries.iter().position(|entry| entry.same_address(host, port))
    }

    /// The slot of a `host:port` as nodes name each other on the wire.
    pub fn slot_named(&self, name: &str) -> Option<usize> {
        let (host, port) = name.rsplit_once(':')?;
        self.slot_of(host, port.parse().ok()?)
    }

    /// The largest stamp's epoch.
    pub fn epoch(&self) -> u64 {
        self.entries.iter().map(|entry| entry.stamp.epoch).max().unwrap_or(0)
    }

    /// A hash of the content, the same for equal lists whatever their slot
    /// order (each node numbers slots its own way).
    pub fn digest(&self) -> u64 {
        let mut sorted: Vec<&Entry> = self.entries.iter().collect();
        sorted.sort_by(|a, b| (&a.node.host, a.node.port).cmp(&(&b.node.host, b.node.port)));
        let mut bytes = Vec::new();
        for entry in sorted {
            encode_entry(entry, &mut bytes);
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// This list with `change` made by `origin`, at the next epoch.
    pub fn changed(&self, change: &Change, origin: &str) -> Result<NodeList, ChangeError> {
        let stamp = Stamp {
            epoch: self.epoch() + 1,
            origin: origin.to_string(),
        };
        let mut list = self.clone();
        let member_slot = |host: &str, port: u16| {
            list.slot_of(host, port)
                .filter(|&slot| list.is_member(slot))
                .ok_or_else(|| ChangeError::NotMember(format!("{host}:{port}")))
        };
        let (slot, member, weight) = match change {
            Change::Add(node) => {
                if node.weight == 0 {
                    return Err(ChangeError::Weight);
                }
                match list.slot_of(&node.host, node.port) {
                    Some(slot) if list.is_member(slot) => return Err(ChangeError::AlreadyMember(node.to_string())),
                    Some(slot) => (slot, true, node.weight),
                    None if list.len() >= MAX_NODES => return Err(ChangeError::Full),
                    None => {
                        list.entries.push(Entry {
                            node: node.clone(),
                            member: false,
                            stamp: stamp.clone(),
                        });
                        (list.len() - 1, true, node.weight)
                    }
                }
            }
            Change::Remove { host, port } => {
                let slot = member_slot(host, *port)?;
                if list.members().count() == 1 {
                    return Err(ChangeError::LastNode);
                }
                (slot, false, list.entries[slot].node.weight)
            }
            Change::Weight { host, port, weight } => {
                if *weight == 0 {
                    return Err(ChangeError::Weight);
                }
                (member_slot(host, *port)?, true, *weight)
            }
        };
        let entry = &mut list.entries[slot];
        entry.member = member;
        entry.node.weight = weight;
        entry.stamp = stamp;
        Ok(list)
    }

    /// Takes in what `other` knows: per address, the larger stamp. New
    /// addresses get the next slots. Returns whether this list changed.
    pub fn merge(&mut self, other: &NodeList) -> bool {
        let mut changed = false;
        for theirs in &other.entries {
            match self.slot_of(&theirs.node.host, theirs.node.port) {
                Some(slot) => {
                    if theirs.rank() > self.entries[slot].rank() {
                        self.entries[slot] = theirs.clone();
                        changed = true;
                    }
                }
                None if self.entries.len() < MAX_NODES => {
                    self.entries.push(theirs.clone());
                    changed = true;
                }
                None => tracing::warn!("node list full: {} left out", theirs.node),
            }
        }
        changed
    }

    /// The list as gossip carries it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.entries.len() as u16).to_le_bytes());
        for entry in &self.entries {
            encode_entry(entry, out);
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<NodeList, DecodeError> {
        let mut reader = Reader(bytes);
        let count = usize::from(reader.u16()?);
        if count > MAX_NODES {
            return Err(DecodeError);
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(count);
        for _ in 0..count {
            let host = reader.text()?;
            let port = reader.u16()?;
            let weight = reader.u32()?;
            let member = reader.u8()? != 0;
            let epoch = reader.u64()?;
            let origin = reader.text()?;
            if host.is_empty() || entries.iter().any(|entry| entry.same_address(&host, port)) {
                return Err(DecodeError);
            }
            entries.push(Entry {
                node: NodeAddress { host, port, weight },
                member,
                stamp: Stamp { epoch, origin },
            });
        }
        if !reader.0.is_empty() {
            return Err(DecodeError);
        }
        Ok(NodeList { entries })
    }
}

/// Node-list datagrams share the cluster port's UDP socket with SWIM; their
/// first byte (0xCC) never starts a SWIM datagram (foca's begin with the
/// sender's name, a short string: its length, below 128).
const LIST_TAG: [u8; 4] = [0xCC, b'N', b'L', 1];
const DIGEST_TAG: [u8; 4] = [0xCC, b'N', b'D', 1];

/// A datagram on the cluster port, as gossip reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// Another node's whole list (merge it; answer with this node's if
    /// the merge leaves the two different).
    List(NodeList),
    /// Another node's list digest (answer with this node's list if it differs).
    Digest(u64),
    /// Not a node-list datagram: SWIM's.
    Swim(&'a [u8]),
}

impl Datagram<'_> {
    pub fn parse(bytes: &[u8]) -> Result<Datagram<'_>, DecodeError> {
        match bytes.split_at_checked(4) {
            Some((tag, rest)) if tag == LIST_TAG => Ok(Datagram::List(NodeList::decode(rest)?)),
            Some((tag, rest)) if tag == DIGEST_TAG => Ok(Datagram::Digest(u64::from_le_bytes(
                rest.try_into().map_err(|_| DecodeError)?,
            ))),
            _ if bytes.first() == Some(&LIST_TAG[0]) => Err(DecodeError),
            _ => Ok(Datagram::Swim(bytes)),
        }
    }

    pub fn list(list: &NodeList) -> Vec<u8> {
        let mut out = LIST_TAG.to_vec();
        list.encode(&mut out);
        out
    }

    pub fn digest(list: &NodeList) -> Vec<u8> {
        let mut out = DIGEST_TAG.to_vec();
        out.extend_from_slice(&list.digest().to_le_bytes());
        out
    }
}

impl fmt::Display for NodeList {
    /// `host:port:weight` of each member, comma-separated: the form
    /// `--cluster-nodes` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (_, node)) in self.members().enumerate() {
            let comma = if index == 0 { "" } else { "," };
            write!(f, "{comma}{node}:{}", node.weight)?;
        }
        Ok(())
    }
}

fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    encode_text(&entry.node.host, out);
    out.extend_from_slice(&entry.node.port.to_le_bytes());
    out.extend_from_slice(&entry.node.weight.to_le_bytes());
    out.push(u8::from(entry.member));
    out.extend_from_slice(&entry.stamp.epoch.to_le_bytes());
    encode_text(&entry.stamp.origin, out);
}

fn encode_text(text: &str, out: &mut Vec<u8>) {
    // Hosts and origins are names or addresses, far shorter than 255 bytes.
    let bytes = &text.as_bytes()[..text.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < count {
            return Err(DecodeError);
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("two bytes")))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        let length = usize::from(self.u8()?);
        String::from_utf8(self.take(length)?.to_vec()).map_err(|_| DecodeError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, weight: u32) -> NodeAddress {
        NodeAddress {
            host: host.to_string(),
            port: 11211,
            weight,
        }
    }

    fn three() -> NodeList {
        NodeList::initial(&[node("127.0.0.2", 1), node("127.0.0.3", 1), node("127.0.0.4", 1)])
    }

    fn members(list: &NodeList) -> Vec<String> {
        let mut members: Vec<String> = list.members().map(|(_, node)| format!("{node}:{}", node.weight)).collect();
        members.sort();
        members
    }

    #[test]
    fn changes_move_the_epoch_and_are_checked() {
        let list = three();
        assert_eq!(list.epoch(), 0);
        let added = list.changed(&Change::Add(node("127.0.0.5", 2)), "127.0.0.2:11211").unwrap();
        assert_eq!(added.epoch(), 1);
        assert_eq!(
            added.to_string(),
            "127.0.0.2:11211:1,127.0.0.3:11211:1,127.0.0.4:11211:1,127.0.0.5:11211:2"
        );
        assert_eq!(
            added.changed(&Change::Add(node("127.0.0.5", 1)), "x"),
            Err(ChangeError::AlreadyMember("127.0.0.5:11211".into()))
        );
        let removed = added
            .changed(
                &Change::Remove {
                    host: "127.0.0.3".into(),
                    port: 11211,
                },
                "x",
            )
            .unwrap();
        assert_eq!(removed.epoch(), 2);
        assert_eq!(removed.len(), 4, "a removed node keeps its slot");
        assert!(!removed.is_member(1));
        let remove_again = Change::Remove {
            host: "127.0.0.3".into(),
            port: 11211,
        };
        assert_eq!(
            removed.changed(&remove_again, "x"),
            Err(ChangeError::NotMember("127.0.0.3:11211".into()))
        );
        let weighted = removed
            .changed(
                &Change::Weight {
                    host: "127.0.0.2".into(),
                    port: 11211,
                    weight: 3,
                },
                "x",
            )
            .unwrap();
        assert_eq!(weighted.node(0).weight, 3);
        let back = weighted.changed(&Change::Add(node("127.0.0.3", 1)), "x").unwrap();
        assert_eq!(back.slot_of("127.0.0.3", 11211), Some(1), "re-added in its old slot");
        let single = NodeList::initial(&[node("127.0.0.2", 1)]);
        let remove_last = Change::Remove {
            host: "127.0.0.2".into(),
            port: 11211,
        };
        assert_eq!(single.changed(&remove_last, "x"), Err(ChangeError::LastNode));
    }

    #[test]
    fn concurrent_changes_on_two_nodes_end_in_one_list() {
        let start = three();
        // Two nodes add a node each at once: both at epoch 1.
        let on_a = start.changed(&Change::Add(node("127.0.0.5", 1)), "127.0.0.2:11211").unwrap();
        let on_b = start.changed(&Change::Add(node("127.0.0.6", 1)), "127.0.0.3:11211").unwrap();
        let (mut a, mut b) = (on_a.clone(), on_b.clone());
        assert!(a.merge(&on_b) && b.merge(&on_a));
        assert_eq!(a.digest(), b.digest(), "slot order differs, content does not");
        assert_eq!(members(&a), members(&b));
        assert_eq!(members(&a).len(), 5, "both adds survive");
        assert!(!a.merge(&b), "merging again changes nothing");
        // One address changed at once two ways: the larger stamp wins everywhere.
        let weight = |weight| Change::Weight {
            host: "127.0.0.4".into(),
            port: 11211,
            weight,
        };
        let on_a = a.changed(&weight(5), "127.0.0.2:11211").unwrap();
        let on_b = b
            .changed(
                &Change::Remove {
                    host: "127.0.0.4".into(),
                    port: 11211,
                },
                "127.0.0.3:11211",
            )
            .unwrap();
        let (mut a, mut b) = (on_a.clone(), on_b.clone());
        a.merge(&on_b);
        b.merge(&on_a);
        assert_eq!(a.digest(), b.digest());
        assert!(
            !a.is_member(a.slot_of("127.0.0.4", 11211).unwrap()),
            "127.0.0.3's stamp is larger"
        );
    }

    #[test]
    fn a_list_decodes_to_itself_and_bad_bytes_are_refused() {
        let list = three()
            .changed(&Change::Add(node("127.0.0.5", 7)), "127.0.0.2:11211")
            .unwrap();
        let mut bytes = Vec::new();
        list.encode(&mut bytes);
        assert_eq!(NodeList::decode(&bytes), Ok(list.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(NodeList::decode(&bytes[..cut]), Err(DecodeError), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(NodeList::decode(&longer), Err(DecodeError));
        assert_eq!(list.slot_named("127.0.0.5:11211"), Some(3));
        assert_eq!(Datagram::parse(&Datagram::list(&list)), Ok(Datagram::List(list.clone())));
        assert_eq!(Datagram::parse(&Datagram::digest(&list)), Ok(Datagram::Digest(list.digest())));
        assert_eq!(Datagram::parse(b"\x0f127.0.0.2"), Ok(Datagram::Swim(b"\x0f127.0.0.2")));
        assert_eq!(Datagram::parse(&[0xCC, b'N']), Err(DecodeError));
        assert_eq!(list.slot_named("127.0.0.5"), None);
    }
}

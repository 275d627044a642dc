//! Multi-key calls as plain code, shared by every driver: a call's keys
//! are split by node (topology.rs); for each node's group this writes the
//! group's requests and gathers their replies into the call's answer, in
//! the keys' order.

use crate::call::{Value, Wire};
use crate::codec::{Event, Expect, Fetch, Reply, StoreMode};
use crate::error::Error;

/// A call on many keys.
#[derive(Clone, Copy, Debug)]
pub enum Many<'a> {
    /// One multi-get per node.
    Get { keys: &'a [&'a [u8]] },
    /// One set per key; with `wait`, one wait per node after its last set.
    Set {
        items: &'a [(&'a [u8], &'a [u8])],
        flags: u32,
        exptime: u32,
        wait: Option<u32>,
    },
    /// One delete per key.
    Delete { keys: &'a [&'a [u8]] },
}

/// What a multi-key call found, index by index of its keys.
#[derive(Debug)]
pub struct Gathered {
    pub values: Vec<Option<Value>>,
    pub found: Vec<bool>,
}

impl Many<'_> {
    /// The call's keys, in its order.
    pub fn keys(&self) -> Vec<&[u8]> {
        match *self {
            Many::Get { keys } | Many::Delete { keys } => keys.to_vec(),
            Many::Set { items, .. } => items.iter().map(|(key, _)| *key).collect(),
        }
    }

    /// An empty result, one slot per key.
    pub fn gathered(&self) -> Gathered {
        let count = self.keys().len();
        Gathered {
            values: vec![None; count],
            found: vec![false; count],
        }
    }

    /// The requests for the keys at `group` (indexes into the call's keys).
    pub fn encode(&self, wire: &Wire, group: &[usize], out: &mut Vec<u8>, expects: &mut Vec<Expect>) -> Result<(), Error> {
        let protocol = wire.protocol;
        match *self {
            Many::Get { keys } => {
                expects.push(protocol.get(group.iter().map(|&i| keys[i]), Fetch { cas: true, touch: None }, out))
            }
            Many::Set {
                items,
                flags,
                exptime,
                wait,
            } => {
                for &index in group {
                    let (key, value) = items[index];
                    expects.push(protocol.store(StoreMode::Set, key, value, flags, exptime, out));
                }
                if let Some(copies) = wait {
                    // The connection's last write is the group's last set.
                    expects.push(protocol.wait(copies, wire.wait_ms, out)?);
                }
            }
            Many::Delete { keys } => {
                for &index in group {
                    expects.push(protocol.delete(keys[index], out));
                }
            }
        }
        Ok(())
    }

    /// An event of the `request`-th reply of `group`'s requests.
    pub fn event(&self, gathered: &mut Gathered, group: &[usize], request: usize, event: Event) -> Result<(), Error> {
        match (self, event) {
            (Many::Get { keys }, Event::Item(item)) => {
                // Hits come in request order: the first not yet found with this key.
                if let Some(&index) = group.iter().find(|&&i| keys[i] == item.key && gathered.values[i].is_none()) {
                    gathered.values[index] = Some(Value {
                        data: item.value.to_vec(),
                        flags: item.flags,
                        cas: item.cas,
                    });
                }
                Ok(())
            }
            (_, Event::Done(Reply::Error(error))) => Err(Error::Server(error)),
            (Many::Set { wait: Some(wanted), .. }, Event::Done(Reply::Copies(reached))) if reached < *wanted => {
                Err(Error::TooFewCopies {
                    wanted: *wanted,
                    reached,
                })
            }
            (Many::Delete { .. }, Event::Done(Reply::Deleted)) => {
                gathered.found[group[request]] = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Item, Protocol};

    const WIRE: Wire = Wire {
        protocol: Protocol::Meta,
        copies: 3,
        wait_ms: 100,
    };

    #[test]
    fn a_group_s_hits_land_at_their_keys_indexes() {
        let keys: [&[u8]; 3] = [b"a", b"b", b"a"];
        let many = Many::Get { keys: &keys };
        let (mut out, mut expects) = (Vec::new(), Vec::new());
        many.encode(&WIRE, &[0, 2], &mut out, &mut expects).unwrap();
        assert_eq!(out, b"mg a v f k c q\r\nmg a v f k c q\r\nmn\r\n");
        let mut gathered = many.gathered();
        for cas in [1, 2] {
            let item = Item {
                key: b"a",
                flags: 0,
                cas,
                value: b"v",
            };
            many.event(&mut gathered, &[0, 2], 0, Event::Item(item)).unwrap();
        }
        let cas: Vec<Option<u64>> = gathered.values.iter().map(|v| v.as_ref().map(|v| v.cas)).collect();
        assert_eq!(cas, [Some(1), None, Some(2)]);
    }

    #[test]
    fn sets_end_with_one_wait_and_fewer_copies_fail_the_call() {
        let items: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"2")];
        let many = Many::Set {
            items: &items,
            flags: 0,
            exptime: 0,
            wait: Some(2),
        };
        let (mut out, mut expects) = (Vec::new(), Vec::new());
        many.encode(&WIRE, &[0, 1], &mut out, &mut expects).unwrap();
        assert_eq!(out, b"ms a 1 F0 T0\r\n1\r\nms b 1 F0 T0\r\n2\r\nwait 2 100\r\n");
        let mut gathered = many.gathered();
        assert!(matches!(
            many.event(&mut gathered, &[0, 1], 2, Event::Done(Reply::Copies(1))),
            Err(Error::TooFewCopies { wanted: 2, reached: 1 })
        ));
    }
}

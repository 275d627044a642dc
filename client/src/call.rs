//! One key's call as plain code, shared by every driver: the requests it
//! sends (a write followed by corecache's `wait` when a consistency level
//! asks for copies) and how the replies become its outcome.

use crate::codec::{Event, Expect, Fetch, Protocol, Reply, StoreMode};
use crate::error::Error;

/// How many copies a write must reach before the call returns.
///
/// ```
/// use corecache_client::Consistency;
/// // With `--copies 3`: QUORUM waits for 2, ALL for 3, ONE for none.
/// assert_eq!(Consistency::Quorum.copies(3), Some(2));
/// assert_eq!(Consistency::All.copies(3), Some(3));
/// assert_eq!(Consistency::One.copies(3), None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// The node acting for the key applied it (memcached's own meaning).
    #[default]
    One,
    /// A majority of the cluster's `--copies`, counting the acting node.
    Quorum,
    /// Every one of `--copies`.
    All,
}

impl Consistency {
    /// The copies to `wait` for, out of `copies`; None for ONE.
    pub fn copies(self, copies: u32) -> Option<u32> {
        match self {
            Consistency::One => None,
            Consistency::Quorum => Some(copies / 2 + 1),
            Consistency::All => Some(copies),
        }
    }
}

/// A value read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub data: Vec<u8>,
    pub flags: u32,
    /// The key's version (0 from a text `get`, which this client does not send).
    pub cas: u64,
}

/// What a compare-and-swap did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    Stored,
    /// Another write came first: the CAS no longer matches.
    Exists,
    NotFound,
}

/// One operation on one key.
#[derive(Clone, Copy, Debug)]
pub enum Call<'a> {
    /// `touch`: also set the expiry (gat).
    Get {
        key: &'a [u8],
        touch: Option<u32>,
    },
    /// corecache's quorum read: the copy with the largest CAS.
    QuorumGet {
        key: &'a [u8],
    },
    /// The copy the node sent to holds (`cluster local`): a hot key's
    /// read spread over its copies.
    LocalGet {
        key: &'a [u8],
    },
    Store {
        mode: StoreMode,
        key: &'a [u8],
        value: &'a [u8],
        flags: u32,
        exptime: u32,
        consistency: Consistency,
    },
    Delete {
        key: &'a [u8],
        consistency: Consistency,
    },
    Arith {
        key: &'a [u8],
        delta: u64,
        increment: bool,
        consistency: Consistency,
    },
    Touch {
        key: &'a [u8],
        exptime: u32,
    },
}

/// A call's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A get: the value, or None on a miss.
    Value(Option<Value>),
    /// A store other than CAS: stored, or not (add of a present key,
    /// replace/append/prepend of a missing one).
    Stored(bool),
    Cas(CasOutcome),
    /// A delete or touch: the key was there.
    Found(bool),
    /// An incr or decr: the new value, or None if the key is missing.
    Number(Option<u64>),
}

impl Outcome {
    /// A get's value (None on a miss).
    pub fn value(self, request: &'static str) -> Result<Option<Value>, Error> {
        match self {
            Outcome::Value(value) => Ok(value),
            other => Err(other.unexpected(request)),
        }
    }

    /// Whether a store stored.
    pub fn stored(self, request: &'static str) -> Result<bool, Error> {
        match self {
            Outcome::Stored(stored) => Ok(stored),
            Outcome::Cas(outcome) => Ok(outcome == CasOutcome::Stored),
            other => Err(other.unexpected(request)),
        }
    }

    /// A compare-and-swap's outcome.
    pub fn cas(self, request: &'static str) -> Result<CasOutcome, Error> {
        match self {
            Outcome::Cas(outcome) => Ok(outcome),
            other => Err(other.unexpected(request)),
        }
    }

    /// Whether a delete or touch found its key.
    pub fn found(self, request: &'static str) -> Result<bool, Error> {
        match self {
            Outcome::Found(found) => Ok(found),
            other => Err(other.unexpected(request)),
        }
    }

    /// An incr's or decr's new value (None: the key is missing).
    pub fn number(self, request: &'static str) -> Result<Option<u64>, Error> {
        match self {
            Outcome::Number(number) => Ok(number),
            other => Err(other.unexpected(request)),
        }
    }

    fn unexpected(self, request: &'static str) -> Error {
        Error::UnexpectedReply {
            request,
            reply: format!("{self:?}"),
        }
    }
}

/// A write's flags, expiry and consistency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Store {
    pub flags: u32,
    /// Seconds (up to 30 days), or an absolute Unix time; 0: no expiry.
    pub exptime: u32,
    pub consistency: Consistency,
}

impl Store {
    /// The call storing `value` under `key` with these options.
    pub fn call<'a>(&self, mode: StoreMode, key: &'a [u8], value: &'a [u8]) -> Call<'a> {
        Call::Store {
            mode,
            key,
            value,
            flags: self.flags,
            exptime: self.exptime,
            consistency: self.consistency,
        }
    }

    /// The options a hot key's extra copies are written with: at most
    /// `copy_ttl`, ONE.
    pub fn for_copies(&self, config: &crate::hot::HotKeyConfig) -> Store {
        let exptime = match self.exptime {
            0 => config.copy_ttl,
            exptime => exptime.min(config.copy_ttl),
        };
        Store {
            flags: self.flags,
            exptime,
            consistency: Consistency::One,
        }
    }
}

/// The lines of a `stats` reply.
pub fn stats_of(reply: Option<Reply>) -> Result<Vec<(String, String)>, Error> {
    match reply {
        Some(Reply::Stats(stats)) => Ok(stats),
        Some(Reply::Error(error)) => Err(Error::Server(error)),
        other => Err(Error::UnexpectedReply {
            request: "stats",
            reply: format!("{other:?}"),
        }),
    }
}

/// The node list and `--copies` from the replies to `cluster nodes` and
/// `stats cluster`.
pub fn cluster_of(nodes: Option<Reply>, stats: Option<Reply>) -> Result<(crate::codec::ClusterNodes, u32), Error> {
    let nodes = match nodes {
        Some(Reply::Nodes(nodes)) => nodes,
        Some(Reply::Error(error)) => return Err(Error::Server(error)),
        other => {
            return Err(Error::UnexpectedReply {
                request: "cluster nodes",
                reply: format!("{other:?}"),
            });
        }
    };
    let copies = stats_of(stats)?
        .iter()
        .find(|(name, _)| name == "copies")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(1);
    Ok((nodes, copies))
}

/// How the requests of a call are sent.
#[derive(Clone, Copy, Debug)]
pub struct Wire {
    pub protocol: Protocol,
    /// The cluster's `--copies` (for QUORUM and ALL).
    pub copies: u32,
    /// How long `wait` may block, in milliseconds.
    pub wait_ms: u32,
}

impl Call<'_> {
    /// The key the call is routed by.
    pub fn key(&self) -> &[u8] {
        match *self {
            Call::Get { key, .. }
            | Call::QuorumGet { key }
            | Call::LocalGet { key }
            | Call::Store { key, .. }
            | Call::Delete { key, .. }
            | Call::Arith { key, .. }
            | Call::Touch { key, .. } => key,
        }
    }

    /// Whether sending it twice does no harm (a read, or a write that
    /// sets what it sets): only those are sent again after a reply was
    /// lost.
    pub fn repeatable(&self) -> bool {
        !matches!(
            self,
            Call::Arith { .. }
                | Call::Store {
                    mode: StoreMode::Append | StoreMode::Prepend,
                    ..
                }
        )
    }

    /// Appends the call's requests to `out` and their replies' shapes to
    /// `expects`.
    pub fn encode(&self, wire: &Wire, out: &mut Vec<u8>, expects: &mut Vec<Expect>) -> Result<(), Error> {
        let protocol = wire.protocol;
        let consistency = match *self {
            Call::Get { key, touch } => {
                expects.push(protocol.get([key], Fetch { cas: true, touch }, out));
                Consistency::One
            }
            Call::QuorumGet { key } => {
                expects.push(protocol.cluster_get(key, out)?);
                Consistency::One
            }
            Call::LocalGet { key } => {
                expects.push(protocol.cluster_local(key, out)?);
                Consistency::One
            }
            Call::Store {
                mode,
                key,
                value,
                flags,
                exptime,
                consistency,
            } => {
                expects.push(protocol.store(mode, key, value, flags, exptime, out));
                consistency
            }
            Call::Delete { key, consistency } => {
                expects.push(protocol.delete(key, out));
                consistency
            }
            Call::Arith {
                key,
                delta,
                increment,
                consistency,
            } => {
                expects.push(protocol.arith(key, delta, increment, out));
                consistency
            }
            Call::Touch { key, exptime } => {
                expects.push(protocol.touch(key, exptime, out));
                Consistency::One
            }
        };
        if let Some(copies) = consistency.copies(wire.copies) {
            expects.push(protocol.wait(copies, wire.wait_ms, out)?);
        }
        Ok(())
    }

    /// Collects the events of the call's replies.
    pub fn answer(&self, wire: &Wire) -> Answer {
        let wanted = match *self {
            Call::Store { consistency, .. } | Call::Delete { consistency, .. } | Call::Arith { consistency, .. } => {
                consistency.copies(wire.copies)
            }
            _ => None,
        };
        Answer {
            shape: match *self {
                Call::Get { .. } | Call::QuorumGet { .. } | Call::LocalGet { .. } => Shape::Read,
                Call::Store { mode, .. } => Shape::Store(mode),
                Call::Delete { .. } | Call::Touch { .. } => Shape::Found,
                Call::Arith { .. } => Shape::Number,
            },
            value: None,
            reply: None,
            wanted,
            copies: None,
        }
    }
}

/// Which outcome a call's reply makes.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Read,
    Store(StoreMode),
    Found,
    Number,
}

/// The replies of one call as they are decoded.
#[derive(Debug)]
pub struct Answer {
    shape: Shape,
    value: Option<Value>,
    reply: Option<Reply>,
    wanted: Option<u32>,
    copies: Option<Reply>,
}

impl Answer {
    /// An event of the call's `request`-th reply (0: the operation, 1: its wait).
    pub fn event(&mut self, request: usize, event: Event) {
        match (request, event) {
            (0, Event::Item(item)) => {
                self.value = Some(Value {
                    data: item.value.to_vec(),
                    flags: item.flags,
                    cas: item.cas,
                })
            }
            (0, Event::Done(reply)) => self.reply = Some(reply),
            (_, Event::Done(reply)) => self.copies = Some(reply),
            (_, Event::Item(_)) => {}
        }
    }

    /// The outcome, once every reply is done.
    pub fn finish(self, request: &'static str) -> Result<Outcome, Error> {
        let unexpected = |reply: &Reply| Error::UnexpectedReply {
            request,
            reply: format!("{reply:?}"),
        };
        let reply = self.reply.ok_or_else(|| unexpected(&Reply::Values { found: 0 }))?;
        let outcome = match (&reply, self.shape) {
            (Reply::Error(error), _) => return Err(Error::Server(error.clone())),
            (Reply::Values { .. }, Shape::Read) => Outcome::Value(self.value),
            (Reply::Stored, Shape::Store(StoreMode::Cas(_))) => Outcome::Cas(CasOutcome::Stored),
            (Reply::Exists, Shape::Store(StoreMode::Cas(_))) => Outcome::Cas(CasOutcome::Exists),
            (Reply::NotFound, Shape::Store(StoreMode::Cas(_))) => Outcome::Cas(CasOutcome::NotFound),
            (Reply::Stored, Shape::Store(_)) => Outcome::Stored(true),
            (Reply::NotStored, Shape::Store(_)) => Outcome::Stored(false),
            (Reply::Deleted | Reply::Touched, Shape::Found) => Outcome::Found(true),
            (Reply::NotFound, Shape::Found) => Outcome::Found(false),
            (Reply::Number(number), Shape::Number) => Outcome::Number(Some(*number)),
            (Reply::NotFound, Shape::Number) => Outcome::Number(None),
            _ => return Err(unexpected(&reply)),
        };
        if let Some(wanted) = self.wanted {
            // A write not made (a miss, a CAS lost) has no copies to count.
            let made = matches!(
                outcome,
                Outcome::Stored(true) | Outcome::Cas(CasOutcome::Stored) | Outcome::Found(true) | Outcome::Number(Some(_))
            );
            match self.copies {
                Some(Reply::Copies(reached)) if made && reached < wanted => {
                    return Err(Error::TooFewCopies { wanted, reached });
                }
                Some(Reply::Copies(_)) => {}
                Some(Reply::Error(error)) => return Err(Error::Server(error)),
                other => return Err(unexpected(&other.unwrap_or(Reply::Values { found: 0 }))),
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Item;

    const WIRE: Wire = Wire {
        protocol: Protocol::Meta,
        copies: 3,
        wait_ms: 500,
    };

    #[test]
    fn quorum_and_all_are_counted_from_the_cluster_s_copies() {
        assert_eq!(
            [1, 2, 3, 5].map(|c| Consistency::Quorum.copies(c)),
            [Some(1), Some(2), Some(2), Some(3)]
        );
        assert_eq!(Consistency::All.copies(3), Some(3));
        assert_eq!(Consistency::One.copies(3), None);
    }

    #[test]
    fn a_quorum_write_sends_wait_after_it_and_checks_the_count() {
        let call = Call::Store {
            mode: StoreMode::Set,
            key: b"k",
            value: b"v",
            flags: 0,
            exptime: 0,
            consistency: Consistency::Quorum,
        };
        let (mut out, mut expects) = (Vec::new(), Vec::new());
        call.encode(&WIRE, &mut out, &mut expects).unwrap();
        assert_eq!(out, b"ms k 1 F0 T0\r\nv\r\nwait 2 500\r\n");
        assert_eq!(expects.len(), 2);
        let finish = |copies| {
            let mut answer = call.answer(&WIRE);
            answer.event(0, Event::Done(Reply::Stored));
            answer.event(1, Event::Done(Reply::Copies(copies)));
            answer.finish("set")
        };
        assert_eq!(finish(2).unwrap(), Outcome::Stored(true));
        assert!(matches!(finish(1), Err(Error::TooFewCopies { wanted: 2, reached: 1 })));
    }

    #[test]
    fn replies_become_outcomes() {
        let get = Call::Get { key: b"k", touch: None };
        let mut answer = get.answer(&WIRE);
        let item = Item {
            key: b"k",
            flags: 4,
            cas: 9,
            value: b"v",
        };
        answer.event(0, Event::Item(item));
        answer.event(0, Event::Done(Reply::Values { found: 1 }));
        let value = Value {
            data: b"v".to_vec(),
            flags: 4,
            cas: 9,
        };
        assert_eq!(answer.finish("get").unwrap(), Outcome::Value(Some(value)));
        let incr = Call::Arith {
            key: b"k",
            delta: 1,
            increment: true,
            consistency: Consistency::One,
        };
        let mut answer = incr.answer(&WIRE);
        answer.event(0, Event::Done(Reply::NotFound));
        assert_eq!(answer.finish("incr").unwrap(), Outcome::Number(None));
        assert!(!incr.repeatable());
    }
}

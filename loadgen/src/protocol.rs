//! The load generator's operations on the wire, for the three dialects:
//! keys and values spelled from indexes, requests encoded and replies read
//! by corecache-client's codec, values checked against what was stored.

use std::cell::RefCell;

use corecache_client::codec::{self, Event, Expect, Fetch, Reply as ClientReply, StoreMode};

use crate::keys::KeyFormat;
use crate::workload::{Op, OpKind, ValueSize, value_matches, value_of};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Text,
    Meta,
    Binary,
}

/// What one response said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub hits: u32,
    pub misses: u32,
    /// The kind of error, if the server answered with one.
    pub error: Option<String>,
    /// Values that did not match what was stored under their key.
    pub verify_failures: u32,
}

/// Spells requests and reads responses for one protocol, through
/// corecache-client's codec (the workspace's one client side of the
/// protocols).
#[derive(Clone, Debug)]
pub struct Codec {
    pub protocol: Protocol,
    pub keys: KeyFormat,
    /// Counters live under their own prefix so values stay verifiable.
    pub counter_keys: KeyFormat,
    pub values: ValueSize,
    pub ttl: u32,
    pub verify: bool,
}

/// Keys and a value spelled for one request, reused by every request of
/// the thread (no allocation per request once they have grown).
#[derive(Default)]
struct Scratch {
    keys: Vec<u8>,
    /// Where each key of `keys` ends.
    ends: Vec<usize>,
    value: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Scratch {
    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.keys[start..end])
    }
}

impl Codec {
    fn wire(&self) -> codec::Protocol {
        match self.protocol {
            Protocol::Text => codec::Protocol::Text,
            Protocol::Meta => codec::Protocol::Meta,
            Protocol::Binary => codec::Protocol::Binary,
        }
    }

    /// Spells the key `index` of an operation of `kind` (for routing).
    pub fn write_key(&self, kind: OpKind, index: u64, out: &mut Vec<u8>) {
        self.format(kind).write(index, out)
    }

    fn format(&self, kind: OpKind) -> &KeyFormat {
        if kind == OpKind::Incr {
            &self.counter_keys
        } else {
            &self.keys
        }
    }

    /// The request that stores key `index` (prefill uses it too).
    pub fn encode_set(&self, index: u64, out: &mut Vec<u8>) -> Expect {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.keys.clear();
            scratch.value.clear();
            self.keys.write(index, &mut scratch.keys);
            value_of(index, self.values.of(index), &mut scratch.value);
            self.wire()
                .store(StoreMode::Set, &scratch.keys, &scratch.value, 0, self.ttl, out)
        })
    }

    /// The request that seeds counter `index` with "0".
    pub fn encode_counter_seed(&self, index: u64, out: &mut Vec<u8>) -> Expect {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.keys.clear();
            self.counter_keys.write(index, &mut scratch.keys);
            self.wire().store(StoreMode::Set, &scratch.keys, b"0", 0, 0, out)
        })
    }

    pub fn encode(&self, op: &Op, out: &mut Vec<u8>) -> Expect {
        if op.kind == OpKind::Set {
            return self.encode_set(op.keys[0], out);
        }
        let format = self.format(op.kind);
        let wire = self.wire();
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.keys.clear();
            scratch.ends.clear();
            for &index in &op.keys {
                format.write(index, &mut scratch.keys);
                scratch.ends.push(scratch.keys.len());
            }
            let key = || scratch.keys().next().expect("one key");
            match op.kind {
                OpKind::Get => wire.get(scratch.keys(), Fetch::default(), out),
                OpKind::Delete => wire.delete(key(), out),
                OpKind::Incr => wire.arith(key(), 1, true, out),
                OpKind::Set => unreachable!("handled above"),
            }
        })
    }

    /// Reads what has arrived of the reply `expect` describes into
    /// `reply` (hits and misses add up, so the parts of a get split over
    /// nodes share one): the bytes it took, and whether it is complete.
    pub fn decode(&self, expect: &mut Expect, reply: &mut Reply, buf: &[u8]) -> (usize, bool) {
        let mut at = 0;
        loop {
            match self.wire().decode(expect, &buf[at..]) {
                Ok(None) => return (at, false),
                Ok(Some((used, Event::Item(item)))) => {
                    at += used;
                    reply.hits += 1;
                    self.check_value(item.key, item.value, reply);
                }
                Ok(Some((used, Event::Done(done)))) => {
                    at += used;
                    match done {
                        ClientReply::Values { found } => reply.misses += expect.keys().saturating_sub(found),
                        ClientReply::Stored | ClientReply::Deleted | ClientReply::Touched | ClientReply::Number(_) => {
                            reply.hits += 1
                        }
                        ClientReply::NotStored | ClientReply::NotFound | ClientReply::Exists => reply.misses += 1,
                        ClientReply::Error(error) => reply.error = Some(error.to_string()),
                        other => reply.error = Some(format!("unexpected reply {other:?}")),
                    }
                    return (at, true);
                }
                Err(error) => {
                    // Out of step: what has arrived is dropped with the reply.
                    reply.error = Some(error.to_string());
                    return (buf.len(), true);
                }
            }
        }
    }

    fn check_value(&self, key: &[u8], data: &[u8], reply: &mut Reply) {
        if !self.verify {
            return;
        }
        let Some(index) = self.keys.index_of(key) else {
            reply.verify_failures += 1;
            return;
        };
        if !value_matches(index, self.values.of(index), data) {
            reply.verify_failures += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(protocol: Protocol) -> Codec {
        Codec {
            protocol,
            keys: KeyFormat {
                prefix: "k:".into(),
                length: 6,
            },
            counter_keys: KeyFormat {
                prefix: "k:n:".into(),
                length: 8,
            },
            values: ValueSize { min: 3, max: 3 },
            ttl: 0,
            verify: true,
        }
    }

    fn op(kind: OpKind, keys: &[u64]) -> Op {
        Op {
            kind,
            keys: keys.to_vec(),
        }
    }

    /// The reply to `expect`, arriving in two reads split at every byte:
    /// the same each time; the bytes it took and what it said.
    fn decoded(codec: &Codec, expect: Expect, response: &[u8]) -> (usize, Reply) {
        let whole = |cut: usize| {
            let (mut expect, mut reply) = (expect, Reply::default());
            let (first, done) = codec.decode(&mut expect, &mut reply, &response[..cut]);
            if done {
                return (first, reply);
            }
            let (rest, done) = codec.decode(&mut expect, &mut reply, &response[first..]);
            assert!(done, "incomplete: {:?}", String::from_utf8_lossy(response));
            (first + rest, reply)
        };
        let all = whole(response.len());
        for cut in 0..response.len() {
            assert_eq!(whole(cut), all, "split at {cut}");
        }
        all
    }

    #[test]
    fn text_requests_and_replies() {
        let codec = codec(Protocol::Text);
        let mut out = Vec::new();
        let get = codec.encode(&op(OpKind::Get, &[1, 2]), &mut out);
        let set = codec.encode(&op(OpKind::Set, &[1]), &mut out);
        let incr = codec.encode(&op(OpKind::Incr, &[3]), &mut out);
        assert_eq!(out, b"get k:0001 k:0002\r\nset k:0001 0 0 3\r\nbcd\r\nincr k:n:0003 1\r\n");
        let response = b"VALUE k:0001 0 3\r\nbcd\r\nEND\r\n";
        let (consumed, reply) = decoded(&codec, get, response);
        assert_eq!(
            (consumed, reply.hits, reply.misses, reply.verify_failures),
            (response.len(), 1, 1, 0)
        );
        let (_, corrupt) = decoded(&codec, get, b"VALUE k:0001 0 3\r\nxxx\r\nEND\r\n");
        assert_eq!(corrupt.verify_failures, 1);
        assert_eq!(decoded(&codec, set, b"STORED\r\n").1.hits, 1);
        assert_eq!(decoded(&codec, incr, b"42\r\n").1.hits, 1);
        let (_, error) = decoded(&codec, set, b"SERVER_ERROR out of memory storing object\r\n");
        assert_eq!(error.error.as_deref(), Some("SERVER_ERROR out of memory storing object"));
    }

    #[test]
    fn meta_requests_and_replies() {
        let codec = codec(Protocol::Meta);
        let mut out = Vec::new();
        let get = codec.encode(&op(OpKind::Get, &[1, 2]), &mut out);
        assert_eq!(out, b"mg k:0001 v f k q\r\nmg k:0002 v f k q\r\nmn\r\n");
        let (_, reply) = decoded(&codec, get, b"VA 3 f0 kk:0001\r\nbcd\r\nMN\r\n");
        assert_eq!((reply.hits, reply.misses, reply.verify_failures), (1, 1, 0));
        let one = codec.encode(&op(OpKind::Get, &[1]), &mut out);
        assert_eq!(decoded(&codec, one, b"EN\r\n").1.misses, 1);
        let delete = codec.encode(&op(OpKind::Delete, &[1]), &mut out);
        assert_eq!(decoded(&codec, delete, b"NF\r\n").1.misses, 1);
    }

    #[test]
    fn binary_requests_and_replies() {
        let codec = codec(Protocol::Binary);
        let mut out = Vec::new();
        let get = codec.encode(&op(OpKind::Get, &[1]), &mut out);
        assert_eq!(&out[..2], &[0x80, 0x0c]);
        assert_eq!(out.len(), 24 + 6);
        let mut response = vec![0x81, 0x0c, 0, 6, 4, 0, 0, 0];
        response.extend_from_slice(&13u32.to_be_bytes());
        response.extend_from_slice(&[0; 12]);
        response.extend_from_slice(&[0, 0, 0, 0]);
        response.extend_from_slice(b"k:0001bcd");
        let (consumed, reply) = decoded(&codec, get, &response);
        assert_eq!((consumed, reply.hits, reply.verify_failures), (response.len(), 1, 0));
    }
}

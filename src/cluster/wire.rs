//! The frames a node forwards key operations in, and the frames their
//! outcomes come back in: protocol-neutral (`KeyOp`, `Outcome`), so the
//! client's own protocol, its `noreply` and quiet semantics stay on the node
//! that received it. Sans-IO: bytes in, borrowed values out.
//!
//! A link opens with the byte `PEER_MAGIC` (no memcached request starts
//! with it), then carries frames: a little-endian u32 body length and the
//! body, one encoded op per request frame and one encoded outcome per reply
//! frame. Replies come back in request order, one per request.

use thiserror::Error;

use crate::request::{
    ArithOptions, DeleteOptions, GetOptions, ItemInfo, KeyOp, Outcome, Recache, Refusal, StoreMode, StoreOptions,
};

/// The first byte a node sends on a link to another node's client port.
pub const PEER_MAGIC: u8 = 0xC0;

/// The largest frame body accepted (an op carries at most one value of `-I`).
pub const MAX_FRAME: usize = 1 << 30;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("cluster frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("cluster frame is malformed: {0}")]
    Malformed(&'static str),
}

/// What a request frame asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Key(KeyOp<&'a [u8]>),
    /// A key op the sending node took from another node's link and sent
    /// on to the node it sees acting for the key (its sender's view was
    /// behind): the receiver runs it or refuses it, never sends it on.
    Relayed(KeyOp<&'a [u8]>),
    /// flush_all on the receiving node only (the sender flushes the
    /// others). Acknowledged with the outcome `Deleted`, or `Refused`.
    FlushAll {
        delay: i64,
    },
    /// For `wait`, about a key the receiving node acts for: where its
    /// shard's log stands (`at` None), or how many copies have applied it
    /// up to `at`. Answered with `Outcome::Number`.
    Copies {
        key: &'a [u8],
        at: Option<u64>,
    },
    /// For a quorum read: the receiving node's own copy of a key, whether
    /// or not it acts for it (a look that changes nothing). Answered like
    /// a get.
    CopyOf {
        key: &'a [u8],
    },
}

/// Appends a request frame holding `op` (`relayed`: Request::Relayed).
pub fn encode_op(out: &mut Vec<u8>, op: &KeyOp<&[u8]>, relayed: bool) {
    let start = begin_frame(out);
    if relayed {
        out.push(RELAYED);
    }
    put_op(out, op);
    end_frame(out, start);
}

/// Appends a request frame asking for a flush_all.
pub fn encode_flush_all(out: &mut Vec<u8>, delay: i64) {
    let start = begin_frame(out);
    out.push(FLUSH_ALL);
    put_i64(out, delay);
    end_frame(out, start);
}

/// Appends a request frame asking about the copies of `key` (Request::Copies).
pub fn encode_copies(out: &mut Vec<u8>, key: &[u8], at: Option<u64>) {
    let start = begin_frame(out);
    out.push(COPIES);
    put_bytes(out, key);
    put_option_u64(out, at);
    end_frame(out, start);
}

/// Appends a request frame asking for the receiver's copy of `key` (Request::CopyOf).
pub fn encode_copy_of(out: &mut Vec<u8>, key: &[u8]) {
    let start = begin_frame(out);
    out.push(COPY_OF);
    put_bytes(out, key);
    end_frame(out, start);
}

/// Appends a reply frame holding `outcome`.
pub fn encode_outcome(out: &mut Vec<u8>, outcome: &Outcome<&[u8]>) {
    let start = begin_frame(out);
    put_outcome(out, outcome);
    end_frame(out, start);
}

/// The body of the first whole frame in `bytes` and the bytes it took, or
/// None if the frame is not complete yet.
pub fn frame(bytes: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(length) = bytes.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
    if length > MAX_FRAME {
        return Err(WireError::TooLarge(length));
    }
    Ok(bytes.get(4..4 + length).map(|body| (body, 4 + length)))
}

/// The request of a request frame's body.
pub fn decode_request(body: &[u8]) -> Result<Request<'_>, WireError> {
    let mut reader = Reader(body);
    let request = match body.first() {
        Some(&FLUSH_ALL) => {
            reader.u8()?;
            Request::FlushAll { delay: reader.i64()? }
        }
        Some(&COPIES) => {
            reader.u8()?;
            Request::Copies {
                key: reader.bytes()?,
                at: reader.option_u64()?,
            }
        }
        Some(&COPY_OF) => {
            reader.u8()?;
            Request::CopyOf { key: reader.bytes()? }
        }
        Some(&RELAYED) => {
            reader.u8()?;
            Request::Relayed(reader.op()?)
        }
        _ => Request::Key(reader.op()?),
    };
    reader.finish()?;
    Ok(request)
}

/// The outcome of a reply frame's body.
pub fn decode_outcome(body: &[u8]) -> Result<Outcome<&[u8]>, WireError> {
    let mut reader = Reader(body);
    let outcome = reader.outcome()?;
    reader.finish()?;
    Ok(outcome)
}

fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    start
}

fn end_frame(out: &mut [u8], start: usize) {
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

fn put_option_i64(out: &mut Vec<u8>, value: Option<i64>) {
    match value {
        Some(value) => {
            out.push(1);
            put_i64(out, value);
        }
        None => out.push(0),
    }
}

fn put_option_u64(out: &mut Vec<u8>, value: Option<u64>) {
    put_option_i64(out, value.map(|value| value as i64));
}

/// Booleans as one byte of bits, first argument lowest.
fn put_bits(out: &mut Vec<u8>, bits: &[bool]) {
    out.push(
        bits.iter()
            .enumerate()
            .fold(0u8, |byte, (i, &bit)| byte | (u8::from(bit) << i)),
    );
}

const GET: u8 = 0;
const STORE: u8 = 1;
const DELETE: u8 = 2;
const ARITH: u8 = 3;
const TOUCH: u8 = 4;
const FLUSH_ALL: u8 = 5;
const COPIES: u8 = 6;
const COPY_OF: u8 = 7;
const RELAYED: u8 = 8;

fn put_op(out: &mut Vec<u8>, op: &KeyOp<&[u8]>) {
    match op {
        KeyOp::Get { key, options } => {
            out.push(GET);
            put_bytes(out, key);
            put_option_i64(out, options.touch);
            put_option_i64(out, options.vivify);
            put_option_i64(out, options.recache_below);
            put_option_u64(out, options.new_cas);
            put_bits(
                out,
                &[
                    options.recache_after_touch,
                    options.touch_after_vivify,
                    options.no_bump,
                    options.peek,
                    options.claims_win,
                    options.resend,
                ],
            );
        }
        KeyOp::Store {
            mode,
            key,
            client_flags,
            exptime,
            value,
            options,
        } => {
            out.push(STORE);
            put_bytes(out, key);
            out.push(match mode {
                StoreMode::Set => 0,
                StoreMode::Add => 1,
                StoreMode::Replace => 2,
                StoreMode::Append => 3,
                StoreMode::Prepend => 4,
            });
            put_u32(out, *client_flags);
            put_i64(out, *exptime);
            put_bytes(out, value);
            put_option_u64(out, options.compare_cas);
            put_option_u64(out, options.new_cas);
            put_option_i64(out, options.vivify);
            put_bits(out, &[options.invalidate, options.binary_key]);
        }
        KeyOp::Delete { key, options } => {
            out.push(DELETE);
            put_bytes(out, key);
            put_option_u64(out, options.compare_cas);
            put_option_i64(out, options.touch);
            put_option_u64(out, options.new_cas);
            put_u32(out, options.client_flags);
            put_bits(out, &[options.invalidate, options.remove_value]);
        }
        KeyOp::Arith {
            key,
            incr,
            delta,
            options,
        } => {
            out.push(ARITH);
            put_bytes(out, key);
            put_u64(out, *delta);
            put_option_u64(out, options.compare_cas);
            put_option_u64(out, options.vivify.map(|(initial, _)| initial));
            put_option_i64(out, options.vivify.map(|(_, exptime)| exptime));
            put_option_i64(out, options.touch);
            put_option_u64(out, options.new_cas);
            put_bits(out, &[*incr]);
        }
        KeyOp::Touch { key, exptime } => {
            out.push(TOUCH);
            put_bytes(out, key);
            put_i64(out, *exptime);
        }
    }
}

const HIT: u8 = 0;
const MISS: u8 = 1;
const STORED: u8 = 2;
const NOT_STORED: u8 = 3;
const EXISTS: u8 = 4;
const NOT_FOUND: u8 = 5;
const DELETED: u8 = 6;
const TOUCHED: u8 = 7;
const NUMBER: u8 = 8;
const NON_NUMERIC: u8 = 9;
const TOO_LARGE: u8 = 10;
const OUT_OF_MEMORY: u8 = 11;
const REFUSED_READ_ONLY: u8 = 12;
const REFUSED_NOT_ACTING: u8 = 13;
const REFUSED_UNREACHABLE: u8 = 14;
const REFUSED_NO_MAJORITY: u8 = 15;
const REFUSED_HANDOVER: u8 = 16;

fn put_outcome(out: &mut Vec<u8>, outcome: &Outcome<&[u8]>) {
    match outcome {
        Outcome::Hit { info, value } => {
            out.push(HIT);
            put_u32(out, info.client_flags);
            put_u64(out, info.cas);
            put_i64(out, info.ttl);
            put_i64(out, info.previous_ttl);
            put_option_i64(out, info.touch_ttl);
            put_option_i64(out, info.vivify_ttl);
            put_u32(out, info.idle);
            put_u32(out, info.class);
            put_u32(out, info.total_size);
            out.push(match info.recache {
                Recache::None => 0,
                Recache::Won => 1,
                Recache::AlreadyWon => 2,
            });
            put_bits(out, &[info.hit_before, info.stale, info.binary_key]);
            put_bytes(out, value);
        }
        Outcome::Miss => out.push(MISS),
        Outcome::Stored { cas, value_len } => {
            out.push(STORED);
            put_u64(out, *cas);
            put_u64(out, *value_len as u64);
        }
        Outcome::NotStored => out.push(NOT_STORED),
        Outcome::Exists => out.push(EXISTS),
        Outcome::NotFound => out.push(NOT_FOUND),
        Outcome::Deleted => out.push(DELETED),
        Outcome::Touched { cas } => {
            out.push(TOUCHED);
            put_u64(out, *cas);
        }
        Outcome::Number {
            value,
            cas,
            ttl,
            previous_ttl,
        } => {
            out.push(NUMBER);
            put_u64(out, *value);
            put_u64(out, *cas);
            put_i64(out, *ttl);
            put_i64(out, *previous_ttl);
        }
        Outcome::NonNumeric => out.push(NON_NUMERIC),
        Outcome::TooLarge => out.push(TOO_LARGE),
        Outcome::OutOfMemory => out.push(OUT_OF_MEMORY),
        Outcome::Refused(Refusal::ReadOnly) => out.push(REFUSED_READ_ONLY),
        Outcome::Refused(Refusal::NotActing) => out.push(REFUSED_NOT_ACTING),
        Outcome::Refused(Refusal::Unreachable) => out.push(REFUSED_UNREACHABLE),
        Outcome::Refused(Refusal::NoMajority) => out.push(REFUSED_NO_MAJORITY),
        Outcome::Refused(Refusal::Handover) => out.push(REFUSED_HANDOVER),
    }
}

/// Reads a frame body front to back; every read checks the length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed("ends inside a field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(self.u64()? as i64)
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let length = self.u32()? as usize;
        self.take(length)
    }

    fn option_i64(&mut self) -> Result<Option<i64>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.i64()?)),
            _ => Err(WireError::Malformed("option tag")),
        }
    }

    fn option_u64(&mut self) -> Result<Option<u64>, WireError> {
        Ok(self.option_i64()?.map(|value| value as u64))
    }

    fn bits<const N: usize>(&mut self) -> Result<[bool; N], WireError> {
        let byte = self.u8()?;
        if byte >> N != 0 {
            return Err(WireError::Malformed("unknown flag bits"));
        }
        Ok(std::array::from_fn(|i| byte & (1 << i) != 0))
    }

    fn finish(self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed("bytes after the last entry"))
        }
    }

    fn op(&mut self) -> Result<KeyOp<&'a [u8]>, WireError> {
        let tag = self.u8()?;
        let key = self.bytes()?;
        Ok(match tag {
            GET => {
                let (touch, vivify, recache_below, new_cas) =
                    (self.option_i64()?, self.option_i64()?, self.option_i64()?, self.option_u64()?);
                let [recache_after_touch, touch_after_vivify, no_bump, peek, claims_win, resend] = self.bits()?;
                KeyOp::Get {
                    key,
                    options: GetOptions {
                        touch,
                        vivify,
                        recache_below,
                        recache_after_touch,
                        touch_after_vivify,
                        no_bump,
                        new_cas,
                        peek,
                        claims_win,
                        resend,
                    },
                }
            }
            STORE => {
                let mode = match self.u8()? {
                    0 => StoreMode::Set,
                    1 => StoreMode::Add,
                    2 => StoreMode::Replace,
                    3 => StoreMode::Append,
                    4 => StoreMode::Prepend,
                    _ => return Err(WireError::Malformed("store mode")),
                };
                let (client_flags, exptime, value) = (self.u32()?, self.i64()?, self.bytes()?);
                let (compare_cas, new_cas, vivify) = (self.option_u64()?, self.option_u64()?, self.option_i64()?);
                let [invalidate, binary_key] = self.bits()?;
                KeyOp::Store {
                    mode,
                    key,
                    client_flags,
                    exptime,
                    value,
                    options: StoreOptions {
                        compare_cas,
                        invalidate,
                        new_cas,
                        vivify,
                        binary_key,
                    },
                }
            }
            DELETE => {
                let (compare_cas, touch, new_cas, client_flags) =
                    (self.option_u64()?, self.option_i64()?, self.option_u64()?, self.u32()?);
                let [invalidate, remove_value] = self.bits()?;
                KeyOp::Delete {
                    key,
                    options: DeleteOptions {
                        compare_cas,
                        invalidate,
                        touch,
                        remove_value,
                        client_flags,
                        new_cas,
                    },
                }
            }
            ARITH => {
                let (delta, compare_cas, initial, vivify_exptime, touch, new_cas) = (
                    self.u64()?,
                    self.option_u64()?,
                    self.option_u64()?,
                    self.option_i64()?,
                    self.option_i64()?,
                    self.option_u64()?,
                );
                let vivify = match (initial, vivify_exptime) {
                    (Some(initial), Some(exptime)) => Some((initial, exptime)),
                    (None, None) => None,
                    _ => return Err(WireError::Malformed("arith vivify")),
                };
                let [incr] = self.bits()?;
                KeyOp::Arith {
                    key,
                    incr,
                    delta,
                    options: ArithOptions {
                        compare_cas,
                        vivify,
                        touch,
                        new_cas,
                    },
                }
            }
            TOUCH => KeyOp::Touch {
                key,
                exptime: self.i64()?,
            },
            _ => return Err(WireError::Malformed("operation tag")),
        })
    }

    fn outcome(&mut self) -> Result<Outcome<&'a [u8]>, WireError> {
        Ok(match self.u8()? {
            HIT => {
                let (client_flags, cas, ttl, previous_ttl) = (self.u32()?, self.u64()?, self.i64()?, self.i64()?);
                let (touch_ttl, vivify_ttl) = (self.option_i64()?, self.option_i64()?);
                let (idle, class, total_size) = (self.u32()?, self.u32()?, self.u32()?);
                let recache = match self.u8()? {
                    0 => Recache::None,
                    1 => Recache::Won,
                    2 => Recache::AlreadyWon,
                    _ => return Err(WireError::Malformed("recache")),
                };
                let [hit_before, stale, binary_key] = self.bits()?;
                Outcome::Hit {
                    info: ItemInfo {
                        client_flags,
                        cas,
                        ttl,
                        previous_ttl,
                        touch_ttl,
                        vivify_ttl,
                        idle,
                        hit_before,
                        stale,
                        binary_key,
                        recache,
                        class,
                        total_size,
                    },
                    value: self.bytes()?,
                }
            }
            MISS => Outcome::Miss,
            STORED => Outcome::Stored {
                cas: self.u64()?,
                value_len: self.u64()? as usize,
            },
            NOT_STORED => Outcome::NotStored,
            EXISTS => Outcome::Exists,
            NOT_FOUND => Outcome::NotFound,
            DELETED => Outcome::Deleted,
            TOUCHED => Outcome::Touched { cas: self.u64()? },
            NUMBER => Outcome::Number {
                value: self.u64()?,
                cas: self.u64()?,
                ttl: self.i64()?,
                previous_ttl: self.i64()?,
            },
            NON_NUMERIC => Outcome::NonNumeric,
            TOO_LARGE => Outcome::TooLarge,
            OUT_OF_MEMORY => Outcome::OutOfMemory,
            REFUSED_READ_ONLY => Outcome::Refused(Refusal::ReadOnly),
            REFUSED_NOT_ACTING => Outcome::Refused(Refusal::NotActing),
            REFUSED_UNREACHABLE => Outcome::Refused(Refusal::Unreachable),
            REFUSED_NO_MAJORITY => Outcome::Refused(Refusal::NoMajority),
            REFUSED_HANDOVER => Outcome::Refused(Refusal::Handover),
            _ => return Err(WireError::Malformed("outcome tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_ops() -> Vec<KeyOp<&'static [u8]>> {
        vec![
            KeyOp::Get {
                key: b"a",
                options: GetOptions::default(),
            },
            KeyOp::Get {
                key: b"b",
                options: GetOptions {
                    touch: Some(-1),
                    vivify: Some(30),
                    recache_below: Some(5),
                    recache_after_touch: true,
                    touch_after_vivify: false,
                    no_bump: true,
                    new_cas: Some(u64::MAX),
                    peek: false,
                    claims_win: true,
                    resend: true,
                },
            },
            KeyOp::Store {
                mode: StoreMode::Prepend,
                key: b"c",
                client_flags: u32::MAX,
                exptime: 2_000_000_000,
                value: b"value\r\nwith crlf",
                options: StoreOptions {
                    compare_cas: Some(7),
                    invalidate: true,
                    new_cas: None,
                    vivify: Some(0),
                    binary_key: true,
                },
            },
            KeyOp::Delete {
                key: b"d",
                options: DeleteOptions {
                    compare_cas: None,
                    invalidate: true,
                    touch: Some(9),
                    remove_value: true,
                    client_flags: 3,
                    new_cas: Some(1),
                },
            },
            KeyOp::Arith {
                key: b"e",
                incr: false,
                delta: 12,
                options: ArithOptions {
                    compare_cas: Some(2),
                    vivify: Some((10, 60)),
                    touch: None,
                    new_cas: None,
                },
            },
            KeyOp::Touch { key: b"f", exptime: -5 },
        ]
    }

    fn sample_outcomes() -> Vec<Outcome<&'static [u8]>> {
        vec![
            Outcome::Hit {
                info: ItemInfo {
                    client_flags: 5,
                    cas: 99,
                    ttl: -1,
                    previous_ttl: 4,
                    touch_ttl: Some(10),
                    vivify_ttl: None,
                    idle: 3,
                    hit_before: true,
                    stale: false,
                    binary_key: true,
                    recache: Recache::AlreadyWon,
                    class: 4,
                    total_size: 120,
                },
                value: b"v",
            },
            Outcome::Miss,
            Outcome::Stored { cas: 8, value_len: 3 },
            Outcome::NotStored,
            Outcome::Exists,
            Outcome::NotFound,
            Outcome::Deleted,
            Outcome::Touched { cas: 1 },
            Outcome::Number {
                value: u64::MAX,
                cas: 2,
                ttl: 10,
                previous_ttl: -1,
            },
            Outcome::NonNumeric,
            Outcome::TooLarge,
            Outcome::OutOfMemory,
            Outcome::Refused(Refusal::ReadOnly),
            Outcome::Refused(Refusal::NotActing),
            Outcome::Refused(Refusal::Unreachable),
            Outcome::Refused(Refusal::NoMajority),
            Outcome::Refused(Refusal::Handover),
        ]
    }

    #[test]
    fn ops_and_outcomes_come_back_as_sent() {
        let mut bytes = Vec::new();
        for op in &sample_ops() {
            encode_op(&mut bytes, op, false);
        }
        let mut rest = &bytes[..];
        for op in &sample_ops() {
            let (body, used) = frame(rest).unwrap().unwrap();
            assert_eq!(decode_request(body).unwrap(), Request::Key(op.clone()));
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        for op in &sample_ops() {
            let mut bytes = Vec::new();
            encode_op(&mut bytes, op, true);
            let (body, _) = frame(&bytes).unwrap().unwrap();
            assert_eq!(decode_request(body).unwrap(), Request::Relayed(op.clone()));
            assert!(decode_request(&body[..body.len() - 1]).is_err());
        }
        let mut bytes = Vec::new();
        encode_flush_all(&mut bytes, -5);
        let (body, _) = frame(&bytes).unwrap().unwrap();
        assert_eq!(decode_request(body).unwrap(), Request::FlushAll { delay: -5 });
        assert!(decode_request(&body[..body.len() - 1]).is_err());
        for at in [None, Some(0), Some(u64::MAX)] {
            let mut bytes = Vec::new();
            encode_copies(&mut bytes, b"some key", at);
            let (body, _) = frame(&bytes).unwrap().unwrap();
            assert_eq!(decode_request(body).unwrap(), Request::Copies { key: b"some key", at });
            assert!(decode_request(&body[..body.len() - 1]).is_err());
        }
        let mut bytes = Vec::new();
        encode_copy_of(&mut bytes, b"some key");
        let (body, _) = frame(&bytes).unwrap().unwrap();
        assert_eq!(decode_request(body).unwrap(), Request::CopyOf { key: b"some key" });
        assert!(decode_request(&body[..body.len() - 1]).is_err());
        for outcome in &sample_outcomes() {
            let mut bytes = Vec::new();
            encode_outcome(&mut bytes, outcome);
            let (body, used) = frame(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(&decode_outcome(body).unwrap(), outcome);
        }
    }

    #[test]
    fn a_frame_split_at_any_byte_waits_for_the_rest() {
        for op in &sample_ops() {
            let mut bytes = Vec::new();
            encode_op(&mut bytes, op, false);
            for cut in 0..bytes.len() {
                assert_eq!(frame(&bytes[..cut]).unwrap(), None, "cut at {cut}");
            }
        }
    }

    #[test]
    fn truncated_or_padded_bodies_are_errors_not_panics() {
        for outcome in &sample_outcomes() {
            let mut bytes = Vec::new();
            encode_outcome(&mut bytes, outcome);
            let body = &bytes[4..];
            for cut in 0..body.len() {
                assert!(decode_outcome(&body[..cut]).is_err(), "{outcome:?} cut at {cut}");
            }
            let mut padded = body.to_vec();
            padded.push(0);
            assert_eq!(
                decode_outcome(&padded),
                Err(WireError::Malformed("bytes after the last entry"))
            );
        }
        assert_eq!(frame(&[0xff, 0xff, 0xff, 0xff]), Err(WireError::TooLarge(u32::MAX as usize)));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode_request(&body);
            let _ = decode_outcome(&body);
        }
    }
}

//! Requests and responses on the wire, for the three dialects. Encoders
//! append to a connection's send buffer; decoders read one complete
//! response (or report that more bytes are needed) for the oldest request.

use crate::keys::KeyFormat;
use crate::workload::{Op, OpKind, ValueSize, value_of};

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

pub enum Decoded {
    Incomplete,
    Done { consumed: usize, reply: Reply },
}

/// Spells requests and reads responses for one protocol.
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

/// Position of the first "\r\n".
fn find_crlf(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n")
}

const BINARY_GETK: u8 = 0x0c;
const BINARY_GETKQ: u8 = 0x0d;
const BINARY_SET: u8 = 0x01;
const BINARY_DELETE: u8 = 0x04;
const BINARY_INCREMENT: u8 = 0x05;
const BINARY_NOOP: u8 = 0x0a;

fn binary_request(out: &mut Vec<u8>, opcode: u8, key_len: usize, extras: &[u8], value_len: usize) {
    out.push(0x80);
    out.push(opcode);
    out.extend_from_slice(&(key_len as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&((extras.len() + key_len + value_len) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 12]); // opaque, cas
    out.extend_from_slice(extras);
}

impl Codec {
    fn format(&self, kind: OpKind) -> &KeyFormat {
        if kind == OpKind::Incr {
            &self.counter_keys
        } else {
            &self.keys
        }
    }

    /// The request that stores key `index` (prefill uses it too).
    pub fn encode_set(&self, index: u64, out: &mut Vec<u8>) {
        let length = self.values.of(index);
        let mut key = Vec::new();
        self.keys.write(index, &mut key);
        match self.protocol {
            Protocol::Text => out.extend_from_slice(format!("set {} 0 {} {length}\r\n", ascii(&key), self.ttl).as_bytes()),
            Protocol::Meta => out.extend_from_slice(format!("ms {} {length} T{}\r\n", ascii(&key), self.ttl).as_bytes()),
            Protocol::Binary => {
                let mut extras = [0u8; 8];
                extras[4..].copy_from_slice(&self.ttl.to_be_bytes());
                binary_request(out, BINARY_SET, key.len(), &extras, length);
                out.extend_from_slice(&key);
            }
        }
        value_of(index, length, out);
        if self.protocol != Protocol::Binary {
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The request that seeds counter `index` with "0".
    pub fn encode_counter_seed(&self, index: u64, out: &mut Vec<u8>) {
        let key = self.counter_keys.key(index);
        match self.protocol {
            Protocol::Text => out.extend_from_slice(format!("set {} 0 0 1\r\n0\r\n", ascii(&key)).as_bytes()),
            Protocol::Meta => out.extend_from_slice(format!("ms {} 1\r\n0\r\n", ascii(&key)).as_bytes()),
            Protocol::Binary => {
                binary_request(out, BINARY_SET, key.len(), &[0; 8], 1);
                out.extend_from_slice(&key);
                out.push(b'0');
            }
        }
    }

    pub fn encode(&self, op: &Op, out: &mut Vec<u8>) {
        if op.kind == OpKind::Set {
            return self.encode_set(op.keys[0], out);
        }
        let format = self.format(op.kind);
        let mut key = Vec::with_capacity(format.length + 8);
        match (self.protocol, op.kind) {
            (Protocol::Text, OpKind::Get) => {
                out.extend_from_slice(b"get");
                for &index in &op.keys {
                    out.push(b' ');
                    format.write(index, out);
                }
                out.extend_from_slice(b"\r\n");
            }
            (Protocol::Meta, OpKind::Get) => {
                let quiet = op.keys.len() > 1;
                for &index in &op.keys {
                    out.extend_from_slice(b"mg ");
                    format.write(index, out);
                    out.extend_from_slice(if quiet { b" v k q\r\n" } else { b" v k\r\n" });
                }
                if quiet {
                    out.extend_from_slice(b"mn\r\n");
                }
            }
            (Protocol::Binary, OpKind::Get) => {
                let quiet = op.keys.len() > 1;
                for &index in &op.keys {
                    key.clear();
                    format.write(index, &mut key);
                    binary_request(out, if quiet { BINARY_GETKQ } else { BINARY_GETK }, key.len(), &[], 0);
                    out.extend_from_slice(&key);
                }
                if quiet {
                    binary_request(out, BINARY_NOOP, 0, &[], 0);
                }
            }
            (Protocol::Text | Protocol::Meta, kind) => {
                let verb: &[u8] = match (self.protocol, kind) {
                    (Protocol::Text, OpKind::Delete) => b"delete ",
                    (Protocol::Text, _) => b"incr ",
                    (_, OpKind::Delete) => b"md ",
                    _ => b"ma ",
                };
                out.extend_from_slice(verb);
                format.write(op.keys[0], out);
                out.extend_from_slice(if self.protocol == Protocol::Text && kind == OpKind::Incr {
                    b" 1\r\n"
                } else {
                    b"\r\n"
                });
            }
            (Protocol::Binary, kind) => {
                format.write(op.keys[0], &mut key);
                if kind == OpKind::Delete {
                    binary_request(out, BINARY_DELETE, key.len(), &[], 0);
                } else {
                    // delta 1, initial 0, 0xffffffff: do not create.
                    let mut extras = [0u8; 20];
                    extras[7] = 1;
                    extras[16..].copy_from_slice(&u32::MAX.to_be_bytes());
                    binary_request(out, BINARY_INCREMENT, key.len(), &extras, 0);
                }
                out.extend_from_slice(&key);
            }
        }
    }

    /// Reads the response to a request of `kind` (a get of `width` keys)
    /// from the front of `buf`.
    pub fn decode(&self, kind: OpKind, width: usize, buf: &[u8]) -> Decoded {
        match self.protocol {
            Protocol::Text => self.decode_text(kind, width, buf),
            Protocol::Meta => self.decode_meta(kind, width, buf),
            Protocol::Binary => self.decode_binary(kind, width, buf),
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
        let mut expected = Vec::new();
        value_of(index, self.values.of(index), &mut expected);
        if data != expected {
            reply.verify_failures += 1;
        }
    }

    /// A value block of `length` bytes at `at`: checked, counted as a hit;
    /// the offset after its "\r\n", or None if it has not all arrived.
    fn take_value(&self, key: &[u8], buf: &[u8], at: usize, length: usize, reply: &mut Reply) -> Option<usize> {
        let end = at.checked_add(length)?.checked_add(2)?;
        if buf.len() < end {
            return None;
        }
        self.check_value(key, &buf[at..at + length], reply);
        reply.hits += 1;
        Some(end)
    }

    fn decode_text(&self, kind: OpKind, width: usize, buf: &[u8]) -> Decoded {
        let mut reply = Reply::default();
        let mut at = 0;
        loop {
            let (line, next) = match next_line(buf, at, &mut reply) {
                Ok(found) => found,
                Err(decoded) => return decoded,
            };
            match kind {
                OpKind::Get => {
                    if line == b"END" {
                        reply.misses = width as u32 - reply.hits.min(width as u32);
                        return Decoded::Done { consumed: next, reply };
                    }
                    let mut words = line.split(|&b| b == b' ');
                    let (Some(b"VALUE"), Some(key), Some(_flags), Some(bytes)) =
                        (words.next(), words.next(), words.next(), words.next())
                    else {
                        return unexpected(next);
                    };
                    let Some(length) = parse_length(bytes) else {
                        return unexpected(next);
                    };
                    let Some(after) = self.take_value(key, buf, next, length, &mut reply) else {
                        return Decoded::Incomplete;
                    };
                    at = after;
                }
                _ => {
                    match (kind, line) {
                        (OpKind::Set, b"STORED") | (OpKind::Delete, b"DELETED") => reply.hits = 1,
                        (OpKind::Set, b"NOT_STORED") | (_, b"NOT_FOUND") => reply.misses = 1,
                        (OpKind::Incr, digits) if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => reply.hits = 1,
                        _ => return unexpected(next),
                    }
                    return Decoded::Done { consumed: next, reply };
                }
            }
        }
    }

    fn decode_meta(&self, kind: OpKind, width: usize, buf: &[u8]) -> Decoded {
        let mut reply = Reply::default();
        let mut at = 0;
        let multi = kind == OpKind::Get && width > 1;
        loop {
            let (line, next) = match next_line(buf, at, &mut reply) {
                Ok(found) => found,
                Err(decoded) => return decoded,
            };
            if line.starts_with(b"VA ") {
                let mut words = line.split(|&b| b == b' ');
                words.next();
                let Some(length) = words.next().and_then(parse_length) else {
                    return unexpected(next);
                };
                let key = words.find(|w| w.first() == Some(&b'k')).map(|w| &w[1..]).unwrap_or(b"");
                let Some(after) = self.take_value(key, buf, next, length, &mut reply) else {
                    return Decoded::Incomplete;
                };
                at = after;
                if !multi {
                    return Decoded::Done { consumed: at, reply };
                }
                continue;
            }
            match (kind, line) {
                (OpKind::Get, b"MN") => reply.misses = width as u32 - reply.hits.min(width as u32),
                (OpKind::Get, b"EN") => reply.misses = 1,
                (_, code) if code.starts_with(b"HD") => reply.hits = 1,
                (_, code) if code.starts_with(b"NF") || code.starts_with(b"NS") => reply.misses = 1,
                _ => return unexpected(next),
            }
            return Decoded::Done { consumed: next, reply };
        }
    }

    fn decode_binary(&self, kind: OpKind, width: usize, buf: &[u8]) -> Decoded {
        let mut reply = Reply::default();
        let mut at = 0;
        let multi = kind == OpKind::Get && width > 1;
        loop {
            if buf.len() < at + 24 {
                return Decoded::Incomplete;
            }
            let header = &buf[at..at + 24];
            if header[0] != 0x81 {
                return unexpected(buf.len());
            }
            let opcode = header[1];
            let key_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let extras_len = usize::from(header[4]);
            let status = u16::from_be_bytes([header[6], header[7]]);
            let body_len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
            if buf.len() < at + 24 + body_len {
                return Decoded::Incomplete;
            }
            let body = &buf[at + 24..at + 24 + body_len];
            at += 24 + body_len;
            if multi && opcode == BINARY_NOOP {
                reply.misses = width as u32 - reply.hits.min(width as u32);
                return Decoded::Done { consumed: at, reply };
            }
            match status {
                0 => {
                    reply.hits += 1;
                    if kind == OpKind::Get && body_len >= extras_len + key_len {
                        let key = &body[extras_len..extras_len + key_len];
                        self.check_value(key, &body[extras_len + key_len..], &mut reply);
                    }
                }
                1 => reply.misses += 1,
                other => reply.error = Some(format!("binary status 0x{other:04x}")),
            }
            if !multi || reply.error.is_some() {
                return Decoded::Done { consumed: at, reply };
            }
        }
    }
}

/// The line starting at `at` and the offset after its "\r\n". An error
/// line ends the response (Err(Done)); a partial line is Err(Incomplete).
fn next_line<'b>(buf: &'b [u8], at: usize, reply: &mut Reply) -> Result<(&'b [u8], usize), Decoded> {
    let end = find_crlf(&buf[at..]).ok_or(Decoded::Incomplete)?;
    let line = &buf[at..at + end];
    let next = at + end + 2;
    if let Some(error) = error_kind(line) {
        reply.error = Some(error);
        return Err(Decoded::Done {
            consumed: next,
            reply: std::mem::take(reply),
        });
    }
    Ok((line, next))
}

fn parse_length(word: &[u8]) -> Option<usize> {
    std::str::from_utf8(word).ok()?.parse().ok()
}

fn ascii(key: &[u8]) -> &str {
    std::str::from_utf8(key).unwrap_or("")
}

/// The kind of a text error line.
fn error_kind(line: &[u8]) -> Option<String> {
    for kind in ["ERROR", "CLIENT_ERROR", "SERVER_ERROR"] {
        if line == kind.as_bytes() || line.starts_with(format!("{kind} ").as_bytes()) {
            return Some(String::from_utf8_lossy(line).into_owned());
        }
    }
    None
}

fn unexpected(consumed: usize) -> Decoded {
    Decoded::Done {
        consumed,
        reply: Reply {
            error: Some("unexpected reply".into()),
            ..Reply::default()
        },
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

    fn done(decoded: Decoded) -> (usize, Reply) {
        match decoded {
            Decoded::Done { consumed, reply } => (consumed, reply),
            Decoded::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn text_requests_and_replies() {
        let codec = codec(Protocol::Text);
        let mut out = Vec::new();
        codec.encode(
            &Op {
                kind: OpKind::Get,
                keys: vec![1, 2],
            },
            &mut out,
        );
        codec.encode(
            &Op {
                kind: OpKind::Set,
                keys: vec![1],
            },
            &mut out,
        );
        codec.encode(
            &Op {
                kind: OpKind::Incr,
                keys: vec![3],
            },
            &mut out,
        );
        assert_eq!(out, b"get k:0001 k:0002\r\nset k:0001 0 0 3\r\nbcd\r\nincr k:n:0003 1\r\n");
        let response = b"VALUE k:0001 0 3\r\nbcd\r\nEND\r\n";
        for cut in 0..response.len() {
            assert!(matches!(codec.decode(OpKind::Get, 2, &response[..cut]), Decoded::Incomplete));
        }
        let (consumed, reply) = done(codec.decode(OpKind::Get, 2, response));
        assert_eq!(
            (consumed, reply.hits, reply.misses, reply.verify_failures),
            (response.len(), 1, 1, 0)
        );
        let (_, corrupt) = done(codec.decode(OpKind::Get, 1, b"VALUE k:0001 0 3\r\nxxx\r\nEND\r\n"));
        assert_eq!(corrupt.verify_failures, 1);
        assert_eq!(done(codec.decode(OpKind::Set, 1, b"STORED\r\n")).1.hits, 1);
        assert_eq!(done(codec.decode(OpKind::Incr, 1, b"42\r\n")).1.hits, 1);
        let (_, error) = done(codec.decode(OpKind::Set, 1, b"SERVER_ERROR out of memory storing object\r\n"));
        assert_eq!(error.error.as_deref(), Some("SERVER_ERROR out of memory storing object"));
    }

    #[test]
    fn meta_requests_and_replies() {
        let codec = codec(Protocol::Meta);
        let mut out = Vec::new();
        codec.encode(
            &Op {
                kind: OpKind::Get,
                keys: vec![1, 2],
            },
            &mut out,
        );
        assert_eq!(out, b"mg k:0001 v k q\r\nmg k:0002 v k q\r\nmn\r\n");
        let (_, reply) = done(codec.decode(OpKind::Get, 2, b"VA 3 kk:0001\r\nbcd\r\nMN\r\n"));
        assert_eq!((reply.hits, reply.misses, reply.verify_failures), (1, 1, 0));
        assert_eq!(done(codec.decode(OpKind::Get, 1, b"EN\r\n")).1.misses, 1);
        assert_eq!(done(codec.decode(OpKind::Delete, 1, b"NF\r\n")).1.misses, 1);
    }

    #[test]
    fn binary_requests_and_replies() {
        let codec = codec(Protocol::Binary);
        let mut out = Vec::new();
        codec.encode(
            &Op {
                kind: OpKind::Get,
                keys: vec![1],
            },
            &mut out,
        );
        assert_eq!(&out[..2], &[0x80, BINARY_GETK]);
        assert_eq!(out.len(), 24 + 6);
        let mut response = vec![0x81, BINARY_GETK, 0, 6, 4, 0, 0, 0];
        response.extend_from_slice(&13u32.to_be_bytes());
        response.extend_from_slice(&[0; 12]);
        response.extend_from_slice(&[0, 0, 0, 0]);
        response.extend_from_slice(b"k:0001bcd");
        let (consumed, reply) = done(codec.decode(OpKind::Get, 1, &response));
        assert_eq!((consumed, reply.hits, reply.verify_failures), (response.len(), 1, 0));
        assert!(matches!(codec.decode(OpKind::Get, 1, &response[..30]), Decoded::Incomplete));
    }
}

//! memcached's binary protocol: 24-byte headers, keys returned with values
//! (GETK, GATK), multi-gets as quiet requests ended by a NOOP.

use super::{DecodeError, Event, Expect, ExpectKind, Fetch, Item, Reply, ServerError, StoreMode};

const HEADER: usize = 24;
const REQUEST: u8 = 0x80;
const RESPONSE: u8 = 0x81;

const SET: u8 = 0x01;
const ADD: u8 = 0x02;
const REPLACE: u8 = 0x03;
const DELETE: u8 = 0x04;
const INCREMENT: u8 = 0x05;
const DECREMENT: u8 = 0x06;
const NOOP: u8 = 0x0a;
const GETK: u8 = 0x0c;
const GETKQ: u8 = 0x0d;
const APPEND: u8 = 0x0e;
const PREPEND: u8 = 0x0f;
const TOUCH: u8 = 0x1c;
const GATK: u8 = 0x23;
const GATKQ: u8 = 0x24;

const OK: u16 = 0x00;
const KEY_NOT_FOUND: u16 = 0x01;
const KEY_EXISTS: u16 = 0x02;
const NOT_STORED: u16 = 0x05;

fn request(out: &mut Vec<u8>, opcode: u8, key: &[u8], extras: &[u8], value_len: usize, cas: u64) {
    out.push(REQUEST);
    out.push(opcode);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.extend_from_slice(&[0, 0, 0]); // data type, vbucket
    out.extend_from_slice(&((extras.len() + key.len() + value_len) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]); // opaque
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
}

pub(super) fn get<'k>(keys: impl IntoIterator<Item = &'k [u8]>, fetch: Fetch, out: &mut Vec<u8>) -> u32 {
    let mut keys = keys.into_iter().peekable();
    let mut count = 0;
    let exptime = fetch.touch.map(u32::to_be_bytes);
    let extras: &[u8] = exptime.as_ref().map_or(&[], |e| &e[..]);
    while let Some(key) = keys.next() {
        let quiet = count > 0 || keys.peek().is_some();
        let opcode = match (fetch.touch.is_some(), quiet) {
            (false, false) => GETK,
            (false, true) => GETKQ,
            (true, false) => GATK,
            (true, true) => GATKQ,
        };
        request(out, opcode, key, extras, 0, 0);
        count += 1;
    }
    if count != 1 {
        request(out, NOOP, b"", &[], 0, 0);
    }
    count
}

pub(super) fn store(mode: StoreMode, key: &[u8], value: &[u8], flags: u32, exptime: u32, out: &mut Vec<u8>) {
    let mut extras = [0u8; 8];
    extras[..4].copy_from_slice(&flags.to_be_bytes());
    extras[4..].copy_from_slice(&exptime.to_be_bytes());
    let (opcode, extras, cas): (u8, &[u8], u64) = match mode {
        StoreMode::Set => (SET, &extras, 0),
        StoreMode::Add => (ADD, &extras, 0),
        StoreMode::Replace => (REPLACE, &extras, 0),
        StoreMode::Cas(unique) => (SET, &extras, unique),
        StoreMode::Append => (APPEND, &[], 0),
        StoreMode::Prepend => (PREPEND, &[], 0),
    };
    request(out, opcode, key, extras, value.len(), cas);
    out.extend_from_slice(value);
}

pub(super) fn delete(key: &[u8], out: &mut Vec<u8>) {
    request(out, DELETE, key, &[], 0, 0);
}

pub(super) fn arith(key: &[u8], delta: u64, increment: bool, out: &mut Vec<u8>) {
    // delta, initial 0, exptime 0xffffffff: a missing key is not created.
    let mut extras = [0u8; 20];
    extras[..8].copy_from_slice(&delta.to_be_bytes());
    extras[16..].copy_from_slice(&u32::MAX.to_be_bytes());
    request(out, if increment { INCREMENT } else { DECREMENT }, key, &extras, 0, 0);
}

pub(super) fn touch(key: &[u8], exptime: u32, out: &mut Vec<u8>) {
    request(out, TOUCH, key, &exptime.to_be_bytes(), 0, 0);
}

/// One response packet at the front of `buf`.
struct Packet<'b> {
    opcode: u8,
    status: u16,
    cas: u64,
    extras: &'b [u8],
    key: &'b [u8],
    value: &'b [u8],
    length: usize,
}

fn packet(buf: &[u8]) -> Result<Option<Packet<'_>>, DecodeError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[0] != RESPONSE {
        return Err(DecodeError(format!("binary magic 0x{:02x}", buf[0])));
    }
    let key_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let extras_len = usize::from(buf[4]);
    let body_len = u32::from_be_bytes(buf[8..12].try_into().unwrap()) as usize;
    if extras_len + key_len > body_len {
        return Err(DecodeError("a binary body shorter than its key and extras".into()));
    }
    if buf.len() < HEADER + body_len {
        return Ok(None);
    }
    let body = &buf[HEADER..HEADER + body_len];
    Ok(Some(Packet {
        opcode: buf[1],
        status: u16::from_be_bytes([buf[6], buf[7]]),
        cas: u64::from_be_bytes(buf[16..24].try_into().unwrap()),
        extras: &body[..extras_len],
        key: &body[extras_len..extras_len + key_len],
        value: &body[extras_len + key_len..],
        length: HEADER + body_len,
    }))
}

fn error(packet: &Packet) -> ServerError {
    ServerError::Binary {
        status: packet.status,
        message: String::from_utf8_lossy(packet.value).into_owned(),
    }
}

pub(super) fn decode<'b>(expect: &Expect, buf: &'b [u8]) -> Result<Option<(usize, Event<'b>)>, DecodeError> {
    let Some(packet) = packet(buf)? else {
        return Ok(None);
    };
    let done = |reply| Ok(Some((packet.length, Event::Done(reply))));
    match expect.kind {
        ExpectKind::Values { marked, .. } => match packet.status {
            _ if marked && packet.opcode == NOOP => done(Reply::Values { found: expect.found }),
            OK => {
                let flags = packet
                    .extras
                    .get(..4)
                    .map_or(0, |f| u32::from_be_bytes(f.try_into().unwrap()));
                let item = Item {
                    key: packet.key,
                    flags,
                    cas: packet.cas,
                    value: packet.value,
                };
                Ok(Some((packet.length, Event::Item(item))))
            }
            KEY_NOT_FOUND if !marked => done(Reply::Values { found: 0 }),
            KEY_NOT_FOUND => {
                // A quiet miss is not sent; if one is, it is only a miss.
                Ok(decode(expect, &buf[packet.length..])?.map(|(used, event)| (packet.length + used, event)))
            }
            _ if marked => Ok(skip_to_noop(buf, packet.length)?.map(|end| (end, Event::Done(Reply::Error(error(&packet)))))),
            _ => done(Reply::Error(error(&packet))),
        },
        ExpectKind::Store(mode) => match (packet.status, mode) {
            (OK, _) => done(Reply::Stored),
            (KEY_EXISTS, StoreMode::Cas(_)) => done(Reply::Exists),
            (KEY_NOT_FOUND, StoreMode::Cas(_)) => done(Reply::NotFound),
            // The text protocol's NOT_STORED: add of a present key, replace
            // of a missing one, append/prepend to a missing one.
            (KEY_EXISTS, StoreMode::Add) | (KEY_NOT_FOUND, StoreMode::Replace) | (NOT_STORED, _) => done(Reply::NotStored),
            _ => done(Reply::Error(error(&packet))),
        },
        ExpectKind::Delete | ExpectKind::Touch | ExpectKind::Arith => match packet.status {
            OK if expect.kind == ExpectKind::Delete => done(Reply::Deleted),
            OK if expect.kind == ExpectKind::Touch => done(Reply::Touched),
            OK => match <[u8; 8]>::try_from(packet.value) {
                Ok(number) => done(Reply::Number(u64::from_be_bytes(number))),
                Err(_) => Err(DecodeError("an incr reply without its 8-byte value".into())),
            },
            KEY_NOT_FOUND => done(Reply::NotFound),
            _ => done(Reply::Error(error(&packet))),
        },
        ExpectKind::Wait | ExpectKind::Nodes | ExpectKind::Stats | ExpectKind::ClusterValue => {
            Err(DecodeError("no binary reply to a text-only command".into()))
        }
    }
}

/// The offset past the NOOP response at or after `at`.
fn skip_to_noop(buf: &[u8], mut at: usize) -> Result<Option<usize>, DecodeError> {
    while let Some(packet) = packet(&buf[at..])? {
        at += packet.length;
        if packet.opcode == NOOP {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

//! memcached's classic text protocol: `get`/`gets`/`gat`/`gats`, the six
//! stores, `delete`, `incr`/`decr`, `touch`; replies are lines, values are
//! `VALUE` lines followed by a data block, a get ends with `END`.

use super::{DecodeError, Event, Expect, ExpectKind, Fetch, Item, Reply, StoreMode, block, error_line, line, number, unexpected};

/// Words joined by spaces, then "\r\n".
pub(super) fn command(out: &mut Vec<u8>, words: &[&[u8]]) {
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(word);
    }
    out.extend_from_slice(b"\r\n");
}

pub(super) fn get<'k>(keys: impl IntoIterator<Item = &'k [u8]>, fetch: Fetch, out: &mut Vec<u8>) -> u32 {
    let mut exptime = itoa::Buffer::new();
    match (fetch.touch, fetch.cas) {
        (None, false) => out.extend_from_slice(b"get"),
        (None, true) => out.extend_from_slice(b"gets"),
        (Some(touch), cas) => {
            out.extend_from_slice(if cas { b"gats " } else { b"gat " });
            out.extend_from_slice(exptime.format(touch).as_bytes());
        }
    }
    let mut count = 0;
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key);
        count += 1;
    }
    out.extend_from_slice(b"\r\n");
    count
}

pub(super) fn store(mode: StoreMode, key: &[u8], value: &[u8], flags: u32, exptime: u32, out: &mut Vec<u8>) {
    let verb: &[u8] = match mode {
        StoreMode::Set => b"set",
        StoreMode::Add => b"add",
        StoreMode::Replace => b"replace",
        StoreMode::Append => b"append",
        StoreMode::Prepend => b"prepend",
        StoreMode::Cas(_) => b"cas",
    };
    let (mut flags_text, mut exptime_text, mut length, mut cas) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    let header: [&[u8]; 5] = [
        verb,
        key,
        flags_text.format(flags).as_bytes(),
        exptime_text.format(exptime).as_bytes(),
        length.format(value.len()).as_bytes(),
    ];
    match mode {
        StoreMode::Cas(unique) => {
            let words = [
                header[0],
                header[1],
                header[2],
                header[3],
                header[4],
                cas.format(unique).as_bytes(),
            ];
            command(out, &words);
        }
        _ => command(out, &header),
    }
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn delete(key: &[u8], out: &mut Vec<u8>) {
    command(out, &[b"delete", key]);
}

pub(super) fn arith(key: &[u8], delta: u64, increment: bool, out: &mut Vec<u8>) {
    let verb: &[u8] = if increment { b"incr" } else { b"decr" };
    command(out, &[verb, key, itoa::Buffer::new().format(delta).as_bytes()]);
}

pub(super) fn touch(key: &[u8], exptime: u32, out: &mut Vec<u8>) {
    command(out, &[b"touch", key, itoa::Buffer::new().format(exptime).as_bytes()]);
}

pub(super) fn decode<'b>(expect: &Expect, buf: &'b [u8]) -> Result<Option<(usize, Event<'b>)>, DecodeError> {
    if expect.kind != ExpectKind::ClusterValue
        && let Some(decoded) = super::cluster_reply(expect, buf)
    {
        return decoded;
    }
    let Some((line, used)) = line(buf) else {
        return Ok(None);
    };
    let done = |reply| Ok(Some((used, Event::Done(reply))));
    if let Some(error) = error_line(line) {
        return done(Reply::Error(error));
    }
    match (expect.kind, line) {
        (ExpectKind::Values { .. } | ExpectKind::ClusterValue, b"END") => done(Reply::Values { found: expect.found }),
        // A noop (`mn`) sent on a text connection.
        (ExpectKind::Values { keys: 0, .. }, b"MN") => done(Reply::Values { found: 0 }),
        (ExpectKind::Values { .. } | ExpectKind::ClusterValue, _) => value(line, used, buf),
        (ExpectKind::Store(_), b"STORED") => done(Reply::Stored),
        (ExpectKind::Store(_), b"NOT_STORED") => done(Reply::NotStored),
        (ExpectKind::Store(_), b"EXISTS") => done(Reply::Exists),
        (ExpectKind::Delete, b"DELETED") => done(Reply::Deleted),
        (ExpectKind::Touch, b"TOUCHED") => done(Reply::Touched),
        (ExpectKind::Store(_) | ExpectKind::Delete | ExpectKind::Arith | ExpectKind::Touch, b"NOT_FOUND") => {
            done(Reply::NotFound)
        }
        (ExpectKind::Arith, digits) => match number(digits) {
            Some(value) => done(Reply::Number(value)),
            None => Err(unexpected(line)),
        },
        _ => Err(unexpected(line)),
    }
}

/// `VALUE <key> <flags> <bytes>[ <cas>]` and its data block.
pub(super) fn value<'b>(line: &'b [u8], used: usize, buf: &'b [u8]) -> Result<Option<(usize, Event<'b>)>, DecodeError> {
    let mut words = line.split(|&b| b == b' ');
    let (Some(b"VALUE"), Some(key), Some(flags), Some(length)) = (words.next(), words.next(), words.next(), words.next()) else {
        return Err(unexpected(line));
    };
    let cas = match words.next() {
        Some(cas) => Some(number(cas).ok_or_else(|| unexpected(line))?),
        None => None,
    };
    let (Some(flags), Some(length)) = (number(flags), number::<usize>(length)) else {
        return Err(unexpected(line));
    };
    let Some(value) = block(&buf[used..], length)? else {
        return Ok(None);
    };
    let item = Item {
        key,
        flags,
        cas: cas.unwrap_or(0),
        value,
    };
    Ok(Some((used + length + 2, Event::Item(item))))
}

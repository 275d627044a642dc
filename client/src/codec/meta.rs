//! memcached's meta commands: `mg` (get, gat, touch), `ms` (every store
//! mode, CAS), `md`, `ma` (incr/decr, answering the new value), `mn` (ends
//! a multi-get whose misses were asked to stay quiet).

use super::{DecodeError, Event, Expect, ExpectKind, Fetch, Item, Reply, StoreMode, block, error_line, line, number, unexpected};

pub(super) fn get<'k>(keys: impl IntoIterator<Item = &'k [u8]>, fetch: Fetch, out: &mut Vec<u8>) -> u32 {
    let mut keys = keys.into_iter().peekable();
    let mut count = 0;
    let mut touch = itoa::Buffer::new();
    while let Some(key) = keys.next() {
        // A lone key is answered EN on a miss; several are quiet, ended by mn.
        let quiet = count > 0 || keys.peek().is_some();
        out.extend_from_slice(b"mg ");
        out.extend_from_slice(key);
        out.extend_from_slice(b" v f k");
        if fetch.cas {
            out.extend_from_slice(b" c");
        }
        if let Some(exptime) = fetch.touch {
            out.extend_from_slice(b" T");
            out.extend_from_slice(touch.format(exptime).as_bytes());
        }
        out.extend_from_slice(if quiet { b" q\r\n" } else { b"\r\n" });
        count += 1;
    }
    if count != 1 {
        out.extend_from_slice(b"mn\r\n");
    }
    count
}

pub(super) fn store(mode: StoreMode, key: &[u8], value: &[u8], flags: u32, exptime: u32, out: &mut Vec<u8>) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"ms ");
    out.extend_from_slice(key);
    out.push(b' ');
    out.extend_from_slice(number.format(value.len()).as_bytes());
    out.extend_from_slice(b" F");
    out.extend_from_slice(number.format(flags).as_bytes());
    out.extend_from_slice(b" T");
    out.extend_from_slice(number.format(exptime).as_bytes());
    match mode {
        StoreMode::Set => {}
        StoreMode::Add => out.extend_from_slice(b" ME"),
        StoreMode::Replace => out.extend_from_slice(b" MR"),
        StoreMode::Append => out.extend_from_slice(b" MA"),
        StoreMode::Prepend => out.extend_from_slice(b" MP"),
        StoreMode::Cas(unique) => {
            out.extend_from_slice(b" C");
            out.extend_from_slice(number.format(unique).as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn delete(key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"md ");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn arith(key: &[u8], delta: u64, increment: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"ma ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" D");
    out.extend_from_slice(itoa::Buffer::new().format(delta).as_bytes());
    out.extend_from_slice(if increment { b" MI v\r\n" } else { b" MD v\r\n" });
}

pub(super) fn touch(key: &[u8], exptime: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(b"mg ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" T");
    out.extend_from_slice(itoa::Buffer::new().format(exptime).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(super) fn decode<'b>(expect: &Expect, buf: &'b [u8]) -> Result<Option<(usize, Event<'b>)>, DecodeError> {
    if let Some(decoded) = super::cluster_reply(expect, buf) {
        return decoded;
    }
    let Some((line, used)) = line(buf) else {
        return Ok(None);
    };
    let done = |reply| Ok(Some((used, Event::Done(reply))));
    let code = line.split(|&b| b == b' ').next().unwrap_or(b"");
    match (expect.kind, code) {
        (ExpectKind::Values { .. }, b"VA") => value(line, used, buf),
        (ExpectKind::Values { .. }, b"MN") => done(Reply::Values { found: expect.found }),
        (ExpectKind::Values { marked: false, .. }, b"EN") => done(Reply::Values { found: 0 }),
        (ExpectKind::Values { marked: true, .. }, _) if error_line(line).is_some() => {
            // Errors are not quiet: the rest of the batch still ends with MN.
            Ok(skip_to_mn(buf, used)?.map(|end| (end, Event::Done(Reply::Error(error_line(line).unwrap())))))
        }
        (_, _) if error_line(line).is_some() => done(Reply::Error(error_line(line).unwrap())),
        (ExpectKind::Store(_), b"HD") => done(Reply::Stored),
        (ExpectKind::Store(_), b"NS") => done(Reply::NotStored),
        (ExpectKind::Store(_) | ExpectKind::Arith, b"EX") => done(Reply::Exists),
        (ExpectKind::Store(_) | ExpectKind::Delete | ExpectKind::Arith, b"NF") => done(Reply::NotFound),
        (ExpectKind::Arith, b"NS") => done(Reply::NotStored),
        (ExpectKind::Delete, b"HD") => done(Reply::Deleted),
        (ExpectKind::Touch, b"HD") => done(Reply::Touched),
        (ExpectKind::Touch, b"EN") => done(Reply::NotFound),
        (ExpectKind::Arith, b"VA") => {
            let length = line
                .get(3..)
                .and_then(|rest| rest.split(|&b| b == b' ').next())
                .and_then(number::<usize>);
            let length = length.ok_or_else(|| unexpected(line))?;
            let Some(digits) = block(&buf[used..], length)? else {
                return Ok(None);
            };
            let value = number(digits).ok_or_else(|| unexpected(digits))?;
            Ok(Some((used + length + 2, Event::Done(Reply::Number(value)))))
        }
        _ => Err(unexpected(line)),
    }
}

/// `VA <bytes> f<flags> k<key> [c<cas>]` and its data block.
fn value<'b>(line: &'b [u8], used: usize, buf: &'b [u8]) -> Result<Option<(usize, Event<'b>)>, DecodeError> {
    let mut words = line.split(|&b| b == b' ').skip(1);
    let length = words.next().and_then(number::<usize>).ok_or_else(|| unexpected(line))?;
    let mut item = Item {
        key: b"",
        flags: 0,
        cas: 0,
        value: b"",
    };
    for word in words {
        match word.split_first() {
            Some((b'k', key)) => item.key = key,
            Some((b'f', flags)) => item.flags = number(flags).ok_or_else(|| unexpected(line))?,
            Some((b'c', cas)) => item.cas = number(cas).ok_or_else(|| unexpected(line))?,
            _ => {}
        }
    }
    let Some(value) = block(&buf[used..], length)? else {
        return Ok(None);
    };
    item.value = value;
    Ok(Some((used + length + 2, Event::Item(item))))
}

/// The offset past the `MN` line at or after `at`, skipping values.
fn skip_to_mn(buf: &[u8], mut at: usize) -> Result<Option<usize>, DecodeError> {
    loop {
        let Some((line, used)) = line(&buf[at..]) else {
            return Ok(None);
        };
        at += used;
        if line == b"MN" {
            return Ok(Some(at));
        }
        if line.starts_with(b"VA ") {
            let length = line[3..].split(|&b| b == b' ').next().and_then(number::<usize>);
            let length = length.ok_or_else(|| unexpected(line))?;
            if block(&buf[at..], length)?.is_none() {
                return Ok(None);
            }
            at += length + 2;
        }
    }
}

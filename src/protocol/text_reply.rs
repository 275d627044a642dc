//! The text protocol's reply writer: every byte the server sends to a
//! text client is written here, into the connection's output buffer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::meta::{MetaCommand, MetaKind, OPAQUE_TOO_LONG, echoed, flag_tokens};
use crate::request::{ItemInfo, Outcome, Recache, Refusal};

pub fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `VALUE <key> <flags> <bytes> [<cas>]` and the data block.
pub fn value(out: &mut Vec<u8>, key: &[u8], client_flags: u32, cas: Option<u64>, data: &[u8]) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    out.extend_from_slice(number.format(client_flags).as_bytes());
    out.push(b' ');
    out.extend_from_slice(number.format(data.len()).as_bytes());
    if let Some(cas) = cas {
        out.push(b' ');
        out.extend_from_slice(number.format(cas).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"END\r\n");
}

/// One key of a get/gets/gat/gats: a VALUE block on a hit, nothing on a miss.
pub fn get_outcome(out: &mut Vec<u8>, key: &[u8], with_cas: bool, outcome: &Outcome<&[u8]>) {
    if let Outcome::Hit { info, value: data } = *outcome {
        value(out, key, info.client_flags, with_cas.then_some(info.cas), data);
    }
}

/// `SERVER_ERROR <why>` for an operation the deployment refused.
pub fn refused(out: &mut Vec<u8>, refusal: Refusal) {
    out.extend_from_slice(b"SERVER_ERROR ");
    line(out, refusal.message());
}

/// The reply line to a single-key command.
pub fn keyed_outcome(out: &mut Vec<u8>, outcome: &Outcome<&[u8]>) {
    let text = match outcome {
        Outcome::Stored { .. } => "STORED",
        Outcome::NotStored => "NOT_STORED",
        Outcome::Exists => "EXISTS",
        Outcome::NotFound | Outcome::Miss => "NOT_FOUND",
        Outcome::Deleted => "DELETED",
        Outcome::Touched { .. } => "TOUCHED",
        Outcome::Number { value, .. } => {
            out.extend_from_slice(itoa::Buffer::new().format(*value).as_bytes());
            out.extend_from_slice(b"\r\n");
            return;
        }
        Outcome::NonNumeric => "CLIENT_ERROR cannot increment or decrement non-numeric value",
        Outcome::TooLarge => "SERVER_ERROR object too large for cache",
        Outcome::OutOfMemory => "SERVER_ERROR out of memory storing object",
        Outcome::Refused(refusal) => return refused(out, *refusal),
        // A value is never the answer to a single-key command.
        Outcome::Hit { .. } => "SERVER_ERROR unexpected value",
    };
    line(out, text);
}

/// `STAT <name> <value>`.
pub fn stat(out: &mut Vec<u8>, name: &str, value: impl std::fmt::Display) {
    use std::io::Write;
    let _ = write!(out, "STAT {name} {value}\r\n");
}

/// The reply to a meta command (mg, ms, md, ma, me).
pub fn meta_outcome(out: &mut Vec<u8>, command: &MetaCommand<'_>, outcome: &Outcome<&[u8]>) {
    // An error of the operation itself comes first (ma's non-numeric).
    let failed = matches!(
        outcome,
        Outcome::NonNumeric | Outcome::TooLarge | Outcome::OutOfMemory | Outcome::Refused(_)
    );
    if command.opaque_too_long && !failed {
        return line(out, OPAQUE_TOO_LONG);
    }
    match (command.kind, outcome) {
        (MetaKind::Debug, Outcome::Hit { info, .. }) => meta_debug(out, command, info),
        (MetaKind::Debug, Outcome::Miss) => out.extend_from_slice(b"EN\r\n"),
        // A miss echoes only the opaque and the key, as memcached.
        (MetaKind::Get, Outcome::Miss) => {
            if !command.quiet {
                meta_line(out, command, None, None, Some("EN"));
            }
        }
        (_, Outcome::Hit { info, value }) => {
            let shown = (command.want_value && command.unless_cas != Some(info.cas)).then_some(*value);
            let info = ItemInfo {
                total_size: value.len() as u32,
                ..*info
            };
            meta_line(out, command, shown, Some(&info), None);
        }
        (_, Outcome::Stored { cas, value_len }) => {
            if !command.quiet {
                let info = ItemInfo {
                    cas: *cas,
                    total_size: *value_len as u32,
                    ..ItemInfo::default()
                };
                meta_line(out, command, None, Some(&info), None);
            }
        }
        // A refused ms still answers c (as 0) and s (the size sent).
        (MetaKind::Set, Outcome::NotStored | Outcome::Exists | Outcome::NotFound | Outcome::Miss) => {
            let code = match outcome {
                Outcome::NotStored => "NS",
                Outcome::Exists => "EX",
                _ => "NF",
            };
            let info = ItemInfo {
                total_size: command.value_len() as u32,
                ..ItemInfo::default()
            };
            meta_line(out, command, None, Some(&info), Some(code));
        }
        (_, Outcome::Deleted) => {
            if !command.quiet {
                meta_line(out, command, None, None, None);
            }
        }
        (
            _,
            Outcome::Number {
                value,
                cas,
                ttl,
                previous_ttl,
            },
        ) => {
            // q hides a success, with or without its value.
            if !command.quiet {
                let info = ItemInfo {
                    cas: *cas,
                    ttl: *ttl,
                    previous_ttl: *previous_ttl,
                    // ma knows only the TTL its T and N leave in the end.
                    touch_ttl: Some(*ttl),
                    vivify_ttl: Some(*ttl),
                    ..ItemInfo::default()
                };
                let digits = itoa::Buffer::new().format(*value).as_bytes().to_vec();
                let shown = command.want_value.then_some(&digits[..]);
                meta_line(out, command, shown, Some(&info), None);
            }
        }
        (_, Outcome::NotStored) => meta_line(out, command, None, None, Some("NS")),
        (_, Outcome::Exists) => meta_line(out, command, None, None, Some("EX")),
        (_, Outcome::NotFound | Outcome::Miss) => meta_line(out, command, None, None, Some("NF")),
        (_, Outcome::Touched { .. }) => meta_line(out, command, None, None, None),
        (_, other) => keyed_outcome(out, other),
    }
}

/// `VA <size> <flags>` + data, `HD <flags>`, or `<code> <flags>`.
fn meta_line(out: &mut Vec<u8>, command: &MetaCommand<'_>, value: Option<&[u8]>, info: Option<&ItemInfo>, code: Option<&str>) {
    let mut number = itoa::Buffer::new();
    match (code, value) {
        (Some(code), _) => out.extend_from_slice(code.as_bytes()),
        (None, Some(value)) => {
            out.extend_from_slice(b"VA ");
            out.extend_from_slice(number.format(value.len()).as_bytes());
        }
        (None, None) => out.extend_from_slice(b"HD"),
    }
    for token in flag_tokens(command.flags) {
        let flag = token[0];
        if !echoed(command.kind).contains(&flag) {
            continue;
        }
        // Item facts only come with a success (and c, s with a refused ms).
        let fact = |out: &mut Vec<u8>, text: &[u8]| {
            out.push(b' ');
            out.push(flag);
            out.extend_from_slice(text);
        };
        match (flag, info) {
            (b'O', _) => fact(out, &token[1..]),
            // A found item's key comes back as it was stored (base64 and
            // 'b' if it was sent so); otherwise as this request sent it.
            (b'k', Some(info)) if matches!(command.kind, MetaKind::Get | MetaKind::Debug) && code.is_none() => {
                if info.binary_key {
                    fact(out, BASE64.encode(&command.key[..]).as_bytes());
                    out.extend_from_slice(b" b");
                } else {
                    fact(out, &command.key);
                }
            }
            (b'k', _) => {
                fact(out, command.raw_key);
                if command.base64 {
                    out.extend_from_slice(b" b");
                }
            }
            (b'c', Some(info)) => fact(out, number.format(info.cas).as_bytes()),
            (b'f', Some(info)) => fact(out, number.format(info.client_flags).as_bytes()),
            (b'h', Some(info)) => fact(out, if info.hit_before { b"1" } else { b"0" }),
            (b'l', Some(info)) => fact(out, number.format(info.idle).as_bytes()),
            (b't', Some(info)) => {
                // memcached applies T and N at their place in the line: `t`
                // shows the TTL left by the last of them before it.
                let split = token_end(command.flags, token);
                let last_change = flag_tokens(&command.flags[..split])
                    .filter_map(|flag| match flag[0] {
                        b'T' => info.touch_ttl,
                        b'N' => info.vivify_ttl,
                        _ => None,
                    })
                    .last();
                let later_change = flag_tokens(&command.flags[split..]).any(|flag| matches!(flag[0], b'T' | b'N'));
                let ttl = match last_change {
                    Some(ttl) => ttl,
                    None if later_change => info.previous_ttl,
                    None => info.ttl,
                };
                fact(out, number.format(ttl).as_bytes())
            }
            (b's', Some(info)) => fact(out, number.format(info.total_size).as_bytes()),
            _ => {}
        }
    }
    if let Some(info) = info {
        // memcached's order: Z, then X, then W.
        if info.recache == Recache::AlreadyWon {
            out.extend_from_slice(b" Z");
        }
        if info.stale {
            out.extend_from_slice(b" X");
        }
        if info.recache == Recache::Won {
            out.extend_from_slice(b" W");
        }
    }
    out.extend_from_slice(b"\r\n");
    if let Some(value) = value {
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where `token` (a slice of `flags`) ends within `flags`.
fn token_end(flags: &[u8], token: &[u8]) -> usize {
    token.as_ptr() as usize - flags.as_ptr() as usize + token.len()
}

/// `ME <key> exp=.. la=.. cas=.. fetch=.. cls=.. size=..`.
fn meta_debug(out: &mut Vec<u8>, command: &MetaCommand<'_>, info: &ItemInfo) {
    use std::io::Write;
    out.extend_from_slice(b"ME ");
    // The key as stored: base64 if it was sent so.
    if info.binary_key {
        out.extend_from_slice(BASE64.encode(&command.key[..]).as_bytes());
    } else {
        out.extend_from_slice(&command.key);
    }
    let fetched = if info.hit_before { "yes" } else { "no" };
    let _ = write!(
        out,
        " exp={} la={} cas={} fetch={} cls={} size={}\r\n",
        info.ttl, info.idle, info.cas, fetched, info.class, info.total_size
    );
}

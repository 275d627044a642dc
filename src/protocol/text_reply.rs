//! The text protocol's reply writer: every byte the server sends to a
//! text client is written here, into the connection's output buffer.

use crate::request::Outcome;

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

//! The classic text protocol: an incremental, zero-copy parser over the
//! connection's read buffer. It returns at most one command per call and
//! never consumes a partial request, so a request split at any byte parses
//! the same once the rest arrives.

use memchr::memchr;

use crate::request::{KeyOp, StoreMode};
use crate::store::KEY_MAX_LENGTH;

/// A line without a newline longer than this closes the connection, as in
/// memcached (unless it is a get, whose key list may be long).
pub const MAX_COMMAND_LINE: usize = 2048;
/// Upper bound for a multi-get line, so an endless line cannot exhaust memory.
pub const MAX_GET_LINE: usize = 1 << 20;

/// A parsed command, borrowing keys and values from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// get/gets/gat/gats: `keys` is the space-separated key list, each key
    /// already checked.
    Get {
        keys: &'a [u8],
        with_cas: bool,
        touch: Option<i64>,
    },
    /// A single-key command (store, delete, incr/decr, touch).
    Keyed {
        op: KeyOp<&'a [u8]>,
        noreply: bool,
    },
    FlushAll {
        delay: i64,
        noreply: bool,
    },
    Version,
    Verbosity {
        level: u32,
        noreply: bool,
    },
    /// stats with its arguments (group name).
    Stats {
        group: &'a [u8],
    },
    Quit,
    Shutdown,
}

impl<'a> Command<'a> {
    /// The keys of a get command, in the client's order.
    pub fn get_keys(keys: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        keys.split(|&b| b == b' ').filter(|key| !key.is_empty())
    }
}

/// What the parser made of the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// No complete request yet: read more.
    Incomplete,
    Command {
        command: Command<'a>,
        consumed: usize,
    },
    /// Answer with this error line (unless noreply) and go on.
    Error {
        reply: &'static str,
        consumed: usize,
        noreply: bool,
    },
    /// A value that will not be stored: answer, then discard `skip` more
    /// bytes (the data block) that may not have arrived yet.
    Swallow {
        reply: &'static str,
        consumed: usize,
        skip: usize,
        noreply: bool,
        /// For set: the key whose old value must be dropped (memcached does
        /// not keep a stale value after a failed set).
        stale_key: Option<&'a [u8]>,
    },
    /// Unrecoverable input (an endless line): answer and close.
    Close {
        reply: &'static str,
    },
}

pub const ERROR: &str = "ERROR";
pub const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
pub const BAD_DATA_CHUNK: &str = "CLIENT_ERROR bad data chunk";
pub const TOO_LARGE: &str = "SERVER_ERROR object too large for cache";
pub const LINE_TOO_LONG: &str = "CLIENT_ERROR line too long";
pub const INVALID_EXPTIME: &str = "CLIENT_ERROR invalid exptime argument";
pub const INVALID_DELTA: &str = "CLIENT_ERROR invalid numeric delta argument";
pub const DELETE_USAGE: &str = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";

/// Parser limits from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct TextLimits {
    /// Largest key + value accepted (`-I` less the item header).
    pub max_payload: usize,
}

const MAX_TOKENS: usize = 8;

/// Up to MAX_TOKENS space-separated tokens of a line (memcached skips
/// repeated spaces); `count` may exceed the stored ones.
struct Tokens<'a> {
    tokens: [&'a [u8]; MAX_TOKENS],
    count: usize,
}

impl<'a> Tokens<'a> {
    fn of(line: &'a [u8]) -> Tokens<'a> {
        let mut tokens = [&line[..0]; MAX_TOKENS];
        let mut count = 0;
        for token in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            if count < MAX_TOKENS {
                tokens[count] = token;
            }
            count += 1;
        }
        Tokens { tokens, count }
    }

    fn get(&self, index: usize) -> &'a [u8] {
        self.tokens[index]
    }

    fn last(&self) -> &'a [u8] {
        self.tokens[self.count.min(MAX_TOKENS) - 1]
    }

    fn noreply(&self) -> bool {
        self.count > 1 && self.count <= MAX_TOKENS && self.last() == b"noreply"
    }
}

fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    token.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn parse_u32(token: &[u8]) -> Option<u32> {
    parse_u64(token).and_then(|v| u32::try_from(v).ok())
}

/// A signed 32-bit number, as memcached's safe_strtol.
fn parse_i32(token: &[u8]) -> Option<i64> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    let magnitude = i64::try_from(parse_u64(digits)?).ok()?;
    let value = if negative { -magnitude } else { magnitude };
    (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&value).then_some(value)
}

/// memcached's key rule: at most 250 bytes, no control characters.
fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= KEY_MAX_LENGTH && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

/// Parses the request at the front of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &TextLimits) -> Parsed<'a> {
    let Some(newline) = memchr(b'\n', buf) else {
        return incomplete_line(buf);
    };
    let consumed = newline + 1;
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let tokens = Tokens::of(line);
    let error = |reply| Parsed::Error {
        reply,
        consumed,
        noreply: false,
    };
    if tokens.count == 0 {
        return error(ERROR);
    }
    let command = |command| Parsed::Command { command, consumed };
    let name = tokens.get(0);
    match name {
        b"get" | b"gets" => parse_get(line, &tokens, name == b"gets", false, consumed),
        b"gat" | b"gats" => parse_get(line, &tokens, name == b"gats", true, consumed),
        b"set" => parse_store(buf, consumed, &tokens, StoreMode::Set, limits),
        b"add" => parse_store(buf, consumed, &tokens, StoreMode::Add, limits),
        b"replace" => parse_store(buf, consumed, &tokens, StoreMode::Replace, limits),
        b"append" => parse_store(buf, consumed, &tokens, StoreMode::Append, limits),
        b"prepend" => parse_store(buf, consumed, &tokens, StoreMode::Prepend, limits),
        b"cas" => parse_store(buf, consumed, &tokens, StoreMode::Cas, limits),
        b"delete" => parse_delete(&tokens, consumed),
        b"incr" | b"decr" => {
            if !(3..=4).contains(&tokens.count) {
                return error(ERROR);
            }
            let noreply = tokens.noreply();
            if tokens.count == 4 && !noreply {
                return error(ERROR);
            }
            let key = tokens.get(1);
            if !valid_key(key) {
                return error(BAD_FORMAT);
            }
            let Some(delta) = parse_u64(tokens.get(2)) else {
                return Parsed::Error {
                    reply: INVALID_DELTA,
                    consumed,
                    noreply,
                };
            };
            let incr = name == b"incr";
            command(Command::Keyed {
                op: KeyOp::Arith { key, incr, delta },
                noreply,
            })
        }
        b"touch" => {
            if !(3..=4).contains(&tokens.count) {
                return error(ERROR);
            }
            let noreply = tokens.noreply();
            let key = tokens.get(1);
            if !valid_key(key) {
                return error(BAD_FORMAT);
            }
            let Some(exptime) = parse_i32(tokens.get(2)) else {
                return Parsed::Error {
                    reply: INVALID_EXPTIME,
                    consumed,
                    noreply,
                };
            };
            command(Command::Keyed {
                op: KeyOp::Touch { key, exptime },
                noreply,
            })
        }
        b"flush_all" => {
            if tokens.count > 3 {
                return error(ERROR);
            }
            let noreply = tokens.noreply();
            let arguments = tokens.count - 1 - usize::from(noreply);
            let delay = match arguments {
                0 => 0,
                1 => match parse_i32(tokens.get(1)) {
                    Some(delay) => delay,
                    None => return error(BAD_FORMAT),
                },
                _ => return error(ERROR),
            };
            command(Command::FlushAll { delay, noreply })
        }
        b"version" => command(Command::Version),
        b"verbosity" => {
            if !(2..=3).contains(&tokens.count) {
                return error(ERROR);
            }
            let noreply = tokens.noreply();
            // memcached reads the level with strtoul and ignores junk.
            let level = parse_u32(tokens.get(1)).unwrap_or(0);
            command(Command::Verbosity { level, noreply })
        }
        b"stats" => command(Command::Stats {
            group: after_tokens(line, 1),
        }),
        b"quit" => command(Command::Quit),
        b"shutdown" => command(Command::Shutdown),
        _ => error(ERROR),
    }
}

fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b != b' ').map_or(start, |end| end + 1);
    &bytes[start..end]
}

/// The rest of a line after its first `count` tokens, trimmed.
fn after_tokens(line: &[u8], count: usize) -> &[u8] {
    let mut rest = line;
    for _ in 0..count {
        rest = trim_spaces(rest);
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        rest = &rest[end..];
    }
    trim_spaces(rest)
}

/// No newline yet: wait, unless the line is already too long to be a
/// command (memcached lets only get lines grow).
fn incomplete_line(buf: &[u8]) -> Parsed<'_> {
    if buf.len() <= MAX_COMMAND_LINE {
        return Parsed::Incomplete;
    }
    let line = trim_spaces(&buf[..64.min(buf.len())]);
    let is_get =
        line.starts_with(b"get ") || line.starts_with(b"gets ") || line.starts_with(b"gat ") || line.starts_with(b"gats ");
    if is_get && buf.len() <= MAX_GET_LINE {
        Parsed::Incomplete
    } else {
        Parsed::Close { reply: LINE_TOO_LONG }
    }
}

fn parse_get<'a>(line: &'a [u8], tokens: &Tokens<'a>, with_cas: bool, touch: bool, consumed: usize) -> Parsed<'a> {
    let error = |reply| Parsed::Error {
        reply,
        consumed,
        noreply: false,
    };
    let min_tokens = if touch { 3 } else { 2 };
    if tokens.count < min_tokens {
        return error(ERROR);
    }
    // The key list starts after the command (and the exptime for gat).
    let keys = after_tokens(line, if touch { 2 } else { 1 });
    let touch = if touch {
        match parse_i32(tokens.get(1)) {
            Some(exptime) => Some(exptime),
            None => return error(INVALID_EXPTIME),
        }
    } else {
        None
    };
    if !Command::get_keys(keys).all(valid_key) {
        return error(BAD_FORMAT);
    }
    Parsed::Command {
        command: Command::Get { keys, with_cas, touch },
        consumed,
    }
}

fn parse_store<'a>(buf: &'a [u8], line_len: usize, tokens: &Tokens<'a>, mode: StoreMode, limits: &TextLimits) -> Parsed<'a> {
    let error = |reply| Parsed::Error {
        reply,
        consumed: line_len,
        noreply: false,
    };
    let arguments = if mode == StoreMode::Cas { 6 } else { 5 };
    if tokens.count != arguments && tokens.count != arguments + 1 {
        return error(ERROR);
    }
    let noreply = tokens.noreply();
    if tokens.count == arguments + 1 && !noreply {
        return error(ERROR);
    }
    let key = tokens.get(1);
    if !valid_key(key) {
        return error(BAD_FORMAT);
    }
    let (Some(client_flags), Some(exptime), Some(length)) =
        (parse_u32(tokens.get(2)), parse_i32(tokens.get(3)), parse_i32(tokens.get(4)))
    else {
        return error(BAD_FORMAT);
    };
    let cas = if mode == StoreMode::Cas {
        match parse_u64(tokens.get(5)) {
            Some(cas) => cas,
            None => return error(BAD_FORMAT),
        }
    } else {
        0
    };
    if length < 0 {
        return error(BAD_FORMAT);
    }
    let length = length as usize;
    if key.len() + length > limits.max_payload {
        return Parsed::Swallow {
            reply: TOO_LARGE,
            consumed: line_len,
            skip: length + 2,
            noreply,
            stale_key: (mode == StoreMode::Set).then_some(key),
        };
    }
    let end = line_len + length + 2;
    if buf.len() < end {
        return Parsed::Incomplete;
    }
    if &buf[end - 2..end] != b"\r\n" {
        return Parsed::Error {
            reply: BAD_DATA_CHUNK,
            consumed: end,
            noreply,
        };
    }
    Parsed::Command {
        command: Command::Keyed {
            op: KeyOp::Store {
                mode,
                key,
                client_flags,
                exptime,
                value: &buf[line_len..end - 2],
                cas,
            },
            noreply,
        },
        consumed: end,
    }
}

fn parse_delete<'a>(tokens: &Tokens<'a>, consumed: usize) -> Parsed<'a> {
    let error = |reply| Parsed::Error {
        reply,
        consumed,
        noreply: false,
    };
    if !(2..=4).contains(&tokens.count) {
        return error(ERROR);
    }
    let key = tokens.get(1);
    if !valid_key(key) {
        return error(BAD_FORMAT);
    }
    let noreply = tokens.noreply();
    if tokens.count > 2 {
        // Only the legacy "delete <key> 0" and noreply are accepted.
        let hold_is_zero = tokens.get(2) == b"0";
        let valid = (tokens.count == 3 && (hold_is_zero || noreply)) || (tokens.count == 4 && hold_is_zero && noreply);
        if !valid {
            return error(DELETE_USAGE);
        }
    }
    Parsed::Command {
        command: Command::Keyed {
            op: KeyOp::Delete { key },
            noreply,
        },
        consumed,
    }
}

//! The classic text protocol: an incremental, zero-copy parser over the
//! connection's read buffer. It returns at most one command per call and
//! never consumes a partial request, so a request split at any byte parses
//! the same once the rest arrives.

use memchr::memchr;

use super::meta::{self, MetaCommand, MetaOp, MetaParsed};
use crate::request::{ArithOptions, DeleteOptions, KeyOp, StoreMode, StoreOptions};
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
    /// mg, ms, md, ma, me.
    Meta(MetaCommand<'a>),
    /// mn: answers MN once everything before it has been answered.
    MetaNoop,
    /// `lru_crawler metadump all|<class ids>`: classes None means all.
    Metadump {
        classes: Option<Vec<usize>>,
    },
    /// `replication promote` | `replication follow <host>:<port>`.
    Replication(ReplicationAdmin<'a>),
}

/// Admin commands that change this host's replication role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationAdmin<'a> {
    /// Become a primary that accepts writes, with a new history id.
    Promote,
    /// Become a read-only replica of the primary at this replication address.
    Follow(&'a [u8]),
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

/// memcached's key rule in the text protocol: at most 250 bytes. Like
/// memcached, other control characters are accepted (the tokenizer splits on
/// spaces only): memaslap, for one, puts 0x10 bytes in its keys.
fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= KEY_MAX_LENGTH
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
        b"set" => parse_store(buf, consumed, &tokens, StoreMode::Set, false, limits),
        b"add" => parse_store(buf, consumed, &tokens, StoreMode::Add, false, limits),
        b"replace" => parse_store(buf, consumed, &tokens, StoreMode::Replace, false, limits),
        b"append" => parse_store(buf, consumed, &tokens, StoreMode::Append, false, limits),
        b"prepend" => parse_store(buf, consumed, &tokens, StoreMode::Prepend, false, limits),
        b"cas" => parse_store(buf, consumed, &tokens, StoreMode::Set, true, limits),
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
                op: KeyOp::Arith {
                    key,
                    incr,
                    delta,
                    options: ArithOptions::default(),
                },
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
        b"mg" | b"ms" | b"md" | b"ma" | b"me" => match meta::parse(name, line, &buf[consumed..], limits.max_payload) {
            MetaParsed::Command(meta) => {
                let data = match &meta.op {
                    MetaOp::Set { value, .. } => value.len() + 2,
                    _ => 0,
                };
                Parsed::Command {
                    command: Command::Meta(meta),
                    consumed: consumed + data,
                }
            }
            MetaParsed::NeedData => Parsed::Incomplete,
            MetaParsed::Error(reply) => error(reply),
            MetaParsed::ErrorSwallow { error, skip } => Parsed::Swallow {
                reply: error,
                consumed,
                skip,
                noreply: false,
                stale_key: None,
            },
            MetaParsed::TooLarge { skip, stale_key } => Parsed::Swallow {
                reply: TOO_LARGE,
                consumed,
                skip,
                noreply: false,
                stale_key,
            },
            MetaParsed::BadDataChunk { data_end } => Parsed::Error {
                reply: BAD_DATA_CHUNK,
                consumed: consumed + data_end,
                noreply: false,
            },
        },
        b"mn" => command(Command::MetaNoop),
        b"lru_crawler" => match (tokens.count, tokens.get(1)) {
            (3, b"metadump") => {
                let which = tokens.get(2);
                if which == b"all" {
                    command(Command::Metadump { classes: None })
                } else {
                    let classes: Option<Vec<usize>> = which
                        .split(|&b| b == b',')
                        .map(|id| std::str::from_utf8(id).ok()?.parse().ok())
                        .collect();
                    match classes {
                        Some(classes) => command(Command::Metadump { classes: Some(classes) }),
                        None => error(BAD_FORMAT),
                    }
                }
            }
            // Other crawler controls are not served: the sweep runs by itself.
            _ => error(ERROR),
        },
        b"replication" => match (tokens.count, tokens.get(1)) {
            (2, b"promote") => command(Command::Replication(ReplicationAdmin::Promote)),
            (3, b"follow") => command(Command::Replication(ReplicationAdmin::Follow(tokens.get(2)))),
            _ => error(BAD_FORMAT),
        },
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

fn parse_store<'a>(
    buf: &'a [u8],
    line_len: usize,
    tokens: &Tokens<'a>,
    mode: StoreMode,
    is_cas: bool,
    limits: &TextLimits,
) -> Parsed<'a> {
    let error = |reply| Parsed::Error {
        reply,
        consumed: line_len,
        noreply: false,
    };
    let arguments = if is_cas { 6 } else { 5 };
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
    let compare_cas = if is_cas {
        match parse_u64(tokens.get(5)) {
            Some(cas) => Some(cas),
            None => return error(BAD_FORMAT),
        }
    } else {
        None
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
            // memcached drops the old value of a failed set (not of a cas).
            stale_key: (mode == StoreMode::Set && !is_cas).then_some(key),
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
                options: StoreOptions {
                    compare_cas,
                    ..StoreOptions::default()
                },
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
            op: KeyOp::Delete {
                key,
                options: DeleteOptions::default(),
            },
            noreply,
        },
        consumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TextLimits = TextLimits { max_payload: 1024 };

    fn parse_one(input: &[u8]) -> Parsed<'_> {
        parse(input, &LIMITS)
    }

    fn command(input: &[u8]) -> Command<'_> {
        match parse_one(input) {
            Parsed::Command { command, consumed } => {
                assert_eq!(consumed, input.len(), "whole input consumed");
                command
            }
            other => panic!("expected a command from {:?}, got {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn error(input: &[u8]) -> &'static str {
        match parse_one(input) {
            Parsed::Error { reply, .. } => reply,
            other => panic!("expected an error from {:?}, got {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn storage_commands() {
        assert_eq!(
            command(b"set foo 5 10 3\r\nbar\r\n"),
            Command::Keyed {
                op: KeyOp::Store {
                    mode: StoreMode::Set,
                    key: b"foo",
                    client_flags: 5,
                    exptime: 10,
                    value: b"bar",
                    options: StoreOptions::default(),
                },
                noreply: false
            }
        );
        assert_eq!(
            command(b"cas k 0 -1 0 77 noreply\r\n\r\n"),
            Command::Keyed {
                op: KeyOp::Store {
                    mode: StoreMode::Set,
                    key: b"k",
                    client_flags: 0,
                    exptime: -1,
                    value: b"",
                    options: StoreOptions {
                        compare_cas: Some(77),
                        ..StoreOptions::default()
                    },
                },
                noreply: true
            }
        );
        for (name, mode) in [
            ("add", StoreMode::Add),
            ("replace", StoreMode::Replace),
            ("append", StoreMode::Append),
            ("prepend", StoreMode::Prepend),
        ] {
            let line = format!("{name} k 0 0 1\r\nx\r\n");
            match command(line.as_bytes()) {
                Command::Keyed {
                    op: KeyOp::Store { mode: parsed, .. },
                    ..
                } => assert_eq!(parsed, mode),
                other => panic!("{other:?}"),
            }
        }
        // A bare newline ends lines too.
        assert!(matches!(command(b"set k 0 0 1\nx\r\n"), Command::Keyed { .. }));
    }

    #[test]
    fn retrieval_commands() {
        let Command::Get { keys, with_cas, touch } = command(b"gets  a bb  ccc \r\n") else {
            panic!()
        };
        assert!(with_cas && touch.is_none());
        assert_eq!(Command::get_keys(keys).collect::<Vec<_>>(), vec![&b"a"[..], b"bb", b"ccc"]);
        let Command::Get { keys, touch, with_cas } = command(b"gat 100 k1 k2\r\n") else {
            panic!()
        };
        assert_eq!((touch, with_cas), (Some(100), false));
        assert_eq!(Command::get_keys(keys).count(), 2);
        assert_eq!(error(b"get\r\n"), ERROR);
        assert_eq!(error(b"gat 10\r\n"), ERROR);
        assert_eq!(error(b"gat x k\r\n"), INVALID_EXPTIME);
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            command(b"delete k\r\n"),
            Command::Keyed {
                op: KeyOp::Delete {
                    key: b"k",
                    options: DeleteOptions::default()
                },
                noreply: false
            }
        );
        assert_eq!(
            command(b"delete k 0 noreply\r\n"),
            Command::Keyed {
                op: KeyOp::Delete {
                    key: b"k",
                    options: DeleteOptions::default()
                },
                noreply: true
            }
        );
        assert_eq!(error(b"delete k 5\r\n"), DELETE_USAGE);
        assert_eq!(error(b"delete a b c d e\r\n"), ERROR);
        assert_eq!(
            command(b"incr n 18446744073709551615\r\n"),
            Command::Keyed {
                op: KeyOp::Arith {
                    key: b"n",
                    incr: true,
                    delta: u64::MAX,
                    options: ArithOptions::default(),
                },
                noreply: false
            }
        );
        assert_eq!(error(b"decr n -1\r\n"), INVALID_DELTA);
        assert_eq!(error(b"incr n 18446744073709551616\r\n"), INVALID_DELTA);
        assert_eq!(
            command(b"touch k 10 noreply\r\n"),
            Command::Keyed {
                op: KeyOp::Touch { key: b"k", exptime: 10 },
                noreply: true
            }
        );
        assert_eq!(error(b"touch k abc\r\n"), INVALID_EXPTIME);
        assert_eq!(
            command(b"flush_all\r\n"),
            Command::FlushAll {
                delay: 0,
                noreply: false
            }
        );
        assert_eq!(
            command(b"flush_all 10 noreply\r\n"),
            Command::FlushAll {
                delay: 10,
                noreply: true
            }
        );
        assert_eq!(
            command(b"flush_all noreply\r\n"),
            Command::FlushAll { delay: 0, noreply: true }
        );
        assert_eq!(error(b"flush_all soon\r\n"), BAD_FORMAT);
        assert_eq!(command(b"version\r\n"), Command::Version);
        assert_eq!(
            command(b"verbosity 1 noreply\r\n"),
            Command::Verbosity { level: 1, noreply: true }
        );
        assert_eq!(error(b"verbosity\r\n"), ERROR);
        assert_eq!(error(b"verbosity foo bar my\r\n"), ERROR);
        assert_eq!(command(b"stats\r\n"), Command::Stats { group: b"" });
        assert_eq!(command(b"stats  slabs \r\n"), Command::Stats { group: b"slabs" });
        assert_eq!(command(b"quit\r\n"), Command::Quit);
        assert_eq!(command(b"shutdown\r\n"), Command::Shutdown);
        assert_eq!(command(b"lru_crawler metadump all\r\n"), Command::Metadump { classes: None });
        assert_eq!(
            command(b"replication promote\r\n"),
            Command::Replication(ReplicationAdmin::Promote)
        );
        assert_eq!(
            command(b"replication follow 127.0.0.2:7000\r\n"),
            Command::Replication(ReplicationAdmin::Follow(b"127.0.0.2:7000"))
        );
        assert_eq!(
            command(b"lru_crawler metadump 1,3\r\n"),
            Command::Metadump {
                classes: Some(vec![1, 3])
            }
        );
        assert_eq!(error(b"lru_crawler metadump x\r\n"), BAD_FORMAT);
        assert_eq!(error(b"bogus\r\n"), ERROR);
        assert_eq!(error(b"\r\n"), ERROR);
    }

    #[test]
    fn bad_storage_lines() {
        assert_eq!(error(b"set k 0 0\r\n"), ERROR);
        assert_eq!(error(b"set k 0 0 1 extra\r\n"), ERROR);
        assert_eq!(error(b"set k x 0 1\r\n"), BAD_FORMAT);
        assert_eq!(error(b"set k 0 0 -1\r\n"), BAD_FORMAT);
        assert_eq!(error(b"set k -1 0 1\r\n"), BAD_FORMAT);
        assert_eq!(error(b"cas k 0 0 1 x\r\n"), BAD_FORMAT);
        let long_key = format!("set {} 0 0 1\r\nx\r\n", "k".repeat(251));
        assert_eq!(error(long_key.as_bytes()), BAD_FORMAT);
        let ok_key = format!("set {} 0 0 1\r\nx\r\n", "k".repeat(250));
        assert!(matches!(command(ok_key.as_bytes()), Command::Keyed { .. }));
        assert!(
            matches!(command(b"get a\x01b\x10\r\n"), Command::Get { .. }),
            "memcached accepts control bytes"
        );
        assert_eq!(error(format!("get a {}\r\n", "k".repeat(251)).as_bytes()), BAD_FORMAT);
        // Wrong data length: the declared bytes are consumed, then an error.
        assert_eq!(
            parse_one(b"set k 0 0 2\r\nabc\r\n"),
            Parsed::Error {
                reply: BAD_DATA_CHUNK,
                consumed: 17,
                noreply: false
            }
        );
    }

    #[test]
    fn too_large_values_are_swallowed() {
        assert_eq!(
            parse_one(b"set k 0 0 2000\r\n"),
            Parsed::Swallow {
                reply: TOO_LARGE,
                consumed: 16,
                skip: 2002,
                noreply: false,
                stale_key: Some(b"k"),
            }
        );
        assert!(matches!(
            parse_one(b"add k 0 0 2000 noreply\r\n"),
            Parsed::Swallow {
                noreply: true,
                stale_key: None,
                ..
            }
        ));
    }

    #[test]
    fn endless_lines_are_bounded() {
        let junk = vec![b'x'; MAX_COMMAND_LINE + 1];
        assert!(matches!(parse_one(&junk), Parsed::Close { .. }));
        let mut get = b"get ".to_vec();
        get.resize(MAX_COMMAND_LINE * 4, b'k');
        assert_eq!(parse_one(&get), Parsed::Incomplete);
        get.resize(MAX_GET_LINE + 1, b'k');
        assert!(matches!(parse_one(&get), Parsed::Close { .. }));
    }

    /// Parses a stream the way a connection does: complete requests only,
    /// skipping swallowed bytes. Returns a printable trace of what was parsed.
    fn trace(chunks: &[&[u8]]) -> Vec<String> {
        let mut buffer = Vec::new();
        let mut swallow = 0;
        let mut trace = Vec::new();
        for chunk in chunks {
            buffer.extend_from_slice(chunk);
            loop {
                let skip = swallow.min(buffer.len());
                buffer.drain(..skip);
                swallow -= skip;
                if swallow > 0 || buffer.is_empty() {
                    break;
                }
                let consumed = match parse(&buffer, &LIMITS) {
                    Parsed::Incomplete => break,
                    Parsed::Command { command, consumed } => {
                        trace.push(format!("{command:?}"));
                        consumed
                    }
                    Parsed::Error { reply, consumed, .. } => {
                        trace.push(reply.to_string());
                        consumed
                    }
                    Parsed::Swallow {
                        reply, consumed, skip, ..
                    } => {
                        trace.push(reply.to_string());
                        swallow = skip;
                        consumed
                    }
                    Parsed::Close { reply } => {
                        trace.push(reply.to_string());
                        return trace;
                    }
                };
                buffer.drain(..consumed);
            }
        }
        trace
    }

    #[test]
    fn requests_split_at_every_byte_parse_the_same() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"set foo 1 0 5\r\nhello\r\n");
        stream.extend_from_slice(b"get foo bar\r\n");
        stream.extend_from_slice(b"gets foo\n");
        stream.extend_from_slice(b"append foo 0 0 3 noreply\r\nabc\r\n");
        stream.extend_from_slice(b"cas foo 0 0 1 99\r\nz\r\n");
        stream.extend_from_slice(b"set big 0 0 1100\r\n");
        stream.extend_from_slice(&[b'v'; 1100]);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(b"set k 0 0 2\r\nabc\r\n");
        stream.extend_from_slice(b"incr n 5\r\ndecr n 1 noreply\r\ntouch foo 10\r\n");
        stream.extend_from_slice(b"gat 5 foo\r\ndelete foo 0\r\nbogus\r\n");
        stream.extend_from_slice(b"flush_all 0\r\nstats items\r\nversion\r\nverbosity 1\r\nquit\r\n");
        let whole = trace(&[&stream]);
        // 19: the bad chunk leaves "\n", an empty line, which answers ERROR as in memcached.
        assert_eq!(whole.len(), 19, "{whole:#?}");
        for split in 0..=stream.len() {
            let (first, second) = stream.split_at(split);
            assert_eq!(trace(&[first, second]), whole, "split at byte {split}");
        }
        // And byte by byte.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(trace(&bytes), whole);
    }
}

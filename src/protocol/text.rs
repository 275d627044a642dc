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
    /// `slabs automove 0`: the page mover stays off (it is the only mode).
    SlabsAutomoveOff,
    /// `valid_mode`: no argument, or `graceful`.
    Shutdown {
        valid_mode: bool,
    },
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
    /// `cluster nodes` | `cluster owner <key>`.
    Cluster(ClusterAdmin<'a>),
    /// `cluster get <key>`: a quorum read (router::quorum_get).
    ClusterGet(&'a [u8]),
    /// `cluster local <key>`: this node's own copy (router::local_get), for
    /// a client spreading a hot key's reads over its copies.
    ClusterLocal(&'a [u8]),
    /// `wait <copies> <timeout_ms>` (cluster mode): block until the
    /// connection's last write is on that many copies, or the timeout.
    /// None: the arguments are not two numbers. Not a memcached command:
    /// without cluster mode it is answered as an unknown one.
    Wait(Option<Wait>),
}

/// The arguments of `wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub copies: u32,
    pub timeout_ms: u32,
}

/// Admin commands about the cluster's node list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterAdmin<'a> {
    /// Every node of the list.
    Nodes,
    /// A key's preference list.
    Owner(&'a [u8]),
    /// Changes of the node list: `host:port[:weight]`, `host:port`, and
    /// `host:port` with a weight.
    Add(&'a [u8]),
    Remove(&'a [u8]),
    Weight(&'a [u8], u32),
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
    /// Input memcached hangs up on without a reply (an endless line, an
    /// HTTP request line).
    Close,
}

pub const ERROR: &str = "ERROR";
pub const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
pub const BAD_DATA_CHUNK: &str = "CLIENT_ERROR bad data chunk";
pub const TOO_LARGE: &str = "SERVER_ERROR object too large for cache";
pub const INVALID_EXPTIME: &str = "CLIENT_ERROR invalid exptime argument";
pub const INVALID_DELTA: &str = "CLIENT_ERROR invalid numeric delta argument";
pub const SLAB_REASSIGN_OFF: &str = "CLIENT_ERROR slab reassignment disabled";

/// Parser limits from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct TextLimits {
    /// Largest key + value accepted (`-I` less the item header).
    pub max_payload: usize,
}

const MAX_TOKENS: usize = 8;

/// The first MAX_TOKENS space-separated tokens of a line (memcached skips
/// repeated spaces), how many there are in all, and the last one.
struct Tokens<'a> {
    tokens: [&'a [u8]; MAX_TOKENS],
    count: usize,
    last: &'a [u8],
}

impl<'a> Tokens<'a> {
    fn of(line: &'a [u8]) -> Tokens<'a> {
        let mut tokens = [&line[..0]; MAX_TOKENS];
        let mut count = 0;
        let mut last = &line[..0];
        for token in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            if count < MAX_TOKENS {
                tokens[count] = token;
            }
            count += 1;
            last = token;
        }
        Tokens { tokens, count, last }
    }

    /// Token `index`, empty when the line has fewer (or it is not kept).
    fn get(&self, index: usize) -> &'a [u8] {
        if index < self.count.min(MAX_TOKENS) {
            self.tokens[index]
        } else {
            &self.last[..0]
        }
    }

    /// memcached's rule: a command is quiet when its last token is
    /// `noreply`, wherever that falls.
    fn noreply(&self) -> bool {
        self.count > 1 && self.last == b"noreply"
    }
}

/// Digits only, as memcached's strict token readers (no sign, no space).
fn digits(token: &[u8]) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    token.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// An unsigned 64-bit token, strictly (incr/decr deltas, cas uniques).
pub(crate) fn strict_u64(token: &[u8]) -> Option<u64> {
    digits(token)
}

/// An unsigned 32-bit token, strictly (verbosity).
pub(crate) fn strict_u32(token: &[u8]) -> Option<u32> {
    digits(token).and_then(|v| u32::try_from(v).ok())
}

/// A signed 32-bit token, strictly: an optional '-' and digits (data
/// lengths; touch, gat and flush_all times). A lone "-" reads as 0, as in
/// memcached.
pub(crate) fn strict_i32(token: &[u8]) -> Option<i64> {
    let (negative, rest) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    if negative && rest.is_empty() {
        return Some(0);
    }
    let magnitude = i64::try_from(digits(rest)?).ok()?;
    let value = if negative { -magnitude } else { magnitude };
    (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&value).then_some(value)
}

/// C's strtoull as memcached's safe_strtoull reads a token: an optional
/// sign, digits, no overflow; a '-' is refused only when the negated value
/// would read as negative (so "-0" is 0).
fn c_strtoull(token: &[u8]) -> Option<u64> {
    let (negative, rest) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, token),
    };
    let mut value = digits(rest)?;
    if negative {
        value = value.wrapping_neg();
        if (value as i64) < 0 {
            return None;
        }
    }
    Some(value)
}

/// Client flags: read as strtoull, kept as 32 bits (the low half of what
/// was sent, as memcached prints them).
fn client_flags(token: &[u8]) -> Option<u32> {
    c_strtoull(token).map(|value| value as u32)
}

/// C's strtol as memcached's safe_strtol reads an exptime: an optional sign
/// and digits within 64 bits, then cut to 32 bits (so times past 2^31 wrap
/// exactly as they do in memcached).
fn storage_exptime(token: &[u8]) -> Option<i64> {
    let (negative, rest) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, token),
    };
    let magnitude = digits(rest)?;
    let value = if negative {
        0i64.checked_sub_unsigned(magnitude)?
    } else {
        i64::try_from(magnitude).ok()?
    };
    Some(i64::from(value as i32))
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
    let error = |reply| Parsed::Error {
        reply,
        consumed,
        noreply: false,
    };
    // No command is shorter than two bytes and its line end.
    if consumed < 4 {
        return error(BAD_FORMAT);
    }
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let tokens = Tokens::of(line);
    // The command is what precedes the first space: a line that starts
    // with a space names no command.
    let name = if line.first() == Some(&b' ') {
        &line[..0]
    } else {
        tokens.get(0)
    };
    let noreply = tokens.noreply();
    let quiet_error = |reply| Parsed::Error {
        reply,
        consumed,
        noreply,
    };
    let command = |command| Parsed::Command { command, consumed };
    match name {
        b"get" | b"gets" => parse_get(line, &tokens, name == b"gets", false, consumed),
        b"gat" | b"gats" => parse_get(line, &tokens, name == b"gats", true, consumed),
        b"set" => parse_store(buf, consumed, &tokens, StoreMode::Set, false, limits),
        b"add" => parse_store(buf, consumed, &tokens, StoreMode::Add, false, limits),
        b"replace" => parse_store(buf, consumed, &tokens, StoreMode::Replace, false, limits),
        b"append" => parse_store(buf, consumed, &tokens, StoreMode::Append, false, limits),
        b"prepend" => parse_store(buf, consumed, &tokens, StoreMode::Prepend, false, limits),
        b"cas" => parse_store(buf, consumed, &tokens, StoreMode::Set, true, limits),
        b"delete" => {
            // Anything after the key is ignored but a final noreply (the
            // legacy "delete <key> <time>" is gone from memcached 1.6.45).
            if tokens.count < 2 {
                return error(BAD_FORMAT);
            }
            let key = tokens.get(1);
            if !valid_key(key) {
                return quiet_error(BAD_FORMAT);
            }
            command(Command::Keyed {
                op: KeyOp::Delete {
                    key,
                    options: DeleteOptions::default(),
                },
                noreply,
            })
        }
        b"incr" | b"decr" => {
            if tokens.count < 3 {
                return error(BAD_FORMAT);
            }
            let key = tokens.get(1);
            if !valid_key(key) {
                return quiet_error(BAD_FORMAT);
            }
            let Some(delta) = strict_u64(tokens.get(2)) else {
                return quiet_error(INVALID_DELTA);
            };
            command(Command::Keyed {
                op: KeyOp::Arith {
                    key,
                    incr: name == b"incr",
                    delta,
                    options: ArithOptions::default(),
                },
                noreply,
            })
        }
        b"touch" => {
            if tokens.count < 3 {
                return error(BAD_FORMAT);
            }
            let key = tokens.get(1);
            if !valid_key(key) {
                return quiet_error(BAD_FORMAT);
            }
            let Some(exptime) = strict_i32(tokens.get(2)) else {
                return quiet_error(INVALID_EXPTIME);
            };
            command(Command::Keyed {
                op: KeyOp::Touch { key, exptime },
                noreply,
            })
        }
        b"flush_all" => {
            // A delay is read only when there is a token besides noreply.
            let delay = if tokens.count == 1 + usize::from(noreply) {
                0
            } else {
                match strict_i32(tokens.get(1)) {
                    Some(delay) => delay,
                    None => return quiet_error(INVALID_EXPTIME),
                }
            };
            command(Command::FlushAll { delay, noreply })
        }
        b"version" => command(Command::Version),
        b"verbosity" => match strict_u32(tokens.get(1)) {
            Some(level) => command(Command::Verbosity { level, noreply }),
            None => quiet_error(BAD_FORMAT),
        },
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
        b"wait" => command(Command::Wait(
            match (tokens.count, strict_u32(tokens.get(1)), strict_u32(tokens.get(2))) {
                (3, Some(copies), Some(timeout_ms)) => Some(Wait { copies, timeout_ms }),
                _ => None,
            },
        )),
        b"cluster" => match (tokens.count, tokens.get(1)) {
            (2, b"nodes") => command(Command::Cluster(ClusterAdmin::Nodes)),
            (3, b"owner") if tokens.get(2).len() <= KEY_MAX_LENGTH => {
                command(Command::Cluster(ClusterAdmin::Owner(tokens.get(2))))
            }
            (3, b"get") if tokens.get(2).len() <= KEY_MAX_LENGTH => command(Command::ClusterGet(tokens.get(2))),
            (3, b"local") if tokens.get(2).len() <= KEY_MAX_LENGTH => command(Command::ClusterLocal(tokens.get(2))),
            (3, b"add") => command(Command::Cluster(ClusterAdmin::Add(tokens.get(2)))),
            (3, b"remove") => command(Command::Cluster(ClusterAdmin::Remove(tokens.get(2)))),
            (4, b"weight") => match strict_u32(tokens.get(3)) {
                Some(weight) => command(Command::Cluster(ClusterAdmin::Weight(tokens.get(2), weight))),
                None => error(BAD_FORMAT),
            },
            _ => error(BAD_FORMAT),
        },
        b"replication" => match (tokens.count, tokens.get(1)) {
            (2, b"promote") => command(Command::Replication(ReplicationAdmin::Promote)),
            (3, b"follow") => command(Command::Replication(ReplicationAdmin::Follow(tokens.get(2)))),
            _ => error(BAD_FORMAT),
        },
        // corecache moves no slab pages between classes: it says so, with
        // memcached's own replies for a server whose reassignment is off.
        b"slabs" => match (tokens.get(1), tokens.get(2)) {
            (b"reassign", _) if tokens.count == 4 => error(SLAB_REASSIGN_OFF),
            (b"automove", level) if tokens.count >= 3 => match strict_u32(level) {
                None => error(BAD_FORMAT),
                Some(0) => command(Command::SlabsAutomoveOff),
                Some(1 | 2) => error(SLAB_REASSIGN_OFF),
                Some(_) => error(ERROR),
            },
            _ => error(ERROR),
        },
        b"quit" => command(Command::Quit),
        // `shutdown` or `shutdown graceful` (both stop gracefully here).
        b"shutdown" => command(Command::Shutdown {
            valid_mode: tokens.count == 1 || (tokens.count == 2 && tokens.get(1) == b"graceful"),
        }),
        // An HTTP request line is hung up on, as memcached does, so a
        // browser cannot be used to send commands across protocols.
        _ if tokens.count > 1 && tokens.last.starts_with(b"HTTP/") => Parsed::Close,
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
/// command. As in memcached, only a line that starts (after at most 100
/// spaces) with `get ` or `gets ` may grow past 2048 bytes; any other is
/// hung up on without a reply.
fn incomplete_line(buf: &[u8]) -> Parsed<'_> {
    if buf.len() <= MAX_COMMAND_LINE {
        return Parsed::Incomplete;
    }
    let spaces = buf.iter().take_while(|&&b| b == b' ').count();
    let rest = &buf[spaces..];
    let is_get = spaces <= 100 && (rest.starts_with(b"get ") || rest.starts_with(b"gets "));
    if is_get && buf.len() <= MAX_GET_LINE {
        Parsed::Incomplete
    } else {
        Parsed::Close
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
        return error(BAD_FORMAT);
    }
    // The key list starts after the command (and the exptime for gat).
    let keys = after_tokens(line, if touch { 2 } else { 1 });
    let touch = if touch {
        match strict_i32(tokens.get(1)) {
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
    // Until the data length is known the data block cannot be skipped, so
    // these errors answer and go on with the next line.
    if tokens.count < 5 {
        return error(BAD_FORMAT);
    }
    let length = match strict_i32(tokens.get(4)) {
        Some(length) if length >= 0 && length <= i64::from(i32::MAX) - 2 => length as usize,
        _ => return error(BAD_FORMAT),
    };
    let noreply = tokens.noreply();
    // From here on an error swallows the data block, as memcached does:
    // a value is never run as commands. Extra tokens are ignored.
    let swallow = |reply, stale_key| Parsed::Swallow {
        reply,
        consumed: line_len,
        skip: length + 2,
        noreply,
        stale_key,
    };
    let key = tokens.get(1);
    if !valid_key(key) {
        return swallow(BAD_FORMAT, None);
    }
    let (Some(client_flags), Some(exptime)) = (client_flags(tokens.get(2)), storage_exptime(tokens.get(3))) else {
        return swallow(BAD_FORMAT, None);
    };
    let compare_cas = if is_cas {
        match strict_u64(tokens.get(5)) {
            Some(cas) => Some(cas),
            None => return swallow(BAD_FORMAT, None),
        }
    } else {
        None
    };
    if super::too_large(key.len(), length, client_flags, limits.max_payload) {
        // memcached drops the old value of a failed set (not of a cas).
        return swallow(TOO_LARGE, (mode == StoreMode::Set && !is_cas).then_some(key));
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
        assert_eq!(error(b"get\r\n"), BAD_FORMAT, "a missing key is a format error");
        assert_eq!(error(b"gat 10\r\n"), BAD_FORMAT);
        assert_eq!(error(b"gat +5 k\r\n"), INVALID_EXPTIME, "touch times are strict numbers");
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
        // memcached 1.6.45 ignores what follows the key (but a last noreply).
        assert!(matches!(command(b"delete k 5\r\n"), Command::Keyed { noreply: false, .. }));
        assert!(matches!(
            command(b"delete k 10 noreply\r\n"),
            Command::Keyed { noreply: true, .. }
        ));
        assert!(matches!(command(b"delete a b c d e\r\n"), Command::Keyed { .. }));
        assert_eq!(error(b"delete\r\n"), BAD_FORMAT);
        assert!(matches!(command(b"incr k 1 x\r\n"), Command::Keyed { noreply: false, .. }));
        assert!(matches!(
            command(b"touch k 0 noreply x\r\n"),
            Command::Keyed { noreply: false, .. }
        ));
        assert_eq!(error(b"incr k\r\n"), BAD_FORMAT);
        assert_eq!(error(b"incr n +1\r\n"), INVALID_DELTA);
        assert!(matches!(
            parse_one(b"incr n x noreply\r\n"),
            Parsed::Error {
                reply: INVALID_DELTA,
                noreply: true,
                ..
            }
        ));
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
        assert_eq!(error(b"flush_all soon\r\n"), INVALID_EXPTIME);
        assert_eq!(
            command(b"flush_all 0 0\r\n"),
            Command::FlushAll {
                delay: 0,
                noreply: false
            }
        );
        assert_eq!(error(b"flush_all +0\r\n"), INVALID_EXPTIME);
        assert_eq!(command(b"version\r\n"), Command::Version);
        assert_eq!(
            command(b"verbosity 1 noreply\r\n"),
            Command::Verbosity { level: 1, noreply: true }
        );
        assert_eq!(error(b"verbosity\r\n"), BAD_FORMAT);
        assert_eq!(error(b"verbosity abc\r\n"), BAD_FORMAT);
        assert_eq!(
            command(b"verbosity 1 2 3\r\n"),
            Command::Verbosity {
                level: 1,
                noreply: false
            }
        );
        assert_eq!(command(b"stats\r\n"), Command::Stats { group: b"" });
        assert_eq!(command(b"stats  slabs \r\n"), Command::Stats { group: b"slabs" });
        assert_eq!(command(b"quit\r\n"), Command::Quit);
        assert_eq!(command(b"shutdown\r\n"), Command::Shutdown { valid_mode: true });
        assert_eq!(command(b"shutdown now\r\n"), Command::Shutdown { valid_mode: false });
        assert_eq!(command(b"lru_crawler metadump all\r\n"), Command::Metadump { classes: None });
        assert_eq!(
            command(b"replication promote\r\n"),
            Command::Replication(ReplicationAdmin::Promote)
        );
        assert_eq!(
            command(b"replication follow 127.0.0.2:7000\r\n"),
            Command::Replication(ReplicationAdmin::Follow(b"127.0.0.2:7000"))
        );
        assert_eq!(command(b"cluster nodes\r\n"), Command::Cluster(ClusterAdmin::Nodes));
        assert_eq!(
            command(b"wait 2 100\r\n"),
            Command::Wait(Some(Wait {
                copies: 2,
                timeout_ms: 100
            }))
        );
        assert_eq!(command(b"wait 2\r\n"), Command::Wait(None));
        assert_eq!(command(b"wait x 5\r\n"), Command::Wait(None));
        assert_eq!(
            command(b"cluster owner foo\r\n"),
            Command::Cluster(ClusterAdmin::Owner(b"foo"))
        );
        assert_eq!(command(b"cluster get foo\r\n"), Command::ClusterGet(b"foo"));
        assert_eq!(command(b"cluster local foo\r\n"), Command::ClusterLocal(b"foo"));
        assert_eq!(
            command(b"cluster add 127.0.0.5:11211:2\r\n"),
            Command::Cluster(ClusterAdmin::Add(b"127.0.0.5:11211:2"))
        );
        assert_eq!(
            command(b"cluster remove 127.0.0.5:11211\r\n"),
            Command::Cluster(ClusterAdmin::Remove(b"127.0.0.5:11211"))
        );
        assert_eq!(
            command(b"cluster weight 127.0.0.5:11211 3\r\n"),
            Command::Cluster(ClusterAdmin::Weight(b"127.0.0.5:11211", 3))
        );
        assert_eq!(
            command(b"lru_crawler metadump 1,3\r\n"),
            Command::Metadump {
                classes: Some(vec![1, 3])
            }
        );
        assert_eq!(error(b"lru_crawler metadump x\r\n"), BAD_FORMAT);
        assert_eq!(error(b"bogus\r\n"), ERROR);
        assert_eq!(error(b"slabs automove invalid\r\n"), BAD_FORMAT);
        assert_eq!(command(b"slabs automove 0\r\n"), Command::SlabsAutomoveOff);
        assert_eq!(error(b"slabs automove 1\r\n"), SLAB_REASSIGN_OFF);
        assert_eq!(error(b"slabs reassign 1 2\r\n"), SLAB_REASSIGN_OFF);
        assert_eq!(error(b" get k\r\n"), ERROR, "a line starting with a space names no command");
        // Lines shorter than a two-byte command are format errors.
        assert_eq!(error(b"\r\n"), BAD_FORMAT);
        assert_eq!(error(b"\n"), BAD_FORMAT);
        assert_eq!(error(b"x\r\n"), BAD_FORMAT);
        assert_eq!(error(b"xx\r\n"), ERROR);
        // HTTP request lines are hung up on.
        assert_eq!(parse_one(b"GET / HTTP/1.0\r\n"), Parsed::Close);
        assert_eq!(parse_one(b"DELETE HTTP/1.1\r\n"), Parsed::Close);
        assert!(matches!(command(b"get / HTTP/1.0\r\n"), Command::Get { .. }));
    }

    /// The reply of a line whose data block is swallowed.
    fn swallowed(input: &[u8]) -> &'static str {
        match parse_one(input) {
            Parsed::Swallow { reply, skip, .. } => {
                assert_eq!(skip, 3, "the data block of {:?}", String::from_utf8_lossy(input));
                reply
            }
            other => panic!("expected a swallow from {:?}, got {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn bad_storage_lines() {
        // Without a usable data length nothing can be swallowed.
        assert_eq!(error(b"set k 0 0\r\n"), BAD_FORMAT);
        assert_eq!(error(b"set k 0 0 -1\r\n"), BAD_FORMAT);
        assert_eq!(error(b"set k 0 0 +1\r\n"), BAD_FORMAT);
        assert_eq!(error(b"set k 0 0 2147483647\r\n"), BAD_FORMAT);
        assert_eq!(error(b"set k 0 0 4294967295\r\n"), BAD_FORMAT);
        // With one, the data block is swallowed.
        assert_eq!(swallowed(b"set k x 0 1\r\n"), BAD_FORMAT);
        assert_eq!(swallowed(b"set k -1 0 1\r\n"), BAD_FORMAT);
        assert_eq!(swallowed(b"set k 0 0x 1\r\n"), BAD_FORMAT);
        assert_eq!(swallowed(b"cas k 0 0 1 x\r\n"), BAD_FORMAT);
        assert_eq!(swallowed(b"cas k 0 0 1\r\n"), BAD_FORMAT, "a cas without its unique");
        assert_eq!(swallowed(b"cas k 0 0 1 +5\r\n"), BAD_FORMAT);
        let long_key = format!("set {} 0 0 1\r\nx\r\n", "k".repeat(251));
        assert_eq!(swallowed(long_key.as_bytes()), BAD_FORMAT);
        assert!(matches!(
            parse_one(format!("set {} 0 0 1 noreply\r\nx\r\n", "k".repeat(251)).as_bytes()),
            Parsed::Swallow { noreply: true, .. }
        ));
        let ok_key = format!("set {} 0 0 1\r\nx\r\n", "k".repeat(250));
        assert!(matches!(command(ok_key.as_bytes()), Command::Keyed { .. }));
        // Extra tokens are ignored; noreply counts only as the last one.
        assert!(matches!(
            command(b"set k 0 0 1 extra\r\nx\r\n"),
            Command::Keyed { noreply: false, .. }
        ));
        assert!(matches!(
            command(b"set k 0 0 1 noreply x\r\nx\r\n"),
            Command::Keyed { noreply: false, .. }
        ));
        assert!(matches!(
            command(b"set k 0 0 1 x noreply\r\nx\r\n"),
            Command::Keyed { noreply: true, .. }
        ));
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
    fn numbers_are_read_as_memcached_reads_them() {
        let store = |line: &[u8]| match command(line) {
            Command::Keyed {
                op: KeyOp::Store {
                    client_flags, exptime, ..
                },
                ..
            } => (client_flags, exptime),
            other => panic!("{other:?}"),
        };
        // Client flags: strtoull, kept as their low 32 bits.
        assert_eq!(store(b"set k 18446744073709551615 0 1\r\nx\r\n").0, u32::MAX);
        assert_eq!(store(b"set k 4294967296 0 1\r\nx\r\n").0, 0);
        assert_eq!(store(b"set k +5 0 1\r\nx\r\n").0, 5);
        assert_eq!(store(b"set k -0 0 1\r\nx\r\n").0, 0);
        assert_eq!(swallowed(b"set k 18446744073709551616 0 1\r\n"), BAD_FORMAT);
        // Storage exptimes: 64-bit strtol cut to 32 bits.
        assert_eq!(store(b"set k 0 +5 1\r\nx\r\n").1, 5);
        assert_eq!(store(b"set k 0 4294967296 1\r\nx\r\n").1, 0);
        assert_eq!(store(b"set k 0 99999999999 1\r\nx\r\n").1, 1215752191);
        assert_eq!(store(b"set k 0 -99999999999 1\r\nx\r\n").1, -1215752191);
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
        assert!(matches!(parse_one(&junk), Parsed::Close));
        let mut get = b"get ".to_vec();
        get.resize(MAX_COMMAND_LINE * 4, b'k');
        assert_eq!(parse_one(&get), Parsed::Incomplete);
        get.resize(MAX_GET_LINE + 1, b'k');
        assert!(matches!(parse_one(&get), Parsed::Close));
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
                    Parsed::Close => {
                        trace.push("close".to_string());
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

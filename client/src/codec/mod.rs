//! The client side of memcached's three dialects, as plain code: encoders
//! append one request to a send buffer and say what its reply looks like
//! (`Expect`); `decode` reads that reply from the front of a receive
//! buffer, one event at a time (each value found, then the end), without
//! copying values and without allocating unless the server sent an error.
//!
//! One request, one `Expect`: the caller keeps them in send order and
//! decodes replies in that order (memcached answers in order on a
//! connection), which is how pipelining works here.

mod binary;
mod meta;
mod text;

use thiserror::Error;

/// The dialect a connection speaks, and its requests and replies.
///
/// ```
/// use corecache_client::codec::{Event, Fetch, Protocol, Reply};
///
/// let mut out = Vec::new();
/// let mut expect = Protocol::Text.get([&b"a"[..], b"b"], Fetch::default(), &mut out);
/// assert_eq!(out, b"get a b\r\n");
/// // What the server sent back, read as it arrives.
/// let reply = b"VALUE a 0 2\r\nhi\r\nEND\r\n";
/// let (used, event) = Protocol::Text.decode(&mut expect, reply).unwrap().unwrap();
/// let Event::Item(item) = event else { panic!() };
/// assert_eq!((item.key, item.value), (&b"a"[..], &b"hi"[..]));
/// let (rest, event) = Protocol::Text.decode(&mut expect, &reply[used..]).unwrap().unwrap();
/// assert_eq!(event, Event::Done(Reply::Values { found: 1 }));
/// assert_eq!(used + rest, reply.len());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `get`, `set`, ... (memcached's classic text protocol).
    Text,
    /// `mg`, `ms`, `md`, `ma`, `mn` (the meta commands, text framing).
    Meta,
    /// The binary protocol (magic 0x80).
    Binary,
}

/// How a store treats what is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// Store only if the key's CAS is still this one.
    Cas(u64),
}

/// What a get asks besides the value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fetch {
    /// Return each value's CAS (`gets`).
    pub cas: bool,
    /// Also set each found key's expiry (`gat`): seconds, or an absolute
    /// Unix time, as memcached reads exptimes.
    pub touch: Option<u32>,
}

/// The shape of the reply a request gets, kept per request in send order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    kind: ExpectKind,
    /// Values seen so far (for a get).
    found: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExpectKind {
    /// Values, then an end marker (text `END`, meta `MN`, binary noop).
    Values {
        keys: u32,
        marked: bool,
    },
    Store(StoreMode),
    Delete,
    Arith,
    Touch,
    Wait,
    Nodes,
    Stats,
    /// `cluster get` and `cluster local`: one value in text framing (`VALUE ... <cas>`, `END`)
    /// on any text connection.
    ClusterValue,
}

impl Expect {
    fn new(kind: ExpectKind) -> Expect {
        Expect { kind, found: 0 }
    }

    /// Keys asked for, for a get; 1 otherwise.
    pub fn keys(&self) -> u32 {
        match self.kind {
            ExpectKind::Values { keys, .. } => keys,
            _ => 1,
        }
    }
}

/// A value found by a get, borrowed from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'b> {
    pub key: &'b [u8],
    pub flags: u32,
    /// 0 unless the get asked for CAS (binary always has it).
    pub cas: u64,
    pub value: &'b [u8],
}

/// The end of one reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A get ended; `found` values were reported as items.
    Values {
        found: u32,
    },
    Stored,
    NotStored,
    /// A CAS store whose CAS no longer matched.
    Exists,
    NotFound,
    Deleted,
    Touched,
    /// The value after an incr or decr.
    Number(u64),
    /// `wait`: the copies the connection's last write reached.
    Copies(u32),
    /// `cluster nodes`.
    Nodes(ClusterNodes),
    /// `stats [group]`: each `STAT <name> <value>` line.
    Stats(Vec<(String, String)>),
    /// The server refused the request (an error line or a binary status);
    /// the connection is still in step.
    Error(ServerError),
}

/// One decoding step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'b> {
    Item(Item<'b>),
    Done(Reply),
}

/// An error the server answered with.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ServerError {
    /// `ERROR`: the server does not know the command.
    #[error("the server does not know the command")]
    UnknownCommand,
    /// `CLIENT_ERROR <message>`.
    #[error("CLIENT_ERROR {0}")]
    Client(String),
    /// `SERVER_ERROR <message>`.
    #[error("SERVER_ERROR {0}")]
    Server(String),
    /// A binary status other than the ones `Reply` names.
    #[error("binary status 0x{status:04x}: {message}")]
    Binary { status: u16, message: String },
}

impl ServerError {
    /// corecache's refusals while its cluster changes, which a client
    /// should send again shortly.
    pub fn is_transient(&self) -> bool {
        match self {
            ServerError::Server(message) | ServerError::Binary { message, .. } => {
                message.contains("try again")
                    || message.contains("does not act for the key")
                    || message.contains("cannot be reached")
                    || message.contains("cannot reach a majority")
            }
            _ => false,
        }
    }
}

/// Bytes that are not a reply to what was asked: the connection is out of
/// step and must be closed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("unexpected reply from the server: {0}")]
pub struct DecodeError(pub String);

/// A request this dialect cannot carry.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("the {protocol:?} protocol has no {command}")]
pub struct Unsupported {
    pub protocol: Protocol,
    pub command: &'static str,
}

/// `cluster nodes`: the node list's epoch and its members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterNodes {
    pub epoch: u64,
    pub digest: String,
    pub nodes: Vec<ClusterNode>,
}

/// One `NODE` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// `host:port` (the client port).
    pub address: String,
    pub weight: u32,
    /// `alive`, `suspect`, `down`, `syncing` or `unknown`.
    pub state: String,
    /// The node that answered.
    pub is_self: bool,
}

/// The longest key memcached takes.
pub const MAX_KEY_LENGTH: usize = 250;

/// Whether memcached would take `key`: 1 to 250 bytes, none of them a
/// space or a control character (the text protocol could not frame it).
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LENGTH && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

impl Protocol {
    /// A get of `keys` (one or more), each value reported as an `Item`.
    pub fn get<'k, I>(self, keys: I, fetch: Fetch, out: &mut Vec<u8>) -> Expect
    where
        I: IntoIterator<Item = &'k [u8]>,
    {
        let keys = match self {
            Protocol::Text => text::get(keys, fetch, out),
            Protocol::Meta => meta::get(keys, fetch, out),
            Protocol::Binary => binary::get(keys, fetch, out),
        };
        let marked = self == Protocol::Text || keys != 1;
        Expect::new(ExpectKind::Values { keys, marked })
    }

    /// A request that does nothing but be answered (meta `mn`, binary
    /// NOOP): a probe of a node's health.
    pub fn noop(self, out: &mut Vec<u8>) -> Expect {
        match self {
            Protocol::Binary => binary::get([], Fetch::default(), out),
            Protocol::Text | Protocol::Meta => meta::get([], Fetch::default(), out),
        };
        Expect::new(ExpectKind::Values { keys: 0, marked: true })
    }

    /// A store of `value` under `key`.
    pub fn store(self, mode: StoreMode, key: &[u8], value: &[u8], flags: u32, exptime: u32, out: &mut Vec<u8>) -> Expect {
        match self {
            Protocol::Text => text::store(mode, key, value, flags, exptime, out),
            Protocol::Meta => meta::store(mode, key, value, flags, exptime, out),
            Protocol::Binary => binary::store(mode, key, value, flags, exptime, out),
        }
        Expect::new(ExpectKind::Store(mode))
    }

    /// A delete of `key`.
    pub fn delete(self, key: &[u8], out: &mut Vec<u8>) -> Expect {
        match self {
            Protocol::Text => text::delete(key, out),
            Protocol::Meta => meta::delete(key, out),
            Protocol::Binary => binary::delete(key, out),
        }
        Expect::new(ExpectKind::Delete)
    }

    /// `incr` (or, with `increment` false, `decr`) by `delta`; a missing key
    /// stays missing (`NotFound`).
    pub fn arith(self, key: &[u8], delta: u64, increment: bool, out: &mut Vec<u8>) -> Expect {
        match self {
            Protocol::Text => text::arith(key, delta, increment, out),
            Protocol::Meta => meta::arith(key, delta, increment, out),
            Protocol::Binary => binary::arith(key, delta, increment, out),
        }
        Expect::new(ExpectKind::Arith)
    }

    /// A touch: `key`'s expiry set to `exptime`.
    pub fn touch(self, key: &[u8], exptime: u32, out: &mut Vec<u8>) -> Expect {
        match self {
            Protocol::Text => text::touch(key, exptime, out),
            Protocol::Meta => meta::touch(key, exptime, out),
            Protocol::Binary => binary::touch(key, exptime, out),
        }
        Expect::new(ExpectKind::Touch)
    }

    /// corecache's `wait <copies> <timeout_ms>`: the copies the
    /// connection's last write reached. Text and meta only.
    pub fn wait(self, copies: u32, timeout_ms: u32, out: &mut Vec<u8>) -> Result<Expect, Unsupported> {
        self.text_only("wait")?;
        text::command(
            out,
            &[
                b"wait",
                itoa::Buffer::new().format(copies).as_bytes(),
                itoa::Buffer::new().format(timeout_ms).as_bytes(),
            ],
        );
        Ok(Expect::new(ExpectKind::Wait))
    }

    /// corecache's `cluster nodes`. Text and meta only.
    pub fn cluster_nodes(self, out: &mut Vec<u8>) -> Result<Expect, Unsupported> {
        self.text_only("cluster nodes")?;
        out.extend_from_slice(b"cluster nodes\r\n");
        Ok(Expect::new(ExpectKind::Nodes))
    }

    /// `stats` or `stats <group>`. Text and meta only.
    pub fn stats(self, group: Option<&str>, out: &mut Vec<u8>) -> Result<Expect, Unsupported> {
        self.text_only("stats")?;
        match group {
            Some(group) => text::command(out, &[b"stats", group.as_bytes()]),
            None => out.extend_from_slice(b"stats\r\n"),
        }
        Ok(Expect::new(ExpectKind::Stats))
    }

    /// corecache's quorum read, `cluster get <key>`: the copy with the
    /// largest CAS, as one `Item` with its CAS. Text and meta only.
    pub fn cluster_get(self, key: &[u8], out: &mut Vec<u8>) -> Result<Expect, Unsupported> {
        self.text_only("cluster get")?;
        text::command(out, &[b"cluster get", key]);
        Ok(Expect::new(ExpectKind::ClusterValue))
    }

    /// corecache's `cluster local <key>`: the copy the node holds, whether
    /// or not it acts for the key, as one `Item` with its CAS. Text and
    /// meta only.
    pub fn cluster_local(self, key: &[u8], out: &mut Vec<u8>) -> Result<Expect, Unsupported> {
        self.text_only("cluster local")?;
        text::command(out, &[b"cluster local", key]);
        Ok(Expect::new(ExpectKind::ClusterValue))
    }

    fn text_only(self, command: &'static str) -> Result<(), Unsupported> {
        match self {
            Protocol::Binary => Err(Unsupported { protocol: self, command }),
            _ => Ok(()),
        }
    }

    /// The next event of the reply `expect` describes, from the front of
    /// `buf`: `Ok(None)` until all of it has arrived, else the bytes it
    /// took and the event. Call again after an `Item` (with the buffer
    /// past it) until `Done`.
    pub fn decode<'b>(self, expect: &mut Expect, buf: &'b [u8]) -> Result<Option<(usize, Event<'b>)>, DecodeError> {
        if let ExpectKind::Values { marked: false, .. } = expect.kind {
            // A lone meta or binary get ends with its one value.
            if expect.found == 1 {
                return Ok(Some((0, Event::Done(Reply::Values { found: 1 }))));
            }
        }
        let decoded = match self {
            Protocol::Text => text::decode(expect, buf),
            Protocol::Meta => meta::decode(expect, buf),
            Protocol::Binary => binary::decode(expect, buf),
        }?;
        if let Some((_, Event::Item(_))) = decoded {
            expect.found += 1;
        }
        Ok(decoded)
    }
}

/// Reads pipelined replies: for `expects` (requests in send order), from
/// the `*next`-th on, every event complete in `buf`, each handed to
/// `on_event` with its request's index. Returns the bytes taken;
/// `*next == expects.len()` once every reply is done.
pub fn read_replies(
    protocol: Protocol,
    expects: &mut [Expect],
    next: &mut usize,
    buf: &[u8],
    on_event: &mut dyn FnMut(usize, Event),
) -> Result<usize, DecodeError> {
    let mut at = 0;
    while let Some(expect) = expects.get_mut(*next) {
        match protocol.decode(expect, &buf[at..])? {
            None => break,
            Some((used, event)) => {
                at += used;
                let done = matches!(event, Event::Done(_));
                on_event(*next, event);
                if done {
                    *next += 1;
                }
            }
        }
    }
    Ok(at)
}

/// The line at the front of `buf` (without its "\r\n") and the bytes it
/// takes, or None if it has not all arrived.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = memchr::memchr(b'\n', buf)?;
    let line = &buf[..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), end + 1))
}

/// A data block of `length` bytes plus "\r\n" at the front of `buf`.
fn block(buf: &[u8], length: usize) -> Result<Option<&[u8]>, DecodeError> {
    let Some(end) = length.checked_add(2) else {
        return Err(DecodeError("a value too long to frame".into()));
    };
    if buf.len() < end {
        return Ok(None);
    }
    if &buf[length..end] != b"\r\n" {
        return Err(DecodeError("a value not ended by \\r\\n".into()));
    }
    Ok(Some(&buf[..length]))
}

/// A decimal number as memcached prints them.
fn number<T: std::str::FromStr>(word: &[u8]) -> Option<T> {
    if word.is_empty() || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(word).ok()?.parse().ok()
}

/// A text error line (`ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`).
fn error_line(line: &[u8]) -> Option<ServerError> {
    let message = |rest: &[u8]| String::from_utf8_lossy(rest).into_owned();
    if line == b"ERROR" || line.starts_with(b"ERROR ") {
        Some(ServerError::UnknownCommand)
    } else if let Some(rest) = line.strip_prefix(b"CLIENT_ERROR") {
        Some(ServerError::Client(message(rest.strip_prefix(b" ").unwrap_or(rest))))
    } else {
        line.strip_prefix(b"SERVER_ERROR")
            .map(|rest| ServerError::Server(message(rest.strip_prefix(b" ").unwrap_or(rest))))
    }
}

fn unexpected(line: &[u8]) -> DecodeError {
    DecodeError(String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned())
}

/// The replies both text dialects share: `COPIES <n>`, `cluster nodes`,
/// `stats`; None for the others (the dialect reads those).
fn cluster_reply<'b>(expect: &Expect, buf: &'b [u8]) -> Option<Result<Option<(usize, Event<'b>)>, DecodeError>> {
    match expect.kind {
        ExpectKind::Wait => {
            let (line, used) = line(buf)?;
            Some(match line.strip_prefix(b"COPIES ").and_then(number) {
                Some(copies) => Ok(Some((used, Event::Done(Reply::Copies(copies))))),
                None => match error_line(line) {
                    Some(error) => Ok(Some((used, Event::Done(Reply::Error(error))))),
                    None => Err(unexpected(line)),
                },
            })
        }
        ExpectKind::Nodes => Some(cluster_nodes(buf)),
        ExpectKind::Stats => Some(stats(buf)),
        ExpectKind::ClusterValue => Some(text::decode(expect, buf)),
        _ => None,
    }
}

fn cluster_nodes(buf: &[u8]) -> Result<Option<(usize, Event<'static>)>, DecodeError> {
    let mut nodes = ClusterNodes::default();
    let mut at = 0;
    loop {
        let Some((line, used)) = line(&buf[at..]) else {
            return Ok(None);
        };
        at += used;
        // An error instead of the reply (the command is unknown there).
        if at == used
            && let Some(error) = error_line(line)
        {
            return Ok(Some((at, Event::Done(Reply::Error(error)))));
        }
        let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        match words.as_slice() {
            [b"EPOCH", epoch, digest] => {
                nodes.epoch = number(epoch).ok_or_else(|| unexpected(line))?;
                nodes.digest = String::from_utf8_lossy(digest).into_owned();
            }
            [b"NODE", address, weight, state, rest @ ..] => nodes.nodes.push(ClusterNode {
                address: String::from_utf8_lossy(address).into_owned(),
                weight: number(weight).ok_or_else(|| unexpected(line))?,
                state: String::from_utf8_lossy(state).into_owned(),
                is_self: rest.last() == Some(&&b"self"[..]),
            }),
            [b"END"] => return Ok(Some((at, Event::Done(Reply::Nodes(nodes))))),
            _ => return Err(unexpected(line)),
        }
    }
}

fn stats(buf: &[u8]) -> Result<Option<(usize, Event<'static>)>, DecodeError> {
    let mut stats = Vec::new();
    let mut at = 0;
    loop {
        let Some((line, used)) = line(&buf[at..]) else {
            return Ok(None);
        };
        at += used;
        if line == b"END" {
            return Ok(Some((at, Event::Done(Reply::Stats(stats)))));
        }
        // An error instead of the reply (the command is unknown there).
        if at == used
            && let Some(error) = error_line(line)
        {
            return Ok(Some((at, Event::Done(Reply::Error(error)))));
        }
        let text = String::from_utf8_lossy(line);
        let mut words = text.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("STAT"), Some(name), value) => stats.push((name.to_string(), value.unwrap_or("").to_string())),
            _ => return Err(unexpected(line)),
        }
    }
}

#[cfg(test)]
mod tests;

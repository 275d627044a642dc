//! The binary protocol (memcached-protocol-binary.txt): 24-byte request
//! headers, parsed incrementally and without copies. The parser checks
//! every length against the frame and the configured limits before it
//! waits for a body, so a header can never make the server buffer more
//! than a legal request.

use crate::request::{ArithOptions, DeleteOptions, GetOptions, KeyOp, Refusal, StoreMode, StoreOptions};
use crate::store::KEY_MAX_LENGTH;

pub const HEADER_LEN: usize = 24;
pub const REQUEST_MAGIC: u8 = 0x80;
pub const RESPONSE_MAGIC: u8 = 0x81;

/// Opcodes memcached serves.
pub mod opcode {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// Response status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Status {
    Success = 0x0000,
    KeyNotFound = 0x0001,
    KeyExists = 0x0002,
    ValueTooLarge = 0x0003,
    InvalidArguments = 0x0004,
    ItemNotStored = 0x0005,
    NonNumeric = 0x0006,
    AuthError = 0x0020,
    UnknownCommand = 0x0081,
    OutOfMemory = 0x0082,
    /// memcached's "not supported"; here only a write sent to a replica.
    NotSupported = 0x0083,
    /// memcached's "temporary failure": a cluster refusal.
    TemporaryFailure = 0x0086,
}

impl Status {
    /// The text memcached puts in the body of an error response.
    pub fn message(self) -> &'static str {
        match self {
            Status::Success => "",
            Status::KeyNotFound => "Not found",
            Status::KeyExists => "Data exists for key.",
            Status::ValueTooLarge => "Too large.",
            Status::InvalidArguments => "Invalid arguments",
            Status::ItemNotStored => "Not stored.",
            Status::NonNumeric => "Non-numeric server-side value for incr or decr",
            Status::AuthError => "Auth failure.",
            Status::UnknownCommand => "Unknown command",
            Status::OutOfMemory => "Out of memory",
            Status::NotSupported => Refusal::ReadOnly.message(),
            Status::TemporaryFailure => "Temporary failure",
        }
    }
}

/// The request header fields a response echoes or needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub opaque: u32,
}

impl Frame {
    /// Quiet opcodes send nothing on success (GETQ/GETKQ/GATQ/GATKQ: on a miss).
    pub fn is_quiet(self) -> bool {
        use opcode::*;
        matches!(
            self.opcode,
            GETQ | GETKQ
                | SETQ
                | ADDQ
                | REPLACEQ
                | DELETEQ
                | INCREMENTQ
                | DECREMENTQ
                | QUITQ
                | FLUSHQ
                | APPENDQ
                | PREPENDQ
                | GATQ
                | GATKQ
        )
    }

    /// GETK/GETKQ/GATK/GATKQ return the key with the value.
    pub fn returns_key(self) -> bool {
        use opcode::*;
        matches!(self.opcode, GETK | GETKQ | GATK | GATKQ)
    }
}

/// What a binary request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// A single-key operation routed to its shard.
    Keyed(KeyOp<&'a [u8]>),
    Noop,
    Version,
    Quit,
    Flush {
        delay: i64,
    },
    Stat {
        group: &'a [u8],
    },
    Verbosity {
        level: u32,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    Incomplete,
    Request {
        frame: Frame,
        command: Command<'a>,
        consumed: usize,
    },
    /// Answer with this status and go on, discarding `skip` more bytes of
    /// a body that may not have arrived (memcached's swallow).
    Error {
        frame: Frame,
        status: Status,
        consumed: usize,
        skip: usize,
        /// A refused SET's key: memcached drops the old value.
        stale_key: Option<&'a [u8]>,
    },
    /// A frame that cannot be trusted: answer (when there is a frame) and close.
    Close {
        frame: Option<Frame>,
        status: Status,
    },
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().unwrap())
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(buf[at..at + 8].try_into().unwrap())
}

/// Longest body of a request that carries no value.
const MAX_BODY_WITHOUT_VALUE: usize = KEY_MAX_LENGTH + 32;

/// Binary exptimes are unsigned 32-bit, as memcached reads them: large
/// values are absolute times, never "already expired".
fn exptime(raw: u32) -> i64 {
    i64::from(raw)
}

/// Parses the request at the front of `buf`. `max_payload` is the largest
/// key + value accepted (`-I` less the item header).
pub fn parse(buf: &[u8], max_payload: usize) -> Parsed<'_> {
    use opcode::*;
    if buf.len() < HEADER_LEN {
        return Parsed::Incomplete;
    }
    if buf[0] != REQUEST_MAGIC {
        return Parsed::Close {
            frame: None,
            status: Status::InvalidArguments,
        };
    }
    let frame = Frame {
        opcode: buf[1],
        opaque: u32::from_ne_bytes(buf[12..16].try_into().unwrap()),
    };
    let key_len = usize::from(u16_at(buf, 2));
    let extras_len = usize::from(buf[4]);
    let body_len = u32_at(buf, 8) as usize;
    let cas = u64_at(buf, 16);
    let invalid = Parsed::Close {
        frame: Some(frame),
        status: Status::InvalidArguments,
    };
    if key_len + extras_len > body_len || key_len > KEY_MAX_LENGTH {
        return invalid;
    }
    let value_len = body_len - key_len - extras_len;
    let is_store = matches!(
        frame.opcode,
        SET | SETQ | ADD | ADDQ | REPLACE | REPLACEQ | APPEND | APPENDQ | PREPEND | PREPENDQ
    );
    let known = is_store
        || matches!(
            frame.opcode,
            GET | GETQ
                | GETK
                | GETKQ
                | DELETE
                | DELETEQ
                | INCREMENT
                | INCREMENTQ
                | DECREMENT
                | DECREMENTQ
                | QUIT
                | QUITQ
                | FLUSH
                | FLUSHQ
                | NOOP
                | VERSION
                | STAT
                | VERBOSITY
                | TOUCH
                | GAT
                | GATQ
                | GATK
                | GATKQ
        );
    // Bound the body before waiting for it.
    if !known || (is_store && key_len + value_len > max_payload) {
        let status = if known {
            Status::ValueTooLarge
        } else {
            Status::UnknownCommand
        };
        let is_set = matches!(frame.opcode, SET | SETQ);
        let key_end = HEADER_LEN + extras_len + key_len;
        // A refused SET needs its key (a bounded wait: at most 250 bytes).
        if is_set && buf.len() < key_end {
            return Parsed::Incomplete;
        }
        let available = buf.len().min(HEADER_LEN + body_len);
        return Parsed::Error {
            frame,
            status,
            consumed: available,
            skip: HEADER_LEN + body_len - available,
            stale_key: (known && is_set).then(|| &buf[HEADER_LEN + extras_len..key_end]),
        };
    }
    if !is_store && body_len > MAX_BODY_WITHOUT_VALUE {
        return invalid;
    }
    let total = HEADER_LEN + body_len;
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let extras = &buf[HEADER_LEN..HEADER_LEN + extras_len];
    let key = &buf[HEADER_LEN + extras_len..HEADER_LEN + extras_len + key_len];
    let value = &buf[HEADER_LEN + extras_len + key_len..total];
    let shape = |extras_ok: bool, key_needed: Option<bool>, value_ok: bool| {
        extras_ok && key_needed.is_none_or(|needed| needed == (key_len > 0)) && value_ok
    };
    let compare_cas = (cas != 0).then_some(cas);
    let command = match frame.opcode {
        GET | GETQ | GETK | GETKQ if shape(extras_len == 0, Some(true), value_len == 0) => Command::Keyed(KeyOp::Get {
            key,
            options: GetOptions::default(),
        }),
        TOUCH | GAT | GATQ | GATK | GATKQ if shape(extras_len == 4, Some(true), value_len == 0) => Command::Keyed(KeyOp::Get {
            key,
            options: GetOptions {
                touch: Some(exptime(u32_at(extras, 0))),
                ..GetOptions::default()
            },
        }),
        SET | SETQ | ADD | ADDQ | REPLACE | REPLACEQ if shape(extras_len == 8, Some(true), true) => {
            let mode = match frame.opcode {
                SET | SETQ => StoreMode::Set,
                ADD | ADDQ => StoreMode::Add,
                _ => StoreMode::Replace,
            };
            Command::Keyed(KeyOp::Store {
                mode,
                key,
                client_flags: u32_at(extras, 0),
                exptime: exptime(u32_at(extras, 4)),
                value,
                options: StoreOptions {
                    compare_cas,
                    ..StoreOptions::default()
                },
            })
        }
        APPEND | APPENDQ | PREPEND | PREPENDQ if shape(extras_len == 0, Some(true), true) => {
            let mode = if matches!(frame.opcode, APPEND | APPENDQ) {
                StoreMode::Append
            } else {
                StoreMode::Prepend
            };
            Command::Keyed(KeyOp::Store {
                mode,
                key,
                client_flags: 0,
                exptime: 0,
                value,
                options: StoreOptions {
                    compare_cas,
                    ..StoreOptions::default()
                },
            })
        }
        DELETE | DELETEQ if shape(extras_len == 0, Some(true), value_len == 0) => Command::Keyed(KeyOp::Delete {
            key,
            options: DeleteOptions {
                compare_cas,
                ..DeleteOptions::default()
            },
        }),
        INCREMENT | INCREMENTQ | DECREMENT | DECREMENTQ if shape(extras_len == 20, Some(true), value_len == 0) => {
            let expiration = u32_at(extras, 16);
            Command::Keyed(KeyOp::Arith {
                key,
                incr: matches!(frame.opcode, INCREMENT | INCREMENTQ),
                delta: u64_at(extras, 0),
                options: ArithOptions {
                    compare_cas,
                    // 0xffffffff: fail on a miss instead of creating.
                    vivify: (expiration != u32::MAX).then(|| (u64_at(extras, 8), exptime(expiration))),
                    ..ArithOptions::default()
                },
            })
        }
        QUIT | QUITQ if shape(extras_len == 0, Some(false), value_len == 0) => Command::Quit,
        NOOP if shape(extras_len == 0, Some(false), value_len == 0) => Command::Noop,
        VERSION if shape(extras_len == 0, Some(false), value_len == 0) => Command::Version,
        FLUSH | FLUSHQ if shape(extras_len == 0 || extras_len == 4, Some(false), value_len == 0) => Command::Flush {
            delay: if extras_len == 4 { exptime(u32_at(extras, 0)) } else { 0 },
        },
        STAT if shape(extras_len == 0, None, value_len == 0) => Command::Stat { group: key },
        VERBOSITY if shape(extras_len == 4, Some(false), value_len == 0) => Command::Verbosity {
            level: u32_at(extras, 0),
        },
        _ => return invalid,
    };
    Parsed::Request {
        frame,
        command,
        consumed: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent request encoder for the tests (not the server's writer).
    fn request(opcode: u8, key: &[u8], extras: &[u8], value: &[u8], cas: u64) -> Vec<u8> {
        let mut frame = vec![REQUEST_MAGIC, opcode];
        frame.extend_from_slice(&(key.len() as u16).to_be_bytes());
        frame.push(extras.len() as u8);
        frame.extend_from_slice(&[0, 0, 0]);
        frame.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        frame.extend_from_slice(&cas.to_be_bytes());
        frame.extend_from_slice(extras);
        frame.extend_from_slice(key);
        frame.extend_from_slice(value);
        frame
    }

    /// A request kept alive for the whole test, so parsed commands can borrow it.
    fn frame_bytes(opcode: u8, key: &[u8], extras: &[u8], value: &[u8], cas: u64) -> &'static [u8] {
        Box::leak(request(opcode, key, extras, value, cas).into_boxed_slice())
    }

    fn command(bytes: &[u8]) -> (Frame, Command<'_>) {
        match parse(bytes, 1 << 20) {
            Parsed::Request {
                frame,
                command,
                consumed,
            } => {
                assert_eq!(consumed, bytes.len());
                (frame, command)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_opcode_parses() {
        use opcode::*;
        let set_extras = [0, 0, 0, 7, 0, 0, 0, 10];
        let (frame, set) = command(frame_bytes(SETQ, b"k", &set_extras, b"value", 5));
        assert!(frame.is_quiet() && frame.opaque == u32::from_ne_bytes([0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(
            set,
            Command::Keyed(KeyOp::Store {
                mode: StoreMode::Set,
                key: b"k",
                client_flags: 7,
                exptime: 10,
                value: b"value",
                options: StoreOptions {
                    compare_cas: Some(5),
                    ..StoreOptions::default()
                }
            })
        );
        for op in [GET, GETQ, GETK, GETKQ] {
            let (frame, get) = command(frame_bytes(op, b"k", &[], &[], 0));
            assert!(matches!(get, Command::Keyed(KeyOp::Get { key: b"k", .. })));
            assert_eq!(frame.returns_key(), matches!(op, GETK | GETKQ));
        }
        for op in [TOUCH, GAT, GATQ, GATK, GATKQ] {
            let (_, gat) = command(frame_bytes(op, b"k", &100u32.to_be_bytes(), &[], 0));
            let Command::Keyed(KeyOp::Get { options, .. }) = gat else {
                panic!()
            };
            assert_eq!(options.touch, Some(100));
        }
        for op in [ADD, ADDQ, REPLACE, REPLACEQ] {
            assert!(matches!(
                command(frame_bytes(op, b"k", &set_extras, b"v", 0)).1,
                Command::Keyed(KeyOp::Store { .. })
            ));
        }
        for op in [APPEND, APPENDQ, PREPEND, PREPENDQ] {
            assert!(matches!(
                command(frame_bytes(op, b"k", &[], b"v", 0)).1,
                Command::Keyed(KeyOp::Store { .. })
            ));
        }
        assert!(matches!(
            command(frame_bytes(DELETE, b"k", &[], &[], 0)).1,
            Command::Keyed(KeyOp::Delete { .. })
        ));
        let mut arith_extras = Vec::new();
        arith_extras.extend_from_slice(&3u64.to_be_bytes());
        arith_extras.extend_from_slice(&9u64.to_be_bytes());
        arith_extras.extend_from_slice(&u32::MAX.to_be_bytes());
        let (_, incr) = command(frame_bytes(INCREMENT, b"n", &arith_extras, &[], 0));
        assert_eq!(
            incr,
            Command::Keyed(KeyOp::Arith {
                key: b"n",
                incr: true,
                delta: 3,
                options: ArithOptions::default()
            })
        );
        arith_extras[16..].copy_from_slice(&0u32.to_be_bytes());
        let (_, decr) = command(frame_bytes(DECREMENTQ, b"n", &arith_extras, &[], 0));
        let Command::Keyed(KeyOp::Arith {
            incr: false, options, ..
        }) = decr
        else {
            panic!()
        };
        assert_eq!(options.vivify, Some((9, 0)));
        assert_eq!(command(frame_bytes(NOOP, b"", &[], &[], 0)).1, Command::Noop);
        assert_eq!(command(frame_bytes(VERSION, b"", &[], &[], 0)).1, Command::Version);
        assert_eq!(command(frame_bytes(QUITQ, b"", &[], &[], 0)).1, Command::Quit);
        assert_eq!(command(frame_bytes(FLUSH, b"", &[], &[], 0)).1, Command::Flush { delay: 0 });
        assert_eq!(
            command(frame_bytes(FLUSHQ, b"", &30u32.to_be_bytes(), &[], 0)).1,
            Command::Flush { delay: 30 }
        );
        assert_eq!(
            command(frame_bytes(STAT, b"slabs", &[], &[], 0)).1,
            Command::Stat { group: b"slabs" }
        );
        assert_eq!(
            command(frame_bytes(VERBOSITY, b"", &1u32.to_be_bytes(), &[], 0)).1,
            Command::Verbosity { level: 1 }
        );
    }

    #[test]
    fn malformed_frames_are_refused() {
        use opcode::*;
        // Wrong extras for a get: invalid arguments, then close.
        assert!(matches!(
            parse(&request(GET, b"k", &[1, 2, 3, 4], &[], 0), 1 << 20),
            Parsed::Close {
                status: Status::InvalidArguments,
                ..
            }
        ));
        // Lengths that do not add up.
        let mut bad = request(GET, b"key", &[], &[], 0);
        bad[8..12].copy_from_slice(&1u32.to_be_bytes());
        assert!(matches!(parse(&bad, 1 << 20), Parsed::Close { .. }));
        // A huge body claimed by a get is refused before it is buffered.
        let mut huge = request(GET, b"key", &[], &[], 0);
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(parse(&huge, 1 << 20), Parsed::Close { .. }));
        // Bad magic.
        assert!(matches!(parse(&[0x42; 24], 1 << 20), Parsed::Close { frame: None, .. }));
        // An oversized value is answered and swallowed.
        let big = request(SET, b"k", &[0; 8], &[0; 100], 0);
        assert_eq!(
            parse(&big[..30], 50),
            Parsed::Incomplete,
            "waits for the key of a refused SET"
        );
        assert_eq!(
            parse(&big[..40], 50),
            Parsed::Error {
                frame: Frame {
                    opcode: SET,
                    opaque: u32::from_ne_bytes([0xde, 0xad, 0xbe, 0xef])
                },
                status: Status::ValueTooLarge,
                consumed: 40,
                skip: big.len() - 40,
                stale_key: Some(b"k"),
            }
        );
        // Unknown opcodes are answered and skipped.
        let unknown = request(0x55, b"k", &[], b"xyz", 0);
        assert!(matches!(
            parse(&unknown, 1 << 20),
            Parsed::Error {
                status: Status::UnknownCommand,
                skip: 0,
                ..
            }
        ));
    }

    #[test]
    fn requests_split_at_every_byte_parse_the_same() {
        let mut stream = request(opcode::SET, b"key", &[0, 0, 0, 1, 0, 0, 0, 0], b"value", 0);
        stream.extend(request(opcode::GETKQ, b"key", &[], &[], 0));
        stream.extend(request(opcode::NOOP, b"", &[], &[], 0));
        let whole = {
            let mut at = 0;
            let mut seen = Vec::new();
            while let Parsed::Request { command, consumed, .. } = parse(&stream[at..], 1 << 20) {
                seen.push(format!("{command:?}"));
                at += consumed;
            }
            seen
        };
        assert_eq!(whole.len(), 3);
        for split in 0..stream.len() {
            let mut seen = Vec::new();
            let mut at = 0;
            for end in [split, stream.len()] {
                while let Parsed::Request { command, consumed, .. } = parse(&stream[at..end], 1 << 20) {
                    seen.push(format!("{command:?}"));
                    at += consumed;
                }
            }
            assert_eq!(seen, whole, "split at {split}");
        }
    }
}

//! Meta commands (mg, ms, md, ma, mn, me): the flag-driven half of the
//! text protocol. A command line is `<cm> <key> [<datalen>] <flags>*`; each
//! flag is one character, some with a token glued to it (`T30`, `Oabc`).

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::request::{ArithOptions, DeleteOptions, GetOptions, KeyOp, StoreMode, StoreOptions};
use crate::store::KEY_MAX_LENGTH;

pub const INVALID_FLAG: &str = "CLIENT_ERROR invalid flag";
pub const DUPLICATE_FLAG: &str = "CLIENT_ERROR duplicate flag";
pub const BAD_TOKEN: &str = "CLIENT_ERROR bad token in command line format";
pub const OPAQUE_TOO_LONG: &str = "CLIENT_ERROR opaque token too long";
pub const BAD_KEY_ENCODING: &str = "CLIENT_ERROR error decoding key";
pub const INVALID_SET_MODE: &str = "CLIENT_ERROR invalid mode for ms M token";
pub const INVALID_ARITH_MODE: &str = "CLIENT_ERROR invalid mode for ma M token";
/// md and ma answer every flag error with this one line.
pub const INVALID_OR_DUPLICATE: &str = "CLIENT_ERROR invalid or duplicate flag";
pub const TOO_MANY_FLAGS: &str = "CLIENT_ERROR options flags are too long";
pub const BAD_INITIAL: &str = "CLIENT_ERROR invalid numeric initial value";
pub const BAD_DELTA: &str = "CLIENT_ERROR invalid numeric delta value";
/// memcached refuses a meta line of more tokens than this (command and key
/// included).
const MAX_TOKENS: usize = 20;
const MAX_OPAQUE: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKind {
    Get,
    Set,
    Delete,
    Arith,
    Debug,
}

/// The key operation a meta command performs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaOp<'a> {
    Get(GetOptions),
    Set {
        mode: StoreMode,
        client_flags: u32,
        exptime: i64,
        value: &'a [u8],
        options: StoreOptions,
    },
    Delete(DeleteOptions),
    Arith {
        incr: bool,
        delta: u64,
        options: ArithOptions,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaCommand<'a> {
    pub kind: MetaKind,
    /// The key to look up (base64-decoded with `b`).
    pub key: Cow<'a, [u8]>,
    /// The key as sent, which `k` returns.
    pub raw_key: &'a [u8],
    pub base64: bool,
    /// `q`: leave out the reply that means "as expected" (HD, or EN for mg).
    pub quiet: bool,
    /// `v`: return the value.
    pub want_value: bool,
    /// mg `C`: leave the value out if the item's CAS equals this.
    pub unless_cas: Option<u64>,
    /// The flag tokens as sent: the reply echoes return flags in this order.
    pub flags: &'a [u8],
    /// mg, ma: the command runs, but the reply is OPAQUE_TOO_LONG.
    pub opaque_too_long: bool,
    pub op: MetaOp<'a>,
}

impl MetaCommand<'_> {
    pub fn key_op(&self) -> KeyOp<&[u8]> {
        let key = &self.key[..];
        match &self.op {
            MetaOp::Get(options) => KeyOp::Get { key, options: *options },
            MetaOp::Set {
                mode,
                client_flags,
                exptime,
                value,
                options,
            } => KeyOp::Store {
                mode: *mode,
                key,
                client_flags: *client_flags,
                exptime: *exptime,
                value,
                options: *options,
            },
            MetaOp::Delete(options) => KeyOp::Delete { key, options: *options },
            MetaOp::Arith { incr, delta, options } => KeyOp::Arith {
                key,
                incr: *incr,
                delta: *delta,
                options: *options,
            },
        }
    }

    /// The length of an ms's value (0 for other commands).
    pub fn value_len(&self) -> usize {
        match &self.op {
            MetaOp::Set { value, .. } => value.len(),
            _ => 0,
        }
    }

    /// The `O` token, if any.
    pub fn opaque(&self) -> Option<&[u8]> {
        flag_tokens(self.flags)
            .find(|token| token[0] == b'O')
            .map(|token| &token[1..])
    }
}

/// Each flag token of a flags string.
pub fn flag_tokens(flags: &[u8]) -> impl Iterator<Item = &[u8]> {
    flags.split(|&b| b == b' ').filter(|token| !token.is_empty())
}

/// The flags memcached knows. Every meta command accepts all of them and
/// ignores those that do not apply to it (P and L are proxy hints).
const KNOWN_FLAGS: &[u8] = b"bNTRlOPLkstcfvhuqxFCEMJDI";

/// The flags whose facts a command echoes in its reply, as memcached.
pub fn echoed(kind: MetaKind) -> &'static [u8] {
    match kind {
        MetaKind::Get | MetaKind::Debug => b"stcflhOk",
        MetaKind::Set => b"Okcs",
        MetaKind::Delete => b"Ok",
        MetaKind::Arith => b"ctOk",
    }
}

/// The parsed flags of one meta command.
struct Flags<'a> {
    /// Bit n set: flag byte n was given.
    seen: u128,
    /// The tokens of the flags that take one, in TOKEN_FLAGS order.
    tokens: [Option<&'a [u8]>; TOKEN_FLAGS.len()],
    /// Where each flag of TOKEN_FLAGS stands among the flags (for flags that
    /// act in order).
    positions: [usize; TOKEN_FLAGS.len()],
}

/// Flags whose token the parser reads (O is echoed from the raw text).
const TOKEN_FLAGS: [u8; 9] = *b"CEFNRTMJD";

impl<'a> Flags<'a> {
    /// memcached's flag pre-parse: a repeated or unknown flag stops it at
    /// once; a bad number is remembered and the scan goes on, the last
    /// such error being the one reported (F keeps the one before it).
    /// A flag that is not a letter or digit is a format error that ma
    /// reports as such (the second value is true for those alone). The key
    /// is checked at `b`'s place, so its error takes its turn too.
    fn parse(flags: &'a [u8], key: &[u8]) -> Result<Flags<'a>, (&'static str, bool)> {
        let mut parsed = Flags {
            seen: 0,
            tokens: [None; TOKEN_FLAGS.len()],
            positions: [usize::MAX; TOKEN_FLAGS.len()],
        };
        let mut error = None;
        for (index, token) in flag_tokens(flags).enumerate() {
            let flag = token[0];
            if flag >= 127 || parsed.seen & (1u128 << flag) != 0 {
                return Err((DUPLICATE_FLAG, false));
            }
            if !flag.is_ascii_alphanumeric() {
                return Err((super::text::BAD_FORMAT, true));
            }
            if !KNOWN_FLAGS.contains(&flag) {
                return Err((INVALID_FLAG, false));
            }
            parsed.seen |= 1u128 << flag;
            if flag == b'b' && BASE64.decode(key).map_or(true, |key| key.is_empty()) {
                error = Some(BAD_KEY_ENCODING);
            }
            let Some(slot) = TOKEN_FLAGS.iter().position(|&f| f == flag) else {
                continue;
            };
            let value = &token[1..];
            parsed.tokens[slot] = Some(value);
            parsed.positions[slot] = index;
            let fault = match flag {
                b'N' | b'T' | b'R' => super::text::strict_i32(value).is_none().then_some(BAD_TOKEN),
                b'C' | b'E' => super::text::strict_u64(value).is_none().then_some(BAD_TOKEN),
                b'J' => super::text::strict_u64(value).is_none().then_some(BAD_INITIAL),
                b'D' => super::text::strict_u64(value).is_none().then_some(BAD_DELTA),
                b'F' => {
                    if super::text::strict_u32(value).is_none() {
                        error = error.or(Some(super::text::BAD_FORMAT));
                    }
                    None
                }
                _ => None,
            };
            if fault.is_some() {
                error = fault;
            }
        }
        match error {
            Some(error) => Err((error, false)),
            None => Ok(parsed),
        }
    }

    /// Whether an `O` token is longer than memcached takes (32 bytes, O
    /// included).
    fn opaque_too_long(flags: &[u8]) -> bool {
        flag_tokens(flags).any(|token| token[0] == b'O' && token.len() > MAX_OPAQUE)
    }

    /// Where a token flag stands among the flags (None: not given).
    fn position(&self, flag: u8) -> Option<usize> {
        let slot = TOKEN_FLAGS.iter().position(|&f| f == flag).expect("a token flag");
        self.tokens[slot].map(|_| self.positions[slot])
    }

    fn has(&self, flag: u8) -> bool {
        self.seen & (1u128 << flag) != 0
    }

    fn token(&self, flag: u8) -> Option<&'a [u8]> {
        self.tokens[TOKEN_FLAGS.iter().position(|&f| f == flag).expect("a token flag")]
    }

    /// A time token (N, T, R): a strict signed 32-bit number, as memcached.
    fn time(&self, flag: u8) -> Result<Option<i64>, &'static str> {
        self.token(flag)
            .map(|token| super::text::strict_i32(token).ok_or(BAD_TOKEN))
            .transpose()
    }

    /// An unsigned token (C, E, J, D): strict digits, as memcached.
    fn unsigned(&self, flag: u8, error: &'static str) -> Result<Option<u64>, &'static str> {
        self.token(flag)
            .map(|token| super::text::strict_u64(token).ok_or(error))
            .transpose()
    }
}

/// What the meta parser made of a command line.
#[derive(Debug)]
pub enum MetaParsed<'a> {
    Command(MetaCommand<'a>),
    /// The line needs a data block that has not fully arrived (ms).
    NeedData,
    Error(&'static str),
    /// An error in an ms line: reply, then discard the data block.
    ErrorSwallow {
        error: &'static str,
        skip: usize,
    },
    /// ms with a value over the limit: reply, then discard `skip` bytes.
    TooLarge {
        skip: usize,
        stale_key: Option<&'a [u8]>,
    },
    /// ms whose data block does not end in "\r\n".
    BadDataChunk {
        data_end: usize,
    },
}

impl MetaParsed<'_> {
    pub fn is_error(&self) -> bool {
        matches!(self, MetaParsed::Error(_))
    }
}

/// Parses a meta command. `line` excludes the line end; `data` is
/// everything after the line (ms's data block starts there).
pub fn parse<'a>(name: &[u8], line: &'a [u8], data: &'a [u8], max_payload: usize) -> MetaParsed<'a> {
    let kind = match name {
        b"mg" => MetaKind::Get,
        b"ms" => MetaKind::Set,
        b"md" => MetaKind::Delete,
        b"ma" => MetaKind::Arith,
        _ => MetaKind::Debug,
    };
    let mut words = line.split(|&b| b == b' ').filter(|word| !word.is_empty());
    words.next(); // the command
    let Some(raw_key) = words.next() else {
        return MetaParsed::Error(super::text::BAD_FORMAT);
    };
    let datalen = if kind == MetaKind::Set {
        // A signed 32-bit length, strictly, as memcached reads it.
        match words.next().and_then(super::text::strict_i32) {
            Some(length) if (0..=i64::from(i32::MAX) - 2).contains(&length) => Some(length as usize),
            _ => return MetaParsed::Error(super::text::BAD_FORMAT),
        }
    } else {
        None
    };
    // The flags are the rest of the line after the key (and datalen).
    let flags_start = words
        .next()
        .map_or(line.len(), |first| first.as_ptr() as usize - line.as_ptr() as usize);
    let flags_text = &line[flags_start..];
    let structural = flag_tokens(flags_text).any(|token| !token[0].is_ascii_alphanumeric());
    let result = if kind == MetaKind::Arith && structural {
        // ma meets a flag that is no letter or digit before its key check.
        Err(super::text::BAD_FORMAT)
    } else if raw_key.len() > KEY_MAX_LENGTH {
        // The limit applies to the key as sent (base64 included); ma says so
        // with its one flag error line, as memcached 1.6.45 does.
        Err(if kind == MetaKind::Arith {
            INVALID_OR_DUPLICATE
        } else {
            super::text::BAD_FORMAT
        })
    } else if kind != MetaKind::Debug && line.split(|&b| b == b' ').filter(|w| !w.is_empty()).count() > MAX_TOKENS {
        Err(TOO_MANY_FLAGS)
    } else {
        build(kind, raw_key, flags_text, datalen, data, max_payload)
    };
    match result {
        Ok(parsed) => parsed,
        // Once the data length is known, an error still discards the data
        // block, as memcached does: a value is never run as commands. Only a
        // flag that is no letter or digit stops memcached's ms before it
        // knows to swallow.
        Err(error) => match datalen {
            Some(_) if structural => MetaParsed::Error(error),
            Some(length) => MetaParsed::ErrorSwallow { error, skip: length + 2 },
            None => MetaParsed::Error(error),
        },
    }
}

fn build<'a>(
    kind: MetaKind,
    raw_key: &'a [u8],
    flags_text: &'a [u8],
    datalen: Option<usize>,
    data: &'a [u8],
    max_payload: usize,
) -> Result<MetaParsed<'a>, &'static str> {
    // me reads one flag, b, as its second token, and ignores the rest.
    let flags = if kind == MetaKind::Debug {
        let b_only: &[u8] = if flag_tokens(flags_text).next() == Some(b"b") {
            b"b"
        } else {
            b""
        };
        Flags::parse(b_only, raw_key)
    } else {
        Flags::parse(flags_text, raw_key)
    };
    // ma answers any flag error with one line of its own.
    let flag_error = |error| match kind {
        MetaKind::Arith => INVALID_OR_DUPLICATE,
        _ => error,
    };
    let flags = flags.map_err(|(error, structural)| if structural { error } else { flag_error(error) })?;
    // memcached meets a long opaque while writing the reply: mg and ma have
    // done their work by then, ms and md not yet.
    let opaque_too_long = Flags::opaque_too_long(flags_text);
    if opaque_too_long && matches!(kind, MetaKind::Set | MetaKind::Delete) {
        return Err(OPAQUE_TOO_LONG);
    }
    let base64 = flags.has(b'b');
    let key: Cow<'a, [u8]> = if base64 {
        Cow::Owned(
            BASE64
                .decode(raw_key)
                .ok()
                .filter(|key| !key.is_empty())
                .ok_or(flag_error(BAD_KEY_ENCODING))?,
        )
    } else {
        Cow::Borrowed(raw_key)
    };
    if key.is_empty() || key.len() > KEY_MAX_LENGTH {
        return Err(super::text::BAD_FORMAT);
    }
    let compare_cas = flags.unsigned(b'C', BAD_TOKEN).map_err(flag_error)?;
    let new_cas = flags.unsigned(b'E', BAD_TOKEN).map_err(flag_error)?;
    let ttl = flags.time(b'T').map_err(flag_error)?;
    // memcached's mg and ma apply T and N at their places in the line: an
    // item N creates ends up with the TTL of whichever comes last. (An ms
    // append that creates takes N's.)
    let vivify = flags.time(b'N').map_err(flag_error)?.map(|n| match ttl {
        Some(t) if kind == MetaKind::Arith && flags.position(b'T') > flags.position(b'N') => t,
        _ => n,
    });
    let op = match kind {
        MetaKind::Get | MetaKind::Debug => MetaOp::Get(GetOptions {
            touch: ttl,
            vivify,
            recache_below: flags.time(b'R')?,
            recache_after_touch: flags.position(b'T') < flags.position(b'R'),
            touch_after_vivify: flags.position(b'T') > flags.position(b'N'),
            // An mg that holds its item (N T R l h) bumps it at the end of
            // its reply, which a long opaque never reaches.
            no_bump: flags.has(b'u')
                || kind == MetaKind::Debug
                || (opaque_too_long && b"NTRlh".iter().any(|&flag| flags.has(flag))),
            new_cas,
            peek: kind == MetaKind::Debug,
            claims_win: kind == MetaKind::Get && !opaque_too_long,
            resend: false,
        }),
        MetaKind::Set => {
            let length = datalen.unwrap_or(0);
            let mode = match flags.token(b'M') {
                None => StoreMode::Set,
                Some(token) => match token.first() {
                    Some(b'S') => StoreMode::Set,
                    Some(b'E') => StoreMode::Add,
                    Some(b'R') => StoreMode::Replace,
                    Some(b'A') => StoreMode::Append,
                    Some(b'P') => StoreMode::Prepend,
                    _ => return Err(INVALID_SET_MODE),
                },
            };
            let client_flags = flags.token(b'F').and_then(super::text::strict_u32).unwrap_or(0);
            if super::too_large(key.len(), length, client_flags, max_payload) {
                // As memcached: a refused set drops the old value (not a
                // compare-and-swap; base64 keys keep it, see the README).
                let drops_old = mode == StoreMode::Set && compare_cas.is_none() && !base64;
                return Ok(MetaParsed::TooLarge {
                    skip: length + 2,
                    stale_key: drops_old.then_some(raw_key),
                });
            }
            if data.len() < length + 2 {
                return Ok(MetaParsed::NeedData);
            }
            if &data[length..length + 2] != b"\r\n" {
                return Ok(MetaParsed::BadDataChunk { data_end: length + 2 });
            }
            MetaOp::Set {
                mode,
                client_flags,
                exptime: ttl.unwrap_or(0),
                value: &data[..length],
                options: StoreOptions {
                    compare_cas,
                    invalidate: flags.has(b'I'),
                    // memcached's ms takes E0 as "no CAS given": a fresh one.
                    new_cas: new_cas.filter(|&cas| cas != 0),
                    vivify,
                    binary_key: base64,
                },
            }
        }
        MetaKind::Delete => MetaOp::Delete(DeleteOptions {
            compare_cas,
            invalidate: flags.has(b'I'),
            touch: ttl,
            remove_value: flags.has(b'x'),
            client_flags: flags.token(b'F').and_then(super::text::strict_u32).unwrap_or(0),
            new_cas,
        }),
        MetaKind::Arith => {
            let incr = match flags.token(b'M') {
                None => true,
                Some(token) => match token.first() {
                    Some(b'I' | b'+') => true,
                    Some(b'D' | b'-') => false,
                    _ => return Err(INVALID_ARITH_MODE),
                },
            };
            let initial = flags.unsigned(b'J', BAD_INITIAL).map_err(flag_error)?.unwrap_or(0);
            let delta = flags.unsigned(b'D', BAD_DELTA).map_err(flag_error)?.unwrap_or(1);
            MetaOp::Arith {
                incr,
                delta,
                options: ArithOptions {
                    compare_cas,
                    vivify: vivify.map(|exptime| (initial, exptime)),
                    touch: ttl,
                    new_cas,
                },
            }
        }
    };
    Ok(MetaParsed::Command(MetaCommand {
        kind,
        key,
        raw_key,
        base64,
        quiet: flags.has(b'q'),
        want_value: flags.has(b'v'),
        unless_cas: if kind == MetaKind::Get { compare_cas } else { None },
        opaque_too_long,
        flags: flags_text,
        op,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &[u8], data: &[u8]) -> MetaCommand<'static> {
        let line: &'static [u8] = Box::leak(line.to_vec().into_boxed_slice());
        let data: &'static [u8] = Box::leak(data.to_vec().into_boxed_slice());
        match parse(&line[..2], line, data, 1 << 20) {
            MetaParsed::Command(command) => command,
            MetaParsed::Error(error) => panic!("{error}"),
            _ => panic!("no command"),
        }
    }

    fn error(line: &[u8]) -> &'static str {
        match parse(&line[..2], line, b"", 1 << 20) {
            MetaParsed::Error(error) => error,
            _ => panic!("expected an error"),
        }
    }

    #[test]
    fn meta_get_flags() {
        let mg = command(b"mg foo v c f t k Oxyz q T30 N10 R5 u", b"");
        assert_eq!(
            (mg.kind, &mg.key[..], mg.quiet, mg.want_value),
            (MetaKind::Get, &b"foo"[..], true, true)
        );
        assert_eq!(mg.opaque(), Some(&b"xyz"[..]));
        assert_eq!(
            mg.op,
            MetaOp::Get(GetOptions {
                touch: Some(30),
                vivify: Some(10),
                recache_below: Some(5),
                recache_after_touch: true,
                touch_after_vivify: false,
                no_bump: true,
                new_cas: None,
                peek: false,
                claims_win: true,
                resend: false,
            })
        );
        // T and N act in the order of the line.
        let order = |line: &'static [u8]| match command(line, b"").op {
            MetaOp::Get(options) => (options.vivify, options.recache_after_touch),
            other => panic!("{other:?}"),
        };
        assert_eq!(order(b"mg k N30 T60"), (Some(30), false));
        assert_eq!(order(b"mg k T60 N30 R5"), (Some(30), true));
        assert_eq!(order(b"mg k R5 T60"), (None, false));
        let base64 = command(b"mg Zm9v b k", b"");
        assert_eq!(
            (&base64.key[..], base64.raw_key, base64.base64),
            (&b"foo"[..], &b"Zm9v"[..], true)
        );
        assert_eq!(command(b"mg foo C99 v", b"").unless_cas, Some(99));
    }

    #[test]
    fn meta_set_modes_and_data() {
        let ms = command(b"ms foo 5 T60 F3 MA C7 I E9 N30 c k s", b"hello\r\n");
        let MetaOp::Set {
            mode,
            client_flags,
            exptime,
            value,
            options,
        } = ms.op
        else {
            panic!()
        };
        assert_eq!(
            (mode, client_flags, exptime, value),
            (StoreMode::Append, 3, 60, &b"hello"[..])
        );
        assert_eq!(
            options,
            StoreOptions {
                compare_cas: Some(7),
                invalidate: true,
                new_cas: Some(9),
                vivify: Some(30),
                binary_key: false,
            }
        );
        for (token, mode) in [
            ("E", StoreMode::Add),
            ("R", StoreMode::Replace),
            ("P", StoreMode::Prepend),
            ("S", StoreMode::Set),
        ] {
            let line = format!("ms k 1 M{token}");
            let MetaOp::Set { mode: parsed, .. } = command(line.as_bytes(), b"x\r\n").op else {
                panic!()
            };
            assert_eq!(parsed, mode);
        }
        assert!(matches!(parse(b"ms", b"ms k 5", b"hel", 1 << 20), MetaParsed::NeedData));
        assert!(matches!(
            parse(b"ms", b"ms k 5", b"hello!!", 1 << 20),
            MetaParsed::BadDataChunk { data_end: 7 }
        ));
        assert!(matches!(
            parse(b"ms", b"ms k 5000", b"", 100),
            MetaParsed::TooLarge {
                skip: 5002,
                stale_key: Some(b"k")
            }
        ));
    }

    #[test]
    fn meta_delete_and_arith() {
        let md = command(b"md foo I T30 x C5 q", b"");
        assert_eq!(
            md.op,
            MetaOp::Delete(DeleteOptions {
                compare_cas: Some(5),
                invalidate: true,
                touch: Some(30),
                remove_value: true,
                client_flags: 0,
                new_cas: None
            })
        );
        let ma = command(b"ma n N0 J10 D5 MD v t", b"");
        assert_eq!(
            ma.op,
            MetaOp::Arith {
                incr: false,
                delta: 5,
                options: ArithOptions {
                    compare_cas: None,
                    vivify: Some((10, 0)),
                    touch: None,
                    new_cas: None
                }
            }
        );
        let default = command(b"ma n", b"");
        assert!(matches!(
            default.op,
            MetaOp::Arith {
                incr: true,
                delta: 1,
                ..
            }
        ));
    }

    #[test]
    fn meta_errors() {
        assert_eq!(error(b"mg"), super::super::text::BAD_FORMAT);
        assert_eq!(error(b"mg foo z"), INVALID_FLAG);
        assert_eq!(error(b"mg foo v v"), DUPLICATE_FLAG);
        assert_eq!(error(b"mg foo Tabc"), BAD_TOKEN);
        assert_eq!(error(b"ma foo Mx"), INVALID_ARITH_MODE);
        assert_eq!(error(b"mg !!! b"), BAD_KEY_ENCODING);
        // A long opaque: md refuses; mg runs and answers the error (memcached
        // meets it while writing the reply).
        let long_opaque = format!("md foo O{}", "o".repeat(32));
        assert_eq!(error(long_opaque.as_bytes()), OPAQUE_TOO_LONG);
        assert!(command(format!("mg foo O{}", "o".repeat(32)).as_bytes(), b"").opaque_too_long);
        assert!(!command(format!("mg foo O{}", "o".repeat(31)).as_bytes(), b"").opaque_too_long);
        // As memcached 1.6.45: a flag that is no letter or digit is a format
        // error; ma says "invalid or duplicate flag" for the others.
        assert_eq!(error(b"mg foo %"), super::super::text::BAD_FORMAT);
        assert_eq!(error(b"ma foo %"), super::super::text::BAD_FORMAT);
        assert_eq!(error(b"ma foo z"), INVALID_OR_DUPLICATE);
        // Numbers are checked for every command, the last bad one reported.
        assert_eq!(error(b"mg foo D-1"), BAD_DELTA);
        assert_eq!(error(b"md foo J-1"), BAD_INITIAL);
        assert_eq!(error(b"mg foo F-1"), super::super::text::BAD_FORMAT);
        assert_eq!(error(b"mg foo T+5"), BAD_TOKEN);
        assert_eq!(error(b"mg !!! Tx b"), BAD_KEY_ENCODING);
        assert_eq!(error(b"mg !!! b Tx"), BAD_TOKEN);
        // Too many tokens, and ma's key length.
        assert_eq!(error(b"mg k a b c d e f g h i j k l m n o p q r s"), TOO_MANY_FLAGS);
        assert_eq!(error(format!("ma {}", "k".repeat(251)).as_bytes()), INVALID_OR_DUPLICATE);
        let long_key = format!("mg {}", "k".repeat(251));
        assert_eq!(error(long_key.as_bytes()), super::super::text::BAD_FORMAT);
        assert_eq!(error(b"ms foo bar"), super::super::text::BAD_FORMAT);
        assert_eq!(error(b"ms foo -5"), super::super::text::BAD_FORMAT);
        assert_eq!(error(b"ms kk 18446744073709551614"), super::super::text::BAD_FORMAT);
        // Errors after the length swallow the data block.
        assert!(matches!(
            parse(b"ms", b"ms k 13 MZ", b"delete victim\r\n", 1 << 20),
            MetaParsed::ErrorSwallow {
                error: INVALID_SET_MODE,
                skip: 15
            }
        ));
        assert!(matches!(
            parse(b"ms", b"ms k 3 z", b"", 1 << 20),
            MetaParsed::ErrorSwallow { skip: 5, .. }
        ));
        // memcached's ms meets a non-alphanumeric flag before it swallows.
        assert!(matches!(parse(b"ms", b"ms k 3 !", b"", 1 << 20), MetaParsed::Error(_)));
    }
}

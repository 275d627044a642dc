//! Protocol-neutral requests and their outcomes: what every protocol
//! parses into and what the store answers. `B` is the byte container: a
//! borrowed slice on the local path, an owned Vec when forwarded to
//! another core.

/// How a store command treats an existing item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// Compare-and-swap against the given CAS unique.
    Cas,
}

/// One operation on one key: the unit routed to the owning shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOp<B> {
    /// get/gets; with `touch`, gat/gats (new exptime).
    Get {
        key: B,
        touch: Option<i64>,
    },
    Store {
        mode: StoreMode,
        key: B,
        client_flags: u32,
        exptime: i64,
        value: B,
        cas: u64,
    },
    Delete {
        key: B,
    },
    Arith {
        key: B,
        incr: bool,
        delta: u64,
    },
    Touch {
        key: B,
        exptime: i64,
    },
}

impl<B: AsRef<[u8]>> KeyOp<B> {
    pub fn key(&self) -> &[u8] {
        match self {
            KeyOp::Get { key, .. }
            | KeyOp::Store { key, .. }
            | KeyOp::Delete { key }
            | KeyOp::Arith { key, .. }
            | KeyOp::Touch { key, .. } => key.as_ref(),
        }
    }

    pub fn as_borrowed(&self) -> KeyOp<&[u8]> {
        self.map_bytes(|bytes| bytes.as_ref())
    }

    /// The owned form, for forwarding to another core.
    pub fn to_owned_op(&self) -> KeyOp<Vec<u8>> {
        self.map_bytes(|bytes| bytes.as_ref().to_vec())
    }
}

impl<B> KeyOp<B> {
    /// The same operation with its key and value converted by `convert`.
    pub fn map_bytes<'a, C>(&'a self, convert: impl Fn(&'a B) -> C) -> KeyOp<C> {
        match self {
            KeyOp::Get { key, touch } => KeyOp::Get {
                key: convert(key),
                touch: *touch,
            },
            KeyOp::Store {
                mode,
                key,
                client_flags,
                exptime,
                value,
                cas,
            } => KeyOp::Store {
                mode: *mode,
                key: convert(key),
                client_flags: *client_flags,
                exptime: *exptime,
                value: convert(value),
                cas: *cas,
            },
            KeyOp::Delete { key } => KeyOp::Delete { key: convert(key) },
            KeyOp::Arith { key, incr, delta } => KeyOp::Arith {
                key: convert(key),
                incr: *incr,
                delta: *delta,
            },
            KeyOp::Touch { key, exptime } => KeyOp::Touch {
                key: convert(key),
                exptime: *exptime,
            },
        }
    }
}

/// What a shard answers for one KeyOp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<B> {
    Hit {
        client_flags: u32,
        cas: u64,
        value: B,
    },
    Miss,
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched,
    /// The new value after incr/decr.
    Number(u64),
    NonNumeric,
    TooLarge,
    OutOfMemory,
}

impl<B: AsRef<[u8]>> Outcome<B> {
    pub fn as_borrowed(&self) -> Outcome<&[u8]> {
        self.map_value(|value| value.as_ref())
    }

    /// The owned form, for a reply travelling back to another core.
    pub fn to_owned_outcome(&self) -> Outcome<Vec<u8>> {
        self.map_value(|value| value.as_ref().to_vec())
    }
}

impl<B> Outcome<B> {
    /// The same outcome with a hit's value converted by `convert`.
    pub fn map_value<'a, C>(&'a self, convert: impl FnOnce(&'a B) -> C) -> Outcome<C> {
        match self {
            Outcome::Hit {
                client_flags,
                cas,
                value,
            } => Outcome::Hit {
                client_flags: *client_flags,
                cas: *cas,
                value: convert(value),
            },
            Outcome::Miss => Outcome::Miss,
            Outcome::Stored => Outcome::Stored,
            Outcome::NotStored => Outcome::NotStored,
            Outcome::Exists => Outcome::Exists,
            Outcome::NotFound => Outcome::NotFound,
            Outcome::Deleted => Outcome::Deleted,
            Outcome::Touched => Outcome::Touched,
            Outcome::Number(n) => Outcome::Number(*n),
            Outcome::NonNumeric => Outcome::NonNumeric,
            Outcome::TooLarge => Outcome::TooLarge,
            Outcome::OutOfMemory => Outcome::OutOfMemory,
        }
    }
}

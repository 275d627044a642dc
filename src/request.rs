//! Protocol-neutral requests and their outcomes: what every protocol
//! parses into and what the store answers. `B` is the byte container: a
//! borrowed slice on the local path, a span of a packed buffer when
//! forwarded to another core (server::router).

/// How a store command treats an existing item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// Options of a read (gat/gats and meta get).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// New exptime on a hit (gat, mg T).
    pub touch: Option<i64>,
    /// On a miss, create an empty item with this exptime and win (mg N).
    pub vivify: Option<i64>,
    /// Win the recache if the item expires before this exptime (mg R).
    pub recache_below: Option<i64>,
    /// R comes after T in the line, so it sees the new TTL.
    pub recache_after_touch: bool,
    /// T comes after N in the line: an item N creates ends with T's TTL.
    pub touch_after_vivify: bool,
    /// Leave LRU position, hit bit and access time alone (mg u).
    pub no_bump: bool,
    /// The CAS of an item this read creates (mg E with N).
    pub new_cas: Option<u64>,
    /// Look without touching anything, counters included (me).
    pub peek: bool,
    /// mg: may hand out the recache win (classic gets never do; nor does an
    /// mg whose reply is an error: memcached marks the win as it ends the reply).
    pub claims_win: bool,
    /// Log the key's state as it stands for its copies, as a write would
    /// (a quorum read's repair, on the node acting for the key).
    pub resend: bool,
}

/// Options of a store (cas, binary CAS, meta set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Store only if the item's CAS equals this (cas, ms C).
    pub compare_cas: Option<u64>,
    /// With compare_cas: an older CAS still stores, marking the item stale (ms I).
    pub invalidate: bool,
    /// Use this as the new item's CAS (ms E).
    pub new_cas: Option<u64>,
    /// Append/prepend on a miss creates the item with this exptime (ms N).
    pub vivify: Option<i64>,
    /// The key was sent base64-encoded (ms b): meta `k` returns it so.
    pub binary_key: bool,
}

/// Options of a delete (meta delete).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub compare_cas: Option<u64>,
    /// Keep the item, marked stale with a new CAS (md I).
    pub invalidate: bool,
    /// New exptime (md T): with invalidate it changes the item's; with
    /// remove_value it is the emptied item's (none: never expires).
    pub touch: Option<i64>,
    /// Replace the item by an empty one (md x), with these client flags (md F).
    pub remove_value: bool,
    pub client_flags: u32,
    pub new_cas: Option<u64>,
}

/// Options of incr/decr (binary initial value, meta arithmetic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArithOptions {
    pub compare_cas: Option<u64>,
    /// On a miss, create the item with (initial value, exptime).
    pub vivify: Option<(u64, i64)>,
    /// New exptime on success (ma T).
    pub touch: Option<i64>,
    pub new_cas: Option<u64>,
}

/// One operation on one key: the unit routed to the owning shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOp<B> {
    Get {
        key: B,
        options: GetOptions,
    },
    Store {
        mode: StoreMode,
        key: B,
        client_flags: u32,
        exptime: i64,
        value: B,
        options: StoreOptions,
    },
    Delete {
        key: B,
        options: DeleteOptions,
    },
    Arith {
        key: B,
        incr: bool,
        delta: u64,
        options: ArithOptions,
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
            | KeyOp::Delete { key, .. }
            | KeyOp::Arith { key, .. }
            | KeyOp::Touch { key, .. } => key.as_ref(),
        }
    }

    /// Whether the operation can change the store (what a read-only
    /// replica refuses and what a primary logs).
    pub fn mutates(&self) -> bool {
        match self {
            KeyOp::Get { options, .. } => options.touch.is_some() || options.vivify.is_some(),
            KeyOp::Store { .. } | KeyOp::Delete { .. } | KeyOp::Arith { .. } | KeyOp::Touch { .. } => true,
        }
    }

    /// Whether the operation logs the key's state for its copies.
    pub fn logs_state(&self) -> bool {
        self.mutates() || matches!(self, KeyOp::Get { options, .. } if options.resend)
    }
}

impl<B> KeyOp<B> {
    /// The same operation with its key and value converted by `convert`.
    pub fn map_bytes<'a, C>(&'a self, mut convert: impl FnMut(&'a B) -> C) -> KeyOp<C> {
        match self {
            KeyOp::Get { key, options } => KeyOp::Get {
                key: convert(key),
                options: *options,
            },
            KeyOp::Store {
                mode,
                key,
                client_flags,
                exptime,
                value,
                options,
            } => KeyOp::Store {
                mode: *mode,
                key: convert(key),
                client_flags: *client_flags,
                exptime: *exptime,
                value: convert(value),
                options: *options,
            },
            KeyOp::Delete { key, options } => KeyOp::Delete {
                key: convert(key),
                options: *options,
            },
            KeyOp::Arith {
                key,
                incr,
                delta,
                options,
            } => KeyOp::Arith {
                key: convert(key),
                incr: *incr,
                delta: *delta,
                options: *options,
            },
            KeyOp::Touch { key, exptime } => KeyOp::Touch {
                key: convert(key),
                exptime: *exptime,
            },
        }
    }
}

/// Who may recache an item (meta W/Z flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recache {
    #[default]
    None,
    /// This client won the right to recache (W).
    Won,
    /// Another client already won it (Z).
    AlreadyWon,
}

/// What a read learns about an item, as of before the read changed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemInfo {
    pub client_flags: u32,
    pub cas: u64,
    /// Seconds left, -1 for never.
    pub ttl: i64,
    /// The TTL before this request changed it (mg T, N): memcached prints
    /// `t` as it finds the item at that flag's place in the line.
    pub previous_ttl: i64,
    /// The TTL this request's T gave, and the one its N gave an item it
    /// created: a `t` after them shows the later one's.
    pub touch_ttl: Option<i64>,
    pub vivify_ttl: Option<i64>,
    /// Seconds since the last access.
    pub idle: u32,
    pub hit_before: bool,
    pub stale: bool,
    /// The key was stored base64-encoded (ms b).
    pub binary_key: bool,
    pub recache: Recache,
    /// Slab class (1-based, as `stats slabs`) and bytes the item occupies.
    pub class: u32,
    pub total_size: u32,
}

/// What a shard answers for one KeyOp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<B> {
    Hit {
        info: ItemInfo,
        value: B,
    },
    Miss,
    /// Stored, with the new item's CAS and value length.
    Stored {
        cas: u64,
        value_len: usize,
    },
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched {
        cas: u64,
    },
    /// The new value after incr/decr.
    Number {
        value: u64,
        cas: u64,
        ttl: i64,
        /// The TTL before this request (ma T, N), -1 for a created item.
        previous_ttl: i64,
    },
    NonNumeric,
    TooLarge,
    OutOfMemory,
    /// Not run here, for a reason of the deployment (not of the key).
    Refused(Refusal),
}

/// Why a node did not run an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A write sent to a replica that has not been promoted.
    ReadOnly,
    /// A forwarded request for a key this node does not act for (a
    /// forwarded request is never forwarded again).
    NotActing,
    /// The node acting for the key could not be reached (its link failed).
    Unreachable,
    /// This node cannot see a majority of the cluster's nodes, and the
    /// partition policy refuses the request.
    NoMajority,
    /// A write of a key no node acts for at the moment: the nodes are
    /// handing it over (one has stopped acting for it, the next has not
    /// yet been told it may start).
    Handover,
}

impl Refusal {
    /// What the reply says, after the protocol's error prefix.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "read-only replica",
            Refusal::NotActing => "forwarded to a node that does not act for the key",
            Refusal::Unreachable => "the node acting for the key cannot be reached",
            Refusal::NoMajority => "this node cannot reach a majority of the cluster (partition policy)",
            Refusal::Handover => "no node acts for the key while the cluster changes; try again",
        }
    }
}

impl<B: AsRef<[u8]>> Outcome<B> {
    /// An owned copy, kept past the shard borrow it came from (tests, benches).
    pub fn to_owned_outcome(&self) -> Outcome<Vec<u8>> {
        self.map_value(|value| value.as_ref().to_vec())
    }
}

impl<B> Outcome<B> {
    /// The same outcome with a hit's value converted by `convert`.
    pub fn map_value<'a, C>(&'a self, convert: impl FnOnce(&'a B) -> C) -> Outcome<C> {
        match self {
            Outcome::Hit { info, value } => Outcome::Hit {
                info: *info,
                value: convert(value),
            },
            Outcome::Miss => Outcome::Miss,
            Outcome::Stored { cas, value_len } => Outcome::Stored {
                cas: *cas,
                value_len: *value_len,
            },
            Outcome::NotStored => Outcome::NotStored,
            Outcome::Exists => Outcome::Exists,
            Outcome::NotFound => Outcome::NotFound,
            Outcome::Deleted => Outcome::Deleted,
            Outcome::Touched { cas } => Outcome::Touched { cas: *cas },
            Outcome::Number {
                value,
                cas,
                ttl,
                previous_ttl,
            } => Outcome::Number {
                value: *value,
                cas: *cas,
                ttl: *ttl,
                previous_ttl: *previous_ttl,
            },
            Outcome::NonNumeric => Outcome::NonNumeric,
            Outcome::TooLarge => Outcome::TooLarge,
            Outcome::OutOfMemory => Outcome::OutOfMemory,
            Outcome::Refused(refusal) => Outcome::Refused(*refusal),
        }
    }
}

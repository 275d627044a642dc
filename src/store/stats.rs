//! A shard's counters, named as memcached names them in `stats`, and the
//! per-class counters behind `stats items` and `stats slabs`.

/// Declares a counter struct whose field names are the stat names.
macro_rules! counters {
    ($(#[$meta:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $(pub $field: u64,)*
        }

        impl $name {
            pub fn add(&mut self, other: &$name) {
                $(self.$field += other.$field;)*
            }

            /// (stat name, value) in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field),)*]
            }
        }
    };
}

counters!(
    /// Command and outcome counters of one shard (memcached's names).
    ShardCounters {
        cmd_get,
        cmd_set,
        cmd_touch,
        get_hits,
        get_misses,
        get_expired,
        get_flushed,
        delete_misses,
        delete_hits,
        incr_misses,
        incr_hits,
        decr_misses,
        decr_hits,
        cas_misses,
        cas_hits,
        cas_badval,
        touch_hits,
        touch_misses,
        store_too_large,
        store_no_memory,
        total_items,
        expired_unfetched,
        evicted_unfetched,
        evictions,
        reclaimed,
    }
);

counters!(
    /// Counters of one slab class.
    ClassCounters {
        get_hits,
        cmd_set,
        delete_hits,
        incr_hits,
        decr_hits,
        cas_hits,
        cas_badval,
        touch_hits,
        evicted,
        evicted_unfetched,
        reclaimed,
        expired_unfetched,
        outofmemory,
    }
);

/// What `stats items` / `stats slabs` report for one class of one shard.
#[derive(Clone, Debug, Default)]
pub struct ClassReport {
    pub chunk_size: u64,
    pub chunks_per_page: u64,
    pub total_pages: u64,
    pub total_chunks: u64,
    pub used_chunks: u64,
    pub free_chunks: u64,
    pub number: u64,
    pub number_hot: u64,
    pub number_warm: u64,
    pub number_cold: u64,
    /// Seconds since the oldest item (COLD tail) was last accessed.
    pub age: u64,
    pub counters: ClassCounters,
}

impl ClassReport {
    pub fn add(&mut self, other: &ClassReport) {
        self.chunk_size = other.chunk_size;
        self.chunks_per_page = other.chunks_per_page;
        self.total_pages += other.total_pages;
        self.total_chunks += other.total_chunks;
        self.used_chunks += other.used_chunks;
        self.free_chunks += other.free_chunks;
        self.number += other.number;
        self.number_hot += other.number_hot;
        self.number_warm += other.number_warm;
        self.number_cold += other.number_cold;
        self.age = self.age.max(other.age);
        self.counters.add(&other.counters);
    }
}

/// A snapshot of one shard for `stats`.
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    pub counters: ShardCounters,
    pub curr_items: u64,
    pub bytes: u64,
    pub memory_used: u64,
    pub index_bytes: u64,
    pub classes: Vec<ClassReport>,
    /// The hottest keys of each kind (`stats hotkeys`).
    pub hot_keys: Vec<super::hot_keys::HotKey>,
}

impl ShardReport {
    pub fn add(&mut self, other: &ShardReport) {
        self.counters.add(&other.counters);
        self.curr_items += other.curr_items;
        self.bytes += other.bytes;
        self.memory_used += other.memory_used;
        self.index_bytes += other.index_bytes;
        if self.classes.len() < other.classes.len() {
            self.classes.resize(other.classes.len(), ClassReport::default());
        }
        for (mine, theirs) in self.classes.iter_mut().zip(&other.classes) {
            mine.add(theirs);
        }
        super::hot_keys::merge(&mut self.hot_keys, &other.hot_keys);
    }
}

//! One core's shard of the key space: index + slab + segmented LRU +
//! expiry. Single-threaded by construction (owned by its core); the
//! operations here are the whole store API.

use super::clock::{Clock, RelTime};
use super::hot_keys::HotKeys;
use super::index::Index;
use super::item::{Item, ItemMut, Segment, item_size};
use super::lru::Lru;
use super::prefix_stats::PrefixStats;
use super::slab::{Slab, class_sizes};
use super::stats::{ClassCounters, ClassReport, ShardCounters, ShardReport};
use crate::hash::KeyHash;
use crate::request::{ItemInfo, Recache};

/// Expired items looked at from a class's tails before evicting.
const EXPIRED_PROBES: usize = 5;
/// Largest key memcached accepts.
pub const KEY_MAX_LENGTH: usize = 250;

/// How a shard is sized and behaves.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// This shard's number; tags its CAS values so they are unique per node.
    pub shard_id: usize,
    /// Byte ceiling for item memory (the shard's share of `-m`).
    pub memory_limit: usize,
    /// Smallest chunk payload (`-n`) and growth factor (`-f`).
    pub smallest_chunk: usize,
    pub growth_factor: f64,
    /// Largest item in bytes, header included (`-I`).
    pub item_size_max: usize,
    /// false with `-M`: fail stores instead of evicting.
    pub evictions: bool,
    /// Unix time at server start (for absolute exptimes).
    pub started_unix: i64,
}

/// Why a key lookup found nothing usable.
pub(super) enum Lookup {
    Found(u32),
    Missing,
    Expired,
    Flushed,
}

/// What the flush_all's so far say is dead.
#[derive(Clone, Copy, Debug)]
pub(super) struct FlushMarks {
    epoch: bool,
    flush_before: Option<RelTime>,
    /// A delayed flush that has taken effect.
    oldest_live: Option<RelTime>,
}

impl FlushMarks {
    pub(super) fn hide(self, item: Item<'_>) -> bool {
        item.epoch() != self.epoch
            || self.flush_before.is_some_and(|at| item.last_access() <= at)
            || self.oldest_live.is_some_and(|oldest| item.last_access() <= oldest)
    }
}

/// No memory could be found for an item.
#[derive(Debug)]
pub(super) struct OutOfMemory;

pub struct Shard {
    pub(super) id: usize,
    pub(super) slab: Slab,
    pub(super) lru: Lru,
    pub(super) index: Index,
    pub(super) clock: Clock,
    pub(super) cas_counter: u64,
    pub(super) item_size_max: usize,
    pub(super) evictions: bool,
    /// flush_all: items last touched at or before this time are dead once
    /// it has passed (flush_all with a delay).
    pub(super) oldest_live: Option<RelTime>,
    /// flush_all without a delay flips the generation new items are made
    /// in: every item of the other one is dead. `last_flush` is when that
    /// happened; `flush_before` when the one before did: items of the
    /// current generation last touched by then are two flushes old.
    pub(super) epoch: bool,
    pub(super) last_flush: Option<RelTime>,
    pub(super) flush_before: Option<RelTime>,
    pub(super) counters: ShardCounters,
    pub(super) class_counters: Vec<ClassCounters>,
    pub(super) bytes: usize,
    pub(super) sweep_cursor: usize,
    /// Reused buffer for append/prepend and incr (no allocation per request).
    pub(super) scratch: Vec<u8>,
    /// `stats detail` counts (off unless turned on).
    pub(super) prefixes: PrefixStats,
    pub(super) hot_keys: HotKeys,
}

impl Shard {
    pub fn new(config: &ShardConfig) -> Shard {
        let sizes = class_sizes(super::item::HEADER_BYTES + config.smallest_chunk, config.growth_factor);
        let slab = Slab::new(config.memory_limit, &sizes);
        let classes = slab.large_class() + 1;
        Shard {
            id: config.shard_id,
            lru: Lru::new(classes),
            slab,
            index: Index::default(),
            clock: Clock::new(config.started_unix),
            cas_counter: 0,
            item_size_max: config.item_size_max,
            evictions: config.evictions,
            oldest_live: None,
            epoch: false,
            last_flush: None,
            flush_before: None,
            counters: ShardCounters::default(),
            class_counters: vec![ClassCounters::default(); classes],
            bytes: 0,
            sweep_cursor: 0,
            scratch: Vec::new(),
            prefixes: PrefixStats::default(),
            hot_keys: HotKeys::default(),
        }
    }

    /// Sets the coarse clock; the server calls this once per batch.
    pub fn set_now(&mut self, now: RelTime) {
        self.clock.now = now.max(self.clock.now);
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Memory taken from the limit (pages and large items).
    pub fn memory_used(&self) -> usize {
        self.slab.used()
    }

    pub(super) fn next_cas(&mut self) -> u64 {
        self.cas_counter += 1;
        // The low byte names the shard: unique per node.
        (self.cas_counter << 8) | (self.id as u64 & 0xff)
    }

    pub(super) fn is_flushed(&self, item: Item<'_>) -> bool {
        self.flush_marks().hide(item)
    }

    pub(super) fn flush_marks(&self) -> FlushMarks {
        FlushMarks {
            epoch: self.epoch,
            flush_before: self.flush_before,
            oldest_live: self.oldest_live.filter(|&oldest| oldest <= self.clock.now),
        }
    }

    /// Finds a live item; a dead one found on the way is unlinked.
    pub(super) fn lookup(&mut self, hash: KeyHash, key: &[u8]) -> Lookup {
        let Some(handle) = self.index.find(&self.slab, hash, key) else {
            return Lookup::Missing;
        };
        let item = Item(self.slab.chunk(handle));
        if self.clock.is_expired(item.expiry()) {
            self.unlink(hash, handle);
            Lookup::Expired
        } else if self.is_flushed(item) {
            self.unlink(hash, handle);
            Lookup::Flushed
        } else {
            Lookup::Found(handle)
        }
    }

    /// Removes an item from index and LRU and frees its chunk.
    pub(super) fn unlink(&mut self, hash: KeyHash, handle: u32) {
        let class = self.slab.class_of(handle);
        self.index.remove(hash, handle);
        self.lru.unlink(&mut self.slab, class, handle);
        self.bytes -= Item(self.slab.chunk(handle)).total_size();
        ItemMut(self.slab.chunk_mut(handle)).clear();
        self.slab.free(handle);
    }

    /// Frees an item picked by eviction or reclaim (its hash is recomputed:
    /// this is off the per-request path).
    pub(super) fn remove_victim(&mut self, handle: u32) {
        let hash = KeyHash::of(Item(self.slab.chunk(handle)).key());
        self.unlink(hash, handle);
    }

    fn is_dead(&self, handle: u32) -> bool {
        let item = Item(self.slab.chunk(handle));
        self.clock.is_expired(item.expiry()) || self.is_flushed(item)
    }

    /// Reclaims dead items at the tails of a class; true if one was freed.
    fn reclaim_expired(&mut self, class: usize) -> bool {
        for segment in [Segment::Cold, Segment::Warm, Segment::Hot] {
            let candidates: [Option<u32>; EXPIRED_PROBES] = {
                let mut found = [None; EXPIRED_PROBES];
                for (slot, handle) in found.iter_mut().zip(self.lru_tail_walk(class, segment)) {
                    *slot = Some(handle);
                }
                found
            };
            for handle in candidates.into_iter().flatten() {
                if self.is_dead(handle) {
                    self.count_reclaim(class, handle);
                    self.remove_victim(handle);
                    return true;
                }
            }
        }
        false
    }

    /// Handles from a segment's tail towards its head.
    fn lru_tail_walk(&self, class: usize, segment: Segment) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.lru.tail(class, segment);
        std::iter::from_fn(move || {
            let current = at?;
            let prev = Item(self.slab.chunk(current)).prev();
            at = (prev != super::item::NO_ITEM).then_some(prev);
            Some(current)
        })
    }

    pub(super) fn count_reclaim(&mut self, class: usize, handle: u32) {
        let fetched = Item(self.slab.chunk(handle)).was_fetched();
        self.counters.reclaimed += 1;
        self.class_counters[class].reclaimed += 1;
        if !fetched {
            self.counters.expired_unfetched += 1;
            self.class_counters[class].expired_unfetched += 1;
        }
    }

    fn evict(&mut self, class: usize, handle: u32) {
        let fetched = Item(self.slab.chunk(handle)).was_fetched();
        self.counters.evictions += 1;
        self.class_counters[class].evicted += 1;
        if !fetched {
            self.counters.evicted_unfetched += 1;
            self.class_counters[class].evicted_unfetched += 1;
        }
        self.remove_victim(handle);
    }

    /// Evicts the least valuable item of a class (COLD tail first), never
    /// `protect`. False if the class has nothing to give.
    fn evict_from_class(&mut self, class: usize, protect: Option<u32>) -> bool {
        for segment in [Segment::Cold, Segment::Warm, Segment::Hot] {
            let victim = self.lru_tail_walk(class, segment).take(2).find(|&h| Some(h) != protect);
            if let Some(victim) = victim {
                self.evict(class, victim);
                return true;
            }
        }
        false
    }

    /// Frees a whole page (or a large item) from some other class so memory
    /// returns to the limit. memcached moves pages between classes the
    /// same way (slab rebalancing); without it a class that never got a page
    /// could not store anything once the limit is reached.
    fn release_elsewhere(&mut self, requester: usize, protect: Option<u32>) -> bool {
        let large = self.slab.large_class();
        if requester != large && self.evict_from_class(large, protect) {
            return true;
        }
        let protect_page = protect.and_then(Slab::page_of);
        let donor = (0..self.slab.classes().len())
            .filter(|&class| class != requester)
            .filter_map(|class| {
                let page = *self.slab.classes()[class]
                    .pages
                    .iter()
                    .rev()
                    .find(|&&p| Some(p) != protect_page)?;
                Some((self.slab.classes()[class].pages.len(), page))
            })
            .max();
        let Some((_, page)) = donor else {
            return false;
        };
        let handles: Vec<u32> = self.slab.page_handles(page).collect();
        for handle in handles {
            if Item(self.slab.chunk(handle)).is_linked() {
                let class = self.slab.class_of(handle);
                self.evict(class, handle);
            }
        }
        self.slab.release_page(page);
        true
    }

    /// A chunk for an item of `size` bytes: free chunk, new page, expired
    /// item, eviction, then memory from another class. `protect` is the
    /// item being replaced, which must survive until the new one is written.
    pub(super) fn allocate(&mut self, size: usize, protect: Option<u32>) -> Result<u32, OutOfMemory> {
        let class = self.slab.class_for(size);
        let lru_class = class.unwrap_or(self.slab.large_class());
        // Each round frees something or gives up, so this ends.
        loop {
            let handle = match class {
                Some(class) => self.slab.alloc_chunk(class),
                None => self.slab.alloc_large(size),
            };
            if let Some(handle) = handle {
                return Ok(handle);
            }
            if self.reclaim_expired(lru_class) {
                continue;
            }
            if !self.evictions {
                break;
            }
            // Segments only matter once something must go: the juggling
            // between HOT, WARM and COLD happens here, under memory
            // pressure, not on every store.
            self.lru.balance(&mut self.slab, lru_class);
            if self.evict_from_class(lru_class, protect) {
                continue;
            }
            if !self.release_elsewhere(lru_class, protect) {
                break;
            }
        }
        self.class_counters[lru_class].outofmemory += 1;
        Err(OutOfMemory)
    }

    /// Links a fully written item into index and LRU, replacing `old`.
    pub(super) fn link_new(&mut self, hash: KeyHash, handle: u32, old: Option<u32>) {
        match old {
            Some(old) => {
                let old_class = self.slab.class_of(old);
                self.index.replace(hash, old, handle);
                self.lru.unlink(&mut self.slab, old_class, old);
                self.bytes -= Item(self.slab.chunk(old)).total_size();
                ItemMut(self.slab.chunk_mut(old)).clear();
                self.slab.free(old);
            }
            None => self.index.insert(&self.slab, hash, handle),
        }
        let class = self.slab.class_of(handle);
        self.lru.link(&mut self.slab, class, Segment::Hot, handle);
        self.bytes += Item(self.slab.chunk(handle)).total_size();
        self.counters.total_items += 1;
        self.class_counters[class].cmd_set += 1;
    }

    /// Allocates, writes and links a new item whose value is `parts`
    /// concatenated, replacing `old` (which survives if this fails).
    /// Returns the new handle and CAS.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
        &mut self,
        hash: KeyHash,
        key: &[u8],
        parts: [&[u8]; 2],
        client_flags: u32,
        expiry: RelTime,
        cas: Option<u64>,
        old: Option<u32>,
    ) -> Result<(u32, u64), OutOfMemory> {
        let value_len = parts[0].len() + parts[1].len();
        let handle = self.allocate(item_size(key.len(), value_len, client_flags), old)?;
        let cas = cas.unwrap_or_else(|| self.next_cas());
        let now = self.clock.now;
        let mut item = ItemMut(self.slab.chunk_mut(handle));
        item.init(key, value_len, client_flags, expiry, cas, now);
        item.set_epoch(self.epoch);
        let value = item.value_mut();
        value[..parts[0].len()].copy_from_slice(parts[0]);
        value[parts[0].len()..].copy_from_slice(parts[1]);
        self.link_new(hash, handle, old);
        Ok((handle, cas))
    }

    /// What a read reports about an item (before the read changes it).
    pub(super) fn info(&self, handle: u32) -> ItemInfo {
        let item = Item(self.slab.chunk(handle));
        let ttl = self.clock.ttl_of(item.expiry());
        ItemInfo {
            client_flags: item.client_flags(),
            cas: item.cas(),
            ttl,
            previous_ttl: ttl,
            touch_ttl: None,
            vivify_ttl: None,
            idle: self.clock.now.saturating_sub(item.last_access()),
            hit_before: item.was_fetched(),
            binary_key: item.binary_key(),
            stale: item.is_stale(),
            recache: Recache::None,
            class: self.slab.class_of(handle) as u32 + 1,
            total_size: item.total_size() as u32,
        }
    }
}

impl Shard {
    /// flush_all [delay], as memcached: with no delay every item stored so
    /// far dies now; with a delay, items not touched since then die when it
    /// passes. Memory is reclaimed lazily and by the sweep.
    pub fn flush_all(&mut self, delay: i64) {
        if delay > 0 {
            self.oldest_live = Some(self.clock.expiry_of(delay).saturating_sub(1));
            return;
        }
        // Everything made so far dies, whatever its CAS (ms E sets any), and
        // what is stored next lives, as memcached. The generation the flip
        // brings back is told apart by time, unless the last flush was this
        // same second: then it is removed now (rare: two flushes a second).
        let now = self.clock.now;
        if self.last_flush == Some(now) {
            let returning = !self.epoch;
            self.remove_all(|item| item.epoch() == returning);
            self.flush_before = None;
        } else {
            self.flush_before = self.last_flush;
        }
        self.epoch = !self.epoch;
        self.last_flush = Some(now);
    }

    /// Removes, now, every linked item `dead` picks (a walk of all chunks).
    pub(super) fn remove_all(&mut self, dead: impl Fn(Item<'_>) -> bool) {
        let mut cursor = 0;
        while let Some(handle) = self.slab.sweep_next(&mut cursor) {
            let item = Item(self.slab.chunk(handle));
            if item.is_linked() && dead(item) {
                self.remove_victim(handle);
            }
        }
    }

    /// Active expiry: examines up to `budget` chunks from where the last
    /// sweep stopped and frees dead items. Returns how many it freed.
    pub fn sweep(&mut self, budget: usize) -> usize {
        let mut freed = 0;
        for _ in 0..budget {
            let Some(handle) = self.slab.sweep_next(&mut self.sweep_cursor) else {
                break;
            };
            if Item(self.slab.chunk(handle)).is_linked() && self.is_dead(handle) {
                let class = self.slab.class_of(handle);
                self.count_reclaim(class, handle);
                self.remove_victim(handle);
                freed += 1;
            }
        }
        freed
    }

    /// `lru_crawler metadump`: one line per live item, as memcached prints
    /// it (`key=<uri-encoded> exp=<unix or -1> la=<unix> cas= fetch= cls= size= flags= `),
    /// for the classes `wanted` accepts (1-based ids).
    pub fn metadump(&self, wanted: impl Fn(usize) -> bool, out: &mut Vec<u8>) {
        use std::io::Write;
        let mut cursor = 0;
        let unix_of = |rel: RelTime| self.clock.unix_now() - i64::from(self.clock.now) + i64::from(rel);
        while let Some(handle) = self.slab.sweep_next(&mut cursor) {
            let item = Item(self.slab.chunk(handle));
            let class = self.slab.class_of(handle) + 1;
            if !item.is_linked() || self.is_dead(handle) || !wanted(class) {
                continue;
            }
            out.extend_from_slice(b"key=");
            for &byte in item.key() {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(byte);
                } else {
                    let _ = write!(out, "%{byte:02X}");
                }
            }
            let expiry = if item.expiry() == 0 { -1 } else { unix_of(item.expiry()) };
            let fetched = if item.was_fetched() { "yes" } else { "no" };
            // memcached 1.6.45 ends the line with "flags=N " (a space, then \n).
            let _ = writeln!(
                out,
                " exp={expiry} la={} cas={} fetch={fetched} cls={class} size={} flags={} ",
                unix_of(item.last_access()),
                item.cas(),
                item.total_size(),
                item.client_flags()
            );
        }
    }

    pub fn reset_counters(&mut self) {
        self.counters = ShardCounters::default();
        self.prefixes.clear();
        self.class_counters.iter_mut().for_each(|c| *c = ClassCounters::default());
    }

    /// `stats detail on|off`: count per key prefix (cut at `delimiter`) or stop.
    pub fn set_prefix_stats(&mut self, delimiter: Option<u8>) {
        self.prefixes.set(delimiter);
    }

    /// `stats detail dump`: this shard's counts per prefix.
    pub fn prefix_stats(&self) -> &PrefixStats {
        &self.prefixes
    }

    /// A snapshot for `stats`, `stats items` and `stats slabs`.
    pub fn report(&self) -> ShardReport {
        let large = self.slab.large_class();
        let classes = (0..=large)
            .map(|class| {
                let (chunk_size, chunks_per_page, total_pages, total_chunks, free_chunks) = match self.slab.classes().get(class) {
                    Some(slab_class) => (
                        slab_class.chunk_size,
                        slab_class.chunks_per_page,
                        slab_class.pages.len(),
                        slab_class.total_chunks(),
                        slab_class.free_chunks(),
                    ),
                    None => (0, 0, 0, 0, 0),
                };
                let age = self
                    .lru_tail_walk(class, Segment::Cold)
                    .next()
                    .or_else(|| self.lru_tail_walk(class, Segment::Warm).next())
                    .or_else(|| self.lru_tail_walk(class, Segment::Hot).next())
                    .map_or(0, |handle| {
                        self.clock.now.saturating_sub(Item(self.slab.chunk(handle)).last_access())
                    });
                ClassReport {
                    chunk_size: chunk_size as u64,
                    chunks_per_page: chunks_per_page as u64,
                    total_pages: total_pages as u64,
                    total_chunks: total_chunks as u64,
                    used_chunks: (total_chunks - free_chunks) as u64,
                    free_chunks: free_chunks as u64,
                    number: self.lru.class_len(class) as u64,
                    number_hot: self.lru.len(class, Segment::Hot) as u64,
                    number_warm: self.lru.len(class, Segment::Warm) as u64,
                    number_cold: self.lru.len(class, Segment::Cold) as u64,
                    age: u64::from(age),
                    counters: self.class_counters[class].clone(),
                }
            })
            .collect();
        ShardReport {
            counters: self.counters.clone(),
            curr_items: self.index.len() as u64,
            bytes: self.bytes as u64,
            memory_used: self.slab.used() as u64,
            index_bytes: self.index.memory_bytes() as u64,
            classes,
            hot_keys: self.hot_keys.hottest(self.clock.now),
        }
    }
}

/// A counter's value as memcached's safe_strtoull reads it for incr and
/// decr: leading white space, an optional sign, digits, then white space or
/// the end; a '-' only when the negated value is not negative as signed
/// ("-0"). No digits, no number.
pub(super) fn parse_counter(value: &[u8]) -> Option<u64> {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let start = value.iter().position(|b| !is_space(b)).unwrap_or(value.len());
    let rest = &value[start..];
    let (negative, rest) = match rest.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, rest),
    };
    let digits_end = rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len());
    if digits_end == 0 {
        return None;
    }
    let (digits, tail) = rest.split_at(digits_end);
    if tail.first().is_some_and(|b| !is_space(b)) {
        return None;
    }
    let number = digits
        .iter()
        .try_fold(0u64, |acc, &b| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))?;
    if negative {
        let number = number.wrapping_neg();
        return ((number as i64) >= 0).then_some(number);
    }
    Some(number)
}

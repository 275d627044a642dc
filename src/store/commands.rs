//! The store's commands: every KeyOp a shard executes, with memcached's
//! semantics (classic, binary and meta variants through their options).

use super::clock::{NEVER, RelTime};
use super::hot_keys::HotKind;
use super::item::{Item, ItemMut, item_size};
use super::prefix_stats::Access;
use super::shard::{KEY_MAX_LENGTH, Lookup, OutOfMemory, Shard, parse_counter};
use crate::hash::KeyHash;
use crate::request::{ArithOptions, DeleteOptions, GetOptions, KeyOp, Outcome, Recache, StoreMode, StoreOptions};

impl Shard {
    /// Applies one key operation. `hash` is the key's hash, computed once by
    /// the caller.
    pub fn execute(&mut self, hash: KeyHash, op: &KeyOp<&[u8]>) -> Outcome<&[u8]> {
        if self.prefixes.is_on() {
            self.record_prefix(hash, op);
        }
        let kind = match op {
            KeyOp::Get { options, .. } if options.peek => None,
            KeyOp::Get { .. } => Some(HotKind::Read),
            _ => Some(HotKind::Write),
        };
        if let Some(kind) = kind {
            self.hot_keys.sample(self.clock.now, hash.0, op.key(), kind);
        }
        match *op {
            KeyOp::Get { key, options } => self.get(hash, key, options),
            KeyOp::Store {
                mode,
                key,
                client_flags,
                exptime,
                value,
                options,
            } => self.store(hash, mode, key, client_flags, exptime, value, options),
            KeyOp::Delete { key, options } => self.delete(hash, key, options),
            KeyOp::Arith {
                key,
                incr,
                delta,
                options,
            } => self.arith(hash, key, incr, delta, options),
            KeyOp::Touch { key, exptime } => self.touch(hash, key, exptime),
        }
    }

    /// Counts the operation for `stats detail` (only while it is on; a get
    /// looks its key up once more to know whether it hits).
    fn record_prefix(&mut self, hash: KeyHash, op: &KeyOp<&[u8]>) {
        let access = match *op {
            KeyOp::Get { key, .. } => Access::Get {
                hit: self.found(hash, key).is_some(),
            },
            KeyOp::Store { .. } => Access::Set,
            KeyOp::Delete { .. } => Access::Delete,
            KeyOp::Arith { .. } | KeyOp::Touch { .. } => return,
        };
        self.prefixes.record(op.key(), access);
    }

    fn found(&mut self, hash: KeyHash, key: &[u8]) -> Option<u32> {
        match self.lookup(hash, key) {
            Lookup::Found(handle) => Some(handle),
            _ => None,
        }
    }

    fn get(&mut self, hash: KeyHash, key: &[u8], options: GetOptions) -> Outcome<&[u8]> {
        if options.peek {
            return match self.found(hash, key) {
                Some(handle) => Outcome::Hit {
                    info: self.info(handle),
                    value: Item(self.slab.chunk(handle)).value(),
                },
                None => Outcome::Miss,
            };
        }
        if options.touch.is_some() {
            self.counters.cmd_touch += 1;
        }
        self.counters.cmd_get += 1;
        let handle = match self.lookup(hash, key) {
            Lookup::Found(handle) => handle,
            miss => {
                self.count_miss(&miss, options.touch.is_some());
                return match options.vivify {
                    Some(exptime) => self.vivify(hash, key, exptime, options),
                    None => Outcome::Miss,
                };
            }
        };
        let class = self.slab.class_of(handle);
        if options.touch.is_some() {
            self.counters.touch_hits += 1;
            self.class_counters[class].touch_hits += 1;
        } else {
            self.counters.get_hits += 1;
            self.class_counters[class].get_hits += 1;
        }
        let mut info = self.info(handle);
        let now = self.clock.now;
        let expiry = options.touch.map(|exptime| self.clock.expiry_of(exptime));
        // A stale item, or one expiring before the R time (read as any
        // exptime, so past 30 days it is a unix time), goes to the first asker.
        let item = Item(self.slab.chunk(handle));
        let recache_by = options.recache_below.map(|exptime| self.clock.expiry_of(exptime));
        // R is weighed against the TTL the item has at R's place in the
        // line: after a T that comes before it.
        let expiry_now = expiry.filter(|_| options.recache_after_touch).unwrap_or(item.expiry());
        let wants_recache = info.stale || recache_by.is_some_and(|by| expiry_now != NEVER && expiry_now < by);
        if item.win_sent() {
            info.recache = Recache::AlreadyWon;
        } else if wants_recache && options.claims_win {
            info.recache = Recache::Won;
        }
        if !options.no_bump {
            self.lru.touch(&mut self.slab, class, handle);
        }
        let mut item = ItemMut(self.slab.chunk_mut(handle));
        if !options.no_bump {
            item.set_fetched();
            item.set_last_access(now);
        }
        if info.recache == Recache::Won {
            item.set_win_sent(true);
        }
        if let Some(expiry) = expiry {
            item.set_expiry(expiry);
            info.ttl = self.clock.ttl_of(expiry);
            info.touch_ttl = Some(info.ttl);
        }
        Outcome::Hit {
            info,
            value: Item(self.slab.chunk(handle)).value(),
        }
    }

    /// mg N on a miss: an empty placeholder item whose creator wins the recache.
    fn vivify(&mut self, hash: KeyHash, key: &[u8], exptime: i64, options: GetOptions) -> Outcome<&[u8]> {
        // N and T act in the order of the line: the later one's TTL stays.
        let vivify_expiry = self.clock.expiry_of(exptime);
        let touch_expiry = options.touch.map(|touch| self.clock.expiry_of(touch));
        let expiry = match touch_expiry {
            Some(touch) if options.touch_after_vivify => touch,
            _ => vivify_expiry,
        };
        match self.create(hash, key, [b"", b""], 0, expiry, options.new_cas, None) {
            Ok((handle, _)) => {
                let mut info = self.info(handle);
                let mut item = ItemMut(self.slab.chunk_mut(handle));
                item.set_win_sent(options.claims_win);
                // memcached counts the creating read as a fetch (from the next
                // read on: this one reports h0), unless it does not bump.
                if !options.no_bump {
                    item.set_fetched();
                }
                info.recache = if options.claims_win { Recache::Won } else { Recache::None };
                // Created without an exptime until N (or T) sets one.
                info.previous_ttl = -1;
                info.vivify_ttl = Some(self.clock.ttl_of(vivify_expiry));
                info.touch_ttl = touch_expiry.map(|touch| self.clock.ttl_of(touch));
                Outcome::Hit { info, value: b"" }
            }
            Err(OutOfMemory) => Outcome::OutOfMemory,
        }
    }

    fn count_miss(&mut self, lookup: &Lookup, touch: bool) {
        if touch {
            self.counters.touch_misses += 1;
        } else {
            self.counters.get_misses += 1;
        }
        match lookup {
            Lookup::Expired => self.counters.get_expired += 1,
            Lookup::Flushed => self.counters.get_flushed += 1,
            _ => {}
        }
    }

    /// memcached: a SET that cannot be stored must not leave the old value
    /// behind ("stale data persisting in cache"); a compare-and-swap keeps it.
    fn drop_stale_on_set_failure(&mut self, mode: StoreMode, options: &StoreOptions, hash: KeyHash, existing: Option<u32>) {
        if let (StoreMode::Set, None, Some(handle)) = (mode, options.compare_cas, existing) {
            self.unlink(hash, handle);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        hash: KeyHash,
        mode: StoreMode,
        key: &[u8],
        client_flags: u32,
        exptime: i64,
        value: &[u8],
        options: StoreOptions,
    ) -> Outcome<&[u8]> {
        self.counters.cmd_set += 1;
        let existing = self.found(hash, key);
        // ms I with an older CAS: the write lands but stays stale, with the
        // old item's TTL and win token (memcached's CAS_STALE).
        let mut stale_from: Option<(RelTime, bool)> = None;
        // memcached checks a CAS only against an item that is there, and add
        // ignores it; for a missing key append and prepend let the mode decide.
        // C0 means nothing to append and prepend, which check a CAS only
        // when one is given; set and replace compare it (and fail).
        let appending = matches!(mode, StoreMode::Append | StoreMode::Prepend);
        let compare_cas = options.compare_cas.filter(|&cas| !(appending && cas == 0));
        if let Some(expected) = compare_cas.filter(|_| mode != StoreMode::Add) {
            match existing {
                None if matches!(mode, StoreMode::Set | StoreMode::Replace) => {
                    self.counters.cas_misses += 1;
                    return Outcome::NotFound;
                }
                None => {}
                Some(handle) => {
                    let current = Item(self.slab.chunk(handle)).cas();
                    let class = self.slab.class_of(handle);
                    // A CAS of 0 matches nothing (memcached's cas with 0).
                    if current != expected || expected == 0 {
                        // ms I: an older CAS still writes, but the item is stale.
                        // (set and replace only: append and prepend just fail).
                        if options.invalidate && !appending && expected != 0 && expected < current {
                            let old = Item(self.slab.chunk(handle));
                            stale_from = Some((old.expiry(), old.win_sent()));
                        } else {
                            self.counters.cas_badval += 1;
                            self.class_counters[class].cas_badval += 1;
                            return Outcome::Exists;
                        }
                    }
                    self.counters.cas_hits += 1;
                    self.class_counters[class].cas_hits += 1;
                }
            }
        }
        let (mode, exptime) = match (mode, existing) {
            (StoreMode::Add, Some(handle)) => {
                // memcached refreshes the item's LRU position on a failed add.
                let class = self.slab.class_of(handle);
                self.lru.touch(&mut self.slab, class, handle);
                return Outcome::NotStored;
            }
            (StoreMode::Append | StoreMode::Prepend, None) => match options.vivify {
                // ms N: append on a miss creates the item.
                Some(exptime) => (StoreMode::Set, exptime),
                None => return Outcome::NotStored,
            },
            (StoreMode::Replace, None) => return Outcome::NotStored,
            _ => (mode, exptime),
        };

        // Append and prepend keep the old item's flags and expiry; like
        // memcached's, the joined item forgets that a key came base64.
        let (client_flags, expiry, old_len, binary_key) = match (appending, existing) {
            (true, Some(handle)) => {
                let old = Item(self.slab.chunk(handle));
                (old.client_flags(), old.expiry(), old.value_len(), false)
            }
            _ => (client_flags, self.clock.expiry_of(exptime), 0, options.binary_key),
        };
        let expiry = stale_from.map_or(expiry, |(old_expiry, _)| old_expiry);
        let size = item_size(key.len(), old_len + value.len(), client_flags);
        if key.len() > KEY_MAX_LENGTH || size > self.item_size_max {
            self.counters.store_too_large += 1;
            self.drop_stale_on_set_failure(mode, &options, hash, existing);
            return Outcome::TooLarge;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        if let (true, Some(handle)) = (appending, existing) {
            scratch.extend_from_slice(Item(self.slab.chunk(handle)).value());
        }
        let parts = match mode {
            StoreMode::Prepend => [value, &scratch[..]],
            _ => [&scratch[..], value],
        };
        let created = self.create(hash, key, parts, client_flags, expiry, options.new_cas, existing);
        self.scratch = scratch;
        match created {
            Ok((handle, cas)) => {
                if binary_key {
                    ItemMut(self.slab.chunk_mut(handle)).set_binary_key(true);
                }
                if let Some((_, win_sent)) = stale_from {
                    let mut item = ItemMut(self.slab.chunk_mut(handle));
                    item.set_stale(true);
                    item.set_win_sent(win_sent);
                }
                Outcome::Stored {
                    cas,
                    value_len: Item(self.slab.chunk(handle)).value_len(),
                }
            }
            Err(OutOfMemory) => {
                self.counters.store_no_memory += 1;
                self.drop_stale_on_set_failure(mode, &options, hash, existing);
                Outcome::OutOfMemory
            }
        }
    }

    fn delete(&mut self, hash: KeyHash, key: &[u8], options: DeleteOptions) -> Outcome<&[u8]> {
        let Some(handle) = self.found(hash, key) else {
            self.counters.delete_misses += 1;
            return Outcome::NotFound;
        };
        let item = Item(self.slab.chunk(handle));
        if options.compare_cas.is_some_and(|cas| cas != item.cas()) {
            return Outcome::Exists;
        }
        let class = self.slab.class_of(handle);
        self.class_counters[class].delete_hits += 1;
        self.counters.delete_hits += 1;
        if !options.invalidate && !options.remove_value {
            self.unlink(hash, handle);
            return Outcome::Deleted;
        }
        // md x: an empty item in its place, with md's flags and TTL (none:
        // never expires) and the old CAS (or E); md I: stale, with a new CAS
        // (or E) and md's TTL if given. As memcached.
        let touch_expiry = options.touch.map(|exptime| self.clock.expiry_of(exptime));
        let (old_cas, old_expiry) = (item.cas(), item.expiry());
        let handle = if options.remove_value {
            let expiry = touch_expiry.unwrap_or(NEVER);
            let cas = Some(options.new_cas.unwrap_or(old_cas));
            match self.create(hash, key, [b"", b""], options.client_flags, expiry, cas, Some(handle)) {
                Ok((handle, _)) => handle,
                Err(OutOfMemory) => return Outcome::OutOfMemory,
            }
        } else {
            handle
        };
        if options.invalidate {
            let cas = options.new_cas.unwrap_or_else(|| self.next_cas());
            let expiry = touch_expiry.unwrap_or(if options.remove_value { NEVER } else { old_expiry });
            let mut item = ItemMut(self.slab.chunk_mut(handle));
            item.set_cas(cas);
            item.set_expiry(expiry);
            item.set_stale(true);
            item.set_win_sent(false);
        }
        Outcome::Deleted
    }

    fn touch(&mut self, hash: KeyHash, key: &[u8], exptime: i64) -> Outcome<&[u8]> {
        self.counters.cmd_touch += 1;
        let Some(handle) = self.found(hash, key) else {
            self.counters.touch_misses += 1;
            return Outcome::NotFound;
        };
        let class = self.slab.class_of(handle);
        self.counters.touch_hits += 1;
        self.class_counters[class].touch_hits += 1;
        let expiry = self.clock.expiry_of(exptime);
        let now = self.clock.now;
        self.lru.touch(&mut self.slab, class, handle);
        let mut item = ItemMut(self.slab.chunk_mut(handle));
        item.set_expiry(expiry);
        item.set_last_access(now);
        // memcached's touch is a fetch: the item counts as read.
        item.set_fetched();
        Outcome::Touched { cas: item.view().cas() }
    }

    fn arith(&mut self, hash: KeyHash, key: &[u8], incr: bool, delta: u64, options: ArithOptions) -> Outcome<&[u8]> {
        let Some(handle) = self.found(hash, key) else {
            if incr {
                self.counters.incr_misses += 1;
            } else {
                self.counters.decr_misses += 1;
            }
            return match options.vivify {
                // `exptime` is the parser's pick of N and T (the later one).
                Some((initial, exptime)) => {
                    let expiry = self.clock.expiry_of(exptime);
                    self.store_number(hash, key, initial, 0, expiry, None, options.new_cas)
                }
                None => Outcome::NotFound,
            };
        };
        let item = Item(self.slab.chunk(handle));
        // memcached's order: an empty value is not a number before any CAS
        // is compared, and C0 compares nothing.
        if item.value().is_empty() {
            return Outcome::NonNumeric;
        }
        if options.compare_cas.is_some_and(|cas| cas != 0 && cas != item.cas()) {
            return Outcome::Exists;
        }
        let Some(current) = parse_counter(item.value()) else {
            return Outcome::NonNumeric;
        };
        let class = self.slab.class_of(handle);
        let result = if incr {
            self.counters.incr_hits += 1;
            self.class_counters[class].incr_hits += 1;
            current.wrapping_add(delta)
        } else {
            self.counters.decr_hits += 1;
            self.class_counters[class].decr_hits += 1;
            current.saturating_sub(delta)
        };
        let expiry = match options.touch {
            Some(exptime) => self.clock.expiry_of(exptime),
            None => item.expiry(),
        };
        self.store_number(hash, key, result, item.client_flags(), expiry, Some(handle), options.new_cas)
    }

    /// Writes a counter's new value: in place when it fits the chunk (the
    /// value is the item's tail, so the LRU position is kept), else into a
    /// new item.
    #[allow(clippy::too_many_arguments)]
    fn store_number(
        &mut self,
        hash: KeyHash,
        key: &[u8],
        number: u64,
        client_flags: u32,
        expiry: RelTime,
        existing: Option<u32>,
        new_cas: Option<u64>,
    ) -> Outcome<&[u8]> {
        let previous_ttl = existing.map_or(-1, |handle| self.clock.ttl_of(Item(self.slab.chunk(handle)).expiry()));
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(number).as_bytes();
        // As memcached: a result no longer than the old value overwrites it
        // in place, padded with spaces to the old length.
        let old_len = existing.map_or(0, |handle| Item(self.slab.chunk(handle)).value_len());
        let value_len = digits.len().max(old_len);
        let new_size = item_size(key.len(), value_len, client_flags);
        let ttl = self.clock.ttl_of(expiry);
        if let Some(handle) = existing.filter(|_| digits.len() <= old_len) {
            let cas = new_cas.unwrap_or_else(|| self.next_cas());
            let old_size = Item(self.slab.chunk(handle)).total_size();
            let mut item = ItemMut(self.slab.chunk_mut(handle));
            item.set_value_len(value_len);
            let value = item.value_mut();
            value[..digits.len()].copy_from_slice(digits);
            value[digits.len()..].fill(b' ');
            item.set_cas(cas);
            item.set_expiry(expiry);
            self.bytes = self.bytes - old_size + new_size;
            return Outcome::Number {
                value: number,
                cas,
                ttl,
                previous_ttl,
            };
        }
        match self.create(hash, key, [digits, b""], client_flags, expiry, new_cas, existing) {
            Ok((_, cas)) => Outcome::Number {
                value: number,
                cas,
                ttl,
                previous_ttl,
            },
            Err(OutOfMemory) => {
                self.counters.store_no_memory += 1;
                Outcome::OutOfMemory
            }
        }
    }
}

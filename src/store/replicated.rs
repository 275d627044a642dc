//! What replication asks of a shard: the current state of a key (to log
//! it), the live items in slices (a snapshot), and applying a state that
//! another host decided (keeping its CAS). Expiry crosses hosts as unix time.

use super::clock::RelTime;
use super::item::Item;
use super::shard::{Lookup, OutOfMemory, Shard};
use crate::hash::KeyHash;

/// Chunks one `visit_items` call looks at, live or not.
const MAX_CHUNKS_PER_VISIT: usize = 16 * 1024;

/// A live item as another host should hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemState<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub client_flags: u32,
    /// Unix time of expiry; 0 never expires.
    pub expiry_unix: i64,
    pub cas: u64,
}

impl Shard {
    fn unix_of(&self, rel: RelTime) -> i64 {
        self.clock.unix_now() - i64::from(self.clock.now) + i64::from(rel)
    }

    fn state_of(&self, handle: u32) -> ItemState<'_> {
        let item = Item(self.slab.chunk(handle));
        ItemState {
            key: item.key(),
            value: item.value(),
            client_flags: item.client_flags(),
            expiry_unix: if item.expiry() == 0 { 0 } else { self.unix_of(item.expiry()) },
            cas: item.cas(),
        }
    }

    fn is_live(&self, handle: u32) -> bool {
        let item = Item(self.slab.chunk(handle));
        item.is_linked() && !self.clock.is_expired(item.expiry()) && !self.is_flushed(item)
    }

    /// The key's live item, read without touching LRU, counters or expiry.
    pub fn item_state(&self, hash: KeyHash, key: &[u8]) -> Option<ItemState<'_>> {
        let handle = self.index.find(&self.slab, hash, key)?;
        self.is_live(handle).then(|| self.state_of(handle))
    }

    /// Visits live items from `cursor` on until `budget` bytes of keys and
    /// values were visited. Items keep their place in the slab while
    /// linked, so an item that lives through the whole walk is visited
    /// exactly once. Returns false when the walk is complete.
    pub fn visit_items(&self, cursor: &mut usize, budget: usize, mut visit: impl FnMut(ItemState<'_>)) -> bool {
        let mut spent = 0;
        // Free and dead chunks cost something too: a slab emptied by a flush
        // must not be walked in one go.
        let mut examined = 0;
        while spent < budget && examined < MAX_CHUNKS_PER_VISIT {
            examined += 1;
            let Some(handle) = self.slab.sweep_next(cursor) else {
                return false;
            };
            if self.is_live(handle) {
                let state = self.state_of(handle);
                spent += state.key.len() + state.value.len() + 32;
                visit(state);
            }
        }
        true
    }

    /// Stores an item exactly as another host holds it, CAS included; this
    /// shard's own CAS values stay above every CAS it has applied. With
    /// `keep_newer`, an item held with a larger CAS stays.
    pub fn put_replicated(&mut self, hash: KeyHash, state: ItemState<'_>, keep_newer: bool) -> Replicated {
        self.cas_counter = self.cas_counter.max(state.cas >> 8);
        let existing = match self.lookup(hash, state.key) {
            Lookup::Found(handle) => Some(handle),
            _ => None,
        };
        if keep_newer && existing.is_some_and(|handle| Item(self.slab.chunk(handle)).cas() > state.cas) {
            return Replicated::KeptNewer;
        }
        let expiry = if state.expiry_unix == 0 {
            0
        } else {
            self.clock.expiry_of(state.expiry_unix)
        };
        let created = self.create(
            hash,
            state.key,
            [state.value, b""],
            state.client_flags,
            expiry,
            Some(state.cas),
            existing,
        );
        match created {
            Ok(_) => Replicated::Stored,
            Err(OutOfMemory) => {
                // Like a failed set: the old value must not linger.
                if let Some(handle) = existing {
                    self.unlink(hash, handle);
                }
                Replicated::NoRoom
            }
        }
    }

    /// Removes the key's item, if any.
    pub fn remove_key(&mut self, hash: KeyHash, key: &[u8]) -> bool {
        match self.index.find(&self.slab, hash, key) {
            Some(handle) => {
                self.unlink(hash, handle);
                true
            }
            None => false,
        }
    }

    /// Removes every item whose key hash `doomed` picks (a replica drops
    /// what one primary shard held). Rare, so keys are hashed again here.
    /// Calls `removed` with each key.
    pub fn remove_where(&mut self, doomed: impl Fn(KeyHash, &[u8]) -> bool, mut removed: impl FnMut(&[u8])) -> usize {
        let mut cursor = 0;
        let mut victims = Vec::new();
        while let Some(handle) = self.slab.sweep_next(&mut cursor) {
            let item = Item(self.slab.chunk(handle));
            if item.is_linked() {
                let hash = KeyHash::of(item.key());
                if doomed(hash, item.key()) {
                    removed(item.key());
                    victims.push((hash, handle));
                }
            }
        }
        for &(hash, handle) in &victims {
            self.unlink(hash, handle);
        }
        victims.len()
    }

    /// The shard's clock as unix time (whole seconds).
    pub fn unix_now(&self) -> i64 {
        self.clock.unix_now()
    }

    /// Drops this shard's flush marks (a host that starts following another
    /// must not hide the items it receives behind its own old flush_all).
    pub fn forget_flush(&mut self) {
        // What the marks hide is removed first, so that none of it returns.
        let marks = self.flush_marks();
        self.remove_all(|item| marks.hide(item));
        self.oldest_live = None;
        self.last_flush = None;
        self.flush_before = None;
    }

    /// A replicated delayed flush: items last written before the unix time
    /// `at` die when it comes. By time only, never by CAS.
    pub fn flush_at_unix(&mut self, at: i64) {
        self.oldest_live = Some(self.clock.expiry_of(at).saturating_sub(1));
    }

    /// The unix time at which `flush_all <delay>` takes effect (0: now).
    pub fn flush_effective_unix(&self, delay: i64) -> i64 {
        if delay > 0 {
            self.unix_of(self.clock.expiry_of(delay))
        } else {
            0
        }
    }
}

/// What `put_replicated` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replicated {
    Stored,
    /// An item with a larger CAS was held, and stays.
    KeptNewer,
    /// It did not fit in memory: the key is now absent.
    NoRoom,
}

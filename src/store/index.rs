//! The shard's index: key hash -> item handle. Stores only the 4-byte
//! handle; keys are compared in place in the item, never copied.

use hashbrown::HashTable;

use super::item::Item;
use super::slab::Slab;
use crate::hash::KeyHash;

#[derive(Default)]
pub struct Index {
    table: HashTable<u32>,
}

/// Rehashing on growth reads each key back from its item.
fn rehash(slab: &Slab) -> impl Fn(&u32) -> u64 + '_ {
    move |&handle| KeyHash::of(Item(slab.chunk(handle)).key()).index_hash()
}

impl Index {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes the table itself occupies (buckets and control bytes).
    pub fn memory_bytes(&self) -> usize {
        self.table.allocation_size()
    }

    pub fn find(&self, slab: &Slab, hash: KeyHash, key: &[u8]) -> Option<u32> {
        self.table
            .find(hash.index_hash(), |&handle| Item(slab.chunk(handle)).key() == key)
            .copied()
    }

    /// Adds a handle for a key that is not in the index.
    pub fn insert(&mut self, slab: &Slab, hash: KeyHash, handle: u32) {
        self.table.insert_unique(hash.index_hash(), handle, rehash(slab));
    }

    /// Points the key's entry at a new item.
    pub fn replace(&mut self, hash: KeyHash, old: u32, new: u32) {
        if let Some(entry) = self.table.find_mut(hash.index_hash(), |&handle| handle == old) {
            *entry = new;
        }
    }

    pub fn remove(&mut self, hash: KeyHash, handle: u32) -> bool {
        match self.table.find_entry(hash.index_hash(), |&h| h == handle) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }
}

//! The item: one chunk holding a compact header, the key and the value.
//!
//! ```text
//!  0  prev        u32   LRU links, as handles (u32::MAX = none)
//!  4  next        u32
//!  8  cas         u64
//! 16  expiry      u32   RelTime, 0 = never
//! 20  last_access u32   RelTime
//! 24  value_len   u32   top bit: the key was sent base64 (meta `b`);
//!                         bit 30: the flush generation it was made in
//! 28  key_len     u8
//! 29  bits        u8    LINKED | HAS_FLAGS | ACTIVE | FETCHED | segment<<4
//!                         | STALE | WON (meta invalidation and recache)
//! 30  [client flags u32, only when non-zero]
//!     key, value
//! ```
//!
//! 30 bytes of header (34 with client flags) against memcached's 48-56;
//! client flags are zero for most clients, so they are stored only when set.
//! Fields are read and written unaligned and little-endian.

use super::clock::RelTime;

pub const HEADER_BYTES: usize = 30;
const FLAGS_BYTES: usize = 4;
/// A handle value meaning "no item".
pub const NO_ITEM: u32 = u32::MAX;

const PREV: usize = 0;
const NEXT: usize = 4;
const CAS: usize = 8;
const EXPIRY: usize = 16;
const LAST_ACCESS: usize = 20;
const VALUE_LEN: usize = 24;
const KEY_LEN: usize = 28;
const BITS: usize = 29;
/// In value_len: the client sent the key base64-encoded (values are at
/// most 1 GiB, so the top bit is free).
const BINARY_KEY: u32 = 1 << 31;
/// In value_len: which side of the last `flush_all` the item was made on.
const EPOCH: u32 = 1 << 30;
const LEN_MASK: u32 = !(BINARY_KEY | EPOCH);

const LINKED: u8 = 0x01;
const HAS_FLAGS: u8 = 0x02;
const ACTIVE: u8 = 0x04;
const FETCHED: u8 = 0x08;
const SEGMENT_SHIFT: u8 = 4;
const STALE: u8 = 0x40;
const WON: u8 = 0x80;
const SEGMENT_MASK: u8 = 0x30;

/// Which part of its class's LRU an item sits in (memcached-new_lru.txt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Hot = 0,
    Warm = 1,
    Cold = 2,
}

impl Segment {
    pub const ALL: [Segment; 3] = [Segment::Hot, Segment::Warm, Segment::Cold];
}

/// Bytes an item with this key, value and client flags occupies.
#[inline]
pub fn item_size(key_len: usize, value_len: usize, client_flags: u32) -> usize {
    HEADER_BYTES + if client_flags != 0 { FLAGS_BYTES } else { 0 } + key_len + value_len
}

#[inline]
fn read_u32(chunk: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(chunk[at..at + 4].try_into().unwrap())
}

#[inline]
fn write_u32(chunk: &mut [u8], at: usize, value: u32) {
    chunk[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Read access to an item in its chunk.
#[derive(Clone, Copy)]
pub struct Item<'a>(pub &'a [u8]);

impl<'a> Item<'a> {
    pub fn prev(self) -> u32 {
        read_u32(self.0, PREV)
    }
    pub fn next(self) -> u32 {
        read_u32(self.0, NEXT)
    }
    pub fn cas(self) -> u64 {
        u64::from_le_bytes(self.0[CAS..CAS + 8].try_into().unwrap())
    }
    pub fn expiry(self) -> RelTime {
        read_u32(self.0, EXPIRY)
    }
    pub fn last_access(self) -> RelTime {
        read_u32(self.0, LAST_ACCESS)
    }
    fn bits(self) -> u8 {
        self.0[BITS]
    }
    pub fn is_linked(self) -> bool {
        self.bits() & LINKED != 0
    }
    pub fn is_active(self) -> bool {
        self.bits() & ACTIVE != 0
    }
    pub fn was_fetched(self) -> bool {
        self.bits() & FETCHED != 0
    }
    /// Marked stale by a meta invalidation (mg answers X).
    pub fn is_stale(self) -> bool {
        self.bits() & STALE != 0
    }
    /// A client has been told it won the recache (others get Z).
    pub fn win_sent(self) -> bool {
        self.bits() & WON != 0
    }
    pub fn segment(self) -> Segment {
        match (self.bits() & SEGMENT_MASK) >> SEGMENT_SHIFT {
            0 => Segment::Hot,
            1 => Segment::Warm,
            _ => Segment::Cold,
        }
    }
    fn key_start(self) -> usize {
        HEADER_BYTES + if self.bits() & HAS_FLAGS != 0 { FLAGS_BYTES } else { 0 }
    }
    pub fn client_flags(self) -> u32 {
        if self.bits() & HAS_FLAGS != 0 {
            read_u32(self.0, HEADER_BYTES)
        } else {
            0
        }
    }
    pub fn key_len(self) -> usize {
        usize::from(self.0[KEY_LEN])
    }
    pub fn value_len(self) -> usize {
        (read_u32(self.0, VALUE_LEN) & LEN_MASK) as usize
    }
    /// The flush generation the item was made in.
    pub fn epoch(self) -> bool {
        read_u32(self.0, VALUE_LEN) & EPOCH != 0
    }
    /// The key came base64-encoded (ms with `b`): `k` returns it that way.
    pub fn binary_key(self) -> bool {
        read_u32(self.0, VALUE_LEN) & BINARY_KEY != 0
    }
    pub fn key(self) -> &'a [u8] {
        let start = self.key_start();
        &self.0[start..start + self.key_len()]
    }
    pub fn value(self) -> &'a [u8] {
        let start = self.key_start() + self.key_len();
        &self.0[start..start + self.value_len()]
    }
    /// Bytes this item occupies (memcached's ITEM_ntotal, the `bytes` stat).
    pub fn total_size(self) -> usize {
        self.key_start() + self.key_len() + self.value_len()
    }
}

/// Write access to an item in its chunk.
pub struct ItemMut<'a>(pub &'a mut [u8]);

impl ItemMut<'_> {
    pub fn view(&self) -> Item<'_> {
        Item(self.0)
    }

    /// Lays out a new item; the value is left for the caller to fill via
    /// `value_mut`. Returns with LINKED set and the item in the hot segment.
    pub fn init(&mut self, key: &[u8], value_len: usize, client_flags: u32, expiry: RelTime, cas: u64, now: RelTime) {
        let chunk = &mut *self.0;
        write_u32(chunk, PREV, NO_ITEM);
        write_u32(chunk, NEXT, NO_ITEM);
        chunk[CAS..CAS + 8].copy_from_slice(&cas.to_le_bytes());
        write_u32(chunk, EXPIRY, expiry);
        write_u32(chunk, LAST_ACCESS, now);
        write_u32(chunk, VALUE_LEN, value_len as u32);
        chunk[KEY_LEN] = key.len() as u8;
        let mut bits = LINKED;
        let mut key_start = HEADER_BYTES;
        if client_flags != 0 {
            bits |= HAS_FLAGS;
            write_u32(chunk, HEADER_BYTES, client_flags);
            key_start += FLAGS_BYTES;
        }
        chunk[BITS] = bits;
        chunk[key_start..key_start + key.len()].copy_from_slice(key);
    }

    pub fn value_mut(&mut self) -> &mut [u8] {
        let view = Item(self.0);
        let start = view.key_start() + view.key_len();
        let len = view.value_len();
        &mut self.0[start..start + len]
    }

    pub fn set_prev(&mut self, handle: u32) {
        write_u32(self.0, PREV, handle);
    }
    pub fn set_next(&mut self, handle: u32) {
        write_u32(self.0, NEXT, handle);
    }
    pub fn set_cas(&mut self, cas: u64) {
        self.0[CAS..CAS + 8].copy_from_slice(&cas.to_le_bytes());
    }
    pub fn set_expiry(&mut self, expiry: RelTime) {
        write_u32(self.0, EXPIRY, expiry);
    }
    pub fn set_last_access(&mut self, now: RelTime) {
        write_u32(self.0, LAST_ACCESS, now);
    }
    /// Resizes the value in place (incr/decr); the caller has checked that
    /// the new size fits the chunk.
    pub fn set_value_len(&mut self, len: usize) {
        debug_assert!(Item(self.0).total_size() - Item(self.0).value_len() + len <= self.0.len());
        let marks = read_u32(self.0, VALUE_LEN) & !LEN_MASK;
        write_u32(self.0, VALUE_LEN, len as u32 | marks);
    }
    fn set_len_bit(&mut self, bit: u32, on: bool) {
        let word = read_u32(self.0, VALUE_LEN) & !bit;
        write_u32(self.0, VALUE_LEN, if on { word | bit } else { word });
    }
    pub fn set_binary_key(&mut self, on: bool) {
        self.set_len_bit(BINARY_KEY, on);
    }
    pub fn set_epoch(&mut self, epoch: bool) {
        self.set_len_bit(EPOCH, epoch);
    }
    fn set_bit(&mut self, bit: u8, on: bool) {
        if on {
            self.0[BITS] |= bit;
        } else {
            self.0[BITS] &= !bit;
        }
    }
    pub fn set_active(&mut self, on: bool) {
        self.set_bit(ACTIVE, on);
    }
    pub fn set_fetched(&mut self) {
        self.set_bit(FETCHED, true);
    }
    pub fn set_stale(&mut self, on: bool) {
        self.set_bit(STALE, on);
    }
    pub fn set_win_sent(&mut self, on: bool) {
        self.set_bit(WON, on);
    }
    pub fn set_segment(&mut self, segment: Segment) {
        self.0[BITS] = (self.0[BITS] & !SEGMENT_MASK) | ((segment as u8) << SEGMENT_SHIFT);
    }
    /// Marks the chunk free (the sweeper skips it).
    pub fn clear(&mut self) {
        self.0[BITS] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        for flags in [0u32, 7, u32::MAX] {
            let size = item_size(3, 5, flags);
            assert_eq!(size, HEADER_BYTES + 8 + if flags != 0 { 4 } else { 0 });
            let mut chunk = vec![0u8; size + 10];
            let mut item = ItemMut(&mut chunk);
            item.init(b"foo", 5, flags, 42, 99, 7);
            item.value_mut().copy_from_slice(b"hello");
            item.set_segment(Segment::Cold);
            item.set_active(true);
            let view = item.view();
            assert_eq!(view.key(), b"foo");
            assert_eq!(view.value(), b"hello");
            assert_eq!(view.client_flags(), flags);
            assert_eq!(view.expiry(), 42);
            assert_eq!(view.cas(), 99);
            assert_eq!(view.last_access(), 7);
            assert_eq!(view.segment(), Segment::Cold);
            assert!(view.is_active() && view.is_linked() && !view.was_fetched());
            assert_eq!(view.total_size(), size);
            assert_eq!((view.prev(), view.next()), (NO_ITEM, NO_ITEM));
        }
    }
}

//! The one key hasher. Every key is hashed exactly once per request; the
//! result picks the owning shard (high half) and, rotated, drives the
//! shard's index (so the index's tag bits are not constant within a shard).

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Fixed seed: the same key must land on the same shard on every host and
/// every run (replicas route replicated records with it).
const SEED: u64 = 0x636f_7265_6361_6368; // "corecach"

/// A key's 64-bit hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHash(pub u64);

impl KeyHash {
    pub fn of(key: &[u8]) -> KeyHash {
        KeyHash(xxh3_64_with_seed(key, SEED))
    }

    /// Owning shard among `shards`: a multiply-shift over the high 32 bits,
    /// uniform without a division.
    #[inline]
    pub fn shard(self, shards: usize) -> usize {
        (((self.0 >> 32) * shards as u64) >> 32) as usize
    }

    /// The hash the per-shard index uses. Rotated so that its low bits
    /// (bucket) and top bits (tag) are not the bits that chose the shard.
    #[inline]
    pub fn index_hash(self) -> u64 {
        self.0.rotate_left(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_stable_and_in_range() {
        for shards in 1..9 {
            for i in 0..1000u32 {
                let key = format!("key:{i}");
                let s = KeyHash::of(key.as_bytes()).shard(shards);
                assert!(s < shards);
                assert_eq!(s, KeyHash::of(key.as_bytes()).shard(shards));
            }
        }
    }

    #[test]
    fn keys_spread_over_shards() {
        let shards = 4;
        let mut counts = [0usize; 4];
        for i in 0..40_000u32 {
            counts[KeyHash::of(format!("memtier-{i}").as_bytes()).shard(shards)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn hash_is_fixed_across_builds() {
        // Hosts route by this value: it must never change (seed or algorithm).
        assert_eq!(KeyHash::of(b"foo").0, 4_806_623_798_004_299_296);
        assert_eq!(KeyHash::of(b"memtier-1").0, 13_145_055_501_827_335_257);
        assert_eq!(KeyHash::of(b"foo").shard(2), (4_806_623_798_004_299_296u64 >> 63) as usize);
    }
}

//! Each shard's hottest keys, reads and writes apart, for `stats hotkeys`
//! and /metrics: a Space-Saving top-K over sampled accesses. Per request
//! the cost is a xorshift step and a sample check (random, so that a
//! fixed pattern of keys cannot hide behind a fixed stride); about one
//! access in `SAMPLE_EVERY` is counted, against a small table scanned in
//! place.
//! Counts are kept per second of the shard's clock: a key's rate is its
//! count in the last whole second, times the sampling.

use super::clock::RelTime;

/// About one access in this many is counted (a power of two).
pub const SAMPLE_EVERY: u32 = 8;
/// Keys tracked per kind (the candidates the top is taken from).
const TRACKED: usize = 32;
/// Keys reported per kind and shard.
pub const REPORTED: usize = 10;

/// Whether the access read or wrote the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HotKind {
    Read,
    Write,
}

impl HotKind {
    pub fn name(self) -> &'static str {
        match self {
            HotKind::Read => "read",
            HotKind::Write => "write",
        }
    }
}

/// A hot key as reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotKey {
    pub key: Vec<u8>,
    pub kind: HotKind,
    /// Estimated accesses per second (sampled count times the sampling).
    pub ops_per_sec: u64,
}

#[derive(Debug)]
pub struct HotKeys {
    /// xorshift32 state: which accesses are sampled.
    random: u32,
    /// The second the counts are for.
    second: RelTime,
    reads: TopK,
    writes: TopK,
}

#[derive(Debug, Default)]
struct TopK {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    key: Vec<u8>,
    /// Sampled accesses in the current second.
    count: u32,
    /// In the second before.
    last: u32,
}

impl Default for HotKeys {
    fn default() -> HotKeys {
        HotKeys {
            random: 0x9e37_79b9,
            second: 0,
            reads: TopK::default(),
            writes: TopK::default(),
        }
    }
}

impl HotKeys {
    /// Counts one access of `key` (`hash` is its hash, already computed).
    #[inline]
    pub fn sample(&mut self, now: RelTime, hash: u64, key: &[u8], kind: HotKind) {
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random = x;
        if x & (SAMPLE_EVERY - 1) == 0 {
            self.record(now, hash, key, kind);
        }
    }

    fn record(&mut self, now: RelTime, hash: u64, key: &[u8], kind: HotKind) {
        self.roll(now);
        let table = match kind {
            HotKind::Read => &mut self.reads,
            HotKind::Write => &mut self.writes,
        };
        table.add(hash, key);
    }

    /// Moves the counts on to second `now`.
    fn roll(&mut self, now: RelTime) {
        if now <= self.second {
            return;
        }
        let adjacent = now == self.second + 1;
        for entry in self.reads.entries.iter_mut().chain(self.writes.entries.iter_mut()) {
            entry.last = if adjacent { entry.count } else { 0 };
            entry.count = 0;
        }
        self.second = now;
    }

    /// The hottest keys of each kind at `now`, hottest first.
    pub fn hottest(&self, now: RelTime) -> Vec<HotKey> {
        let rate = |entry: &Entry| match now.checked_sub(self.second) {
            Some(0) => entry.last,
            Some(1) => entry.count,
            _ => 0,
        };
        let mut hot = Vec::new();
        for (kind, table) in [(HotKind::Read, &self.reads), (HotKind::Write, &self.writes)] {
            let mut keys: Vec<HotKey> = table
                .entries
                .iter()
                .filter(|entry| rate(entry) > 0)
                .map(|entry| HotKey {
                    key: entry.key.clone(),
                    kind,
                    ops_per_sec: u64::from(rate(entry)) * u64::from(SAMPLE_EVERY),
                })
                .collect();
            keys.sort_by(|a, b| b.ops_per_sec.cmp(&a.ops_per_sec).then_with(|| a.key.cmp(&b.key)));
            keys.truncate(REPORTED);
            hot.extend(keys);
        }
        hot
    }
}

impl TopK {
    fn add(&mut self, hash: u64, key: &[u8]) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.hash == hash && e.key == key) {
            entry.count += 1;
            return;
        }
        if self.entries.len() < TRACKED {
            self.entries.push(Entry {
                hash,
                key: key.to_vec(),
                count: 1,
                last: 0,
            });
            return;
        }
        // Space-Saving: the least counted makes room (its buffer reused).
        let coldest = self.entries.iter_mut().min_by_key(|e| e.count + e.last).expect("TRACKED > 0");
        coldest.hash = hash;
        coldest.key.clear();
        coldest.key.extend_from_slice(key);
        coldest.count = 1;
        coldest.last = 0;
    }
}

/// Merges shards' reports: the hottest `REPORTED` of each kind, hottest
/// first (shards hold disjoint keys, so nothing is counted twice).
pub fn merge(into: &mut Vec<HotKey>, other: &[HotKey]) {
    into.extend_from_slice(other);
    into.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then(b.ops_per_sec.cmp(&a.ops_per_sec))
            .then_with(|| a.key.cmp(&b.key))
    });
    let mut kept = [0usize; 2];
    into.retain(|hot| {
        let seen = &mut kept[hot.kind as usize];
        *seen += 1;
        *seen <= REPORTED
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Vec<u8> {
        format!("key:{i}").into_bytes()
    }

    /// Accesses in second `now`, `rates[i]` of key i.
    fn run(hot: &mut HotKeys, now: RelTime, rates: &[(u32, u32, HotKind)]) {
        // Interleaved, as traffic arrives.
        let most = rates.iter().map(|r| r.1).max().unwrap_or(0);
        for round in 0..most {
            for &(i, rate, kind) in rates {
                if round < rate {
                    hot.sample(now, u64::from(i), &key(i), kind);
                }
            }
        }
    }

    #[test]
    fn the_heavy_hitters_are_named_with_their_rates_among_many_cold_keys() {
        let mut hot = HotKeys::default();
        for second in 1..=3 {
            let mut rates = vec![(0, 8000, HotKind::Read), (1, 4000, HotKind::Read), (2, 2400, HotKind::Write)];
            // 2,000 cold keys, 8 accesses each.
            rates.extend((100..2100).map(|i| (i, 8, HotKind::Read)));
            run(&mut hot, second, &rates);
        }
        let top = hot.hottest(4);
        let rate = |i: u32, kind| top.iter().find(|h| h.key == key(i) && h.kind == kind).map(|h| h.ops_per_sec);
        // Sampled: within 15% (the sample of 1,000 a second has ~3% spread).
        let near = |got: Option<u64>, want: u64| got.is_some_and(|g| g.abs_diff(want) * 100 <= want * 15);
        assert!(near(rate(0, HotKind::Read), 8000), "{top:?}");
        assert!(near(rate(1, HotKind::Read), 4000), "{top:?}");
        assert!(near(rate(2, HotKind::Write), 2400), "{top:?}");
        assert_eq!(top[0].key, key(0));
        assert!(top.iter().filter(|h| h.kind == HotKind::Read).count() <= REPORTED);
        // Nothing since: the rates fade.
        assert!(hot.hottest(6).is_empty());
    }

    #[test]
    fn merged_reports_keep_the_hottest_of_each_kind() {
        let hot = |i: u32, kind, ops_per_sec| HotKey {
            key: key(i),
            kind,
            ops_per_sec,
        };
        let mut merged: Vec<HotKey> = (0..REPORTED as u32)
            .map(|i| hot(i, HotKind::Read, 100 + u64::from(i)))
            .collect();
        let other: Vec<HotKey> = vec![hot(50, HotKind::Read, 1000), hot(51, HotKind::Write, 5)];
        merge(&mut merged, &other);
        assert_eq!(merged.len(), REPORTED + 1);
        assert_eq!(merged[0], hot(50, HotKind::Read, 1000));
        assert!(!merged.contains(&hot(0, HotKind::Read, 100)), "the coldest read made room");
        assert_eq!(merged.last(), Some(&hot(51, HotKind::Write, 5)));
    }
}

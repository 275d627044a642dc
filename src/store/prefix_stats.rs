//! `stats detail`: counts of gets, hits, sets and deletes per key prefix
//! (the key up to the first delimiter, `-D`, ':' by default), kept only
//! while an operator has turned them on, as memcached's stats_prefix.

use std::collections::HashMap;

/// One prefix's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCounts {
    pub gets: u64,
    pub hits: u64,
    pub sets: u64,
    pub deletes: u64,
}

impl PrefixCounts {
    pub fn add(&mut self, other: &PrefixCounts) {
        self.gets += other.gets;
        self.hits += other.hits;
        self.sets += other.sets;
        self.deletes += other.deletes;
    }
}

/// What a key operation did, as `stats detail` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Get { hit: bool },
    Set,
    Delete,
}

#[derive(Debug, Default)]
pub struct PrefixStats {
    /// The delimiter while recording is on.
    delimiter: Option<u8>,
    counts: HashMap<Vec<u8>, PrefixCounts>,
}

impl PrefixStats {
    pub fn is_on(&self) -> bool {
        self.delimiter.is_some()
    }

    /// Turns recording on (with this delimiter) or off; counts are kept.
    pub fn set(&mut self, delimiter: Option<u8>) {
        self.delimiter = delimiter;
    }

    /// Counts an access to `key`. Keys without the delimiter have no
    /// prefix and are not counted.
    pub fn record(&mut self, key: &[u8], access: Access) {
        let Some(delimiter) = self.delimiter else { return };
        let Some(end) = key.iter().position(|&b| b == delimiter) else {
            return;
        };
        let prefix = &key[..end];
        let counts = match self.counts.get_mut(prefix) {
            Some(counts) => counts,
            None => self.counts.entry(prefix.to_vec()).or_default(),
        };
        match access {
            Access::Get { hit } => {
                counts.gets += 1;
                counts.hits += u64::from(hit);
            }
            Access::Set => counts.sets += 1,
            Access::Delete => counts.deletes += 1,
        }
    }

    pub fn clear(&mut self) {
        self.counts.clear();
    }

    pub fn counts(&self) -> impl Iterator<Item = (&[u8], &PrefixCounts)> {
        self.counts.iter().map(|(prefix, counts)| (&prefix[..], counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_prefix_only_while_on() {
        let mut stats = PrefixStats::default();
        stats.record(b"foo:1", Access::Set);
        assert_eq!(stats.counts().count(), 0, "off by default");
        stats.set(Some(b':'));
        stats.record(b"foo:1", Access::Set);
        stats.record(b"foo:2", Access::Get { hit: false });
        stats.record(b"foo:1", Access::Get { hit: true });
        stats.record(b"foo:3", Access::Delete);
        stats.record(b"nodelimiter", Access::Set);
        let all: Vec<_> = stats.counts().map(|(p, c)| (p.to_vec(), *c)).collect();
        assert_eq!(
            all,
            vec![(
                b"foo".to_vec(),
                PrefixCounts {
                    gets: 2,
                    hits: 1,
                    sets: 1,
                    deletes: 1
                }
            )]
        );
        stats.set(None);
        stats.record(b"foo:1", Access::Set);
        assert_eq!(stats.counts().next().unwrap().1.sets, 1, "off again: kept, not counted");
        stats.clear();
        assert_eq!(stats.counts().count(), 0);
    }
}

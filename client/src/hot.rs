//! Hot keys on the client side, as plain code: which keys are hot (from
//! the servers' `stats hotkeys`), where a hot key's read goes (spread over
//! the live copies of its preference list, and for the hottest over
//! `key#1..#n` extra copies the ring places elsewhere), and increments of
//! a counter coalesced over a window.

use std::collections::HashMap;

/// When keys count as hot, and what is done for them. Off unless set in
/// `Config::hot_keys`.
#[derive(Clone, Debug, PartialEq)]
pub struct HotKeyConfig {
    /// Reads per second (as a server estimates them) above which a key's
    /// reads are spread over the live members of its preference list.
    pub spread_above: u64,
    /// Reads per second above which a key also gets `extra_copies` copies
    /// `key#1..#n`, written with the key by this client.
    pub copies_above: u64,
    /// Extra copies of the hottest keys (0: none).
    pub extra_copies: u32,
    /// The longest an extra copy lives (seconds): it trails the key by at
    /// most this much if a write of the key does not reach it.
    pub copy_ttl: u32,
}

impl Default for HotKeyConfig {
    fn default() -> HotKeyConfig {
        HotKeyConfig {
            spread_above: 500,
            copies_above: 5_000,
            extra_copies: 2,
            copy_ttl: 30,
        }
    }
}

/// How hot a key is, as this client knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heat {
    Cold,
    /// Reads spread over its preference list.
    Spread,
    /// Also over its extra copies.
    Copied,
}

/// The hot keys last reported by the servers, and a rotation per key so
/// successive reads go to successive copies.
#[derive(Debug, Default)]
pub struct HotKeys {
    reads: HashMap<Vec<u8>, u64>,
    turn: u64,
}

impl HotKeys {
    /// Replaces the known hot keys with the `read:<key>` lines of every
    /// node's `stats hotkeys` (each a node's own keys, or copies it serves).
    pub fn learn<'a>(&mut self, stats: impl IntoIterator<Item = &'a (String, String)>) {
        self.reads.clear();
        for (name, value) in stats {
            if let (Some(key), Ok(rate)) = (name.strip_prefix("read:"), value.parse::<u64>()) {
                let known = self.reads.entry(key.as_bytes().to_vec()).or_insert(0);
                *known = (*known).max(rate);
            }
        }
    }

    /// How hot `key` was at the last report, by `config`'s thresholds.
    pub fn heat(&self, config: &HotKeyConfig, key: &[u8]) -> Heat {
        match self.reads.get(key) {
            Some(&rate) if rate > config.copies_above && config.extra_copies > 0 => Heat::Copied,
            Some(&rate) if rate > config.spread_above => Heat::Spread,
            _ => Heat::Cold,
        }
    }

    /// The next of `choices` in turn (spreading reads evenly).
    pub fn next(&mut self, choices: usize) -> usize {
        self.turn = self.turn.wrapping_add(1);
        (self.turn % choices.max(1) as u64) as usize
    }

    /// The keys reported hot, hottest first.
    pub fn hottest(&self) -> Vec<(Vec<u8>, u64)> {
        let mut keys: Vec<(Vec<u8>, u64)> = self.reads.iter().map(|(k, &r)| (k.clone(), r)).collect();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys
    }
}

/// The name of extra copy `i` (1-based) of `key`: `key#i`, if that is still
/// a valid key.
pub fn copy_key(key: &[u8], i: u32) -> Option<Vec<u8>> {
    let mut name = key.to_vec();
    name.push(b'#');
    name.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    crate::codec::valid_key(&name).then_some(name)
}

/// Increments waiting to be sent, one sum per key.
#[derive(Debug, Default)]
pub struct CounterBatch {
    pending: Vec<(Vec<u8>, u64)>,
    /// Increments taken since the last drain.
    increments: u64,
}

impl CounterBatch {
    /// Adds `delta` to what `key` will be incremented by.
    pub fn add(&mut self, key: &[u8], delta: u64) {
        self.increments += 1;
        match self.pending.iter_mut().find(|(k, _)| k == key) {
            Some((_, sum)) => *sum = sum.saturating_add(delta),
            None => self.pending.push((key.to_vec(), delta)),
        }
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The sums to send, and how many increments they stand for.
    pub fn drain(&mut self) -> (Vec<(Vec<u8>, u64)>, u64) {
        let increments = std::mem::take(&mut self.increments);
        (std::mem::take(&mut self.pending), increments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_rates_make_keys_spread_then_copied() {
        let config = HotKeyConfig::default();
        let mut hot = HotKeys::default();
        let stats = [
            ("sample_every".to_string(), "8".to_string()),
            ("read:a".to_string(), "600".to_string()),
            ("read:b".to_string(), "9000".to_string()),
            ("write:c".to_string(), "9000".to_string()),
            ("read:a".to_string(), "700".to_string()),
        ];
        hot.learn(&stats);
        assert_eq!(hot.heat(&config, b"a"), Heat::Spread);
        assert_eq!(hot.heat(&config, b"b"), Heat::Copied);
        assert_eq!(hot.heat(&config, b"c"), Heat::Cold, "hot writes are not spread");
        assert_eq!(hot.hottest(), [(b"b".to_vec(), 9000), (b"a".to_vec(), 700)]);
        let no_copies = HotKeyConfig {
            extra_copies: 0,
            ..config
        };
        assert_eq!(hot.heat(&no_copies, b"b"), Heat::Spread);
        hot.learn(&[]);
        assert_eq!(hot.heat(&config, b"b"), Heat::Cold, "a new report replaces the old");
    }

    #[test]
    fn turns_cycle_over_the_choices() {
        let mut hot = HotKeys::default();
        let picks: Vec<usize> = (0..6).map(|_| hot.next(3)).collect();
        let mut counts = [0; 3];
        picks.iter().for_each(|&p| counts[p] += 1);
        assert_eq!(counts, [2, 2, 2]);
    }

    #[test]
    fn copies_are_named_with_a_suffix_while_the_key_stays_valid() {
        assert_eq!(copy_key(b"user:1", 2), Some(b"user:1#2".to_vec()));
        assert_eq!(copy_key(&[b'k'; 249], 1), None, "251 bytes");
    }

    #[test]
    fn increments_of_a_key_sum_into_one() {
        let mut batch = CounterBatch::default();
        for _ in 0..10_000 {
            batch.add(b"hits", 1);
        }
        batch.add(b"other", 5);
        let (sums, increments) = batch.drain();
        assert_eq!(sums, [(b"hits".to_vec(), 10_000), (b"other".to_vec(), 5)]);
        assert_eq!(increments, 10_001);
        assert!(batch.is_empty());
    }
}

//! The key space: which key index comes next, and how an index is spelled.

use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};

/// How keys are picked from the key space.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyPattern {
    Uniform,
    /// Zipf with this exponent: rank r is picked in proportion to 1/r^s.
    Zipf(f64),
    /// 0, 1, 2, ... wrapping around.
    Sequential,
}

/// Picks key indexes in `0..count`.
pub struct KeyChooser {
    count: u64,
    pattern: KeyPattern,
    zipf: Option<Zipf<f64>>,
    next: u64,
}

impl KeyChooser {
    /// `start` offsets sequential walks so connections do not move in lockstep.
    pub fn new(count: u64, pattern: KeyPattern, start: u64) -> KeyChooser {
        let zipf = match pattern {
            KeyPattern::Zipf(exponent) => Some(Zipf::new(count, exponent).expect("valid zipf parameters")),
            _ => None,
        };
        KeyChooser {
            count,
            pattern,
            zipf,
            next: start % count.max(1),
        }
    }

    pub fn next(&mut self, rng: &mut SmallRng) -> u64 {
        match self.pattern {
            KeyPattern::Uniform => rng.gen_range(0..self.count),
            // Zipf samples ranks 1..=count; rank 1 is the hottest key, index 0.
            KeyPattern::Zipf(_) => self.zipf.as_ref().expect("zipf").sample(rng) as u64 - 1,
            KeyPattern::Sequential => {
                let index = self.next;
                self.next = (self.next + 1) % self.count;
                index
            }
        }
    }
}

/// Spells key indexes: prefix, then the index zero-padded to `length`.
#[derive(Clone, Debug)]
pub struct KeyFormat {
    pub prefix: String,
    pub length: usize,
}

impl KeyFormat {
    pub fn write(&self, index: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix.as_bytes());
        let digits = self.length.saturating_sub(self.prefix.len()).max(1);
        let mut number = itoa::Buffer::new();
        let number = number.format(index);
        for _ in number.len()..digits {
            out.push(b'0');
        }
        out.extend_from_slice(number.as_bytes());
    }

    pub fn key(&self, index: u64) -> Vec<u8> {
        let mut key = Vec::new();
        self.write(index, &mut key);
        key
    }

    /// The index a key spells, if it is one of ours.
    pub fn index_of(&self, key: &[u8]) -> Option<u64> {
        let digits = key.strip_prefix(self.prefix.as_bytes())?;
        if digits.is_empty() || digits.len() > 19 {
            return None;
        }
        digits
            .iter()
            .try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zipf_really_is_zipf() {
        let mut rng = SmallRng::seed_from_u64(7);
        let exponent = 1.0;
        let mut chooser = KeyChooser::new(1000, KeyPattern::Zipf(exponent), 0);
        let mut counts = vec![0u64; 1000];
        let samples = 2_000_000;
        for _ in 0..samples {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        // Frequency of rank r is proportional to 1/r^s: check ranks 1..10
        // against rank 1 within 5%.
        for rank in 2..=10usize {
            let expected = counts[0] as f64 / (rank as f64).powf(exponent);
            let got = counts[rank - 1] as f64;
            assert!((got / expected - 1.0).abs() < 0.05, "rank {rank}: {got} vs {expected}");
        }
        // And the head holds the expected share: H(10)/H(1000) for s = 1.
        let harmonic = |n: usize| (1..=n).map(|r| 1.0 / r as f64).sum::<f64>();
        let head_share = counts[..10].iter().sum::<u64>() as f64 / samples as f64;
        assert!(
            (head_share - harmonic(10) / harmonic(1000)).abs() < 0.01,
            "head share {head_share}"
        );
    }

    #[test]
    fn uniform_covers_the_space_evenly() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut chooser = KeyChooser::new(10, KeyPattern::Uniform, 0);
        let mut counts = [0u64; 10];
        for _ in 0..100_000 {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn sequential_wraps_from_its_start() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut chooser = KeyChooser::new(3, KeyPattern::Sequential, 2);
        let picks: Vec<u64> = (0..5).map(|_| chooser.next(&mut rng)).collect();
        assert_eq!(picks, vec![2, 0, 1, 2, 0]);
    }

    #[test]
    fn keys_are_padded_and_parse_back() {
        let format = KeyFormat {
            prefix: "key:".into(),
            length: 12,
        };
        assert_eq!(format.key(42), b"key:00000042");
        assert_eq!(format.index_of(b"key:00000042"), Some(42));
        assert_eq!(format.index_of(b"other"), None);
    }
}

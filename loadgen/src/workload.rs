//! The operation mix and the values: what each request does.

use rand::Rng;
use rand::rngs::SmallRng;

use crate::keys::KeyChooser;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Get,
    Set,
    Delete,
    Incr,
}

impl OpKind {
    pub const ALL: [OpKind; 4] = [OpKind::Get, OpKind::Set, OpKind::Delete, OpKind::Incr];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Set => "set",
            OpKind::Delete => "delete",
            OpKind::Incr => "incr",
        }
    }
}

/// Relative weights of the operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub get: u32,
    pub set: u32,
    pub delete: u32,
    pub incr: u32,
}

impl Mix {
    fn pick(&self, rng: &mut SmallRng) -> OpKind {
        let total = self.get + self.set + self.delete + self.incr;
        let mut roll = rng.gen_range(0..total);
        for (kind, weight) in [
            (OpKind::Get, self.get),
            (OpKind::Set, self.set),
            (OpKind::Delete, self.delete),
        ] {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        OpKind::Incr
    }
}

/// Value sizes: fixed, or a range where each key has its own stable size
/// (so a verified get knows the length to expect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl ValueSize {
    pub fn of(&self, key: u64) -> usize {
        if self.max <= self.min {
            return self.min;
        }
        let spread = (self.max - self.min + 1) as u64;
        self.min + (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % spread as usize
    }
}

/// The bytes stored under key `index`: deterministic, so any reader can
/// check them.
pub fn value_of(index: u64, length: usize, out: &mut Vec<u8>) {
    let cycle = value_cycle(index);
    let mut left = length;
    while left > 0 {
        let take = left.min(cycle.len());
        out.extend_from_slice(&cycle[..take]);
        left -= take;
    }
}

/// Whether `data` is what `value_of` stores under key `index`.
pub fn value_matches(index: u64, length: usize, data: &[u8]) -> bool {
    let cycle = value_cycle(index);
    data.len() == length && data.chunks(cycle.len()).all(|chunk| chunk == &cycle[..chunk.len()])
}

/// A value is the alphabet from the key's letter on, over and over.
fn value_cycle(index: u64) -> &'static [u8] {
    const TWICE: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz";
    let start = (index % 26) as usize;
    &TWICE[start..start + 26]
}

/// One request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    /// The key (several for a multi-get).
    pub keys: Vec<u64>,
}

/// A connection's stream of operations.
pub struct Workload {
    pub mix: Mix,
    pub chooser: KeyChooser,
    /// Keys per get (1 is a single-key get).
    pub multiget: usize,
}

impl Workload {
    /// The next operation; `op` is reused to avoid an allocation per request.
    pub fn next(&mut self, rng: &mut SmallRng, op: &mut Op) {
        op.kind = self.mix.pick(rng);
        op.keys.clear();
        let count = if op.kind == OpKind::Get { self.multiget } else { 1 };
        for _ in 0..count {
            op.keys.push(self.chooser.next(rng));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPattern;
    use rand::SeedableRng;

    #[test]
    fn the_mix_follows_its_weights() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut workload = Workload {
            mix: Mix {
                get: 10,
                set: 1,
                delete: 0,
                incr: 1,
            },
            chooser: KeyChooser::new(100, KeyPattern::Uniform, 0),
            multiget: 3,
        };
        let mut op = Op {
            kind: OpKind::Get,
            keys: Vec::new(),
        };
        let mut counts = std::collections::HashMap::new();
        for _ in 0..120_000 {
            workload.next(&mut rng, &mut op);
            *counts.entry(op.kind).or_insert(0u64) += 1;
            assert_eq!(op.keys.len(), if op.kind == OpKind::Get { 3 } else { 1 });
        }
        assert!((98_000..102_000).contains(&counts[&OpKind::Get]));
        assert!((9_000..11_000).contains(&counts[&OpKind::Set]));
        assert!(!counts.contains_key(&OpKind::Delete));
    }

    #[test]
    fn value_sizes_are_stable_per_key() {
        let sizes = ValueSize { min: 10, max: 20 };
        for key in 0..1000 {
            let size = sizes.of(key);
            assert!((10..=20).contains(&size));
            assert_eq!(size, sizes.of(key));
        }
        let mut value = Vec::new();
        value_of(1, 5, &mut value);
        assert_eq!(value, b"bcdef");
    }
}

//! A shard's replication backlog on the replication core: the newest
//! `capacity` bytes of the shard's log, addressed by log offset (bytes
//! appended since the log began). A replica whose offset has left the
//! backlog can only be brought back by a full resync.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Chunk arrival times kept for lag measurement (oldest dropped first).
const MAX_MARKS: usize = 65_536;

pub struct Backlog {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Offset of the first byte held.
    start: u64,
    /// When each appended chunk ended at which offset.
    marks: VecDeque<(u64, Instant)>,
}

impl Backlog {
    pub fn new(capacity: usize) -> Backlog {
        Backlog {
            bytes: VecDeque::new(),
            capacity: capacity.max(1),
            start: 0,
            marks: VecDeque::new(),
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset just past the last byte appended.
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Appends a chunk of records that begins at `offset`. A chunk that does
    /// not continue the log (the shard dropped bytes it could not hand over)
    /// restarts the backlog there: every replica behind it resyncs fully.
    pub fn append(&mut self, offset: u64, chunk: &[u8], now: Instant) {
        if offset != self.end() {
            self.bytes.clear();
            self.marks.clear();
            self.start = offset;
        }
        self.bytes.extend(chunk);
        let excess = self.bytes.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.start += excess as u64;
        }
        if !chunk.is_empty() {
            self.marks.push_back((self.end(), now));
        }
        while self.marks.len() > MAX_MARKS || self.marks.front().is_some_and(|&(end, _)| end <= self.start) {
            self.marks.pop_front();
        }
    }

    /// Whether a replica at `offset` can continue from here.
    pub fn holds(&self, offset: u64) -> bool {
        (self.start..=self.end()).contains(&offset)
    }

    /// Copies up to `max` bytes from `offset` into `out`; how many it copied.
    /// `offset` must be held.
    pub fn read(&self, offset: u64, max: usize, out: &mut Vec<u8>) -> usize {
        debug_assert!(self.holds(offset));
        let from = (offset - self.start) as usize;
        let to = (from + max).min(self.bytes.len());
        let (front, back) = self.bytes.as_slices();
        let mut copy = |slice: &[u8], base: usize| {
            let (a, b) = (from.max(base), to.min(base + slice.len()));
            if a < b {
                out.extend_from_slice(&slice[a - base..b - base]);
            }
        };
        copy(front, 0);
        copy(back, front.len());
        to - from
    }

    /// How long ago the first byte after `offset` arrived (zero if none is
    /// waiting): a replica's lag in time.
    pub fn age_after(&self, offset: u64, now: Instant) -> Duration {
        if offset >= self.end() {
            return Duration::ZERO;
        }
        let index = self.marks.partition_point(|&(end, _)| end <= offset);
        self.marks
            .get(index)
            .map_or(Duration::ZERO, |&(_, at)| now.saturating_duration_since(at))
    }

    /// When the chunk ending at or before `offset` arrived, if it is still marked.
    pub fn arrival_before(&self, offset: u64) -> Option<(u64, Instant)> {
        let index = self.marks.partition_point(|&(end, _)| end <= offset);
        index.checked_sub(1).map(|index| self.marks[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_by_offset_across_the_ring_seam() {
        let now = Instant::now();
        let mut backlog = Backlog::new(8);
        backlog.append(0, b"abcdef", now);
        backlog.append(6, b"ghij", now);
        assert_eq!((backlog.start(), backlog.end()), (2, 10));
        assert!(!backlog.holds(1));
        assert!(backlog.holds(2) && backlog.holds(10));
        let mut out = Vec::new();
        assert_eq!(backlog.read(3, 100, &mut out), 7);
        assert_eq!(out, b"defghij");
        out.clear();
        assert_eq!(backlog.read(4, 3, &mut out), 3);
        assert_eq!(out, b"efg");
    }

    #[test]
    fn a_gap_restarts_the_backlog() {
        let now = Instant::now();
        let mut backlog = Backlog::new(100);
        backlog.append(0, b"abc", now);
        backlog.append(50, b"xyz", now);
        assert_eq!((backlog.start(), backlog.end()), (50, 53));
        assert!(!backlog.holds(3), "a replica at 3 must resync fully");
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_unacknowledged_chunk() {
        let start = Instant::now();
        let mut backlog = Backlog::new(100);
        backlog.append(0, b"aaaa", start);
        backlog.append(4, b"bbbb", start + Duration::from_millis(10));
        let later = start + Duration::from_millis(30);
        assert_eq!(backlog.age_after(0, later), Duration::from_millis(30));
        assert_eq!(backlog.age_after(4, later), Duration::from_millis(20));
        assert_eq!(backlog.age_after(8, later), Duration::ZERO);
        assert_eq!(backlog.arrival_before(5), Some((4, start)));
        assert_eq!(backlog.arrival_before(3), None);
    }
}

//! Which ring places the givers of a list change's handoffs, per segment
//! of the key space. After one change it is the ring from before it,
//! everywhere. A change made while an earlier one's handoffs go on keeps
//! that earlier ring only where its handoff had not ended when the new
//! change came; where it had, the keys are with their receiver, so the
//! ring the receiver acted by then places the giver of the new change.

use super::ring::{Point, Ring};

#[derive(Clone, Debug)]
pub struct Givers {
    rings: Vec<Ring>,
    /// (segment end, index into `rings`), sorted by point: a segment runs
    /// from the previous end (exclusive; the last wraps round) to its own.
    segments: Vec<(Point, u8)>,
}

impl Givers {
    /// One ring for the whole key space.
    pub fn of(ring: Ring) -> Givers {
        Givers {
            rings: vec![ring],
            segments: vec![(Point::MAX, 0)],
        }
    }

    /// The ring placing the giver of a key at `point`.
    #[inline]
    pub fn ring_at(&self, point: Point) -> &Ring {
        &self.rings[self.index_at(point)]
    }

    fn index_at(&self, point: Point) -> usize {
        // The last segment ends at Point::MAX: every point has one.
        let index = self.segments.partition_point(|&(end, _)| end < point);
        usize::from(self.segments[index].1)
    }

    /// Every point where what the rings say may change: their points and
    /// the segments' ends.
    pub fn boundaries(&self) -> impl Iterator<Item = Point> + '_ {
        self.rings
            .iter()
            .flat_map(|ring| ring.points().iter().map(|&(point, _)| point))
            .chain(self.segments.iter().map(|&(end, _)| end))
    }

    /// `current` where `keeps_earlier(point)` is false, these givers' ring
    /// where it is true, for the segments ending at `ends` (sorted, with
    /// every boundary of `current` and of these givers among them, so that
    /// each segment has one answer).
    pub fn for_change(&self, current: &Ring, ends: &[Point], keeps_earlier: impl Fn(Point) -> bool) -> Givers {
        let mut rings = vec![current.clone()];
        // Where each of these rings went in `rings` (the same as `current`: 0).
        let mut moved: Vec<Option<usize>> = self.rings.iter().map(|ring| same(ring, current).then_some(0)).collect();
        let mut segments: Vec<(Point, u8)> = Vec::with_capacity(ends.len());
        for &end in ends {
            let index = if keeps_earlier(end) {
                let earlier = self.index_at(end);
                *moved[earlier].get_or_insert_with(|| {
                    rings.push(self.rings[earlier].clone());
                    rings.len() - 1
                })
            } else {
                0
            };
            match segments.last_mut() {
                // One segment for a run of the same ring.
                Some((last, ring)) if usize::from(*ring) == index => *last = end,
                _ => segments.push((end, index as u8)),
            }
        }
        // The last segment runs to the end of the key space, and wraps round
        // into the first (whose ring is the same on both sides of the wrap:
        // every ring's owner there is its first point's).
        match segments.first() {
            Some(&(_, first)) => segments.push((Point::MAX, first)),
            None => segments.push((Point::MAX, 0)),
        }
        Givers { rings, segments }
    }
}

fn same(a: &Ring, b: &Ring) -> bool {
    a.points() == b.points()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ring::NodeAddress;

    fn ring(hosts: &[&str]) -> Ring {
        let nodes: Vec<NodeAddress> = hosts
            .iter()
            .map(|host| NodeAddress {
                host: host.to_string(),
                port: 11211,
                weight: 1,
            })
            .collect();
        Ring::new(&nodes)
    }

    #[test]
    fn each_segment_keeps_the_earlier_ring_only_where_asked() {
        let (first, second) = (ring(&["a", "b"]), ring(&["a", "b", "c"]));
        let givers = Givers::of(first.clone());
        let mut ends: Vec<Point> = givers.boundaries().chain(second.points().iter().map(|&(p, _)| p)).collect();
        ends.sort_unstable();
        ends.dedup();
        let split = ends[ends.len() / 2];
        let changed = givers.for_change(&second, &ends, |point| point <= split);
        for point in (0..=u32::MAX).step_by(1 << 20).chain([0, split, split + 1, u32::MAX]) {
            let expected = if point <= split || point > *ends.last().unwrap() {
                // Past the last end, the key space wraps to the first segment.
                &first
            } else {
                &second
            };
            assert!(same(changed.ring_at(point), expected), "point {point}");
        }
        // Nothing kept: one ring, everywhere.
        let none = givers.for_change(&second, &ends, |_| false);
        assert_eq!(none.rings.len(), 1);
        assert!(same(none.ring_at(split), &second));
    }
}

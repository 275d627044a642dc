//! Segmented LRU per slab class (memcached-new_lru.txt): new items enter
//! HOT; HOT and WARM are capped shares of the class; their tails flow to
//! COLD (or back to WARM when active) when the class must evict, which is
//! when the order matters (memcached juggles in a background thread). A hit only sets the ACTIVE bit,
//! except in COLD, where it moves the item to WARM. Evictions take COLD's
//! tail first. Links are u32 handles kept in the item headers.

use super::item::{Item, ItemMut, NO_ITEM, Segment};
use super::slab::Slab;

/// Share of a class's items allowed in HOT and WARM (memcached's defaults).
const HOT_PERCENT: usize = 20;
const WARM_PERCENT: usize = 40;
/// Tail moves per eviction: bounds the work a single request does.
const MAX_MOVES_PER_BALANCE: usize = 8;
/// Moves allowed to find COLD an item when it is empty; past this the
/// eviction takes WARM's or HOT's tail instead.
const MAX_MOVES_TO_FILL_COLD: usize = 256;

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

const EMPTY: List = List {
    head: NO_ITEM,
    tail: NO_ITEM,
    len: 0,
};

pub struct Lru {
    lists: Vec<[List; 3]>,
}

impl Lru {
    pub fn new(classes: usize) -> Lru {
        Lru {
            lists: vec![[EMPTY; 3]; classes],
        }
    }

    pub fn len(&self, class: usize, segment: Segment) -> usize {
        self.lists[class][segment as usize].len
    }

    pub fn class_len(&self, class: usize) -> usize {
        self.lists[class].iter().map(|list| list.len).sum()
    }

    /// The least recently used item of a segment.
    pub fn tail(&self, class: usize, segment: Segment) -> Option<u32> {
        let tail = self.lists[class][segment as usize].tail;
        (tail != NO_ITEM).then_some(tail)
    }

    pub fn link(&mut self, slab: &mut Slab, class: usize, segment: Segment, handle: u32) {
        let list = &mut self.lists[class][segment as usize];
        let old_head = list.head;
        {
            let mut item = ItemMut(slab.chunk_mut(handle));
            item.set_prev(NO_ITEM);
            item.set_next(old_head);
            item.set_segment(segment);
        }
        if old_head != NO_ITEM {
            ItemMut(slab.chunk_mut(old_head)).set_prev(handle);
        } else {
            list.tail = handle;
        }
        list.head = handle;
        list.len += 1;
    }

    pub fn unlink(&mut self, slab: &mut Slab, class: usize, handle: u32) {
        let item = Item(slab.chunk(handle));
        let (prev, next, segment) = (item.prev(), item.next(), item.segment());
        let list = &mut self.lists[class][segment as usize];
        if prev != NO_ITEM {
            ItemMut(slab.chunk_mut(prev)).set_next(next);
        } else {
            list.head = next;
        }
        if next != NO_ITEM {
            ItemMut(slab.chunk_mut(next)).set_prev(prev);
        } else {
            list.tail = prev;
        }
        list.len -= 1;
    }

    fn relink(&mut self, slab: &mut Slab, class: usize, handle: u32, segment: Segment) {
        self.unlink(slab, class, handle);
        self.link(slab, class, segment, handle);
    }

    /// Records a hit: sets ACTIVE; a COLD item moves up to WARM.
    pub fn touch(&mut self, slab: &mut Slab, class: usize, handle: u32) {
        let segment = Item(slab.chunk(handle)).segment();
        if segment == Segment::Cold {
            self.relink(slab, class, handle, Segment::Warm);
            ItemMut(slab.chunk_mut(handle)).set_active(false);
        } else {
            ItemMut(slab.chunk_mut(handle)).set_active(true);
        }
    }

    /// Moves tails out of HOT and WARM while they exceed their share, and
    /// until COLD has an item to give; called before an eviction, so the
    /// COLD tail is the least valuable item. Bounded: at most
    /// MAX_MOVES_TO_FILL_COLD moves.
    pub fn balance(&mut self, slab: &mut Slab, class: usize) {
        let total = self.class_len(class);
        let hot_limit = (total * HOT_PERCENT / 100).max(1);
        let warm_limit = (total * WARM_PERCENT / 100).max(1);
        let mut moves = 0;
        loop {
            let cold_empty = self.len(class, Segment::Cold) == 0;
            let hot_over = self.len(class, Segment::Hot) > hot_limit;
            let warm_over = self.len(class, Segment::Warm) > warm_limit;
            let within_budget = moves < MAX_MOVES_PER_BALANCE;
            let cold_empty = cold_empty && moves < MAX_MOVES_TO_FILL_COLD;
            let source = if (hot_over && within_budget) || (cold_empty && self.len(class, Segment::Hot) > 0) {
                Segment::Hot
            } else if (warm_over && within_budget) || (cold_empty && self.len(class, Segment::Warm) > 0) {
                Segment::Warm
            } else {
                return;
            };
            let tail = self.lists[class][source as usize].tail;
            let active = Item(slab.chunk(tail)).is_active();
            // Active tails have earned WARM; the rest go to COLD.
            let target = if active { Segment::Warm } else { Segment::Cold };
            self.relink(slab, class, tail, target);
            ItemMut(slab.chunk_mut(tail)).set_active(false);
            moves += 1;
        }
    }
}

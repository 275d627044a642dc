//! Slab memory: 1 MiB pages cut into chunks of size classes, plus "large"
//! items (bigger than a page) allocated on their own. Both count against the
//! shard's memory limit, which is never exceeded.
//!
//! A chunk is named by a u32 handle: page id (16 bits) and chunk index in
//! the page (15 bits); the top bit marks a large item, whose low bits index
//! the large table. The slab knows chunks, not items.

pub const PAGE_SIZE: usize = 1 << 20;
const CHUNK_INDEX_BITS: u32 = 15;
const CHUNK_INDEX_MASK: u32 = (1 << CHUNK_INDEX_BITS) - 1;
const LARGE_BIT: u32 = 1 << 31;
const MAX_PAGES: usize = 1 << 16;
/// Large items are accounted in these units (what malloc really takes).
const LARGE_GRAIN: usize = 4096;
/// Chunks must be at least this big so a page holds < 2^15 of them.
pub const MIN_CHUNK: usize = 48;
/// Page classes are numbered in a u8 and the large pseudo-class comes last.
const MAX_CLASSES: usize = u8::MAX as usize;

#[derive(Debug)]
pub struct SlabClass {
    pub chunk_size: usize,
    pub chunks_per_page: usize,
    pub pages: Vec<u32>,
    free: Vec<u32>,
}

impl SlabClass {
    pub fn free_chunks(&self) -> usize {
        self.free.len()
    }
    pub fn total_chunks(&self) -> usize {
        self.pages.len() * self.chunks_per_page
    }
}

struct Page {
    memory: Box<[u8]>,
    class: u8,
    /// The class's chunk size, kept here to save a lookup per access.
    chunk_size: u32,
}

pub struct Slab {
    classes: Vec<SlabClass>,
    pages: Vec<Option<Page>>,
    free_page_ids: Vec<u32>,
    large: Vec<Option<Box<[u8]>>>,
    free_large_ids: Vec<u32>,
    limit: usize,
    used: usize,
}

/// Chunk sizes from `smallest` growing by `factor` (8-byte aligned), the
/// last class being a whole page, as memcached's slabs_init. Unlike
/// memcached's 63, up to 254 classes, so that a small factor (the default
/// 1.08) reaches half a page: finer classes waste fewer bytes per item.
pub fn class_sizes(smallest: usize, factor: f64) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut size = smallest.max(MIN_CHUNK).next_multiple_of(8);
    while (size as f64) * factor < PAGE_SIZE as f64 / 2.0 && sizes.len() < MAX_CLASSES - 3 {
        sizes.push(size);
        let next = ((size as f64 * factor) as usize).next_multiple_of(8);
        size = next.max(size + 8);
    }
    sizes.push(PAGE_SIZE / 2);
    sizes.push(PAGE_SIZE);
    sizes
}

impl Slab {
    /// `limit` is the byte ceiling for pages plus large items.
    pub fn new(limit: usize, chunk_sizes: &[usize]) -> Slab {
        let classes = chunk_sizes
            .iter()
            .map(|&chunk_size| SlabClass {
                chunk_size,
                chunks_per_page: PAGE_SIZE / chunk_size,
                pages: Vec::new(),
                free: Vec::new(),
            })
            .collect();
        Slab {
            classes,
            pages: Vec::new(),
            free_page_ids: Vec::new(),
            large: Vec::new(),
            free_large_ids: Vec::new(),
            limit,
            used: 0,
        }
    }

    /// Bytes taken from the limit: whole pages plus large items.
    pub fn used(&self) -> usize {
        self.used
    }
    pub fn classes(&self) -> &[SlabClass] {
        &self.classes
    }
    /// The pseudo-class id that large items are listed under.
    pub fn large_class(&self) -> usize {
        self.classes.len()
    }

    /// The class whose chunks hold `size` bytes, or None for a large item.
    pub fn class_for(&self, size: usize) -> Option<usize> {
        let index = self.classes.partition_point(|class| class.chunk_size < size);
        (index < self.classes.len()).then_some(index)
    }

    pub fn class_of(&self, handle: u32) -> usize {
        if handle & LARGE_BIT != 0 {
            self.large_class()
        } else {
            let page = self.pages[(handle >> CHUNK_INDEX_BITS) as usize].as_ref();
            usize::from(page.expect("handle names a live page").class)
        }
    }

    /// A free chunk of `class`, taking a new page if the limit allows.
    pub fn alloc_chunk(&mut self, class: usize) -> Option<u32> {
        if let Some(handle) = self.classes[class].free.pop() {
            return Some(handle);
        }
        self.grow(class)?;
        self.classes[class].free.pop()
    }

    fn grow(&mut self, class: usize) -> Option<()> {
        if self.used + PAGE_SIZE > self.limit {
            return None;
        }
        let id = match self.free_page_ids.pop() {
            Some(id) => id,
            None if self.pages.len() < MAX_PAGES => {
                self.pages.push(None);
                (self.pages.len() - 1) as u32
            }
            None => return None,
        };
        self.pages[id as usize] = Some(Page {
            memory: vec![0u8; PAGE_SIZE].into_boxed_slice(),
            class: class as u8,
            chunk_size: self.classes[class].chunk_size as u32,
        });
        self.used += PAGE_SIZE;
        let slab_class = &mut self.classes[class];
        slab_class.pages.push(id);
        // Reverse so chunks are handed out from the start of the page.
        slab_class.free.extend(
            (0..slab_class.chunks_per_page as u32)
                .rev()
                .map(|index| (id << CHUNK_INDEX_BITS) | index),
        );
        Some(())
    }

    /// A dedicated allocation for an item bigger than a page.
    pub fn alloc_large(&mut self, size: usize) -> Option<u32> {
        let accounted = size.next_multiple_of(LARGE_GRAIN);
        if self.used + accounted > self.limit {
            return None;
        }
        self.used += accounted;
        let memory = Some(vec![0u8; size].into_boxed_slice());
        let id = match self.free_large_ids.pop() {
            Some(id) => {
                self.large[id as usize] = memory;
                id
            }
            None => {
                self.large.push(memory);
                (self.large.len() - 1) as u32
            }
        };
        Some(id | LARGE_BIT)
    }

    pub fn free(&mut self, handle: u32) {
        if handle & LARGE_BIT != 0 {
            let id = handle & !LARGE_BIT;
            let memory = self.large[id as usize].take().expect("large item freed twice");
            self.used -= memory.len().next_multiple_of(LARGE_GRAIN);
            self.free_large_ids.push(id);
        } else {
            let class = self.class_of(handle);
            self.classes[class].free.push(handle);
        }
    }

    pub fn chunk(&self, handle: u32) -> &[u8] {
        if handle & LARGE_BIT != 0 {
            self.large[(handle & !LARGE_BIT) as usize]
                .as_deref()
                .expect("live large item")
        } else {
            let page = self.pages[(handle >> CHUNK_INDEX_BITS) as usize].as_ref().expect("live page");
            let size = page.chunk_size as usize;
            let start = (handle & CHUNK_INDEX_MASK) as usize * size;
            &page.memory[start..start + size]
        }
    }

    pub fn chunk_mut(&mut self, handle: u32) -> &mut [u8] {
        if handle & LARGE_BIT != 0 {
            self.large[(handle & !LARGE_BIT) as usize]
                .as_deref_mut()
                .expect("live large item")
        } else {
            let page = self.pages[(handle >> CHUNK_INDEX_BITS) as usize].as_mut().expect("live page");
            let size = page.chunk_size as usize;
            let start = (handle & CHUNK_INDEX_MASK) as usize * size;
            &mut page.memory[start..start + size]
        }
    }

    /// Every chunk handle of a page (live or free).
    pub fn page_handles(&self, page: u32) -> impl Iterator<Item = u32> + use<> {
        let class = self.pages[page as usize].as_ref().map_or(0, |p| usize::from(p.class));
        let count = self.classes[class].chunks_per_page as u32;
        (0..count).map(move |index| (page << CHUNK_INDEX_BITS) | index)
    }

    /// Gives a page back to the limit. The caller has already unlinked every
    /// item in it.
    pub fn release_page(&mut self, page: u32) {
        let class = usize::from(self.pages[page as usize].as_ref().expect("live page").class);
        let slab_class = &mut self.classes[class];
        slab_class.pages.retain(|&id| id != page);
        slab_class.free.retain(|&handle| handle >> CHUNK_INDEX_BITS != page);
        self.pages[page as usize] = None;
        self.free_page_ids.push(page);
        self.used -= PAGE_SIZE;
    }

    /// The page id a chunk handle lives in (None for large items).
    pub fn page_of(handle: u32) -> Option<u32> {
        (handle & LARGE_BIT == 0).then_some(handle >> CHUNK_INDEX_BITS)
    }

    /// The next chunk (live or free) at or after `cursor` in a stable walk
    /// over every page and large item, advancing the cursor past it. None
    /// (and the cursor back at 0) when the walk has reached the end.
    pub fn sweep_next(&self, cursor: &mut usize) -> Option<u32> {
        let per_page = CHUNK_INDEX_MASK as usize + 1;
        loop {
            let slot = *cursor;
            let page_slots = self.pages.len() * per_page;
            if slot < page_slots {
                let (page, index) = (slot / per_page, slot % per_page);
                match &self.pages[page] {
                    Some(p) if index < self.classes[usize::from(p.class)].chunks_per_page => {
                        *cursor += 1;
                        return Some(((page as u32) << CHUNK_INDEX_BITS) | index as u32);
                    }
                    _ => *cursor = (page + 1) * per_page,
                }
            } else if slot - page_slots < self.large.len() {
                *cursor += 1;
                if self.large[slot - page_slots].is_some() {
                    return Some((slot - page_slots) as u32 | LARGE_BIT);
                }
            } else {
                *cursor = 0;
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_grow_by_factor_up_to_a_page() {
        let sizes = class_sizes(80, 1.25);
        assert_eq!(sizes[0], 80);
        assert_eq!(sizes[1], 104);
        assert_eq!(*sizes.last().unwrap(), PAGE_SIZE);
        assert!(sizes.windows(2).all(|w| w[0] < w[1] && w[0] % 8 == 0));
        assert!(PAGE_SIZE / sizes[0] < 1 << CHUNK_INDEX_BITS);
    }

    #[test]
    fn a_small_factor_steps_by_eight_bytes_and_still_reaches_a_page() {
        let sizes = class_sizes(80, 1.08);
        assert_eq!(&sizes[..5], &[80, 88, 96, 104, 112]);
        assert_eq!(*sizes.last().unwrap(), PAGE_SIZE);
        assert!(sizes.len() < MAX_CLASSES, "class ids and the large class fit a u8");
        let smallest_factor = class_sizes(48, 1.0001);
        assert!(smallest_factor.len() < MAX_CLASSES);
        assert_eq!(*smallest_factor.last().unwrap(), PAGE_SIZE);
    }

    #[test]
    fn pages_are_taken_until_the_limit() {
        let mut slab = Slab::new(2 * PAGE_SIZE, &class_sizes(80, 1.25));
        let class = slab.class_for(100).unwrap();
        let per_page = slab.classes()[class].chunks_per_page;
        let handles: Vec<u32> = (0..2 * per_page).map(|_| slab.alloc_chunk(class).unwrap()).collect();
        assert_eq!(slab.used(), 2 * PAGE_SIZE);
        assert!(slab.alloc_chunk(class).is_none(), "limit must hold");
        assert!(slab.alloc_large(PAGE_SIZE + 1).is_none());
        // Distinct, non-overlapping chunks.
        let mut sorted = handles.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), handles.len());
        slab.free(handles[5]);
        assert_eq!(slab.alloc_chunk(class), Some(handles[5]));
    }

    #[test]
    fn large_items_are_accounted_and_released() {
        let mut slab = Slab::new(4 * PAGE_SIZE, &class_sizes(80, 1.25));
        assert_eq!(slab.class_for(PAGE_SIZE + 1), None);
        let big = slab.alloc_large(3 * PAGE_SIZE).unwrap();
        assert_eq!(slab.chunk(big).len(), 3 * PAGE_SIZE);
        assert_eq!(slab.class_of(big), slab.large_class());
        assert!(slab.alloc_large(PAGE_SIZE + 1).is_none());
        slab.free(big);
        assert_eq!(slab.used(), 0);
    }

    #[test]
    fn released_page_returns_to_the_limit() {
        let mut slab = Slab::new(PAGE_SIZE, &class_sizes(80, 1.25));
        let small = slab.class_for(80).unwrap();
        let handle = slab.alloc_chunk(small).unwrap();
        let page = Slab::page_of(handle).unwrap();
        assert!(slab.alloc_chunk(slab.class_for(5000).unwrap()).is_none());
        slab.release_page(page);
        assert_eq!(slab.used(), 0);
        assert!(slab.alloc_chunk(slab.class_for(5000).unwrap()).is_some());
        assert_eq!(slab.classes()[small].free_chunks(), 0);
    }
}

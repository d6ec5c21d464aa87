//! Which bytes of guest RAM hold decoded code, for detecting self-modifying code.
//!
//! One 64-bit mask per 4 KiB page, a bit per 64-byte chunk: a store tests one word, and
//! data that shares a page with code (as in small kernels, whose `.data` follows `.text`)
//! does not throw away the page's decoded blocks unless it really lands on code.

use super::ctx::PAGE_SHIFT;

/// Bytes per tracked chunk.
const CHUNK_SHIFT: u32 = 6;

/// The chunks of one page covered by `[offset, offset + len)` (within the page).
fn chunk_mask(offset: u64, len: u64) -> u64 {
    let first = offset >> CHUNK_SHIFT;
    let last = (offset + len - 1) >> CHUNK_SHIFT;
    let bits = last - first + 1;
    let ones = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    ones << first
}

/// Splits `[pa, pa + len)` into (page, chunk mask) pieces.
fn pieces(pa: u64, len: usize) -> impl Iterator<Item = (usize, u64)> {
    let end = pa.saturating_add(len as u64);
    let mut at = pa;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let page = at >> PAGE_SHIFT;
        let page_end = (page + 1) << PAGE_SHIFT;
        let stop = end.min(page_end);
        let mask = chunk_mask(at & 0xFFF, stop - at);
        at = stop;
        Some((page as usize, mask))
    })
}

/// Code chunks of guest RAM.
#[derive(Debug, Default, Clone)]
pub struct CodeMap {
    pages: Vec<u64>,
}

impl CodeMap {
    /// Tracks `pages` pages (the RAM size), forgetting everything if that changed.
    pub fn fit(&mut self, pages: usize) {
        if self.pages.len() != pages {
            self.pages = vec![0; pages];
        }
    }

    /// Notes that `[pa, pa + len)` was decoded.
    pub fn mark(&mut self, pa: u64, len: usize) {
        for (page, mask) in pieces(pa, len) {
            if let Some(m) = self.pages.get_mut(page) {
                *m |= mask;
            }
        }
    }

    /// Calls `hit` for every page where `[pa, pa + len)` overlaps decoded code.
    #[inline(always)]
    pub fn written(&self, pa: u64, len: usize, mut hit: impl FnMut(u64)) {
        for (page, mask) in pieces(pa, len) {
            if self.pages.get(page).is_some_and(|m| m & mask != 0) {
                hit(page as u64);
            }
        }
    }

    /// Forgets the code of one page (its blocks were dropped).
    pub fn clear_page(&mut self, page: u64) {
        if let Some(m) = self.pages.get_mut(page as usize) {
            *m = 0;
        }
    }

    /// Forgets all code.
    pub fn clear(&mut self) {
        self.pages.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_to_code_chunks_hit() {
        let mut map = CodeMap::default();
        map.fit(4);
        map.mark(0x1040, 0x30); // chunk 1 of page 1
        let mut hits = Vec::new();
        map.written(0x1000, 0x40, |p| hits.push(p)); // chunk 0: data next to code
        assert!(hits.is_empty());
        map.written(0x107F, 2, |p| hits.push(p)); // straddles into chunk 2... and 1
        assert_eq!(hits, vec![1]);
    }

    #[test]
    fn ranges_across_pages_split() {
        let mut map = CodeMap::default();
        map.fit(4);
        map.mark(0x1FF8, 16);
        let mut hits = Vec::new();
        map.written(0x2000, 1, |p| hits.push(p));
        map.written(0x1FFF, 1, |p| hits.push(p));
        assert_eq!(hits, vec![2, 1]);
        map.clear_page(2);
        hits.clear();
        map.written(0x2000, 1, |p| hits.push(p));
        assert!(hits.is_empty());
    }
}

//! Which bytes of guest RAM hold decoded or translated code, and which of them were
//! written since the engine last looked: self-modifying code, and code changed under the
//! CPU by a device's DMA, a debugger or a loader.
//!
//! One 64-bit mask per 4 KiB page, a bit per 64-byte chunk: a store tests one word, and
//! data that shares a page with code (as in small kernels, whose `.data` follows `.text`)
//! does not throw away the page's decoded blocks unless it really lands on code.
//!
//! Two kinds of writer report here. The CPU's own stores call [`CodeWatch::cpu_write`]
//! on their fast path. Every other writer goes through vm-memory, which reports each
//! write to the region's dirty bitmap: [`CodeWatch`] *is* that bitmap, so no device,
//! loader or debugger can write guest RAM without the engines hearing of it.
//!
//! The same word watches the guest's page-table pages under shadow paging
//! ([`crate::x86::spt`]): a *traced* page has every chunk watched, so a store to it
//! leaves the fast path as a store to code does, and is told apart only then (a bit per
//! page says which pages are traced). Tracing therefore costs a store to any other page
//! nothing, and a traced page never gets a translator's fast write entry.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use vm_memory::bitmap::{ArcSlice, Bitmap, RefSlice, WithBitmapSlice};
use vm_memory::mmap::MmapRegion;

/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes per tracked chunk (log2).
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

/// Code pages written since the engine last took them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WrittenCode {
    /// Pages (guest-physical page numbers) whose code was overwritten.
    pub pages: Vec<u64>,
    /// Anything may have changed (RAM was handed out as a mutable slice): drop all code.
    pub all: bool,
}

/// Traced pages written since shadow paging last took them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TracedWrites {
    /// Pages (guest-physical page numbers) written while traced, each once.
    pub pages: Vec<u64>,
    /// How many writes there were (each a trace fault on a real VMM).
    pub writes: u64,
    /// Anything may have changed: every shadow entry is to be dropped.
    pub all: bool,
}

/// The shared state behind [`CodeWatch`].
#[derive(Debug, Default)]
pub struct CodeWatchInner {
    /// The watched chunks per page of RAM: those holding code, or all of a traced page.
    /// A store tests this word alone.
    pages: Box<[AtomicU64]>,
    /// The chunks holding code, per page.
    code: Box<[AtomicU64]>,
    /// A bit per page: the page is traced (a guest page table shadow paging reads).
    traced: Box<[AtomicU64]>,
    /// Something was written over code since the last [`CodeWatch::take_written`].
    pending: AtomicBool,
    written: Mutex<WrittenCode>,
    /// A traced page was written since the last [`CodeWatch::take_traced`].
    trace_pending: AtomicBool,
    traces: Mutex<TracedWrites>,
    /// The host mapping guest RAM lies in (with its guard regions), unmapped when the
    /// last view of RAM goes: the region and every slice of it hold this bitmap, so a
    /// device's clone of the guest memory keeps RAM mapped after the `GuestRam` drops.
    _mapping: Option<MmapRegion>,
}

impl CodeWatchInner {
    fn is_traced(&self, page: usize) -> bool {
        self.traced
            .get(page / 64)
            .is_some_and(|w| w.load(Relaxed) & (1 << (page % 64)) != 0)
    }

    /// What the watched word of a page holds given its code chunks.
    fn watched(&self, page: usize, code: u64) -> u64 {
        if self.is_traced(page) {
            u64::MAX
        } else {
            code
        }
    }

    /// Sets both the code and the watched chunks of a page to `code`.
    fn set_code(&self, page: usize, code: u64) {
        self.code[page].store(code, Relaxed);
        self.pages[page].store(self.watched(page, code), Relaxed);
    }

    /// A store hit a watched chunk: notes code overwritten and traced pages written.
    /// True if it overwrote code or wrote a traced page.
    #[cold]
    fn classify(&self, page: usize, mask: u64) -> bool {
        let code = self.code[page].load(Relaxed) & mask != 0;
        if code {
            self.note(page, false);
        }
        let traced = self.is_traced(page);
        if traced {
            let mut t = self.traces.lock().unwrap_or_else(PoisonError::into_inner);
            t.writes += 1;
            if !t.pages.contains(&(page as u64)) {
                t.pages.push(page as u64);
            }
            self.trace_pending.store(true, Relaxed);
        }
        code || traced
    }

    fn note(&self, page: usize, all: bool) {
        let mut w = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if all {
            w.all = true;
        } else if !w.pages.contains(&(page as u64)) {
            w.pages.push(page as u64);
        }
        self.pending.store(true, Relaxed);
    }

    /// Records the pages where `[pa, pa + len)` overlaps code, and the traced pages it
    /// wrote; true if it did either.
    #[inline(always)]
    fn write(&self, pa: u64, len: usize) -> bool {
        let mut hit = false;
        for (page, mask) in pieces(pa, len) {
            if self
                .pages
                .get(page)
                .is_some_and(|m| m.load(Relaxed) & mask != 0)
            {
                hit |= self.classify(page, mask);
            }
        }
        hit
    }
}

/// The code map of guest RAM, shared by the engines and vm-memory's write path.
#[derive(Debug, Clone, Default)]
pub struct CodeWatch(Arc<CodeWatchInner>);

impl CodeWatch {
    /// A watch over `bytes` bytes of RAM.
    pub fn new(bytes: usize) -> Self {
        Self::keeping(bytes, None)
    }

    /// A watch over `bytes` bytes of RAM that keeps `mapping` (RAM's host mapping)
    /// until the last clone goes.
    pub(super) fn keeping(bytes: usize, mapping: Option<MmapRegion>) -> Self {
        let pages = bytes.div_ceil(1 << PAGE_SHIFT);
        let words = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        CodeWatch(Arc::new(CodeWatchInner {
            pages: words(pages),
            code: words(pages),
            traced: words(pages.div_ceil(64)),
            _mapping: mapping,
            ..CodeWatchInner::default()
        }))
    }

    /// Notes that `[pa, pa + len)` was decoded or translated.
    pub fn mark(&self, pa: u64, len: usize) {
        for (page, mask) in pieces(pa, len) {
            if let (Some(m), Some(c)) = (self.0.pages.get(page), self.0.code.get(page)) {
                c.fetch_or(mask, Relaxed);
                m.fetch_or(mask, Relaxed);
            }
        }
    }

    /// A store by the CPU to `[pa, pa + len)`: true if it wrote over code, which is
    /// then waiting in [`CodeWatch::take_written`], or wrote a traced page (waiting in
    /// [`CodeWatch::take_traced`]). Either way the instruction must end its block, so
    /// that the run loop drops the code or has the VMM handle the trace fault.
    #[inline(always)]
    pub fn cpu_write(&self, pa: u64, len: usize) -> bool {
        self.0.write(pa, len)
    }

    /// A store the VMM makes for the CPU (the accessed and dirty bits a page walk
    /// sets): it is noted if it overwrites code, but it is no guest write to a traced
    /// page. True if it overwrote code.
    pub fn vmm_write(&self, pa: u64, len: usize) -> bool {
        let mut hit = false;
        for (page, mask) in pieces(pa, len) {
            if self
                .0
                .code
                .get(page)
                .is_some_and(|m| m.load(Relaxed) & mask != 0)
            {
                self.0.note(page, false);
                hit = true;
            }
        }
        hit
    }

    /// Whether the page holding `pa` holds decoded or translated code, or is traced:
    /// the translator gives such a page no fast write path.
    pub fn page_has_code(&self, pa: u64) -> bool {
        self.0
            .pages
            .get((pa >> PAGE_SHIFT) as usize)
            .is_some_and(|m| m.load(Relaxed) != 0)
    }

    /// Whether `[pa, pa + len)` overlaps decoded or translated code, or a traced page:
    /// a store there must take the CPU's write path, which reports it.
    pub fn overlaps(&self, pa: u64, len: usize) -> bool {
        pieces(pa, len).any(|(page, mask)| {
            self.0
                .pages
                .get(page)
                .is_some_and(|m| m.load(Relaxed) & mask != 0)
        })
    }

    /// Whether code was written since the last [`CodeWatch::take_written`]: one load.
    #[inline(always)]
    pub fn has_written(&self) -> bool {
        self.0.pending.load(Relaxed)
    }

    /// The code written since the last call; those pages stop being code (their
    /// decoded or translated forms are to be dropped by the caller).
    pub fn take_written(&self) -> WrittenCode {
        let mut w = self
            .0
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.0.pending.store(false, Relaxed);
        let w = std::mem::take(&mut *w);
        if w.all {
            self.clear_code();
        } else {
            for &page in &w.pages {
                self.0.set_code(page as usize, 0);
            }
        }
        w
    }

    /// Anything in RAM may have changed: every engine drops all its code, and shadow
    /// paging all its shadow entries.
    pub fn invalidate_all(&self) {
        self.0.note(0, true);
        let mut t = self.0.traces.lock().unwrap_or_else(PoisonError::into_inner);
        t.all = true;
        self.0.trace_pending.store(true, Relaxed);
    }

    fn clear_code(&self) {
        (0..self.0.code.len()).for_each(|page| self.0.set_code(page, 0));
    }

    /// Forgets all code without reporting it (the engine dropped its caches itself).
    /// Traced pages stay traced: shadow paging keeps its entries.
    pub fn clear(&self) {
        self.clear_code();
        let mut w = self
            .0
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *w = WrittenCode::default();
        self.0.pending.store(false, Relaxed);
    }
}

impl CodeWatch {
    /// Traces the page holding `pa` (a guest page table shadow paging read): from now
    /// on writes to it are reported by [`CodeWatch::take_traced`]. False if it already
    /// was traced, or lies outside RAM.
    pub fn trace(&self, pa: u64) -> bool {
        let page = (pa >> PAGE_SHIFT) as usize;
        let (Some(word), true) = (self.0.traced.get(page / 64), page < self.0.pages.len()) else {
            return false;
        };
        let bit = 1 << (page % 64);
        if word.fetch_or(bit, Relaxed) & bit != 0 {
            return false;
        }
        self.0.pages[page].store(u64::MAX, Relaxed);
        true
    }

    /// Stops tracing the page holding `pa`: writes to it are plain stores again.
    pub fn untrace(&self, pa: u64) {
        let page = (pa >> PAGE_SHIFT) as usize;
        if let (Some(word), true) = (self.0.traced.get(page / 64), page < self.0.pages.len()) {
            word.fetch_and(!(1 << (page % 64)), Relaxed);
            self.0.set_code(page, self.0.code[page].load(Relaxed));
        }
    }

    /// Stops tracing every page.
    pub fn untrace_all(&self) {
        for (i, word) in self.0.traced.iter().enumerate() {
            let mut bits = word.swap(0, Relaxed);
            while bits != 0 {
                let page = i * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.0.set_code(page, self.0.code[page].load(Relaxed));
            }
        }
    }

    /// Whether the page holding `pa` is traced.
    pub fn is_traced(&self, pa: u64) -> bool {
        self.0.is_traced((pa >> PAGE_SHIFT) as usize)
    }

    /// Whether a traced page was written since the last [`CodeWatch::take_traced`]: one
    /// load.
    #[inline(always)]
    pub fn has_traced(&self) -> bool {
        self.0.trace_pending.load(Relaxed)
    }

    /// The traced pages written since the last call (they stay traced: whoever traced
    /// them decides).
    pub fn take_traced(&self) -> TracedWrites {
        let mut t = self.0.traces.lock().unwrap_or_else(PoisonError::into_inner);
        self.0.trace_pending.store(false, Relaxed);
        std::mem::take(&mut *t)
    }
}

// vm-memory calls `mark_dirty` for every write made through its accessors (devices,
// loaders, the debugger): exactly the writes from outside the CPU.
impl<'a> WithBitmapSlice<'a> for CodeWatchInner {
    type S = RefSlice<'a, CodeWatchInner>;
}

impl Bitmap for CodeWatchInner {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.write(offset as u64, len);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        let page = offset >> PAGE_SHIFT;
        self.code
            .get(page)
            .is_some_and(|m| m.load(Relaxed) & chunk_mask(offset as u64 & 0xFFF, 1) != 0)
    }

    fn slice_at(&self, offset: usize) -> RefSlice<'_, CodeWatchInner> {
        RefSlice::new(self, offset)
    }
}

impl WithBitmapSlice<'_> for CodeWatch {
    type S = ArcSlice<CodeWatchInner>;
}

impl Bitmap for CodeWatch {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.0.mark_dirty(offset, len);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.0.dirty_at(offset)
    }

    fn slice_at(&self, offset: usize) -> ArcSlice<CodeWatchInner> {
        ArcSlice::new(self.0.clone(), offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_to_code_chunks_hit() {
        let w = CodeWatch::new(4 << PAGE_SHIFT);
        w.mark(0x1040, 0x30); // chunk 1 of page 1
        assert!(!w.cpu_write(0x1000, 0x40)); // chunk 0: data next to code
        assert!(!w.has_written());
        assert!(w.cpu_write(0x107F, 2)); // straddles chunks 1 and 2
        assert!(w.has_written());
        assert_eq!(
            w.take_written(),
            WrittenCode {
                pages: vec![1],
                all: false
            }
        );
        assert!(!w.has_written());
        assert!(!w.cpu_write(0x1040, 1), "the page stopped being code");
    }

    #[test]
    fn ranges_across_pages_split() {
        let w = CodeWatch::new(4 << PAGE_SHIFT);
        w.mark(0x1FF8, 16);
        assert!(w.cpu_write(0x2000, 1));
        assert!(w.cpu_write(0x1FFF, 1));
        assert_eq!(w.take_written().pages, vec![2, 1]);
    }

    #[test]
    fn traced_pages_report_writes_apart_from_code() {
        let w = CodeWatch::new(4 << PAGE_SHIFT);
        w.mark(0x2040, 8);
        assert!(w.trace(0x2000) && w.trace(0x3000));
        assert!(!w.trace(0x3FFF), "already traced");
        assert!(w.page_has_code(0x3000), "no fast write to a traced page");
        assert!(w.cpu_write(0x3010, 4), "a trace fault ends the block");
        assert!(w.cpu_write(0x3020, 4));
        assert!(!w.has_written(), "a traced page is no code");
        assert!(
            w.cpu_write(0x2040, 1),
            "code on a traced page is still code"
        );
        assert!(
            !w.vmm_write(0x3000, 4),
            "the VMM's own stores are no trace faults"
        );
        assert_eq!(
            w.take_traced(),
            TracedWrites {
                pages: vec![3, 2],
                writes: 3,
                all: false
            }
        );
        assert_eq!(w.take_written().pages, vec![2]);
        w.untrace(0x3000);
        assert!(!w.page_has_code(0x3000) && w.is_traced(0x2000));
        assert!(!w.cpu_write(0x3010, 4) && !w.has_traced());
        w.clear();
        assert!(w.is_traced(0x2000), "dropping code keeps traces");
        assert!(!w.trace(0x4000), "outside RAM");
        w.untrace(0x4000);
    }

    #[test]
    fn writes_through_vm_memory_are_seen() {
        use vm_memory::{Bytes, GuestAddress};
        let ram = super::super::GuestRam::new(0x4000).unwrap();
        let (mem, watch) = (ram.guest_memory(), ram.code());
        watch.mark(0x2100, 8);
        mem.write_slice(&[1, 2, 3], GuestAddress(0x3000)).unwrap();
        assert!(!watch.has_written());
        mem.write_obj(7u32, GuestAddress(0x2104)).unwrap();
        assert_eq!(watch.take_written().pages, vec![2]);
    }
}

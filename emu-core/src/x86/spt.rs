//! Shadow page tables, the memory virtualization of a software VMM (VMware's binary
//! translator, Adams and Agesen 2006), as a model inside Popek's MMU.
//!
//! A deprivileged guest kernel cannot be given its own page tables: they map
//! guest-physical addresses, and the real MMU needs host-physical ones. The VMM
//! therefore runs the real MMU on *shadow* tables it derives from the guest's, and must
//! keep them coherent with the guest's tables without the guest's help:
//!
//! - **Filled lazily.** A shadow table starts empty. An access the shadow does not map
//!   (or maps without the right it needs) faults into the VMM, which walks the guest's
//!   tables. If they allow the access, the VMM sets the guest's accessed and dirty bits
//!   as the hardware would, adds the shadow entry and resumes: a *hidden* fault, which
//!   the guest never sees. If they do not, it is a *true* fault: the #PF is the guest's,
//!   with the guest's error code and CR2.
//! - **Traced.** Every guest page-table page a fill reads is write-protected in the
//!   real tables ("traced"). A guest write to one is a *trace fault*: the VMM completes
//!   the write and drops the shadow entries derived from that page (they are filled
//!   again, from the new contents, when next used), and stops tracing it until a fill
//!   reads it again.
//! - **Cached per address space.** Shadow tables are kept for the last few guest CR3
//!   values, so that a CR3 write back to a known address space (a context switch) finds
//!   its shadow entries still there, coherent because they were traced all along.
//!
//! In Popek the vCPU's TLB plays the real TLB, and this module the shadow tables behind
//! it: on a TLB miss the shadow entry, if it allows the access, fills the TLB at no
//! further cost (the hardware walking shadow tables); otherwise the fill is a hidden or
//! a true fault. Tracing uses [`CodeWatch`]: a traced page is watched like a page of
//! code, so a store to it leaves the store fast path, and the written pages are taken
//! here before the next shadow lookup. A/D bits stay architectural: a shadow entry made
//! for a read allows no write until a write fault has set the guest's dirty bit; a guest
//! write that clears A or D drops the entry. INVLPG and CR3 writes keep their meaning,
//! as they flush the TLB in front of the shadow; the shadow itself is never staler than
//! the guest's tables.

use super::mmu::{guest_fill, Fill};
use crate::cpu::{cr0, cr4, efer};
use crate::exit::{EngineEvent, ExitHandler, ShadowFaultKind};
use crate::memory::{CodeWatch, RamView, PAGE_SHIFT};
use crate::x86::paging::{Access, PagingRegs, Translation, WalkFault};
use std::collections::{HashMap, HashSet};

/// Address spaces (guest CR3 values) whose shadow tables are kept.
const SPACES: usize = 8;
/// Shadow entries one address space holds before it is dropped and built again, as a
/// VMM's pool of shadow pages runs out.
const MAX_ENTRIES: usize = 1 << 16;
/// Faults kept for the trace until the engine reports them (at the latest after the
/// block they happened in); one instruction's string of faults beyond it is not traced
/// (it is still counted).
const MAX_RECORDED: usize = 256;

/// What selects a guest's paging structures: the root and the mode bits that change
/// how they read. CR0.WP is not in it: rights are checked against it on every access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SpaceKey {
    root: u64,
    cr4: u64,
    efer: u64,
}

impl SpaceKey {
    fn of(regs: &PagingRegs) -> Self {
        SpaceKey {
            // CR3's low bits (PWT, PCD) do not choose the tables.
            root: regs.cr3 & !0x1F,
            cr4: regs.cr4 & (cr4::PAE | cr4::PSE | cr4::PGE),
            efer: regs.efer & (efer::LMA | efer::NXE),
        }
    }
}

/// A shadow entry: one 4 KiB linear page (a large guest page is shadowed page by page)
/// and the guest page-table pages it was derived from.
#[derive(Debug, Clone, Copy)]
struct ShadowEntry {
    fill: Fill,
    sources: [u64; 4],
    depth: usize,
}

impl ShadowEntry {
    fn sources(&self) -> &[u64] {
        &self.sources[..self.depth]
    }
}

/// The shadow tables of one guest address space.
#[derive(Debug, Clone)]
struct Space {
    key: SpaceKey,
    id: u64,
    /// By linear page number.
    entries: HashMap<u64, ShadowEntry>,
}

/// What shadow paging did, for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SptStats {
    /// Accesses the shadow did not allow but the guest's tables did: the VMM filled
    /// the shadow entry, unseen by the guest.
    pub hidden_faults: u64,
    /// Page faults the guest's own tables caused, reflected to the guest.
    pub true_faults: u64,
    /// Guest writes to traced page-table pages, each propagated to the shadow.
    pub trace_faults: u64,
    /// Shadow entries dropped because the guest page table they came from changed.
    pub entries_dropped: u64,
    /// Shadow address spaces built (a CR3 value not among those kept).
    pub spaces_built: u64,
    /// Switches to an address space whose shadow tables were kept.
    pub spaces_reused: u64,
}

/// The shadow page tables of one vCPU.
#[derive(Debug, Clone, Default)]
pub struct Spt {
    /// Most recently used first; at most [`SPACES`].
    spaces: Vec<Space>,
    next_id: u64,
    /// Guest page-table page number -> the shadow entries derived from it (address
    /// space id, linear page number).
    derived: HashMap<u64, HashSet<(u64, u64)>>,
    /// Pages traced before this vCPU's shadow existed are untraced on first use.
    started: bool,
    /// A fill traced a page that was not traced.
    new_traces: bool,
    /// What it did.
    pub stats: SptStats,
    /// Keep each fault for the trace (`--trace engine`), for the engine to report.
    pub record: bool,
    /// The faults kept, oldest first: the kind, and the address (see
    /// [`crate::exit::EngineEvent::ShadowFault`]).
    recorded: Vec<(ShadowFaultKind, u64)>,
}

/// How many true faults shadow paging had counted and kept for the trace, to take back
/// those of a look-ahead whose fault is not raised.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrueFaultMark {
    counted: u64,
    recorded: usize,
}

impl Spt {
    /// Empty shadow tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// The TLB fill for `access` to `lin`, from the shadow tables or, on a hidden fault,
    /// from the guest's; `Err` is a true fault (the walk fault, or `None` for a
    /// protection violation), which the caller raises as the guest's #PF.
    pub(crate) fn fill(
        &mut self,
        regs: &PagingRegs,
        ram: RamView<'_>,
        code: &CodeWatch,
        lin: u64,
        access: Access,
        user: bool,
    ) -> Result<Fill, Option<WalkFault>> {
        if !self.started {
            self.started = true;
            code.untrace_all();
        }
        if code.has_traced() {
            self.propagate(code);
        }
        let page = lin >> PAGE_SHIFT;
        let space = self.space(SpaceKey::of(regs), code);
        let wp = regs.cr0 & cr0::WP != 0;
        if let Some(e) = self.spaces[space].entries.get(&page) {
            if super::mmu::allows(e.fill.perm, access, user, wp) {
                return Ok(e.fill);
            }
        }
        match guest_fill(regs, ram, code, lin, access, user) {
            Ok((fill, t)) => {
                self.stats.hidden_faults += 1;
                self.keep(ShadowFaultKind::Hidden, lin);
                self.insert(space, page, fill, &t, code);
                Ok(fill)
            }
            Err(fault) => {
                self.stats.true_faults += 1;
                self.keep(ShadowFaultKind::True, lin);
                Err(fault)
            }
        }
    }

    /// Keeps a fault for the trace, if it is on.
    fn keep(&mut self, kind: ShadowFaultKind, addr: u64) {
        if self.record && self.recorded.len() < MAX_RECORDED {
            self.recorded.push((kind, addr));
        }
    }

    /// Traces the faults kept since the last report, oldest first, as having happened
    /// by instruction count `icount`.
    pub fn report(&mut self, exits: &mut dyn ExitHandler, icount: u64) {
        if self.recorded.is_empty() {
            return;
        }
        for (kind, addr) in std::mem::take(&mut self.recorded) {
            exits.engine_event(EngineEvent::ShadowFault { kind, addr }, icount);
        }
    }

    /// The true faults so far, for [`Spt::forget_true_faults`].
    pub(crate) fn true_fault_mark(&self) -> TrueFaultMark {
        TrueFaultMark {
            counted: self.stats.true_faults,
            recorded: self.recorded.len(),
        }
    }

    /// Takes back the true faults since `mark`: they were a look-ahead's, which the
    /// guest never sees (its instruction runs again and faults then).
    pub(crate) fn forget_true_faults(&mut self, mark: TrueFaultMark) {
        self.stats.true_faults = mark.counted;
        let since = self
            .recorded
            .split_off(mark.recorded.min(self.recorded.len()));
        self.recorded
            .extend(since.into_iter().filter(|f| f.0 != ShadowFaultKind::True));
    }

    /// The index of the address space `key`, made the most recent (and built if new).
    fn space(&mut self, key: SpaceKey, code: &CodeWatch) -> usize {
        if self.spaces.first().is_some_and(|s| s.key == key) {
            return 0;
        }
        match self.spaces.iter().position(|s| s.key == key) {
            Some(i) => {
                self.stats.spaces_reused += 1;
                let s = self.spaces.remove(i);
                self.spaces.insert(0, s);
            }
            None => {
                self.stats.spaces_built += 1;
                if self.spaces.len() == SPACES {
                    let old = self.spaces.pop().expect("SPACES > 0");
                    self.forget_entries(old.id, &old.entries, code);
                }
                self.next_id += 1;
                self.spaces.insert(
                    0,
                    Space {
                        key,
                        id: self.next_id,
                        entries: HashMap::new(),
                    },
                );
            }
        }
        0
    }

    /// Adds (or replaces) the shadow entry of `page` in space `space`, tracing the
    /// guest page-table pages the walk read.
    fn insert(&mut self, space: usize, page: u64, fill: Fill, t: &Translation, code: &CodeWatch) {
        if self.spaces[space].entries.len() >= MAX_ENTRIES {
            let full = std::mem::take(&mut self.spaces[space].entries);
            let id = self.spaces[space].id;
            self.forget_entries(id, &full, code);
        }
        let mut entry = ShadowEntry {
            fill,
            sources: [0; 4],
            depth: 0,
        };
        for level in t.levels() {
            let src = level.entry_pa >> PAGE_SHIFT;
            if !entry.sources().contains(&src) {
                entry.sources[entry.depth] = src;
                entry.depth += 1;
            }
        }
        let id = self.spaces[space].id;
        if let Some(old) = self.spaces[space].entries.insert(page, entry) {
            self.unlink(id, page, &old, code);
        }
        for &src in entry.sources() {
            self.derived.entry(src).or_default().insert((id, page));
            self.new_traces |= code.trace(src << PAGE_SHIFT);
        }
    }

    /// Takes the guest's writes to traced pages and drops the shadow entries derived
    /// from each written page; the page is traced again when a fill next reads it.
    pub(crate) fn propagate(&mut self, code: &CodeWatch) {
        let written = code.take_traced();
        self.stats.trace_faults += written.writes;
        for &page in &written.pages {
            self.keep(ShadowFaultKind::Trace, page << PAGE_SHIFT);
        }
        if written.all {
            self.flush(code);
            return;
        }
        for page in written.pages {
            for (id, lin) in self.derived.remove(&page).unwrap_or_default() {
                let Some(space) = self.spaces.iter_mut().find(|s| s.id == id) else {
                    continue;
                };
                if let Some(old) = space.entries.remove(&lin) {
                    self.stats.entries_dropped += 1;
                    self.unlink(id, lin, &old, code);
                }
            }
            code.untrace(page << PAGE_SHIFT);
        }
    }

    /// Drops every shadow entry and every trace (all of RAM may have changed).
    fn flush(&mut self, code: &CodeWatch) {
        for space in &mut self.spaces {
            self.stats.entries_dropped += space.entries.len() as u64;
            space.entries.clear();
        }
        self.derived.clear();
        code.untrace_all();
    }

    /// Forgets the entries of a space that was evicted, or emptied because it grew too
    /// large.
    fn forget_entries(&mut self, id: u64, entries: &HashMap<u64, ShadowEntry>, code: &CodeWatch) {
        for (&lin, e) in entries {
            self.unlink(id, lin, e, code);
        }
    }

    /// Removes an entry from the lists of the pages it was derived from, untracing a
    /// page nothing else is derived from.
    fn unlink(&mut self, id: u64, lin: u64, e: &ShadowEntry, code: &CodeWatch) {
        for &src in e.sources() {
            if let Some(set) = self.derived.get_mut(&src) {
                set.remove(&(id, lin));
                if set.is_empty() {
                    self.derived.remove(&src);
                    code.untrace(src << PAGE_SHIFT);
                }
            }
        }
    }

    /// Whether a page became traced since the last call.
    pub(crate) fn take_new_traces(&mut self) -> bool {
        std::mem::take(&mut self.new_traces)
    }

    /// Pages currently traced.
    pub fn traced_pages(&self) -> usize {
        self.derived.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestRam;
    use crate::x86::paging::pte;

    /// The shared page table, the frames it maps, and where the page directories start.
    const PT: u64 = 0x30000;
    const FRAME: u64 = 0x50000;
    const OTHER_FRAME: u64 = 0x60000;
    const PD0: u64 = 0x10000;
    /// The linear page the tests use, and one the tables leave unmapped.
    const LIN: u64 = 0x5123;
    const UNMAPPED: u64 = 0x7000;

    fn put(ram: &GuestRam, pa: u64, v: u32) {
        ram.write(pa, &v.to_le_bytes()).unwrap();
    }

    fn get(ram: &GuestRam, pa: u64) -> u32 {
        let mut b = [0; 4];
        ram.read(pa, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    /// Page directory `i`: its entry 0 points at the shared page table.
    fn pd(i: u64) -> u64 {
        PD0 + i * 0x1000
    }

    fn regs(space: u64) -> PagingRegs {
        PagingRegs {
            cr0: cr0::PG | cr0::PE | cr0::WP,
            cr3: pd(space),
            cr4: 0,
            efer: 0,
        }
    }

    fn machine() -> GuestRam {
        let ram = GuestRam::new(1 << 20).unwrap();
        for i in 0..=SPACES as u64 {
            put(&ram, pd(i), (PT as u32) | (pte::P | pte::RW) as u32);
        }
        put(&ram, PT + 5 * 4, (FRAME as u32) | (pte::P | pte::RW) as u32);
        ram
    }

    fn fill(
        spt: &mut Spt,
        ram: &GuestRam,
        space: u64,
        lin: u64,
        access: Access,
    ) -> Result<u64, Option<WalkFault>> {
        spt.fill(&regs(space), ram.view(), ram.code(), lin, access, false)
            .map(|f| f.phys)
    }

    #[test]
    fn fills_are_hidden_faults_that_set_accessed_and_dirty_once() {
        let ram = machine();
        let mut spt = Spt::new();
        assert_eq!(fill(&mut spt, &ram, 0, LIN, Access::Read), Ok(FRAME));
        assert_eq!(spt.stats.hidden_faults, 1);
        assert_eq!(get(&ram, PT + 20) as u64 & (pte::A | pte::D), pte::A);
        assert_eq!(get(&ram, pd(0)) as u64 & pte::A, pte::A);
        assert!(ram.code().is_traced(PT) && ram.code().is_traced(pd(0)));
        assert!(
            !ram.code().has_traced(),
            "the VMM's A/D stores are no trace faults"
        );
        // The shadow now allows reads: no fault.
        assert_eq!(fill(&mut spt, &ram, 0, LIN, Access::Read), Ok(FRAME));
        assert_eq!(spt.stats.hidden_faults, 1);
        // A write needs the guest's dirty bit set first: a hidden fault sets it.
        assert_eq!(fill(&mut spt, &ram, 0, LIN, Access::Write), Ok(FRAME));
        assert_eq!(spt.stats.hidden_faults, 2);
        assert_ne!(get(&ram, PT + 20) as u64 & pte::D, 0);
        assert_eq!(fill(&mut spt, &ram, 0, LIN, Access::Write), Ok(FRAME));
        assert_eq!(spt.stats.hidden_faults, 2);
        // What the guest's tables forbid is the guest's fault.
        assert_eq!(
            fill(&mut spt, &ram, 0, UNMAPPED, Access::Read),
            Err(Some(WalkFault::NotPresent))
        );
        assert_eq!(spt.stats.true_faults, 1);
    }

    /// Records what `report` hands over.
    #[derive(Default)]
    struct Reported(Vec<(ShadowFaultKind, u64)>);

    impl ExitHandler for Reported {
        fn handle(&mut self, _: crate::exit::VmExit<'_>, _: u64) -> crate::exit::Flow {
            crate::exit::Flow::Continue
        }

        fn engine_event(&mut self, event: EngineEvent, _: u64) {
            if let EngineEvent::ShadowFault { kind, addr } = event {
                self.0.push((kind, addr));
            }
        }
    }

    #[test]
    fn faults_are_kept_for_the_trace_only_when_asked_and_a_look_aheads_are_taken_back() {
        let ram = machine();
        let mut spt = Spt::new();
        let _ = fill(&mut spt, &ram, 0, LIN, Access::Read);
        let mut seen = Reported::default();
        spt.report(&mut seen, 0);
        assert!(seen.0.is_empty(), "nothing kept unless asked");
        spt.record = true;
        let _ = fill(&mut spt, &ram, 0, LIN, Access::Write);
        let mark = spt.true_fault_mark();
        let _ = fill(&mut spt, &ram, 0, UNMAPPED, Access::Read);
        spt.forget_true_faults(mark);
        assert_eq!(spt.stats.true_faults, 0);
        let _ = fill(&mut spt, &ram, 0, UNMAPPED, Access::Read);
        spt.report(&mut seen, 0);
        assert_eq!(
            seen.0,
            [
                (ShadowFaultKind::Hidden, LIN),
                (ShadowFaultKind::True, UNMAPPED)
            ]
        );
        spt.report(&mut seen, 0);
        assert_eq!(seen.0.len(), 2, "each fault reported once");
    }

    #[test]
    fn a_write_to_a_traced_table_drops_what_was_derived_from_it() {
        let ram = machine();
        let mut spt = Spt::new();
        assert_eq!(fill(&mut spt, &ram, 0, LIN, Access::Read), Ok(FRAME));
        assert_eq!(fill(&mut spt, &ram, 1, LIN, Access::Read), Ok(FRAME));
        // The guest remaps the page (from outside the CPU here: seen the same way).
        put(
            &ram,
            PT + 20,
            (OTHER_FRAME as u32) | (pte::P | pte::RW) as u32,
        );
        assert!(ram.code().has_traced());
        assert_eq!(fill(&mut spt, &ram, 0, LIN, Access::Read), Ok(OTHER_FRAME));
        assert_eq!(spt.stats.trace_faults, 1);
        assert_eq!(spt.stats.entries_dropped, 2, "both spaces used that table");
        // Space 1 is kept, and sees the new mapping too.
        assert_eq!(fill(&mut spt, &ram, 1, LIN, Access::Read), Ok(OTHER_FRAME));
        assert_eq!((spt.stats.spaces_built, spt.stats.spaces_reused), (2, 2));
    }

    #[test]
    fn the_least_recent_address_space_is_evicted_and_its_traces_dropped() {
        let ram = machine();
        let mut spt = Spt::new();
        for space in 0..=SPACES as u64 {
            assert_eq!(fill(&mut spt, &ram, space, LIN, Access::Read), Ok(FRAME));
        }
        assert_eq!(spt.stats.spaces_built, SPACES as u64 + 1);
        assert!(
            !ram.code().is_traced(pd(0)),
            "nothing derives from it any more"
        );
        assert!(ram.code().is_traced(pd(1)) && ram.code().is_traced(PT));
        // Back to the evicted space: built again, by a hidden fault.
        let hidden = spt.stats.hidden_faults;
        assert_eq!(fill(&mut spt, &ram, 0, LIN, Access::Read), Ok(FRAME));
        assert_eq!(spt.stats.spaces_built, SPACES as u64 + 2);
        assert_eq!(spt.stats.hidden_faults, hidden + 1);
    }
}

//! The CPU's access path through paging: a software TLB in front of the page walk of
//! [`crate::x86::paging`], with the walk's side effects — accessed and dirty bits, CR2,
//! the TLB fill — applied here, where the CPU makes an access, and nowhere else.
//!
//! The TLB is direct-mapped by linear page number. An entry remembers what the walk
//! allowed (user access, writes, execution) and whether the dirty bit is already set, so
//! a hit that the entry allows costs one compare; anything else walks the tables again,
//! which also gives the precise page-fault error code.

use super::Vcpu;
use crate::cpu::cr0;
use crate::exception::{vector, Exception};
use crate::memory::{CodeWatch, RamView};
use crate::x86::paging::{self, PagingRegs, WalkFault};

pub use crate::x86::paging::{Access, MAXPHYADDR};

/// TLB entries (a power of two).
const TLB_ENTRIES: usize = 256;
/// Width of a canonical linear address (4-level paging): bits above it copy bit 47.
const LINEAR_BITS: u32 = 48;

/// Whether `lin` is canonical: bits 63:47 all equal, as long mode requires of every
/// linear address (and of the addresses in MSRs and descriptor-table registers).
#[inline(always)]
pub fn is_canonical(lin: u64) -> bool {
    let shift = 64 - LINEAR_BITS;
    (((lin << shift) as i64) >> shift) as u64 == lin
}

/// What a TLB entry allows.
pub(crate) mod perm {
    /// The tag is valid.
    pub const VALID: u8 = 1 << 0;
    /// CPL 3 may access the page.
    pub const USER: u8 = 1 << 1;
    /// Writes are allowed by every level.
    pub const WRITE: u8 = 1 << 2;
    /// Instruction fetches are forbidden.
    pub const NX: u8 = 1 << 3;
    /// The leaf's dirty bit is already set, so writes need no walk.
    pub const DIRTY: u8 = 1 << 4;
    /// Global page.
    pub const GLOBAL: u8 = 1 << 5;
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Linear page number.
    page: u64,
    /// Physical page base.
    phys: u64,
    perm: u8,
}

/// The software TLB.
#[derive(Debug, Clone)]
pub struct Tlb {
    entries: Box<[Entry; TLB_ENTRIES]>,
    /// Some entry may come from a large page. Entries are per 4 KiB page, so INVLPG of
    /// one address could not find the other pieces of a large page: it flushes all.
    large: bool,
    /// Counts flushes, so that an engine keeping translations of its own (the binary
    /// translator's inline TLB) knows when to drop them.
    generation: u64,
    /// The linear page the last flush dropped, if it dropped only that one (INVLPG):
    /// such an engine then need not drop the rest.
    last_page: Option<u64>,
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: Box::new([Entry::default(); TLB_ENTRIES]),
            large: false,
            generation: 0,
            last_page: None,
        }
    }
}

impl Tlb {
    /// Forgets every translation (CR0/CR4 paging changes).
    pub fn flush_all(&mut self) {
        self.changed(None);
        self.entries.iter_mut().for_each(|e| e.perm = 0);
        self.large = false;
    }

    /// Forgets all but global translations (a CR3 load).
    pub fn flush_non_global(&mut self) {
        self.changed(None);
        for e in self.entries.iter_mut() {
            if e.perm & perm::GLOBAL == 0 {
                e.perm = 0;
            }
        }
    }

    /// Forgets the translation of the page holding one linear address (INVLPG).
    pub fn flush_page(&mut self, lin: u64) {
        if self.large {
            self.flush_all();
            return;
        }
        let page = lin >> 12;
        self.changed(Some(page));
        let e = &mut self.entries[page as usize & (TLB_ENTRIES - 1)];
        if e.page == page {
            e.perm = 0;
        }
    }
}

impl Tlb {
    /// How many flushes there were: a translation cached elsewhere from this TLB's
    /// contents is good while this does not change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The one linear page dropped since generation `since`, if only one was.
    pub fn page_dropped_since(&self, since: u64) -> Option<u64> {
        self.last_page
            .filter(|_| self.generation == since.wrapping_add(1))
    }

    /// Tells translations kept elsewhere that they may be stale: `page` alone, or all.
    fn changed(&mut self, page: Option<u64>) {
        self.generation += 1;
        self.last_page = page;
    }
}

/// Whether the access at CPL `user` is allowed by an entry's permissions.
#[inline(always)]
pub(crate) fn allows(p: u8, access: Access, user: bool, wp: bool) -> bool {
    if user && p & perm::USER == 0 {
        return false;
    }
    match access {
        Access::Read => true,
        Access::Exec => p & perm::NX == 0,
        // Supervisor writes ignore R/W unless CR0.WP; the dirty bit must be set already.
        Access::Write => (p & perm::WRITE != 0 || (!user && !wp)) && p & perm::DIRTY != 0,
    }
}

/// Translates a linear address. `user` is true for accesses made at CPL 3 (implicit
/// supervisor accesses such as descriptor-table reads pass false).
#[inline]
pub fn translate(
    cpu: &mut Vcpu,
    ram: RamView<'_>,
    code: &CodeWatch,
    lin: u64,
    access: Access,
    user: bool,
) -> Result<u64, Exception> {
    if cpu.cr0 & cr0::PG == 0 {
        return Ok(lin);
    }
    let page = lin >> 12;
    let e = cpu.tlb.entries[page as usize & (TLB_ENTRIES - 1)];
    if e.perm & perm::VALID != 0
        && e.page == page
        && allows(e.perm, access, user, cpu.cr0 & cr0::WP != 0)
    {
        return Ok(e.phys | (lin & 0xFFF));
    }
    walk(cpu, ram, code, lin, access, user)
}

/// What fills a TLB entry: what the guest's tables (or shadow tables derived from
/// them) map a page to and allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fill {
    /// Physical page base.
    pub phys: u64,
    /// What the entry allows ([`perm`] bits).
    pub perm: u8,
    /// The mapping is part of a large page.
    pub large: bool,
}

/// Sets bits in a page-table entry in RAM (accessed, dirty). The bits live in the low
/// dword of every entry format, so a 4-byte update serves 32-bit and 64-bit entries.
/// The store is the MMU's, not a guest write: it drops code it overwrites, but is no
/// write to a traced page.
fn set_entry_bits(ram: RamView<'_>, code: &CodeWatch, pa: u64, bits: u64) {
    if let Some(v) = ram.read_le(pa, 4) {
        ram.write(pa, &((v | bits) as u32).to_le_bytes());
        code.vmm_write(pa, 4);
    }
}

/// Walks the guest's paging structures for an access and, if they allow it, sets the
/// accessed and dirty bits it calls for: the TLB fill and the walk. `Err` holds the
/// walk fault, or `None` for a protection violation.
pub(crate) fn guest_fill(
    regs: &PagingRegs,
    ram: RamView<'_>,
    code: &CodeWatch,
    lin: u64,
    access: Access,
    user: bool,
) -> Result<(Fill, paging::Translation), Option<WalkFault>> {
    let t = paging::walk(regs, &ram, lin).map_err(Some)?;
    if !t.allows(access, user, regs.cr0 & cr0::WP != 0) {
        return Err(None);
    }
    for (entry_pa, bits) in t.bits_to_set(access) {
        set_entry_bits(ram, code, entry_pa, bits);
    }
    let dirty = access == Access::Write || t.dirty;
    let mut p = perm::VALID;
    for (on, bit) in [
        (t.user, perm::USER),
        (t.writable, perm::WRITE),
        (t.no_exec, perm::NX),
        (dirty, perm::DIRTY),
        (t.global, perm::GLOBAL),
    ] {
        if on {
            p |= bit;
        }
    }
    let fill = Fill {
        phys: t.phys & !0xFFF,
        perm: p,
        large: t.page_bits > 12,
    };
    Ok((fill, t))
}

/// Fills the TLB for an access, from the guest's tables or, under a software VMM,
/// from the shadow tables; on failure sets CR2 and gives the guest's #PF.
fn walk(
    cpu: &mut Vcpu,
    ram: RamView<'_>,
    code: &CodeWatch,
    lin: u64,
    access: Access,
    user: bool,
) -> Result<u64, Exception> {
    let regs = PagingRegs::from(cpu.state());
    let found = match cpu.spt.as_deref_mut() {
        Some(spt) => spt.fill(&regs, ram, code, lin, access, user),
        None => guest_fill(&regs, ram, code, lin, access, user).map(|(fill, _)| fill),
    };
    if cpu.spt.as_mut().is_some_and(|s| s.take_new_traces()) {
        // Engines that keep fast write paths of their own must drop any to a page
        // that became traced.
        cpu.tlb.changed(None);
    }
    let fill = match found {
        Ok(fill) => fill,
        Err(fault) => {
            cpu.cr2 = lin;
            return Err(Exception {
                vector: vector::PF,
                error_code: Some(paging::fault_code(&regs, access, user, fault)),
            });
        }
    };
    let page = lin >> 12;
    cpu.tlb.large |= fill.large;
    cpu.tlb.entries[page as usize & (TLB_ENTRIES - 1)] = Entry {
        page,
        phys: fill.phys,
        perm: fill.perm,
    };
    Ok(fill.phys | (lin & 0xFFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invlpg_of_one_page_is_told_apart_from_wider_flushes() {
        let mut tlb = Tlb::default();
        let g = tlb.generation();
        tlb.flush_page(0x1234_5678);
        assert_eq!(tlb.page_dropped_since(g), Some(0x12345));
        // Two flushes since: a keeper of translations must drop everything.
        tlb.flush_page(0x9000);
        assert_eq!(tlb.page_dropped_since(g), None);
        let g = tlb.generation();
        tlb.flush_non_global();
        assert_eq!(tlb.page_dropped_since(g), None);
        let g = tlb.generation();
        tlb.flush_all();
        assert_eq!(tlb.page_dropped_since(g), None);
        // With a large page cached, INVLPG cannot find its other 4 KiB pieces.
        tlb.large = true;
        let g = tlb.generation();
        tlb.flush_page(0x40_0000);
        assert_eq!(tlb.page_dropped_since(g), None);
    }
}

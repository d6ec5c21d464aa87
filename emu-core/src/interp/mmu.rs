//! Paging: linear to physical translation for 32-bit, PAE and 4-level paging, with
//! U/S, R/W, NX and CR0.WP checks, accessed and dirty bits, and a software TLB.
//!
//! The TLB is direct-mapped by linear page number. An entry remembers what the walk
//! allowed (user access, writes, execution) and whether the dirty bit is already set, so
//! a hit that the entry allows costs one compare; anything else walks the tables again,
//! which also gives the precise page-fault error code.

use super::Cpu;
use crate::cpu::{cr0, cr4, efer};
use crate::exception::{vector, Exception};

/// Page-table entry bits.
mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User-accessible.
    pub const US: u64 = 1 << 2;
    /// Accessed (set by the processor on any use).
    pub const A: u64 = 1 << 5;
    /// Dirty (set by the processor on a write through a leaf entry).
    pub const D: u64 = 1 << 6;
    /// Page size: this directory entry maps a large page.
    pub const PS: u64 = 1 << 7;
    /// Global (with CR4.PGE).
    pub const G: u64 = 1 << 8;
    /// No-execute (with EFER.NXE).
    pub const NX: u64 = 1 << 63;
}

/// #PF error-code bits.
pub mod pf {
    /// The page was present: a protection violation, not a missing page.
    pub const PRESENT: u32 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u32 = 1 << 1;
    /// The access came from CPL 3.
    pub const USER: u32 = 1 << 2;
    /// A reserved bit was set in a paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// The access was an instruction fetch (reported with EFER.NXE).
    pub const FETCH: u32 = 1 << 4;
}

/// Physical address width Popek implements (what CPUID would report): bits above it
/// in a 64-bit entry are reserved.
pub const MAXPHYADDR: u32 = 40;
/// Address bits 51:12 of a 64-bit entry, limited to MAXPHYADDR.
const ADDR_MASK_64: u64 = ((1 << MAXPHYADDR) - 1) & !0xFFF;
/// Reserved bits of a 64-bit entry (between MAXPHYADDR and the NX bit).
const RSVD_64: u64 = ((1 << 52) - 1) & !((1 << MAXPHYADDR) - 1);
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

/// How memory is being accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Exec,
}

/// What a TLB entry allows.
mod perm {
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
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: Box::new([Entry::default(); TLB_ENTRIES]),
            large: false,
        }
    }
}

impl Tlb {
    /// Forgets every translation (CR0/CR4 paging changes).
    pub fn flush_all(&mut self) {
        self.entries.iter_mut().for_each(|e| e.perm = 0);
        self.large = false;
    }

    /// Forgets all but global translations (a CR3 load).
    pub fn flush_non_global(&mut self) {
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
        let e = &mut self.entries[page as usize & (TLB_ENTRIES - 1)];
        if e.page == page {
            e.perm = 0;
        }
    }
}

/// Whether the access at CPL `user` is allowed by an entry's permissions.
#[inline(always)]
fn allows(p: u8, access: Access, user: bool, wp: bool) -> bool {
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
    cpu: &mut Cpu,
    ram: &mut [u8],
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
    walk(cpu, ram, lin, access, user)
}

/// A page-table entry read from guest RAM; outside RAM reads as not present.
fn read_entry(ram: &[u8], pa: u64, wide: bool) -> u64 {
    let n = if wide { 8 } else { 4 };
    let Some(bytes) = usize::try_from(pa)
        .ok()
        .and_then(|p| ram.get(p..p.checked_add(n)?))
    else {
        return 0;
    };
    let mut buf = [0u8; 8];
    buf[..n].copy_from_slice(bytes);
    u64::from_le_bytes(buf)
}

/// Sets bits in a page-table entry in RAM (accessed, dirty).
fn set_entry_bits(ram: &mut [u8], pa: u64, bits: u64) {
    if let Some(b) = usize::try_from(pa)
        .ok()
        .and_then(|p| ram.get_mut(p..p.checked_add(4)?))
    {
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) | bits as u32;
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// One level of a walk: where its entry is and what it held.
#[derive(Debug, Clone, Copy, Default)]
struct Level {
    entry_pa: u64,
    entry: u64,
}

/// Walks the paging structures, setting accessed/dirty bits and filling the TLB.
fn walk(
    cpu: &mut Cpu,
    ram: &mut [u8],
    lin: u64,
    access: Access,
    user: bool,
) -> Result<u64, Exception> {
    let nxe = cpu.efer & efer::NXE != 0;
    let long = cpu.efer & efer::LMA != 0;
    let pae = cpu.cr4 & cr4::PAE != 0;
    let mut err = match access {
        Access::Write => pf::WRITE,
        Access::Exec if nxe => pf::FETCH,
        _ => 0,
    };
    if user {
        err |= pf::USER;
    }
    let fault = |cpu: &mut Cpu, code: u32| {
        cpu.cr2 = lin;
        Exception {
            vector: vector::PF,
            error_code: Some(code),
        }
    };

    // The levels of this paging mode: (index shift, entry is 8 bytes).
    let (mut table, shifts, wide): (u64, &[u32], bool) = if long {
        (cpu.cr3 & ADDR_MASK_64, &[39, 30, 21, 12], true)
    } else if pae {
        // PAE's four PDPTEs are read from CR3 (bits 31:5) like a first level.
        (cpu.cr3 & 0xFFFF_FFE0, &[30, 21, 12], true)
    } else {
        (cpu.cr3 & 0xFFFF_F000, &[22, 12], false)
    };
    let mut levels = [Level::default(); 4];
    let mut used = 0;
    let (mut writable, mut usr, mut nx) = (true, true, false);
    let mut page_bits = 12;
    let mut global = false;
    for (depth, &shift) in shifts.iter().enumerate() {
        let index_bits = if !wide {
            10
        } else if pae && !long && depth == 0 {
            2
        } else {
            9
        };
        let index = (lin >> shift) & ((1 << index_bits) - 1);
        let entry_pa = table + index * if wide { 8 } else { 4 };
        let entry = read_entry(ram, entry_pa, wide);
        if entry & pte::P == 0 {
            return Err(fault(cpu, err));
        }
        let pdpte = pae && !long && depth == 0;
        let last = depth == shifts.len() - 1;
        let large = !last && !pdpte && entry & pte::PS != 0 && (wide || cpu.cr4 & cr4::PSE != 0);
        let reserved = if wide {
            let mut r = entry & RSVD_64;
            if !nxe {
                r |= entry & pte::NX;
            }
            if pdpte {
                // PAE PDPTEs have no R/W, U/S, A, D, PS or NX bits.
                r |= entry & (pte::RW | pte::US | 0x1E0 | pte::NX);
            }
            if large {
                // The bits between the PAT bit (12) and the page base must be zero.
                r |= entry & (((1 << shift) - 1) & !0x1FFF);
            }
            r
        } else if large {
            // 4 MiB page: bits 21:13 reserved (no PSE-36 here).
            entry & 0x003F_E000
        } else {
            0
        };
        if reserved != 0 {
            return Err(fault(cpu, err | pf::PRESENT | pf::RSVD));
        }
        if !pdpte {
            writable &= entry & pte::RW != 0;
            usr &= entry & pte::US != 0;
            nx |= nxe && entry & pte::NX != 0;
        }
        levels[used] = Level { entry_pa, entry };
        used += 1;
        if last || large {
            page_bits = shift;
            global = cpu.cr4 & cr4::PGE != 0 && entry & pte::G != 0;
            break;
        }
        table = if wide {
            entry & ADDR_MASK_64
        } else {
            entry & 0xFFFF_F000
        };
    }
    let levels = &levels[..used];
    let leaf = levels.last().map(|l| l.entry).unwrap_or(0);
    let wp = cpu.cr0 & cr0::WP != 0;
    let denied = (user && !usr)
        || (access == Access::Write && !writable && (user || wp))
        || (access == Access::Exec && nx);
    if denied {
        return Err(fault(cpu, err | pf::PRESENT));
    }
    // Accessed on every level used (PAE PDPTEs have none), dirty on the leaf for writes.
    for (i, level) in levels.iter().enumerate() {
        if pae && !long && i == 0 {
            continue;
        }
        let mut bits = pte::A;
        if i == levels.len() - 1 && access == Access::Write {
            bits |= pte::D;
        }
        if level.entry & bits != bits {
            set_entry_bits(ram, level.entry_pa, bits);
        }
    }
    let base_mask = if wide { ADDR_MASK_64 } else { 0xFFFF_F000 };
    let offset_mask = (1u64 << page_bits) - 1;
    let phys = (leaf & base_mask & !offset_mask) | (lin & offset_mask);
    let dirty = access == Access::Write || leaf & pte::D != 0;
    let mut p = perm::VALID;
    for (on, bit) in [
        (usr, perm::USER),
        (writable, perm::WRITE),
        (nx, perm::NX),
        (dirty, perm::DIRTY),
        (global, perm::GLOBAL),
    ] {
        if on {
            p |= bit;
        }
    }
    let page = lin >> 12;
    cpu.tlb.large |= page_bits > 12;
    cpu.tlb.entries[page as usize & (TLB_ENTRIES - 1)] = Entry {
        page,
        phys: phys & !0xFFF,
        perm: p,
    };
    Ok(phys)
}

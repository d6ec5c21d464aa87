//! The page walk, without side effects: 32-bit, PAE and 4-level paging.
//!
//! [`walk`] reads the paging structures and says what they map and what they allow; it
//! writes nothing: no accessed or dirty bits, no CR2, no TLB. That is what a debugger,
//! the GUI or a shadow-page-table builder needs, and what the CPU's own access path
//! ([`crate::x86::mmu`]) builds on: it checks the walk's permissions against the access,
//! then sets the A/D bits the walk names, fills its TLB or raises the #PF.

use crate::cpu::{cr0, cr4, efer, CpuState};

/// Page-table entry bits.
pub mod pte {
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

/// Physical address width Popek implements (what CPUID reports): bits above it in a
/// 64-bit entry are reserved.
pub const MAXPHYADDR: u32 = 40;
/// Address bits 51:12 of a 64-bit entry, limited to MAXPHYADDR.
const ADDR_MASK_64: u64 = ((1 << MAXPHYADDR) - 1) & !0xFFF;
/// Reserved bits of a 64-bit entry (between MAXPHYADDR and the NX bit).
const RSVD_64: u64 = ((1 << 52) - 1) & !((1 << MAXPHYADDR) - 1);
/// Address bits of a 32-bit entry.
const ADDR_MASK_32: u64 = 0xFFFF_F000;
/// Bits 21:13 of a 4 MiB page-directory entry: reserved without PSE-36.
const RSVD_PSE_4M: u64 = 0x003F_E000;
/// PAE's PDPTEs have no R/W, U/S, A, D, PS or NX bits: setting one is reserved.
const RSVD_PDPTE: u64 = pte::RW | pte::US | 0x1E0 | pte::NX;

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

/// Reads paging-structure entries from guest-physical memory.
pub trait PhysRead {
    /// The little-endian value of `size` (4 or 8) bytes at `pa`; None outside RAM.
    fn read_entry(&self, pa: u64, size: usize) -> Option<u64>;
}

impl PhysRead for [u8] {
    fn read_entry(&self, pa: u64, size: usize) -> Option<u64> {
        let p = usize::try_from(pa).ok()?;
        let bytes = self.get(p..p.checked_add(size)?)?;
        let mut buf = [0u8; 8];
        buf[..size].copy_from_slice(bytes);
        Some(u64::from_le_bytes(buf))
    }
}

/// The registers that select and root the paging structures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingRegs {
    /// CR0 (PG, WP).
    pub cr0: u64,
    /// CR3: the root.
    pub cr3: u64,
    /// CR4 (PAE, PSE, PGE).
    pub cr4: u64,
    /// IA32_EFER (LMA, NXE).
    pub efer: u64,
}

impl From<&CpuState> for PagingRegs {
    fn from(s: &CpuState) -> Self {
        PagingRegs {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        }
    }
}

/// The paging mode the registers select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG clear: linear addresses are physical.
    Off,
    /// Two levels of 4-byte entries, 4 KiB or (with CR4.PSE) 4 MiB pages.
    Bits32,
    /// PAE: four PDPTEs, then two levels of 8-byte entries.
    Pae,
    /// Long mode: four levels of 8-byte entries.
    Level4,
}

impl PagingRegs {
    /// The paging mode.
    pub fn mode(&self) -> PagingMode {
        if self.cr0 & cr0::PG == 0 {
            PagingMode::Off
        } else if self.efer & efer::LMA != 0 {
            PagingMode::Level4
        } else if self.cr4 & cr4::PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32
        }
    }
}

/// One level of a walk: where its entry is and what it held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Level {
    /// Guest-physical address of the entry.
    pub entry_pa: u64,
    /// The entry.
    pub entry: u64,
    /// The entry is one of PAE's PDPTEs, which have no A bit and no permissions.
    pub pdpte: bool,
}

/// A completed walk: what the structures map the address to and what they allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address.
    pub phys: u64,
    /// log2 of the page size (12, 21, 22 or 30).
    pub page_bits: u32,
    /// Every level allows user (CPL 3) accesses.
    pub user: bool,
    /// Every level allows writes.
    pub writable: bool,
    /// Some level forbids instruction fetches (only with EFER.NXE).
    pub no_exec: bool,
    /// The leaf is global (with CR4.PGE).
    pub global: bool,
    /// The leaf's dirty bit is already set.
    pub dirty: bool,
    /// The entries used, root first.
    pub levels: [Level; 4],
    /// How many of `levels` the walk used.
    pub depth: usize,
}

/// Why a walk did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkFault {
    /// An entry on the way was not present.
    NotPresent,
    /// An entry had a reserved bit set.
    Reserved,
}

impl Translation {
    /// The levels the walk used, root first.
    pub fn levels(&self) -> &[Level] {
        &self.levels[..self.depth]
    }

    /// Whether the mapping allows `access` by CPL 3 (`user`) or by the kernel, CR0.WP
    /// deciding whether the kernel honours read-only pages.
    pub fn allows(&self, access: Access, user: bool, wp: bool) -> bool {
        !((user && !self.user)
            || (access == Access::Write && !self.writable && (user || wp))
            || (access == Access::Exec && self.no_exec))
    }

    /// The entries whose accessed bit the processor sets for this access, with the bits
    /// to set (A on every level but PAE's PDPTEs; D as well on the leaf for a write):
    /// only those not already set.
    pub fn bits_to_set(&self, access: Access) -> impl Iterator<Item = (u64, u64)> + '_ {
        let last = self.depth.saturating_sub(1);
        self.levels()
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.pdpte)
            .filter_map(move |(i, l)| {
                let mut bits = pte::A;
                if i == last && access == Access::Write {
                    bits |= pte::D;
                }
                (l.entry & bits != bits).then_some((l.entry_pa, bits))
            })
    }
}

/// The #PF error code for a failed access: `present` says whether the walk completed
/// (a protection violation) or stopped at a missing entry.
pub fn fault_code(regs: &PagingRegs, access: Access, user: bool, fault: Option<WalkFault>) -> u32 {
    let mut code = match access {
        Access::Write => pf::WRITE,
        Access::Exec if regs.efer & efer::NXE != 0 => pf::FETCH,
        _ => 0,
    };
    if user {
        code |= pf::USER;
    }
    match fault {
        Some(WalkFault::NotPresent) => code,
        Some(WalkFault::Reserved) => code | pf::PRESENT | pf::RSVD,
        None => code | pf::PRESENT,
    }
}

/// Walks the paging structures for `lin`. With paging off the address maps to itself
/// with every permission. Reads only: nothing in memory or the CPU changes.
pub fn walk(
    regs: &PagingRegs,
    mem: &(impl PhysRead + ?Sized),
    lin: u64,
) -> Result<Translation, WalkFault> {
    let mode = regs.mode();
    let mut t = Translation {
        phys: lin,
        page_bits: 12,
        user: true,
        writable: true,
        no_exec: false,
        global: false,
        dirty: true,
        levels: [Level::default(); 4],
        depth: 0,
    };
    // The levels of this mode: (index shift, entry size).
    let (mut table, shifts, wide): (u64, &[u32], bool) = match mode {
        PagingMode::Off => return Ok(t),
        PagingMode::Level4 => (regs.cr3 & ADDR_MASK_64, &[39, 30, 21, 12], true),
        // PAE's four PDPTEs are read from CR3 (bits 31:5) like a first level.
        PagingMode::Pae => (regs.cr3 & 0xFFFF_FFE0, &[30, 21, 12], true),
        PagingMode::Bits32 => (regs.cr3 & ADDR_MASK_32, &[22, 12], false),
    };
    let nxe = regs.efer & efer::NXE != 0;
    for (depth, &shift) in shifts.iter().enumerate() {
        let pdpte = mode == PagingMode::Pae && depth == 0;
        let index_bits = if !wide {
            10
        } else if pdpte {
            2
        } else {
            9
        };
        let index = (lin >> shift) & ((1 << index_bits) - 1);
        let size = if wide { 8 } else { 4 };
        let entry_pa = table + index * size as u64;
        // An entry outside RAM reads as not present.
        let entry = mem.read_entry(entry_pa, size).unwrap_or(0);
        if entry & pte::P == 0 {
            return Err(WalkFault::NotPresent);
        }
        let last = depth == shifts.len() - 1;
        let large = !last && !pdpte && entry & pte::PS != 0 && (wide || regs.cr4 & cr4::PSE != 0);
        let reserved = if wide {
            let mut r = entry & RSVD_64;
            if !nxe {
                r |= entry & pte::NX;
            }
            if pdpte {
                r |= entry & RSVD_PDPTE;
            }
            if large {
                // The bits between the PAT bit (12) and the page base must be zero.
                r |= entry & (((1 << shift) - 1) & !0x1FFF);
            }
            r
        } else if large {
            entry & RSVD_PSE_4M
        } else {
            0
        };
        if reserved != 0 {
            return Err(WalkFault::Reserved);
        }
        if !pdpte {
            t.writable &= entry & pte::RW != 0;
            t.user &= entry & pte::US != 0;
            t.no_exec |= nxe && entry & pte::NX != 0;
        }
        t.levels[depth] = Level {
            entry_pa,
            entry,
            pdpte,
        };
        t.depth = depth + 1;
        if last || large {
            let base_mask = if wide { ADDR_MASK_64 } else { ADDR_MASK_32 };
            let offset_mask = (1u64 << shift) - 1;
            t.page_bits = shift;
            t.phys = (entry & base_mask & !offset_mask) | (lin & offset_mask);
            t.global = regs.cr4 & cr4::PGE != 0 && entry & pte::G != 0;
            t.dirty = entry & pte::D != 0;
            return Ok(t);
        }
        table = entry & if wide { ADDR_MASK_64 } else { ADDR_MASK_32 };
    }
    unreachable!("the last level always returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(ram: &mut [u8], pa: u64, v: u64, size: usize) {
        ram[pa as usize..pa as usize + size].copy_from_slice(&v.to_le_bytes()[..size]);
    }

    const PG_PE: u64 = cr0::PG | cr0::PE;

    #[test]
    fn paging_off_maps_to_itself() {
        let regs = PagingRegs {
            cr0: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
        };
        let t = walk(&regs, &[0u8; 16][..], 0x1234_5678).unwrap();
        assert_eq!(t.phys, 0x1234_5678);
        assert!(t.allows(Access::Write, true, true));
    }

    #[test]
    fn two_level_walk_reports_levels_and_rights_without_writing() {
        let mut ram = vec![0u8; 0x10000];
        // PDE 1 -> table at 0x3000 (user, writable); PTE 2 -> 0x7000 (user, read-only).
        put(&mut ram, 0x2000 + 4, 0x3000 | pte::P | pte::RW | pte::US, 4);
        put(&mut ram, 0x3000 + 8, 0x7000 | pte::P | pte::US, 4);
        let before = ram.clone();
        let regs = PagingRegs {
            cr0: PG_PE,
            cr3: 0x2000,
            cr4: 0,
            efer: 0,
        };
        let lin = (1 << 22) | (2 << 12) | 0x123;
        let t = walk(&regs, &ram[..], lin).unwrap();
        assert_eq!(ram, before, "a walk writes nothing");
        assert_eq!(t.phys, 0x7123);
        assert_eq!(t.depth, 2);
        assert_eq!(t.levels()[1].entry_pa, 0x3008);
        assert!(t.user && !t.writable && !t.dirty);
        assert!(t.allows(Access::Read, true, false));
        assert!(!t.allows(Access::Write, true, false));
        assert!(
            t.allows(Access::Write, false, false),
            "kernel ignores R/W without WP"
        );
        assert!(!t.allows(Access::Write, false, true));
        let bits: Vec<_> = t.bits_to_set(Access::Write).collect();
        assert_eq!(bits, vec![(0x2004, pte::A), (0x3008, pte::A | pte::D)]);
    }

    #[test]
    fn missing_and_reserved_entries_fail_with_their_error_codes() {
        let mut ram = vec![0u8; 0x10000];
        let regs = PagingRegs {
            cr0: PG_PE,
            cr3: 0x2000,
            cr4: cr4::PSE,
            efer: 0,
        };
        assert_eq!(walk(&regs, &ram[..], 0), Err(WalkFault::NotPresent));
        // A 4 MiB page with a bit of 21:13 set.
        put(&mut ram, 0x2000, pte::P | pte::PS | (1 << 13), 4);
        assert_eq!(walk(&regs, &ram[..], 0), Err(WalkFault::Reserved));
        assert_eq!(
            fault_code(&regs, Access::Write, true, Some(WalkFault::Reserved)),
            pf::WRITE | pf::USER | pf::PRESENT | pf::RSVD
        );
        assert_eq!(fault_code(&regs, Access::Read, false, None), pf::PRESENT);
    }

    #[test]
    fn four_level_walk_with_a_large_page_and_nx() {
        let mut ram = vec![0u8; 0x10000];
        let regs = PagingRegs {
            cr0: PG_PE,
            cr3: 0x1000,
            cr4: cr4::PAE,
            efer: efer::LMA | efer::LME | efer::NXE,
        };
        put(&mut ram, 0x1000, 0x2000 | pte::P | pte::RW, 8);
        put(&mut ram, 0x2000, 0x3000 | pte::P | pte::RW, 8);
        // A 2 MiB page at 0x20_0000, not executable, already dirty.
        put(
            &mut ram,
            0x3000 + 8,
            0x20_0000 | pte::P | pte::RW | pte::PS | pte::D | pte::NX,
            8,
        );
        let t = walk(&regs, &ram[..], 0x20_1234 + (1 << 21) - 0x20_0000).unwrap();
        assert_eq!(t.page_bits, 21);
        assert_eq!(t.phys, 0x20_1234);
        assert!(t.no_exec && t.dirty && !t.user);
        assert!(!t.allows(Access::Exec, false, false));
        assert_eq!(
            fault_code(&regs, Access::Exec, false, None),
            pf::FETCH | pf::PRESENT
        );
    }
}

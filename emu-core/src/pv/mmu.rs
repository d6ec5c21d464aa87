//! Page-table updates the VMM validates ([`abi::HC_MMU_UPDATE`], [`abi::HC_MMU_BASE`]).
//!
//! A para-virtualized kernel does not write its live page tables itself: it hands the
//! VMM a batch of (entry address, value) pairs. The VMM checks each against the address
//! space rooted at CR3 and applies the batch in order, undoing it all if one entry is
//! refused. The rules (32-bit paging, the only mode these calls take for now):
//! - an entry lies in the page directory or in a page table a present directory entry
//!   points to, and is 4-byte aligned;
//! - a present entry maps only guest RAM (the guest does not own the rest);
//! - a ring-3 accessible entry maps none of the pages the VMM relies on: the hypercall
//!   page (it holds the IDT), the shared-info page, and the page tables themselves;
//! - a directory entry that points to a new page table is checked with every entry of
//!   that table.
//!
//! What is not checked: that a page becoming a page table is not already mapped for
//! ring 3 elsewhere (Xen tracks a type per page for that; Popek does not yet).

use super::abi::{self, MmuUpdate, EACCES, EFAULT, EINVAL, ENOSYS};
use super::guest::GuestMem;
use crate::cpu::{cr0, cr4, efer, CpuState};
use crate::memory::PAGE_SIZE;
use crate::x86::paging::pte;

/// Entries in a 32-bit page directory or table.
const ENTRIES: u64 = 1024;
/// Bytes of one 32-bit entry.
const ENTRY_SIZE: u64 = 4;
/// Address bits of a 32-bit entry.
const FRAME_MASK: u64 = 0xFFFF_F000;
/// Bytes mapped by a 4 MiB directory entry.
const LARGE_PAGE: u64 = 4 << 20;
/// Address bits of a 4 MiB directory entry (without PSE-36).
const LARGE_FRAME_MASK: u64 = 0xFFC0_0000;
/// The page containing an address.
const PAGE_MASK: u64 = !(PAGE_SIZE as u64 - 1);

/// Whether `cpu` uses (or, before paging is on, would use) 32-bit paging.
pub fn is_32bit_paging(cpu: &CpuState) -> bool {
    cpu.cr0 & cr0::PE != 0 && cpu.cr4 & cr4::PAE == 0 && cpu.efer & efer::LMA == 0
}

/// The address space the checks run against.
pub struct Space<'m, 'a> {
    mem: &'m GuestMem<'a>,
    /// The page directory.
    pd: u64,
    /// 4 MiB pages allowed (CR4.PSE).
    pse: bool,
    /// Pages ring 3 must not map besides the page tables.
    vmm_pages: Vec<u64>,
    /// The page tables the directory points to now.
    tables: Vec<u64>,
}

impl<'m, 'a> Space<'m, 'a> {
    /// The address space rooted at `pd`.
    pub fn new(mem: &'m GuestMem<'a>, cpu: &CpuState, pd: u64, vmm_pages: Vec<u64>) -> Self {
        let mut s = Space {
            mem,
            pd: pd & FRAME_MASK,
            pse: cpu.cr4 & cr4::PSE != 0,
            vmm_pages,
            tables: Vec::new(),
        };
        s.find_tables();
        s
    }

    fn entry(&self, pa: u64) -> u64 {
        self.mem.phys_u32(pa).map_or(0, u64::from)
    }

    /// Reads the directory for the page tables it points to.
    fn find_tables(&mut self) {
        self.tables = (0..ENTRIES)
            .map(|i| self.entry(self.pd + i * ENTRY_SIZE))
            .filter(|e| e & pte::P != 0 && !(self.pse && e & pte::PS != 0))
            .map(|e| e & FRAME_MASK)
            .collect();
    }

    fn in_ram(&self, start: u64, len: u64) -> bool {
        start
            .checked_add(len)
            .is_some_and(|end| end <= self.mem.ram.len() as u64)
    }

    /// Whether ring 3 must not map `[start, start + len)`.
    fn protected(&self, start: u64, len: u64) -> bool {
        let hit = |page: &u64| *page < start + len && start < page + PAGE_SIZE as u64;
        hit(&self.pd) || self.tables.iter().any(hit) || self.vmm_pages.iter().any(hit)
    }

    /// Checks a page-table entry (the last level) with value `val`.
    fn check_leaf(&self, val: u64, len: u64, frame_mask: u64) -> Result<(), i32> {
        if val & pte::P == 0 {
            return Ok(());
        }
        let frame = val & frame_mask;
        if !self.in_ram(frame, len) {
            return Err(-EACCES);
        }
        if val & pte::US != 0 && self.protected(frame, len) {
            return Err(-EACCES);
        }
        Ok(())
    }

    /// Checks a directory entry, and the table it points to.
    fn check_directory_entry(&self, val: u64) -> Result<(), i32> {
        if val & pte::P == 0 {
            return Ok(());
        }
        if self.pse && val & pte::PS != 0 {
            return self.check_leaf(val, LARGE_PAGE, LARGE_FRAME_MASK);
        }
        let table = val & FRAME_MASK;
        if !self.in_ram(table, PAGE_SIZE as u64) {
            return Err(-EACCES);
        }
        for i in 0..ENTRIES {
            self.check_leaf(
                self.entry(table + i * ENTRY_SIZE),
                PAGE_SIZE as u64,
                FRAME_MASK,
            )?;
        }
        Ok(())
    }

    /// Checks the whole address space (before it is loaded into CR3).
    pub fn check_all(&self) -> Result<(), i32> {
        if !self.in_ram(self.pd, PAGE_SIZE as u64) {
            return Err(-EFAULT);
        }
        for i in 0..ENTRIES {
            self.check_directory_entry(self.entry(self.pd + i * ENTRY_SIZE))?;
        }
        Ok(())
    }

    /// Checks and applies one update; returns the entry's old value.
    fn apply(&mut self, u: MmuUpdate) -> Result<u32, i32> {
        if !u.ptr.is_multiple_of(ENTRY_SIZE) || u.val >> 32 != 0 {
            return Err(-EINVAL);
        }
        let page = u.ptr & PAGE_MASK;
        if page == self.pd {
            self.check_directory_entry(u.val)?;
        } else if self.tables.contains(&page) {
            self.check_leaf(u.val, PAGE_SIZE as u64, FRAME_MASK)?;
        } else {
            return Err(-EINVAL);
        }
        let old = self.mem.phys_u32(u.ptr).ok_or(-EFAULT)?;
        if !self.mem.write_phys(u.ptr, &(u.val as u32).to_le_bytes()) {
            return Err(-EFAULT);
        }
        if page == self.pd {
            self.find_tables();
        }
        Ok(old)
    }

    /// Applies `updates` in order, all or none: on the first refused entry the ones
    /// before it are undone, and its error returned.
    pub fn apply_batch(&mut self, updates: &[MmuUpdate]) -> Result<(), i32> {
        let mut undo = Vec::with_capacity(updates.len());
        for u in updates {
            match self.apply(*u) {
                Ok(old) => undo.push((u.ptr, old)),
                Err(e) => {
                    for (ptr, old) in undo.into_iter().rev() {
                        self.mem.write_phys(ptr, &old.to_le_bytes());
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// The batch at linear `list`, `count` entries long.
pub fn read_batch(mem: &GuestMem<'_>, list: u64, count: u32) -> Result<Vec<MmuUpdate>, i32> {
    if count > abi::MMU_UPDATE_MAX {
        return Err(-EINVAL);
    }
    let mut bytes = vec![0u8; count as usize * abi::MMU_UPDATE_SIZE as usize];
    mem.read(list, &mut bytes)?;
    Ok(bytes
        .chunks_exact(abi::MMU_UPDATE_SIZE as usize)
        .map(|c| MmuUpdate {
            ptr: u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
            val: u64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
        })
        .collect())
}

/// The error for a page-table call in a mode other than 32-bit paging.
pub fn require_32bit_paging(cpu: &CpuState) -> Result<(), i32> {
    if is_32bit_paging(cpu) {
        Ok(())
    } else {
        Err(-ENOSYS)
    }
}

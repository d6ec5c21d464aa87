//! Guest memory as a hypercall sees it: pointer arguments are linear addresses of the
//! calling kernel, translated through its page tables with the walk debuggers use (no
//! accessed or dirty bits, no TLB), and every failure is an error code for the guest,
//! never a Popek error.

use super::abi::EFAULT;
use crate::cpu::{cr0, CpuState};
use crate::memory::{CodeWatch, RamView, PAGE_SIZE};
use crate::x86::paging::{self, PagingRegs};

/// The guest's memory, through the calling vCPU's page tables.
pub struct GuestMem<'a> {
    /// Guest RAM.
    pub ram: RamView<'a>,
    /// Which RAM holds decoded code.
    pub code: &'a CodeWatch,
    regs: PagingRegs,
}

impl<'a> GuestMem<'a> {
    /// The memory `cpu` sees.
    pub fn new(cpu: &CpuState, ram: RamView<'a>, code: &'a CodeWatch) -> Self {
        GuestMem {
            ram,
            code,
            regs: PagingRegs::from(cpu),
        }
    }

    /// The guest-physical address of `lin`, if mapped (writable, for a write the
    /// supervisor could make), and if `[.., + len)` stays in that page and in RAM.
    fn phys(&self, lin: u64, len: usize, write: bool) -> Result<u64, i32> {
        let t = paging::walk(&self.regs, &self.ram, lin).map_err(|_| -EFAULT)?;
        if write && !t.writable && self.regs.cr0 & cr0::WP != 0 {
            return Err(-EFAULT);
        }
        let end = t.phys.checked_add(len as u64).ok_or(-EFAULT)?;
        if end > self.ram.len() as u64 {
            return Err(-EFAULT);
        }
        Ok(t.phys)
    }

    /// Calls `f(phys, range)` for each page-sized piece of `[lin, lin + len)`, after
    /// checking every piece first, so that a write is all or nothing.
    fn pieces(&self, lin: u64, len: usize, write: bool) -> Result<Vec<(u64, usize, usize)>, i32> {
        let mut out = Vec::new();
        let mut done = 0;
        while done < len {
            let at = lin.checked_add(done as u64).ok_or(-EFAULT)?;
            let n = (PAGE_SIZE - (at as usize & (PAGE_SIZE - 1))).min(len - done);
            out.push((self.phys(at, n, write)?, done, n));
            done += n;
        }
        Ok(out)
    }

    /// Reads `buf.len()` bytes at linear `lin`.
    pub fn read(&self, lin: u64, buf: &mut [u8]) -> Result<(), i32> {
        for (pa, at, n) in self.pieces(lin, buf.len(), false)? {
            if !self.ram.read(pa, &mut buf[at..at + n]) {
                return Err(-EFAULT);
            }
        }
        Ok(())
    }

    /// Writes `data` at linear `lin`, all or nothing.
    pub fn write(&self, lin: u64, data: &[u8]) -> Result<(), i32> {
        for (pa, at, n) in self.pieces(lin, data.len(), true)? {
            if !self.ram.write(pa, &data[at..at + n]) {
                return Err(-EFAULT);
            }
            self.code.cpu_write(pa, n);
        }
        Ok(())
    }

    /// Reads a little-endian u32 at guest-physical `pa`.
    pub fn phys_u32(&self, pa: u64) -> Option<u32> {
        self.ram.read_le(pa, 4).map(|v| v as u32)
    }

    /// Writes bytes at guest-physical `pa`, reporting them to the code map.
    pub fn write_phys(&self, pa: u64, data: &[u8]) -> bool {
        let ok = self.ram.write(pa, data);
        if ok {
            self.code.cpu_write(pa, data.len());
        }
        ok
    }
}

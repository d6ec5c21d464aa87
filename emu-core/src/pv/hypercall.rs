//! The hypercalls: number in EAX, arguments in EBX, ECX, EDX, ESI, EDI, result in EAX
//! (negative: an error from [`abi`]). A bad call is an error code for the guest and a
//! counter for the VMM, never a Popek error.

use super::abi::{self, TrapInfo, EDEADLK, EFAULT, EINVAL, ENOENT, ENOSYS, EPERM};
use super::guest::GuestMem;
use super::mmu::{self, Space};
use super::{Pv, PvCounters};
use crate::cpu::{cr0, efer, CpuState, SegReg};
use crate::memory::PAGE_SIZE;
use crate::x86::segment::Descriptor;

/// What the VMM around [`Pv`] provides to hypercalls.
pub trait PvHost {
    /// Virtual time now, in nanoseconds.
    fn now_ns(&self) -> u64;
    /// Sends console output.
    fn console(&mut self, bytes: &[u8]);
    /// Lets virtual time run on to `ns` while the guest is blocked; false if a stop
    /// request cut the wait short.
    fn wait_until(&mut self, ns: u64) -> bool;
}

/// What a hypercall leaves for the engine and the VMM to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Paging changed: cached translations must go.
    pub flush_tlb: bool,
    /// The guest asked to shut down with this status.
    pub shutdown: Option<u32>,
}

/// An 8-byte 32-bit interrupt or trap gate.
fn gate(t: &TrapInfo) -> u64 {
    /// Gate types.
    const INTERRUPT_GATE: u64 = 0xE;
    const TRAP_GATE: u64 = 0xF;
    /// The present bit of the gate's access byte.
    const PRESENT: u64 = 0x80;
    let kind = if t.flags & abi::TRAP_KEEP_IF != 0 {
        TRAP_GATE
    } else {
        INTERRUPT_GATE
    };
    let access = PRESENT | (u64::from(t.flags & abi::TRAP_DPL_MASK) << 5) | kind;
    let off = u64::from(t.handler);
    (off & 0xFFFF) | (u64::from(t.cs) << 16) | (access << 40) | ((off >> 16) << 48)
}

impl Pv {
    /// Runs the hypercall in `cpu` (the state after the trap instruction), writes its
    /// result to EAX, and enters the event callback if an event waits for it.
    pub fn hypercall(
        &mut self,
        cpu: &mut CpuState,
        mem: &GuestMem<'_>,
        host: &mut dyn PvHost,
        counters: &mut PvCounters,
    ) -> Outcome {
        let nr = cpu.gpr[0] as u32;
        let mut out = Outcome::default();
        counters.slot(nr).calls += 1;
        self.tick(mem, host.now_ns());
        let result = if cpu.cpl() != 0 {
            Err(-EPERM)
        } else {
            self.call(nr, cpu, mem, host, &mut out)
        };
        let eax = match result {
            Ok(v) => v,
            Err(e) => {
                counters.slot(nr).errors += 1;
                e as u32
            }
        };
        cpu.gpr[0] = u64::from(eax);
        if out.shutdown.is_none() && self.deliver_event(cpu, mem) {
            counters.callbacks += 1;
        }
        out
    }

    fn call(
        &mut self,
        nr: u32,
        cpu: &mut CpuState,
        mem: &GuestMem<'_>,
        host: &mut dyn PvHost,
        out: &mut Outcome,
    ) -> Result<u32, i32> {
        let arg = |i: usize| cpu.gpr[i] as u32;
        let (ebx, ecx) = (arg(3), arg(1));
        match nr {
            abi::HC_CONSOLE_WRITE => {
                if ecx > abi::CONSOLE_WRITE_MAX {
                    return Err(-EINVAL);
                }
                let mut bytes = vec![0; ecx as usize];
                mem.read(ebx.into(), &mut bytes)?;
                host.console(&bytes);
                Ok(ecx)
            }
            abi::HC_SHUTDOWN => {
                out.shutdown = Some(ebx);
                Ok(0)
            }
            abi::HC_SCHED_OP => match ebx {
                abi::SCHED_YIELD => Ok(0),
                abi::SCHED_BLOCK => self.block(mem, host),
                _ => Err(-EINVAL),
            },
            abi::HC_SET_TIMER => {
                if self.shared_info.is_none() {
                    return Err(-ENOENT);
                }
                let delay = u64::from(ebx) | (u64::from(ecx) << 32);
                self.timer_deadline = (delay != 0).then(|| host.now_ns().saturating_add(delay));
                Ok(0)
            }
            abi::HC_MMU_UPDATE => {
                mmu::require_32bit_paging(cpu)?;
                let batch = mmu::read_batch(mem, ebx.into(), ecx)?;
                let mut space = Space::new(mem, cpu, cpu.cr3, self.vmm_pages());
                space.apply_batch(&batch)?;
                out.flush_tlb = true;
                Ok(0)
            }
            abi::HC_SET_TRAP_TABLE => self.set_trap_table(cpu, mem, ebx, ecx),
            abi::HC_SET_CALLBACK => {
                self.callback = (ebx != 0).then_some(ebx);
                Ok(0)
            }
            abi::HC_SHARED_INFO => {
                let page = u64::from(ebx);
                let in_ram = page + PAGE_SIZE as u64 <= mem.ram.len() as u64;
                if !page.is_multiple_of(PAGE_SIZE as u64)
                    || !in_ram
                    || Some(page) == self.hypercall_page
                {
                    return Err(-EINVAL);
                }
                // Events start masked, as interrupts do at boot.
                let mut init = [0u8; 16];
                init[..4].copy_from_slice(&1u32.to_le_bytes());
                mem.write_phys(page, &init);
                self.shared_info = Some(page);
                Ok(0)
            }
            abi::HC_MMU_BASE => {
                mmu::require_32bit_paging(cpu)?;
                let pd = u64::from(ebx);
                if !pd.is_multiple_of(PAGE_SIZE as u64) {
                    return Err(-EINVAL);
                }
                Space::new(mem, cpu, pd, self.vmm_pages()).check_all()?;
                cpu.cr3 = pd;
                cpu.cr0 |= cr0::PG | cr0::WP;
                out.flush_tlb = true;
                Ok(0)
            }
            _ => Err(-ENOSYS),
        }
    }

    /// The pages ring 3 may never map.
    fn vmm_pages(&self) -> Vec<u64> {
        self.hypercall_page
            .into_iter()
            .chain(self.shared_info)
            .collect()
    }

    /// A u32 field of the shared-info page.
    fn shared(&self, mem: &GuestMem<'_>, offset: u64) -> u32 {
        self.shared_info
            .and_then(|p| mem.phys_u32(p + offset))
            .unwrap_or(0)
    }

    fn set_shared(&self, mem: &GuestMem<'_>, offset: u64, value: &[u8]) {
        if let Some(page) = self.shared_info {
            mem.write_phys(page + offset, value);
        }
    }

    /// Brings the shared time up to date and fires an expired timer.
    fn tick(&mut self, mem: &GuestMem<'_>, now: u64) {
        self.set_shared(mem, abi::SHARED_TIME_NS, &now.to_le_bytes());
        if self.timer_deadline.is_some_and(|d| d <= now) {
            self.timer_deadline = None;
            let pending = self.shared(mem, abi::SHARED_EVENTS_PENDING) | abi::EVENT_TIMER;
            self.set_shared(mem, abi::SHARED_EVENTS_PENDING, &pending.to_le_bytes());
        }
    }

    /// SCHED_BLOCK: unmask events and wait for one. A stop request ends the wait early
    /// (a spurious wake-up, which guests loop on anyway).
    fn block(&mut self, mem: &GuestMem<'_>, host: &mut dyn PvHost) -> Result<u32, i32> {
        if self.shared_info.is_none() {
            return Err(-ENOENT);
        }
        if self.shared(mem, abi::SHARED_EVENTS_PENDING) == 0 {
            let Some(deadline) = self.timer_deadline else {
                return Err(-EDEADLK);
            };
            if host.wait_until(deadline) {
                self.tick(mem, host.now_ns());
            }
        }
        self.set_shared(mem, abi::SHARED_EVENTS_MASKED, &0u32.to_le_bytes());
        Ok(0)
    }

    /// If events are pending, unmasked and a callback is registered: enters the
    /// callback as if the guest had called it where it is now (its return address
    /// pushed on the stack), with events masked.
    /// Whether it did.
    fn deliver_event(&mut self, cpu: &mut CpuState, mem: &GuestMem<'_>) -> bool {
        let Some(callback) = self.callback else {
            return false;
        };
        if self.shared(mem, abi::SHARED_EVENTS_MASKED) != 0
            || self.shared(mem, abi::SHARED_EVENTS_PENDING) == 0
        {
            return false;
        }
        let esp = (cpu.gpr[4] as u32).wrapping_sub(4);
        let at = cpu.seg[SegReg::Ss].base.wrapping_add(esp.into()) & 0xFFFF_FFFF;
        if mem.write(at, &(cpu.rip as u32).to_le_bytes()).is_err() {
            // No stack to enter the callback on: the event stays pending.
            return false;
        }
        cpu.gpr[4] = u64::from(esp);
        cpu.rip = callback.into();
        self.set_shared(mem, abi::SHARED_EVENTS_MASKED, &1u32.to_le_bytes());
        true
    }

    /// HC_SET_TRAP_TABLE: checks every entry, then builds the IDT in the hypercall page
    /// and loads IDTR with it (the page must be mapped at its physical address).
    fn set_trap_table(
        &mut self,
        cpu: &mut CpuState,
        mem: &GuestMem<'_>,
        list: u32,
        count: u32,
    ) -> Result<u32, i32> {
        let page = self.hypercall_page.ok_or(-ENOENT)?;
        if cpu.cr0 & cr0::PE == 0 || cpu.efer & efer::LMA != 0 {
            return Err(-ENOSYS);
        }
        if count > 256 {
            return Err(-EINVAL);
        }
        let mut bytes = vec![0u8; (count as u64 * abi::TRAP_INFO_SIZE) as usize];
        mem.read(list.into(), &mut bytes)?;
        let mut idt = vec![0u8; abi::IDT_SIZE as usize];
        for c in bytes.chunks_exact(abi::TRAP_INFO_SIZE as usize) {
            let t = TrapInfo {
                vector: c[0],
                flags: c[1],
                cs: u16::from_le_bytes([c[2], c[3]]),
                handler: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            };
            self.check_trap(cpu, mem, &t)?;
            let at = usize::from(t.vector) * 8;
            idt[at..at + 8].copy_from_slice(&gate(&t).to_le_bytes());
        }
        let base = page + abi::IDT_OFFSET;
        if !mem.write_phys(base, &idt) {
            return Err(-EFAULT);
        }
        cpu.idtr.base = base;
        cpu.idtr.limit = (abi::IDT_SIZE - 1) as u16;
        Ok(0)
    }

    /// One trap-table entry: known flags, a handler, and a selector naming a present,
    /// 32-bit, ring-0 code segment in the GDT whose limit covers the handler.
    fn check_trap(&self, cpu: &CpuState, mem: &GuestMem<'_>, t: &TrapInfo) -> Result<(), i32> {
        if t.flags & !(abi::TRAP_DPL_MASK | abi::TRAP_KEEP_IF) != 0 || t.handler == 0 {
            return Err(-EINVAL);
        }
        /// The table-indicator bit of a selector: the LDT.
        const TI: u16 = 1 << 2;
        let index = u64::from(t.cs >> 3);
        if t.cs & TI != 0 || index == 0 || index * 8 + 7 > u64::from(cpu.gdtr.limit) {
            return Err(-EINVAL);
        }
        let mut raw = [0u8; 8];
        mem.read(cpu.gdtr.base + index * 8, &mut raw)
            .map_err(|_| -EINVAL)?;
        let d = Descriptor(u64::from_le_bytes(raw));
        if !d.is_code() || !d.present() || d.dpl() != 0 || !d.is_default32() || d.is_long() {
            return Err(-EINVAL);
        }
        if t.handler > d.limit() {
            return Err(-EINVAL);
        }
        Ok(())
    }
}

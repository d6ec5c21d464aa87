//! What an instruction handler works on: the CPU, guest RAM and the exit handler, with
//! register, memory and operand access.

use super::mmu::{self, Access};
use super::segaccess::{self, Addr};
use super::{Assist, Fault, Vcpu};
use crate::cpu::SegReg;
use crate::cpu::{cr0, efer, rflags};
use crate::engine::DebugConfig;
use crate::exception::Exception;
use crate::exit::{ExitHandler, Flow, GuestEvent, RingCause, StopReason, VmExit};
use crate::memory::{CodeWatch, RamView};
use iced_x86::{Instruction, OpKind, Register};

pub use crate::memory::{PAGE_SHIFT, PAGE_SIZE};

/// Where an operand lives, resolved once for read-modify-write instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// A register.
    Reg(Register),
    /// Memory, at an address segmentation allowed the access at.
    Mem(Addr),
}

/// The execution context handed to every instruction handler.
pub struct Ctx<'a> {
    /// The CPU.
    pub cpu: &'a mut Vcpu,
    /// Guest RAM (guest-physical 0 upwards).
    pub ram: RamView<'a>,
    /// The VMM, for port I/O, MMIO and other exits.
    pub exits: &'a mut dyn ExitHandler,
    /// Set by a handler when the block must end after this instruction (the execution
    /// environment changed: code was overwritten, a device wants attention, ...).
    pub end_block: bool,
    /// Set when the run must end after this instruction: the VMM asked to stop, or an
    /// exception could not be delivered.
    pub stop: Option<StopReason>,
    /// Which bytes of RAM hold decoded code, and which of them were written.
    pub code: &'a CodeWatch,
    /// Instructions retired so far (the guest's time-stamp counter).
    pub icount: u64,
    /// When to ask the interrupt controller again (an instruction count); 0 = at once.
    pub next_poll: u64,
    /// The instruction count at which this run's budget is used up.
    pub budget_end: u64,
    /// Exceptions and hardware interrupts delivered in this run. A delivery retires no
    /// instruction, so a guest whose handler faults at once (a corrupt gate, a handler
    /// in absent memory) or an interrupt storm would never use up the budget: the run
    /// loop bounds these apart, by the same budget.
    pub delivered: u64,
    /// The event being delivered is a fault: its pushed EFLAGS image gets RF.
    pub push_rf: bool,
    /// The DR6 bits of the #DB trap the current instruction raises when it completes
    /// (single step, data breakpoints); delivering an event discards them, as the
    /// processor does for INT n. Only the debug slow path sets it.
    pub debug_trap: u64,
    /// The VMM policy: which events are exits.
    pub assist: Assist,
    /// The debugger's breakpoints and watchpoints, if it set any.
    pub debugger: Option<&'a DebugConfig>,
    /// The run's first instruction is not stopped at by a breakpoint (a run resumed at
    /// a breakpoint moves on); cleared once it has run.
    pub skip_breakpoint: bool,
}

impl Ctx<'_> {
    /// Holds off interrupts until after the next instruction (after STI, MOV SS, POP SS;
    /// `kind` is a [`crate::cpu::shadow`] bit): the shadow is part of the state at the
    /// boundary in between, and the next poll waits until it ends.
    pub fn inhibit_interrupts(&mut self, kind: u8) {
        self.cpu.interrupt_shadow |= kind;
        self.cpu.shadow_end = self.icount + 2;
        self.next_poll = self.cpu.shadow_end;
    }
}

/// The address size of `ins`'s memory operand, in bytes: that of its base register,
/// else of its index, else of its displacement (iced-x86 gives a register of the
/// operand's address size).
#[inline]
pub(crate) fn address_size(ins: &Instruction) -> usize {
    if ins.memory_base() != Register::None {
        ins.memory_base().size()
    } else if ins.memory_index() != Register::None {
        ins.memory_index().size()
    } else {
        ins.memory_displ_size() as usize
    }
}

impl<'a> Ctx<'a> {
    /// A context over this CPU, RAM and VMM.
    pub fn new(
        cpu: &'a mut Vcpu,
        ram: RamView<'a>,
        exits: &'a mut dyn ExitHandler,
        code: &'a CodeWatch,
    ) -> Self {
        Ctx {
            cpu,
            ram,
            exits,
            end_block: false,
            stop: None,
            code,
            icount: 0,
            next_poll: 0,
            budget_end: u64::MAX,
            delivered: 0,
            push_rf: false,
            debug_trap: 0,
            assist: Assist::None,
            debugger: None,
            skip_breakpoint: true,
        }
    }

    /// Whether code was written since the engine last dropped what was overwritten:
    /// by the CPU (self-modifying code) or by a device or debugger during an exit.
    pub fn has_smc(&self) -> bool {
        self.code.has_written()
    }

    /// Under shadow paging, has the VMM take the guest's writes to traced page tables
    /// (trace faults) now, as a trap would: the shadow entries derived from each
    /// written table go.
    pub fn take_trace_faults(&mut self) {
        if let Some(spt) = self.cpu.spt.as_deref_mut() {
            if self.code.has_traced() {
                spt.propagate(self.code);
                spt.report(self.exits, self.icount);
            }
        }
    }

    /// Hands an exit to the VMM; a stop request ends the run after this instruction.
    pub fn exit(&mut self, exit: VmExit<'_>) {
        if let Flow::Stop(reason) = self.exits.handle(exit, self.icount) {
            self.stop = Some(reason);
            self.end_block = true;
        }
        // A device may have written over code (DMA).
        if self.code.has_written() {
            self.end_block = true;
        }
        // A device may have raised or lowered an interrupt line.
        self.next_poll = 0;
    }

    /// A hypercall: hands the state after the trap instruction to the VMM, which may
    /// change it (EAX; RIP when it enters the event callback; paging and IDTR), and
    /// ends the block, since anything may have changed.
    pub fn hypercall(&mut self) {
        let mut flush_tlb = false;
        let exit = VmExit::Hypercall {
            cpu: self.cpu,
            ram: self.ram,
            code: self.code,
            flush_tlb: &mut flush_tlb,
        };
        if let Flow::Stop(reason) = self.exits.handle(exit, self.icount) {
            self.stop = Some(reason);
        }
        if flush_tlb {
            self.cpu.tlb.flush_all();
        }
        self.end_block = true;
        self.next_poll = 0;
    }

    /// At an interrupt poll: lets the VMM enter a para-virtualized guest's event
    /// callback if its timer has expired (the virtual interrupt).
    pub fn poll_upcall(&mut self) {
        if self.exits.upcall_due(self.icount)
            && self
                .exits
                .upcall(self.cpu, self.ram, self.code, self.icount)
        {
            self.end_block = true;
        }
    }

    /// RDMSR or WRMSR of an MSR the VMM implements: the value read, or #GP(0) if the
    /// VMM refused the access.
    pub fn vmm_msr(&mut self, write: bool, index: u32, value: u64) -> Result<u64, Exception> {
        let (mut value, mut ok) = (value, false);
        let exit = VmExit::VmmMsr {
            write,
            index,
            value: &mut value,
            ok: &mut ok,
            ram: self.ram,
            code: self.code,
        };
        if let Flow::Stop(reason) = self.exits.handle(exit, self.icount) {
            self.stop = Some(reason);
        }
        self.end_block = true;
        if ok {
            Ok(value)
        } else {
            Err(Exception::general_protection(0))
        }
    }

    /// Under hardware assist, hands the VM exit `make` builds to the VMM (the events
    /// VT-x exits on that the interpreter otherwise handles itself).
    pub fn assist_exit<'e>(&mut self, make: impl FnOnce() -> VmExit<'e>) {
        if self.assist == Assist::Vtx {
            self.exit(make());
        }
    }

    /// Reports a guest event to the VMM; a debugger waiting for it stops the run after
    /// this instruction.
    pub fn notify(&mut self, event: GuestEvent) {
        // Shadow-paging faults come first: a true one is the exception's cause.
        self.report_shadow_faults();
        if let Flow::Stop(reason) = self.exits.notify(event, self.icount) {
            self.stop = Some(reason);
            self.end_block = true;
        }
    }

    /// Traces the faults shadow paging kept since the last report (only under shadow
    /// paging with `--trace engine`), at the current instruction count.
    pub fn report_shadow_faults(&mut self) {
        if let Some(spt) = self.cpu.spt.as_mut() {
            spt.report(self.exits, self.icount);
        }
    }

    /// Tells the VMM if a control transfer that just committed changed the CPL.
    pub fn report_ring_change(&mut self, from: u8, cause: RingCause) {
        let to = self.cpu.cpl();
        if to != from {
            let event = GuestEvent::RingTransition { from, to, cause };
            self.notify(event);
        }
    }

    // ---- registers ----

    /// Reads a general-purpose register of any width (8-bit high registers included).
    #[inline(always)]
    pub fn reg(&self, r: Register) -> u64 {
        let n = r as usize;
        match n {
            1..=20 => {
                let i = n - 1;
                if (4..8).contains(&i) {
                    (self.cpu.gpr[i - 4] >> 8) & 0xFF
                } else if i < 4 {
                    self.cpu.gpr[i] & 0xFF
                } else {
                    self.cpu.gpr[i - 4] & 0xFF
                }
            }
            21..=36 => self.cpu.gpr[n - 21] & 0xFFFF,
            37..=52 => self.cpu.gpr[n - 37] & 0xFFFF_FFFF,
            53..=68 => self.cpu.gpr[n - 53],
            _ => self.special_reg(r),
        }
    }

    fn special_reg(&self, r: Register) -> u64 {
        match r {
            Register::EIP => self.cpu.rip & 0xFFFF_FFFF,
            Register::RIP => self.cpu.rip,
            Register::ES
            | Register::CS
            | Register::SS
            | Register::DS
            | Register::FS
            | Register::GS => self.cpu.seg[seg_of(r)].selector.into(),
            _ => 0,
        }
    }

    /// Writes a general-purpose register: 8- and 16-bit writes merge, 32-bit writes
    /// zero the upper half, as the hardware does.
    #[inline(always)]
    pub fn set_reg(&mut self, r: Register, v: u64) {
        let n = r as usize;
        match n {
            1..=20 => {
                let i = n - 1;
                let (idx, shift) = if (4..8).contains(&i) {
                    (i - 4, 8)
                } else if i < 4 {
                    (i, 0)
                } else {
                    (i - 4, 0)
                };
                let old = self.cpu.gpr[idx];
                self.cpu.gpr[idx] = (old & !(0xFF << shift)) | ((v & 0xFF) << shift);
            }
            21..=36 => {
                let old = self.cpu.gpr[n - 21];
                self.cpu.gpr[n - 21] = (old & !0xFFFF) | (v & 0xFFFF);
            }
            37..=52 => self.cpu.gpr[n - 37] = v & 0xFFFF_FFFF,
            53..=68 => self.cpu.gpr[n - 53] = v,
            _ => debug_assert!(false, "set_reg on {r:?}"),
        }
    }

    // ---- addresses ----

    /// Effective address (offset in the segment) of the memory operand, wrapped to its
    /// [`address_size`].
    #[inline]
    pub fn effective_address(&self, ins: &Instruction) -> u64 {
        let mut ea = ins.memory_displacement64();
        let base = ins.memory_base();
        let index = ins.memory_index();
        // iced-x86 already folds the next IP into RIP-relative displacements.
        if base != Register::None && base != Register::RIP && base != Register::EIP {
            ea = ea.wrapping_add(self.reg(base));
        }
        if index != Register::None {
            ea = ea.wrapping_add(self.reg(index) << ins.memory_index_scale().trailing_zeros());
        }
        match address_size(ins) {
            2 => ea & 0xFFFF,
            4 => ea & 0xFFFF_FFFF,
            _ => ea,
        }
    }

    /// Linear address of `offset` in segment `seg`, for what is not a data access
    /// (instruction fetches, breakpoint addresses, INVLPG): no checks.
    #[inline(always)]
    pub fn linear(&self, seg: SegReg, offset: u64) -> u64 {
        self.cpu.linear(seg, offset)
    }

    /// The address of a data access of `len` bytes at `offset` in segment `seg`, if
    /// segmentation allows it (see [`segaccess`]); else #SS(0) through SS, #GP(0)
    /// through the others. The only way to an [`Addr`], which every data read and
    /// write needs.
    #[inline(always)]
    pub fn seg_addr(
        &self,
        seg: SegReg,
        offset: u64,
        len: u32,
        access: Access,
    ) -> Result<Addr, Fault> {
        segaccess::address(self.cpu, seg, offset, len, access)
            .ok_or_else(|| segaccess::refused(seg))
    }

    /// The checked address of the instruction's memory operand, `len` bytes of it (all
    /// of it: both parts of a far pointer, the whole FXSAVE area), for `access`. A
    /// read-modify-write operand is checked as a write: that needs a writable data
    /// segment, which is also readable, so it faults before the read. (The caller
    /// knows the size: looking it up again costs the fast path.)
    #[inline]
    pub fn mem_addr(&self, ins: &Instruction, len: u32, access: Access) -> Result<Addr, Fault> {
        let seg = seg_of(ins.memory_segment());
        self.seg_addr(seg, self.effective_address(ins), len, access)
    }

    // ---- memory ----

    /// Reads `size` bytes (1, 2, 4 or 8) at a checked address, little-endian, with the
    /// current privilege level's permissions.
    #[inline]
    pub fn read(&mut self, at: Addr, size: u8) -> Result<u64, Fault> {
        let user = self.cpu.cpl() == 3;
        let lin = at.linear();
        self.check_alignment(lin, size, user)?;
        self.read_as(lin, size, Access::Read, user)
    }

    /// #AC: with CR0.AM and EFLAGS.AC set, a misaligned data access at CPL 3 faults.
    #[inline(always)]
    fn check_alignment(&self, lin: u64, size: u8, user: bool) -> Result<(), Fault> {
        if self.cpu.cr0 & cr0::AM != 0
            && user
            && lin & (size as u64).wrapping_sub(1) != 0
            && self.cpu.rflags.control(rflags::AC)
        {
            return Err(Exception::alignment_check().into());
        }
        Ok(())
    }

    /// Writes the low `size` bytes of `v` at a checked address as the current CPL.
    #[inline]
    pub fn write(&mut self, at: Addr, size: u8, v: u64) -> Result<(), Fault> {
        let user = self.cpu.cpl() == 3;
        let lin = at.linear();
        self.check_alignment(lin, size, user)?;
        self.write_as(lin, size, v, user)
    }

    /// A read the processor makes on its own behalf (descriptor tables, TSS, IDT) at a
    /// linear address, not through a segment register: it has supervisor rights
    /// whatever the CPL.
    pub fn read_sys(&mut self, lin: u64, size: u8) -> Result<u64, Fault> {
        self.check_canonical(lin)?;
        self.read_as(lin, size, Access::Read, false)
    }

    /// A write the processor makes on its own behalf (descriptor accessed bits, the
    /// busy bit of a TSS).
    pub fn write_sys(&mut self, lin: u64, size: u8, v: u64) -> Result<(), Fault> {
        self.check_canonical(lin)?;
        self.write_as(lin, size, v, false)
    }

    /// Writes a run of bytes (at most a page) at a checked address as the current CPL:
    /// every page it touches is translated before any byte is written, so a fault
    /// leaves memory untouched.
    pub fn write_bytes(&mut self, at: Addr, bytes: &[u8]) -> Result<(), Fault> {
        let user = self.cpu.cpl() == 3;
        let lin = at.linear();
        let first = (0x1000 - (lin & 0xFFF) as usize).min(bytes.len());
        let pa1 = self.translate(lin, Access::Write, user)?;
        let pa2 = if bytes.len() > first {
            Some(self.translate(lin.wrapping_add(first as u64), Access::Write, user)?)
        } else {
            None
        };
        self.write_phys(pa1, &bytes[..first]);
        if let Some(pa2) = pa2 {
            self.write_phys(pa2, &bytes[first..]);
        }
        Ok(())
    }

    /// A write with the rights of privilege level `cpl` (interrupt frames are pushed
    /// with the rights of the ring being entered).
    pub fn write_as_cpl(&mut self, at: Addr, size: u8, v: u64, cpl: u8) -> Result<(), Fault> {
        self.write_as(at.linear(), size, v, cpl == 3)
    }

    /// Translates a linear address for an access.
    #[inline(always)]
    pub fn translate(&mut self, lin: u64, access: Access, user: bool) -> Result<u64, Fault> {
        Ok(mmu::translate(
            self.cpu, self.ram, self.code, lin, access, user,
        )?)
    }

    /// Translates for a look ahead whose fault is not raised (the instruction is run
    /// again, and faults then): a fault leaves CR2 and the count of true faults under
    /// shadow paging as they were.
    pub fn translate_probe(&mut self, lin: u64, access: Access, user: bool) -> Result<u64, Fault> {
        let cr2 = self.cpu.cr2;
        let mark = self.cpu.spt.as_ref().map(|s| s.true_fault_mark());
        let r = self.translate(lin, access, user);
        if r.is_err() {
            self.cpu.cr2 = cr2;
            if let (Some(spt), Some(mark)) = (self.cpu.spt.as_mut(), mark) {
                spt.forget_true_faults(mark);
            }
        }
        r
    }

    /// In long mode a linear address must be canonical (bits 63:47 all equal), else the
    /// access raises #GP(0) before any translation. (Data accesses are checked when
    /// their [`Addr`] is made, with #SS for the stack.)
    #[inline(always)]
    pub fn check_canonical(&self, lin: u64) -> Result<(), Fault> {
        if self.cpu.efer & efer::LMA != 0 && !mmu::is_canonical(lin) {
            return Err(Exception::general_protection(0).into());
        }
        Ok(())
    }

    #[inline]
    fn read_as(&mut self, lin: u64, size: u8, access: Access, user: bool) -> Result<u64, Fault> {
        let n = size as usize;
        if self.cpu.cr0 & cr0::PG != 0 && (lin & 0xFFF) as usize + n > 0x1000 {
            return self.read_across_pages(lin, n, access, user);
        }
        let pa = self.translate(lin, access, user)?;
        Ok(self.read_phys(pa, n))
    }

    /// A read that straddles two pages: both are translated before anything is read.
    #[cold]
    fn read_across_pages(
        &mut self,
        lin: u64,
        n: usize,
        access: Access,
        user: bool,
    ) -> Result<u64, Fault> {
        let first = 0x1000 - (lin & 0xFFF) as usize;
        let pa1 = self.translate(lin, access, user)?;
        let pa2 = self.translate(lin.wrapping_add(first as u64), access, user)?;
        let mut v = 0u64;
        for i in (0..n).rev() {
            let pa = if i < first {
                pa1 + i as u64
            } else {
                pa2 + (i - first) as u64
            };
            v = (v << 8) | self.read_phys(pa, 1);
        }
        Ok(v)
    }

    #[inline]
    fn write_as(&mut self, lin: u64, size: u8, v: u64, user: bool) -> Result<(), Fault> {
        let n = size as usize;
        if self.cpu.cr0 & cr0::PG != 0 && (lin & 0xFFF) as usize + n > 0x1000 {
            return self.write_across_pages(lin, n, v, user);
        }
        let pa = self.translate(lin, Access::Write, user)?;
        self.write_phys(pa, &v.to_le_bytes()[..n]);
        Ok(())
    }

    /// A write that straddles two pages: both must be writable before either is written.
    #[cold]
    fn write_across_pages(&mut self, lin: u64, n: usize, v: u64, user: bool) -> Result<(), Fault> {
        let first = 0x1000 - (lin & 0xFFF) as usize;
        let pa1 = self.translate(lin, Access::Write, user)?;
        let pa2 = self.translate(lin.wrapping_add(first as u64), Access::Write, user)?;
        let bytes = v.to_le_bytes();
        self.write_phys(pa1, &bytes[..first]);
        self.write_phys(pa2, &bytes[first..n]);
        Ok(())
    }

    /// Reads `n` bytes at a guest-physical address: RAM, or MMIO beyond it.
    #[inline]
    pub fn read_phys(&mut self, pa: u64, n: usize) -> u64 {
        match self.ram.read_le(pa, n) {
            Some(v) => v,
            None => self.read_slow(pa, n),
        }
    }

    /// A read that leaves RAM: each byte from RAM or, as a whole, from MMIO.
    #[cold]
    fn read_slow(&mut self, pa: u64, n: usize) -> u64 {
        let mut buf = [0u8; 8];
        if pa < self.ram.len() as u64 {
            // Straddles the end of RAM: the RAM part, then open bus (0xFF).
            for (i, b) in buf.iter_mut().enumerate().take(n) {
                *b = self.ram.read_le(pa + i as u64, 1).unwrap_or(0xFF) as u8;
            }
        } else {
            buf[..n].fill(0xFF);
            self.exit(VmExit::MmioRead {
                addr: pa,
                data: &mut buf[..n],
            });
        }
        u64::from_le_bytes(buf)
    }

    /// Writes bytes at a guest-physical address: RAM, or MMIO beyond it.
    #[inline]
    pub fn write_phys(&mut self, pa: u64, bytes: &[u8]) {
        if self.ram.write(pa, bytes) {
            self.note_code_write(pa, bytes.len());
            return;
        }
        self.write_slow(pa, bytes);
    }

    #[cold]
    fn write_slow(&mut self, pa: u64, bytes: &[u8]) {
        if pa < self.ram.len() as u64 {
            let ram_part = (self.ram.len() as u64 - pa) as usize;
            let n = ram_part.min(bytes.len());
            self.ram.write(pa, &bytes[..n]);
            self.note_code_write(pa, n);
        } else {
            self.exit(VmExit::MmioWrite {
                addr: pa,
                data: bytes,
            });
        }
    }

    /// Notes a write to RAM that may hit decoded code: the block ends after this
    /// instruction, and the run loop drops what was overwritten.
    #[inline(always)]
    fn note_code_write(&mut self, pa: u64, n: usize) {
        if self.code.cpu_write(pa, n) {
            self.end_block = true;
        }
    }

    // ---- operands ----

    /// Resolves operand `i` of `size` bytes to a register or, checked for `access` (a
    /// write for a read-modify-write operand), a memory address.
    #[inline]
    pub fn locate(
        &self,
        ins: &Instruction,
        i: u32,
        size: u8,
        access: Access,
    ) -> Result<Loc, Fault> {
        Ok(match ins.op_kind(i) {
            OpKind::Register => Loc::Reg(ins.op_register(i)),
            _ => Loc::Mem(self.mem_addr(ins, size.into(), access)?),
        })
    }

    /// Reads a resolved operand.
    #[inline]
    pub fn load(&mut self, loc: Loc, size: u8) -> Result<u64, Fault> {
        match loc {
            Loc::Reg(r) => Ok(self.reg(r)),
            Loc::Mem(at) => self.read(at, size),
        }
    }

    /// Writes a resolved operand.
    #[inline]
    pub fn store(&mut self, loc: Loc, size: u8, v: u64) -> Result<(), Fault> {
        match loc {
            Loc::Reg(r) => {
                self.set_reg(r, v);
                Ok(())
            }
            Loc::Mem(at) => self.write(at, size, v),
        }
    }

    /// Reads operand `i` (register, memory or immediate), not masked to any size.
    #[inline]
    pub fn operand(&mut self, ins: &Instruction, i: u32) -> Result<u64, Fault> {
        match ins.op_kind(i) {
            OpKind::Register => Ok(self.reg(ins.op_register(i))),
            OpKind::Memory => {
                let size = ins.memory_size().size() as u8;
                let at = self.mem_addr(ins, size.into(), Access::Read)?;
                self.read(at, size)
            }
            OpKind::Immediate8
            | OpKind::Immediate8_2nd
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Ok(ins.immediate(i)),
            _ => Err(Fault::Unsupported),
        }
    }

    /// Writes operand `i` (register or memory).
    #[inline]
    pub fn set_operand(&mut self, ins: &Instruction, i: u32, v: u64) -> Result<(), Fault> {
        let size = operand_size(ins, i);
        let loc = self.locate(ins, i, size, Access::Write)?;
        self.store(loc, size, v)
    }
}

/// The segment register iced-x86 names, as a [`SegReg`].
#[inline(always)]
pub fn seg_of(r: Register) -> SegReg {
    match r {
        Register::ES => SegReg::Es,
        Register::CS => SegReg::Cs,
        Register::SS => SegReg::Ss,
        Register::FS => SegReg::Fs,
        Register::GS => SegReg::Gs,
        _ => SegReg::Ds,
    }
}

/// Size in bytes of operand `i` (register or memory).
#[inline(always)]
pub fn operand_size(ins: &Instruction, i: u32) -> u8 {
    match ins.op_kind(i) {
        OpKind::Register => ins.op_register(i).size() as u8,
        _ => ins.memory_size().size() as u8,
    }
}

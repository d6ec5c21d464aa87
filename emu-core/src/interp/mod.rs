//! The interpreter: decodes guest code with iced-x86 and executes it in software.
//!
//! Decoding is the expensive part, so it happens once: code is decoded into blocks (a
//! straight run of instructions ending at a branch, a page boundary or an instruction
//! that changes how later code must be decoded), each instruction paired with the
//! handler that executes it. Blocks are cached by guest-physical address and execution
//! mode; a write to a page holding cached code drops that page's blocks (Bochs keeps its
//! decoded-instruction cache the same way).
//!
//! Instruction semantics live in one file per family: [`alu`], [`shift`], [`muldiv`],
//! [`bcd`], [`bits`], [`flagops`], [`moves`], [`stack`], [`string`], [`control`], [`far`], [`io`],
//! [`system`], [`sysinstr`], [`sse`] and [`fpu`]. Each handler returns `Err` without
//! committing anything when the instruction faults, so every exception is reported at
//! the faulting instruction.
//!
//! Single-stepping and the debug registers' breakpoints need a look before and after
//! every instruction; [`debug`] runs blocks that way, and only while EFLAGS.TF or RF or
//! an enable bit of DR7 is set, so ordinary execution pays one test per block.

mod alu;
mod bcd;
mod bits;
mod cache;
mod control;
mod ctx;
mod debug;
mod decode;
mod dispatch;
mod far;
mod flagops;
pub mod flags;
mod fpu;
mod interrupt;
mod io;
mod mmu;
mod moves;
mod muldiv;
mod segaccess;
mod segment;
mod shift;
mod sse;
mod stack;
mod string;
mod sysinstr;
mod system;
#[cfg(test)]
mod systest;
#[cfg(test)]
mod testutil;

pub use ctx::Ctx;

use crate::cpu::{CpuState, DescriptorTable, FpuState, Segment};
use crate::engine::{DebugConfig, Engine, EngineError};
use crate::exception::Exception;
use crate::exit::{ExitHandler, Flow, StopReason, VmExit};
use crate::memory::GuestRam;
use crate::stop::POLL_INTERVAL;
use cache::{BlockCache, Op};
use flags::Flags;
use iced_x86::Instruction;

/// Why an instruction did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It raised an architectural exception.
    Exception(Exception),
    /// Popek does not implement it.
    Unsupported,
}

impl From<Exception> for Fault {
    fn from(e: Exception) -> Self {
        Fault::Exception(e)
    }
}

/// Executes one decoded instruction. On `Err` nothing may have been committed.
pub type Handler = fn(&mut Ctx<'_>, &Instruction) -> Result<(), Fault>;

/// The interpreter's working copy of the CPU: like [`CpuState`], with lazy flags.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    /// General-purpose registers in encoding order.
    pub regs: [u64; 16],
    /// Instruction pointer (offset in CS).
    pub rip: u64,
    /// RFLAGS, lazily evaluated.
    pub flags: Flags,
    /// ES, CS, SS, DS, FS, GS, with what data accesses through them must check.
    pub seg: segaccess::SegRegs,
    /// LDTR.
    pub ldtr: Segment,
    /// TR.
    pub tr: Segment,
    /// GDTR.
    pub gdtr: DescriptorTable,
    /// IDTR.
    pub idtr: DescriptorTable,
    /// Control registers CR0, CR2, CR3, CR4.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8 (task priority).
    pub cr8: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// DR0-DR7.
    pub dr: [u64; 8],
    /// Model-specific registers.
    pub msr: crate::cpu::Msrs,
    /// x87, MMX and SSE registers.
    pub fpu: FpuState,
    /// The software TLB (not architectural state: rebuilt from the page tables).
    pub tlb: mmu::Tlb,
}

impl Cpu {
    /// Loads an architectural state.
    pub fn from_state(s: &CpuState) -> Self {
        Cpu {
            regs: s.gpr,
            rip: s.rip,
            flags: Flags::from_bits(s.rflags),
            seg: segaccess::SegRegs::new(s.seg),
            ldtr: s.ldtr,
            tr: s.tr,
            gdtr: s.gdtr,
            idtr: s.idtr,
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            dr: s.dr,
            msr: s.msr,
            fpu: s.fpu.clone(),
            tlb: mmu::Tlb::default(),
        }
    }

    /// The architectural state, flags materialized.
    pub fn to_state(&self) -> CpuState {
        CpuState {
            gpr: self.regs,
            rip: self.rip,
            rflags: self.flags.get(),
            seg: self.seg.all(),
            ldtr: self.ldtr,
            tr: self.tr,
            gdtr: self.gdtr,
            idtr: self.idtr,
            cr0: self.cr0,
            cr2: self.cr2,
            cr3: self.cr3,
            cr4: self.cr4,
            cr8: self.cr8,
            efer: self.efer,
            dr: self.dr,
            msr: self.msr,
            fpu: self.fpu.clone(),
        }
    }

    /// Current privilege level: CS.RPL in protected mode, 0 in real mode.
    #[inline(always)]
    pub fn cpl(&self) -> u8 {
        if self.cr0 & crate::cpu::cr0::PE == 0 {
            0
        } else if self.flags.control(crate::cpu::rflags::VM) {
            3
        } else {
            (self.seg[crate::cpu::SegReg::Cs].selector & 3) as u8
        }
    }

    /// Code bitness from CS (16, 32 or 64): what the decoder needs.
    pub fn code_bitness(&self) -> u32 {
        let cs = &self.seg[crate::cpu::SegReg::Cs];
        let lma = self.efer & crate::cpu::efer::LMA != 0;
        if lma && cs.attr & Segment::LONG != 0 {
            64
        } else if cs.attr & Segment::DB != 0 {
            32
        } else {
            16
        }
    }
}

/// The VMM policy the interpreter plays: which guest events leave the guest for the VMM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Assist {
    /// Trap and emulate: only what needs a device (port I/O, MMIO, HLT, a triple fault)
    /// exits; the interpreter handles everything else itself.
    #[default]
    None,
    /// Hardware assist, modelled on VT-x: the guest runs at its own ring, and the events
    /// VT-x exits on leave the guest for the VMM — besides the exits above, CPUID,
    /// RDMSR/WRMSR, control-register accesses and external interrupts, each with its
    /// VT-x exit reason. The VMM answers CPUID; for the others it counts and traces the
    /// exit and the interpreter then completes the instruction or delivers the interrupt,
    /// as the VMM's emulation would.
    Vtx,
}

/// The interpreter engine.
#[derive(Debug, Default)]
pub struct Interpreter {
    cpu: Cpu,
    cache: BlockCache,
    /// The state was replaced: guest memory may have changed under another engine, so
    /// every decoded block is dropped before the next run.
    stale: bool,
    /// The debugger's breakpoints and watchpoints.
    debug: DebugConfig,
    retired: u64,
    assist: Assist,
}

impl Interpreter {
    /// An interpreter with a zeroed CPU; give it a state with [`Engine::set_state`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An interpreter playing the VMM policy `assist`.
    pub fn with_assist(assist: Assist) -> Self {
        Interpreter {
            assist,
            ..Self::default()
        }
    }
}

impl Engine for Interpreter {
    fn name(&self) -> &'static str {
        "interp"
    }

    fn run(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler, budget: u64) -> StopReason {
        let Interpreter {
            cpu,
            cache,
            stale,
            debug,
            retired,
            assist,
        } = self;
        if std::mem::take(stale) {
            cache.flush(ram.code());
        } else if ram.code().has_written() {
            // Written from outside while the guest was stopped (a debugger, a loader).
            cache.invalidate_written(ram.code());
        }
        let mut cx = Ctx::new(cpu, ram.view(), exits, ram.code());
        cx.icount = *retired;
        cx.assist = *assist;
        cx.debugger = Some(&*debug);
        let stop = run_blocks(&mut cx, cache, budget);
        *retired = cx.icount;
        stop
    }

    fn state(&self) -> Result<CpuState, EngineError> {
        Ok(self.cpu.to_state())
    }

    fn set_state(&mut self, state: &CpuState) -> Result<(), EngineError> {
        self.cpu = Cpu::from_state(state);
        self.stale = true;
        Ok(())
    }

    fn set_debug(&mut self, debug: &DebugConfig) -> Result<(), EngineError> {
        self.debug = debug.clone();
        Ok(())
    }

    fn instructions_retired(&self) -> u64 {
        self.retired
    }
}

/// The execution loop: find the block at RIP (through the previous block's link when
/// there is one), run its instructions, repeat.
fn run_blocks(cx: &mut Ctx<'_>, cache: &mut BlockCache, budget: u64) -> StopReason {
    let end = cx.icount.saturating_add(budget);
    cx.budget_end = end;
    // The block that just ran to its end, if nothing unusual happened since.
    let mut prev: Option<u32> = None;
    loop {
        let left = end.saturating_sub(cx.icount);
        if left == 0 {
            return StopReason::Budget;
        }
        if cx.icount >= cx.next_poll {
            if let Some(stop) = poll_interrupts(cx) {
                return stop;
            }
        }
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        if cx.end_block {
            // An interrupt was delivered: the block below starts afresh.
        } else if debug::active(cx.cpu) || debug::debugger_active(cx) {
            prev = None;
            debug::run_block(cx, cache, left);
        } else {
            let rip = cx.cpu.rip;
            let found = match prev.and_then(|p| cache.chained(p, rip)) {
                Some(id) => Ok(id),
                // Found the slow way: linked from `prev` for next time.
                None => cache.lookup_or_build(cx, prev),
            };
            match found {
                Ok(id) => {
                    let ops = &cache.block(id).ops;
                    // A block runs no further than the budget, nor past the next time
                    // interrupts must be looked at (a timer deadline, the end of an STI
                    // or MOV SS shadow): an interrupt arrives at its instruction.
                    let until_poll = cx.next_poll.saturating_sub(cx.icount);
                    let limit = left
                        .min(ops.len())
                        .min(usize::try_from(until_poll).unwrap_or(usize::MAX));
                    for op in &ops[..limit] {
                        if !execute(cx, op) {
                            break;
                        }
                    }
                    prev = (limit == ops.len()).then_some(id);
                }
                Err(fault) => raise_fault(cx, fault, None),
            }
        }
        // Everything unusual (a fault, an interrupt, a stop request, written code, a
        // change of mode or paging) raised end_block, so the common case costs one test.
        if cx.end_block {
            cx.end_block = false;
            cache.new_epoch();
            prev = None;
            // The budget bounds the instructions retired and, apart, the exceptions and
            // interrupts delivered (which retire none, and each end the block): every
            // run ends, however the guest behaves.
            if cx.delivered >= budget {
                return StopReason::Budget;
            }
            if cx.has_smc() {
                cache.invalidate_written(cx.code);
            }
            if let Some(stop) = cx.stop.take() {
                return stop;
            }
        }
    }
}

/// Executes one instruction; false if the block ends here: the instruction raised
/// end_block, or it faulted (then RIP is back at it and the exception was raised).
#[inline(always)]
fn execute(cx: &mut Ctx<'_>, op: &Op) -> bool {
    cx.cpu.rip = op.ins.next_ip();
    if let Err(fault) = (op.exec)(cx, &op.ins) {
        cx.cpu.rip = op.ins.ip();
        raise_fault(cx, fault, Some(&op.ins));
        return false;
    }
    cx.icount += 1;
    !cx.end_block
}

/// Ends the run if a stop was requested; else delivers a pending hardware interrupt if
/// EFLAGS.IF allows it.
fn poll_interrupts(cx: &mut Ctx<'_>) -> Option<StopReason> {
    if cx.exits.stop_request().is_some_and(|s| s.take()) {
        return Some(StopReason::Paused);
    }
    let poll = cx.exits.poll_interrupts(cx.icount);
    // Polled again at the next timer deadline, and at least every POLL_INTERVAL
    // instructions for the stop request; but at least one instruction runs before the
    // next poll, whatever the controller asks for: the run always moves on.
    cx.next_poll = poll
        .next_poll
        .min(cx.icount.saturating_add(POLL_INTERVAL))
        .max(cx.icount + 1);
    if !poll.pending || !cx.cpu.flags.control(crate::cpu::rflags::IF) {
        return None;
    }
    let vector = cx.exits.acknowledge_interrupt()?;
    // VT-x exits on the interrupt (acknowledging it on exit, so the vector is known);
    // the VMM then has it delivered to the guest.
    cx.assist_exit(|| VmExit::ExternalInterrupt { vector });
    let stop = interrupt::external(cx, vector);
    // Another request may be waiting behind this one.
    cx.next_poll = 0;
    stop
}

/// Ends the block and, if `stop` says so, the run (a stop the VMM asked for during
/// the instruction comes first).
fn end_block_with(cx: &mut Ctx<'_>, stop: Option<StopReason>) {
    cx.end_block = true;
    if cx.stop.is_none() {
        cx.stop = stop;
    }
}

/// Raises a fault at the instruction RIP points to (exceptions go through the IDT) and
/// ends the block, and the run if the fault cannot be handled. Cold: the run loop keeps
/// its registers for the instructions that complete.
#[cold]
fn raise_fault(cx: &mut Ctx<'_>, fault: Fault, ins: Option<&Instruction>) {
    // The instruction did not complete: it raises no #DB traps.
    cx.debug_trap = 0;
    let stop = match fault {
        Fault::Exception(exception) => {
            // A fault pushes RF = 1, so that returning to the instruction does not hit
            // its instruction breakpoint again; the CPU's own RF is left alone.
            cx.push_rf = cx.cpu.cr0 & crate::cpu::cr0::PE != 0;
            let stop = interrupt::raise(cx, exception);
            cx.push_rf = false;
            stop
        }
        Fault::Unsupported => {
            let what = ins
                .map(|i| format!("{i}"))
                .unwrap_or_else(|| "(undecodable)".into());
            let exit = VmExit::Unsupported {
                rip: cx.cpu.rip,
                what,
            };
            match cx.exits.handle(exit, cx.icount) {
                Flow::Continue => None,
                Flow::Stop(reason) => Some(reason),
            }
        }
    };
    end_block_with(cx, stop);
}

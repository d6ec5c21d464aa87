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
//! [`bcd`], [`bits`], [`flagops`], [`moves`], [`stack`], [`string`], [`control`], [`sse`]
//! and [`fpu`]; the system side of the architecture — far transfers, port I/O, the
//! system instructions, exception delivery, segmentation and paging — is shared with
//! the other software engines in [`crate::x86`]. Each handler returns `Err` without
//! committing anything when the instruction faults, so every exception is reported at
//! the faulting instruction.
//!
//! Single-stepping and the debug registers' breakpoints need a look before and after
//! every instruction; [`debug`] runs blocks that way, and only while EFLAGS.TF or RF or
//! an enable bit of DR7 is set, so ordinary execution pays one test per block.

mod alu;
mod bcd;
pub(crate) mod bits;
pub(crate) mod cache;
mod control;
mod debug;
mod dispatch;
mod flagops;
mod fpu;
pub(crate) mod moves;
pub(crate) mod muldiv;
pub(crate) mod shift;
mod sse;
mod stack;
mod string;

use crate::x86::Vcpu;
pub use crate::x86::{Assist, Ctx, Fault, Handler};

use crate::cpu::{CpuState, PendingEvent};
use crate::engine::{DebugConfig, Engine, EngineError};
use crate::exception::Exception;
use crate::exit::{ExitHandler, Flow, StopReason, VmExit};
use crate::memory::GuestRam;
use crate::stop::POLL_INTERVAL;
use cache::{BlockCache, Op};
use iced_x86::Instruction;

/// The interpreter engine.
#[derive(Debug, Default)]
pub struct Interpreter {
    cpu: Vcpu,
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
        self.run_with(ram, exits, budget, |cx, cache, id, room| {
            run_block(cx, cache, id, room, execute)
        })
    }

    fn state(&self) -> Result<CpuState, EngineError> {
        let mut state = self.cpu.state().clone();
        state.msr.tsc = self.retired.wrapping_add(self.cpu.tsc_offset);
        Ok(state)
    }

    fn set_state(&mut self, state: &CpuState) -> Result<(), EngineError> {
        self.cpu = Vcpu::new(state.clone());
        self.cpu.tsc_offset = state.msr.tsc.wrapping_sub(self.retired);
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

impl Interpreter {
    /// The decoded blocks.
    pub(crate) fn cache(&self) -> &BlockCache {
        &self.cache
    }

    /// The live vCPU.
    pub(crate) fn vcpu(&self) -> &Vcpu {
        &self.cpu
    }

    /// The live vCPU, to change what an engine keeps beside the state (shadow paging).
    pub(crate) fn vcpu_mut(&mut self) -> &mut Vcpu {
        &mut self.cpu
    }

    /// Runs the guest as [`Engine::run`] does, each block run by `runner` (the
    /// translator runs host code made from them): `runner(cx, cache, id, room)` runs at
    /// most `room` instructions from the start of block `id` (at RIP) and returns the
    /// block to link the next one from, if the run went through to the end of a block
    /// and nothing unusual happened. The run loop around it (budget, interrupts,
    /// debugging, invalidation) is the same for every runner.
    pub(crate) fn run_with<R: BlockRunner>(
        &mut self,
        ram: &GuestRam,
        exits: &mut dyn ExitHandler,
        budget: u64,
        mut runner: R,
    ) -> StopReason {
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
            // A new vCPU: the traces of shadow tables an earlier one kept are stale.
            ram.code().untrace_all();
        } else if ram.code().has_written() {
            // Written from outside while the guest was stopped (a debugger, a loader).
            cache.invalidate_written(ram.code());
        }
        // A shadow in the state holds at this boundary: it covers the next instruction.
        if cpu.interrupt_shadow != 0 {
            cpu.shadow_end = *retired + 1;
        }
        let mut cx = Ctx::new(cpu, ram.view(), exits, ram.code());
        cx.icount = *retired;
        cx.assist = *assist;
        cx.debugger = Some(&*debug);
        let stop = match deliver_pending(&mut cx) {
            Some(stop) => stop,
            None => run_blocks(&mut cx, cache, budget, &mut runner),
        };
        *retired = cx.icount;
        // The state at the final boundary says whether the shadow still holds there.
        if cpu.interrupt_shadow != 0 && *retired >= cpu.shadow_end {
            cpu.interrupt_shadow = 0;
        }
        stop
    }
}

/// Executes at most `room` instructions of block `id` in order, each with `exec`
/// (normally [`execute`]); the block to link the next one from, if all of them
/// completed and none ended the block. This is how the interpreter runs a block; the
/// binary translator runs host code made from it instead, and this where it cannot.
#[inline(always)]
pub(crate) fn run_block(
    cx: &mut Ctx<'_>,
    cache: &BlockCache,
    id: u32,
    room: usize,
    mut exec: impl FnMut(&mut Ctx<'_>, &Op) -> bool,
) -> Option<u32> {
    let ops = &cache.block(id).ops;
    let limit = room.min(ops.len());
    for op in &ops[..limit] {
        if !exec(cx, op) {
            return None;
        }
    }
    (limit == ops.len()).then_some(id)
}

/// What runs a decoded block (see [`Interpreter::run_with`]).
pub(crate) trait BlockRunner:
    FnMut(&mut Ctx<'_>, &mut BlockCache, u32, usize) -> Option<u32>
{
}

impl<F: FnMut(&mut Ctx<'_>, &mut BlockCache, u32, usize) -> Option<u32>> BlockRunner for F {}

/// The execution loop: find the block at RIP (through the previous block's link when
/// there is one), run it, repeat.
pub(crate) fn run_blocks<R: BlockRunner>(
    cx: &mut Ctx<'_>,
    cache: &mut BlockCache,
    budget: u64,
    runner: &mut R,
) -> StopReason {
    let end = cx.icount.saturating_add(budget);
    cx.budget_end = end;
    // The debugger's breakpoints cannot change during a run: look once.
    let debugger = debug::debugger_active(cx);
    // The block that just ran to its end, if nothing unusual happened since.
    let mut prev: Option<u32> = None;
    loop {
        // Blocks run no further than the budget, nor past the next time interrupts must
        // be looked at (a timer deadline, the end of an STI or MOV SS shadow, the stop
        // request's interval): an interrupt arrives at its instruction.
        let mut until = end.min(cx.next_poll);
        if cx.icount >= until {
            if cx.icount >= end {
                return StopReason::Budget;
            }
            if let Some(stop) = poll_interrupts(cx) {
                return stop;
            }
            until = end.min(cx.next_poll);
        }
        let room = usize::try_from(until - cx.icount).unwrap_or(usize::MAX);
        if cx.end_block {
            // An interrupt was delivered: the block below starts afresh.
        } else if debugger || debug::active(cx.cpu) {
            prev = None;
            debug::run_block(cx, cache, room);
        } else {
            let rip = cx.cpu.rip;
            let found = match prev.and_then(|p| cache.chained(p, rip)) {
                Some(id) => Ok(id),
                // Found the slow way: linked from `prev` for next time.
                None => cache.lookup_or_build(cx, prev),
            };
            match found {
                Ok(id) => prev = runner(cx, cache, id, room),
                Err(fault) => raise_fault(cx, fault, None),
            }
        }
        // Everything unusual (a fault, an interrupt, a stop request, written code, a
        // change of mode or paging) raised end_block, so the common case costs one test.
        if cx.end_block {
            if let Some(stop) = end_of_block(cx, cache, budget) {
                return stop;
            }
            prev = None;
        }
    }
}

/// After a block that something unusual ended: a stop, a delivered event, written code.
#[cold]
fn end_of_block(cx: &mut Ctx<'_>, cache: &mut BlockCache, budget: u64) -> Option<StopReason> {
    cx.end_block = false;
    cache.new_epoch();
    // The budget bounds the instructions retired and, apart, the exceptions and
    // interrupts delivered (which retire none, and each end the block): every run ends,
    // however the guest behaves.
    if cx.delivered >= budget {
        return Some(StopReason::Budget);
    }
    if cx.has_smc() {
        cache.invalidate_written(cx.code);
    }
    cx.take_trace_faults();
    cx.stop.take()
}

/// Executes exactly one decoded instruction; false if the block ends here: the
/// instruction raised end_block, or it faulted (then RIP is back at it and the
/// exception was raised). The translator calls it for what it does not translate.
#[inline(always)]
pub(crate) fn execute(cx: &mut Ctx<'_>, op: &Op) -> bool {
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
    if cx.cpu.interrupt_shadow != 0 {
        if cx.icount < cx.cpu.shadow_end {
            // STI or MOV SS holds interrupts off for one more instruction.
            cx.next_poll = cx.cpu.shadow_end;
            return None;
        }
        cx.cpu.interrupt_shadow = 0;
    }
    cx.poll_upcall();
    let poll = cx.exits.poll_interrupts(cx.icount);
    // Polled again at the next timer deadline, and at least every POLL_INTERVAL
    // instructions for the stop request; but at least one instruction runs before the
    // next poll, whatever the controller asks for: the run always moves on.
    cx.next_poll = poll
        .next_poll
        .min(cx.icount.saturating_add(POLL_INTERVAL))
        .max(cx.icount + 1);
    if !poll.pending || !cx.cpu.rflags.control(crate::cpu::rflags::IF) {
        return None;
    }
    let vector = cx.exits.acknowledge_interrupt()?;
    // VT-x exits on the interrupt (acknowledging it on exit, so the vector is known);
    // the VMM then has it delivered to the guest.
    cx.assist_exit(|| VmExit::ExternalInterrupt { vector });
    let stop = crate::x86::interrupt::external(cx, vector);
    // Another request may be waiting behind this one.
    cx.next_poll = 0;
    stop
}

/// Delivers the event another engine accepted but had not delivered when it stopped
/// (the interpreter itself never stops with one pending).
pub(crate) fn deliver_pending(cx: &mut Ctx<'_>) -> Option<StopReason> {
    match cx.cpu.pending_event.take()? {
        PendingEvent::Interrupt { vector } => crate::x86::interrupt::external(cx, vector),
        PendingEvent::Exception { vector, error_code } => {
            crate::x86::interrupt::raise(cx, Exception { vector, error_code })
        }
    }
    .or_else(|| cx.stop.take())
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
pub(crate) fn raise_fault(cx: &mut Ctx<'_>, fault: Fault, ins: Option<&Instruction>) {
    // The instruction did not complete: it raises no #DB traps.
    cx.debug_trap = 0;
    let stop = match fault {
        Fault::Exception(exception) => {
            // A fault pushes RF = 1, so that returning to the instruction does not hit
            // its instruction breakpoint again; the CPU's own RF is left alone.
            cx.push_rf = cx.cpu.cr0 & crate::cpu::cr0::PE != 0;
            let stop = crate::x86::interrupt::raise(cx, exception);
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

//! The x86 architecture, shared by every software engine: the live vCPU ([`Vcpu`]), the
//! execution context instructions run in ([`Ctx`]: registers, operands, memory through
//! segmentation and paging), the page walk and the MMU, segment loads, exception and
//! interrupt delivery, far transfers and fast system calls, the system instructions,
//! port I/O, and one table of facts about every instruction form.
//!
//! An engine owns a [`Vcpu`] and builds a [`Ctx`] for each run. The interpreter calls
//! the handlers here (and its own, for the plain instruction families) for every
//! instruction; a translator calls the same handlers for what it does not translate.
//! Every handler commits nothing when it faults, so exceptions are precise.
//!
//! The architectural state itself is [`crate::cpu::CpuState`].

pub mod ctx;
pub mod debugreg;
pub mod decode;
pub mod far;
pub mod flags;
pub mod interrupt;
pub mod io;
pub mod mmu;
pub mod msr;
pub mod opcode;
pub mod paging;
pub mod processor;
pub mod segaccess;
pub mod segment;
pub mod spt;
pub mod system;
pub mod task;

pub use ctx::Ctx;

use crate::cpu::CpuState;
use crate::exception::Exception;
use iced_x86::Instruction;
use std::ops::{Deref, DerefMut};

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

/// The VMM policy a software engine plays: which guest events leave the guest for the
/// VMM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Assist {
    /// Trap and emulate: only what needs a device (port I/O, MMIO, HLT, a triple fault)
    /// exits; the engine handles everything else itself.
    #[default]
    None,
    /// Hardware assist, modelled on VT-x: the guest runs at its own ring, and the events
    /// VT-x exits on leave the guest for the VMM — besides the exits above, CPUID,
    /// RDMSR/WRMSR, control-register accesses and external interrupts, each with its
    /// VT-x exit reason. The VMM answers CPUID; for the others it counts and traces the
    /// exit and the engine then completes the instruction or delivers the interrupt, as
    /// the VMM's emulation would.
    Vtx,
}

/// A live vCPU: the architectural state and what a software engine keeps beside it to
/// run it fast (the TLB), which is rebuilt from the state and never part of it.
#[derive(Debug, Clone, Default)]
pub struct Vcpu {
    state: CpuState,
    /// The software TLB.
    pub tlb: mmu::Tlb,
    /// The instruction count at which the interrupt shadow in the state ends: the
    /// boundary after the instruction that follows STI or MOV SS.
    pub shadow_end: u64,
    /// What the time-stamp counter adds to the engine's instruction count: RDTSC reads
    /// `icount + tsc_offset`, so the counter carries on across engines and snapshots
    /// from the value in the state's IA32_TIME_STAMP_COUNTER.
    pub tsc_offset: u64,
    /// The #DB trap conditions (DR6 bits) of a MOV SS or POP SS, held off until the
    /// instruction after it completes, as the interrupt shadow holds off interrupts.
    pub deferred_debug_trap: u64,
    /// Shadow page tables behind the TLB, when a software VMM runs the guest
    /// deprivileged (`--virt`): TLB misses are filled from them.
    pub spt: Option<Box<spt::Spt>>,
}

impl Vcpu {
    /// A vCPU in `state`, with an empty TLB.
    pub fn new(state: CpuState) -> Self {
        Vcpu {
            state,
            tlb: mmu::Tlb::default(),
            shadow_end: 0,
            tsc_offset: 0,
            deferred_debug_trap: 0,
            spt: None,
        }
    }

    /// The architectural state.
    pub fn state(&self) -> &CpuState {
        &self.state
    }
}

impl Deref for Vcpu {
    type Target = CpuState;

    #[inline(always)]
    fn deref(&self) -> &CpuState {
        &self.state
    }
}

impl DerefMut for Vcpu {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut CpuState {
        &mut self.state
    }
}

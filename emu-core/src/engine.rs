//! The contract between the machine and an execution engine.

use crate::cpu::CpuState;
use crate::exit::{ExitHandler, StopReason};
use crate::memory::GuestRam;
use crate::pv::HypercallTrap;
use std::collections::BTreeSet;

/// Why an engine could not do what the machine asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The host refused an operation (an ioctl failed).
    #[error("{engine}: {what}: {reason}")]
    Host {
        /// The engine's name.
        engine: &'static str,
        /// What it tried.
        what: String,
        /// What the host said.
        reason: String,
    },
    /// The engine cannot hold this CPU state (e.g. KVM refuses CR4 bits its CPUID does
    /// not offer).
    #[error("{engine} rejected the CPU state: {reason}")]
    StateRejected {
        /// The engine's name.
        engine: &'static str,
        /// Why.
        reason: String,
    },
    /// The engine lacks a capability the request needs.
    #[error("{engine} cannot {what}")]
    Unsupported {
        /// The engine's name.
        engine: &'static str,
        /// What it cannot do.
        what: &'static str,
    },
}

/// What a watchpoint watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchKind {
    /// Writes.
    Write,
    /// Reads.
    Read,
    /// Reads and writes.
    Access,
}

impl WatchKind {
    /// Whether an access (read, write or both, for read-modify-write) triggers it.
    pub fn triggers(self, read: bool, write: bool) -> bool {
        match self {
            WatchKind::Write => write,
            WatchKind::Read => read,
            WatchKind::Access => read || write,
        }
    }
}

/// A debugger's watchpoint: a range of linear addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Watchpoint {
    /// First linear address.
    pub addr: u64,
    /// Bytes watched (at least 1).
    pub len: u64,
    /// Which accesses trigger it.
    pub kind: WatchKind,
}

impl Watchpoint {
    /// Whether `[addr, addr + len)` overlaps the watched range (wrapping safely).
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        addr.wrapping_sub(self.addr) < self.len || self.addr.wrapping_sub(addr) < len
    }
}

/// A debugger's breakpoints and watchpoints, which no guest can see or change (unlike
/// the guest's own debug registers). Addresses are linear: CS.base + RIP for code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebugConfig {
    /// Stop before running the instruction at any of these linear addresses. The first
    /// instruction of a run is exempt, so that a run resumed at a breakpoint moves on.
    pub breakpoints: BTreeSet<u64>,
    /// Stop after an instruction that accessed any of these ranges.
    pub watchpoints: BTreeSet<Watchpoint>,
}

impl DebugConfig {
    /// No breakpoints and no watchpoints.
    pub fn is_empty(&self) -> bool {
        self.breakpoints.is_empty() && self.watchpoints.is_empty()
    }
}

/// An engine runs the vCPU until the VMM has to stop it.
pub trait Engine: Send {
    /// Short name for messages and statistics ("interp", "kvm", ...).
    fn name(&self) -> &'static str;

    /// Runs the guest until an exit handler asks to stop, or until `budget` instructions
    /// have retired (engines that cannot count instructions may overshoot or ignore it;
    /// they say so in [`Engine::counts_instructions`]).
    fn run(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler, budget: u64) -> StopReason;

    /// The architectural state at the current instruction boundary.
    fn state(&self) -> Result<CpuState, EngineError>;

    /// Replaces the architectural state (engine switch, loader, debugger).
    fn set_state(&mut self, state: &CpuState) -> Result<(), EngineError>;

    /// Guest instructions retired since the engine was created.
    fn instructions_retired(&self) -> u64;

    /// Whether `instructions_retired` and the budget are exact for this engine.
    fn counts_instructions(&self) -> bool {
        true
    }

    /// Sets the debugger's breakpoints and watchpoints, replacing the previous ones.
    fn set_debug(&mut self, debug: &DebugConfig) -> Result<(), EngineError>;

    /// Runs `n` instructions exactly, as a debugger steps, and counts them in
    /// [`Engine::instructions_retired`] (an exception or interrupt delivered counts as
    /// one), unless a stop comes first; [`StopReason::Budget`] once they ran. An engine
    /// that counts instructions does it with the budget of [`Engine::run`]; one that
    /// cannot may single-step ([`Engine::can_step`]).
    fn step(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler, n: u64) -> StopReason {
        self.run(ram, exits, n)
    }

    /// Whether [`Engine::step`] is exact: true for engines that count instructions,
    /// and for KVM, which single-steps.
    fn can_step(&self) -> bool {
        self.counts_instructions()
    }

    /// The trap instruction this engine wants in the hypercall stubs: one it turns into
    /// a [`crate::exit::VmExit::Hypercall`]. The machine rewrites the guest's hypercall
    /// page with it whenever it moves to this engine.
    fn hypercall_trap(&self) -> HypercallTrap {
        HypercallTrap::Vmcall
    }

    /// Counters of the engine's own (the translator's blocks, chains and call-outs),
    /// by name, for statistics.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

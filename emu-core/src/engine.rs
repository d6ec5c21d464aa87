//! The contract between the machine and an execution engine.

use crate::cpu::CpuState;
use crate::exit::{ExitHandler, StopReason};
use crate::memory::GuestRam;

/// An engine runs the vCPU until the VMM has to stop it.
pub trait Engine: Send {
    /// Short name for messages and statistics ("interp", "kvm", ...).
    fn name(&self) -> &'static str;

    /// Runs the guest until an exit handler asks to stop, or until `budget` instructions
    /// have retired (engines that cannot count instructions may overshoot or ignore it;
    /// they say so in [`Engine::counts_instructions`]).
    fn run(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler, budget: u64) -> StopReason;

    /// The architectural state at the current instruction boundary.
    fn state(&self) -> CpuState;

    /// Replaces the architectural state (engine switch, loader, debugger).
    fn set_state(&mut self, state: &CpuState);

    /// Guest instructions retired since the engine was created.
    fn instructions_retired(&self) -> u64;

    /// Whether `instructions_retired` and the budget are exact for this engine.
    fn counts_instructions(&self) -> bool {
        true
    }
}

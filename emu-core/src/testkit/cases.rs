//! Table-driven instruction cases: registers and flags in, registers and flags out,
//! named so that a failure says which case and on which engine.

use super::machine::{Asm, Machine};
use super::{EngineMaker, SOFTWARE_ENGINES};
use crate::exit::StopReason;

/// One case: registers and flags in, registers and flags out.
#[derive(Clone, Copy)]
pub struct Case {
    /// Shown when the case fails.
    pub name: &'static str,
    /// The code under test.
    pub asm: Asm,
    /// Registers set before the run.
    pub regs: &'static [(usize, u64)],
    /// RFLAGS before the run.
    pub flags: u64,
    /// Registers expected after the run (full 64-bit values).
    pub want: &'static [(usize, u64)],
    /// Expected flags, compared under `mask`.
    pub want_flags: u64,
    /// The flags the case checks (those the manual defines for it).
    pub mask: u64,
}

impl Case {
    /// Checks a run's final registers and flags against the case.
    pub fn verify(&self, engine: &str, gpr: &[u64; 16], rflags: u64) {
        let name = self.name;
        for &(r, v) in self.want {
            assert_eq!(
                gpr[r], v,
                "{name} on {engine}: register {r} is {:#x}, want {v:#x}",
                gpr[r]
            );
        }
        let (got, want) = (rflags & self.mask, self.want_flags & self.mask);
        assert_eq!(
            got, want,
            "{name} on {engine}: flags {got:#x}, want {want:#x} (mask {:#x})",
            self.mask
        );
    }
}

/// Runs every case in 32-bit flat protected mode on every software engine.
pub fn check(cases: &[Case]) {
    check_in(cases, Machine::new);
}

/// Runs every case in 64-bit mode (without paging) on every software engine.
pub fn check64(cases: &[Case]) {
    check_in(cases, Machine::new64);
}

fn check_in(cases: &[Case], machine: fn(Asm) -> Machine) {
    for &(engine, maker) in SOFTWARE_ENGINES {
        check_on(engine, maker, cases, machine);
    }
}

/// Runs every case on the engines `maker` makes, each in the guest `machine` builds.
pub fn check_on(engine: &str, maker: EngineMaker, cases: &[Case], machine: fn(Asm) -> Machine) {
    for c in cases {
        let mut m = machine(c.asm).on(maker).regs(c.regs).flags(c.flags);
        let stop = m.run();
        assert_eq!(
            stop,
            StopReason::Halted,
            "{} on {engine}: stopped with {stop}",
            c.name
        );
        c.verify(engine, &m.state.gpr, m.state.rflags.get());
    }
}

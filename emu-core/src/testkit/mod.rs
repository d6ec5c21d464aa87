//! The test harness every engine shares: it builds a guest (code assembled with
//! iced-x86 or given as bytes, memory, the CPU in real, protected or long mode at ring 0
//! or 3), runs it on an engine a factory makes, and hands back the final CPU state,
//! RAM and stop reason.
//!
//! - [`Machine`]: a guest and a recording VMM ([`TestExits`]) for one-instruction
//!   tests, in flat 32-bit mode or with a GDT, an IDT catching every exception, a TSS
//!   and page tables ([`Machine::protected`], [`Machine::long`]).
//! - [`kernel`]: a small kernel image described field by field ([`kernel::Kernel`]) whose
//!   exception stubs record the frame, for the exception and far-transfer tables and
//!   for engines (KVM) that need a guest a real CPU can run.
//! - [`cases`]: table-driven instruction cases (registers and flags in, registers and
//!   flags out), run on every engine of [`SOFTWARE_ENGINES`], and at ring 3 on any
//!   engine through the kernel ([`cases::check_ring3`]).
//!
//! Compiled for emu-core's own tests and, with the `testkit` feature, for other crates'
//! tests (KVM's); never part of the emulator itself.

pub mod board;
pub mod cases;
pub mod exceptions;
pub mod exits;
pub mod kernel;
mod machine;
pub mod tables;

pub use cases::{check, check64, Case, FlagsCompared};
pub use exits::{TestExits, TestInterrupts, MMIO_STOP};
pub use kernel::{FREE_SLOT, KERNEL_CS, KERNEL_DS, TSS_SEL, USER_CS, USER_DS};
pub use machine::{busy_tss, gate32, kind, Asm, Desc, Machine, Trap};
pub use machine::{
    CODE_BASE, DATA, GDT_BASE, IDT_BASE, KERNEL_STACK, PAGE_TABLES, RAM_SIZE, TSS32_SIZE, TSS_BASE,
    TSS_IOMAP, USER_STACK,
};

use crate::interp::Assist;
use crate::machine::{interpreter_factory, EngineFactory};

/// Makes the factory of a fresh engine for one run (the shape [`crate::machine::Machine`]
/// takes); a test calls it once per guest.
pub type EngineMaker = fn() -> Box<EngineFactory<'static>>;

/// The interpreter, trapping and emulating everything (no hardware-assist policy).
pub fn interpreter() -> Box<EngineFactory<'static>> {
    interpreter_factory(Assist::None)
}

/// The name of the interpreter in [`SOFTWARE_ENGINES`].
pub const INTERP: &str = "interp";

/// The software engines every instruction table runs on, by name: the interpreter and
/// the binary translator.
pub const SOFTWARE_ENGINES: &[(&str, EngineMaker)] = &[
    (INTERP, interpreter),
    ("bt", crate::machine::bt_factory),
    ("bt-full", bt_full),
];

/// The binary translator under full virtualization: ring 0 code runs deprivileged, and
/// the guest must not be able to tell.
pub fn bt_full() -> Box<EngineFactory<'static>> {
    crate::machine::bt_factory_with(crate::bt::virt::Virt::Full)
}

/// Which flags of a case a software engine is held to. The interpreter defines the
/// flags the manuals leave undefined (Popek's choices, which the tables pin). The
/// translator copies most instructions to the host CPU, which leaves those flags as its
/// processor model does (Intel and AMD differ), so it is held to the defined ones; the
/// engine-agreement checks ([`Machine::run_on_each`]) leave the undefined ones out too.
pub fn flags_compared(engine: &str) -> FlagsCompared {
    if engine == INTERP {
        FlagsCompared::Popek
    } else {
        FlagsCompared::Architectural
    }
}

/// General-purpose register indices, in encoding order (as in [`crate::cpu::CpuState::gpr`]).
pub const RAX: usize = 0;
/// RCX.
pub const RCX: usize = 1;
/// RDX.
pub const RDX: usize = 2;
/// RBX.
pub const RBX: usize = 3;
/// RSP.
pub const RSP: usize = 4;
/// RSI.
pub const RSI: usize = 6;
/// RDI.
pub const RDI: usize = 7;

//! The emulator core: guest memory, CPU state, the interpreter, the Multiboot loader,
//! the event trace and the machine run loop.

pub mod bt;
pub mod clock;
pub mod cpu;
pub mod cpuid;
pub mod engine;
pub mod exception;
pub mod exit;
pub mod interp;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod pv;
pub mod stop;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod trace;
pub mod x86;

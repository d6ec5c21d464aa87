//! The emulator core: guest memory, CPU state, the interpreter, the event trace and the
//! machine run loop.

pub mod loader;

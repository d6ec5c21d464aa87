//! Popek's gdb remote server: gdb debugs the guest of a machine, whichever engine runs
//! it, through the machine's control plane ([`MachineHandle`]) and nothing else.
//!
//! The protocol is gdbstub's; this crate supplies the target ([`target`]): registers in
//! one 64-bit layout with the segment bases and system registers added ([`arch`]),
//! memory by guest-virtual address read and written without side effects on the guest,
//! breakpoints and watchpoints (the machine's own, which the guest cannot see), single
//! steps, Ctrl-C, and `monitor` commands that speak Popek's language ([`monitor`]).
//!
//! [`serve`] listens for gdb, one connection at a time, with the machine paused until
//! the first one. A connection that breaks, or that sends what is not the protocol,
//! ends that session only: the guest pauses (or runs on, as the caller chose) and the
//! next gdb can connect.

pub mod arch;
pub mod monitor;
mod server;
pub mod target;

pub use server::{serve, Ended, OnDisconnect, ServeError};

use emu_core::machine::EngineFactory;

/// Builds the engine a name names (`monitor engine kvm`), or says why it cannot.
pub type EngineChooser = dyn Fn(&str) -> Result<Box<EngineFactory<'static>>, String> + Send + Sync;

/// The page size reads through the guest's page tables are split at, so that a read
/// can stop at the first page that is not mapped.
const PAGE: usize = 4096;

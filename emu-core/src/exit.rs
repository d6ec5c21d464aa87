//! What an engine asks of the VMM, and why a run ends.
//!
//! Every engine (interpreter, KVM, later the binary translator) reports the same exits
//! through one function, [`ExitHandler::handle`], so exits are counted and dispatched to
//! the devices in one place, and a test can feed it made-up exits.

use crate::cpu::CpuState;
use crate::exception::Exception;
use std::fmt;

/// Something the vCPU needs from the VMM. Data buffers are borrowed from the engine: the
/// handler fills them for reads.
#[derive(Debug)]
pub enum VmExit<'a> {
    /// IN from a port; the handler fills `data` (1, 2 or 4 bytes).
    IoIn {
        /// Port number.
        port: u16,
        /// Where the value read goes.
        data: &'a mut [u8],
    },
    /// OUT to a port.
    IoOut {
        /// Port number.
        port: u16,
        /// The bytes written.
        data: &'a [u8],
    },
    /// A load from a guest-physical address that is not RAM.
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Where the value read goes.
        data: &'a mut [u8],
    },
    /// A store to a guest-physical address that is not RAM.
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// The bytes written.
        data: &'a [u8],
    },
    /// HLT: the vCPU waits for an interrupt.
    Hlt,
    /// Triple fault: the processor shuts down.
    Shutdown,
    /// An exception the guest has no way to handle (no IDT delivery in this engine yet).
    Exception {
        /// The exception.
        exception: Exception,
        /// The full state at the faulting instruction.
        state: Box<CpuState>,
    },
    /// An instruction Popek does not implement (not the same as an invalid one).
    Unsupported {
        /// Guest RIP of the instruction.
        rip: u64,
        /// Its disassembly.
        what: String,
    },
}

/// Exit reasons, for counting. One per [`VmExit`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitReason {
    /// IN.
    IoIn,
    /// OUT.
    IoOut,
    /// MMIO load.
    MmioRead,
    /// MMIO store.
    MmioWrite,
    /// HLT.
    Hlt,
    /// Triple fault.
    Shutdown,
    /// Unhandled exception.
    Exception,
    /// Unsupported instruction.
    Unsupported,
}

impl ExitReason {
    /// How many reasons there are (the size of a per-reason counter array).
    pub const COUNT: usize = 8;
    /// Every reason, in counter order.
    pub const ALL: [ExitReason; Self::COUNT] = [
        ExitReason::IoIn,
        ExitReason::IoOut,
        ExitReason::MmioRead,
        ExitReason::MmioWrite,
        ExitReason::Hlt,
        ExitReason::Shutdown,
        ExitReason::Exception,
        ExitReason::Unsupported,
    ];

    /// Short name used in statistics and traces.
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::IoIn => "io-in",
            ExitReason::IoOut => "io-out",
            ExitReason::MmioRead => "mmio-read",
            ExitReason::MmioWrite => "mmio-write",
            ExitReason::Hlt => "hlt",
            ExitReason::Shutdown => "shutdown",
            ExitReason::Exception => "exception",
            ExitReason::Unsupported => "unsupported",
        }
    }
}

impl VmExit<'_> {
    /// The reason this exit is counted under.
    pub fn reason(&self) -> ExitReason {
        match self {
            VmExit::IoIn { .. } => ExitReason::IoIn,
            VmExit::IoOut { .. } => ExitReason::IoOut,
            VmExit::MmioRead { .. } => ExitReason::MmioRead,
            VmExit::MmioWrite { .. } => ExitReason::MmioWrite,
            VmExit::Hlt => ExitReason::Hlt,
            VmExit::Shutdown => ExitReason::Shutdown,
            VmExit::Exception { .. } => ExitReason::Exception,
            VmExit::Unsupported { .. } => ExitReason::Unsupported,
        }
    }
}

/// What the engine does after the VMM handled an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Resume the guest.
    Continue,
    /// End the run (after completing the current instruction) for this reason.
    Stop(StopReason),
}

/// Why a run of the machine ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote this value to the debug-exit port.
    Exited(u32),
    /// The guest halted with nothing left that could wake it.
    Halted,
    /// Triple fault.
    Shutdown,
    /// An exception the guest could not handle.
    Exception {
        /// The exception.
        exception: Exception,
        /// The state at the faulting instruction.
        state: Box<CpuState>,
    },
    /// An instruction Popek does not implement.
    Unsupported {
        /// Guest RIP.
        rip: u64,
        /// Disassembly of the instruction.
        what: String,
    },
    /// The instruction budget (`--max-instructions`) was used up.
    Budget,
    /// The engine itself failed (e.g. KVM refused to run the vCPU).
    EngineFailure(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Exited(v) => write!(f, "guest exited with status {v}"),
            StopReason::Halted => {
                write!(
                    f,
                    "guest halted with interrupts disabled and nothing to wake it"
                )
            }
            StopReason::Shutdown => write!(f, "triple fault: the processor shut down"),
            StopReason::Exception { exception, state } => write!(
                f,
                "unhandled exception {exception} at rip {:#x}\n{}",
                state.rip,
                state.dump()
            ),
            StopReason::Unsupported { rip, what } => {
                write!(f, "unsupported instruction `{what}` at rip {rip:#x}")
            }
            StopReason::Budget => write!(f, "instruction budget used up"),
            StopReason::EngineFailure(why) => write!(f, "engine failure: {why}"),
        }
    }
}

/// The VMM side of the exit interface.
pub trait ExitHandler {
    /// Handles one exit: dispatches to devices, counts it, decides whether to go on.
    /// `icount` is the number of guest instructions retired before the exit (0 for
    /// engines that cannot count them).
    fn handle(&mut self, exit: VmExit<'_>, icount: u64) -> Flow;
}

//! The VMM side of a test guest: records port and MMIO traffic and stops on HLT,
//! shutdown and unsupported instructions, so a test sees every exit the engine made;
//! and an interrupt controller with one line, for the tests of interrupt delivery.

use crate::exit::{ExitHandler, Flow, InterruptPoll, StopReason, VmExit};
use std::collections::VecDeque;

/// What a test stops with after an MMIO write when `stop_on_mmio_write` is set.
pub const MMIO_STOP: StopReason = StopReason::Exited(0x4D4D);

/// Records the guest's port and MMIO traffic; HLT ends the run (nothing can wake it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestExits {
    /// Bytes IN instructions read, in order (0xFF once exhausted).
    pub port_input: VecDeque<u8>,
    /// Every IN: the port.
    pub ports_read: Vec<u16>,
    /// Every OUT: port and bytes.
    pub port_output: Vec<(u16, Vec<u8>)>,
    /// Every MMIO write: address and bytes.
    pub mmio_writes: Vec<(u64, Vec<u8>)>,
    /// Ask the engine to stop after an MMIO write (as a device wanting attention would).
    pub stop_on_mmio_write: bool,
}

impl ExitHandler for TestExits {
    fn handle(&mut self, exit: VmExit<'_>, _icount: u64) -> Flow {
        match exit {
            VmExit::Hlt { .. } => Flow::Stop(StopReason::Halted),
            VmExit::Unsupported { rip, what } => Flow::Stop(StopReason::Unsupported { rip, what }),
            // A guest without an IDT: an exception becomes a triple fault naming it.
            VmExit::Shutdown { cause } => Flow::Stop(StopReason::Shutdown(cause)),
            VmExit::IoIn { port, data } => {
                self.ports_read.push(port);
                for b in data.iter_mut() {
                    *b = self.port_input.pop_front().unwrap_or(0xFF);
                }
                Flow::Continue
            }
            VmExit::IoOut { port, data } => {
                self.port_output.push((port, data.to_vec()));
                Flow::Continue
            }
            VmExit::MmioRead { .. } => Flow::Continue,
            VmExit::MmioWrite { addr, data } => {
                self.mmio_writes.push((addr, data.to_vec()));
                if self.stop_on_mmio_write {
                    Flow::Stop(MMIO_STOP)
                } else {
                    Flow::Continue
                }
            }
            // Only hardware assist reports these, and test guests trap and emulate.
            VmExit::Cpuid { .. }
            | VmExit::Msr { .. }
            | VmExit::CrAccess { .. }
            | VmExit::ExternalInterrupt { .. } => Flow::Continue,
            // No para-virtualization here: the VMM's MSR refuses (#GP), a hypercall
            // leaves EAX as it is.
            VmExit::Hypercall { .. } | VmExit::VmmMsr { .. } => Flow::Continue,
        }
    }
}

/// An interrupt controller with one line into [`TestInterrupts::vector`]; HLT and
/// shutdown end the run, every other exit goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestInterrupts {
    /// The vector it answers the acknowledge cycle with.
    pub vector: u8,
    /// Whether its line is up.
    pub pending: bool,
    /// A level that never drops: acknowledging leaves the line up (an interrupt storm),
    /// where otherwise it takes the one interrupt that was waiting.
    pub level: bool,
    /// The instruction count it asks to be polled again by (0: at once, every time).
    pub next_poll: u64,
}

impl TestInterrupts {
    /// One interrupt on `vector`, waiting if `waiting`, taken once; it asks for no poll.
    pub fn once(vector: u8, waiting: bool) -> Self {
        TestInterrupts {
            vector,
            pending: waiting,
            level: false,
            next_poll: u64::MAX,
        }
    }

    /// A controller that asks to be polled again at once, every time; with `pending`,
    /// its line never drops: an interrupt is pending at every poll, however many were
    /// acknowledged.
    pub fn impatient(vector: u8, pending: bool) -> Self {
        TestInterrupts {
            vector,
            pending,
            level: true,
            next_poll: 0,
        }
    }
}

impl ExitHandler for TestInterrupts {
    fn handle(&mut self, exit: VmExit<'_>, _: u64) -> Flow {
        match exit {
            VmExit::Hlt { .. } => Flow::Stop(StopReason::Halted),
            VmExit::Shutdown { cause } => Flow::Stop(StopReason::Shutdown(cause)),
            _ => Flow::Continue,
        }
    }

    fn poll_interrupts(&mut self, _: u64) -> InterruptPoll {
        InterruptPoll {
            pending: self.pending,
            next_poll: self.next_poll,
            next_poll_at: None,
        }
    }

    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        if self.level {
            Some(self.vector)
        } else {
            std::mem::take(&mut self.pending).then_some(self.vector)
        }
    }
}

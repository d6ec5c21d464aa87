//! The device model every engine shares.
//!
//! The interpreter, KVM and any later engine all forward the guest's port I/O and MMIO
//! accesses to the same [`Bus`]es, so a device behaves identically whichever engine runs
//! the CPU. This crate knows nothing about CPUs, debuggers or front ends: it only turns
//! bus accesses into device state changes, interrupt requests ([`IrqLines`]) and
//! requests to the VMM ([`DeviceRequest`]).
//!
//! ```
//! use devices::{DeviceRequest, PcDevices, SharedBuffer, COM1_BASE, DEBUG_EXIT_BASE};
//!
//! let console = SharedBuffer::new();
//! let pc = PcDevices::new(Box::new(console.clone()));
//! // The guest prints a byte through COM1's transmit register...
//! pc.pio.write(COM1_BASE, b"A").unwrap();
//! assert_eq!(console.contents(), b"A");
//! // ...and asks to end the run through isa-debug-exit.
//! assert_eq!(pc.pio.write(DEBUG_EXIT_BASE, &[3]).unwrap(), Some(DeviceRequest::Exit(3)));
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bus;
pub mod debug_exit;
pub mod irq;
pub mod pc;
pub mod rom;
pub mod serial;
pub mod shared_buffer;

pub use bus::{Bus, BusDevice, BusError, BusRange, DeviceRequest, SharedDevice, OPEN_BUS};
pub use debug_exit::DebugExit;
pub use irq::{IrqLine, IrqLines};
pub use pc::{PcDevices, COM1_BASE, COM1_IRQ, COM1_LEN, DEBUG_EXIT_BASE, DEBUG_EXIT_LEN};
pub use rom::Rom;
pub use serial::{SerialError, SerialPort};
pub use shared_buffer::SharedBuffer;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex` even if a thread panicked while holding it.
///
/// Everything this crate guards is plain register or byte state that is valid after any
/// completed write, and the panic that poisoned the lock has already been reported, so
/// refusing all later accesses would only turn one bug into a dead machine.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

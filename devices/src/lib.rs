//! The device model every engine shares.
//!
//! The interpreter, KVM and any later engine all forward the guest's port I/O and MMIO
//! accesses to the same [`Bus`]es, so a device behaves identically whichever engine runs
//! the CPU. This crate knows nothing about CPUs, debuggers or front ends: it only turns
//! bus accesses into device state changes, interrupt requests ([`IrqLines`], which the
//! board moves into its [`PicPair`] for the VMM to acknowledge) and requests to the VMM
//! ([`DeviceRequest`]). Nor does it read a host clock: the VMM passes virtual time to the
//! [`Pit8254`] (see [`pc`] for who calls what).
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

pub mod ata;
pub mod bus;
pub mod debug_exit;
pub mod disk;
pub mod irq;
pub mod pc;
pub mod pic;
pub mod pit;
pub mod rom;
pub mod serial;
pub mod shared_buffer;
#[cfg(test)]
mod state_test;
pub mod system_control;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError, BusRange, DeviceRequest, SharedDevice, OPEN_BUS};
pub use debug_exit::DebugExit;
pub use disk::{Disk, DiskError, DiskIoError, SECTOR_SIZE};
pub use irq::{IrqLine, IrqLines};
pub use pc::{
    AttachError, PcDevices, PcState, PcStateError, VirtioSlot, ATA_BASE, ATA_CONTROL_PORT, ATA_IRQ,
    ATA_LEN, COM1_BASE, COM1_IRQ, COM1_LEN, DEBUG_EXIT_BASE, DEBUG_EXIT_LEN, PIC_LEN,
    PIC_MASTER_BASE, PIC_SLAVE_BASE, PIT_BASE, PIT_IRQ, PIT_LEN, SYSTEM_CONTROL_LEN,
    SYSTEM_CONTROL_PORT, VIRTIO_IRQS, VIRTIO_MMIO_BASE,
};
pub use pic::{PicPair, PicPairState, PicPort, PicState, PicStateError};
pub use pit::{CounterState, Pit8254, PitState, PitStateError};
pub use rom::Rom;
pub use serial::{SerialError, SerialPort, SerialPortState, SerialStateError};
pub use shared_buffer::SharedBuffer;
pub use system_control::{SystemControl, SystemControlState, SystemControlStateError};

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex` even if a thread panicked while holding it.
///
/// Everything this crate guards is plain register or byte state that is valid after any
/// completed write, and the panic that poisoned the lock has already been reported, so
/// refusing all later accesses would only turn one bug into a dead machine.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `bit` if `set`, else 0: for building a status byte from flags.
pub(crate) fn bit_if(set: bool, bit: u8) -> u8 {
    if set {
        bit
    } else {
        0
    }
}

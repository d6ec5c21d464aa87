//! virtio devices on the virtio-mmio transport (virtio 1.x, split virtqueues).
//!
//! The split is rust-vmm's: [`mmio`] is the transport (registers, feature negotiation,
//! device status, queue set-up, the interrupt line), written here because no maintained
//! crate provides one; the queues themselves are rust-vmm's `virtio-queue`; the numbers
//! come from `virtio-bindings`. Each device type ([`blk`], [`console`], [`net`]) is a
//! [`VirtioDevice`]: it only turns the descriptor chains the driver made available into
//! used buffers, through the loop in [`serve`]. [`chain`] checks every chain before a device sees it, and [`inspect`]
//! shows the queues as they are in guest memory, for the GUI and labs.
//!
//! # Guest memory
//! The devices reach guest RAM through any `vm_memory::GuestMemory`, so this crate does
//! not know how RAM is provided. The machine hands them its own memory, whose dirty
//! bitmap is the engines' code map: every byte a device writes into guest RAM (a block
//! read, a used-ring entry) drops decoded code it overwrites, exactly as a CPU store does.
//!
//! # When requests run
//! Synchronously, on the guest's write to `QueueNotify`: the VMM thread that handles
//! the MMIO exit runs the device, fills the used ring and raises the interrupt before
//! the guest executes its next instruction. A student therefore sees one exit per
//! notification and none per byte, the whole point of the comparison with ATA PIO.

pub mod blk;
pub mod chain;
pub mod console;
pub mod inspect;
pub mod mmio;
pub mod net;
#[cfg(test)]
mod proptests;
pub mod serve;
#[cfg(test)]
mod test_driver;

use serde::{Deserialize, Serialize};
use virtio_queue::Queue;
use vm_memory::GuestMemory;

pub use chain::ChainError;
pub use inspect::{DescriptorView, QueueView, UsedView, VirtioView};
pub use mmio::{VirtioCounters, VirtioMmio, VirtioMmioState, VirtioStateError};

/// What processing a queue did, for the transport's interrupt and counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueWork {
    /// Buffers put in used rings (of any of the device's queues).
    pub used: u64,
    /// Requests the device completed with an error status (bad sector, bad buffer
    /// sizes, unknown request type): the guest sees the status, the device goes on.
    pub request_errors: u64,
    /// Bytes moved between guest memory and the device's back end.
    pub bytes: u64,
}

/// What a device type announces to the driver: fixed for the type, so each device
/// gives it as one constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceType {
    /// Its virtio device ID (`VIRTIO_ID_*`).
    pub id: u32,
    /// A short name for people: "virtio-blk".
    pub name: &'static str,
    /// The device-type feature bits it offers (the transport adds `VIRTIO_F_VERSION_1`).
    pub features: u64,
    /// The largest size of each of its queues (powers of two).
    pub queue_max_sizes: &'static [u16],
}

/// A virtio device type, as the transport drives it.
pub trait VirtioDevice<M: GuestMemory>: Send {
    /// What its type announces.
    fn device_type(&self) -> &'static DeviceType;
    /// Its virtio device ID (`VIRTIO_ID_*`).
    fn device_id(&self) -> u32 {
        self.device_type().id
    }
    /// A short name for people: "virtio-blk".
    fn name(&self) -> &'static str {
        self.device_type().name
    }
    /// The device-type feature bits it offers (the transport adds `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64 {
        self.device_type().features
    }
    /// The largest size of each of its queues (powers of two).
    fn queue_max_sizes(&self) -> &'static [u16] {
        self.device_type().queue_max_sizes
    }
    /// Reads its configuration space: bytes past it read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Handles the buffers the driver made available on queue `index` (and may use the
    /// others: net's loopback fills the receive queue from the transmit queue).
    ///
    /// A chain that breaks the virtqueue rules is returned as an error; the transport
    /// then puts the device in `DEVICE_NEEDS_RESET`.
    fn process(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &M,
    ) -> Result<QueueWork, ChainError>;
    /// Back to the state after power-on (the driver wrote 0 to `Status`). By default
    /// nothing: the device keeps no state of its own.
    fn reset(&mut self) {}
    /// Its own state, for snapshots: by default [`DeviceState::Stateless`].
    fn state(&self) -> DeviceState {
        DeviceState::Stateless
    }
    /// Takes `state`, already checked by [`VirtioDevice::check_state`]; by default
    /// there is nothing to take.
    fn restore(&mut self, _state: &DeviceState) {}
    /// Whether `state` is one this device can take; by default only
    /// [`DeviceState::Stateless`].
    fn check_state(&self, state: &DeviceState) -> Result<(), VirtioStateError> {
        match state {
            DeviceState::Stateless => Ok(()),
            _ => Err(VirtioStateError::Stateless(self.name())),
        }
    }
}

/// Reads `data.len()` bytes at `offset` of a configuration space laid out as `config`
/// (what [`VirtioDevice::read_config`] does): bytes past its end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = offset
            .checked_add(i as u64)
            .and_then(|at| config.get(usize::try_from(at).ok()?))
            .copied()
            .unwrap_or(0);
    }
}

/// The device-type part of a virtio device's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceState {
    /// Nothing beyond the transport (virtio-blk: the image is the medium, not state;
    /// virtio-console: output is gone once written).
    Stateless,
    /// virtio-net's loopback: frames sent and not yet received, oldest first.
    Net {
        /// The frames, each with its virtio-net header.
        pending: Vec<Vec<u8>>,
    },
}

/// A virtio-mmio device with its memory type hidden, as the board holds it: the bus
/// side, plus what snapshots, counters and introspection need.
pub trait VirtioTransport: crate::bus::BusDevice {
    /// The device type's name.
    fn name(&self) -> &'static str;
    /// What it did so far.
    fn counters(&self) -> VirtioCounters;
    /// Its state.
    fn state(&self) -> VirtioMmioState;
    /// Checks a state without taking it.
    fn check_state(&self, state: &VirtioMmioState) -> Result<(), VirtioStateError>;
    /// Takes a state, after checking all of it.
    fn restore(&mut self, state: &VirtioMmioState) -> Result<(), VirtioStateError>;
    /// Its queues as they stand in guest memory.
    fn view(&self) -> VirtioView;
}

/// The feature bit every modern device offers and every driver must accept: virtio 1.x,
/// little-endian, no legacy layout.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

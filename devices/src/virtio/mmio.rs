//! The virtio-mmio transport, virtio 1.x ("modern", MMIO version 2), section 4.2 of the
//! virtio specification.
//!
//! A pure register model: 32-bit registers below offset 0x100, the device's
//! configuration space from 0x100. The driver negotiates features (it must accept
//! `VIRTIO_F_VERSION_1`: Popek has no legacy interface), sets up each queue's size and
//! three addresses, marks it ready, and notifies; the transport then hands the queue to
//! the device type and raises its interrupt line for the used buffers.
//!
//! A driver that breaks the rules (a queue size that is not a power of two, rings
//! outside memory or misaligned, a notification before `DRIVER_OK`, a malformed chain)
//! puts the device in `DEVICE_NEEDS_RESET`, with a configuration-change interrupt, until
//! it resets the device: every such event is counted in [`VirtioCounters::errors`].

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio as reg;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::inspect::{self, VirtioView};
use super::{DeviceState, VirtioDevice, VirtioTransport, VIRTIO_F_VERSION_1};
use crate::bus::{BusDevice, DeviceRequest};
use crate::irq::IrqLine;

/// `MagicValue`: "virt" in little-endian ASCII.
pub const MAGIC: u32 = 0x7472_6976;
/// `Version`: 2 is the modern (virtio 1.x) register layout.
pub const VERSION: u32 = 2;
/// `VendorID`: "POPK".
pub const VENDOR: u32 = 0x4B50_4F50;
/// The register window's size: registers, then configuration space, in one page.
pub const WINDOW: u64 = 0x1000;
/// Where the configuration space starts.
const CONFIG: u64 = reg::VIRTIO_MMIO_CONFIG as u64;

/// The interrupt status bit for used buffers.
const INT_VRING: u32 = reg::VIRTIO_MMIO_INT_VRING;
/// The interrupt status bit for a configuration change (and `DEVICE_NEEDS_RESET`).
const INT_CONFIG: u32 = reg::VIRTIO_MMIO_INT_CONFIG;

/// Every status bit a driver may set.
const STATUS_DRIVER_BITS: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_DRIVER_OK
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_FAILED;

/// What a virtio device did, for the counters students read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioCounters {
    /// Guest reads of the register window.
    pub register_reads: u64,
    /// Guest writes to it.
    pub register_writes: u64,
    /// Writes to `QueueNotify`.
    pub notifications: u64,
    /// Interrupts raised (edges on the device's IRQ line).
    pub interrupts: u64,
    /// Buffers put in used rings.
    pub used_buffers: u64,
    /// Bytes moved between guest memory and the device's back end.
    pub bytes: u64,
    /// Driver errors: malformed queues or chains, bad register accesses, notifications
    /// before `DRIVER_OK`, rejected feature sets.
    pub errors: u64,
    /// Requests completed with an error status (the device itself stays usable).
    pub request_errors: u64,
}

/// One queue's registers as the driver wrote them (the queue only takes them, checked,
/// when the driver sets `QueueReady`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRegs {
    /// `QueueNum`.
    pub size: u32,
    /// `QueueDesc`: the descriptor table.
    pub desc: u64,
    /// `QueueDriver`: the available ring.
    pub driver: u64,
    /// `QueueDevice`: the used ring.
    pub device: u64,
    /// `QueueReady`.
    pub ready: bool,
    /// The next available-ring entry the device will take.
    pub next_avail: u16,
    /// The next used-ring entry the device will fill.
    pub next_used: u16,
}

/// The transport's state and its device's, for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMmioState {
    /// The device ID, so a state goes back only into the same kind of device.
    pub device_id: u32,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// The features the driver wrote.
    pub driver_features: u64,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// `Status`.
    pub status: u32,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// Every queue.
    pub queues: Vec<QueueRegs>,
    /// The device type's own state.
    pub device: DeviceState,
}

/// Why a [`VirtioMmioState`] cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtioStateError {
    /// The state is another kind of device's.
    #[error("virtio state of device ID {found} restored into device ID {expected}")]
    DeviceId {
        /// This device's ID.
        expected: u32,
        /// The state's.
        found: u32,
    },
    /// A queue count the device does not have.
    #[error("virtio state has {found} queues, the device {expected}")]
    QueueCount {
        /// The device's.
        expected: usize,
        /// The state's.
        found: usize,
    },
    /// A ready queue whose set-up the device would refuse.
    #[error("virtio queue {index} in the state is ready but malformed")]
    Queue {
        /// The queue.
        index: usize,
    },
    /// Status or interrupt bits no device has.
    #[error("virtio state has status {status:#x} / interrupt status {interrupt:#x}")]
    Bits {
        /// The status.
        status: u32,
        /// The interrupt status.
        interrupt: u32,
    },
    /// The device type's part is wrong.
    #[error("virtio device state: {0}")]
    Device(&'static str),
    /// A device type that keeps no state of its own (named) was given some.
    #[error("virtio device state: {0} keeps no state of its own")]
    Stateless(&'static str),
}

/// A virtio device on the MMIO transport.
pub struct VirtioMmio<M: GuestMemory> {
    device: Box<dyn VirtioDevice<M>>,
    mem: M,
    irq: IrqLine,
    queues: Vec<Queue>,
    regs: Vec<QueueRegs>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: u32,
    counters: VirtioCounters,
}

impl<M: GuestMemory> std::fmt::Debug for VirtioMmio<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioMmio")
            .field("device", &self.device.name())
            .field("status", &self.status)
            .finish()
    }
}

impl<M: GuestMemory + Send> VirtioMmio<M> {
    /// `device` on the transport, reaching guest memory through `mem` and interrupting
    /// on `irq`.
    pub fn new(device: Box<dyn VirtioDevice<M>>, mem: M, irq: IrqLine) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("device queue sizes are powers of two"))
            .collect::<Vec<_>>();
        let regs = vec![QueueRegs::default(); queues.len()];
        VirtioMmio {
            device,
            mem,
            irq,
            queues,
            regs,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: 0,
            counters: VirtioCounters::default(),
        }
    }

    /// Every feature the device offers.
    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    /// Back to power-on: what writing 0 to `Status` does.
    fn reset(&mut self) {
        self.queues.iter_mut().for_each(QueueT::reset);
        self.regs.iter_mut().for_each(|r| *r = QueueRegs::default());
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt_status = 0;
        self.device.reset();
    }

    /// The driver broke a rule: count it, and if the driver is past set-up, say the
    /// device needs a reset.
    fn driver_error(&mut self) {
        self.counters.errors += 1;
        if self.status & VIRTIO_CONFIG_S_NEEDS_RESET == 0 {
            self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
            if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
                self.interrupt(INT_CONFIG);
            }
        }
    }

    fn interrupt(&mut self, bit: u32) {
        self.interrupt_status |= bit;
        self.counters.interrupts += 1;
        // Raising a line is an atomic bit flip that cannot fail.
        let _ = vm_superio::Trigger::trigger(&self.irq);
    }

    fn selected(&mut self) -> Option<usize> {
        let index = self.queue_sel as usize;
        (index < self.queues.len()).then_some(index)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.regs.get(self.queue_sel as usize);
        match offset as u32 {
            reg::VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            reg::VIRTIO_MMIO_VERSION => VERSION,
            reg::VIRTIO_MMIO_DEVICE_ID => self.device.device_id(),
            reg::VIRTIO_MMIO_VENDOR_ID => VENDOR,
            reg::VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::VIRTIO_MMIO_QUEUE_NUM_MAX => self
                .device
                .queue_max_sizes()
                .get(self.queue_sel as usize)
                .map_or(0, |&max| u32::from(max)),
            reg::VIRTIO_MMIO_QUEUE_READY => queue.is_some_and(|q| q.ready).into(),
            reg::VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            reg::VIRTIO_MMIO_STATUS => self.status,
            // No shared memory regions: a length of all ones says so (4.2.2).
            reg::VIRTIO_MMIO_SHM_LEN_LOW | reg::VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            reg::VIRTIO_MMIO_SHM_BASE_LOW | reg::VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            // The configuration never changes under the driver.
            reg::VIRTIO_MMIO_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        let setting_up = self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
        match offset as u32 {
            reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES if setting_up => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xFFFF_FFFF) | value as u64,
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xFFFF_FFFF) | (u64::from(value) << 32)
                }
                _ => {}
            },
            reg::VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            reg::VIRTIO_MMIO_QUEUE_NUM
            | reg::VIRTIO_MMIO_QUEUE_DESC_LOW
            | reg::VIRTIO_MMIO_QUEUE_DESC_HIGH
            | reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | reg::VIRTIO_MMIO_QUEUE_USED_LOW
            | reg::VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_register(offset as u32, value),
            reg::VIRTIO_MMIO_QUEUE_READY => self.set_queue_ready(value == 1),
            reg::VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            reg::VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::VIRTIO_MMIO_STATUS => self.write_status(value),
            // Read-only registers, the feature registers after FEATURES_OK, and holes:
            // the driver has no business writing them.
            _ => self.driver_error(),
        }
    }

    fn write_queue_register(&mut self, register: u32, value: u32) {
        let Some(index) = self.selected() else {
            return self.driver_error();
        };
        let q = &mut self.regs[index];
        if q.ready {
            // 4.2.2.3: the driver must not change a ready queue's set-up.
            return self.driver_error();
        }
        let low = |old: u64| (old & !0xFFFF_FFFF) | u64::from(value);
        let high = |old: u64| (old & 0xFFFF_FFFF) | (u64::from(value) << 32);
        match register {
            reg::VIRTIO_MMIO_QUEUE_NUM => q.size = value,
            reg::VIRTIO_MMIO_QUEUE_DESC_LOW => q.desc = low(q.desc),
            reg::VIRTIO_MMIO_QUEUE_DESC_HIGH => q.desc = high(q.desc),
            reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.driver = low(q.driver),
            reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.driver = high(q.driver),
            reg::VIRTIO_MMIO_QUEUE_USED_LOW => q.device = low(q.device),
            _ => q.device = high(q.device),
        }
    }

    fn set_queue_ready(&mut self, ready: bool) {
        let Some(index) = self.selected() else {
            return self.driver_error();
        };
        if !ready {
            self.queues[index].set_ready(false);
            self.regs[index].ready = false;
            return;
        }
        let mut regs = self.regs[index];
        regs.ready = true;
        regs.next_avail = 0;
        regs.next_used = 0;
        match configure(&mut self.queues[index], &regs, &self.mem) {
            Ok(()) => self.regs[index] = regs,
            Err(()) => self.driver_error(),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            return self.reset();
        }
        if value & !STATUS_DRIVER_BITS != 0
            || value & self.status != self.status & !VIRTIO_CONFIG_S_NEEDS_RESET
        {
            // Bits the driver may not set, or clearing bits without a reset (3.1.1).
            return self.driver_error();
        }
        let newly = value & !self.status;
        if newly & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.device_features();
            let acceptable = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !acceptable {
                // 3.1.1: the device leaves FEATURES_OK clear; the driver reads it back
                // and gives up. Not a reset-worthy error, but a counted one.
                self.counters.errors += 1;
                self.status |= value & !VIRTIO_CONFIG_S_FEATURES_OK;
                return;
            }
        }
        self.status = value | (self.status & VIRTIO_CONFIG_S_NEEDS_RESET);
    }

    fn notify(&mut self, value: u32) {
        self.counters.notifications += 1;
        let index = (value & 0xFFFF) as usize;
        let live = self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && self.status & VIRTIO_CONFIG_S_NEEDS_RESET == 0;
        if !live || index >= self.queues.len() || !self.regs[index].ready {
            return self.driver_error();
        }
        match self.device.process(index, &mut self.queues, &self.mem) {
            Ok(work) => {
                self.counters.used_buffers += work.used;
                self.counters.bytes += work.bytes;
                self.counters.request_errors += work.request_errors;
                if work.used > 0 && self.wants_interrupt() {
                    self.interrupt(INT_VRING);
                }
            }
            Err(_) => self.driver_error(),
        }
        for (regs, queue) in self.regs.iter_mut().zip(&self.queues) {
            regs.next_avail = queue.next_avail();
            regs.next_used = queue.next_used();
        }
    }

    /// Whether any queue's driver wants an interrupt for its new used buffers
    /// (`VIRTQ_AVAIL_F_NO_INTERRUPT` clear).
    /// Every ready queue is asked, as the question has side effects under EVENT_IDX.
    fn wants_interrupt(&mut self) -> bool {
        let mut wanted = false;
        for queue in self.queues.iter_mut().filter(|q| q.ready()) {
            wanted |= queue.needs_notification(&self.mem).unwrap_or(true);
        }
        wanted
    }
}

/// Sets `queue` up as `regs` says, if the virtio rules allow it: a power-of-two size up
/// to the maximum, rings aligned (2.7) and wholly in guest memory.
fn configure<M: GuestMemory>(queue: &mut Queue, regs: &QueueRegs, mem: &M) -> Result<(), ()> {
    let size = u16::try_from(regs.size).map_err(|_| ())?;
    queue.try_set_size(size).map_err(|_| ())?;
    queue
        .try_set_desc_table_address(GuestAddress(regs.desc))
        .map_err(|_| ())?;
    queue
        .try_set_avail_ring_address(GuestAddress(regs.driver))
        .map_err(|_| ())?;
    queue
        .try_set_used_ring_address(GuestAddress(regs.device))
        .map_err(|_| ())?;
    let n = u64::from(size);
    let in_memory = |addr: u64, len: u64| {
        addr.checked_add(len).is_some()
            && mem.check_range(GuestAddress(addr), len as usize, Permissions::ReadWrite)
    };
    if !(in_memory(regs.desc, 16 * n)
        && in_memory(regs.driver, 6 + 2 * n)
        && in_memory(regs.device, 6 + 8 * n))
    {
        return Err(());
    }
    queue.set_next_avail(regs.next_avail);
    queue.set_next_used(regs.next_used);
    queue.set_ready(true);
    Ok(())
}

impl<M: GuestMemory + Send> VirtioTransport for VirtioMmio<M> {
    /// The device type's name.
    fn name(&self) -> &'static str {
        self.device.name()
    }

    /// What the device did so far.
    fn counters(&self) -> VirtioCounters {
        self.counters
    }

    /// The transport's and device's state.
    fn state(&self) -> VirtioMmioState {
        VirtioMmioState {
            device_id: self.device.device_id(),
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            status: self.status,
            interrupt_status: self.interrupt_status,
            queues: self.regs.clone(),
            device: self.device.state(),
        }
    }

    /// Checks `state` against this device without changing anything.
    fn check_state(&self, state: &VirtioMmioState) -> Result<(), VirtioStateError> {
        let expected = self.device.device_id();
        if state.device_id != expected {
            return Err(VirtioStateError::DeviceId {
                expected,
                found: state.device_id,
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(VirtioStateError::QueueCount {
                expected: self.queues.len(),
                found: state.queues.len(),
            });
        }
        if state.status & !(STATUS_DRIVER_BITS | VIRTIO_CONFIG_S_NEEDS_RESET) != 0
            || state.interrupt_status & !(INT_VRING | INT_CONFIG) != 0
        {
            return Err(VirtioStateError::Bits {
                status: state.status,
                interrupt: state.interrupt_status,
            });
        }
        for (index, (regs, max)) in state
            .queues
            .iter()
            .zip(self.device.queue_max_sizes())
            .enumerate()
        {
            let mut scratch = Queue::new(*max).expect("device queue sizes are powers of two");
            if regs.ready && configure(&mut scratch, regs, &self.mem).is_err() {
                return Err(VirtioStateError::Queue { index });
            }
        }
        self.device.check_state(&state.device)
    }

    /// Puts the transport and device in `state`, after checking all of it.
    fn restore(&mut self, state: &VirtioMmioState) -> Result<(), VirtioStateError> {
        self.check_state(state)?;
        self.reset();
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.driver_features = state.driver_features;
        self.queue_sel = state.queue_sel;
        self.status = state.status;
        self.interrupt_status = state.interrupt_status;
        for ((queue, regs), saved) in self
            .queues
            .iter_mut()
            .zip(&mut self.regs)
            .zip(&state.queues)
        {
            *regs = *saved;
            if saved.ready {
                configure(queue, saved, &self.mem).expect("checked by check_state");
            }
        }
        self.device.restore(&state.device);
        Ok(())
    }

    /// The device and its queues as they are now, read from guest memory without
    /// changing anything the guest or the device can see.
    fn view(&self) -> VirtioView {
        VirtioView {
            name: self.device.name().to_string(),
            device_id: self.device.device_id(),
            status: self.status,
            device_features: self.device_features(),
            driver_features: self.driver_features,
            interrupt_status: self.interrupt_status,
            counters: self.counters,
            queues: self
                .regs
                .iter()
                .zip(self.device.queue_max_sizes())
                .enumerate()
                .map(|(index, (regs, &max))| inspect::queue_view(index, max, regs, &self.mem))
                .collect(),
        }
    }
}

impl<M: GuestMemory + Send> BusDevice for VirtioMmio<M> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.counters.register_reads += 1;
        if offset >= CONFIG {
            return self.device.read_config(offset - CONFIG, data);
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            // 4.2.2.2: registers are read with aligned 32-bit accesses.
            self.counters.errors += 1;
            return data.fill(0);
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        self.counters.register_writes += 1;
        if offset >= CONFIG {
            // No device of Popek's has writable configuration.
            self.counters.errors += 1;
            return None;
        }
        let Ok(value) = <[u8; 4]>::try_from(data) else {
            self.counters.errors += 1;
            return None;
        };
        if !offset.is_multiple_of(4) {
            self.counters.errors += 1;
            return None;
        }
        self.write_register(offset, u32::from_le_bytes(value));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::Disk;
    use crate::virtio::blk::VirtioBlk;
    use crate::virtio::test_driver::{Driver, Mem, NEXT};
    use crate::virtio::VirtioTransport;

    fn blk() -> Box<dyn VirtioDevice<Mem>> {
        Box::new(VirtioBlk::new(Disk::memory(8)))
    }

    fn needs_reset(d: &Driver) -> bool {
        d.read(reg::VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET != 0
    }

    fn errors(d: &Driver) -> u64 {
        d.dev.lock().unwrap().counters().errors
    }

    #[test]
    fn identifies_itself_as_a_modern_device() {
        let d = Driver::new(blk());
        assert_eq!(d.read(reg::VIRTIO_MMIO_MAGIC_VALUE), MAGIC);
        assert_eq!(d.read(reg::VIRTIO_MMIO_VERSION), 2);
        assert_eq!(d.read(reg::VIRTIO_MMIO_VENDOR_ID), VENDOR);
        d.write(reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(d.read(reg::VIRTIO_MMIO_DEVICE_FEATURES), 1, "VERSION_1");
        assert_eq!(d.read(reg::VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
        d.write(reg::VIRTIO_MMIO_QUEUE_SEL, 1);
        assert_eq!(d.read(reg::VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "no queue 1");
    }

    #[test]
    fn a_driver_without_version_1_is_refused() {
        let d = Driver::new(blk());
        d.write(reg::VIRTIO_MMIO_STATUS, 3);
        d.write(reg::VIRTIO_MMIO_DRIVER_FEATURES, 0);
        d.write(reg::VIRTIO_MMIO_STATUS, 3 | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(d.read(reg::VIRTIO_MMIO_STATUS), 3);
        assert_eq!(errors(&d), 1);
    }

    #[test]
    fn broken_queue_set_ups_need_a_reset() {
        for (size, desc) in [(3, 0x10000), (512, 0x10000), (16, 0x10008), (16, 0xFFFF0)] {
            let d = Driver::new(blk());
            d.write(reg::VIRTIO_MMIO_QUEUE_NUM, size);
            d.write(reg::VIRTIO_MMIO_QUEUE_DESC_LOW, desc);
            d.write(reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x20000);
            d.write(reg::VIRTIO_MMIO_QUEUE_USED_LOW, 0x30000);
            d.write(reg::VIRTIO_MMIO_QUEUE_READY, 1);
            assert_eq!(d.read(reg::VIRTIO_MMIO_QUEUE_READY), 0, "{size} {desc:#x}");
            assert!(needs_reset(&d));
            assert_eq!(errors(&d), 1);
            d.write(reg::VIRTIO_MMIO_STATUS, 0);
            assert!(!needs_reset(&d), "a reset clears it");
        }
    }

    #[test]
    fn notifications_before_driver_ok_are_errors() {
        let d = Driver::new(blk());
        d.write(reg::VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert!(needs_reset(&d));
        assert_eq!(d.irqs.take_pending(), 0, "no interrupt before DRIVER_OK");
    }

    #[test]
    fn a_looping_chain_needs_a_reset_and_says_so() {
        let mut d = Driver::set_up(blk(), 0);
        d.put_desc(0, 0, 0x80000, 16, NEXT, 1);
        d.put_desc(0, 1, 0x81000, 16, NEXT, 0);
        d.make_available(0, 0);
        d.write(reg::VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert!(needs_reset(&d));
        assert_eq!(d.read(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
        assert_eq!(d.irqs.take_pending(), 1 << 5);
        // Further notifications are refused until the reset.
        d.write(reg::VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert_eq!(errors(&d), 2);
        assert_eq!(d.used(0, 0).0, 0, "nothing used");
    }

    #[test]
    fn narrow_and_misaligned_register_accesses_are_counted() {
        let d = Driver::new(blk());
        let mut dev = d.dev.lock().unwrap();
        let mut two = [0xAA; 2];
        dev.read(0, &mut two);
        assert_eq!(two, [0, 0]);
        dev.write(0x72, &[1, 0, 0, 0]);
        dev.write(0x70, &[1]);
        assert_eq!(dev.counters().errors, 3);
        assert_eq!(dev.state().status, 0);
    }
}

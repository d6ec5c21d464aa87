//! A driver for tests: sets a virtio-mmio device up through its registers, as a guest
//! does, and puts descriptor chains in its queues by hand (so tests can also put
//! malformed ones).

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
};
use virtio_bindings::virtio_mmio as reg;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{VirtioDevice, VirtioMmio, VIRTIO_F_VERSION_1};
use crate::bus::BusDevice;
use crate::irq::IrqLines;
use crate::lock;

/// Guest memory for tests.
pub(crate) type Mem = GuestMemoryMmap<()>;
/// Its size.
pub(crate) const MEM_SIZE: u64 = 1 << 20;
/// The IRQ the device under test raises.
pub(crate) const IRQ: u8 = 5;
/// Where queue n's rings start (desc, avail, used: 16 KiB apart).
fn ring_base(queue: u32) -> u64 {
    0x10000 + u64::from(queue) * 0x10000
}
/// Queue size the driver picks.
pub(crate) const SIZE: u16 = 16;
/// Descriptor flags.
pub(crate) const NEXT: u16 = 1;
pub(crate) const WRITE: u16 = 2;

/// A device on the transport, with its memory and interrupt lines.
pub(crate) struct Driver {
    pub dev: Arc<Mutex<VirtioMmio<Mem>>>,
    pub mem: Mem,
    pub irqs: IrqLines,
    /// The next free descriptor of each queue, and its avail index.
    next_desc: Vec<u16>,
    avail: Vec<u16>,
}

impl Driver {
    /// `device` on a fresh transport, not set up.
    pub fn new(device: Box<dyn VirtioDevice<Mem>>) -> Self {
        let mem = Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let irqs = IrqLines::new();
        let queues = device.queue_max_sizes().len();
        let dev = Arc::new(Mutex::new(VirtioMmio::new(
            device,
            mem.clone(),
            irqs.line(IRQ),
        )));
        Driver {
            dev,
            mem,
            irqs,
            next_desc: vec![0; queues],
            avail: vec![0; queues],
        }
    }

    pub fn read(&self, offset: u32) -> u32 {
        let mut data = [0; 4];
        lock(&self.dev).read(u64::from(offset), &mut data);
        u32::from_le_bytes(data)
    }

    pub fn write(&self, offset: u32, value: u32) {
        lock(&self.dev).write(u64::from(offset), &value.to_le_bytes());
    }

    /// The handshake of 3.1.1, accepting VERSION_1 and `features`, and every queue set
    /// up with [`SIZE`] entries.
    pub fn set_up(device: Box<dyn VirtioDevice<Mem>>, features: u64) -> Self {
        let d = Self::new(device);
        d.write(reg::VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        d.write(
            reg::VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        );
        let wanted = features | VIRTIO_F_VERSION_1;
        for sel in 0..2 {
            d.write(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            d.write(
                reg::VIRTIO_MMIO_DRIVER_FEATURES,
                (wanted >> (32 * sel)) as u32,
            );
        }
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        d.write(reg::VIRTIO_MMIO_STATUS, s);
        assert_ne!(
            d.read(reg::VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK,
            0
        );
        for q in 0..d.avail.len() as u32 {
            d.write(reg::VIRTIO_MMIO_QUEUE_SEL, q);
            d.write(reg::VIRTIO_MMIO_QUEUE_NUM, u32::from(SIZE));
            let base = ring_base(q);
            d.write(reg::VIRTIO_MMIO_QUEUE_DESC_LOW, base as u32);
            d.write(reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW, (base + 0x4000) as u32);
            d.write(reg::VIRTIO_MMIO_QUEUE_USED_LOW, (base + 0x8000) as u32);
            d.write(reg::VIRTIO_MMIO_QUEUE_READY, 1);
            assert_eq!(d.read(reg::VIRTIO_MMIO_QUEUE_READY), 1, "queue {q} ready");
        }
        d.write(reg::VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
        d
    }

    /// Writes descriptor `i` of `queue` as given.
    pub fn put_desc(&self, queue: u32, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(ring_base(queue) + 16 * u64::from(i % SIZE));
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&raw, at).unwrap();
    }

    /// Makes `head` available on `queue` (without notifying).
    pub fn make_available(&mut self, queue: u32, head: u16) {
        let q = queue as usize;
        let avail = ring_base(queue) + 0x4000;
        let slot = u64::from(self.avail[q] % SIZE);
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail[q], GuestAddress(avail + 2))
            .unwrap();
    }

    /// Puts a well-formed chain of (address, length, device-writable) buffers on
    /// `queue`, makes it available and notifies; returns its head.
    pub fn submit(&mut self, queue: u32, buffers: &[(u64, u32, bool)]) -> u16 {
        let q = queue as usize;
        let head = self.next_desc[q];
        for (k, &(addr, len, writable)) in buffers.iter().enumerate() {
            let i = head.wrapping_add(k as u16) % SIZE;
            let last = k + 1 == buffers.len();
            let flags = if last { 0 } else { NEXT } | if writable { WRITE } else { 0 };
            self.put_desc(queue, i, addr, len, flags, (i + 1) % SIZE);
        }
        self.next_desc[q] = head.wrapping_add(buffers.len() as u16) % SIZE;
        self.make_available(queue, head);
        self.write(reg::VIRTIO_MMIO_QUEUE_NOTIFY, queue);
        head
    }

    /// The used ring's index and its entry `i` (id, len).
    pub fn used(&self, queue: u32, i: u16) -> (u16, (u32, u32)) {
        let used = ring_base(queue) + 0x8000;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        let at = used + 4 + 8 * u64::from(i % SIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (idx, (id, len))
    }
}

//! Queue introspection: a virtio device's queues as they stand in guest memory, for the
//! GUI and the labs.
//!
//! Everything here only reads guest memory, through vm-memory, and changes nothing the
//! guest or the device can see (no index moves, no notification suppression), so a
//! client may look at any moment. Reads that fall outside guest memory show as `None`.

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::mmio::{QueueRegs, VirtioCounters};

/// One descriptor-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorView {
    /// The buffer's guest-physical address.
    pub addr: u64,
    /// Its length.
    pub len: u32,
    /// `VIRTQ_DESC_F_*`: 1 next, 2 device-writable, 4 indirect.
    pub flags: u16,
    /// The next descriptor, if flag 1 is set.
    pub next: u16,
}

/// One used-ring element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedView {
    /// The head of the chain the device used.
    pub id: u32,
    /// Bytes it wrote into the chain.
    pub len: u32,
}

/// One virtqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    /// Its index on the device.
    pub index: usize,
    /// `QueueNumMax`.
    pub max_size: u16,
    /// The registers as the driver set them, with the device's own indices.
    pub regs: QueueRegs,
    /// The available ring's `flags` and `idx`, as the driver last wrote them.
    pub avail_flags: Option<u16>,
    /// The available ring's `idx`: the driver has made this many chains available.
    pub avail_idx: Option<u16>,
    /// The used ring's `flags`.
    pub used_flags: Option<u16>,
    /// The used ring's `idx`: the device has used this many.
    pub used_idx: Option<u16>,
    /// The descriptor table (empty while the queue is not ready).
    pub descriptors: Vec<Option<DescriptorView>>,
    /// The available ring's entries (chain heads).
    pub avail_ring: Vec<Option<u16>>,
    /// The used ring's entries.
    pub used_ring: Vec<Option<UsedView>>,
    /// Chains the driver made available that the device has not taken yet, each as the
    /// descriptor indices it runs through (cut short at a loop or after a queue's worth).
    pub in_flight: Vec<Vec<u16>>,
}

/// A virtio device and its queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioView {
    /// The device type's name.
    pub name: &'static str,
    /// Its device ID.
    pub device_id: u32,
    /// `Status`.
    pub status: u32,
    /// The features it offers.
    pub device_features: u64,
    /// The features the driver wrote.
    pub driver_features: u64,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// Notifications, interrupts, errors.
    pub counters: VirtioCounters,
    /// Every queue.
    pub queues: Vec<QueueView>,
}

/// Flag of a descriptor that continues in `next`.
const DESC_F_NEXT: u16 = 1;

fn read_u16<M: GuestMemory>(mem: &M, addr: u64) -> Option<u16> {
    mem.read_obj::<u16>(GuestAddress(addr))
        .ok()
        .map(u16::from_le)
}

fn read_desc<M: GuestMemory>(mem: &M, table: u64, i: u16) -> Option<DescriptorView> {
    let at = table.checked_add(16 * u64::from(i))?;
    let mut raw = [0u8; 16];
    mem.read_slice(&mut raw, GuestAddress(at)).ok()?;
    let le16 = |o: usize| u16::from_le_bytes([raw[o], raw[o + 1]]);
    Some(DescriptorView {
        addr: u64::from_le_bytes(raw[0..8].try_into().ok()?),
        len: u32::from_le_bytes(raw[8..12].try_into().ok()?),
        flags: le16(12),
        next: le16(14),
    })
}

/// Queue `index` as it stands (see the module comment).
pub(super) fn queue_view<M: GuestMemory>(
    index: usize,
    max_size: u16,
    regs: &QueueRegs,
    mem: &M,
) -> QueueView {
    let mut view = QueueView {
        index,
        max_size,
        regs: *regs,
        avail_flags: None,
        avail_idx: None,
        used_flags: None,
        used_idx: None,
        descriptors: Vec::new(),
        avail_ring: Vec::new(),
        used_ring: Vec::new(),
        in_flight: Vec::new(),
    };
    if !regs.ready {
        return view;
    }
    // A ready queue's size was checked to be a power of two up to 32768.
    let size = regs.size as u16;
    view.avail_flags = read_u16(mem, regs.driver);
    view.avail_idx = read_u16(mem, regs.driver + 2);
    view.used_flags = read_u16(mem, regs.device);
    view.used_idx = read_u16(mem, regs.device + 2);
    view.descriptors = (0..size).map(|i| read_desc(mem, regs.desc, i)).collect();
    view.avail_ring = (0..u64::from(size))
        .map(|i| read_u16(mem, regs.driver + 4 + 2 * i))
        .collect();
    view.used_ring = (0..u64::from(size))
        .map(|i| {
            let at = regs.device + 4 + 8 * i;
            let id = mem.read_obj::<u32>(GuestAddress(at)).ok()?;
            let len = mem.read_obj::<u32>(GuestAddress(at + 4)).ok()?;
            Some(UsedView {
                id: u32::from_le(id),
                len: u32::from_le(len),
            })
        })
        .collect();
    if let Some(avail) = view.avail_idx {
        let pending = avail.wrapping_sub(regs.next_avail).min(size);
        view.in_flight = (0..pending)
            .map(|k| {
                let slot = regs.next_avail.wrapping_add(k) % size;
                let head = view.avail_ring[slot as usize];
                head.map_or_else(Vec::new, |head| chain_indices(&view.descriptors, head))
            })
            .collect();
    }
    view
}

/// The descriptor indices a chain starting at `head` runs through.
fn chain_indices(table: &[Option<DescriptorView>], head: u16) -> Vec<u16> {
    let mut chain = Vec::new();
    let mut at = head;
    while chain.len() < table.len() {
        let Some(Some(desc)) = table.get(at as usize) else {
            break;
        };
        chain.push(at);
        if desc.flags & DESC_F_NEXT == 0 {
            break;
        }
        at = desc.next;
    }
    chain
}

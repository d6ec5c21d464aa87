//! virtio devices on a machine: what they write into guest RAM drops decoded code, and
//! the control plane shows their queues without disturbing them.

use devices::virtio::blk::VirtioBlk;
use devices::{Disk, VIRTIO_MMIO_BASE};
use emu_core::machine::{Machine, MachineHandle};

const RAM: usize = 1 << 20;
/// The queue's rings: descriptors, available ring, used ring.
const DESC: u64 = 0x10000;
const AVAIL: u64 = 0x11000;
const USED: u64 = 0x12000;
/// A request's header and status byte.
const HEADER: u64 = 0x20000;
const STATUS: u64 = 0x20100;
/// Where the read lands: a page of decoded code.
const CODE: u64 = 0x5000;

fn reg(m: &Machine, offset: u64, value: u32) {
    m.vmm
        .devices
        .mmio
        .write(VIRTIO_MMIO_BASE + offset, &value.to_le_bytes())
        .unwrap();
}

/// A machine with a virtio-blk disk the driver has set up (one 16-entry queue) and a
/// read request of sector 0 into [`CODE`] made available, not yet notified.
fn machine_with_pending_read() -> Machine {
    let mut m = Machine::interpreted(RAM, Box::new(std::io::sink())).unwrap();
    m.attach_virtio(Box::new(VirtioBlk::new(Disk::memory(8))))
        .unwrap();
    for status in [1, 3] {
        reg(&m, 0x70, status);
    }
    reg(&m, 0x24, 1);
    reg(&m, 0x20, 1); // VIRTIO_F_VERSION_1
    reg(&m, 0x70, 11);
    reg(&m, 0x38, 16);
    reg(&m, 0x80, DESC as u32);
    reg(&m, 0x90, AVAIL as u32);
    reg(&m, 0xA0, USED as u32);
    reg(&m, 0x44, 1);
    reg(&m, 0x70, 15);
    let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
        let mut raw = addr.to_le_bytes().to_vec();
        raw.extend(len.to_le_bytes());
        raw.extend(flags.to_le_bytes());
        raw.extend(next.to_le_bytes());
        m.ram().write(DESC + 16 * i, &raw).unwrap();
    };
    desc(0, HEADER, 16, 1, 1);
    desc(1, CODE, 512, 3, 2);
    desc(2, STATUS, 1, 2, 0);
    // A read (type 0) of sector 0.
    m.ram().write(HEADER, &[0; 16]).unwrap();
    m.ram().write(STATUS, &[0xEE]).unwrap();
    m.ram().write(AVAIL + 4, &0u16.to_le_bytes()).unwrap();
    m.ram().write(AVAIL + 2, &1u16.to_le_bytes()).unwrap();
    m
}

#[test]
fn a_device_read_into_code_drops_the_decoded_code() {
    let m = machine_with_pending_read();
    let code = m.ram().code();
    code.take_written();
    code.mark(CODE + 0x40, 16);
    m.ram().write(CODE, &[0x90; 512]).unwrap();
    assert_eq!(
        code.take_written().pages,
        vec![CODE >> 12],
        "the setup's own write"
    );
    code.mark(CODE + 0x40, 16);
    reg(&m, 0x50, 0); // QueueNotify
    let mut status = [0];
    m.ram().read(STATUS, &mut status).unwrap();
    assert_eq!(status, [0], "VIRTIO_BLK_S_OK");
    let mut data = [0xFF; 512];
    m.ram().read(CODE, &mut data).unwrap();
    assert_eq!(data, [0; 512], "the zeroed sector landed");
    assert_eq!(
        code.take_written().pages,
        vec![CODE >> 12],
        "the device's write reached the code map"
    );
}

#[test]
fn the_control_plane_shows_queues_without_disturbing_them() {
    let m = machine_with_pending_read();
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    let views = h.virtio_queues().unwrap();
    assert_eq!(views.len(), 1);
    let blk = &views[0];
    assert_eq!((blk.name, blk.device_id, blk.status), ("virtio-blk", 2, 15));
    let q = &blk.queues[0];
    assert_eq!((q.avail_idx, q.used_idx), (Some(1), Some(0)));
    assert_eq!(
        q.in_flight,
        vec![vec![0, 1, 2]],
        "the read, not yet notified"
    );
    let d1 = q.descriptors[1].unwrap();
    assert_eq!((d1.addr, d1.len, d1.flags, d1.next), (CODE, 512, 3, 2));
    assert_eq!(blk.counters.notifications, 0);
    assert_eq!(h.virtio_queues().unwrap(), views, "looking changed nothing");

    // The guest's notification completes it; the view follows.
    h.call(|m| reg(m, 0x50, 0)).unwrap();
    let after = h.virtio_queues().unwrap();
    let q = &after[0].queues[0];
    assert_eq!((q.used_idx, q.regs.next_avail), (Some(1), 1));
    assert!(q.in_flight.is_empty());
    let used = q.used_ring[0].unwrap();
    assert_eq!((used.id, used.len), (0, 513));
    assert_eq!(
        (
            after[0].counters.notifications,
            after[0].counters.interrupts
        ),
        (1, 1)
    );
    h.quit().unwrap();
    thread.join().unwrap();
}

//! Garbage thrown at every virtio device: random register accesses, random bytes in
//! the descriptor table and rings, random notifications. Nothing may panic, every
//! refusal is counted, and a device's state survives a snapshot.

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};

use super::blk::VirtioBlk;
use super::console::VirtioConsole;
use super::mmio::VirtioMmioState;
use super::net::VirtioNet;
use super::test_driver::{Driver, Mem, MEM_SIZE};
use super::{VirtioDevice, VirtioTransport};
use crate::bus::BusDevice;
use crate::disk::Disk;
use crate::state_test::{state_proptests, Restorable};

/// The device types, by number, so a strategy can pick one.
fn device(kind: u8) -> Box<dyn VirtioDevice<Mem>> {
    match kind % 3 {
        0 => Box::new(VirtioBlk::new(Disk::memory(64))),
        1 => Box::new(VirtioNet::new()),
        _ => Box::new(VirtioConsole::new(Box::new(std::io::sink()))),
    }
}

/// What the guest does.
#[derive(Debug, Clone)]
enum Op {
    /// Reads the register window at an offset, with a width.
    Read(u64, usize),
    /// Writes it.
    Write(u64, Vec<u8>),
    /// Writes bytes somewhere in the rings, descriptor tables or buffers.
    Poke(u64, Vec<u8>),
    /// Notifies a queue.
    Notify(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let width = || proptest::sample::select(vec![1usize, 2, 4, 8]);
    prop_oneof![
        2 => (0..0x120u64, width()).prop_map(|(o, w)| Op::Read(o, w)),
        3 => (0..0x120u64, width(), any::<u64>()).prop_map(|(o, w, v)| {
            Op::Write(o & !3, v.to_le_bytes()[..w].to_vec())
        }),
        // The queues live at 0x10000 + q * 0x10000; requests' buffers near 0x80000.
        4 => (
            prop_oneof![0x10000..0x30000u64, 0x80000..0x81000u64],
            proptest::collection::vec(any::<u8>(), 1..24),
        )
            .prop_map(|(a, d)| Op::Poke(a, d)),
        3 => (0..3u32).prop_map(Op::Notify),
    ]
}

impl Driver {
    fn apply_op(&mut self, op: &Op) -> Vec<u8> {
        match op {
            Op::Read(offset, width) => {
                let mut data = vec![0; *width];
                self.dev.lock().unwrap().read(*offset, &mut data);
                data
            }
            Op::Write(offset, data) => {
                self.dev.lock().unwrap().write(*offset, data);
                Vec::new()
            }
            Op::Poke(addr, data) => {
                let _ = self.mem.write_slice(data, GuestAddress(*addr));
                Vec::new()
            }
            Op::Notify(queue) => {
                self.write(0x50, *queue);
                Vec::new()
            }
        }
    }
}

proptest! {
    /// Random accesses and ring contents on a device its driver set up: no panic, no
    /// interrupt without a notification or an error, and DEVICE_NEEDS_RESET never appears without
    /// a counted error.
    #[test]
    fn garbage_never_panics_and_every_refusal_is_counted(
        kind in any::<u8>(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let mut d = Driver::set_up(device(kind), 0);
        for op in &ops {
            d.apply_op(op);
            let (status, c) = {
                let dev = d.dev.lock().unwrap();
                (dev.state().status, dev.counters())
            };
            prop_assert!(status & 0x40 == 0 || c.errors > 0, "NEEDS_RESET uncounted");
        }
        // The device interrupts only for what it did: a notification served, or an
        // error counted.
        let c = d.dev.lock().unwrap().counters();
        prop_assert!(c.interrupts <= c.notifications + c.errors, "{:?}", c);
    }

    /// Garbage descriptor chains made available on each queue: each notification either
    /// serves well-formed requests or puts the device in DEVICE_NEEDS_RESET with an
    /// error counted; nothing is written outside guest memory (vm-memory checks every
    /// access, and the buffers' addresses are random 64-bit values).
    #[test]
    fn garbage_chains_complete_or_need_a_reset(
        kind in any::<u8>(),
        descs in proptest::collection::vec((any::<u64>(), any::<u32>(), 0..8u16, any::<u16>()), 16),
        heads in proptest::collection::vec(any::<u16>(), 1..8),
        queue in 0..2u32,
    ) {
        let mut d = Driver::set_up(device(kind), 0);
        // virtio-blk has one queue, the others two.
        let queue = if kind % 3 == 0 { 0 } else { queue };
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            // Half the addresses inside RAM, so some chains get far enough to be served.
            let addr = if i % 2 == 0 { addr % MEM_SIZE } else { addr };
            d.put_desc(queue, i as u16, addr, len % 0x3000, flags, next);
        }
        for &head in &heads {
            d.make_available(queue, head);
        }
        let before = d.dev.lock().unwrap().counters();
        d.write(0x50, queue);
        let dev = d.dev.lock().unwrap();
        let (after, status) = (dev.counters(), dev.state().status);
        prop_assert!(
            status & 0x40 == 0 || after.errors > before.errors,
            "NEEDS_RESET without a counted error"
        );
        prop_assert_eq!(after.notifications, before.notifications + 1);
    }
}

/// A device on its transport, for the state tests.
struct Rig(Driver, u8);

impl Restorable for Rig {
    type State = VirtioMmioState;
    type Op = Op;
    type Seen = (Vec<u8>, u16);

    fn save(&self) -> VirtioMmioState {
        self.0.dev.lock().unwrap().state()
    }

    fn twin(&self, state: &VirtioMmioState) -> Result<Self, String> {
        // Guest memory is not the device's state: the twin gets a copy of it.
        let twin = Driver::new(device(self.1));
        let mut bytes = vec![0; MEM_SIZE as usize];
        self.0.mem.read_slice(&mut bytes, GuestAddress(0)).unwrap();
        twin.mem.write_slice(&bytes, GuestAddress(0)).unwrap();
        twin.dev
            .lock()
            .unwrap()
            .restore(state)
            .map_err(|e| e.to_string())?;
        Ok(Rig(twin, self.1))
    }

    fn apply(&mut self, op: &Op) -> Self::Seen {
        let shown = self.0.apply_op(op);
        (shown, self.0.irqs.take_pending())
    }
}

mod blk_state {
    use super::*;
    state_proptests!(Rig(Driver::set_up(device(0), 0), 0), op());
}

mod net_state {
    use super::*;
    state_proptests!(Rig(Driver::set_up(device(1), 0), 1), op());
}

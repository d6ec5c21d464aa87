//! virtio-net (virtio 1.x, section 5.1) as a loopback: every frame the guest sends
//! comes back to it on the receive queue. No host network is touched.
//!
//! Queue 0 (receiveq) holds the guest's empty buffers, queue 1 (transmitq) its frames,
//! each behind a 12-byte `virtio_net_hdr_v1`. A frame waits in the device until a
//! receive buffer is there for it (at most [`MAX_PENDING`] wait; more are dropped and
//! counted, as a full NIC ring drops them). A receive buffer too small for the frame
//! gets the frame dropped too, and is returned empty. Only `VIRTIO_NET_F_MAC` is
//! offered: no checksum or segmentation offload, no mergeable buffers.

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use super::chain::ChainError;
use super::serve::{self, Layout};
use super::{
    read_config_bytes, DeviceState, DeviceType, QueueWork, VirtioDevice, VirtioStateError,
};

/// Each queue's size.
const QUEUE_SIZE: u16 = 256;
const RECEIVEQ: usize = 0;
const TRANSMITQ: usize = 1;
/// `virtio_net_hdr_v1`'s size: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers.
pub const NET_HDR: usize = 12;
/// The largest frame (header included) the loopback carries: 64 KiB of data.
pub const MAX_FRAME: usize = NET_HDR + (64 << 10);
/// Frames that may wait for a receive buffer.
pub const MAX_PENDING: usize = 256;
/// The MAC address in the configuration space: locally administered.
pub const MAC: [u8; 6] = [0x52, 0x54, 0x50, 0x4F, 0x50, 0x4B];

/// A virtio-net loopback device.
#[derive(Debug, Default)]
pub struct VirtioNet {
    /// Frames sent and not yet received, oldest first, each with its header.
    pending: std::collections::VecDeque<Vec<u8>>,
}

impl VirtioNet {
    /// A loopback with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the guest's frames off the transmit queue.
    fn transmit<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
        work: &mut QueueWork,
    ) -> Result<(), ChainError> {
        serve::queue(
            queue,
            mem,
            Layout::ReadOnly,
            usize::MAX,
            work,
            |frame, work| {
                let len = frame.readable_len() as usize;
                if (NET_HDR..=MAX_FRAME).contains(&len) && self.pending.len() < MAX_PENDING {
                    let mut bytes = vec![0; len];
                    if frame.read_at(mem, 0, &mut bytes) {
                        work.bytes += (len - NET_HDR) as u64;
                        self.pending.push_back(bytes);
                    }
                } else {
                    work.request_errors += 1;
                }
                0
            },
        )
    }

    /// Puts waiting frames in the guest's receive buffers: one buffer each, so no more
    /// buffers are taken than frames wait.
    fn receive<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
        work: &mut QueueWork,
    ) -> Result<(), ChainError> {
        let waiting = self.pending.len();
        serve::queue(
            queue,
            mem,
            Layout::WriteOnly,
            waiting,
            work,
            |buffer, work| {
                let frame = self
                    .pending
                    .pop_front()
                    .expect("one frame per buffer taken");
                if buffer.writable_len() < frame.len() as u64 {
                    work.request_errors += 1;
                    return 0;
                }
                // The sender's header, with num_buffers (the last field) set to 1.
                let mut header = [0u8; NET_HDR];
                header[..NET_HDR - 2].copy_from_slice(&frame[..NET_HDR - 2]);
                header[NET_HDR - 2..].copy_from_slice(&1u16.to_le_bytes());
                if buffer.write_at(mem, 0, &header)
                    && buffer.write_at(mem, NET_HDR as u64, &frame[NET_HDR..])
                {
                    work.bytes += (frame.len() - NET_HDR) as u64;
                    frame.len() as u32
                } else {
                    0
                }
            },
        )
    }
}

impl<M: GuestMemory> VirtioDevice<M> for VirtioNet {
    fn device_type(&self) -> &'static DeviceType {
        &DeviceType {
            id: VIRTIO_ID_NET,
            name: "virtio-net",
            features: 1 << VIRTIO_NET_F_MAC,
            queue_max_sizes: &[QUEUE_SIZE, QUEUE_SIZE],
        }
    }

    /// `mac` at offset 0; nothing else is offered.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&MAC, offset, data);
    }

    fn process(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &M,
    ) -> Result<QueueWork, ChainError> {
        let mut work = QueueWork::default();
        if index == TRANSMITQ {
            self.transmit(&mut queues[TRANSMITQ], mem, &mut work)?;
        }
        if queues[RECEIVEQ].ready() {
            self.receive(&mut queues[RECEIVEQ], mem, &mut work)?;
        }
        Ok(work)
    }

    fn reset(&mut self) {
        self.pending.clear();
    }

    fn state(&self) -> DeviceState {
        DeviceState::Net {
            pending: self.pending.iter().cloned().collect(),
        }
    }

    fn restore(&mut self, state: &DeviceState) {
        if let DeviceState::Net { pending } = state {
            self.pending = pending.iter().cloned().collect();
        }
    }

    fn check_state(&self, state: &DeviceState) -> Result<(), VirtioStateError> {
        match state {
            DeviceState::Net { pending }
                if pending.len() <= MAX_PENDING
                    && pending
                        .iter()
                        .all(|f| (NET_HDR..=MAX_FRAME).contains(&f.len())) =>
            {
                Ok(())
            }
            DeviceState::Net { .. } => Err(VirtioStateError::Device(
                "virtio-net frames waiting: too many, or of a length no frame has",
            )),
            _ => Err(VirtioStateError::Device("not a virtio-net state")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_driver::{Driver, Mem};
    use crate::virtio::VirtioTransport;
    use vm_memory::{Bytes, GuestAddress};

    fn net() -> Driver {
        let dev: Box<dyn VirtioDevice<Mem>> = Box::new(VirtioNet::new());
        Driver::set_up(dev, 1 << VIRTIO_NET_F_MAC)
    }

    #[test]
    fn frames_come_back_once_a_receive_buffer_is_there() {
        let mut d = net();
        assert_eq!(d.read(0x100), u32::from_le_bytes([0x52, 0x54, 0x50, 0x4F]));
        let mut frame = vec![0u8; NET_HDR];
        frame.extend(b"a frame of sixty bytes or so, with some payload in it......");
        d.mem.write_slice(&frame, GuestAddress(0x80000)).unwrap();
        d.submit(1, &[(0x80000, frame.len() as u32, false)]);
        assert_eq!(d.used(1, 0), (1, (0, 0)), "sent");
        assert_eq!(d.used(0, 0).0, 0, "no receive buffer yet");
        d.submit(0, &[(0x90000, 2048, true)]);
        assert_eq!(d.used(0, 0), (1, (0, frame.len() as u32)));
        let mut back = vec![0; frame.len()];
        d.mem.read_slice(&mut back, GuestAddress(0x90000)).unwrap();
        assert_eq!(&back[NET_HDR..], &frame[NET_HDR..]);
        assert_eq!(&back[NET_HDR - 2..NET_HDR], &[1, 0], "num_buffers");
        // A receive buffer too small drops the frame.
        d.submit(1, &[(0x80000, frame.len() as u32, false)]);
        d.submit(0, &[(0x90000, 20, true)]);
        assert_eq!(d.used(0, 1), (2, (1, 0)));
        let c = d.dev.lock().unwrap().counters();
        assert_eq!((c.request_errors, c.errors), (1, 0));
    }
}

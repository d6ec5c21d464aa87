//! virtio-console (virtio 1.x, section 5.3): one port, no multiport, no emergency write.
//!
//! Queue 0 (receiveq) takes buffers for input, queue 1 (transmitq) carries output, which
//! goes to the sink the console was made with (the run's standard output). Popek has no
//! console input source yet, so receive buffers stay posted, unused.

use std::io::Write;

use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_queue::Queue;
use vm_memory::GuestMemory;

use super::chain::ChainError;
use super::serve::{self, Layout};
use super::{DeviceType, QueueWork, VirtioDevice};

/// Each queue's size.
const QUEUE_SIZE: u16 = 64;
/// The transmit queue.
const TRANSMITQ: usize = 1;
/// Output is copied to the sink this much at a time.
const CHUNK: usize = 4096;

/// A virtio console writing its output to a sink.
pub struct VirtioConsole {
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for VirtioConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VirtioConsole")
    }
}

impl VirtioConsole {
    /// A console whose output goes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        VirtioConsole { out }
    }
}

impl<M: GuestMemory> VirtioDevice<M> for VirtioConsole {
    fn device_type(&self) -> &'static DeviceType {
        &DeviceType {
            id: VIRTIO_ID_CONSOLE,
            name: "virtio-console",
            features: 0,
            queue_max_sizes: &[QUEUE_SIZE, QUEUE_SIZE],
        }
    }

    /// No feature makes any field valid: the space reads as zeros.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &M,
    ) -> Result<QueueWork, ChainError> {
        let mut work = QueueWork::default();
        if index != TRANSMITQ {
            return Ok(work);
        }
        let mut buf = vec![0u8; CHUNK];
        serve::queue(
            &mut queues[TRANSMITQ],
            mem,
            Layout::ReadOnly,
            usize::MAX,
            &mut work,
            |out, work| {
                let len = out.readable_len();
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(CHUNK as u64) as usize;
                    if !out.read_at(mem, done, &mut buf[..n]) {
                        break;
                    }
                    // A sink that fails loses the guest's output, as a line nobody
                    // listens to does; the guest is not told.
                    let _ = self.out.write_all(&buf[..n]);
                    done += n as u64;
                }
                let _ = self.out.flush();
                work.bytes += done;
                0
            },
        )?;
        Ok(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_buffer::SharedBuffer;
    use crate::virtio::test_driver::{Driver, Mem};
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn output_reaches_the_sink_in_chain_order() {
        let sink = SharedBuffer::new();
        let dev: Box<dyn VirtioDevice<Mem>> = Box::new(VirtioConsole::new(Box::new(sink.clone())));
        let mut d = Driver::set_up(dev, 0);
        d.mem
            .write_slice(b"hello, ", GuestAddress(0x80000))
            .unwrap();
        d.mem
            .write_slice(b"console\n", GuestAddress(0x90000))
            .unwrap();
        d.submit(1, &[(0x80000, 7, false), (0x90000, 8, false)]);
        assert_eq!(sink.contents(), b"hello, console\n");
        assert_eq!(d.used(1, 0), (1, (0, 0)));
        // A writable buffer on the transmit queue is a malformed chain.
        d.submit(1, &[(0x80000, 7, true)]);
        assert_ne!(d.read(0x70) & 0x40, 0, "DEVICE_NEEDS_RESET");
    }
}

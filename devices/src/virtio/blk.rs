//! virtio-blk (virtio 1.x, section 5.2): one request queue over a [`Disk`].
//!
//! A request is a chain: a 16-byte device-readable header (type, reserved, sector),
//! the data (device-readable for writes, device-writable for reads and GET_ID), and one
//! device-writable status byte at the very end. Requests that are well formed as chains
//! but wrong as requests (past the disk's end, data not whole sectors, an unknown type)
//! complete with `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP`; the device goes on.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::Queue;
use vm_memory::GuestMemory;

use super::chain::{Buffers, ChainError};
use super::serve::{self, Layout};
use super::{read_config_bytes, DeviceType, QueueWork, VirtioDevice};
use crate::disk::{Disk, SECTOR_SIZE};

/// The request queue's size.
const QUEUE_SIZE: u16 = 256;
/// The header's size: type (u32), reserved (u32), sector (u64).
const HEADER: u64 = 16;
/// How much data is copied at a time between guest memory and the disk.
const CHUNK: usize = 64 << 10;

/// A virtio block device.
#[derive(Debug)]
pub struct VirtioBlk {
    disk: Disk,
}

impl VirtioBlk {
    /// A block device serving `disk`.
    pub fn new(disk: Disk) -> Self {
        VirtioBlk { disk }
    }

    /// Serves one checked request chain; the status byte and the bytes written.
    fn serve<M: GuestMemory>(&mut self, req: &Buffers, mem: &M) -> (u8, u64) {
        let mut header = [0u8; HEADER as usize];
        if !req.read_at(mem, 0, &mut header) {
            return (VIRTIO_BLK_S_IOERR as u8, 0);
        }
        let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        // The status byte is the writable stream's last byte.
        let data_out = req.writable_len() - 1;
        let ok = match kind {
            VIRTIO_BLK_T_IN => self.transfer(req, mem, sector, data_out, true),
            VIRTIO_BLK_T_OUT => self.transfer(req, mem, sector, req.readable_len() - HEADER, false),
            VIRTIO_BLK_T_FLUSH => self.disk.flush().is_ok(),
            VIRTIO_BLK_T_GET_ID => {
                let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
                let serial = self.disk.serial().as_bytes();
                let n = serial.len().min(id.len());
                id[..n].copy_from_slice(&serial[..n]);
                data_out >= id.len() as u64 && req.write_at(mem, 0, &id)
            }
            _ => return (VIRTIO_BLK_S_UNSUPP as u8, 0),
        };
        let written = match kind {
            VIRTIO_BLK_T_IN if ok => data_out,
            VIRTIO_BLK_T_GET_ID if ok => u64::from(VIRTIO_BLK_ID_BYTES),
            _ => 0,
        };
        let status = if ok {
            VIRTIO_BLK_S_OK
        } else {
            VIRTIO_BLK_S_IOERR
        };
        (status as u8, written)
    }

    /// Moves `len` bytes between the chain's data and the disk at `sector`.
    fn transfer<M: GuestMemory>(
        &mut self,
        req: &Buffers,
        mem: &M,
        sector: u64,
        len: u64,
        read: bool,
    ) -> bool {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return false;
        }
        let Some(start) = sector.checked_mul(SECTOR_SIZE) else {
            return false;
        };
        if start
            .checked_add(len)
            .is_none_or(|end| end > self.disk.sectors() * SECTOR_SIZE)
        {
            return false;
        }
        let mut buf = vec![0u8; CHUNK.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            let piece = &mut buf[..n];
            let moved = if read {
                self.disk.read(start + done, piece).is_ok() && req.write_at(mem, done, piece)
            } else {
                req.read_at(mem, HEADER + done, piece)
                    && self.disk.write(start + done, piece).is_ok()
            };
            if !moved {
                return false;
            }
            done += n as u64;
        }
        true
    }
}

impl<M: GuestMemory> VirtioDevice<M> for VirtioBlk {
    fn device_type(&self) -> &'static DeviceType {
        &DeviceType {
            id: VIRTIO_ID_BLOCK,
            name: "virtio-blk",
            features: 1 << VIRTIO_BLK_F_FLUSH,
            queue_max_sizes: &[QUEUE_SIZE],
        }
    }

    /// `capacity` (in 512-byte sectors) is the only field: no feature that adds others
    /// is offered.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.disk.sectors().to_le_bytes(), offset, data);
    }

    fn process(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &M,
    ) -> Result<QueueWork, ChainError> {
        let mut work = QueueWork::default();
        // A chain without a writable buffer has no status byte: the device cannot even
        // report the error, so the serving loop refuses it.
        serve::queue(
            &mut queues[index],
            mem,
            Layout::Request,
            usize::MAX,
            &mut work,
            |req, work| {
                let (status, written) = self.serve(req, mem);
                if status != VIRTIO_BLK_S_OK as u8 {
                    work.request_errors += 1;
                } else {
                    work.bytes += written.max(req.readable_len().saturating_sub(HEADER));
                }
                let status_at = req.writable_len() - 1;
                req.write_at(mem, status_at, &[status]);
                // The used length counts every byte written, the status included.
                (written + 1) as u32
            },
        )?;
        Ok(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use crate::virtio::test_driver::{Driver, Mem};
    use crate::virtio::VirtioTransport;
    use virtio_bindings::virtio_mmio as reg;
    use vm_memory::{Bytes, GuestAddress};

    const HDR: u64 = 0x80000;
    const DATA: u64 = 0x81000;
    const STATUS: u64 = 0x90000;

    fn blk(sectors: u64) -> Driver {
        let dev: Box<dyn VirtioDevice<Mem>> = Box::new(VirtioBlk::new(Disk::memory(sectors)));
        Driver::set_up(dev, 1 << VIRTIO_BLK_F_FLUSH)
    }

    /// Sends one request; returns its status byte and the used length.
    fn request(d: &mut Driver, kind: u32, sector: u64, data: Option<(u32, bool)>) -> (u8, u32) {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        d.mem.write_slice(&header, GuestAddress(HDR)).unwrap();
        d.mem.write_obj(0xEEu8, GuestAddress(STATUS)).unwrap();
        let mut chain = vec![(HDR, 16, false)];
        if let Some((len, writable)) = data {
            chain.push((DATA, len, writable));
        }
        chain.push((STATUS, 1, true));
        let before = d.used(0, 0).0;
        d.submit(0, &chain);
        let (idx, _) = d.used(0, 0);
        assert_eq!(idx, before.wrapping_add(1), "one buffer used");
        let (_, (_, len)) = d.used(0, before);
        (d.mem.read_obj(GuestAddress(STATUS)).unwrap(), len)
    }

    #[test]
    fn writes_read_back_and_each_request_interrupts() {
        let mut d = blk(64);
        let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
        d.mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_OUT, 3, Some((1024, false))),
            (0, 1)
        );
        assert_eq!(d.irqs.take_pending(), 1 << 5);
        assert_eq!(d.read(reg::VIRTIO_MMIO_INTERRUPT_STATUS), 1);
        d.write(reg::VIRTIO_MMIO_INTERRUPT_ACK, 1);
        assert_eq!(d.read(reg::VIRTIO_MMIO_INTERRUPT_STATUS), 0);

        d.mem.write_slice(&[0; 1024], GuestAddress(DATA)).unwrap();
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 3, Some((1024, true))),
            (0, 1025)
        );
        let mut back = vec![0; 1024];
        d.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
        assert_eq!(back, pattern);

        assert_eq!(request(&mut d, VIRTIO_BLK_T_FLUSH, 0, None), (0, 1));
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_GET_ID, 0, Some((20, true))),
            (0, 21)
        );
        let mut id = [0u8; 20];
        d.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert!(id.starts_with(b"POPEK-MEMDISK\0"));

        let c = d.dev.lock().unwrap().counters();
        assert_eq!((c.notifications, c.used_buffers, c.interrupts), (4, 4, 4));
        assert_eq!((c.bytes, c.errors, c.request_errors), (2048 + 20, 0, 0));
    }

    #[test]
    fn bad_requests_fail_alone() {
        let mut d = blk(8);
        let ioerr = VIRTIO_BLK_S_IOERR as u8;
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 7, Some((1024, true))).0,
            ioerr
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, u64::MAX, Some((512, true))).0,
            ioerr
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_OUT, 0, Some((100, false))).0,
            ioerr
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_GET_ID, 0, Some((8, true))).0,
            ioerr
        );
        assert_eq!(request(&mut d, 77, 0, None).0, VIRTIO_BLK_S_UNSUPP as u8);
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 7, Some((512, true))),
            (0, 513)
        );
        let c = d.dev.lock().unwrap().counters();
        assert_eq!((c.request_errors, c.errors), (5, 0));
    }

    #[test]
    fn config_space_holds_the_capacity() {
        let d = blk(0x1234);
        assert_eq!(d.read(0x100), 0x1234);
        assert_eq!(d.read(0x104), 0);
        let mut byte = [0];
        d.dev.lock().unwrap().read(0x101, &mut byte);
        assert_eq!(byte, [0x12]);
        assert_eq!(d.read(reg::VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
    }
}

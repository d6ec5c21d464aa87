//! Descriptor chains, checked before a device touches them.
//!
//! `virtio-queue` walks a chain but stops quietly where it goes wrong (a loop, a `next`
//! past the table, a chain longer than the queue), which would let a device act on half
//! a request. [`Buffers::take`] walks it to the end and refuses it unless it ended
//! properly, every buffer is non-empty and lies in guest memory, and no device-readable
//! buffer follows a device-writable one (virtio 1.x, 2.7.4.2). What a device then reads
//! or writes goes through vm-memory's checked accessors.

use std::ops::Deref;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// The most bytes one chain may describe: a request bigger than this is refused rather
/// than served, so a guest cannot make a device allocate or copy without bound.
pub const MAX_CHAIN_BYTES: u64 = 16 << 20;

/// Why a chain is refused. Each one is the driver breaking the virtqueue rules; the
/// transport counts it and puts the device in `DEVICE_NEEDS_RESET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The available ring names a head past the descriptor table.
    #[error("chain head {head} is outside the descriptor table")]
    BadHead {
        /// The head index.
        head: u16,
    },
    /// The chain loops, runs past the queue size, or names a `next` outside the table.
    #[error("chain at head {head} does not end (a loop, or longer than the queue)")]
    Unterminated {
        /// The head index.
        head: u16,
    },
    /// A buffer of zero bytes.
    #[error("chain at head {head} has a zero-length buffer")]
    ZeroLength {
        /// The head index.
        head: u16,
    },
    /// A buffer that is not wholly in guest memory.
    #[error("chain at head {head} has a buffer at {addr:#x} + {len:#x} outside guest memory")]
    OutsideMemory {
        /// The head index.
        head: u16,
        /// The buffer's address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A device-readable buffer after a device-writable one.
    #[error("chain at head {head} has a readable buffer after a writable one")]
    WrongDirection {
        /// The head index.
        head: u16,
    },
    /// More bytes than [`MAX_CHAIN_BYTES`].
    #[error("chain at head {head} describes more than {MAX_CHAIN_BYTES} bytes")]
    Oversized {
        /// The head index.
        head: u16,
    },
    /// The available ring's index is more than a queue's worth ahead of the device.
    #[error("the available index is more than the queue size ahead")]
    AvailIndex,
    /// The used ring cannot take the entry.
    #[error("the used ring cannot be written")]
    UsedRing,
}

/// A checked chain: its head and its buffers, device-readable ones first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buffers {
    /// The head's descriptor index, which goes back in the used ring.
    pub head: u16,
    /// Device-readable buffers (address, length), in chain order.
    pub readable: Vec<(u64, u32)>,
    /// Device-writable buffers, in chain order.
    pub writable: Vec<(u64, u32)>,
}

impl Buffers {
    /// Walks `chain` and checks it (see the module comment).
    pub fn take<R, M>(chain: DescriptorChain<R>, mem: &M) -> Result<Self, ChainError>
    where
        R: Deref,
        R::Target: GuestMemory,
        M: GuestMemory,
    {
        let head = chain.head_index();
        let mut buffers = Buffers {
            head,
            ..Buffers::default()
        };
        let mut total = 0u64;
        let mut ended = false;
        for desc in chain {
            let (addr, len) = (desc.addr().0, desc.len());
            if len == 0 {
                return Err(ChainError::ZeroLength { head });
            }
            let access = if desc.is_write_only() {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if !mem.check_range(desc.addr(), len as usize, access) {
                return Err(ChainError::OutsideMemory { head, addr, len });
            }
            total += u64::from(len);
            if total > MAX_CHAIN_BYTES {
                return Err(ChainError::Oversized { head });
            }
            if desc.is_write_only() {
                buffers.writable.push((addr, len));
            } else if !buffers.writable.is_empty() {
                return Err(ChainError::WrongDirection { head });
            } else {
                buffers.readable.push((addr, len));
            }
            ended = !desc.has_next();
        }
        if buffers.readable.is_empty() && buffers.writable.is_empty() {
            return Err(ChainError::BadHead { head });
        }
        if !ended {
            return Err(ChainError::Unterminated { head });
        }
        Ok(buffers)
    }

    /// Bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|&(_, len)| u64::from(len)).sum()
    }

    /// Bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|&(_, len)| u64::from(len)).sum()
    }

    /// Reads `buf.len()` bytes starting `offset` bytes into the readable buffers; false
    /// if they run out first.
    pub fn read_at<M: GuestMemory>(&self, mem: &M, offset: u64, buf: &mut [u8]) -> bool {
        copy_pieces(&self.readable, offset, buf.len(), |addr, range| {
            mem.read_slice(&mut buf[range], addr).is_ok()
        })
    }

    /// Writes `data` starting `offset` bytes into the writable buffers; false if they run
    /// out first.
    pub fn write_at<M: GuestMemory>(&self, mem: &M, offset: u64, data: &[u8]) -> bool {
        copy_pieces(&self.writable, offset, data.len(), |addr, range| {
            mem.write_slice(&data[range], addr).is_ok()
        })
    }
}

/// Takes the next chain the driver made available on `queue`, checked; `None` when the
/// driver has made no more available.
pub fn pop<M: GuestMemory>(queue: &mut Queue, mem: &M) -> Result<Option<Buffers>, ChainError> {
    let chain = queue.iter(mem).map_err(|_| ChainError::AvailIndex)?.next();
    chain.map(|chain| Buffers::take(chain, mem)).transpose()
}

/// Splits the `len` bytes at `offset` of the stream `buffers` make into one piece per
/// buffer, calling `copy(guest address, range of the caller's bytes)` for each.
fn copy_pieces(
    buffers: &[(u64, u32)],
    offset: u64,
    len: usize,
    mut copy: impl FnMut(GuestAddress, std::ops::Range<usize>) -> bool,
) -> bool {
    let mut skip = offset;
    let mut done = 0usize;
    for &(addr, size) in buffers {
        if done == len {
            break;
        }
        let size = u64::from(size);
        if skip >= size {
            skip -= size;
            continue;
        }
        let n = (size - skip).min((len - done) as u64) as usize;
        if !copy(GuestAddress(addr + skip), done..done + n) {
            return false;
        }
        done += n;
        skip = 0;
    }
    done == len
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;
    use vm_memory::GuestMemoryMmap;

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    /// Puts `descs` in a 16-entry queue, makes head 0 available, and checks the chain.
    fn take(descs: &[(u64, u32, u16, u16)]) -> Result<Buffers, ChainError> {
        let m = mem();
        let mock = MockSplitQueue::new(&m, 16);
        let table: Vec<RawDescriptor> = descs
            .iter()
            .map(|&(a, l, f, n)| RawDescriptor::from(Descriptor::new(a, l, f, n)))
            .collect();
        mock.build_desc_chain(&table).ok();
        // build_desc_chain links the descriptors itself; write them as given over it.
        for (i, d) in table.iter().enumerate() {
            m.write_obj(*d, GuestAddress(mock.desc_table_addr().0 + 16 * i as u64))
                .unwrap();
        }
        let mut q: virtio_queue::Queue = mock.create_queue().unwrap();
        let chain = q.iter(&m).unwrap().next().unwrap();
        Buffers::take(chain, &m)
    }

    #[test]
    fn a_proper_chain_reads_and_writes_across_buffers() {
        let b = take(&[
            (0x8000, 4, NEXT, 1),
            (0x9000, 4, NEXT, 2),
            (0xA000, 8, WRITE, 0),
        ])
        .unwrap();
        assert_eq!(b.readable, [(0x8000, 4), (0x9000, 4)]);
        assert_eq!((b.readable_len(), b.writable_len()), (8, 8));
        let m = mem();
        m.write_slice(b"abcdefgh", GuestAddress(0x8000)).unwrap();
        m.write_slice(b"ijkl", GuestAddress(0x9000)).unwrap();
        let mut buf = [0; 5];
        assert!(b.read_at(&m, 2, &mut buf));
        assert_eq!(&buf, b"cdijk");
        assert!(!b.read_at(&m, 4, &mut buf), "runs out");
        assert!(b.write_at(&m, 7, b"z"));
        assert!(!b.write_at(&m, 7, b"zz"));
    }

    #[test]
    fn malformed_chains_are_refused() {
        assert_eq!(
            take(&[(0x8000, 4, NEXT, 1), (0x9000, 4, NEXT, 0)]),
            Err(ChainError::Unterminated { head: 0 })
        );
        assert_eq!(
            take(&[(0x8000, 4, NEXT, 99)]),
            Err(ChainError::Unterminated { head: 0 })
        );
        assert_eq!(
            take(&[(0x8000, 0, 0, 0)]),
            Err(ChainError::ZeroLength { head: 0 })
        );
        assert_eq!(
            take(&[(0xFFF0, 0x20, 0, 0)]),
            Err(ChainError::OutsideMemory {
                head: 0,
                addr: 0xFFF0,
                len: 0x20
            })
        );
        assert_eq!(
            take(&[(0x8000, 4, WRITE | NEXT, 1), (0x9000, 4, 0, 0)]),
            Err(ChainError::WrongDirection { head: 0 })
        );
    }
}

//! Serving a virtqueue: the loop every device type runs on a notification.
//!
//! Each device takes the chains the driver made available, in order, checks that their
//! buffers go the way its queue's requests go, does its own work on each, and puts
//! each back in the used ring with the number of bytes it wrote there. Only the work
//! differs between devices, so it is the one thing a device gives [`queue`]; the
//! transport then counts what was used and raises the interrupt.

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use super::chain::{self, Buffers, ChainError};
use super::QueueWork;

/// Which buffers a queue's chains must have, as the device type defines the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Only device-readable buffers: a transmit queue.
    ReadOnly,
    /// Only device-writable buffers: a receive queue.
    WriteOnly,
    /// At least one device-writable buffer, after any readable ones: a request whose
    /// status the device writes at the end.
    Request,
}

impl Layout {
    /// Whether `chain` has the buffers this layout asks for.
    fn fits(self, chain: &Buffers) -> bool {
        match self {
            Layout::ReadOnly => chain.writable.is_empty(),
            Layout::WriteOnly => chain.readable.is_empty(),
            Layout::Request => !chain.writable.is_empty(),
        }
    }
}

/// Serves at most `limit` of the chains the driver made available on `queue`, in order:
/// each is checked (by [`chain::pop`] and against `layout`), handed to `device` with
/// `work` to count in, and put in the used ring with the length `device` returns (the
/// bytes it wrote into the chain). A chain that breaks the rules ends the loop with its
/// error, which puts the device in `DEVICE_NEEDS_RESET`.
pub fn queue<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    layout: Layout,
    limit: usize,
    work: &mut QueueWork,
    mut device: impl FnMut(&Buffers, &mut QueueWork) -> u32,
) -> Result<(), ChainError> {
    for _ in 0..limit {
        let Some(buffers) = chain::pop(queue, mem)? else {
            break;
        };
        if !layout.fits(&buffers) {
            return Err(ChainError::WrongDirection { head: buffers.head });
        }
        let used_len = device(&buffers, work);
        queue
            .add_used(mem, buffers.head, used_len)
            .map_err(|_| ChainError::UsedRing)?;
        work.used += 1;
    }
    Ok(())
}

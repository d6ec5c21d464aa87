//! Guest-physical RAM, on vm-memory.
//!
//! RAM is one vm-memory region at guest-physical 0, so the same mapping can be registered
//! with KVM as a memory slot and read by devices through vm-memory's checked accessors.
//! The interpreter, which touches memory on almost every instruction, takes the whole
//! region as one byte slice once per run and does its own bounds checks.

use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Default RAM size of popek-pc.
pub const DEFAULT_RAM_SIZE: usize = 64 << 20;

/// Errors creating guest memory.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The size is zero, not page-aligned, or above what the machine supports.
    #[error("guest RAM size {0:#x} must be a non-zero multiple of 4 KiB and at most 3 GiB")]
    BadSize(usize),
    /// The host refused the mapping.
    #[error("could not map {size} bytes of guest RAM: {source}")]
    Map {
        /// Requested size.
        size: usize,
        /// What vm-memory said.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Guest RAM: one region at guest-physical 0.
#[derive(Debug)]
pub struct GuestRam {
    mem: GuestMemoryMmap,
    size: usize,
}

impl GuestRam {
    /// Maps `size` bytes of zeroed guest RAM.
    pub fn new(size: usize) -> Result<Self, MemoryError> {
        // Keep RAM below the 3 GiB PCI hole so MMIO devices have room above it.
        if size == 0 || !size.is_multiple_of(4096) || size > (3 << 30) {
            return Err(MemoryError::BadSize(size));
        }
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)])
            .map_err(|source| MemoryError::Map { size, source })?;
        Ok(GuestRam { mem, size })
    }

    /// RAM size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The vm-memory view, for loaders, devices and KVM memory slots.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The whole of RAM as one byte slice.
    pub fn as_slice(&self) -> &[u8] {
        let ptr = self.host_address();
        // SAFETY: the region is one anonymous mapping of `size` bytes starting at `ptr`,
        // owned by `self.mem` and unmapped only when it drops; the shared borrow of `self`
        // keeps it alive and prevents mutation through this type for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(ptr, self.size) }
    }

    /// The whole of RAM as one mutable byte slice.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let ptr = self.host_address();
        // SAFETY: as in `as_slice`; the exclusive borrow of `self` makes this the only
        // live view created through this type. A KVM vCPU writes this memory only inside
        // KVM_RUN, which needs `&mut GuestRam` too, so it never overlaps this borrow.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.size) }
    }

    fn host_address(&self) -> *mut u8 {
        self.mem
            .get_host_address(GuestAddress(0))
            .expect("guest RAM has a region at guest-physical 0 by construction")
    }
}

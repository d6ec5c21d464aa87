//! Guest-physical RAM, on vm-memory, shared safely by the CPU, the devices and the
//! control plane.
//!
//! RAM is one vm-memory region at guest-physical 0, so the same mapping can be registered
//! with KVM as a memory slot and read and written by devices (later by DMA) through
//! vm-memory's checked accessors while the CPU runs. Nobody holds a Rust reference over
//! the guest's bytes while the guest runs: a software engine reaches them through a
//! [`RamView`], which reads and writes through a raw pointer, and everybody else through
//! vm-memory. The region's dirty bitmap is the [`CodeWatch`], so every write that does not
//! come from the CPU tells the engines which decoded or translated code it overwrote.

mod code;
mod view;

pub use code::{CodeWatch, TracedWrites, WrittenCode, PAGE_SHIFT};
pub use view::RamView;

use thiserror::Error;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestRegionMmap};

/// Default RAM size of popek-pc.
pub const DEFAULT_RAM_SIZE: usize = 64 << 20;
/// Inaccessible host address space kept just below guest RAM's mapping.
pub const GUARD_BELOW: usize = 1 << 20;
/// Inaccessible host address space kept just above guest RAM's mapping: 4 GiB, so that
/// an engine that wrongly reached any 32-bit guest-physical address beyond RAM (MMIO,
/// open bus) through its host pointer to RAM faults there instead of changing host
/// memory. It costs address space only.
pub const GUARD_ABOVE: usize = 4 << 30;
/// The page size.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// Guest memory as vm-memory users (loaders, devices) see it: writes through it are
/// reported to the engines' code map.
pub type GuestMemory = vm_memory::GuestMemoryMmap<CodeWatch>;

/// Errors creating guest memory.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The size is zero, not page-aligned, or above what the machine supports.
    #[error("guest RAM size {0:#x} must be a non-zero multiple of 4 KiB and at most 3 GiB")]
    BadSize(usize),
    /// The host refused the mapping.
    #[error("could not map {size} bytes of guest RAM: {reason}")]
    Map {
        /// Requested size.
        size: usize,
        /// What vm-memory said.
        reason: String,
    },
    /// An access outside RAM.
    #[error("guest-physical range {addr:#x}+{len:#x} is outside RAM")]
    OutOfRange {
        /// Start of the access.
        addr: u64,
        /// Its length.
        len: usize,
    },
}

/// Guest RAM: one region at guest-physical 0.
#[derive(Debug)]
pub struct GuestRam {
    mem: GuestMemory,
    watch: CodeWatch,
    size: usize,
}

impl GuestRam {
    /// Maps `size` bytes of zeroed guest RAM, between guard regions
    /// ([`GUARD_BELOW`], [`GUARD_ABOVE`]) that no access may touch: a stray host access
    /// beside RAM (an engine's bug, a wrong bound) faults rather than corrupting Popek.
    pub fn new(size: usize) -> Result<Self, MemoryError> {
        // Keep RAM below the 3 GiB PCI hole so MMIO devices have room above it.
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) || size > (3 << 30) {
            return Err(MemoryError::BadSize(size));
        }
        let map_error = |e: &dyn std::fmt::Display| MemoryError::Map {
            size,
            reason: e.to_string(),
        };
        const FLAGS: i32 = libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_PRIVATE;
        const READ_WRITE: i32 = libc::PROT_READ | libc::PROT_WRITE;
        // One inaccessible mapping for the guards and RAM, then RAM made accessible: the
        // guards are sure to be next to it.
        let span = MmapRegionBuilder::new(GUARD_BELOW + size + GUARD_ABOVE)
            .with_mmap_prot(libc::PROT_NONE)
            .with_mmap_flags(FLAGS)
            .build()
            .map_err(|e| map_error(&e))?;
        // SAFETY: the offset stays inside the span just mapped.
        let ram = unsafe { span.as_ptr().add(GUARD_BELOW) };
        // SAFETY: a system call changing the protection of pages of the span, which
        // nothing else uses yet.
        if unsafe { libc::mprotect(ram.cast(), size, READ_WRITE) } != 0 {
            return Err(map_error(&std::io::Error::last_os_error()));
        }
        let watch = CodeWatch::keeping(size, Some(span));
        // SAFETY: `ram` and `size` lie within the span, mapped readable and writable
        // with these flags; the span stays mapped as long as the region's bitmap (the
        // watch, which holds it) lives, so as long as the region.
        let region = unsafe {
            MmapRegionBuilder::new_with_bitmap(size, watch.clone()).with_raw_mmap_pointer(ram)
        }
        .with_mmap_prot(READ_WRITE)
        .with_mmap_flags(FLAGS)
        .build()
        .map_err(|e| map_error(&e))?;
        let region = GuestRegionMmap::new(region, GuestAddress(0))
            .ok_or_else(|| map_error(&"the region does not fit the address space"))?;
        let mem = GuestMemory::from_regions(vec![region]).map_err(|e| map_error(&e))?;
        Ok(GuestRam { mem, watch, size })
    }

    /// RAM size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The vm-memory view, for loaders, devices and KVM memory slots. It is cheap to
    /// clone (the mapping is shared), and writes through it are seen by the engines.
    pub fn guest_memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// Which RAM holds decoded or translated code.
    pub fn code(&self) -> &CodeWatch {
        &self.watch
    }

    /// The CPU's view: raw access for the software engines' fast paths.
    pub fn view(&self) -> RamView<'_> {
        // SAFETY: the pointer and size describe the one mapping `self.mem` owns, which
        // stays mapped as long as `self` is borrowed.
        unsafe { RamView::new(self.host_address(), self.size) }
    }

    /// Reads guest-physical bytes (a debugger, a test): no side effects.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_: GuestMemoryError| MemoryError::OutOfRange {
                addr,
                len: buf.len(),
            })
    }

    /// Writes guest-physical bytes from outside the CPU; decoded or translated code they
    /// overwrite is dropped before the guest runs it again.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.mem
            .write_slice(data, GuestAddress(addr))
            .map_err(|_: GuestMemoryError| MemoryError::OutOfRange {
                addr,
                len: data.len(),
            })
    }

    /// The whole of RAM as one byte slice (tests, snapshots), while nothing runs.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the region is `size` bytes of one anonymous mapping starting at the host
        // address, kept by `self.mem` and unmapped only when it drops. Engines and
        // devices write it only while running, which takes `&mut Machine`; the shared
        // borrow of `self` rules that out for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.host_address(), self.size) }
    }

    /// The whole of RAM as one mutable byte slice (tests, loaders of whole images).
    /// Since what is written through it cannot be seen, every engine drops all its
    /// decoded and translated code before it runs again.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.watch.invalidate_all();
        // SAFETY: as in `as_slice`; the exclusive borrow of `self` makes this the only
        // live view created through this type.
        unsafe { std::slice::from_raw_parts_mut(self.host_address(), self.size) }
    }

    /// Where RAM is mapped in this process: (host address, size), for registering it
    /// with a hypervisor.
    pub fn host_range(&self) -> (u64, u64) {
        (self.host_address() as u64, self.size as u64)
    }

    fn host_address(&self) -> *mut u8 {
        self.mem
            .get_host_address(GuestAddress(0))
            .expect("guest RAM has a region at guest-physical 0 by construction")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protection (`rwxp` column of /proc/self/maps) of the host page at `addr`.
    fn protection_at(addr: u64) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        let line = maps
            .lines()
            .find(|line| {
                let range = line.split_whitespace().next().unwrap_or_default();
                let (start, end) = range.split_once('-').expect("a range");
                let parse = |hex| u64::from_str_radix(hex, 16).expect("hex");
                (parse(start)..parse(end)).contains(&addr)
            })
            .expect("the address is mapped");
        line.split_whitespace()
            .nth(1)
            .expect("permissions")
            .to_owned()
    }

    #[test]
    fn ram_lies_between_inaccessible_guards() {
        let ram = GuestRam::new(1 << 20).unwrap();
        let (start, size) = ram.host_range();
        let end = start + size;
        assert!(protection_at(start).starts_with("rw"));
        assert!(protection_at(end - 1).starts_with("rw"));
        for guard in [
            start - GUARD_BELOW as u64,
            start - 1,
            end,
            end + GUARD_ABOVE as u64 - 1,
        ] {
            assert!(
                protection_at(guard).starts_with("---"),
                "{guard:#x} is accessible"
            );
        }
    }
}

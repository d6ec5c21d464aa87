//! The CPU's raw view of guest RAM.
//!
//! Devices may write guest memory (through vm-memory) between two instructions, while a
//! software engine is in the middle of a run; so the engine must not hold a `&mut [u8]`
//! over RAM. It holds this instead: a pointer and a length, every access bounds-checked
//! and made with an unaligned raw-pointer copy, which is what vm-memory does too.

use std::marker::PhantomData;
use std::ptr::NonNull;

/// Raw, bounds-checked access to guest RAM for the duration of a borrow of it.
#[derive(Debug, Clone, Copy)]
pub struct RamView<'a> {
    base: NonNull<u8>,
    len: usize,
    _ram: PhantomData<&'a super::GuestRam>,
}

impl RamView<'_> {
    /// A view of `len` bytes at `base`.
    ///
    /// # Safety
    /// `base` must point to `len` bytes of mapped, writable memory that stay mapped for
    /// the view's lifetime.
    pub(super) unsafe fn new(base: *mut u8, len: usize) -> Self {
        RamView {
            base: NonNull::new(base).expect("RAM mapping is not null"),
            len,
            _ram: PhantomData,
        }
    }

    /// RAM size in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Where RAM starts in the host's address space, for generated code that accesses
    /// guest RAM directly (the translator's TLB holds host addresses).
    pub fn host_base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Whether RAM is empty (never, for a machine).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The offset of `[pa, pa + n)` if it lies wholly in RAM.
    #[inline(always)]
    fn offset(&self, pa: u64, n: usize) -> Option<usize> {
        let p = usize::try_from(pa).ok()?;
        (p <= self.len && n <= self.len - p).then_some(p)
    }

    /// The little-endian value of `n` (at most 8) bytes at `pa`, if they are in RAM.
    #[inline(always)]
    pub fn read_le(&self, pa: u64, n: usize) -> Option<u64> {
        debug_assert!(n <= 8);
        let p = self.offset(pa, n)?;
        let mut buf = [0u8; 8];
        // SAFETY: `p + n <= len` was checked, so the source lies in the mapping; the
        // destination is a local buffer of 8 >= n bytes; they cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.base.as_ptr().add(p), buf.as_mut_ptr(), n) };
        Some(u64::from_le_bytes(buf))
    }

    /// Copies bytes at `pa` into `out`; false (and nothing copied) if not all in RAM.
    #[inline]
    pub fn read(&self, pa: u64, out: &mut [u8]) -> bool {
        let Some(p) = self.offset(pa, out.len()) else {
            return false;
        };
        // SAFETY: bounds checked above; `out` is a distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(p), out.as_mut_ptr(), out.len())
        };
        true
    }

    /// Writes `data` at `pa`; false (and nothing written) if not all in RAM. Callers
    /// report the write to the code map themselves.
    #[inline(always)]
    pub fn write(&self, pa: u64, data: &[u8]) -> bool {
        let Some(p) = self.offset(pa, data.len()) else {
            return false;
        };
        // SAFETY: bounds checked above; the mapping is writable; `data` is a Rust slice,
        // which cannot alias guest RAM because nobody holds a reference into it.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(p), data.len())
        };
        true
    }
}

impl crate::x86::paging::PhysRead for RamView<'_> {
    fn read_entry(&self, pa: u64, size: usize) -> Option<u64> {
        self.read_le(pa, size)
    }
}

#[cfg(test)]
mod tests {
    use super::super::GuestRam;

    #[test]
    fn accesses_are_bounds_checked() {
        let ram = GuestRam::new(0x2000).unwrap();
        let v = ram.view();
        assert!(v.write(0x1FFC, &[1, 2, 3, 4]));
        assert_eq!(v.read_le(0x1FFC, 4), Some(0x0403_0201));
        assert!(!v.write(0x1FFD, &[1, 2, 3, 4]));
        assert_eq!(v.read_le(0x1FFD, 4), None);
        assert_eq!(v.read_le(u64::MAX, 1), None);
        let mut buf = [0u8; 2];
        assert!(!v.read(0x2000, &mut buf));
        assert!(v.read(0x1FFE, &mut buf));
        assert_eq!(buf, [3, 4]);
    }
}

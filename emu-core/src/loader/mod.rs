//! Kernel loading: puts a Multiboot v1 kernel into guest RAM the way QEMU's `-kernel` does.
//!
//! The loader only touches memory. It parses and checks the whole image first and writes
//! nothing until every check has passed, so a rejected kernel leaves guest RAM as it was.
//! Setting up the CPU (protected mode, flat segments, `EAX`, `EBX`, `EIP`) is the caller's
//! job, using the [`BootInfo`] returned here.
//!
//! * `multiboot` finds the Multiboot header, handles the a.out kludge, places the segments
//!   and writes the Multiboot information structure (MBI).
//! * `elf` turns an ELF32 executable into the list of segments to copy.

mod elf;
mod multiboot;
#[cfg(test)]
mod tests;

pub use multiboot::{
    load_multiboot, load_multiboot_with_modules, BootInfo, LoadError, Module, Region,
};

/// Size in bytes of a little-endian `u16` field.
const U16_LEN: usize = 2;
/// Size in bytes of a little-endian `u32` field.
const U32_LEN: usize = 4;

/// Reads a little-endian `u16` at `offset`, or `None` if it would run past the end of `bytes`.
fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let end = offset.checked_add(U16_LEN)?;
    let field: [u8; U16_LEN] = bytes.get(offset..end)?.try_into().ok()?;
    Some(u16::from_le_bytes(field))
}

/// Reads a little-endian `u32` at `offset`, or `None` if it would run past the end of `bytes`.
fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(U32_LEN)?;
    let field: [u8; U32_LEN] = bytes.get(offset..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(field))
}

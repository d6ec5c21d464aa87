//! ELF32 executables: turns the program header table into the list of segments to load.
//!
//! Only what a Multiboot loader needs is read: the ELF header identification, type, machine,
//! entry point and the `PT_LOAD` program headers. Every offset and size comes from the file,
//! so each one is checked against the file before use. Where each segment lands in guest
//! RAM is checked afterwards, in `multiboot`, the same way for ELF and a.out-kludge images.

use super::multiboot::{LoadError, LoadPlan, Region, Segment};
use super::{read_u16, read_u32};

/// The four bytes every ELF file starts with.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// Offset of `EI_CLASS` in `e_ident`: 32- or 64-bit.
const EI_CLASS: usize = 4;
/// `EI_CLASS` value for a 32-bit ELF.
const ELFCLASS32: u8 = 1;
/// `EI_CLASS` value for a 64-bit ELF.
const ELFCLASS64: u8 = 2;
/// Offset of `EI_DATA` in `e_ident`: the byte order.
const EI_DATA: usize = 5;
/// `EI_DATA` value for little-endian.
const ELFDATA2LSB: u8 = 1;
/// Offset of `e_type` in the ELF32 header.
const E_TYPE: usize = 16;
/// Offset of `e_machine` in the ELF32 header.
const E_MACHINE: usize = 18;
/// Offset of `e_entry` in the ELF32 header.
const E_ENTRY: usize = 24;
/// Offset of `e_phoff` (file offset of the program header table) in the ELF32 header.
const E_PHOFF: usize = 28;
/// Offset of `e_phentsize` (bytes per program header) in the ELF32 header.
const E_PHENTSIZE: usize = 42;
/// Offset of `e_phnum` (number of program headers) in the ELF32 header.
const E_PHNUM: usize = 44;
/// Size of the ELF32 header.
const EHDR_LEN: usize = 52;
/// `e_type` of an executable file.
const ET_EXEC: u16 = 2;
/// `e_machine` of an Intel 80386 file.
const EM_386: u16 = 3;

/// Size of an ELF32 program header.
const PHDR_LEN: usize = 32;
/// Offset of `p_type` in a program header.
const P_TYPE: usize = 0;
/// Offset of `p_offset` (file offset of the segment's bytes) in a program header.
const P_OFFSET: usize = 4;
/// Offset of `p_vaddr` (virtual address) in a program header.
const P_VADDR: usize = 8;
/// Offset of `p_paddr` (physical address, where we load) in a program header.
const P_PADDR: usize = 12;
/// Offset of `p_filesz` (bytes in the file) in a program header.
const P_FILESZ: usize = 16;
/// Offset of `p_memsz` (bytes in memory; the excess is zeroed) in a program header.
const P_MEMSZ: usize = 20;
/// Offset of `p_flags` in a program header.
const P_FLAGS: usize = 24;
/// `p_type` of a loadable segment.
const PT_LOAD: u32 = 1;
/// `p_flags` bit: the segment is executable.
const PF_X: u32 = 1 << 0;

/// Whether `image` starts with the ELF magic number (of any class or byte order).
pub(super) fn is_elf(image: &[u8]) -> bool {
    image.starts_with(ELF_MAGIC)
}

/// Parses an ELF32 little-endian i386 executable into the segments to load at their physical
/// addresses (`p_paddr`), and the entry point.
///
/// Like QEMU, if `e_entry` is a virtual address inside an executable segment whose virtual
/// and physical addresses differ (a higher-half kernel), it is translated to the physical
/// address, since the kernel starts with paging off. Segments with `p_memsz == 0` are skipped.
pub(super) fn parse(image: &[u8]) -> Result<LoadPlan<'_>, LoadError> {
    let truncated_header = LoadError::ElfTruncatedHeader {
        len: image.len(),
        needed: EHDR_LEN,
    };
    match image.get(EI_CLASS).copied() {
        Some(ELFCLASS32) => {}
        Some(ELFCLASS64) => return Err(LoadError::Elf64),
        Some(class) => return Err(LoadError::ElfBadClass { class }),
        None => return Err(truncated_header),
    }
    match image.get(EI_DATA).copied() {
        Some(ELFDATA2LSB) => {}
        Some(data) => return Err(LoadError::ElfNotLittleEndian { data }),
        None => return Err(truncated_header),
    }
    if image.len() < EHDR_LEN {
        return Err(truncated_header);
    }
    let header_u16 = |offset| {
        read_u16(image, offset).ok_or(LoadError::ElfTruncatedHeader {
            len: image.len(),
            needed: EHDR_LEN,
        })
    };
    let header_u32 = |offset| {
        read_u32(image, offset).ok_or(LoadError::ElfTruncatedHeader {
            len: image.len(),
            needed: EHDR_LEN,
        })
    };

    let e_type = header_u16(E_TYPE)?;
    if e_type != ET_EXEC {
        return Err(LoadError::ElfNotExecutable { e_type });
    }
    let machine = header_u16(E_MACHINE)?;
    if machine != EM_386 {
        return Err(LoadError::ElfNotI386 { machine });
    }
    let mut entry = header_u32(E_ENTRY)?;
    let phoff = header_u32(E_PHOFF)?;
    let phentsize = header_u16(E_PHENTSIZE)?;
    let phnum = header_u16(E_PHNUM)?;
    if phnum == 0 {
        return Err(LoadError::ElfNoLoadSegments);
    }
    if usize::from(phentsize) != PHDR_LEN {
        return Err(LoadError::ElfBadPhentsize {
            size: phentsize,
            expected: PHDR_LEN,
        });
    }

    let table = usize::try_from(phoff)
        .ok()
        .and_then(|start| {
            let end = usize::from(phnum)
                .checked_mul(PHDR_LEN)
                .and_then(|len| start.checked_add(len))?;
            image.get(start..end)
        })
        .ok_or(LoadError::ElfTruncatedPhdrs {
            offset: phoff,
            count: phnum,
            entry_size: PHDR_LEN,
            len: image.len(),
        })?;

    let mut segments = Vec::new();
    for (index, phdr) in table.chunks_exact(PHDR_LEN).enumerate() {
        // `phdr` is exactly PHDR_LEN bytes, so every field is there.
        let field = |offset| read_u32(phdr, offset).unwrap_or(0);
        if field(P_TYPE) != PT_LOAD {
            continue;
        }
        let offset = field(P_OFFSET);
        let vaddr = field(P_VADDR);
        let paddr = field(P_PADDR);
        let filesz = field(P_FILESZ);
        let memsz = field(P_MEMSZ);
        let flags = field(P_FLAGS);

        if filesz > memsz {
            return Err(LoadError::ElfFileszExceedsMemsz {
                index,
                filesz,
                memsz,
            });
        }
        // QEMU's fix-up for kernels linked at a virtual address other than their load address.
        let in_file_bytes =
            entry >= vaddr && u64::from(entry) < u64::from(vaddr) + u64::from(filesz);
        if vaddr != paddr && flags & PF_X != 0 && in_file_bytes {
            // On overflow the segment itself wraps, which placement reports.
            if let Some(physical) = entry
                .checked_sub(vaddr)
                .and_then(|offset| offset.checked_add(paddr))
            {
                entry = physical;
            }
        }
        if memsz == 0 {
            continue;
        }
        let data: &[u8] = if filesz == 0 {
            // A pure-bss segment: its p_offset is meaningless and need not be in the file.
            &[]
        } else {
            usize::try_from(offset)
                .ok()
                .zip(usize::try_from(filesz).ok())
                .and_then(|(start, len)| image.get(start..start.checked_add(len)?))
                .ok_or(LoadError::ElfSegmentPastEof {
                    index,
                    offset,
                    filesz,
                    len: image.len(),
                })?
        };
        segments.push(Segment {
            region: Region::ElfSegment(index),
            addr: paddr,
            data,
            mem_size: u64::from(memsz),
        });
    }
    if segments.is_empty() {
        return Err(LoadError::ElfNoLoadSegments);
    }
    Ok(LoadPlan { segments, entry })
}

//! Multiboot v1: finding the header, the a.out kludge, placing the kernel in guest RAM and
//! writing the Multiboot information structure (MBI).
//!
//! The behaviour follows QEMU's `hw/i386/multiboot.c` (what `-kernel` does for a Multiboot
//! kernel): the first header with a valid checksum wins, the a.out kludge takes precedence
//! over ELF, and ELF segments go to their physical addresses. Where QEMU would load something
//! that cannot work (a segment over the MBI or in the VGA/BIOS hole, an entry point outside
//! the image) we refuse with an error instead.
//!
//! Reference: the Multiboot Specification, version 0.6.96.

use std::fmt;
use std::ops::Range;

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryRegion};

use super::{elf, read_u32};

// ---- The Multiboot header, as the kernel provides it ----

/// Magic number that starts a Multiboot v1 header.
const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The header must lie entirely within this many bytes from the start of the file.
const HEADER_SEARCH_LIMIT: usize = 8192;
/// The header is 32-bit aligned within the file.
const HEADER_ALIGN: usize = 4;
/// Length of the mandatory part of the header: magic, flags and checksum.
const HEADER_MIN_LEN: usize = 12;
/// Offset of `flags` within the header.
const HEADER_FLAGS: usize = 4;
/// Offset of `checksum` within the header.
const HEADER_CHECKSUM: usize = 8;
/// Offset of `header_addr` (a.out kludge): the physical address the header itself is loaded at.
const HEADER_HEADER_ADDR: usize = 12;
/// Offset of `load_addr` (a.out kludge): physical address where loading starts.
const HEADER_LOAD_ADDR: usize = 16;
/// Offset of `load_end_addr` (a.out kludge): physical end of the loaded data; 0 = end of file.
const HEADER_LOAD_END_ADDR: usize = 20;
/// Offset of `bss_end_addr` (a.out kludge): physical end of the bss; 0 = no bss.
const HEADER_BSS_END_ADDR: usize = 24;
/// Offset of `entry_addr` (a.out kludge): physical address to jump to.
const HEADER_ENTRY_ADDR: usize = 28;
/// Length of the header up to and including the a.out-kludge address fields.
const HEADER_KLUDGE_LEN: usize = 32;

/// Header flag bit 0: page-align boot modules. Modules always start on a page.
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag bit 1: the kernel wants memory information. We always provide it.
const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flag bit 2: the kernel wants a video mode. Accepted but ignored, as QEMU does.
const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flag bit 16: the a.out-kludge address fields are valid and override any ELF headers.
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Bits 0..15 are required features: a loader that does not understand one must refuse.
const FLAGS_REQUIRED_MASK: u32 = 0x0000_FFFF;
/// The required-feature bits this loader understands.
const FLAGS_REQUIRED_SUPPORTED: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

// ---- The machine state handed to the kernel ----

/// `EAX` at kernel entry: tells the kernel a Multiboot-compliant loader started it.
const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

// ---- The guest-physical memory layout ----

/// One kibibyte.
const KIB: u64 = 1024;
/// One mebibyte.
const MIB: u64 = 1024 * KIB;
/// Nothing of the kernel may land below this: page 0 holds the real-mode IVT and BIOS data area.
const LOWEST_LOAD_ADDR: u64 = 0x1000;
/// End of conventional memory (639 KiB), where the extended BIOS data area begins.
const CONVENTIONAL_END: u64 = 0x9_FC00;
/// End of the extended BIOS data area (640 KiB), where VGA memory begins.
const EBDA_END: u64 = 0xA_0000;
/// Start of the system BIOS ROM (960 KiB).
const BIOS_ROM_START: u64 = 0xF_0000;
/// Start of extended memory (1 MiB); also the end of the BIOS ROM.
const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Largest guest-physical address a 32-bit kernel can be loaded up to (exclusive ends must fit
/// a `u32` so that [`BootInfo::kernel`] can describe them).
const ADDRESS_SPACE_LAST: u64 = u32::MAX as u64;

// ---- The Multiboot information structure (MBI) and what it points to ----

/// Where the MBI goes if that memory is free: low memory below 640 KiB, where QEMU puts
/// it too. Otherwise it goes to the first free place after it (see [`find_free`]).
const MBI_PREFERRED_ADDR: u64 = 0x9000;
/// Alignment of the MBI and of what follows it.
const MBI_ALIGN: u64 = 8;
/// Boot modules start on a page (the header's flag bit 0 asks for it; we always do it).
const MODULE_ALIGN: u64 = 0x1000;
/// Size of the MBI as the spec lays it out, up to and including the VBE fields.
const MBI_SIZE: usize = 88;
/// MBI offset of `flags`: which of the other fields are valid.
const MBI_FLAGS: usize = 0;
/// MBI offset of `mem_lower`: KiB of memory from address 0.
const MBI_MEM_LOWER: usize = 4;
/// MBI offset of `mem_upper`: KiB of memory from 1 MiB.
const MBI_MEM_UPPER: usize = 8;
/// MBI offset of `cmdline`: physical address of the NUL-terminated command line.
const MBI_CMDLINE: usize = 16;
/// MBI offset of `mods_count`: number of boot modules.
const MBI_MODS_COUNT: usize = 20;
/// MBI offset of `mods_addr`: physical address of the module list.
const MBI_MODS_ADDR: usize = 24;
/// MBI offset of `mmap_length`: byte length of the memory map.
const MBI_MMAP_LENGTH: usize = 44;
/// MBI offset of `mmap_addr`: physical address of the first memory map entry.
const MBI_MMAP_ADDR: usize = 48;
/// MBI offset of `boot_loader_name`: physical address of the NUL-terminated loader name.
const MBI_BOOT_LOADER_NAME: usize = 64;

/// MBI flag bit 0: `mem_lower` and `mem_upper` are valid.
const MBI_FLAG_MEMORY: u32 = 1 << 0;
/// MBI flag bit 2: `cmdline` is valid.
const MBI_FLAG_CMDLINE: u32 = 1 << 2;
/// MBI flag bit 3: `mods_count` and `mods_addr` are valid.
const MBI_FLAG_MODS: u32 = 1 << 3;
/// MBI flag bit 6: `mmap_length` and `mmap_addr` are valid.
const MBI_FLAG_MMAP: u32 = 1 << 6;
/// MBI flag bit 9: `boot_loader_name` is valid.
const MBI_FLAG_LOADER_NAME: u32 = 1 << 9;

/// A memory map entry's `size` field: the bytes after it (base u64, length u64, type u32).
const MMAP_ENTRY_SIZE_FIELD: u32 = 20;
/// Bytes per memory map entry, including the `size` field itself.
const MMAP_ENTRY_LEN: usize = 24;
/// Memory map type 1: RAM the kernel may use.
const MMAP_AVAILABLE: u32 = 1;
/// Memory map type 2: reserved, not for the kernel to use.
const MMAP_RESERVED: u32 = 2;
/// Number of entries in the memory map we hand over.
const MMAP_ENTRIES: usize = 4;
/// Byte length of the memory map (the MBI's `mmap_length`).
const MMAP_LENGTH: usize = MMAP_ENTRIES * MMAP_ENTRY_LEN;
/// Bytes per entry of the module list: mod_start, mod_end, string, reserved.
const MODULE_ENTRY_LEN: usize = 16;
/// The boot loader name handed to the kernel, NUL included.
const LOADER_NAME: &[u8] = b"popek\0";
/// Longest command line accepted (the kernel's or a module's), in bytes, not counting
/// the terminating NUL.
const CMDLINE_MAX_LEN: usize = 4096;

/// Bytes of zeroes written per call when clearing a bss; large enough to make few calls.
const ZERO_CHUNK: usize = 64 * 1024;
/// Source of the zeroes for the bss, kept static so that it is not on the stack.
static ZEROES: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];

/// What the caller needs to start the kernel, once [`load_multiboot`] has filled guest RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfo {
    /// Physical address to jump to (`EIP`), with paging off and flat 4 GiB segments.
    pub entry: u32,
    /// EAX at entry: 0x2BADB002
    pub eax: u32,
    /// EBX at entry: physical address of the Multiboot info structure
    pub ebx: u32,
    /// [start, end) of what the kernel occupies, incl. bss
    pub kernel: Range<u32>,
    /// [start, end) of each boot module, in the order given.
    pub modules: Vec<Range<u32>>,
}

/// A boot module (what QEMU's `-initrd` gives a Multiboot kernel): its bytes and the
/// string the MBI's module list hands over with it.
#[derive(Debug, Clone, Copy)]
pub struct Module<'a> {
    /// The module's contents, copied to guest RAM as they are.
    pub image: &'a [u8],
    /// Its string (by convention the file name and its arguments).
    pub cmdline: &'a str,
}

/// Which part of the kernel image a [`LoadError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// A `PT_LOAD` segment, numbered by its index in the ELF program header table.
    ElfSegment(usize),
    /// The single load described by the a.out-kludge fields of the Multiboot header.
    Kludge,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::ElfSegment(index) => write!(f, "ELF segment {index}"),
            Region::Kludge => f.write_str("a.out-kludge image"),
        }
    }
}

/// Why a kernel image could not be loaded. Each message is one line naming the offending
/// file offset or guest-physical address.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The image has no bytes at all.
    #[error("kernel image is empty (0 bytes)")]
    Empty,
    /// The image is shorter than the mandatory part of a Multiboot header.
    #[error("kernel image is too small: {len} bytes, but a Multiboot header alone takes {min}")]
    TooSmall {
        /// File length in bytes.
        len: usize,
        /// Minimum length in bytes.
        min: usize,
    },
    /// No aligned magic number in the first 8192 bytes.
    #[error(
        "not a Multiboot kernel: no Multiboot v1 header (magic 0x1BADB002) in the first 8192 bytes"
    )]
    NoHeader,
    /// A magic number was found but no header with it has a valid checksum.
    #[error(
        "bad Multiboot header checksum at file offset {offset:#x}: magic 0x1badb002 + flags \
         {flags:#x} + checksum {checksum:#x} = {sum:#x}, but must be 0 (mod 2^32)"
    )]
    BadChecksum {
        /// File offset of the (first) header with the magic number.
        offset: usize,
        /// Its `flags` field.
        flags: u32,
        /// Its `checksum` field.
        checksum: u32,
        /// The wrapped sum of magic, flags and checksum.
        sum: u32,
    },
    /// The header asks for a required feature (bits 0..15) this loader does not implement.
    #[error(
        "Multiboot header at file offset {offset:#x} requires unsupported features: flags \
         {flags:#x} set required bits {unsupported:#x} (only bits 0, 1 and 2 are supported)"
    )]
    UnsupportedFlags {
        /// File offset of the header.
        offset: usize,
        /// Its `flags` field.
        flags: u32,
        /// The required bits that are set but not understood.
        unsupported: u32,
    },
    /// The a.out-kludge flag is set but the file ends inside the address fields.
    #[error(
        "truncated Multiboot header at file offset {offset:#x}: the a.out-kludge address fields \
         need {needed} bytes, but the {len}-byte file ends first"
    )]
    KludgeTruncatedHeader {
        /// File offset of the header.
        offset: usize,
        /// Header length the a.out kludge needs.
        needed: usize,
        /// File length in bytes.
        len: usize,
    },
    /// a.out kludge with `header_addr < load_addr`.
    #[error("a.out kludge: header_addr {header_addr:#x} is below load_addr {load_addr:#x}")]
    KludgeHeaderBelowLoad {
        /// The header's `header_addr`.
        header_addr: u32,
        /// The header's `load_addr`.
        load_addr: u32,
    },
    /// a.out kludge whose load would start before the beginning of the file.
    #[error(
        "a.out kludge: header_addr {header_addr:#x} is {distance:#x} bytes above load_addr \
         {load_addr:#x}, more than the header's file offset {offset:#x}, so the load would start \
         before the beginning of the file"
    )]
    KludgeLoadBeforeFile {
        /// File offset of the header.
        offset: usize,
        /// The header's `header_addr`.
        header_addr: u32,
        /// The header's `load_addr`.
        load_addr: u32,
        /// `header_addr - load_addr`.
        distance: u32,
    },
    /// a.out kludge with a non-zero `load_end_addr` below `load_addr`.
    #[error("a.out kludge: load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}")]
    KludgeLoadEndBelowLoad {
        /// The header's `load_end_addr`.
        load_end_addr: u32,
        /// The header's `load_addr`.
        load_addr: u32,
    },
    /// a.out kludge with a non-zero `bss_end_addr` below the end of the loaded data.
    #[error(
        "a.out kludge: bss_end_addr {bss_end_addr:#x} is below the end of the loaded data \
         {load_end:#x}"
    )]
    KludgeBssEndBelowLoadEnd {
        /// The header's `bss_end_addr`.
        bss_end_addr: u32,
        /// Physical end of the loaded data.
        load_end: u64,
    },
    /// a.out kludge whose load runs past the end of the file.
    #[error(
        "a.out kludge: loading {size:#x} bytes from file offset {file_offset:#x} runs past the \
         end of the {len}-byte file"
    )]
    KludgeLoadPastEof {
        /// File offset the load starts at.
        file_offset: usize,
        /// Bytes to load.
        size: u64,
        /// File length in bytes.
        len: usize,
    },
    /// Neither ELF nor a.out kludge: nothing says where the kernel goes.
    #[error(
        "neither an ELF32 file nor an a.out-kludge Multiboot image: the file does not start with \
         the ELF magic and the Multiboot header at file offset {offset:#x} does not set the \
         a.out-kludge flag (bit 16)"
    )]
    NotElfNorKludge {
        /// File offset of the Multiboot header.
        offset: usize,
    },
    /// A 64-bit ELF without the a.out kludge.
    #[error("kernel is a 64-bit ELF; Multiboot v1 loads 32-bit ELF only (link with -m elf_i386)")]
    Elf64,
    /// An ELF class that is neither 32- nor 64-bit.
    #[error("ELF class {class} at file offset 0x4 is invalid (expected 1, ELFCLASS32)")]
    ElfBadClass {
        /// The `EI_CLASS` byte.
        class: u8,
    },
    /// A big-endian (or invalid-encoding) ELF.
    #[error(
        "ELF data encoding {data} at file offset 0x5 is not little-endian (expected 1, ELFDATA2LSB)"
    )]
    ElfNotLittleEndian {
        /// The `EI_DATA` byte.
        data: u8,
    },
    /// The file ends inside the ELF header.
    #[error("truncated ELF: the {len}-byte file is shorter than the {needed}-byte ELF32 header")]
    ElfTruncatedHeader {
        /// File length in bytes.
        len: usize,
        /// Size of the ELF32 header.
        needed: usize,
    },
    /// Not an executable (relocatable object, shared object, core dump...).
    #[error(
        "ELF type {e_type} at file offset 0x10 is not ET_EXEC (2); Multiboot needs a statically \
         linked executable"
    )]
    ElfNotExecutable {
        /// The `e_type` field.
        e_type: u16,
    },
    /// Not an i386 executable.
    #[error(
        "ELF machine {machine} at file offset 0x12 is not EM_386 (3); Multiboot v1 loads i386 \
         kernels only"
    )]
    ElfNotI386 {
        /// The `e_machine` field.
        machine: u16,
    },
    /// The program header entries are not the ELF32 size.
    #[error(
        "ELF program header entry size {size} at file offset 0x2a is not the ELF32 size \
         {expected}"
    )]
    ElfBadPhentsize {
        /// The `e_phentsize` field.
        size: u16,
        /// The ELF32 program header size.
        expected: usize,
    },
    /// The program header table runs past the end of the file.
    #[error(
        "truncated ELF: program header table (offset {offset:#x}, {count} x {entry_size} bytes) \
         extends past the end of the {len}-byte file"
    )]
    ElfTruncatedPhdrs {
        /// The `e_phoff` field.
        offset: u32,
        /// The `e_phnum` field.
        count: u16,
        /// Bytes per program header.
        entry_size: usize,
        /// File length in bytes.
        len: usize,
    },
    /// Nothing to load.
    #[error("ELF has no loadable segments (no PT_LOAD program header with a non-zero p_memsz)")]
    ElfNoLoadSegments,
    /// A segment claims more file bytes than memory bytes.
    #[error("ELF segment {index}: p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}")]
    ElfFileszExceedsMemsz {
        /// Program header index.
        index: usize,
        /// The `p_filesz` field.
        filesz: u32,
        /// The `p_memsz` field.
        memsz: u32,
    },
    /// A segment's file bytes run past the end of the file.
    #[error(
        "truncated ELF: segment {index} (file offset {offset:#x}, {filesz:#x} bytes) extends past \
         the end of the {len}-byte file"
    )]
    ElfSegmentPastEof {
        /// Program header index.
        index: usize,
        /// The `p_offset` field.
        offset: u32,
        /// The `p_filesz` field.
        filesz: u32,
        /// File length in bytes.
        len: usize,
    },
    /// A piece of the kernel runs past 4 GiB.
    #[error(
        "{region} at {start:#x}..{end:#x} runs past the end of the 32-bit physical address space"
    )]
    Wraps {
        /// Which piece.
        region: Region,
        /// Physical start.
        start: u64,
        /// Physical end (exclusive), computed without wrapping.
        end: u64,
    },
    /// A piece of the kernel lies (partly) beyond the end of guest RAM.
    #[error("{region} at {start:#x}..{end:#x} does not fit in guest RAM ({})", human_size(*.ram_size))]
    OutsideRam {
        /// Which piece.
        region: Region,
        /// Physical start.
        start: u64,
        /// Physical end (exclusive).
        end: u64,
        /// Guest RAM size in bytes.
        ram_size: u64,
    },
    /// A piece of the kernel would overwrite page 0.
    #[error(
        "{region} at {start:#x}..{end:#x} overlaps the first page 0x0..0x1000 (real-mode \
         interrupt vector table and BIOS data area)"
    )]
    InFirstPage {
        /// Which piece.
        region: Region,
        /// Physical start.
        start: u64,
        /// Physical end (exclusive).
        end: u64,
    },
    /// No free guest RAM is left for a boot module or the Multiboot information.
    #[error(
        "no room in guest RAM ({}) for {what} of {size} bytes beside the kernel and the \
         modules before it",
        human_size(*.ram_size)
    )]
    NoRoom {
        /// What did not fit: "module 2", "the Multiboot information".
        what: String,
        /// Its size in bytes.
        size: u64,
        /// Guest RAM size in bytes.
        ram_size: u64,
    },
    /// A piece of the kernel would land in the EBDA / VGA / BIOS ROM hole below 1 MiB.
    #[error(
        "{region} at {start:#x}..{end:#x} overlaps the reserved legacy area {:#x}..{:#x} (EBDA, \
         VGA memory and BIOS ROM)",
        CONVENTIONAL_END,
        HIGH_MEMORY_START
    )]
    OverlapsLegacyHole {
        /// Which piece.
        region: Region,
        /// Physical start.
        start: u64,
        /// Physical end (exclusive).
        end: u64,
    },
    /// Two pieces of the kernel would land on the same memory.
    #[error(
        "{region} at {start:#x}..{end:#x} overlaps {other} at {other_start:#x}..{other_end:#x}"
    )]
    SegmentsOverlap {
        /// The later piece.
        region: Region,
        /// Its physical start.
        start: u64,
        /// Its physical end (exclusive).
        end: u64,
        /// The earlier piece it collides with.
        other: Region,
        /// That piece's physical start.
        other_start: u64,
        /// That piece's physical end (exclusive).
        other_end: u64,
    },
    /// The entry point is not at any byte loaded from the file.
    #[error(
        "entry point {entry:#x} is not inside the bytes loaded from the file (the kernel occupies \
         {start:#x}..{end:#x})"
    )]
    EntryNotLoaded {
        /// The entry point (after the virtual-to-physical fix-up for ELF).
        entry: u32,
        /// Physical start of the kernel.
        start: u32,
        /// Physical end of the kernel (exclusive, bss included).
        end: u32,
    },
    /// The command line cannot be passed as a C string.
    #[error(
        "command line contains a NUL byte at position {position}; it is passed to the kernel as \
         a NUL-terminated string"
    )]
    CmdlineContainsNul {
        /// Byte index of the first NUL.
        position: usize,
    },
    /// The command line is longer than the space reserved for it.
    #[error("command line is {len} bytes long; the maximum is {max} bytes")]
    CmdlineTooLong {
        /// Length in bytes.
        len: usize,
        /// Maximum length in bytes.
        max: usize,
    },
    /// Guest memory has no RAM at physical address 0.
    #[error("guest memory has no RAM region at guest-physical address 0x0")]
    NoRamAtZero,
    /// Guest RAM ends at or below 1 MiB, leaving no upper memory.
    #[error("guest RAM is {}, but a Multiboot kernel needs more than 1 MiB", human_size(*.ram_size))]
    RamTooSmall {
        /// Size of the RAM region at address 0, in bytes.
        ram_size: u64,
    },
    /// Guest memory refused a write that the checks said would fit (a bug, not a bad image).
    #[error("writing {len:#x} bytes to guest-physical address {addr:#x} failed: {source}")]
    GuestWrite {
        /// Guest-physical address of the write.
        addr: u64,
        /// Bytes written.
        len: usize,
        /// What guest memory reported.
        source: GuestMemoryError,
    },
}

/// One contiguous piece of the kernel to put into guest RAM.
#[derive(Debug)]
pub(super) struct Segment<'a> {
    /// Which piece of the image this is, for error messages.
    pub(super) region: Region,
    /// Guest-physical load address.
    pub(super) addr: u32,
    /// Bytes copied from the file to `addr`.
    pub(super) data: &'a [u8],
    /// Bytes the piece occupies in memory; those past `data` are zeroed (the bss).
    pub(super) mem_size: u64,
}

/// What a format parser (ELF or a.out kludge) produces: what to copy where, and the entry.
#[derive(Debug)]
pub(super) struct LoadPlan<'a> {
    /// The pieces to load, in file order.
    pub(super) segments: Vec<Segment<'a>>,
    /// Physical entry point.
    pub(super) entry: u32,
}

/// A Multiboot header found in the image.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// File offset of the magic number.
    offset: usize,
    /// The header's `flags` field.
    flags: u32,
}

/// Loads `image` (a Multiboot v1 kernel) into `mem` and writes the Multiboot info structure.
///
/// `mem` must have RAM starting at guest-physical address 0, larger than 1 MiB; only the
/// region at address 0 is used and described to the kernel. Everything is checked before
/// anything is written, so on error guest memory is unchanged.
///
/// # Errors
///
/// Returns a [`LoadError`] if the image is not a loadable Multiboot v1 kernel, does not fit
/// in guest RAM or would overwrite the MBI, or if `cmdline` contains a NUL or is too long.
pub fn load_multiboot(
    mem: &impl GuestMemoryBackend,
    image: &[u8],
    cmdline: &str,
) -> Result<BootInfo, LoadError> {
    load_multiboot_with_modules(mem, image, cmdline, &[])
}

/// [`load_multiboot`] with boot modules: each goes on its own page after the kernel, and
/// the MBI's module list says where. The MBI, the memory map and the strings go where
/// neither the kernel nor a module is: at 0x9000 if that is free, else the first free
/// place after it.
///
/// # Errors
///
/// Those of [`load_multiboot`], and [`LoadError::NoRoom`] if the modules or the MBI do
/// not fit in guest RAM, or a module's string is unusable as a command line.
pub fn load_multiboot_with_modules(
    mem: &impl GuestMemoryBackend,
    image: &[u8],
    cmdline: &str,
    modules: &[Module<'_>],
) -> Result<BootInfo, LoadError> {
    let header = find_header(image)?;
    // The kludge wins over ELF, as in QEMU: it lets e.g. ELF64 kernels boot as flat binaries.
    let plan = if header.flags & FLAG_AOUT_KLUDGE != 0 {
        kludge_plan(image, header.offset)?
    } else if elf::is_elf(image) {
        elf::parse(image)?
    } else {
        return Err(LoadError::NotElfNorKludge {
            offset: header.offset,
        });
    };
    check_cmdline(cmdline)?;
    for module in modules {
        check_cmdline(module.cmdline)?;
    }
    let ram_size = ram_size(mem)?;
    let (kernel, segments) = place(&plan, ram_size)?;

    // Taken so far: page 0, the legacy hole, the kernel's segments.
    let mut taken = vec![0..LOWEST_LOAD_ADDR, CONVENTIONAL_END..HIGH_MEMORY_START];
    taken.extend(segments);
    let mut placed_modules = Vec::with_capacity(modules.len());
    for (i, module) in modules.iter().enumerate() {
        let size = len_u64(module.image.len());
        let start = find_free(u64::from(kernel.end), size, MODULE_ALIGN, &taken, ram_size)
            .ok_or_else(|| LoadError::NoRoom {
                what: format!("module {}", i + 1),
                size,
                ram_size,
            })?;
        taken.push(start..start + size);
        placed_modules.push(start..start + size);
    }
    let info = BootInfoBlock::new(cmdline, modules);
    let size = len_u64(info.len());
    let mbi =
        find_free(MBI_PREFERRED_ADDR, size, MBI_ALIGN, &taken, ram_size).ok_or_else(|| {
            LoadError::NoRoom {
                what: "the Multiboot information".into(),
                size,
                ram_size,
            }
        })?;

    for segment in &plan.segments {
        write_segment(mem, segment)?;
    }
    for (module, range) in modules.iter().zip(&placed_modules) {
        write_bytes(mem, range.start, module.image)?;
    }
    let modules: Vec<Range<u32>> = placed_modules
        .iter()
        .map(|r| {
            u32::try_from(r.start).unwrap_or(u32::MAX)..u32::try_from(r.end).unwrap_or(u32::MAX)
        })
        .collect();
    let mbi = u32::try_from(mbi).unwrap_or(u32::MAX);
    write_bytes(mem, u64::from(mbi), &info.build(mbi, ram_size, &modules))?;

    Ok(BootInfo {
        entry: plan.entry,
        eax: BOOTLOADER_MAGIC,
        ebx: mbi,
        kernel,
        modules,
    })
}

/// The first address at or above `from`, aligned to `align`, where `size` bytes fit in
/// RAM below 4 GiB without touching any range in `taken`.
fn find_free(from: u64, size: u64, align: u64, taken: &[Range<u64>], ram_size: u64) -> Option<u64> {
    let limit = ram_size.min(ADDRESS_SPACE_LAST);
    let mut at = from.checked_next_multiple_of(align)?;
    loop {
        let end = at.checked_add(size)?;
        if end > limit {
            return None;
        }
        // An empty piece still needs an address nobody else uses.
        let range = at..end.max(at + 1);
        match taken
            .iter()
            .filter(|t| overlaps(&range, t))
            .map(|t| t.end)
            .max()
        {
            None => return Some(at),
            Some(past) => at = past.checked_next_multiple_of(align)?,
        }
    }
}

/// The MBI and everything it points to, laid out in one block: the MBI, the memory map,
/// the module list, the loader name, the command line and the modules' strings.
struct BootInfoBlock<'a> {
    cmdline: &'a str,
    modules: &'a [Module<'a>],
}

impl<'a> BootInfoBlock<'a> {
    fn new(cmdline: &'a str, modules: &'a [Module<'a>]) -> Self {
        BootInfoBlock { cmdline, modules }
    }

    /// Offset of the memory map in the block.
    const MMAP: usize = MBI_SIZE;
    /// Offset of the module list.
    const MODULES: usize = Self::MMAP + MMAP_LENGTH;

    /// Offset of the loader name.
    fn loader_name(&self) -> usize {
        Self::MODULES + self.modules.len() * MODULE_ENTRY_LEN
    }

    /// Offset of the kernel's command line.
    fn cmdline_at(&self) -> usize {
        self.loader_name() + LOADER_NAME.len()
    }

    fn len(&self) -> usize {
        self.cmdline_at()
            + self.cmdline.len()
            + 1
            + self
                .modules
                .iter()
                .map(|m| m.cmdline.len() + 1)
                .sum::<usize>()
    }

    /// The block's bytes for an MBI at `base`, with the modules at `placed`.
    fn build(&self, base: u32, ram_size: u64, placed: &[Range<u32>]) -> Vec<u8> {
        let at = |offset: usize| base.wrapping_add(u32::try_from(offset).unwrap_or(u32::MAX));
        let upper_size = ram_size.saturating_sub(HIGH_MEMORY_START);
        let mut block = vec![0u8; self.len()];
        let mut put = |offset: usize, bytes: &[u8]| {
            if let Some(slot) = block.get_mut(offset..offset + bytes.len()) {
                slot.copy_from_slice(bytes);
            }
        };
        let mods = if self.modules.is_empty() {
            0
        } else {
            MBI_FLAG_MODS
        };
        let fields = [
            (
                MBI_FLAGS,
                MBI_FLAG_MEMORY | MBI_FLAG_CMDLINE | mods | MBI_FLAG_MMAP | MBI_FLAG_LOADER_NAME,
            ),
            (MBI_MEM_LOWER, kib_u32(CONVENTIONAL_END)),
            (MBI_MEM_UPPER, kib_u32(upper_size)),
            (MBI_CMDLINE, at(self.cmdline_at())),
            (MBI_MODS_COUNT, self.modules.len() as u32),
            (
                MBI_MODS_ADDR,
                if self.modules.is_empty() {
                    0
                } else {
                    at(Self::MODULES)
                },
            ),
            (MBI_MMAP_LENGTH, MMAP_LENGTH as u32),
            (MBI_MMAP_ADDR, at(Self::MMAP)),
            (MBI_BOOT_LOADER_NAME, at(self.loader_name())),
        ];
        for (offset, value) in fields {
            put(offset, &value.to_le_bytes());
        }

        // The same low-memory layout SeaBIOS reports through E820, with RAM above 1 MiB up
        // to the end of the RAM region.
        let map = [
            (0, CONVENTIONAL_END, MMAP_AVAILABLE),
            (CONVENTIONAL_END, EBDA_END - CONVENTIONAL_END, MMAP_RESERVED),
            (
                BIOS_ROM_START,
                HIGH_MEMORY_START - BIOS_ROM_START,
                MMAP_RESERVED,
            ),
            (HIGH_MEMORY_START, upper_size, MMAP_AVAILABLE),
        ];
        for (i, (base, length, kind)) in map.into_iter().enumerate() {
            let entry = Self::MMAP + i * MMAP_ENTRY_LEN;
            put(entry, &MMAP_ENTRY_SIZE_FIELD.to_le_bytes());
            put(entry + 4, &base.to_le_bytes());
            put(entry + 12, &length.to_le_bytes());
            put(entry + 20, &kind.to_le_bytes());
        }

        put(self.loader_name(), LOADER_NAME);
        put(self.cmdline_at(), self.cmdline.as_bytes());
        let mut string = self.cmdline_at() + self.cmdline.len() + 1;
        for (i, (module, range)) in self.modules.iter().zip(placed).enumerate() {
            let entry = Self::MODULES + i * MODULE_ENTRY_LEN;
            put(entry, &range.start.to_le_bytes());
            put(entry + 4, &range.end.to_le_bytes());
            put(entry + 8, &at(string).to_le_bytes());
            put(string, module.cmdline.as_bytes());
            string += module.cmdline.len() + 1;
        }
        block
    }
}

/// Finds the first Multiboot header with a valid checksum and checks its flags.
fn find_header(image: &[u8]) -> Result<Header, LoadError> {
    if image.is_empty() {
        return Err(LoadError::Empty);
    }
    if image.len() < HEADER_MIN_LEN {
        return Err(LoadError::TooSmall {
            len: image.len(),
            min: HEADER_MIN_LEN,
        });
    }
    let searched = image.get(..HEADER_SEARCH_LIMIT).unwrap_or(image);
    // QEMU skips a magic number with a bad checksum and keeps looking; we do the same, but
    // remember the first one so that the error can point at it.
    let mut first_bad = None;
    for offset in (0..searched.len()).step_by(HEADER_ALIGN) {
        // The whole mandatory part must lie in the searched window; past that, stop.
        let (Some(magic), Some(flags), Some(checksum)) = (
            read_u32(searched, offset),
            read_u32(searched, offset.saturating_add(HEADER_FLAGS)),
            read_u32(searched, offset.saturating_add(HEADER_CHECKSUM)),
        ) else {
            break;
        };
        if magic != HEADER_MAGIC {
            continue;
        }
        let sum = magic.wrapping_add(flags).wrapping_add(checksum);
        if sum != 0 {
            first_bad.get_or_insert(LoadError::BadChecksum {
                offset,
                flags,
                checksum,
                sum,
            });
            continue;
        }
        let unsupported = flags & FLAGS_REQUIRED_MASK & !FLAGS_REQUIRED_SUPPORTED;
        if unsupported != 0 {
            return Err(LoadError::UnsupportedFlags {
                offset,
                flags,
                unsupported,
            });
        }
        return Ok(Header { offset, flags });
    }
    Err(first_bad.unwrap_or(LoadError::NoHeader))
}

/// Reads one a.out-kludge address field of the header at `header_offset`.
fn kludge_field(image: &[u8], header_offset: usize, field: usize) -> Result<u32, LoadError> {
    header_offset
        .checked_add(field)
        .and_then(|offset| read_u32(image, offset))
        .ok_or(LoadError::KludgeTruncatedHeader {
            offset: header_offset,
            needed: HEADER_KLUDGE_LEN,
            len: image.len(),
        })
}

/// Describes the load of an a.out-kludge image: one contiguous run of file bytes placed so
/// that the header lands at `header_addr`, followed by a zeroed bss.
fn kludge_plan(image: &[u8], header_offset: usize) -> Result<LoadPlan<'_>, LoadError> {
    // Read the last field first: if it is there, they all are.
    let entry = kludge_field(image, header_offset, HEADER_ENTRY_ADDR)?;
    let header_addr = kludge_field(image, header_offset, HEADER_HEADER_ADDR)?;
    let load_addr = kludge_field(image, header_offset, HEADER_LOAD_ADDR)?;
    let load_end_addr = kludge_field(image, header_offset, HEADER_LOAD_END_ADDR)?;
    let bss_end_addr = kludge_field(image, header_offset, HEADER_BSS_END_ADDR)?;

    let distance = header_addr
        .checked_sub(load_addr)
        .ok_or(LoadError::KludgeHeaderBelowLoad {
            header_addr,
            load_addr,
        })?;
    // The header sits `distance` bytes into the load, so the load starts that far before it.
    let file_offset = usize::try_from(distance)
        .ok()
        .and_then(|distance| header_offset.checked_sub(distance))
        .ok_or(LoadError::KludgeLoadBeforeFile {
            offset: header_offset,
            header_addr,
            load_addr,
            distance,
        })?;
    let load_size = if load_end_addr == 0 {
        // 0 means "to the end of the file".
        len_u64(image.len().saturating_sub(file_offset))
    } else {
        let size =
            load_end_addr
                .checked_sub(load_addr)
                .ok_or(LoadError::KludgeLoadEndBelowLoad {
                    load_end_addr,
                    load_addr,
                })?;
        u64::from(size)
    };
    let data = usize::try_from(load_size)
        .ok()
        .and_then(|size| file_offset.checked_add(size))
        .and_then(|file_end| image.get(file_offset..file_end))
        .ok_or(LoadError::KludgeLoadPastEof {
            file_offset,
            size: load_size,
            len: image.len(),
        })?;
    let load_end = u64::from(load_addr).saturating_add(load_size);
    let mem_size = if bss_end_addr == 0 {
        // 0 means "no bss".
        load_size
    } else {
        let bss_end = u64::from(bss_end_addr);
        if bss_end < load_end {
            return Err(LoadError::KludgeBssEndBelowLoadEnd {
                bss_end_addr,
                load_end,
            });
        }
        bss_end.saturating_sub(u64::from(load_addr))
    };
    Ok(LoadPlan {
        segments: vec![Segment {
            region: Region::Kludge,
            addr: load_addr,
            data,
            mem_size,
        }],
        entry,
    })
}

/// Checks that `cmdline` can be stored as a C string in the space reserved for it.
fn check_cmdline(cmdline: &str) -> Result<(), LoadError> {
    if let Some(position) = cmdline.bytes().position(|byte| byte == 0) {
        return Err(LoadError::CmdlineContainsNul { position });
    }
    if cmdline.len() > CMDLINE_MAX_LEN {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline.len(),
            max: CMDLINE_MAX_LEN,
        });
    }
    Ok(())
}

/// Size of the RAM region at guest-physical 0, which must reach past 1 MiB.
fn ram_size(mem: &impl GuestMemoryBackend) -> Result<u64, LoadError> {
    let region = mem
        .find_region(GuestAddress(0))
        .ok_or(LoadError::NoRamAtZero)?;
    // The region contains address 0, so it starts there and its length is where RAM ends.
    let ram_size = region.len();
    if ram_size <= HIGH_MEMORY_START {
        return Err(LoadError::RamTooSmall { ram_size });
    }
    Ok(ram_size)
}

/// Whether two half-open ranges share at least one byte (empty ranges share none).
fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

/// Checks where every segment goes and returns the range the whole kernel occupies.
///
/// A segment must stay within the 32-bit address space and guest RAM, above page 0, clear of
/// the legacy hole below 1 MiB, and clear of the other segments. The entry point must be at
/// a byte loaded from the file. Also returns where each segment goes.
fn place(plan: &LoadPlan<'_>, ram_size: u64) -> Result<(Range<u32>, Vec<Range<u64>>), LoadError> {
    let legacy_hole = CONVENTIONAL_END..HIGH_MEMORY_START;
    let mut placed: Vec<(Region, Range<u64>)> = Vec::with_capacity(plan.segments.len());
    for segment in &plan.segments {
        let region = segment.region;
        let start = u64::from(segment.addr);
        // Parsers guarantee data.len() <= mem_size; taking the max keeps this safe regardless.
        let size = segment.mem_size.max(len_u64(segment.data.len()));
        let end = start.saturating_add(size);
        if end > ADDRESS_SPACE_LAST {
            return Err(LoadError::Wraps { region, start, end });
        }
        if end > ram_size {
            return Err(LoadError::OutsideRam {
                region,
                start,
                end,
                ram_size,
            });
        }
        let range = start..end;
        if overlaps(&range, &(0..LOWEST_LOAD_ADDR)) {
            return Err(LoadError::InFirstPage { region, start, end });
        }
        if overlaps(&range, &legacy_hole) {
            return Err(LoadError::OverlapsLegacyHole { region, start, end });
        }
        if let Some((other, other_range)) = placed.iter().find(|(_, other)| overlaps(&range, other))
        {
            return Err(LoadError::SegmentsOverlap {
                region,
                start,
                end,
                other: *other,
                other_start: other_range.start,
                other_end: other_range.end,
            });
        }
        placed.push((region, range));
    }

    // Every end was checked against ADDRESS_SPACE_LAST above, so these conversions succeed.
    let start = placed
        .iter()
        .map(|(_, range)| range.start)
        .min()
        .unwrap_or(0);
    let end = placed.iter().map(|(_, range)| range.end).max().unwrap_or(0);
    let kernel = u32::try_from(start).unwrap_or(u32::MAX)..u32::try_from(end).unwrap_or(u32::MAX);

    let entry = u64::from(plan.entry);
    let entry_loaded = plan.segments.iter().any(|segment| {
        let start = u64::from(segment.addr);
        (start..start.saturating_add(len_u64(segment.data.len()))).contains(&entry)
    });
    if !entry_loaded {
        return Err(LoadError::EntryNotLoaded {
            entry: plan.entry,
            start: kernel.start,
            end: kernel.end,
        });
    }
    Ok((kernel, placed.into_iter().map(|(_, range)| range).collect()))
}

/// Copies a segment's file bytes to guest RAM and zeroes the rest of it (the bss).
fn write_segment(mem: &impl GuestMemoryBackend, segment: &Segment<'_>) -> Result<(), LoadError> {
    let start = u64::from(segment.addr);
    write_bytes(mem, start, segment.data)?;
    let data_len = len_u64(segment.data.len());
    let mut addr = start.saturating_add(data_len);
    let mut left = segment.mem_size.saturating_sub(data_len);
    while left > 0 {
        let chunk = usize::try_from(left).map_or(ZERO_CHUNK, |left| left.min(ZERO_CHUNK));
        write_bytes(mem, addr, ZEROES.get(..chunk).unwrap_or(&ZEROES))?;
        addr = addr.saturating_add(len_u64(chunk));
        left = left.saturating_sub(len_u64(chunk));
    }
    Ok(())
}

/// Writes `bytes` at guest-physical `addr`, reporting any failure with its address.
fn write_bytes(mem: &impl GuestMemoryBackend, addr: u64, bytes: &[u8]) -> Result<(), LoadError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| LoadError::GuestWrite {
            addr,
            len: bytes.len(),
            source,
        })
}

/// A byte count as `u64` (lossless on every platform Rust supports).
fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// A byte count in whole KiB, as the MBI's 32-bit memory fields want it.
fn kib_u32(bytes: u64) -> u32 {
    u32::try_from(bytes / KIB).unwrap_or(u32::MAX)
}

/// A RAM size for messages: "64 MiB", "640 KiB" or "1000 bytes".
fn human_size(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

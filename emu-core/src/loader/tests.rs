//! Tests for the Multiboot loader, on synthetic images built by the small builders below.
//!
//! The expected MBI layout is spelled out here from the Multiboot spec rather than taken from
//! the implementation's constants, so a wrong constant there shows up as a failure here.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{load_multiboot, load_multiboot_with_modules, BootInfo, LoadError, Module, Region};

/// Guest RAM used by most tests: 64 MiB at guest-physical 0, like the emulator's default.
const RAM_SIZE: usize = 64 << 20;
/// Multiboot header magic.
const MB_MAGIC: u32 = 0x1BAD_B002;
/// Multiboot header flag bit 1: memory information wanted (what typical kernels set).
const MB_MEMINFO: u32 = 1 << 1;
/// Multiboot header flag bit 16: a.out kludge.
const MB_KLUDGE: u32 = 1 << 16;
/// EAX value at kernel entry.
const BOOT_MAGIC: u32 = 0x2BAD_B002;
/// Where the loader puts the MBI when that memory is free.
const MBI_ADDR: u32 = 0x9000;
/// Kernels are typically linked at 1 MiB.
const KERNEL_BASE: u32 = 0x10_0000;

/// Spec MBI offsets.
const MBI_FLAGS: u32 = 0;
/// Spec MBI offset of `mem_lower`.
const MBI_MEM_LOWER: u32 = 4;
/// Spec MBI offset of `mem_upper`.
const MBI_MEM_UPPER: u32 = 8;
/// Spec MBI offset of `cmdline`.
const MBI_CMDLINE: u32 = 16;
/// Spec MBI offset of `mods_count`.
const MBI_MODS_COUNT: u32 = 20;
const MBI_MODS_ADDR: u32 = 24;
/// Spec MBI offset of `mmap_length`.
const MBI_MMAP_LENGTH: u32 = 44;
/// Spec MBI offset of `mmap_addr`.
const MBI_MMAP_ADDR: u32 = 48;
/// Spec MBI offset of `boot_loader_name`.
const MBI_BOOT_LOADER_NAME: u32 = 64;
/// MBI flags we expect: MEM (0), CMDLINE (2), MMAP (6), LOADER_NAME (9).
const MBI_EXPECTED_FLAGS: u32 = (1 << 0) | (1 << 2) | (1 << 6) | (1 << 9);

/// ELF `p_type` of a loadable segment.
const PT_LOAD: u32 = 1;
/// ELF `p_type` of a note segment (ignored by the loader).
const PT_NOTE: u32 = 4;
/// ELF `p_flags`: executable.
const PF_X: u32 = 1;
/// ELF `p_flags`: writable.
const PF_W: u32 = 2;
/// ELF `p_flags`: readable.
const PF_R: u32 = 4;
/// Size of an ELF32 header.
const EHDR_LEN: usize = 52;
/// Size of an ELF32 program header.
const PHDR_LEN: usize = 32;

// ---------------------------------------------------------------- builders

/// Fresh 64 MiB guest RAM (an anonymous mmap, so cheap to create).
fn ram() -> GuestMemoryMmap {
    ram_of(RAM_SIZE)
}

/// Fresh guest RAM of `size` bytes at guest-physical 0.
fn ram_of(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("create guest RAM")
}

/// Reads `len` bytes of guest memory.
fn read(mem: &GuestMemoryMmap, addr: u32, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    mem.read_slice(&mut buf, GuestAddress(u64::from(addr)))
        .expect("read guest memory");
    buf
}

/// Reads a little-endian u32 from guest memory.
fn read_u32(mem: &GuestMemoryMmap, addr: u32) -> u32 {
    u32::from_le_bytes(read(mem, addr, 4).try_into().expect("4 bytes"))
}

/// Reads a little-endian u64 from guest memory.
fn read_u64(mem: &GuestMemoryMmap, addr: u32) -> u64 {
    u64::from_le_bytes(read(mem, addr, 8).try_into().expect("8 bytes"))
}

/// Reads a NUL-terminated string from guest memory.
fn read_cstr(mem: &GuestMemoryMmap, addr: u32) -> String {
    let mut bytes = Vec::new();
    for a in addr.. {
        match read(mem, a, 1)[0] {
            0 => break,
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).expect("UTF-8")
}

/// Fills guest memory with a pattern so that zeroing (or not touching) it is observable.
fn dirty(mem: &GuestMemoryMmap, addr: u32, len: usize) {
    mem.write_slice(&vec![0xAA; len], GuestAddress(u64::from(addr)))
        .expect("dirty guest memory");
}

/// A Multiboot header: magic, `flags`, checksum, then the `extra` fields (the a.out-kludge
/// addresses: header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr).
fn mb_header(flags: u32, extra: &[u32]) -> Vec<u8> {
    let checksum = 0u32.wrapping_sub(MB_MAGIC).wrapping_sub(flags);
    [MB_MAGIC, flags, checksum]
        .iter()
        .chain(extra)
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// One program header of an [`ElfImage`]; its bytes follow the program header table.
#[derive(Clone, Debug)]
struct Seg {
    p_type: u32,
    paddr: u32,
    vaddr: u32,
    data: Vec<u8>,
    memsz: u32,
    flags: u32,
}

impl Seg {
    /// A readable, executable `PT_LOAD` segment at `paddr` (= vaddr).
    fn load(paddr: u32, data: Vec<u8>, memsz: u32) -> Self {
        Seg {
            p_type: PT_LOAD,
            paddr,
            vaddr: paddr,
            data,
            memsz,
            flags: PF_R | PF_X,
        }
    }
}

/// An ELF32 builder. Layout: ELF header (52 bytes), Multiboot header at offset 52, program
/// header table, then each segment's bytes (4-aligned). Fields can be overridden to be wrong.
#[derive(Clone, Debug)]
struct ElfImage {
    class: u8,
    data_encoding: u8,
    e_type: u16,
    machine: u16,
    entry: u32,
    phentsize: u16,
    phoff: Option<u32>,
    phnum: Option<u16>,
    mb_flags: u32,
    mb_extra: Vec<u32>,
    segs: Vec<Seg>,
}

/// File offset of the Multiboot header in an [`ElfImage`].
const ELF_MB_HEADER_OFFSET: u32 = EHDR_LEN as u32;

impl ElfImage {
    /// A valid i386 executable with `segs`, entering at `entry`.
    fn new(entry: u32, segs: Vec<Seg>) -> Self {
        ElfImage {
            class: 1,
            data_encoding: 1,
            e_type: 2,
            machine: 3,
            entry,
            phentsize: PHDR_LEN as u16,
            phoff: None,
            phnum: None,
            mb_flags: MB_MEMINFO,
            mb_extra: Vec::new(),
            segs,
        }
    }

    /// The file bytes.
    fn build(&self) -> Vec<u8> {
        let header = mb_header(self.mb_flags, &self.mb_extra);
        let phoff = EHDR_LEN + header.len();
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF");
        out.extend_from_slice(&[self.class, self.data_encoding, 1]);
        out.resize(16, 0);
        out.extend_from_slice(&self.e_type.to_le_bytes());
        out.extend_from_slice(&self.machine.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // e_version
        out.extend_from_slice(&self.entry.to_le_bytes());
        out.extend_from_slice(&self.phoff.unwrap_or(phoff as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        out.extend_from_slice(&(EHDR_LEN as u16).to_le_bytes());
        out.extend_from_slice(&self.phentsize.to_le_bytes());
        let phnum = self.phnum.unwrap_or(self.segs.len() as u16);
        out.extend_from_slice(&phnum.to_le_bytes());
        out.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
        assert_eq!(out.len(), EHDR_LEN);
        out.extend_from_slice(&header);

        let mut data_offset = phoff + PHDR_LEN * self.segs.len();
        let mut offsets = Vec::new();
        for seg in &self.segs {
            offsets.push(data_offset);
            data_offset = (data_offset + seg.data.len()).next_multiple_of(4);
        }
        for (seg, &offset) in self.segs.iter().zip(&offsets) {
            for field in [
                seg.p_type,
                offset as u32,
                seg.vaddr,
                seg.paddr,
                seg.data.len() as u32,
                seg.memsz,
                seg.flags,
                0x1000, // p_align
            ] {
                out.extend_from_slice(&field.to_le_bytes());
            }
        }
        for (seg, &offset) in self.segs.iter().zip(&offsets) {
            out.resize(offset, 0);
            out.extend_from_slice(&seg.data);
        }
        out
    }
}

/// The a.out-kludge fields of a Multiboot header.
#[derive(Clone, Copy, Debug)]
struct Kludge {
    header_addr: u32,
    load_addr: u32,
    load_end_addr: u32,
    bss_end_addr: u32,
    entry_addr: u32,
}

impl Kludge {
    /// The fields in header order.
    fn fields(&self) -> [u32; 5] {
        [
            self.header_addr,
            self.load_addr,
            self.load_end_addr,
            self.bss_end_addr,
            self.entry_addr,
        ]
    }
}

/// An a.out-kludge image: `prefix` bytes of 0x90, the Multiboot header with `kludge`, `body`.
fn kludge_image(prefix: usize, kludge: Kludge, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x90; prefix];
    out.extend(mb_header(MB_MEMINFO | MB_KLUDGE, &kludge.fields()));
    out.extend_from_slice(body);
    out
}

/// A valid kludge image loaded at `load_addr`: header at file offset 0, then `code` (where the
/// entry is), then `bss` zeroed bytes in memory. Returns the image and its fields.
fn simple_kludge(load_addr: u32, code: &[u8], bss: u32) -> (Vec<u8>, Kludge) {
    let load_end = load_addr + 32 + code.len() as u32;
    let kludge = Kludge {
        header_addr: load_addr,
        load_addr,
        load_end_addr: load_end,
        bss_end_addr: if bss == 0 { 0 } else { load_end + bss },
        entry_addr: load_addr + 32,
    };
    (kludge_image(0, kludge, code), kludge)
}

/// A typical valid ELF kernel: text at 1 MiB and data + bss at 1 MiB + 8 KiB.
fn typical_elf() -> ElfImage {
    let text: Vec<u8> = (0..=255).collect();
    let mut data = Seg::load(KERNEL_BASE + 0x2000, vec![0x11; 16], 0x100);
    data.flags = PF_R | PF_W;
    ElfImage::new(
        KERNEL_BASE + 0x10,
        vec![Seg::load(KERNEL_BASE, text, 0x100), data],
    )
}

/// Loads into fresh 64 MiB RAM and returns the error, failing the test on success.
fn load_err(image: &[u8]) -> LoadError {
    load_multiboot(&ram(), image, "").expect_err("load should fail")
}

/// The error loading [`typical_elf`] with `change` made to it.
fn changed_elf_err(change: impl FnOnce(&mut ElfImage)) -> LoadError {
    let mut elf = typical_elf();
    change(&mut elf);
    load_err(&elf.build())
}

/// What must hold for every successful load, whatever the image.
fn check_invariants(info: &BootInfo) -> Result<(), TestCaseError> {
    prop_assert_eq!(info.eax, BOOT_MAGIC);
    prop_assert!(info.kernel.start >= 0x1000, "{:x?}", info);
    prop_assert!(info.kernel.end as usize <= RAM_SIZE, "{:x?}", info);
    prop_assert!(info.kernel.start <= info.kernel.end, "{:x?}", info);
    // The MBI is somewhere the kernel's span is not (its segments may leave gaps).
    prop_assert!(
        !info.kernel.contains(&info.ebx) || info.ebx >= MBI_ADDR,
        "{:x?}",
        info
    );
    prop_assert!(info.kernel.contains(&info.entry), "{:x?}", info);
    Ok(())
}

// ---------------------------------------------------------------- ELF

#[test]
fn elf_loads_segments_at_paddr_and_zeroes_bss() {
    let mem = ram();
    dirty(&mem, KERNEL_BASE + 0x2000, 0x200);
    let elf = typical_elf();
    let info = load_multiboot(&mem, &elf.build(), "").expect("load");
    assert_eq!(
        info,
        BootInfo {
            entry: KERNEL_BASE + 0x10,
            eax: BOOT_MAGIC,
            ebx: MBI_ADDR,
            kernel: KERNEL_BASE..KERNEL_BASE + 0x2100,
            modules: vec![],
        }
    );
    assert_eq!(read(&mem, KERNEL_BASE, 0x100), elf.segs[0].data);
    assert_eq!(read(&mem, KERNEL_BASE + 0x2000, 16), vec![0x11; 16]);
    assert_eq!(read(&mem, KERNEL_BASE + 0x2010, 0xF0), vec![0; 0xF0]);
    // Past p_memsz the loader must not write.
    assert_eq!(read(&mem, KERNEL_BASE + 0x2100, 0x100), vec![0xAA; 0x100]);
}

#[test]
fn elf_skips_non_load_and_empty_segments() {
    let mut note = Seg::load(0, vec![1, 2, 3], 3);
    note.p_type = PT_NOTE;
    // An empty PT_LOAD at address 0 would be rejected if it were not skipped.
    let empty = Seg::load(0, Vec::new(), 0);
    let elf = ElfImage::new(
        KERNEL_BASE,
        vec![note, empty, Seg::load(KERNEL_BASE, vec![0xF4], 1)],
    );
    let info = load_multiboot(&ram(), &elf.build(), "").expect("load");
    assert_eq!(info.kernel, KERNEL_BASE..KERNEL_BASE + 1);
}

#[test]
fn elf_bss_only_segment_may_have_any_file_offset() {
    let mut bss = Seg::load(KERNEL_BASE + 0x1000, Vec::new(), 0x1000);
    bss.flags = PF_R | PF_W;
    let elf = ElfImage::new(
        KERNEL_BASE,
        vec![Seg::load(KERNEL_BASE, vec![0xF4; 4], 4), bss],
    );
    let mut image = elf.build();
    // Point the bss segment's p_offset far past the end of the file.
    let p_offset = EHDR_LEN + 12 + PHDR_LEN + 4;
    image[p_offset..p_offset + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let info = load_multiboot(&ram(), &image, "").expect("load");
    assert_eq!(info.kernel, KERNEL_BASE..KERNEL_BASE + 0x2000);
}

#[test]
fn elf_higher_half_entry_is_translated_to_physical() {
    let mut text = Seg::load(KERNEL_BASE, vec![0x90; 0x20], 0x20);
    text.vaddr = 0xC010_0000;
    let elf = ElfImage::new(0xC010_0004, vec![text]);
    let info = load_multiboot(&ram(), &elf.build(), "").expect("load");
    assert_eq!(info.entry, KERNEL_BASE + 4);
}

#[test]
fn elf_entry_in_non_executable_segment_is_not_translated() {
    let mut data = Seg::load(KERNEL_BASE, vec![0x90; 0x20], 0x20);
    data.vaddr = 0xC010_0000;
    data.flags = PF_R | PF_W;
    let elf = ElfImage::new(0xC010_0004, vec![data]);
    assert!(matches!(
        load_err(&elf.build()),
        LoadError::EntryNotLoaded {
            entry: 0xC010_0004,
            ..
        }
    ));
}

#[test]
fn the_mbi_goes_where_the_kernel_is_not() {
    // The kernel of the issue: a segment at 0x8000..0xA86C, over the usual MBI place.
    let mem = ram();
    let elf = ElfImage::new(0x8000, vec![Seg::load(0x8000, vec![0xF4; 0x100], 0x286C)]);
    let info = load_multiboot(&mem, &elf.build(), "a command line").expect("load");
    assert_eq!(info.kernel, 0x8000..0xA86C);
    assert_eq!(
        info.ebx, 0xA870,
        "the first free 8-byte boundary after the kernel"
    );
    let cmdline = read_u32(&mem, info.ebx + MBI_CMDLINE);
    assert!(cmdline > 0xA86C);
    assert_eq!(read_cstr(&mem, cmdline), "a command line");
    assert_eq!(
        read(&mem, 0x8000, 2),
        vec![0xF4, 0xF4],
        "the kernel is intact"
    );

    // A kernel filling low memory: the MBI goes above the kernel at 1 MiB.
    let elf = ElfImage::new(
        0x1000,
        vec![
            Seg::load(0x1000, vec![0xF4; 0x10], 0x9_EC00),
            Seg::load(KERNEL_BASE, vec![0xF4; 0x10], 0x2000),
        ],
    );
    let info = load_multiboot(&mem, &elf.build(), "").expect("load");
    assert_eq!(info.ebx, KERNEL_BASE + 0x2000);
}

#[test]
fn modules_go_on_pages_after_the_kernel_with_their_strings() {
    let mem = ram();
    let (one, two) = (vec![0xAB; 5000], vec![0xCD; 10]);
    let modules = [
        Module {
            image: &one,
            cmdline: "initrd.img root=/dev/ram",
        },
        Module {
            image: &two,
            cmdline: "",
        },
    ];
    let info =
        load_multiboot_with_modules(&mem, &typical_elf().build(), "k", &modules).expect("load");
    let end = info.kernel.end.next_multiple_of(0x1000);
    assert_eq!(
        info.modules,
        vec![end..end + 5000, end + 0x2000..end + 0x2000 + 10]
    );
    let mbi = info.ebx;
    assert_eq!(read_u32(&mem, mbi + MBI_FLAGS), MBI_EXPECTED_FLAGS | 1 << 3);
    assert_eq!(read_u32(&mem, mbi + MBI_MODS_COUNT), 2);
    let list = read_u32(&mem, mbi + MBI_MODS_ADDR);
    assert_eq!(read_u32(&mem, list), end);
    assert_eq!(read_u32(&mem, list + 4), end + 5000);
    assert_eq!(
        read_cstr(&mem, read_u32(&mem, list + 8)),
        "initrd.img root=/dev/ram"
    );
    assert_eq!(read_cstr(&mem, read_u32(&mem, list + 24)), "");
    assert_eq!(read(&mem, end + 4999, 1), vec![0xAB]);
    assert_eq!(read(&mem, end + 0x2000, 10), vec![0xCD; 10]);
    assert_eq!(read_cstr(&mem, read_u32(&mem, mbi + MBI_CMDLINE)), "k");

    let huge = vec![0; 70 << 20];
    let too_big = [Module {
        image: &huge,
        cmdline: "big",
    }];
    let err = load_multiboot_with_modules(&mem, &typical_elf().build(), "", &too_big)
        .expect_err("does not fit");
    assert!(matches!(err, LoadError::NoRoom { .. }), "{err}");
}

// ---------------------------------------------------------------- MBI

#[test]
fn mbi_fields_read_back_from_guest_memory() {
    let mem = ram();
    let info = load_multiboot(&mem, &typical_elf().build(), "console=ttyS0 debug").expect("load");
    let mbi = info.ebx;
    assert_eq!(read_u32(&mem, mbi + MBI_FLAGS), MBI_EXPECTED_FLAGS);
    assert_eq!(read_u32(&mem, mbi + MBI_MEM_LOWER), 639);
    assert_eq!(read_u32(&mem, mbi + MBI_MEM_UPPER), 64512);
    assert_eq!(read_u32(&mem, mbi + MBI_MODS_COUNT), 0);

    let cmdline = read_u32(&mem, mbi + MBI_CMDLINE);
    assert_eq!(read_cstr(&mem, cmdline), "console=ttyS0 debug");
    let name = read_u32(&mem, mbi + MBI_BOOT_LOADER_NAME);
    assert_eq!(read_cstr(&mem, name), "popek");

    let mmap_length = read_u32(&mem, mbi + MBI_MMAP_LENGTH);
    let mmap_addr = read_u32(&mem, mbi + MBI_MMAP_ADDR);
    assert_eq!(mmap_length, 4 * 24);
    let mut entries = Vec::new();
    let mut entry = mmap_addr;
    while entry < mmap_addr + mmap_length {
        let size = read_u32(&mem, entry);
        assert_eq!(size, 20);
        entries.push((
            read_u64(&mem, entry + 4),
            read_u64(&mem, entry + 12),
            read_u32(&mem, entry + 20),
        ));
        // The spec's way to step: the size field does not count itself.
        entry += size + 4;
    }
    assert_eq!(
        entries,
        vec![
            (0, 0x9_FC00, 1),
            (0x9_FC00, 0x400, 2),
            (0xF_0000, 0x1_0000, 2),
            (0x10_0000, (64 << 20) - 0x10_0000, 1),
        ]
    );

    // With the kernel at 1 MiB, everything stays in low memory from 0x9000.
    assert_eq!(mbi, MBI_ADDR);
    for addr in [mmap_addr, cmdline, name] {
        assert!((MBI_ADDR..0x9_FC00).contains(&addr), "{addr:#x}");
    }
}

#[test]
fn mbi_memory_sizes_follow_guest_ram() {
    for (ram_size, mem_upper) in [(2 << 20, 1024), (32 << 20, 31744), (128 << 20, 130_048)] {
        let mem = ram_of(ram_size);
        let info = load_multiboot(&mem, &typical_elf().build(), "").expect("load");
        assert_eq!(read_u32(&mem, info.ebx + MBI_MEM_UPPER), mem_upper);
        let last_entry = read_u32(&mem, info.ebx + MBI_MMAP_ADDR) + 3 * 24;
        assert_eq!(read_u64(&mem, last_entry + 12), ram_size as u64 - 0x10_0000);
    }
}

#[test]
fn cmdline_of_maximum_length_is_accepted_and_empty_is_empty() {
    let mem = ram();
    let long = "x".repeat(4096);
    let info = load_multiboot(&mem, &typical_elf().build(), &long).expect("load");
    let cmdline = read_u32(&mem, info.ebx + MBI_CMDLINE);
    assert_eq!(read_cstr(&mem, cmdline), long);

    load_multiboot(&mem, &typical_elf().build(), "").expect("load");
    assert_eq!(read_cstr(&mem, cmdline), "");
}

// ---------------------------------------------------------------- a.out kludge

#[test]
fn kludge_loads_image_and_zeroes_bss() {
    let mem = ram();
    let code = [0xFA, 0xF4, 0xEB, 0xFD]; // cli; hlt; jmp $-1
    let (image, kludge) = simple_kludge(KERNEL_BASE, &code, 0x1000);
    dirty(&mem, kludge.load_end_addr, 0x1100);
    let info = load_multiboot(&mem, &image, "").expect("load");
    assert_eq!(
        info,
        BootInfo {
            entry: KERNEL_BASE + 32,
            eax: BOOT_MAGIC,
            ebx: MBI_ADDR,
            kernel: KERNEL_BASE..kludge.bss_end_addr,
            modules: vec![],
        }
    );
    assert_eq!(read(&mem, KERNEL_BASE, image.len()), image);
    assert_eq!(read(&mem, kludge.load_end_addr, 0x1000), vec![0; 0x1000]);
    assert_eq!(read(&mem, kludge.bss_end_addr, 0x100), vec![0xAA; 0x100]);
}

#[test]
fn kludge_header_later_in_file_with_zero_load_end_and_bss_end() {
    let mem = ram();
    // The header sits 0x40 bytes into the file, so it loads 0x40 bytes above load_addr.
    let kludge = Kludge {
        header_addr: KERNEL_BASE + 0x40,
        load_addr: KERNEL_BASE,
        load_end_addr: 0, // to the end of the file
        bss_end_addr: 0,  // no bss
        entry_addr: KERNEL_BASE,
    };
    let image = kludge_image(0x40, kludge, &[0xF4; 0x100]);
    let info = load_multiboot(&mem, &image, "").expect("load");
    assert_eq!(info.kernel, KERNEL_BASE..KERNEL_BASE + image.len() as u32);
    assert_eq!(read(&mem, KERNEL_BASE, image.len()), image);
}

#[test]
fn kludge_load_may_start_partway_into_the_file() {
    let mem = ram();
    // Header at file offset 0x40 but only 0x10 bytes above load_addr: the first 0x30 bytes
    // of the file are not loaded.
    let kludge = Kludge {
        header_addr: KERNEL_BASE + 0x10,
        load_addr: KERNEL_BASE,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: KERNEL_BASE,
    };
    let image = kludge_image(0x40, kludge, &[0xF4; 0x10]);
    let info = load_multiboot(&mem, &image, "").expect("load");
    assert_eq!(
        info.kernel,
        KERNEL_BASE..KERNEL_BASE + image.len() as u32 - 0x30
    );
    assert_eq!(read(&mem, KERNEL_BASE, image.len() - 0x30), image[0x30..]);
}

#[test]
fn kludge_takes_precedence_over_elf() {
    let mem = ram();
    let mut elf = typical_elf();
    elf.mb_flags |= MB_KLUDGE;
    let load_addr = 0x20_0000;
    elf.mb_extra = Kludge {
        header_addr: load_addr + ELF_MB_HEADER_OFFSET,
        load_addr,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: load_addr,
    }
    .fields()
    .to_vec();
    let image = elf.build();
    let info = load_multiboot(&mem, &image, "").expect("load");
    assert_eq!(info.entry, load_addr);
    assert_eq!(info.kernel, load_addr..load_addr + image.len() as u32);
    // The whole file, ELF header included, went to load_addr; the ELF segments did not load.
    assert_eq!(read(&mem, load_addr, image.len()), image);
    assert_eq!(read(&mem, KERNEL_BASE, 0x10), vec![0; 0x10]);
}

#[test]
fn kludge_lets_a_64_bit_elf_load_as_a_flat_binary() {
    let mut elf = typical_elf();
    elf.class = 2;
    elf.mb_flags |= MB_KLUDGE;
    elf.mb_extra = Kludge {
        header_addr: KERNEL_BASE + ELF_MB_HEADER_OFFSET,
        load_addr: KERNEL_BASE,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: KERNEL_BASE,
    }
    .fields()
    .to_vec();
    load_multiboot(&ram(), &elf.build(), "").expect("load");
}

// ---------------------------------------------------------------- header errors

#[test]
fn empty_and_tiny_files_are_rejected() {
    assert!(matches!(load_err(&[]), LoadError::Empty));
    assert!(matches!(
        load_err(&[0; 8]),
        LoadError::TooSmall { len: 8, min: 12 }
    ));
}

#[test]
fn missing_header_is_rejected() {
    let err = load_err(&[0; 16384]);
    assert!(matches!(err, LoadError::NoHeader));
    assert_eq!(
        err.to_string(),
        "not a Multiboot kernel: no Multiboot v1 header (magic 0x1BADB002) in the first 8192 bytes"
    );
}

#[test]
fn header_must_be_aligned_and_within_8192_bytes() {
    let header = mb_header(MB_MEMINFO, &[]);
    // Misaligned.
    let mut image = vec![0; 2];
    image.extend(&header);
    image.resize(64, 0);
    assert!(matches!(load_err(&image), LoadError::NoHeader));
    // Its last byte past 8192.
    let mut image = vec![0; 8192 - 8];
    image.extend(&header);
    assert!(matches!(load_err(&image), LoadError::NoHeader));
    // Exactly fitting in the window: found (and then it is neither ELF nor kludge).
    let mut image = vec![0; 8192 - 12];
    image.extend(&header);
    assert!(matches!(
        load_err(&image),
        LoadError::NotElfNorKludge { offset: 8180 }
    ));
}

#[test]
fn bad_checksum_is_rejected() {
    let mut image = mb_header(MB_MEMINFO, &[]);
    image[8] ^= 1;
    image.resize(64, 0);
    let err = load_err(&image);
    assert!(
        matches!(
            err,
            LoadError::BadChecksum {
                offset: 0,
                flags: MB_MEMINFO,
                sum: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_checksum_is_skipped_when_a_valid_header_follows() {
    let (good, _) = simple_kludge(KERNEL_BASE, &[0xF4], 0);
    let mut image = mb_header(MB_MEMINFO, &[]);
    image[8] ^= 1;
    // The good header is now at offset 12, so shift the addresses accordingly.
    let kludge = Kludge {
        header_addr: KERNEL_BASE + 12,
        load_addr: KERNEL_BASE,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: KERNEL_BASE + 12 + 32,
    };
    image.extend(kludge_image(0, kludge, &good[32..]));
    let info = load_multiboot(&ram(), &image, "").expect("load");
    assert_eq!(info.entry, KERNEL_BASE + 44);
}

#[test]
fn unsupported_required_flags_are_rejected_optional_ones_ignored() {
    let mut image = mb_header(MB_MEMINFO | (1 << 3), &[]);
    image.resize(64, 0);
    assert!(matches!(
        load_err(&image),
        LoadError::UnsupportedFlags {
            offset: 0,
            unsupported: 0x8,
            ..
        }
    ));

    // Bits 0, 1, 2 and unknown optional bits (17..31) are fine.
    let mut elf = typical_elf();
    elf.mb_flags = 0b111 | (1 << 20);
    load_multiboot(&ram(), &elf.build(), "").expect("load");
}

#[test]
fn neither_elf_nor_kludge_is_rejected() {
    let mut image = mb_header(MB_MEMINFO, &[]);
    image.resize(4096, 0);
    let err = load_err(&image);
    assert!(matches!(err, LoadError::NotElfNorKludge { offset: 0 }));
    assert!(err
        .to_string()
        .starts_with("neither an ELF32 file nor an a.out-kludge Multiboot image"));
}

// ---------------------------------------------------------------- ELF errors

#[test]
fn elf64_is_rejected_with_a_hint() {
    let err = changed_elf_err(|e| e.class = 2);
    assert!(matches!(err, LoadError::Elf64));
    assert!(err
        .to_string()
        .ends_with("is a 64-bit ELF; Multiboot v1 loads 32-bit ELF only (link with -m elf_i386)"));
}

#[test]
fn wrong_elf_identification_is_rejected() {
    assert!(matches!(
        changed_elf_err(|e| e.class = 0),
        LoadError::ElfBadClass { class: 0 }
    ));

    assert!(matches!(
        changed_elf_err(|e| e.data_encoding = 2),
        LoadError::ElfNotLittleEndian { data: 2 }
    ));

    assert!(matches!(
        changed_elf_err(|e| e.e_type = 3), // ET_DYN
        LoadError::ElfNotExecutable { e_type: 3 }
    ));

    assert!(matches!(
        changed_elf_err(|e| e.machine = 62), // EM_X86_64
        LoadError::ElfNotI386 { machine: 62 }
    ));

    assert!(matches!(
        changed_elf_err(|e| e.phentsize = 56),
        LoadError::ElfBadPhentsize { size: 56, .. }
    ));
}

#[test]
fn truncated_elf_header_is_rejected() {
    let mut image = b"\x7fELF\x01\x01\x01\x00".to_vec();
    image.extend(mb_header(MB_MEMINFO, &[]));
    assert!(matches!(
        load_err(&image),
        LoadError::ElfTruncatedHeader { len: 20, .. }
    ));
}

#[test]
fn truncated_program_header_table_is_rejected() {
    let mut elf = ElfImage::new(KERNEL_BASE, Vec::new());
    elf.phoff = Some(0x34);
    elf.phnum = Some(2);
    let mut image = elf.build();
    image.resize(100, 0);
    let err = load_err(&image);
    assert!(matches!(err, LoadError::ElfTruncatedPhdrs { .. }));
    assert_eq!(
        err.to_string(),
        "truncated ELF: program header table (offset 0x34, 2 x 32 bytes) extends past the end of \
         the 100-byte file"
    );

    // A huge e_phoff must not wrap around.
    elf.phoff = Some(u32::MAX);
    assert!(matches!(
        load_err(&elf.build()),
        LoadError::ElfTruncatedPhdrs { .. }
    ));
}

#[test]
fn segment_past_end_of_file_is_rejected() {
    let mut image = typical_elf().build();
    image.truncate(image.len() - 1);
    assert!(matches!(
        load_err(&image),
        LoadError::ElfSegmentPastEof { index: 1, .. }
    ));
}

#[test]
fn elf_without_loadable_segments_is_rejected() {
    let elf = ElfImage::new(KERNEL_BASE, Vec::new());
    assert!(matches!(
        load_err(&elf.build()),
        LoadError::ElfNoLoadSegments
    ));

    let mut note = Seg::load(KERNEL_BASE, vec![1], 1);
    note.p_type = PT_NOTE;
    let elf = ElfImage::new(KERNEL_BASE, vec![note]);
    assert!(matches!(
        load_err(&elf.build()),
        LoadError::ElfNoLoadSegments
    ));
}

#[test]
fn filesz_larger_than_memsz_is_rejected() {
    let elf = ElfImage::new(KERNEL_BASE, vec![Seg::load(KERNEL_BASE, vec![0; 16], 8)]);
    assert!(matches!(
        load_err(&elf.build()),
        LoadError::ElfFileszExceedsMemsz {
            index: 0,
            filesz: 16,
            memsz: 8
        }
    ));
}

// ---------------------------------------------------------------- placement errors

/// An ELF with one segment at `paddr` of `memsz` bytes (16 from the file), entering at it.
fn elf_at(paddr: u32, memsz: u32) -> Vec<u8> {
    ElfImage::new(paddr, vec![Seg::load(paddr, vec![0xF4; 16], memsz)]).build()
}

#[test]
fn segment_outside_ram_is_rejected() {
    let err = load_err(&elf_at(0x400_0000, 0x1000));
    assert!(matches!(
        err,
        LoadError::OutsideRam {
            region: Region::ElfSegment(0),
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "ELF segment 0 at 0x4000000..0x4001000 does not fit in guest RAM (64 MiB)"
    );
    // Straddling the end of RAM.
    assert!(matches!(
        load_err(&elf_at(0x3FF_F000, 0x2000)),
        LoadError::OutsideRam { .. }
    ));
}

#[test]
fn segment_wrapping_4_gib_is_rejected() {
    assert!(matches!(
        load_err(&elf_at(0xFFFF_F000, 0x2000)),
        LoadError::Wraps {
            start: 0xFFFF_F000,
            end: 0x1_0000_1000,
            ..
        }
    ));
}

#[test]
fn segment_in_first_page_is_rejected() {
    assert!(matches!(
        load_err(&elf_at(0x800, 0x100)),
        LoadError::InFirstPage { .. }
    ));
}

#[test]
fn segment_in_the_legacy_hole_is_rejected() {
    assert!(matches!(
        load_err(&elf_at(0xA_0000, 0x1000)),
        LoadError::OverlapsLegacyHole { .. }
    ));
    assert!(matches!(
        load_err(&elf_at(0x9_F000, 0x1000)),
        LoadError::OverlapsLegacyHole { .. }
    ));
}

#[test]
fn overlapping_segments_are_rejected() {
    let elf = ElfImage::new(
        KERNEL_BASE,
        vec![
            Seg::load(KERNEL_BASE, vec![0xF4; 16], 0x1000),
            Seg::load(KERNEL_BASE + 0x800, vec![0xF4; 16], 0x1000),
        ],
    );
    assert!(matches!(
        load_err(&elf.build()),
        LoadError::SegmentsOverlap {
            region: Region::ElfSegment(1),
            other: Region::ElfSegment(0),
            ..
        }
    ));
}

#[test]
fn entry_outside_the_loaded_bytes_is_rejected() {
    assert!(matches!(
        changed_elf_err(|e| e.entry = 0x20_0000),
        LoadError::EntryNotLoaded {
            entry: 0x20_0000,
            start: KERNEL_BASE,
            end: 0x10_2100,
        }
    ));
    // In the bss: zeroes, not code.
    assert!(matches!(
        changed_elf_err(|e| e.entry = KERNEL_BASE + 0x2080),
        LoadError::EntryNotLoaded { .. }
    ));
}

#[test]
fn failed_load_leaves_guest_memory_untouched() {
    let mem = ram();
    let elf = ElfImage::new(
        KERNEL_BASE,
        vec![
            Seg::load(KERNEL_BASE, vec![0xF4; 16], 16),
            Seg::load(0x400_0000, vec![0xF4; 16], 16),
        ],
    );
    load_multiboot(&mem, &elf.build(), "").expect_err("second segment is outside RAM");
    assert_eq!(read(&mem, KERNEL_BASE, 16), vec![0; 16]);
    assert_eq!(read(&mem, MBI_ADDR, 88), vec![0; 88]);
}

// ---------------------------------------------------------------- kludge errors

/// A kludge image at offset 0 with `fields`, 0x100 bytes of body.
fn kludge_err(kludge: Kludge) -> LoadError {
    load_err(&kludge_image(0, kludge, &[0xF4; 0x100]))
}

/// Valid kludge fields for a header at file offset 0 and a 0x100-byte body.
fn good_kludge() -> Kludge {
    Kludge {
        header_addr: KERNEL_BASE,
        load_addr: KERNEL_BASE,
        load_end_addr: KERNEL_BASE + 0x120,
        bss_end_addr: KERNEL_BASE + 0x1000,
        entry_addr: KERNEL_BASE + 0x20,
    }
}

#[test]
fn kludge_with_good_fields_loads() {
    let info =
        load_multiboot(&ram(), &kludge_image(0, good_kludge(), &[0xF4; 0x100]), "").expect("load");
    assert_eq!(info.kernel, KERNEL_BASE..KERNEL_BASE + 0x1000);
}

#[test]
fn truncated_kludge_header_is_rejected() {
    let image = mb_header(MB_MEMINFO | MB_KLUDGE, &[KERNEL_BASE, KERNEL_BASE]);
    assert!(matches!(
        load_err(&image),
        LoadError::KludgeTruncatedHeader {
            offset: 0,
            needed: 32,
            len: 20
        }
    ));
}

#[test]
fn kludge_address_errors_are_rejected() {
    let mut k = good_kludge();
    k.header_addr = KERNEL_BASE - 0x10;
    assert!(matches!(
        kludge_err(k),
        LoadError::KludgeHeaderBelowLoad { .. }
    ));

    let mut k = good_kludge();
    k.header_addr = KERNEL_BASE + 0x10; // but the header is at file offset 0
    assert!(matches!(
        kludge_err(k),
        LoadError::KludgeLoadBeforeFile {
            offset: 0,
            distance: 0x10,
            ..
        }
    ));

    let mut k = good_kludge();
    k.load_end_addr = KERNEL_BASE - 1;
    assert!(matches!(
        kludge_err(k),
        LoadError::KludgeLoadEndBelowLoad { .. }
    ));

    let mut k = good_kludge();
    k.bss_end_addr = KERNEL_BASE + 0x100;
    assert!(matches!(
        kludge_err(k),
        LoadError::KludgeBssEndBelowLoadEnd {
            load_end: 0x10_0120,
            ..
        }
    ));

    let mut k = good_kludge();
    k.load_end_addr = KERNEL_BASE + 0x10_0000;
    assert!(matches!(
        kludge_err(k),
        LoadError::KludgeLoadPastEof {
            file_offset: 0,
            size: 0x10_0000,
            len: 0x120
        }
    ));
}

#[test]
fn kludge_placement_errors_are_rejected() {
    let mut k = good_kludge();
    k.bss_end_addr = 0x400_1000;
    assert!(matches!(
        kludge_err(k),
        LoadError::OutsideRam {
            region: Region::Kludge,
            ..
        }
    ));

    // Over the usual MBI place is fine: the MBI moves.
    let (image, _) = simple_kludge(0x9000, &[0xF4], 0);
    let info = load_multiboot(&ram(), &image, "").expect("load");
    assert_ne!(info.ebx, MBI_ADDR);

    // Loading to the end of the file carries the image past 4 GiB.
    let top = Kludge {
        header_addr: 0xFFFF_FF00,
        load_addr: 0xFFFF_FF00,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: 0xFFFF_FF00,
    };
    assert!(matches!(
        load_err(&kludge_image(0, top, &[0xF4; 0x100])),
        LoadError::Wraps {
            region: Region::Kludge,
            start: 0xFFFF_FF00,
            end: 0x1_0000_0020,
        }
    ));
}

#[test]
fn kludge_entry_outside_the_loaded_bytes_is_rejected() {
    let mut k = good_kludge();
    k.entry_addr = KERNEL_BASE + 0x800; // in the bss
    assert!(matches!(kludge_err(k), LoadError::EntryNotLoaded { .. }));
    k.entry_addr = 0;
    assert!(matches!(kludge_err(k), LoadError::EntryNotLoaded { .. }));
}

// ---------------------------------------------------------------- cmdline and RAM errors

#[test]
fn bad_command_lines_are_rejected() {
    let image = typical_elf().build();
    assert!(matches!(
        load_multiboot(&ram(), &image, "a\0b").expect_err("NUL"),
        LoadError::CmdlineContainsNul { position: 1 }
    ));
    assert!(matches!(
        load_multiboot(&ram(), &image, &"x".repeat(4097)).expect_err("too long"),
        LoadError::CmdlineTooLong {
            len: 4097,
            max: 4096
        }
    ));
}

#[test]
fn unsuitable_guest_ram_is_rejected() {
    let image = typical_elf().build();
    let err = load_multiboot(&ram_of(1 << 20), &image, "").expect_err("1 MiB");
    assert!(matches!(
        err,
        LoadError::RamTooSmall {
            ram_size: 0x10_0000
        }
    ));
    assert_eq!(
        err.to_string(),
        "guest RAM is 1 MiB, but a Multiboot kernel needs more than 1 MiB"
    );

    let high_only =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 1 << 20)]).expect("create");
    assert!(matches!(
        load_multiboot(&high_only, &image, "").expect_err("no RAM at 0"),
        LoadError::NoRamAtZero
    ));
}

#[test]
fn error_messages_are_single_lines() {
    let mut images = vec![
        Vec::new(),
        vec![0; 8],
        vec![0; 100],
        elf_at(0x400_0000, 0x1000),
        elf_at(0xA_0000, 0x100),
        elf_at(0xFFFF_F000, 0x2000),
    ];
    let mut elf = typical_elf();
    elf.class = 2;
    images.push(elf.build());
    let mut k = good_kludge();
    k.header_addr = KERNEL_BASE + 0x10;
    images.push(kludge_image(0, k, &[0; 0x100]));
    for image in images {
        let message = load_err(&image).to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(!message.contains("  "), "{message}");
    }
}

// ---------------------------------------------------------------- properties

/// A test runner that records no regression files (this module owns no such directory).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Loads `image` into `mem`; the call must not panic, and a success must be sane.
fn load_checked(mem: &GuestMemoryMmap, image: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(info) = load_multiboot(mem, image, "root=/dev/sda") {
        check_invariants(&info)?;
    }
    Ok(())
}

/// Applies a byte mutation (index taken modulo the length) and then a truncation.
fn mutate(mut image: Vec<u8>, index: usize, value: u8, keep: usize) -> Vec<u8> {
    if !image.is_empty() {
        let index = index % image.len();
        image[index] = value;
    }
    image.truncate(keep);
    image
}

/// Random bytes as an image.
fn random_bytes_never_panic(cases: u32) {
    let mem = ram();
    let bytes = proptest::collection::vec(any::<u8>(), 0..10_000);
    runner(cases)
        .run(&bytes, |image| load_checked(&mem, &image))
        .expect("property");
}

/// A Multiboot header (after an ELF magic or not) followed by random bytes.
fn random_bytes_after_a_header_never_panic(cases: u32) {
    let mem = ram();
    let flags = prop_oneof![Just(MB_MEMINFO), Just(MB_MEMINFO | MB_KLUDGE), any::<u32>()];
    let elf_prefix = any::<bool>();
    let tail = proptest::collection::vec(any::<u8>(), 0..512);
    runner(cases)
        .run(&(flags, elf_prefix, tail), |(flags, elf_prefix, tail)| {
            let mut image = if elf_prefix {
                b"\x7fELF\x01\x01\x01\x00".to_vec()
            } else {
                Vec::new()
            };
            image.extend(mb_header(flags, &[]));
            image.extend(tail);
            load_checked(&mem, &image)
        })
        .expect("property");
}

/// A typical ELF kernel with one byte changed and the rest maybe cut off.
fn mutated_elf_never_panics(cases: u32) {
    let mem = ram();
    let image = typical_elf().build();
    let len = image.len();
    let mutation = (any::<usize>(), any::<u8>(), 0..=len);
    runner(cases)
        .run(&mutation, |(index, value, keep)| {
            load_checked(&mem, &mutate(image.clone(), index, value, keep))
        })
        .expect("property");
}

/// An a.out-kludge kernel with one byte changed and the rest maybe cut off.
fn mutated_kludge_never_panics(cases: u32) {
    let mem = ram();
    let (image, _) = simple_kludge(KERNEL_BASE, &[0xF4; 64], 0x1000);
    let len = image.len();
    let mutation = (any::<usize>(), any::<u8>(), 0..=len);
    runner(cases)
        .run(&mutation, |(index, value, keep)| {
            load_checked(&mem, &mutate(image.clone(), index, value, keep))
        })
        .expect("property");
}

/// A 32-bit value that is often near the interesting spots and sometimes anything.
fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        0u32..0x200,
        0x9000u32..0xB100,
        0x10_0000u32..0x10_0400,
        0x3FF_F000u32..0x400_1000,
        0xFFFF_F000u32..=u32::MAX,
        any::<u32>(),
    ]
}

/// An ELF kernel whose entry point, program header table and first segment are anything.
fn arbitrary_elf_header_fields_never_panic(cases: u32) {
    let mem = ram();
    let fields = (
        proptest::collection::vec(interesting_u32(), 6),
        interesting_u32(),
        interesting_u32(),
        0u16..4,
    );
    runner(cases)
        .run(&fields, |(seg, entry, phoff, phnum)| {
            let mut elf = typical_elf();
            elf.entry = entry;
            if phoff % 3 == 0 {
                elf.phoff = Some(phoff);
            }
            elf.phnum = Some(phnum);
            let mut image = elf.build();
            // Overwrite the first program header's offset, vaddr, paddr, filesz, memsz, flags.
            let phdr = EHDR_LEN + 12;
            for (i, value) in seg.iter().enumerate() {
                let at = phdr + 4 + 4 * i;
                image[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            load_checked(&mem, &image)
        })
        .expect("property");
}

/// An a.out-kludge kernel whose header addresses are anything.
fn arbitrary_kludge_fields_never_panic(cases: u32) {
    let mem = ram();
    let fields = (
        proptest::collection::vec(interesting_u32(), 5),
        0usize..0x80,
        0usize..0x400,
    );
    runner(cases)
        .run(&fields, |(f, prefix, body)| {
            let kludge = Kludge {
                header_addr: f[0],
                load_addr: f[1],
                load_end_addr: f[2],
                bss_end_addr: f[3],
                entry_addr: f[4],
            };
            load_checked(&mem, &kludge_image(prefix & !3, kludge, &vec![0xF4; body]))
        })
        .expect("property");
}

/// A property over malformed images, run for a number of cases.
type Property = fn(u32);

/// Every malformed-image property, with the cases a default run tries.
const PROPERTIES: [(&str, Property, u32); 6] = [
    ("random_bytes_never_panic", random_bytes_never_panic, 512),
    (
        "random_bytes_after_a_header_never_panic",
        random_bytes_after_a_header_never_panic,
        512,
    ),
    ("mutated_elf_never_panics", mutated_elf_never_panics, 2048),
    (
        "mutated_kludge_never_panics",
        mutated_kludge_never_panics,
        2048,
    ),
    (
        "arbitrary_elf_header_fields_never_panic",
        arbitrary_elf_header_fields_never_panic,
        2048,
    ),
    (
        "arbitrary_kludge_fields_never_panic",
        arbitrary_kludge_fields_never_panic,
        2048,
    ),
];

/// How many times more cases the at-scale run tries.
const AT_SCALE: u32 = 250;

#[test]
fn malformed_images_never_panic() {
    for (_, property, cases) in PROPERTIES {
        property(cases);
    }
}

#[test]
#[ignore = "fuzzing at scale: cargo test --release --workspace -- --ignored"]
fn malformed_images_at_scale_never_panic() {
    for (name, property, cases) in PROPERTIES {
        let start = std::time::Instant::now();
        property(cases * AT_SCALE);
        println!(
            "{name}: {} images in {:?}",
            cases * AT_SCALE,
            start.elapsed()
        );
    }
}

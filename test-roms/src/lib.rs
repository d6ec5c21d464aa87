//! Guest test ROMs for Popek, built from source and embedded in the crate.
//!
//! `build.rs` compiles every program in `guest/roms/` with the host's gcc,
//! so the `popek` command can run them with no files at hand. Most ROMs are
//! 32-bit Multiboot v1 ELF kernels (the kind `qemu-system-x86_64 -kernel`
//! boots); a few are raw 64 KiB BIOS images that start at the reset vector
//! in real mode (the kind `-bios` takes). [`Rom::boot`] says which. The ROMs
//! talk to the outside world only through COM1 (port 0x3F8) and end the run
//! by writing their exit status to the debug-exit port 0xF4.
//!
//! The sources live in `guest/`: `lib/` is the small library every ROM links
//! against, `roms/` holds one file per ROM, and `host-check/run.sh` is a
//! developer check that runs the `arith` ROM natively on the host CPU.

/// How a ROM's image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// An ELF32 i386 Multiboot v1 kernel: loaded by a Multiboot loader and
    /// entered in 32-bit protected mode with EAX = 0x2BADB002 and EBX
    /// pointing at the Multiboot information (QEMU's `-kernel`).
    Multiboot,
    /// A raw 64 KiB BIOS image: mapped at 0xF0000 and just below 4 GiB and
    /// entered at the reset vector F000:FFF0 in real mode (QEMU's `-bios`).
    Bios,
}

/// One embedded guest program.
#[derive(Debug)]
pub struct Rom {
    /// Short name, the source file's stem (e.g. `"hello"`).
    pub name: &'static str,
    /// One-line description, from the `rom:` comment heading its source.
    pub summary: &'static str,
    /// How [`Rom::image`] boots.
    pub boot: Boot,
    /// The image: an ELF file for [`Boot::Multiboot`], the raw 64 KiB ROM
    /// contents for [`Boot::Bios`].
    pub image: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/roms.rs"));

/// QEMU arguments for a machine the ROMs see as they see Popek's: 64 MiB, COM1 on
/// standard output, isa-debug-exit at port 0xF4 (so a ROM's exit status `v` becomes
/// QEMU's `(v << 1) | 1`), no default devices, no display, and no reboot (a triple
/// fault ends the run). The caller adds `-accel`, the machine, the guest and its
/// devices.
pub const QEMU_ARGS: &[&str] = &[
    "-m",
    "64",
    "-display",
    "none",
    "-no-reboot",
    "-nodefaults",
    "-serial",
    "stdio",
    "-device",
    "isa-debug-exit,iobase=0xf4,iosize=4",
];

/// Every embedded ROM, sorted by name.
pub fn all() -> &'static [Rom] {
    ROMS
}

/// The ROM called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Rom> {
    ROMS.iter().find(|rom| rom.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first four bytes of every ELF file.
    const ELF_MAGIC: &[u8] = b"\x7fELF";
    /// e_ident[EI_CLASS] value for 32-bit objects.
    const ELFCLASS32: u8 = 1;
    /// e_ident[EI_DATA] value for little-endian objects.
    const ELFDATA2LSB: u8 = 1;
    /// e_type value for executables.
    const ET_EXEC: u16 = 2;
    /// e_machine value for Intel 80386.
    const EM_386: u16 = 3;
    /// Multiboot v1 header magic.
    const MULTIBOOT_HEADER_MAGIC: u32 = 0x1BAD_B002;
    /// A Multiboot loader looks for the header only this far into the file.
    const MULTIBOOT_SEARCH_LIMIT: usize = 8192;
    /// Multiboot header flag: header_addr..entry_addr are valid (a.out kludge).
    const MULTIBOOT_AOUT_KLUDGE: u32 = 1 << 16;
    /// Size of a BIOS image.
    const BIOS_IMAGE_SIZE: usize = 64 * 1024;
    /// The reset vector F000:FFF0 is this far into a 64 KiB BIOS image.
    const RESET_VECTOR_OFFSET: usize = 0xFFF0;
    /// Opcode of JMP ptr16:16 (a far jump with an immediate target).
    const JMP_FAR: u8 = 0xEA;
    /// The real-mode segment of a 64 KiB BIOS mapped at 0xF0000.
    const BIOS_SEGMENT: u16 = 0xF000;

    fn u16_at(bytes: &[u8], offset: usize) -> u16 {
        u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    /// File offset of the Multiboot header: the first 4-byte aligned magic
    /// in the search window, as a loader would find it.
    fn multiboot_header(elf: &[u8]) -> Option<usize> {
        let window = elf.len().min(MULTIBOOT_SEARCH_LIMIT);
        (0..window.saturating_sub(11))
            .step_by(4)
            .find(|&offset| u32_at(elf, offset) == MULTIBOOT_HEADER_MAGIC)
    }

    /// The Multiboot ROMs: every one but the BIOS images.
    fn multiboot_roms() -> impl Iterator<Item = &'static Rom> {
        all().iter().filter(|rom| rom.boot == Boot::Multiboot)
    }

    #[test]
    fn every_multiboot_rom_is_an_elf32_i386_executable() {
        for rom in multiboot_roms() {
            let elf = rom.image;
            assert!(elf.len() > 52, "{}: too short for an ELF header", rom.name);
            assert_eq!(&elf[..4], ELF_MAGIC, "{}: not ELF", rom.name);
            assert_eq!(elf[4], ELFCLASS32, "{}: not ELF32", rom.name);
            assert_eq!(elf[5], ELFDATA2LSB, "{}: not little-endian", rom.name);
            assert_eq!(u16_at(elf, 16), ET_EXEC, "{}: not an executable", rom.name);
            assert_eq!(u16_at(elf, 18), EM_386, "{}: not i386", rom.name);
        }
    }

    #[test]
    fn every_multiboot_rom_has_a_valid_multiboot_header() {
        for rom in multiboot_roms() {
            let at = multiboot_header(rom.image)
                .unwrap_or_else(|| panic!("{}: no Multiboot header in 8 KiB", rom.name));
            let flags = u32_at(rom.image, at + 4);
            let checksum = u32_at(rom.image, at + 8);
            assert_eq!(
                MULTIBOOT_HEADER_MAGIC
                    .wrapping_add(flags)
                    .wrapping_add(checksum),
                0,
                "{}: bad Multiboot checksum",
                rom.name
            );
        }
    }

    #[test]
    fn aout_kludge_addresses_fit_the_file() {
        let rom = find("aout").expect("the aout ROM exists");
        let at = multiboot_header(rom.image).unwrap();
        assert_ne!(u32_at(rom.image, at + 4) & MULTIBOOT_AOUT_KLUDGE, 0);
        let [header, load, load_end, bss_end, entry] =
            [12, 16, 20, 24, 28].map(|field| u32_at(rom.image, at + field));
        assert!(load <= header && header < load_end && load_end <= bss_end);
        // The loader copies the file from (header offset - (header - load)).
        let image_offset = (at as u32)
            .checked_sub(header - load)
            .expect("load_addr lies before the start of the file");
        assert!(image_offset + (load_end - load) <= rom.image.len() as u32);
        assert!((load..load_end).contains(&entry));
    }

    #[test]
    fn every_bios_rom_is_64k_with_a_far_jump_at_the_reset_vector() {
        let bios: Vec<&Rom> = all().iter().filter(|r| r.boot == Boot::Bios).collect();
        assert!(!bios.is_empty(), "no BIOS ROM");
        for rom in bios {
            assert_eq!(rom.image.len(), BIOS_IMAGE_SIZE, "{}: size", rom.name);
            assert!(
                !rom.image.starts_with(ELF_MAGIC),
                "{}: an ELF file, not a raw image",
                rom.name
            );
            let reset = &rom.image[RESET_VECTOR_OFFSET..];
            assert_eq!(reset[0], JMP_FAR, "{}: no far jump at 0xFFF0", rom.name);
            // The target must be inside the image as seen below 1 MiB.
            let segment = u16_at(reset, 3);
            assert_eq!(
                segment, BIOS_SEGMENT,
                "{}: far jump leaves the BIOS",
                rom.name
            );
            assert!(
                usize::from(u16_at(reset, 1)) < RESET_VECTOR_OFFSET,
                "{}: far jump to the reset vector itself",
                rom.name
            );
        }
    }

    #[test]
    fn names_are_unique_and_sorted() {
        let names: Vec<&str> = all().iter().map(|rom| rom.name).collect();
        assert!(names.windows(2).all(|pair| pair[0] < pair[1]), "{names:?}");
        for expected in [
            "aout", "arith", "hello", "longmode", "loop", "realmode", "rings", "segments", "timer",
        ] {
            assert!(names.contains(&expected), "{expected} missing: {names:?}");
        }
    }

    #[test]
    fn every_rom_has_a_summary() {
        for rom in all() {
            assert!(!rom.summary.is_empty(), "{}", rom.name);
            assert!(!rom.summary.contains('\n'), "{}", rom.name);
        }
    }

    #[test]
    fn find_looks_roms_up_by_name() {
        for rom in all() {
            assert!(std::ptr::eq(find(rom.name).unwrap(), rom));
        }
        assert!(find("no-such-rom").is_none());
        assert!(find("").is_none());
    }
}

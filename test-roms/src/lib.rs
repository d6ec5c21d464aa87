//! Guest test ROMs for Popek, built from source and embedded in the crate.
//!
//! `build.rs` compiles every program in `guest/roms/` with the host's gcc
//! into a 32-bit Multiboot v1 ELF kernel (the kind `qemu-system-x86_64
//! -kernel` boots), so the `popek` command can run them with no files at
//! hand. The ROMs talk to the outside world only through COM1 (port 0x3F8)
//! and end the run by writing their exit status to the debug-exit port 0xF4.
//!
//! The sources live in `guest/`: `lib/` is the small library every ROM links
//! against, `roms/` holds one file per ROM, and `host-check/run.sh` is a
//! developer check that runs the `arith` ROM natively on the host CPU.

/// One embedded guest program.
#[derive(Debug)]
pub struct Rom {
    /// Short name, the source file's stem (e.g. `"hello"`).
    pub name: &'static str,
    /// One-line description, from the `rom:` comment heading its source.
    pub summary: &'static str,
    /// The ELF32 i386 Multiboot kernel image.
    pub elf: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/roms.rs"));

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

    #[test]
    fn every_rom_is_an_elf32_i386_executable() {
        for rom in all() {
            let elf = rom.elf;
            assert!(elf.len() > 52, "{}: too short for an ELF header", rom.name);
            assert_eq!(&elf[..4], ELF_MAGIC, "{}: not ELF", rom.name);
            assert_eq!(elf[4], ELFCLASS32, "{}: not ELF32", rom.name);
            assert_eq!(elf[5], ELFDATA2LSB, "{}: not little-endian", rom.name);
            assert_eq!(u16_at(elf, 16), ET_EXEC, "{}: not an executable", rom.name);
            assert_eq!(u16_at(elf, 18), EM_386, "{}: not i386", rom.name);
        }
    }

    #[test]
    fn every_rom_has_a_valid_multiboot_header() {
        for rom in all() {
            let at = multiboot_header(rom.elf)
                .unwrap_or_else(|| panic!("{}: no Multiboot header in 8 KiB", rom.name));
            let flags = u32_at(rom.elf, at + 4);
            let checksum = u32_at(rom.elf, at + 8);
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
        let at = multiboot_header(rom.elf).unwrap();
        assert_ne!(u32_at(rom.elf, at + 4) & MULTIBOOT_AOUT_KLUDGE, 0);
        let [header, load, load_end, bss_end, entry] =
            [12, 16, 20, 24, 28].map(|field| u32_at(rom.elf, at + field));
        assert!(load <= header && header < load_end && load_end <= bss_end);
        // The loader copies the file from (header offset - (header - load)).
        let image_offset = (at as u32)
            .checked_sub(header - load)
            .expect("load_addr lies before the start of the file");
        assert!(image_offset + (load_end - load) <= rom.elf.len() as u32);
        assert!((load..load_end).contains(&entry));
    }

    #[test]
    fn names_are_unique_and_sorted() {
        let names: Vec<&str> = all().iter().map(|rom| rom.name).collect();
        assert!(names.windows(2).all(|pair| pair[0] < pair[1]), "{names:?}");
        for expected in ["aout", "arith", "hello", "loop"] {
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

//! Finding ROMs: embedded by name, or files on disk.

use crate::cli::RomsArgs;
use crate::output::outln;
use anyhow::{anyhow, bail, Context, Result};
use emu_core::machine::BIOS_MAX;
use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::{FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use test_roms::Boot;

/// A ROM image, how it boots, and the name the Multiboot command line starts with.
pub struct RomImage {
    /// Shown as the first word of the guest's command line, as QEMU shows the path.
    pub name: String,
    /// The ELF file (Multiboot) or the raw BIOS image.
    pub image: Cow<'static, [u8]>,
    /// How the machine starts it.
    pub boot: Boot,
}

/// The file name `popek roms --extract` gives a ROM: `.elf` for Multiboot kernels,
/// `.bin` for BIOS images (QEMU takes the first with -kernel, the second with -bios).
pub fn file_name(rom: &test_roms::Rom) -> String {
    match rom.boot {
        Boot::Multiboot => format!("{}.elf", rom.name),
        Boot::Bios => format!("{}.bin", rom.name),
    }
}

/// Resolves `spec`: an existing file wins (a Multiboot kernel, or a BIOS image with
/// `bios`), then an embedded ROM name. A kernel file must fit in `ram` bytes of guest
/// RAM.
pub fn resolve(spec: &OsStr, bios: bool, ram: usize) -> Result<RomImage> {
    let path = Path::new(spec);
    let name = spec.to_string_lossy();
    if path.exists() || spec.as_bytes().contains(&b'/') {
        let (limit, what) = if bios {
            (BIOS_MAX, "a BIOS image can be (1 MiB)".to_string())
        } else {
            (ram, format!("the guest's RAM ({} MiB, --ram)", ram >> 20))
        };
        let image = read_limited(path, limit as u64).map_err(|e| match e {
            ReadError::TooLarge => anyhow!("ROM file `{name}` is larger than {what}"),
            ReadError::NotAFile(kind) => anyhow!("ROM file `{name}` is {kind}, not a regular file"),
            ReadError::Io(e) => anyhow!("cannot read ROM file `{name}`: {e}"),
        })?;
        let boot = if bios { Boot::Bios } else { Boot::Multiboot };
        return Ok(RomImage {
            name: name.into_owned(),
            image: Cow::Owned(image),
            boot,
        });
    }
    match test_roms::find(&name) {
        Some(rom) => Ok(RomImage {
            name: rom.name.to_string(),
            image: Cow::Borrowed(rom.image),
            boot: rom.boot,
        }),
        None => {
            let names: Vec<_> = test_roms::all().iter().map(|r| r.name).collect();
            bail!(
                "no embedded ROM named `{name}` and no such file (embedded ROMs: {})",
                names.join(", ")
            )
        }
    }
}

/// Why [`read_limited`] refused a file.
enum ReadError {
    /// It holds more bytes than the limit.
    TooLarge,
    /// It is not a regular file but this (a FIFO, a directory, ...).
    NotAFile(&'static str),
    /// Opening or reading it failed.
    Io(io::Error),
}

/// The contents of the regular file at `path`, at most `limit` bytes. Anything else (a
/// FIFO, a device such as /dev/zero, a directory) is refused without reading it:
/// opening is non-blocking, so a FIFO with no writer does not hang, and reading stops at
/// `limit + 1` bytes, so a file growing meanwhile cannot exhaust memory.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(kind_of(&meta.file_type())));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge);
    }
    let mut image = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut image)
        .map_err(ReadError::Io)?;
    if image.len() as u64 > limit {
        return Err(ReadError::TooLarge);
    }
    Ok(image)
}

/// What a file that is not a regular file is, for the error message.
fn kind_of(kind: &FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "something else"
    }
}

/// `popek roms`.
pub fn roms(args: &RomsArgs) -> Result<()> {
    match &args.extract {
        None => {
            for rom in test_roms::all() {
                let kind = match rom.boot {
                    Boot::Multiboot => "",
                    Boot::Bios => " (BIOS image, starts at the reset vector)",
                };
                outln!("{:<10} {}{kind}", rom.name, rom.summary)?;
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory `{}`", dir.display()))?;
            for rom in test_roms::all() {
                let path = dir.join(file_name(rom));
                std::fs::write(&path, rom.image)
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
                outln!("{}", path.display())?;
            }
        }
    }
    Ok(())
}

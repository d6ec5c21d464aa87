//! Finding ROMs: embedded by name, or files on disk.

use crate::cli::RomsArgs;
use anyhow::{bail, Context, Result};
use std::borrow::Cow;
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
/// `bios`), then an embedded ROM name.
pub fn resolve(spec: &str, bios: bool) -> Result<RomImage> {
    let path = Path::new(spec);
    if path.exists() || spec.contains('/') {
        let image =
            std::fs::read(path).with_context(|| format!("cannot read ROM file `{spec}`"))?;
        let boot = if bios { Boot::Bios } else { Boot::Multiboot };
        return Ok(RomImage {
            name: spec.to_string(),
            image: Cow::Owned(image),
            boot,
        });
    }
    match test_roms::find(spec) {
        Some(rom) => Ok(RomImage {
            name: rom.name.to_string(),
            image: Cow::Borrowed(rom.image),
            boot: rom.boot,
        }),
        None => {
            let names: Vec<_> = test_roms::all().iter().map(|r| r.name).collect();
            bail!(
                "no embedded ROM named `{spec}` and no such file (embedded ROMs: {})",
                names.join(", ")
            )
        }
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
                println!("{:<10} {}{kind}", rom.name, rom.summary);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory `{}`", dir.display()))?;
            for rom in test_roms::all() {
                let path = dir.join(file_name(rom));
                std::fs::write(&path, rom.image)
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

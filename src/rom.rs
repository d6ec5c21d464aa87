//! Finding ROMs: embedded by name, or files on disk.

use crate::cli::RomsArgs;
use anyhow::{bail, Context, Result};
use std::borrow::Cow;
use std::path::Path;

/// A ROM image and the name the Multiboot command line starts with.
pub struct RomImage {
    /// Shown as the first word of the guest's command line, as QEMU shows the path.
    pub name: String,
    /// The ELF bytes.
    pub image: Cow<'static, [u8]>,
}

/// Resolves `spec`: an existing file wins, then an embedded ROM name.
pub fn resolve(spec: &str) -> Result<RomImage> {
    let path = Path::new(spec);
    if path.exists() || spec.contains('/') {
        let image =
            std::fs::read(path).with_context(|| format!("cannot read ROM file `{spec}`"))?;
        return Ok(RomImage {
            name: spec.to_string(),
            image: Cow::Owned(image),
        });
    }
    match test_roms::find(spec) {
        Some(rom) => Ok(RomImage {
            name: rom.name.to_string(),
            image: Cow::Borrowed(rom.elf),
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
                println!("{:<10} {}", rom.name, rom.summary);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory `{}`", dir.display()))?;
            for rom in test_roms::all() {
                let path = dir.join(format!("{}.elf", rom.name));
                std::fs::write(&path, rom.elf)
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

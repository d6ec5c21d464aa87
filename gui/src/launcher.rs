//! What the GUI needs from the program that starts it: the ROMs, the engines, and a
//! way to boot a machine. `popek gui` supplies the same ROM lookup and engine choice
//! `popek run` uses, so the window reports a bad ROM in the CLI's words.

use emu_core::machine::Machine;
use std::ffi::OsStr;
use std::io::Write;

/// An embedded ROM, as `popek roms` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RomEntry {
    /// The name `popek run` takes.
    pub name: String,
    /// One line on what it does.
    pub summary: String,
}

/// An engine the GUI can offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// The name `popek run --engine` takes (with `+vtx` for the VT-x model).
    pub name: &'static str,
    /// The virtualization technique it stands for, in the words of the lectures.
    pub technique: &'static str,
    /// One sentence on how it runs the guest and what that costs.
    pub explanation: &'static str,
    /// Why it cannot run here, if it cannot (KVM without /dev/kvm).
    pub unavailable: Option<String>,
}

/// Boots machines for the GUI. Called from the GUI's worker threads, never from the
/// thread that draws the window.
pub trait Launcher: Send + Sync {
    /// The embedded ROMs.
    fn roms(&self) -> Vec<RomEntry>;
    /// Every engine there is, available here or not.
    fn engines(&self) -> Vec<EngineInfo>;
    /// A machine on engine `engine` (an [`EngineInfo::name`]) with `rom` loaded: an
    /// embedded ROM's name or a file's path, as `popek run` takes it. The guest's serial
    /// output goes to `serial`. The error is one line, as the CLI would print it.
    fn boot(
        &self,
        rom: &OsStr,
        engine: &str,
        serial: Box<dyn Write + Send>,
    ) -> Result<Machine, String>;
}

//! `popek gui`: the desktop GUI, with the ROM lookup and the engines `popek run` uses.

use crate::cli::{AssistArg, GuiArgs};
use crate::devices::{attach, DeviceArg};
use crate::engine::{self, EngineKind};
use crate::rom::resolve;
use crate::run::{boot_with, ram_bytes};
use anyhow::{anyhow, Result};
use emu_core::bt::virt::Virt;
use emu_core::interp::Assist;
use emu_core::machine::Machine;
use gui::{EngineInfo, Launcher, RomEntry};
use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// The engines the GUI offers, by name.
const INTERP: &str = "interp";
const INTERP_VTX: &str = "interp+vtx";
const KVM: &str = "kvm";
const BT: &str = "bt";

/// Boots machines as `popek run` does, with `ram_mib` MiB of RAM and the devices
/// `--device` and `--disk` ask for.
pub struct CliLauncher {
    pub ram_mib: usize,
    pub devices: Vec<DeviceArg>,
    pub disk: Option<PathBuf>,
}

impl Launcher for CliLauncher {
    fn roms(&self) -> Vec<RomEntry> {
        test_roms::all()
            .iter()
            .map(|rom| RomEntry {
                name: rom.name.to_string(),
                summary: rom.summary.to_string(),
            })
            .collect()
    }

    fn engines(&self) -> Vec<EngineInfo> {
        vec![
            EngineInfo {
                name: INTERP,
                technique: "emulation",
                explanation: "Emulation: Popek's interpreter decodes and executes every guest \
                    instruction in software; the guest's ring is a field of its CPU state and \
                    every device access is a function call to the VMM.",
                unavailable: None,
            },
            EngineInfo {
                name: INTERP_VTX,
                technique: "hardware assist (VT-x model)",
                explanation: "The interpreter playing VT-x: besides port I/O and MMIO, CPUID, \
                    MSR and control-register accesses and external interrupts leave the guest \
                    for the VMM, as they would on an Intel processor in VMX non-root mode.",
                unavailable: None,
            },
            EngineInfo {
                name: BT,
                technique: "binary translation",
                explanation: "Binary translation: guest code is translated block by block into \
                    host x86-64 code and cached; simple instructions are copied nearly as they \
                    are, everything else (sensitive instructions included) calls out to the \
                    interpreter for that one instruction.",
                unavailable: None,
            },
            EngineInfo {
                name: KVM,
                technique: "hardware assist",
                explanation: "Hardware assist through KVM: the guest runs on the host's \
                    processor in VMX non-root mode, in its own ring 0-3; only exits (port I/O, \
                    MMIO, HLT) reach Popek's VMM. It does not count instructions.",
                unavailable: accel_kvm::check_kvm().err().map(|e| e.to_string()),
            },
        ]
    }

    fn boot(
        &self,
        rom: &OsStr,
        engine: &str,
        serial: Box<dyn Write + Send>,
    ) -> Result<Machine, String> {
        self.try_boot(rom, engine, serial)
            .map_err(|e| format!("{e:#}"))
    }
}

impl CliLauncher {
    fn try_boot(
        &self,
        rom: &OsStr,
        engine: &str,
        serial: Box<dyn Write + Send>,
    ) -> Result<Machine> {
        if rom.is_empty() {
            return Err(anyhow!("no ROM given: pick an embedded one or give a file"));
        }
        let (kind, assist) = match engine {
            INTERP => (EngineKind::Interp, Assist::None),
            INTERP_VTX => (EngineKind::Interp, Assist::Vtx),
            BT => (EngineKind::Bt(Virt::None), Assist::None),
            KVM => {
                accel_kvm::check_kvm()?;
                (EngineKind::Kvm, Assist::None)
            }
            other => return Err(anyhow!("no engine named `{other}`")),
        };
        let rom = resolve(rom, false, ram_bytes(self.ram_mib)?)?;
        let mut deviations = Vec::new();
        let factory = engine::factory(kind, assist, &mut deviations);
        boot_with(&rom, "", &[], self.ram_mib, serial, factory, |machine| {
            attach(machine, &self.devices, self.disk.as_deref(), &|| {
                Box::new(std::io::sink())
            })
        })
    }
}

/// `popek gui`.
pub fn gui(args: &GuiArgs) -> Result<()> {
    ram_bytes(args.ram)?;
    let engine = match engine::choose(args.engine, args.assist.into())? {
        EngineKind::Kvm => KVM,
        EngineKind::Bt(_) => BT,
        EngineKind::Interp if args.assist == AssistArg::Vtx => INTERP_VTX,
        EngineKind::Interp => INTERP,
    };
    let options = gui::Options {
        rom: args.rom.clone(),
        engine: Some(engine.to_string()),
        run: args.run,
        compare: args.compare,
    };
    let launcher = Arc::new(CliLauncher {
        ram_mib: args.ram,
        devices: args.device.clone(),
        disk: args.disk.clone(),
    });
    gui::window::run(launcher, options, args.screenshot.clone()).map_err(|e| anyhow!(e))
}

#[cfg(test)]
#[path = "gui_tests.rs"]
mod tests;

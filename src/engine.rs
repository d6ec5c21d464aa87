//! Choosing the engine a machine runs on, and building it.

use crate::output::errln;
use accel_kvm::{CpuidDeviation, KvmEngine};
use anyhow::{bail, Result};
use clap::ValueEnum;
use emu_core::bt::virt::Virt;
use emu_core::engine::Engine;
use emu_core::interp::Assist;
use emu_core::machine::{bt_factory_with, interpreter_factory, EngineFactory};
use emu_core::memory::GuestRam;

/// What `--engine` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// The interpreter: counts every instruction, runs on any host.
    Interp,
    /// KVM: the guest runs on the host's processor through /dev/kvm.
    Kvm,
    /// KVM where /dev/kvm is usable, else the interpreter.
    Auto,
    /// The binary translator: guest blocks translated into host code.
    Bt,
}

/// The engine a machine runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// [`Interpreter`].
    Interp,
    /// [`KvmEngine`].
    Kvm,
    /// The binary translator, running the guest kernel as the [`Virt`] says.
    Bt(Virt),
}

/// The engine `choice` means on this host. `kvm` fails where KVM is not usable, with the
/// reason; `auto` says on stderr which engine it took and why. The VT-x model is the
/// interpreter's: with `--assist vtx` only the interpreter will do.
pub fn choose(choice: EngineChoice, assist: Assist) -> Result<EngineKind> {
    if assist == Assist::Vtx {
        return match choice {
            EngineChoice::Kvm => {
                bail!(
                    "--assist vtx models hardware assist in the interpreter; KVM is the real thing"
                )
            }
            EngineChoice::Auto => {
                errln!("popek: engine auto: using interp (--assist vtx is the interpreter's)")?;
                Ok(EngineKind::Interp)
            }
            EngineChoice::Interp => Ok(EngineKind::Interp),
            EngineChoice::Bt => {
                bail!("--assist vtx models hardware assist in the interpreter, not in bt")
            }
        };
    }
    match choice {
        EngineChoice::Interp => Ok(EngineKind::Interp),
        EngineChoice::Bt => Ok(EngineKind::Bt(Virt::None)),
        EngineChoice::Kvm => {
            accel_kvm::check_kvm()?;
            Ok(EngineKind::Kvm)
        }
        EngineChoice::Auto => Ok(match accel_kvm::check_kvm() {
            Ok(()) => {
                errln!("popek: engine auto: using kvm")?;
                EngineKind::Kvm
            }
            Err(why) => {
                errln!("popek: engine auto: using interp ({why})")?;
                EngineKind::Interp
            }
        }),
    }
}

/// Builds `kind` for a machine's RAM. A KVM engine's CPUID deviations (leaves the host's
/// KVM reports differently from Popek's table) are added to `deviations`, for the caller
/// to warn about.
pub fn factory(
    kind: EngineKind,
    assist: Assist,
    deviations: &mut Vec<CpuidDeviation>,
) -> Box<EngineFactory<'_>> {
    match kind {
        EngineKind::Interp => interpreter_factory(assist),
        EngineKind::Bt(virt) => bt_factory_with(virt),
        EngineKind::Kvm => Box::new(move |ram: &GuestRam| {
            let engine = KvmEngine::new(ram).map_err(|e| e.to_string())?;
            deviations.extend_from_slice(engine.cpuid_deviations());
            Ok(Box::new(engine) as Box<dyn Engine>)
        }),
    }
}

/// Builds the interpreter, with no hardware-assist model.
pub fn interpreter() -> Box<EngineFactory<'static>> {
    interpreter_factory(Assist::None)
}

/// Builds the engine called `name` (`monitor engine NAME` in gdb), or says why not.
pub fn by_name(name: &str, assist: Assist) -> Result<Box<EngineFactory<'static>>, String> {
    match name {
        "interp" => Ok(interpreter_factory(assist)),
        "kvm" => {
            accel_kvm::check_kvm().map_err(|e| e.to_string())?;
            Ok(Box::new(|ram: &GuestRam| {
                let engine = KvmEngine::new(ram).map_err(|e| e.to_string())?;
                Ok(Box::new(engine) as Box<dyn Engine>)
            }))
        }
        "bt" => Ok(bt_factory_with(Virt::None)),
        other => Err(format!(
            "no engine called `{other}` (engines: interp, bt, kvm)"
        )),
    }
}

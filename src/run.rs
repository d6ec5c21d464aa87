//! `popek run`: boot a ROM, run it, report how it ended.

use crate::cli::{RunArgs, EXIT_BUDGET, EXIT_GUEST_CRASH, EXIT_INTERRUPTED};
use crate::engine::{self, EngineKind};
use crate::output::{errln, GuestStdout, OutputError, RunOutput, Stream};
use crate::rom::{resolve, RomImage};
use crate::{ctrl_c, devices, gdb, stats};
use anyhow::{bail, Context, Result};
use emu_core::exit::StopReason;
use emu_core::machine::{EngineFactory, Machine};
use emu_core::trace::EventMask;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use test_roms::Boot;

/// Guest RAM of `ram_mib` MiB, in bytes, if popek-pc can have that much.
pub fn ram_bytes(ram_mib: usize) -> Result<usize> {
    if ram_mib == 0 || ram_mib > MAX_RAM_MIB {
        bail!("--ram {ram_mib}: guest RAM must be between 1 and {MAX_RAM_MIB} MiB");
    }
    Ok(ram_mib << 20)
}

/// The most guest RAM `--ram` accepts, in MiB.
const MAX_RAM_MIB: usize = 3072;

/// Builds a machine on the engine `engine` builds, with `rom` loaded.
pub fn boot(
    rom: &RomImage,
    append: &str,
    ram_mib: usize,
    serial: Box<dyn Write + Send>,
    engine: Box<EngineFactory<'_>>,
) -> Result<Machine> {
    boot_with(rom, append, ram_mib, serial, engine, |_| Ok(()))
}

/// [`boot`], with `attach` putting devices on the machine before the ROM is loaded.
pub fn boot_with(
    rom: &RomImage,
    append: &str,
    ram_mib: usize,
    serial: Box<dyn Write + Send>,
    engine: Box<EngineFactory<'_>>,
    attach: impl FnOnce(&mut Machine) -> Result<()>,
) -> Result<Machine> {
    let mut machine = Machine::new(ram_bytes(ram_mib)?, serial, engine)?;
    attach(&mut machine)?;
    let loaded = match rom.boot {
        Boot::Multiboot => {
            let cmdline = if append.is_empty() {
                rom.name.clone()
            } else {
                format!("{} {append}", rom.name)
            };
            machine.load_multiboot(&rom.image, &cmdline).map(|_| ())
        }
        Boot::Bios if !append.is_empty() => {
            bail!(
                "--append: {} is a BIOS image, which has no command line",
                rom.name
            )
        }
        Boot::Bios => machine.load_bios(&rom.image),
    };
    loaded.map_err(|e| anyhow::anyhow!("{}: {e}", rom.name))?;
    Ok(machine)
}

/// `popek run`.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let mask = match &args.trace {
        Some(list) => EventMask::parse(list).map_err(|e| anyhow::anyhow!("--trace: {e}"))?,
        None => EventMask::NONE,
    };
    let rom = resolve(&args.rom, args.bios, ram_bytes(args.ram)?)?;
    let kind = engine::choose(args.engine, args.assist.into())?;
    if kind == EngineKind::Kvm && args.max_instructions.is_some() {
        errln!(
            "popek: warning: --max-instructions is not enforced under kvm, \
             which cannot count instructions"
        )?;
    }
    let output = RunOutput::new();
    let mut deviations = Vec::new();
    let mut machine = boot_with(
        &rom,
        &args.append,
        args.ram,
        Box::new(GuestStdout::new(Arc::clone(&output))),
        engine::factory(kind, args.assist.into(), &mut deviations),
        |machine| {
            let console =
                || -> Box<dyn Write + Send> { Box::new(GuestStdout::new(Arc::clone(&output))) };
            devices::attach(machine, &args.device, args.disk.as_deref(), &console)
        },
    )?;
    // Deviations are this host's, the same on every run: worth saying when asked.
    if args.verbose || args.stats {
        for deviation in &deviations {
            errln!("popek: warning: {deviation}")?;
        }
    }
    machine.vmm.trace.set_mask(mask);
    if mask != EventMask::NONE {
        let output = Arc::clone(&output);
        machine.vmm.trace.set_sink(Some(Box::new(move |e| {
            if gdb::asked_for(mask, e) {
                output.trace(format_args!("trace: {e}\n"))
            }
        })));
    }
    if let Some(addr) = &args.gdb {
        return gdb::debug(machine, addr, args, &output);
    }
    let stop = machine.stop_request();
    output.connect(Arc::clone(&stop));
    ctrl_c::stop_on_ctrl_c(stop).context("cannot catch Ctrl-C")?;
    let outcome = machine.run(args.max_instructions.unwrap_or(u64::MAX));
    finish_output(&output, || {
        if args.stats {
            errln!("{}", stats::stats(&machine, &outcome).trim_end())?;
        }
        match devices::report(&machine, &outcome) {
            Some(report) => errln!("{}", report.trim_end()),
            None => Ok(()),
        }
    })?;
    match &outcome.stop {
        // Nothing but Ctrl-C and a failed output (reported above) stops this run.
        StopReason::Paused => {
            let rip = machine.cpu_state()?.rip;
            if machine.counts_instructions() {
                errln!(
                    "popek: interrupted (Ctrl-C) at rip {rip:#x} after {} instructions",
                    outcome.instructions
                )?;
            } else {
                errln!("popek: interrupted (Ctrl-C) at rip {rip:#x}")?;
            }
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        stop => ended(stop, outcome.instructions),
    }
}

/// Flushes what the guest printed last, then says what `report` says (statistics);
/// fails if the guest's output or stderr could not be written.
pub fn finish_output(
    output: &Arc<RunOutput>,
    report: impl FnOnce() -> Result<(), OutputError>,
) -> Result<()> {
    // What the guest printed last is out before anything else is said.
    let _ = GuestStdout::new(Arc::clone(output)).flush();
    let reported = report();
    if let Some(failure) = output.take_failure() {
        return Err(match failure.stream {
            Stream::Stdout => {
                anyhow::Error::new(failure).context("the guest's serial output is lost")
            }
            Stream::Stderr => failure.into(),
        });
    }
    Ok(reported?)
}

/// The exit status of a guest that ended with `stop` after `instructions`
/// instructions, saying on stderr how it ended unless it exited.
pub fn ended(stop: &StopReason, instructions: u64) -> Result<ExitCode> {
    Ok(match stop {
        StopReason::Exited(status) => ExitCode::from(u8::try_from(*status).unwrap_or(u8::MAX)),
        StopReason::Budget => {
            errln!("popek: {stop} after {instructions} instructions")?;
            ExitCode::from(EXIT_BUDGET)
        }
        other => {
            errln!("popek: {other}")?;
            ExitCode::from(EXIT_GUEST_CRASH)
        }
    })
}

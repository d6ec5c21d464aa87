//! `popek run`: boot a ROM, run it, report how it ended.

use crate::cli::{RunArgs, EXIT_BUDGET, EXIT_GUEST_CRASH};
use crate::engine::{self, EngineKind};
use crate::rom::{resolve, RomImage};
use anyhow::{bail, Result};
use emu_core::exit::{ExitReason, StopReason};
use emu_core::machine::{EngineFactory, Machine, RunOutcome};
use emu_core::trace::EventMask;
use std::io::Write;
use std::process::ExitCode;
use test_roms::Boot;

/// Builds a machine on the engine `engine` builds, with `rom` loaded.
pub fn boot(
    rom: &RomImage,
    append: &str,
    ram_mib: usize,
    serial: Box<dyn Write + Send>,
    engine: Box<EngineFactory<'_>>,
) -> Result<Machine> {
    if ram_mib == 0 || ram_mib > 3072 {
        bail!("--ram {ram_mib}: guest RAM must be between 1 and 3072 MiB");
    }
    let mut machine = Machine::new(ram_mib << 20, serial, engine)?;
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
    let rom = resolve(&args.rom, args.bios)?;
    let kind = engine::choose(args.engine, args.assist.into())?;
    if kind == EngineKind::Kvm && args.max_instructions.is_some() {
        eprintln!(
            "popek: warning: --max-instructions is not enforced under kvm, \
             which cannot count instructions"
        );
    }
    let mut deviations = Vec::new();
    let mut machine = boot(
        &rom,
        &args.append,
        args.ram,
        Box::new(std::io::stdout()),
        engine::factory(kind, args.assist.into(), &mut deviations),
    )?;
    for deviation in &deviations {
        eprintln!("popek: warning: {deviation}");
    }
    machine.vmm.trace.set_mask(mask);
    if mask != EventMask::NONE {
        machine
            .vmm
            .trace
            .set_sink(Some(Box::new(|e| eprintln!("trace: {e}"))));
    }
    let outcome = machine.run(args.max_instructions.unwrap_or(u64::MAX));
    let _ = std::io::stdout().flush();
    if args.stats {
        eprint!("{}", stats(&machine, &outcome));
    }
    Ok(match &outcome.stop {
        StopReason::Exited(status) => ExitCode::from(u8::try_from(*status).unwrap_or(u8::MAX)),
        StopReason::Budget => {
            eprintln!(
                "popek: {} after {} instructions",
                outcome.stop, outcome.instructions
            );
            ExitCode::from(EXIT_BUDGET)
        }
        other => {
            eprintln!("popek: {other}");
            ExitCode::from(EXIT_GUEST_CRASH)
        }
    })
}

/// The counters, as `--stats` prints them.
pub fn stats(machine: &Machine, outcome: &RunOutcome) -> String {
    let c = &machine.vmm.counters;
    let secs = outcome.wall.as_secs_f64();
    let mips = if secs > 0.0 {
        outcome.instructions as f64 / secs / 1e6
    } else {
        0.0
    };
    let mut s = format!(
        "engine        {}\nstop          {}\ninstructions  {}\nwall time     {:.3} ms\nhost cpu      {:.3} ms\nspeed         {:.1} MIPS\n",
        machine.engine_name(),
        first_line(&outcome.stop.to_string()),
        outcome.instructions,
        secs * 1e3,
        outcome.host_cpu.as_secs_f64() * 1e3,
        mips,
    );
    // KVM handles the VT-x-only exits in the kernel: only the interpreter's VT-x model
    // shows them, so they are listed apart.
    let list = |vtx_only: bool| -> Vec<String> {
        ExitReason::ALL
            .iter()
            .filter(|r| r.vtx_only() == vtx_only && c.exits(**r) > 0)
            .map(|r| format!("{} {}", r.name(), c.exits(*r)))
            .collect()
    };
    let mut exits = list(false).join(", ");
    let vtx = list(true);
    if !vtx.is_empty() {
        exits += &format!("; VT-x only: {}", vtx.join(", "));
    }
    s += &format!("exits         {} ({exits})\n", c.total_exits());
    for (port, n) in &c.ports {
        s += &format!(
            "port {port:#06x}   {} reads, {} writes\n",
            n.reads, n.writes
        );
    }
    for (addr, n) in &c.mmio {
        s += &format!("mmio {addr:#x}  {} reads, {} writes\n", n.reads, n.writes);
    }
    for (vector, n) in &c.exceptions {
        s += &format!("exception {vector:>3}  {n}\n");
    }
    for (vector, n) in &c.interrupts {
        s += &format!("interrupt {vector:#04x} {n}\n");
    }
    for ((from, to), n) in &c.ring_transitions {
        s += &format!("ring {from} -> {to}   {n}\n");
    }
    s
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

//! `popek bench`: the interpreter's and the binary translator's speed on the `loop` ROM,
//! beside QEMU TCG's on the same ROM file when QEMU is installed; then, where KVM is
//! usable, the KVM figures of [`kvm`].
//!
//! Last comes the nanobenchmark table of [`nano`] (alone with `--nano`).
//!
//! Each side runs the ROM twice, with N/10 and N iterations, and the speed comes from the
//! difference, so start-up (QEMU's is ~100 ms) cancels out and only the loop is timed.

mod guest;
mod kvm;
mod nano;
mod pv;

use crate::cli::BenchArgs;
use crate::engine;
use crate::output::outln;
use crate::rom::RomImage;
use crate::run::boot;
use anyhow::{bail, Context, Result};
use emu_core::exit::StopReason;
use std::borrow::Cow;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Instructions per loop iteration (`dec ecx; jnz`).
const INSNS_PER_ITER: u64 = 2;
/// The interpreter target of DESIGN.md, in MIPS.
const TARGET_MIPS: f64 = 150.0;
/// The interpreter target as a fraction of QEMU TCG.
const TARGET_QEMU_RATIO: f64 = 0.3;
/// The translator's targets: times the interpreter, and times QEMU TCG.
const TARGET_BT_INTERP: f64 = 5.0;
const TARGET_BT_QEMU: f64 = 2.0;
/// The translator runs this many times the iterations, to be timed as long.
const BT_ITERS_FACTOR: u64 = 10;
/// The start-up target: boot, print and exit, in milliseconds.
const TARGET_STARTUP_MS: f64 = 50.0;
/// QEMU's binary.
const QEMU: &str = "qemu-system-x86_64";
/// QEMU's `-accel` for its binary translator.
const QEMU_TCG: &str = "tcg";

fn rom(name: &str) -> Result<RomImage> {
    let rom = test_roms::find(name).with_context(|| format!("the `{name}` ROM is not embedded"))?;
    Ok(RomImage {
        name: rom.name.into(),
        image: Cow::Borrowed(rom.image),
        boot: rom.boot,
    })
}

/// One in-process run of `loop` with `iters` iterations (with paging on if `paging`),
/// on the interpreter or (`bt`) the translator: wall time.
fn popek_loop(iters: u64, paging: bool, bt: bool) -> Result<Duration> {
    popek_run(
        "loop",
        &format!("iters={iters} paging={}", paging as u8),
        bt,
    )
}

/// One in-process run of the ROM `name` with command line `append`, on the interpreter
/// or (`bt`) the translator: wall time.
fn popek_run(name: &str, append: &str, bt: bool) -> Result<Duration> {
    let make = if bt {
        emu_core::machine::bt_factory()
    } else {
        engine::interpreter()
    };
    let mut machine = boot(&rom(name)?, append, 64, Box::new(std::io::sink()), make)?;
    let outcome = machine.run(u64::MAX);
    if outcome.stop != StopReason::Exited(0) {
        bail!("the {name} ROM did not exit cleanly: {}", outcome.stop);
    }
    Ok(outcome.wall)
}

/// The compute ROMs, and the rounds the interpreter runs of each (the translator and
/// QEMU run ten times as many). `sieve64` is the sieve in 64-bit mode.
const COMPUTE: [(&str, u64); 3] = [("sieve", 20), ("crc32", 20), ("sieve64", 20)];
/// The translator's target on the compute ROMs, times QEMU TCG.
const TARGET_BT_QEMU_COMPUTE: f64 = 1.0;

/// Time per round of a compute ROM, from runs of n/10 and n rounds (start-up cancels).
fn per_round(n: u64, run: impl Fn(u64) -> Result<Duration>) -> Result<f64> {
    let (small, large) = (run(n / 10)?, run(n)?);
    Ok(large.saturating_sub(small).as_secs_f64().max(1e-9) / (n - n / 10) as f64)
}

/// The compute ROMs on the interpreter, the translator and (if `qemu`) QEMU TCG.
fn compute(qemu: bool) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("popek-bench-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (name, rounds) in COMPUTE {
        let popek = |bt: bool| move |r: u64| popek_run(name, &format!("rounds={r}"), bt);
        let interp = per_round(rounds, popek(false))?;
        let bt = per_round(rounds * BT_ITERS_FACTOR, popek(true))?;
        outln!(
            "{name}: bt {:.1} x the interpreter (target >= {TARGET_BT_INTERP}: {})",
            interp / bt,
            verdict(interp / bt >= TARGET_BT_INTERP)
        )?;
        if qemu {
            let elf = dir.join(format!("{name}.elf"));
            std::fs::write(&elf, rom(name)?.image.as_ref())?;
            let tcg = per_round(rounds * BT_ITERS_FACTOR, |r| {
                qemu_run(QEMU_TCG, &elf, &format!("rounds={r}"))
            })?;
            outln!(
                "{name}: bt {:.2} x QEMU TCG on the same ROM file, interpreter {:.2} x (bt target >= {TARGET_BT_QEMU_COMPUTE}: {})",
                tcg / bt,
                tcg / interp,
                verdict(tcg / bt >= TARGET_BT_QEMU_COMPUTE)
            )?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// QEMU booting a Multiboot kernel file on devices like popek-pc's (COM1 on stdout,
/// isa-debug-exit at 0xF4), with accelerator `accel` ("tcg" or "kvm") and command line
/// `append`.
fn qemu_command(accel: &str, kernel: &Path, append: &str) -> Command {
    let mut qemu = Command::new(QEMU);
    qemu.args(["-accel", accel])
        .args(test_roms::QEMU_ARGS)
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", append]);
    qemu
}

/// Fails unless QEMU ended with the guest's debug-exit write of 0.
fn qemu_exited_cleanly(status: ExitStatus) -> Result<()> {
    // isa-debug-exit: status (v << 1) | 1, so a clean exit (v = 0) is 1.
    if status.code() != Some(1) {
        bail!("{QEMU} did not exit cleanly: {status}");
    }
    Ok(())
}

/// One QEMU run of a Multiboot kernel file (see [`qemu_command`]): wall time including
/// QEMU's start-up.
fn qemu_run(accel: &str, kernel: &Path, append: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = qemu_command(accel, kernel, append)
        .output()
        .with_context(|| format!("cannot run {QEMU}"))?;
    let wall = start.elapsed();
    qemu_exited_cleanly(out.status)?;
    Ok(wall)
}

/// MIPS from two timed runs of N/10 and N iterations.
fn mips_from(iters: u64, small: Duration, large: Duration) -> f64 {
    let insns = (iters - iters / 10) * INSNS_PER_ITER;
    let secs = large.saturating_sub(small).as_secs_f64().max(1e-9);
    insns as f64 / secs / 1e6
}

fn qemu_installed() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `popek bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    if args.nano {
        return nano::bench(args);
    }
    if args.iters < 1000 {
        bail!("--iters {}: use at least 1000 iterations", args.iters);
    }
    let n = args.iters;
    outln!(
        "loop ROM: {n} iterations of `dec ecx; jnz` ({} instructions)",
        n * INSNS_PER_ITER
    )?;

    // Start-up is what a user waits for: a whole `popek run hello` process, best of five.
    let exe = std::env::current_exe().context("cannot find the popek executable")?;
    let startup = (0..5)
        .map(|_| -> Result<Duration> {
            let t = Instant::now();
            let out = Command::new(&exe).args(["run", "hello"]).output()?;
            if !out.status.success() {
                bail!("`popek run hello` failed: {}", out.status);
            }
            Ok(t.elapsed())
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .min()
        .unwrap_or_default();
    let startup_ms = startup.as_secs_f64() * 1e3;
    outln!(
        "start-up (`popek run hello`, whole process): {startup_ms:.1} ms (target < {TARGET_STARTUP_MS} ms: {})",
        verdict(startup_ms < TARGET_STARTUP_MS)
    )?;

    let interp = mips_from(
        n,
        popek_loop(n / 10, false, false)?,
        popek_loop(n, false, false)?,
    );
    outln!(
        "interpreter: {interp:.0} MIPS (target >= {TARGET_MIPS}: {})",
        verdict(interp >= TARGET_MIPS)
    )?;
    let paged = mips_from(
        n,
        popek_loop(n / 10, true, false)?,
        popek_loop(n, true, false)?,
    );
    outln!(
        "interpreter with paging on: {paged:.0} MIPS = {:.2} x paging off (target: the same speed)",
        paged / interp
    )?;
    let nb = n * BT_ITERS_FACTOR;
    let bt = mips_from(
        nb,
        popek_loop(nb / 10, false, true)?,
        popek_loop(nb, false, true)?,
    );
    outln!(
        "bt:          {bt:.0} MIPS = {:.1} x the interpreter (target >= {TARGET_BT_INTERP}: {})",
        bt / interp,
        verdict(bt / interp >= TARGET_BT_INTERP)
    )?;

    let qemu = !args.no_qemu && qemu_installed();
    if !args.no_qemu && !qemu {
        outln!("QEMU: not measured ({QEMU} is not installed)")?;
    }
    if qemu {
        qemu_tcg(n, interp, bt)?;
    }
    compute(qemu)?;
    if !args.no_kvm {
        kvm::bench(qemu)?;
    }
    pv::bench(!args.no_kvm)?;
    nano::bench(args)
}

/// QEMU TCG's speed on the `loop` ROM file, `n` iterations, against the interpreter's
/// `interp` MIPS and the translator's `bt`.
fn qemu_tcg(n: u64, interp: f64, bt: f64) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("popek-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let elf = dir.join("loop.elf");
    std::fs::write(
        &elf,
        test_roms::find("loop").map(|r| r.image).unwrap_or_default(),
    )?;
    let qemu_loop = |iters: u64| qemu_run(QEMU_TCG, &elf, &format!("iters={iters}"));
    let qemu = mips_from(n, qemu_loop(n / 10)?, qemu_loop(n)?);
    let _ = std::fs::remove_dir_all(&dir);
    let ratio = interp / qemu;
    outln!("QEMU TCG:    {qemu:.0} MIPS on the same ROM file")?;
    outln!(
        "ratio:       {ratio:.2} x QEMU TCG (target >= {TARGET_QEMU_RATIO}: {})",
        verdict(ratio >= TARGET_QEMU_RATIO)
    )?;
    let ratio = bt / qemu;
    outln!(
        "bt ratio:    {ratio:.2} x QEMU TCG (target >= {TARGET_BT_QEMU}: {})",
        verdict(ratio >= TARGET_BT_QEMU)
    )?;
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

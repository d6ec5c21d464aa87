//! `popek bench`'s KVM figures, where /dev/kvm is usable:
//! - compute speed in ring 3 under Popek's KVM engine, in 64-bit long mode and in 32-bit
//!   protected mode, against the same loop run natively by this process (hardware
//!   assistance should cost ring-3 code nothing; PVM runs 64-bit ring 3 natively but
//!   emulates the 32-bit guest);
//! - compute speed in ring 0, in both modes (the same on a KVM with hardware
//!   virtualization, far lower where KVM emulates the guest, as PVM does);
//! - the cost of one port-I/O exit round trip (guest OUT → VMM → guest) in each ring of
//!   the 32-bit guest, under Popek's engine and, when QEMU is installed, under
//!   `qemu-system-x86_64 -accel kvm` running the same image files (QEMU triple-faults
//!   the 64-bit guest's SYSCALL on PVM).
//!
//! Every figure comes from the difference of two runs, with N/10 and N iterations, so
//! start-up cancels out; N grows until that difference is long enough to time.

use super::guest::{loop_image, Body, Mode, Ring, COMPUTE_INSNS, START_MARKER, UNCLAIMED_PORT};
use super::{qemu_command, qemu_exited_cleanly, verdict, QEMU};
use crate::engine::{self, EngineKind};
use crate::output::outln;
use anyhow::{bail, Context, Result};
use emu_core::exit::StopReason;
use emu_core::interp::Assist;
use emu_core::machine::Machine;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Ring-3 code under KVM against native, the target of DESIGN.md. It is checked on the
/// 64-bit guest: that is the ring-3 code PVM runs on the processor.
const TARGET_NATIVE_RATIO: f64 = 0.9;
/// Guest RAM of the benchmark machines: the images need 1 MiB and a bit.
const RAM: usize = 64 << 20;
/// The first N tried, and by how much N grows until the runs are long enough.
const FIRST_ITERS: u32 = 10_000;
const GROWTH: u32 = 8;
/// How long the difference of two of Popek's runs must be: far above the host's timer
/// and scheduling noise.
const MIN_SPAN: Duration = Duration::from_millis(200);
/// How long the difference of two QEMU runs is made, from Popek's speed.
const QEMU_SPAN: Duration = Duration::from_secs(1);
/// QEMU's `-accel` for KVM.
const QEMU_KVM: &str = "kvm";

/// Seconds per iteration of a loop, from runs of N/10 and N iterations (`run` times
/// one run of that many), with N grown until their difference is at least [`MIN_SPAN`]
/// (or N reaches the largest count the guests' 32-bit counter holds).
pub(super) fn per_iteration(run: impl FnMut(u32) -> Result<Duration>) -> Result<f64> {
    per_iteration_from(FIRST_ITERS, MIN_SPAN, run)
}

/// [`per_iteration`] starting at N = `first` and growing N until the difference is at
/// least `min_span` (a zero `min_span`: N = `first` only).
pub(super) fn per_iteration_from(
    first: u32,
    min_span: Duration,
    mut run: impl FnMut(u32) -> Result<Duration>,
) -> Result<f64> {
    let mut n = first;
    loop {
        let span = run(n)?.saturating_sub(run(n / 10)?);
        if span >= min_span || n == u32::MAX {
            return Ok(span.as_secs_f64() / f64::from(n - n / 10));
        }
        n = n.saturating_mul(GROWTH);
    }
}

/// One run of the loop guest under Popek's KVM engine: the run's wall time (not the
/// machine's set-up).
fn popek_kvm(mode: Mode, ring: Ring, body: Body, iterations: u32) -> Result<Duration> {
    popek_run(EngineKind::Kvm, mode, ring, body, iterations)
}

/// One run of the loop guest under one of Popek's engines: the run's wall time (not
/// the machine's set-up).
pub(super) fn popek_run(
    kind: EngineKind,
    mode: Mode,
    ring: Ring,
    body: Body,
    iterations: u32,
) -> Result<Duration> {
    let mut machine = Machine::new(
        RAM,
        Box::new(std::io::sink()),
        engine::factory(kind, Assist::None, &mut Vec::new()),
    )?;
    machine.load_multiboot(&loop_image(mode, ring, body, iterations), "bench")?;
    let outcome = machine.run(u64::MAX);
    if outcome.stop != StopReason::Exited(0) {
        bail!(
            "the ring-{} loop did not exit cleanly under {kind:?}: {}",
            ring.level(),
            outcome.stop
        );
    }
    Ok(outcome.wall)
}

/// The same loop (`dec ecx; jnz`) run natively by this process.
fn native(iterations: u32) -> Duration {
    let start = Instant::now();
    // SAFETY: the loop only counts ECX down to zero: no memory access, no stack, and the
    // flags it changes are declared clobbered by default (no `preserves_flags`).
    unsafe {
        std::arch::asm!(
            "2:",
            "dec {n:e}",
            "jnz 2b",
            n = inout(reg) iterations => _,
            options(nomem, nostack),
        );
    }
    start.elapsed()
}

/// Million instructions per second of a compute loop that takes `secs` an iteration.
fn mips(secs_per_iter: f64) -> f64 {
    COMPUTE_INSNS as f64 / secs_per_iter / 1e6
}

/// Below this fraction of native speed, guest code cannot be running on the processor:
/// the host's KVM emulates it (as PVM does with ring 0, and with 32-bit guests: it cannot
/// run them without paging, and PVM has paging only in long mode).
const EMULATED_BELOW: f64 = 0.1;

/// A speed `ratio` to native, to two significant digits.
fn ratio_text(ratio: f64) -> String {
    if ratio >= EMULATED_BELOW {
        format!("{ratio:.2}")
    } else {
        format!("{ratio:.1e}")
    }
}

/// Says what a speed `ratio` to native below [`EMULATED_BELOW`] means.
fn emulation_note(ratio: f64) -> Result<()> {
    if ratio < EMULATED_BELOW {
        outln!(
            "  (this host's KVM emulates the guest's code instead of running it, as PVM \
             does with ring 0 and with 32-bit guests)"
        )?;
    }
    Ok(())
}

/// The port-I/O exit round trip in `ring` under Popek's engine: an iteration of the loop
/// with an OUT, less one without.
struct ExitCost {
    ring: Ring,
    /// Seconds an iteration of the compute loop takes (the loop's own cost).
    compute: f64,
    /// Seconds an iteration with an OUT takes.
    with_out: f64,
}

impl ExitCost {
    /// Microseconds an exit takes when an iteration with an OUT takes `with_out` seconds.
    fn micros(&self, with_out: f64) -> f64 {
        (with_out - self.compute) * 1e6
    }
}

/// Seconds an iteration of the compute loop takes in `mode` and `ring` under Popek's KVM
/// engine, printed as MIPS and against `native` (seconds an iteration natively), with
/// the verdict on [`TARGET_NATIVE_RATIO`] if `target`.
fn compute(mode: Mode, ring: Ring, native: f64, target: bool) -> Result<f64> {
    let secs = per_iteration(|n| popek_kvm(mode, ring, Body::Compute, n))?;
    let ratio = native / secs;
    let verdict = if target {
        format!(
            " (target >= {TARGET_NATIVE_RATIO}: {})",
            verdict(ratio >= TARGET_NATIVE_RATIO)
        )
    } else {
        String::new()
    };
    outln!(
        "KVM ring-{} ({}-bit): {:.1} MIPS = {} x native{verdict}",
        ring.level(),
        mode.bits(),
        mips(secs),
        ratio_text(ratio)
    )?;
    emulation_note(ratio)?;
    Ok(secs)
}

/// `popek bench`'s KVM part; `qemu` says whether QEMU is there to compare with.
pub fn bench(qemu: bool) -> Result<()> {
    if let Err(why) = accel_kvm::check_kvm() {
        outln!("KVM: not measured ({why})")?;
        return Ok(());
    }
    let native = per_iteration(|n| Ok(native(n)))?;
    outln!(
        "native: {:.0} MIPS (the guests' loop, run by this process)",
        mips(native)
    )?;
    compute(Mode::Long, Ring::User, native, true)?;
    let user = compute(Mode::Protected, Ring::User, native, false)?;
    compute(Mode::Long, Ring::Kernel, native, false)?;
    let kernel = compute(Mode::Protected, Ring::Kernel, native, false)?;
    outln!(
        "KVM port-I/O exit round trip (32-bit guest, OUT to the unclaimed port \
         {UNCLAIMED_PORT:#x}, the loop's own cost subtracted):"
    )?;
    let mut costs = Vec::new();
    for (ring, compute) in [(Ring::User, user), (Ring::Kernel, kernel)] {
        let cost = ExitCost {
            ring,
            compute,
            with_out: per_iteration(|n| popek_kvm(Mode::Protected, ring, Body::PortIo, n))?,
        };
        outln!(
            "  ring {}, Popek's KVM engine: {:.2} µs",
            ring.level(),
            cost.micros(cost.with_out)
        )?;
        costs.push(cost);
    }
    if qemu {
        qemu_exits(&costs)?;
    }
    Ok(())
}

/// One run of an image file under QEMU with KVM: the time from the guest's
/// [`START_MARKER`] on COM1 to QEMU's exit. That leaves out QEMU's start-up and its
/// firmware, which take seconds where KVM emulates them and vary by a tenth of a second,
/// more than the exits measured.
fn qemu_kvm(file: &Path) -> Result<Duration> {
    let mut qemu = qemu_command(QEMU_KVM, file, "")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {QEMU}"))?;
    let mut marker = [0u8];
    qemu.stdout
        .take()
        .context("QEMU's piped stdout")?
        .read_exact(&mut marker)
        .context("QEMU ended before the guest started its loop")?;
    let start = Instant::now();
    if marker[0] != START_MARKER {
        bail!("the guest printed {:#04x}, not its start marker", marker[0]);
    }
    let status = qemu.wait().with_context(|| format!("waiting for {QEMU}"))?;
    let elapsed = start.elapsed();
    qemu_exited_cleanly(status)?;
    Ok(elapsed)
}

/// The port-I/O exit round trips under QEMU with KVM, on image files of the guests
/// [`bench`] ran. The loop's own cost is Popek's figure: it runs inside KVM, whichever
/// VMM is behind it.
fn qemu_exits(costs: &[ExitCost]) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("popek-bench-kvm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = costs.iter().try_for_each(|c| {
        // Enough iterations for QEMU_SPAN at Popek's speed: QEMU's should be similar.
        let n = (QEMU_SPAN.as_secs_f64() / c.with_out)
            .clamp(f64::from(FIRST_ITERS), f64::from(u32::MAX)) as u32;
        let [small, large] = [n / 10, n].map(|iterations| {
            let file = dir.join(format!("ring{}-out-{iterations}.img", c.ring.level()));
            std::fs::write(
                &file,
                loop_image(Mode::Protected, c.ring, Body::PortIo, iterations),
            )?;
            qemu_kvm(&file)
        });
        let span = large?.saturating_sub(small?);
        let qemu = c.micros(span.as_secs_f64() / f64::from(n - n / 10));
        let popek = c.micros(c.with_out);
        outln!(
            "  ring {}, qemu-system-x86_64 -accel kvm (same image): {qemu:.2} µs \
             (Popek's is {:.2} x that; target <= 1: {})",
            c.ring.level(),
            popek / qemu,
            verdict(popek <= qemu)
        )?;
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

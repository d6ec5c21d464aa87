//! `popek bench`'s nanobenchmark table, after Adams and Agesen's comparison of software
//! and hardware virtualization (ASPLOS 2006): host nanoseconds per guest operation (a
//! system call round trip, a port IN, call/ret, a page fault, a divide-by-zero fault, a
//! PTE modification, a CR3 write) under each of Popek's techniques.
//!
//! The `nano` ROM runs `iters=N` of one `op=NAME` in a tight loop. Each cell comes from
//! runs of N/10 and N iterations, each the best of three (the guest's set-up cancels,
//! as in [`super::kvm`]), less the same for `op=none`, the loop alone. The clock is the
//! host's: the guest's RDTSC counts instructions under the interpreter and the
//! translator, so it could not compare techniques (see the ROM's header).

use super::kvm::per_iteration_from;
use super::rom;
use crate::cli::BenchArgs;
use crate::engine::{self, EngineKind};
use crate::output::outln;
use crate::run::boot;
use anyhow::{bail, Result};
use emu_core::bt::virt::Virt;
use emu_core::exit::StopReason;
use emu_core::interp::Assist;
use std::time::Duration;

/// The rows: the ROM's `op=` names, in the order of Adams and Agesen's table.
const OPS: [&str; 7] = [
    "syscall",
    "in",
    "callret",
    "pagefault",
    "divzero",
    "ptemod",
    "cr3write",
];
/// The ROM's empty loop, subtracted from every row.
const EMPTY: &str = "none";
/// The first N tried, and how long the difference of the N and N/10 runs must grow
/// before it is timed: above the host's timer and scheduling noise, yet short enough
/// that KVM, where it emulates the guest (PVM: about a microsecond an instruction),
/// runs small counts.
const FIRST_ITERS: u32 = 1000;
const MIN_SPAN: Duration = Duration::from_millis(100);
/// Runs of each count, of which the shortest is taken.
const REPEATS: usize = 3;
/// Guest RAM: the ROM needs its image and the low 4 MiB it maps.
const RAM_MIB: usize = 64;

/// One column: a technique, as `popek run` selects it.
struct Column {
    /// The header, as the GUI names engines.
    label: &'static str,
    kind: EngineKind,
    assist: Assist,
}

const COLUMNS: [Column; 4] = [
    Column {
        label: "interp",
        kind: EngineKind::Interp,
        assist: Assist::None,
    },
    Column {
        label: "bt",
        kind: EngineKind::Bt(Virt::None),
        assist: Assist::None,
    },
    Column {
        label: "bt+full",
        kind: EngineKind::Bt(Virt::Full),
        assist: Assist::None,
    },
    Column {
        label: "interp+vtx",
        kind: EngineKind::Interp,
        assist: Assist::Vtx,
    },
];
const KVM: Column = Column {
    label: "kvm",
    kind: EngineKind::Kvm,
    assist: Assist::None,
};

/// One run of the `nano` ROM, `iters` of `op`, under `column`: the run's wall time.
fn run(column: &Column, op: &str, iters: u32) -> Result<Duration> {
    let mut deviations = Vec::new();
    let factory = engine::factory(column.kind, column.assist, &mut deviations);
    let append = format!("op={op} iters={iters}");
    let mut machine = boot(
        &rom("nano")?,
        &append,
        RAM_MIB,
        Box::new(std::io::sink()),
        factory,
    )?;
    let outcome = machine.run(u64::MAX);
    if outcome.stop != StopReason::Exited(0) {
        bail!("`nano {append}` under {}: {}", column.label, outcome.stop);
    }
    Ok(outcome.wall)
}

/// The shortest of [`REPEATS`] runs (see [`run`]): what other processes on the host add
/// to a run is never negative, so the least disturbed run is the best estimate.
fn best_of(column: &Column, op: &str, iters: u32) -> Result<Duration> {
    (0..REPEATS)
        .map(|_| run(column, op, iters))
        .try_fold(Duration::MAX, |best, t| Ok(best.min(t?)))
}

/// Nanoseconds per operation under `column`, one per [`OPS`] row; `iters` fixes N,
/// else N grows from [`FIRST_ITERS`] until each run is long enough.
fn measure(column: &Column, iters: Option<u32>) -> Result<Vec<f64>> {
    let (first, span) = iters.map_or((FIRST_ITERS, MIN_SPAN), |n| (n, Duration::ZERO));
    let per_op = |op: &str| per_iteration_from(first, span, |n| best_of(column, op, n));
    let empty = per_op(EMPTY)?;
    OPS.iter()
        .map(|op| Ok((per_op(op)? - empty) * 1e9))
        .collect()
}

/// `popek bench`'s nanobenchmark part: the table, with the KVM column unless `--no-kvm`
/// (left out, with the reason, where KVM is not usable or cannot run the ROM).
pub fn bench(args: &BenchArgs) -> Result<()> {
    if args.nano_iters.is_some_and(|n| n < 10) {
        bail!("--nano-iters: use at least 10 iterations");
    }
    let mut columns: Vec<&Column> = COLUMNS.iter().collect();
    let mut note = None;
    if !args.no_kvm {
        // One iteration first: this host's KVM may not run the ROM at all (PVM has no
        // 32-bit paging), and a failed run must not end the benchmark.
        match accel_kvm::check_kvm() {
            Err(why) => note = Some(format!("kvm: not measured ({why})")),
            Ok(()) => match run(&KVM, EMPTY, 1) {
                Ok(_) => columns.push(&KVM),
                Err(why) => {
                    note = Some(format!(
                        "kvm: not measured ({why}: this host's KVM cannot run the ROM; \
                         PVM, for one, has no 32-bit paging)"
                    ))
                }
            },
        }
    }
    let cells = columns
        .iter()
        .map(|c| measure(c, args.nano_iters))
        .collect::<Result<Vec<_>>>()?;
    outln!(
        "nanobenchmarks (the nano ROM): host ns per operation, the loop's own cost \
         subtracted{}",
        args.nano_iters
            .map_or(String::new(), |n| format!(", {n} iterations"))
    )?;
    let header: String = columns.iter().map(|c| format!("{:>12}", c.label)).collect();
    outln!("  {:<10}{header}", "operation")?;
    for (row, op) in OPS.iter().enumerate() {
        let line: String = cells.iter().map(|c| format!("{:>12.1}", c[row])).collect();
        outln!("  {op:<10}{line}")?;
    }
    if let Some(note) = note {
        outln!("  {note}")?;
    }
    Ok(())
}

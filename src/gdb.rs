//! `popek run --gdb`: the machine on a thread of its own, debugged by gdb through the
//! control plane (the `popek-gdb` crate).

use crate::cli::{RunArgs, EXIT_INTERRUPTED};
use crate::engine;
use crate::output::{errln, RunOutput};
use crate::run::{ended, finish_output};
use anyhow::{anyhow, bail, Context, Result};
use emu_core::machine::{Machine, MachineHandle};
use emu_core::trace::{Event, EventMask};
use popek_gdb::{Ended, EngineChooser};
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

/// What the trace records for `monitor trace`, besides what `--trace` asked for.
const MONITOR_TRACE: EventMask = EventMask::RINGS.union(EventMask::EXITS);

/// Whether `--trace` with `mask` asked to see `event` (under `--gdb` the trace also
/// records ring changes and exits for `monitor trace`).
pub fn asked_for(mask: EventMask, event: &Event) -> bool {
    mask.contains(event.kind.mask())
}

/// Runs `machine` under gdb, listening on `addr`, until the guest ends or gdb kills
/// it; the exit status is the one `popek run` gives the same end.
pub fn debug(
    mut machine: Machine,
    addr: &str,
    args: &RunArgs,
    output: &Arc<RunOutput>,
) -> Result<ExitCode> {
    if args.stats {
        bail!("--stats does not go with --gdb: gdb's `monitor counters` shows the counters");
    }
    let listener =
        TcpListener::bind(addr).with_context(|| format!("--gdb {addr}: cannot listen there"))?;
    let local = listener.local_addr()?;
    let mask = machine.vmm.trace.mask();
    machine.vmm.trace.set_mask(mask.union(MONITOR_TRACE));
    let assist = args.assist.into();
    let engines: Arc<EngineChooser> = Arc::new(move |name| engine::by_name(name, assist));
    let (handle, thread) = MachineHandle::spawn(machine, args.max_instructions)?;
    errln!("popek: waiting for gdb on {local} (in gdb: target remote {local})")?;
    let served = popek_gdb::serve(
        &listener,
        &handle,
        engines,
        args.gdb_disconnect.into(),
        |line| {
            let _ = errln!("popek: {line}");
        },
    );
    // The machine thread ends with the last handle, and gives the machine back.
    drop(handle);
    let machine = thread
        .join()
        .map_err(|_| anyhow!("the machine thread panicked"))?;
    finish_output(output, || Ok(()))?;
    match served? {
        Ended::Killed => Ok(ExitCode::from(EXIT_INTERRUPTED)),
        Ended::Finished(stop) => ended(&stop, machine.instructions_retired()),
    }
}

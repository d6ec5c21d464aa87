//! `popek bench`'s hypercall figures: the round trip of one hypercall (guest calls a
//! stub of its hypercall page → VMM → guest), beside the trap it replaces, a port-I/O
//! exit, on each engine. Both in a 32-bit ring-0 loop, the loop's own cost subtracted,
//! measured as [`super::kvm`] measures (two runs, N/10 and N iterations).
//!
//! What a para-virtualized guest saves is the number of VMM entries (one
//! `HC_CONSOLE_WRITE` a line where `rings` takes two port exits a byte: see
//! `popek run rings-pv --stats`); what one entry costs is this table.

use super::guest::{Body, Mode, Ring};
use super::kvm::{per_iteration, popek_run};
use crate::engine::EngineKind;
use crate::output::outln;
use anyhow::Result;
use emu_core::bt::virt::Virt;

/// The hypercall and port-I/O round trips under `kind`.
fn engine_row(kind: EngineKind, label: &str) -> Result<()> {
    let run = |body| per_iteration(|n| popek_run(kind, Mode::Protected, Ring::Kernel, body, n));
    let compute = run(Body::Compute)?;
    let hypercall = run(Body::Hypercall)? - compute;
    let port = run(Body::PortIo)? - compute;
    outln!(
        "  {label}: hypercall {:.3} µs, port-I/O exit {:.3} µs ({:.2} x)",
        hypercall * 1e6,
        port * 1e6,
        hypercall / port
    )?;
    Ok(())
}

/// `popek bench`'s hypercall part; `kvm` says whether to measure KVM too.
pub fn bench(kvm: bool) -> Result<()> {
    outln!(
        "hypercall round trip (32-bit ring 0: SCHED_YIELD through the stub, call and ret \
         included), beside the port-I/O exit it replaces (an OUT to an unclaimed port), \
         the loop's own cost subtracted:"
    )?;
    engine_row(EngineKind::Interp, "interpreter (VMCALL stubs)")?;
    engine_row(
        EngineKind::Bt(Virt::None),
        "binary translator (VMCALL stubs)",
    )?;
    if !kvm {
        return Ok(());
    }
    match accel_kvm::check_kvm() {
        Ok(()) => engine_row(EngineKind::Kvm, "KVM (OUT stubs)"),
        Err(why) => Ok(outln!("  KVM: not measured ({why})")?),
    }
}

//! Interrupts from the shared PIC and PIT reach the KVM vCPU as they reach the
//! interpreter's.

use crate::common::*;
use crate::guests::*;
use crate::require_kvm;
use emu_core::exit::{ExitReason, StopReason};
use emu_core::machine::{Machine, RunOutcome};
use std::sync::mpsc;
use std::time::Duration;

/// Longer than any engine needs for [`timer`] (50 ms of guest time), short enough that a
/// guest whose ticks never come fails instead of hanging the test run.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs [`timer`] on `start`'s engine, on a thread of its own, so a lost tick fails the
/// test instead of hanging it (the spinning guest has no other way out).
fn run_timer(start: Start) -> (Machine, Vec<u8>, RunOutcome) {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let guest = timer();
        let (mut m, serial) = boot(start, &guest);
        let mut state = m.cpu_state().unwrap();
        install_descriptor_tables(m.ram_mut(), &mut state, TIMER_VECTOR, guest.labels[0]);
        m.set_cpu_state(&state).unwrap();
        let outcome = m.run(UNLIMITED);
        let _ = done.send((m, serial.contents(), outcome));
    });
    result
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("{start:?}: the timer guest did not finish"))
}

#[test]
fn timer_interrupts_reach_both_engines() {
    require_kvm!();
    let [(im, iout, ioutcome), (km, kout, koutcome)] = [Start::Interp, Start::Kvm].map(run_timer);
    for (start, out, outcome, m) in [
        (Start::Interp, &iout, &ioutcome, &im),
        (Start::Kvm, &kout, &koutcome, &km),
    ] {
        assert_eq!(outcome.stop, StopReason::Exited(0), "{start:?}");
        assert_eq!(
            String::from_utf8_lossy(out),
            String::from_utf8_lossy(TIMER_TEXT),
            "{start:?}"
        );
        let ticks = m.vmm.counters.interrupts.get(&TIMER_VECTOR).copied();
        assert!(
            ticks >= Some(ALL_TICKS.into()),
            "{start:?}: {ticks:?} interrupts"
        );
    }
    // The same port accesses (PIC and PIT set-up, printing, exit) on both engines.
    let (ic, kc) = (&im.vmm.counters, &km.vmm.counters);
    assert_eq!(kc.ports, ic.ports);
    for reason in [ExitReason::IoIn, ExitReason::IoOut] {
        assert_eq!(kc.exits(reason), ic.exits(reason), "{reason:?}");
    }
    // One HLT a tick, but under KVM a tick may come while the guest is not halted.
    assert_eq!(ic.exits(ExitReason::Hlt), u64::from(HLT_TICKS));
    assert!((1..=HLT_TICKS.into()).contains(&kc.exits(ExitReason::Hlt)));
    // Under KVM virtual time is host time: five ticks of the PIT take 50 ms.
    let period = Duration::from_secs(1) / TIMER_HZ as u32;
    assert!(
        koutcome.wall >= period * ALL_TICKS,
        "{:?} for {ALL_TICKS} ticks",
        koutcome.wall
    );
}

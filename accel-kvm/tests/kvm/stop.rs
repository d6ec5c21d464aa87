//! A stop request from another thread gets the KVM vCPU out, whether it runs guest code
//! without exits (the kick signal ends KVM_RUN) or waits in HLT for a timer tick (the
//! VMM's wait in real time is cut short), and the next run continues where it stopped.

use crate::common::*;
use crate::guests::*;
use crate::require_kvm;
use emu_core::exit::StopReason;
use emu_core::machine::{Machine, RunOutcome};
use iced_x86::code_asm::{dword_ptr, eax};
use std::sync::mpsc;
use std::time::Duration;

/// How long the requesting thread lets the guest run first: long enough for a guest's
/// few set-up instructions even where KVM emulates them (about 1 µs each).
const RUN_FIRST: Duration = Duration::from_millis(20);
/// A stopped run must end well within this; a missed request would take minutes.
const PROMPTLY: Duration = Duration::from_secs(5);
/// Where [`spin_until_flag`] looks for its flag.
const FLAG: u64 = 0x0E00;

/// Runs `m` on a thread of its own while another requests a stop after [`RUN_FIRST`]:
/// the machine and how the run went, or a failure after [`PROMPTLY`] if the run does not
/// end (a missed request would otherwise hang the test run).
fn run_and_stop(m: Machine) -> (Machine, RunOutcome) {
    let stop = m.stop_request();
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let mut m = m;
        let outcome = m.run(UNLIMITED);
        let _ = done.send((m, outcome));
    });
    std::thread::sleep(RUN_FIRST);
    stop.request();
    result
        .recv_timeout(PROMPTLY)
        .expect("the run ends promptly once a stop is requested")
}

/// Spins, without exits, until the dword at [`FLAG`] is non-zero, and exits with it.
fn spin_until_flag() -> Guest {
    assemble(|a| {
        let mut spin = a.create_label();
        a.mov(dword_ptr(FLAG), 0)?;
        a.set_label(&mut spin)?;
        a.mov(eax, dword_ptr(FLAG))?;
        a.test(eax, eax)?;
        a.jz(spin)?;
        emit_exit_with_eax(a)?;
        Ok(vec![])
    })
}

#[test]
fn a_guest_that_makes_no_exits_is_stopped_and_resumed() {
    require_kvm!();
    let (m, _) = boot(Start::Kvm, &spin_until_flag());
    let (mut m, outcome) = run_and_stop(m);
    assert_eq!(outcome.stop, StopReason::Paused);
    // It stopped in the loop; told to leave it, it goes on from there.
    m.ram_mut().as_mut_slice()[FLAG as usize] = 7;
    assert_eq!(m.run(UNLIMITED).stop, StopReason::Exited(7));
}

/// A machine with [`halt_for_tick`] loaded and its descriptor tables in place, and the
/// address of the instruction after its HLT.
fn halting(masked: bool) -> (Machine, u64) {
    let guest = halt_for_tick(masked);
    let (mut m, _) = boot(Start::Kvm, &guest);
    let mut state = m.cpu_state().unwrap();
    install_descriptor_tables(m.ram_mut(), &mut state, TIMER_VECTOR, guest.labels[0]);
    m.set_cpu_state(&state).unwrap();
    (m, guest.labels[1])
}

#[test]
fn a_halted_guest_is_stopped_and_stays_halted() {
    require_kvm!();
    // The tick is masked: the VMM would wait 10,000 ticks (9 minutes) for an interrupt.
    let (m, woken) = halting(true);
    let (m, outcome) = run_and_stop(m);
    assert_eq!(outcome.stop, StopReason::Paused);
    assert_eq!(m.cpu_state().unwrap().rip, woken, "stopped in HLT");
    // Still halted: the next run waits again (and can be stopped again) rather than
    // running the code after HLT, which would end the run.
    let (_, outcome) = run_and_stop(m);
    assert_eq!(outcome.stop, StopReason::Paused);
}

#[test]
fn a_guest_stopped_in_hlt_is_woken_by_its_tick_after_resuming() {
    require_kvm!();
    let (m, woken) = halting(false);
    let (mut m, outcome) = run_and_stop(m);
    assert_eq!(outcome.stop, StopReason::Paused);
    assert_eq!(m.cpu_state().unwrap().rip, woken, "stopped in HLT");
    assert!(
        outcome.wall < Duration::from_millis(SLOWEST_TICK_MS),
        "the wait for the tick was cut short, not waited out: {:?}",
        outcome.wall
    );
    // Resumed, the processor waits for its tick before it runs on: one tick counted.
    assert_eq!(m.run(UNLIMITED).stop, StopReason::Exited(1));
}

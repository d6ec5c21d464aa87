//! The control plane on KVM: a guest spinning in 64-bit ring 3 (which runs natively
//! even where KVM emulates 32-bit and ring-0 code) is paused from another thread,
//! changed and resumed, and code written into its running loop is executed; KVM
//! single-steps; a paused machine moves between the engines.

#[path = "../../../emu-core/tests/control/scenarios.rs"]
mod scenarios;

use crate::common::*;
use crate::guests::*;
use crate::require_kvm;
use emu_core::exit::{DebugStop, ExitReason, StopOn, StopReason};
use emu_core::machine::{MachineHandle, Pause, Status};
use scenarios::{finish, resume_and_wait, PROMPTLY};

#[test]
fn a_spinning_guest_is_paused_from_another_thread_changed_and_resumed() {
    require_kvm!();
    let slowest = scenarios::pause_write_resume(kvm_factory());
    println!("kvm: slowest pause {slowest:?}");
}

#[test]
fn code_written_into_a_running_loop_is_executed() {
    require_kvm!();
    scenarios::code_written_while_running(kvm_factory());
}

/// The debug registers catch the breakpoints and the store in 64-bit ring 3, where
/// KVM runs the guest natively. Not on PVM (this project's hosts), which runs ring 3
/// without them: there the test says so and skips (the `gdb_session_on_kvm` test
/// shows breakpoints and steps in the ring-0 code PVM emulates).
#[test]
fn breakpoint_watchpoint_and_steps() {
    require_kvm!();
    if !scenarios::stops_at_a_ring3_breakpoint(kvm_factory()) {
        println!("skipped: this host's KVM raises no debug-register breakpoint in guest ring 3");
        return;
    }
    scenarios::breakpoint_watchpoint_and_steps(kvm_factory());
}

#[test]
fn kvm_single_steps_stops_at_exits_and_hands_over_to_the_interpreter() {
    require_kvm!();
    let (m, serial) = boot(Start::Kvm, &summer());
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    // KVM single-steps (KVM_GUESTDBG_SINGLESTEP): one instruction, counted.
    let rip = h.registers().unwrap().rip;
    assert_eq!(h.step(1).unwrap(), Status::Paused(Pause::StepDone));
    assert_ne!(h.registers().unwrap().rip, rip);
    assert_eq!(h.instructions_retired().unwrap(), 1);
    h.run_until(StopOn {
        exit: true,
        ..StopOn::default()
    })
    .unwrap();
    // The first exit is the transmitter check of the first letter.
    assert_eq!(
        h.wait(PROMPTLY).unwrap(),
        Status::Paused(Pause::Debug(DebugStop::Exit(ExitReason::IoIn)))
    );
    assert_eq!(serial.contents(), b"");
    // Stepped on in the interpreter, past the letter, and back to KVM for the rest.
    h.switch_engine(emu_core::machine::interpreter_factory(Default::default()))
        .unwrap();
    assert_eq!(h.step(20).unwrap(), Status::Paused(Pause::StepDone));
    assert_eq!(serial.contents(), &SUMMER_TEXT[..1]);
    h.switch_engine(kvm_factory()).unwrap();
    assert_eq!(h.engine_name().unwrap(), "kvm");
    assert_eq!(
        resume_and_wait(&h),
        Status::Finished(StopReason::Exited(SUM))
    );
    assert_eq!(serial.contents(), SUMMER_TEXT);
    finish(h, thread);
}

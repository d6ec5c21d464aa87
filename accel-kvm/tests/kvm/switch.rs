//! Moving a paused machine between the interpreter and KVM, both ways: the guest must
//! not notice.

use crate::common::*;
use crate::guests::*;
use crate::require_kvm;
use devices::SharedBuffer;
use emu_core::exit::{ExitReason, StopReason};
use emu_core::machine::{Machine, RunOutcome};

/// Instructions the interpreter runs before handing over: well inside `summer`'s loop.
const INTERP_SHARE: u64 = 3_000;

/// Runs `m`, switched mid-run, to its end and checks that the guest did not notice: it
/// stops as the `reference` machine did on one engine, printed `ref_out` in all on
/// `serial`, and ends with the same user-visible state and the same exits.
fn finishes_as_reference(
    m: &mut Machine,
    serial: &SharedBuffer,
    reference: Machine,
    ref_out: &[u8],
    ref_outcome: RunOutcome,
) {
    assert_eq!(m.run(UNLIMITED).stop, ref_outcome.stop);
    assert_eq!(serial.contents(), ref_out);
    assert_eq!(
        user_visible(&m.cpu_state().unwrap()),
        user_visible(&reference.cpu_state().unwrap())
    );
    assert_eq!(m.vmm.counters.exits, reference.vmm.counters.exits);
}

#[test]
fn interpreter_to_kvm_mid_run() {
    require_kvm!();
    let guest = summer();
    let (reference, ref_out, ref_outcome) = run_on(Start::Interp, &guest);
    assert_eq!(ref_outcome.stop, StopReason::Exited(SUM));
    assert_eq!(ref_out, SUMMER_TEXT);

    let (mut m, serial) = boot(Start::Interp, &guest);
    assert_eq!(m.run(INTERP_SHARE).stop, StopReason::Budget);
    let printed = serial.contents().len();
    assert!(
        (1..SUMMER_TEXT.len()).contains(&printed),
        "paused mid-output, printed {printed} bytes"
    );
    m.switch_engine(kvm_factory()).expect("switch to KVM");
    assert_eq!(m.engine_name(), "kvm");
    finishes_as_reference(&mut m, &serial, reference, &ref_out, ref_outcome);
}

#[test]
fn kvm_to_interpreter_after_the_first_port_write() {
    require_kvm!();
    let guest = summer();
    let (reference, ref_out, ref_outcome) = run_on(Start::Interp, &guest);

    let mut rig = Rig::new(&guest);
    let serial = rig.serial.clone();
    let (stop, _) = rig.run_until_first(ExitReason::IoOut);
    assert_eq!(stop, StopReason::Budget);
    assert_eq!(serial.contents(), &SUMMER_TEXT[..1]);

    let mut m = rig.into_interpreted();
    assert_eq!(m.engine_name(), "interp");
    finishes_as_reference(&mut m, &serial, reference, &ref_out, ref_outcome);
}

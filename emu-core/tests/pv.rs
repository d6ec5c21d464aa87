//! Para-virtualization end to end: the `rings-pv` ROM (the `rings` kernel asking the
//! VMM through hypercalls) against `rings`, and the `pvcheck` ROM's bad hypercalls.

use devices::SharedBuffer;
use emu_core::exit::{ExitReason, StopReason};
use emu_core::machine::Machine;
use emu_core::pv::abi;

/// Guest RAM of the test machines.
const RAM: usize = 64 << 20;
/// Far more instructions than any of these ROMs needs.
const BUDGET: u64 = 50_000_000;

/// Runs an embedded ROM in the interpreter: the machine, its output, how it stopped.
fn run(name: &str) -> (Machine, String, StopReason) {
    let rom = test_roms::find(name).expect("the ROM is embedded");
    let serial = SharedBuffer::new();
    let mut m = Machine::interpreted(RAM, Box::new(serial.clone())).unwrap();
    m.load_multiboot(rom.image, "").unwrap();
    let stop = m.run(BUDGET).stop;
    let out = String::from_utf8(serial.contents()).unwrap();
    (m, out, stop)
}

#[test]
fn rings_pv_prints_what_rings_prints() {
    let (_, native, native_stop) = run("rings");
    let (_, pv, pv_stop) = run("rings-pv");
    assert_eq!(native_stop, StopReason::Exited(0), "{native}");
    assert!(native.lines().count() > 20, "{native}");
    assert!(!native.contains("FAIL"), "{native}");
    assert_eq!(pv, native);
    assert_eq!(pv_stop, native_stop);
}

#[test]
fn rings_pv_enters_the_vmm_less_often_than_rings() {
    let (native, _, _) = run("rings");
    let (pv, _, _) = run("rings-pv");
    let (n, p) = (&native.vmm.counters, &pv.vmm.counters);
    // Native: a port read and write per byte printed. PV: a hypercall per line.
    assert!(n.exits(ExitReason::IoOut) > 500);
    assert_eq!(p.exits(ExitReason::IoOut) + p.exits(ExitReason::IoIn), 0);
    assert!(
        p.total_exits() * 10 < n.total_exits(),
        "{p:?} against {n:?}"
    );
    let calls = &pv.vmm.pv.counters;
    // Every hypercall is an exit; so is the write of the hypercall-page MSR.
    assert_eq!(p.exits(ExitReason::Hypercall), calls.total() + 1);
    assert_eq!(calls.errors(), 0);
    let batches = calls.hypercalls[abi::HC_MMU_UPDATE as usize].calls;
    assert_eq!(batches, 2, "the set-up batch and the read-only page fix-up");
    assert_eq!(
        calls.callbacks, 1,
        "the timer event came through the callback"
    );
}

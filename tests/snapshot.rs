//! Save and restore of a whole machine, mid-run: every embedded ROM, saved part-way
//! through, sent through the snapshot's serde form and restored into a fresh machine,
//! prints exactly what an uninterrupted run prints and exits the same way.

use devices::SharedBuffer;
use emu_core::exit::StopReason;
use emu_core::machine::{Machine, Snapshot, SnapshotError};
use test_roms::{Boot, Rom};

/// RAM of the test machines (what `popek run` gives by default).
const RAM: usize = 64 << 20;
/// More than any embedded ROM runs.
const BUDGET: u64 = 200_000_000;

/// A machine with `rom` loaded (the configuration a snapshot does not carry) and the
/// buffer its COM1 writes to.
fn machine(rom: &Rom) -> (Machine, SharedBuffer) {
    let out = SharedBuffer::new();
    let mut m = Machine::interpreted(RAM, Box::new(out.clone())).expect("machine");
    match rom.boot {
        Boot::Multiboot => m.load_multiboot(rom.image, rom.name).map(|_| ()),
        Boot::Bios => m.load_bios(rom.image),
    }
    .expect("ROM loads");
    (m, out)
}

/// Output, stop and instruction count of an uninterrupted run.
fn uninterrupted(rom: &Rom) -> (Vec<u8>, StopReason, u64) {
    let (mut m, out) = machine(rom);
    let outcome = m.run(BUDGET);
    (out.contents(), outcome.stop, outcome.instructions)
}

/// The same run, saved after `at` instructions and finished in a fresh machine.
fn restored_at(rom: &Rom, at: u64) -> (Vec<u8>, StopReason) {
    let (mut first, out1) = machine(rom);
    let part = first.run(at);
    assert_eq!(
        part.stop,
        StopReason::Budget,
        "{}: stopped before {at}",
        rom.name
    );
    let snapshot = first.save().expect("save");
    let text = serde_json::to_string(&snapshot).expect("serialize");
    let snapshot: Snapshot = serde_json::from_str(&text).expect("deserialize");
    let (mut second, out2) = machine(rom);
    out2.take(); // what loading printed, if anything: the first machine printed it
    second.restore(&snapshot).expect("restore");
    assert_eq!(second.cpu_state().unwrap(), first.cpu_state().unwrap());
    assert_eq!(second.instructions_retired(), at);
    let rest = second.run(BUDGET);
    let mut output = out1.contents();
    output.extend(out2.contents());
    (output, rest.stop)
}

#[test]
fn every_rom_restored_mid_run_finishes_as_an_uninterrupted_run() {
    for rom in test_roms::all() {
        let (want, stop, total) = uninterrupted(rom);
        assert!(total > 10, "{}: ran only {total} instructions", rom.name);
        for at in [total / 3, total / 2, total - 1] {
            let (got, got_stop) = restored_at(rom, at);
            assert_eq!(got_stop, stop, "{}: restored at {at}", rom.name);
            assert!(
                got == want,
                "{}: restored at {at} of {total}, printed\n{}\ninstead of\n{}",
                rom.name,
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
        }
    }
}

#[test]
fn malformed_snapshots_are_refused_and_leave_nothing_half_done() {
    let rom = test_roms::find("hello").expect("hello ROM");
    let (mut m, _) = machine(rom);
    m.run(100);
    let good = m.save().unwrap();
    let (mut fresh, _) = machine(rom);
    let before = fresh.save().unwrap();

    let mut bad = good.clone();
    bad.version += 1;
    assert!(matches!(
        fresh.restore(&bad),
        Err(SnapshotError::Version { .. })
    ));
    let mut bad = good.clone();
    bad.ram_size *= 2;
    assert!(matches!(
        fresh.restore(&bad),
        Err(SnapshotError::RamSize { .. })
    ));
    let mut bad = good.clone();
    bad.ram[0].bytes.pop();
    assert!(matches!(
        fresh.restore(&bad),
        Err(SnapshotError::BadPage { .. })
    ));
    let mut bad = good.clone();
    bad.ram[0].page = u64::MAX;
    assert!(matches!(
        fresh.restore(&bad),
        Err(SnapshotError::BadPage { .. })
    ));
    let mut bad = good.clone();
    bad.devices.pic.master.vector_base = 0x13; // not a multiple of 8
    assert!(matches!(
        fresh.restore(&bad),
        Err(SnapshotError::Devices(_))
    ));
    assert_eq!(
        fresh.save().unwrap(),
        before,
        "refusals changed the machine"
    );

    fresh.restore(&good).unwrap();
    assert_eq!(fresh.save().unwrap(), good);
}

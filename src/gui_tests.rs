//! The GUI driven through AccessKit (egui_kittest), no display needed: real ROMs booted
//! by `popek gui`'s own launcher, on the interpreter.

use super::CliLauncher;
use crate::devices::DeviceArg;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use gui::egui::Role;
use gui::{Options, PopekApp};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a test waits for the machine before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The window with `rom` loaded (paused) on the interpreter.
fn window(rom: &str) -> Harness<'static, PopekApp> {
    window_on(rom, "interp")
}

/// The window with `rom` loaded (paused) on `engine`.
fn window_on(rom: &str, engine: &str) -> Harness<'static, PopekApp> {
    window_with(rom, engine, Vec::new())
}

/// The window with `rom` loaded (paused) on `engine`, with `devices` attached.
fn window_with(rom: &str, engine: &str, devices: Vec<DeviceArg>) -> Harness<'static, PopekApp> {
    let launcher = Arc::new(CliLauncher {
        ram_mib: 64,
        devices,
        disk: None,
    });
    let options = Options {
        rom: Some(rom.into()),
        engine: Some(engine.into()),
        run: false,
        compare: false,
    };
    Harness::builder()
        .with_size([1500.0, 950.0])
        .build_ui_state(
            |ui, app: &mut PopekApp| app.show(ui),
            PopekApp::new(launcher, options),
        )
}

/// Every text label in the window that contains `text` (AccessKit has a label's text
/// as its value).
fn labels(h: &Harness<'_, PopekApp>, text: &str) -> Vec<String> {
    h.query_all_by(|n| n.role() == Role::Label)
        .filter_map(|n| n.accesskit_node().value())
        .filter(|v| v.contains(text))
        .collect()
}

/// The one label that starts with `prefix`.
fn label(h: &Harness<'_, PopekApp>, prefix: &str) -> String {
    let found: Vec<_> = labels(h, prefix)
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "labels starting with `{prefix}`: {found:?}");
    found[0].clone()
}

/// Draws frames until a label contains `text`; returns it.
fn wait_for(h: &mut Harness<'_, PopekApp>, text: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        h.step();
        if let Some(found) = labels(h, text).into_iter().next() {
            return found;
        }
        let status = labels(h, "Status:");
        let error = labels(h, "Error:");
        assert!(
            Instant::now() < deadline,
            "no label containing `{text}` (status {status:?}, error {error:?})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn click(h: &mut Harness<'_, PopekApp>, button: &str) {
    h.get_by_label(button).click();
    h.step();
}

#[test]
fn a_step_moves_rip_and_highlights_what_changed() {
    let mut h = window("rings");
    wait_for(&mut h, "Status: paused: not started");
    let before = label(&h, "EIP ");
    assert_eq!(
        label(&h, "Changed since the last stop:"),
        "Changed since the last stop: nothing"
    );
    click(&mut h, "Step");
    wait_for(&mut h, "Status: paused: step done");
    wait_for(&mut h, "Instructions retired: 1");
    let after = label(&h, "EIP ");
    assert_ne!(before, after, "a step moves EIP");
    let changed = label(&h, "Changed since the last stop:");
    assert!(changed.contains("EIP"), "{changed}");
    // The first instruction is marked in the disassembly, with its address.
    let eip = u64::from_str_radix(after.trim_start_matches("EIP").trim(), 16).unwrap();
    let current = labels(&h, &format!("=> {eip:08x}"));
    assert_eq!(
        current.len(),
        1,
        "the current instruction is marked: {current:?}"
    );
}

#[test]
fn run_to_ring_change_updates_rings_registers_and_trap_log() {
    let mut h = window("rings");
    wait_for(&mut h, "Status: paused: not started");
    assert_eq!(label(&h, "Guest in ring"), "Guest in ring 0");
    click(&mut h, "Run to ring change");
    // The kernel enters its ring-3 task with IRET.
    wait_for(&mut h, "Status: paused: ring 0 -> 3: iret");
    wait_for(&mut h, "Guest in ring 3");
    h.get_by_label("Ring view: Guest in ring 3");
    assert_eq!(
        label(&h, "Last transition:"),
        "Last transition: ring 0 -> 3 (iret)"
    );
    assert!(label(&h, "CPL ").starts_with("CPL 3"));
    let changed = label(&h, "Changed since the last stop:");
    assert!(
        changed.contains("EIP") && changed.contains("segments"),
        "{changed}"
    );
    let log = labels(&h, "ring 0 -> 3: iret");
    assert!(log.iter().any(|l| l.starts_with('[')), "trap log: {log:?}");
    // And back into the kernel: the task's first system call.
    click(&mut h, "Run to ring change");
    let status = wait_for(&mut h, "Status: paused: ring 3 -> 0");
    wait_for(&mut h, "Guest in ring 0");
    let cause = status.trim_start_matches("Status: paused: ring 3 -> 0: ");
    assert_eq!(
        label(&h, "Last transition:"),
        format!("Last transition: ring 3 -> 0 ({cause})")
    );
    assert!(label(&h, "ring 3 -> 0").contains("ring 3 -> 0"));
    // The counts by cause agree.
    assert!(labels(&h, "ring 0 -> 3").len() >= 2);
}

#[test]
fn a_run_to_the_end_shows_the_console_and_the_exit() {
    let mut h = window("hello");
    wait_for(&mut h, "Status: paused: not started");
    click(&mut h, "Run");
    wait_for(&mut h, "Status: finished: guest exited with status 0");
    let console = labels(&h, "Hello");
    assert!(!console.is_empty(), "the serial console shows the greeting");
    // hello's only way out is port I/O, which the log and the counts show.
    wait_for(&mut h, "exit io-out");
    wait_for(&mut h, "out port 0x03f8");
}

#[test]
fn a_bad_rom_file_is_reported_in_the_window() {
    let mut h = window("/nonexistent/rom.elf");
    let error = wait_for(&mut h, "Error:");
    assert!(
        error.contains("cannot read ROM file `/nonexistent/rom.elf`"),
        "{error}"
    );
    let garbage =
        std::env::temp_dir().join(format!("popek-gui-garbage-{}.elf", std::process::id()));
    std::fs::write(&garbage, b"this is not an ELF file").unwrap();
    let mut h = window(garbage.to_str().unwrap());
    let error = wait_for(&mut h, "Error:");
    std::fs::remove_file(&garbage).unwrap();
    assert!(error.contains(garbage.to_str().unwrap()), "{error}");
}

#[test]
fn the_comparison_runs_the_rom_under_every_engine() {
    let mut h = window("rings");
    wait_for(&mut h, "Status: paused: not started");
    click(&mut h, "Compare");
    click(&mut h, "Compare engines");
    wait_for(&mut h, "rings under every engine");
    // Both interpreter flavours run it to its end; the VT-x model exits for more causes.
    let ends = labels(&h, "guest exited with status 0");
    assert!(ends.len() >= 2, "{ends:?}");
    for engine in ["interp", "interp+vtx", "bt", "kvm"] {
        assert!(
            labels(&h, engine).iter().any(|l| l == engine),
            "a row for {engine}"
        );
    }
}

#[test]
fn a_slowed_down_run_steps_on_until_paused() {
    let mut h = window("rings");
    wait_for(&mut h, "Status: paused: not started");
    h.get_by_label("Speed").click();
    // The popup opens on the next frame.
    h.step();
    h.step();
    click(&mut h, "10 instructions/s");
    click(&mut h, "Run");
    wait_for(&mut h, "Status: running at 10 instructions/s");
    // The panels follow it instruction by instruction.
    wait_for(&mut h, "Instructions retired: 2");
    click(&mut h, "Pause");
    let status = wait_for(&mut h, "Status: paused");
    assert!(!status.contains("finished"), "{status}");
    let retired = label(&h, "Instructions retired:");
    for _ in 0..20 {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        label(&h, "Instructions retired:"),
        retired,
        "a paused run stays put"
    );
}

#[test]
fn a_breakpoint_from_the_gutter_stops_the_run_there() {
    let mut h = window("rings");
    wait_for(&mut h, "Status: paused: not started");
    // Where the second instruction is: found by stepping, then the machine is reset.
    click(&mut h, "Step");
    wait_for(&mut h, "Status: paused: step done");
    let second = label(&h, "EIP ")
        .trim_start_matches("EIP")
        .trim()
        .to_string();
    click(&mut h, "Reset");
    wait_for(&mut h, "Status: paused: not started");
    wait_for(&mut h, "Instructions retired: 0");
    // Through AccessKit: a pointer click here would land on the Reset button's tooltip.
    h.get_by_label(&format!("Set breakpoint at {second}"))
        .click_accesskit();
    h.step();
    wait_for_button(&mut h, &format!("Clear breakpoint at {second}"));
    click(&mut h, "Run");
    let addr = second.trim_start_matches('0');
    wait_for(&mut h, &format!("Status: paused: breakpoint at 0x{addr}"));
    assert_eq!(
        label(&h, "Instructions retired:"),
        "Instructions retired: 1"
    );
}

/// Draws frames until there is a button labelled `name`.
fn wait_for_button(h: &mut Harness<'_, PopekApp>, name: &str) {
    let deadline = Instant::now() + PATIENCE;
    while h.query_by_label(name).is_none() {
        assert!(Instant::now() < deadline, "no button `{name}`");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kvm_steps_and_runs_in_the_window() {
    if let Err(e) = accel_kvm::check_kvm() {
        eprintln!("skipped: /dev/kvm not available ({e})");
        return;
    }
    let mut h = window_on("hello", "kvm");
    wait_for(&mut h, "Status: paused: not started");
    assert!(
        labels(&h, "hardware assist")
            .iter()
            .any(|l| l == "hardware assist"),
        "the top bar names the technique"
    );
    let before = label(&h, "EIP ");
    click(&mut h, "Step");
    wait_for(&mut h, "Status: paused: step done");
    assert_ne!(
        label(&h, "EIP "),
        before,
        "a step on the host's processor moves EIP"
    );
    click(&mut h, "Run");
    wait_for(&mut h, "Status: finished: guest exited with status 0");
    wait_for(&mut h, "exit io-out");
}

#[test]
fn the_virtio_tab_shows_the_queues_the_guest_used() {
    let mut h = window_with("net", "interp", vec![DeviceArg::Net]);
    wait_for(&mut h, "Status: paused: not started");
    click(&mut h, "Virtio");
    let header = wait_for(&mut h, "virtio-net: status 0x0");
    assert!(header.contains(" 0 notifications"), "{header}");
    click(&mut h, "Run");
    wait_for(&mut h, "Status: finished: guest exited with status 0");
    let header = wait_for(&mut h, "virtio-net: status 0xf");
    assert!(!header.contains(" 0 notifications"), "{header}");
    let queues = labels(&h, "net queue 0: size");
    assert_eq!(queues.len(), 1, "{queues:?}");
    assert!(!queues[0].contains("avail idx 0,"), "{}", queues[0]);
}

#[test]
fn the_translators_counts_and_events_show_under_bt() {
    let mut h = window_on("smc", "bt");
    wait_for(&mut h, "Status: paused: not started");
    click(&mut h, "Run");
    wait_for(&mut h, "Status: finished: guest exited with status 0");
    // The counts panel lists the engine's counters after the VMM's, and the trap log
    // the translator's events (the window traces every kind).
    let counts = wait_for(&mut h, "bt blocks translated");
    assert_eq!(counts, "bt blocks translated");
    // The log shows its latest rows: hide the exits smc ends with (it takes no
    // exception and changes no ring).
    for kind in ["io", "mmio", "exits"] {
        h.get_by(|n| n.role() == Role::CheckBox && n.label().as_deref() == Some(kind))
            .click();
        h.step();
    }
    wait_for(&mut h, "bt: block at rip 0x");
}

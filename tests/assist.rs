//! `--assist vtx`: the embedded ROMs under the interpreter's model of VT-x hardware
//! assist print what they print under trap and emulate, and their VT-x exits are counted.

use emu_core::exit::ExitReason;
use emu_core::interp::{Assist, Interpreter};
use emu_core::machine::Machine;
use emu_core::trace::Counters;
use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Guest RAM for the ROMs.
const RAM: usize = 64 << 20;
/// More than any ROM here needs.
const BUDGET: u64 = 100_000_000;

/// COM1 output, kept for comparison.
#[derive(Clone, Default)]
struct Serial(Arc<Mutex<Vec<u8>>>);

impl Write for Serial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("serial").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the Multiboot ROM `name` to its exit; its serial output and counters.
fn run_rom(name: &str, assist: Assist) -> (Vec<u8>, Counters) {
    let rom = test_roms::find(name).expect("embedded ROM");
    let serial = Serial::default();
    let mut m = Machine::new(
        RAM,
        Box::new(serial.clone()),
        Box::new(move |_| Ok(Box::new(Interpreter::with_assist(assist)))),
    )
    .expect("machine");
    m.load_multiboot(rom.image, name).expect("loads");
    let stop = m.run(BUDGET).stop;
    assert_eq!(stop.to_string(), "guest exited with status 0", "{name}");
    let out = serial.0.lock().expect("serial").clone();
    (out, m.vmm.counters)
}

/// Runs `name` both ways: the same output, the same exits KVM could also see, and no
/// VT-x-only exit without assist. The VT-x run's counters.
fn compare(name: &str) -> Counters {
    let (plain_out, plain) = run_rom(name, Assist::None);
    let (vtx_out, vtx) = run_rom(name, Assist::Vtx);
    assert_eq!(
        String::from_utf8_lossy(&vtx_out),
        String::from_utf8_lossy(&plain_out),
        "{name}: serial output"
    );
    for reason in ExitReason::ALL {
        if reason.vtx_only() {
            assert_eq!(plain.exits(reason), 0, "{name}: {}", reason.name());
        } else {
            assert_eq!(
                vtx.exits(reason),
                plain.exits(reason),
                "{name}: {}",
                reason.name()
            );
        }
    }
    vtx
}

#[test]
fn rings_exits_on_control_registers_and_msrs() {
    let c = compare("rings");
    // Paging on (CR3, CR0), and the three SYSENTER MSRs.
    assert!(c.exits(ExitReason::CrAccess) > 0);
    assert_eq!(c.exits(ExitReason::Wrmsr), 3);
}

#[test]
fn longmode_reads_and_writes_msrs() {
    let c = compare("longmode");
    assert!(c.exits(ExitReason::Rdmsr) > 0);
    assert!(c.exits(ExitReason::Wrmsr) > 0);
    assert!(c.exits(ExitReason::CrAccess) > 0);
}

#[test]
fn every_timer_interrupt_is_an_external_interrupt_exit() {
    let c = compare("timer");
    let delivered: u64 = c.interrupts.values().sum();
    assert!(delivered > 0);
    assert_eq!(c.exits(ExitReason::ExternalInterrupt), delivered);
}

fn popek_stderr(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(args)
        .output()
        .expect("popek runs");
    assert!(o.status.success(), "{args:?}: {:?}", o.status);
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn stats_list_vtx_only_exits_apart() {
    let err = popek_stderr(&["run", "rings", "--assist", "vtx", "--stats"]);
    let exits = err.lines().find(|l| l.starts_with("exits")).expect(&err);
    assert!(exits.contains("; VT-x only: wrmsr 3, cr-access"), "{exits}");
    let err = popek_stderr(&["run", "rings", "--assist", "none", "--stats"]);
    assert!(!err.contains("VT-x only"), "{err}");
}

#[test]
fn trace_shows_vm_exits_with_their_vtx_reason() {
    let err = popek_stderr(&["run", "rings", "--assist", "vtx", "--trace", "exits"]);
    assert!(err.contains("vm-exit wrmsr (VT-x reason 32)"), "{err}");
    assert!(err.contains("vm-exit cr-access (VT-x reason 28)"), "{err}");
}

#[test]
fn the_vtx_model_belongs_to_the_interpreter() {
    // Refused before KVM is even looked at: one line, usage status.
    let o = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(["run", "hello", "--engine", "kvm", "--assist", "vtx"])
        .output()
        .expect("popek runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--assist vtx models hardware assist in the interpreter"),
        "{err}"
    );
    // auto picks the interpreter and says why.
    let err = popek_stderr(&["run", "hello", "--engine", "auto", "--assist", "vtx"]);
    assert!(
        err.contains("using interp (--assist vtx is the interpreter's)"),
        "{err}"
    );
}

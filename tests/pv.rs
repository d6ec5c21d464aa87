//! Para-virtualization through the `popek` command: `rings-pv` against `rings` on every
//! engine, hypercalls by cause in `--stats`, and the bad hypercalls of `pvcheck`.

use std::process::{Command, Output};

fn popek(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(args)
        .output()
        .expect("popek runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The number on the `exits` line of `--stats`: every entry into the VMM.
fn vmm_entries(stats: &str) -> u64 {
    let line = stats
        .lines()
        .find(|l| l.starts_with("exits"))
        .unwrap_or_else(|| panic!("no exits line in\n{stats}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether the host's KVM is PVM, which runs 64-bit guests and emulates 32-bit ring-0
/// code with gaps (see tests/cli.rs).
fn pvm_host() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Runs `rings` and `rings-pv` on `engine`: the two runs, or None (and why) when this
/// host's engine cannot run them as the interpreter does.
fn both_rings(engine: &str) -> Option<(Output, Output)> {
    let reference = stdout(&popek(&["run", "rings", "--engine", "interp"]));
    let native = popek(&["run", "rings", "--engine", engine, "--stats"]);
    let pv = popek(&["run", "rings-pv", "--engine", engine, "--stats"]);
    if engine == "kvm" && (stdout(&native) != reference || stdout(&pv) != reference) {
        assert!(
            pvm_host(),
            "rings or rings-pv departs from the interpreter under a standard KVM:\n{}{}",
            stderr(&native),
            stderr(&pv)
        );
        println!(
            "skipped: this host's KVM (PVM) does not run the 32-bit rings kernels: {}",
            stderr(&pv).lines().last().unwrap_or_default()
        );
        return None;
    }
    Some((native, pv))
}

#[test]
fn rings_pv_prints_what_rings_prints_on_every_engine() {
    let mut engines = vec!["interp"];
    if accel_kvm::kvm_available() {
        engines.push("kvm");
    } else {
        println!("skipped kvm: /dev/kvm not available");
    }
    for engine in engines {
        let Some((native, pv)) = both_rings(engine) else {
            continue;
        };
        assert!(native.status.success(), "{engine}: {}", stderr(&native));
        assert!(stdout(&native).contains("PASS pagefault-retry"));
        assert_eq!(stdout(&pv), stdout(&native), "{engine}");
        assert_eq!(pv.status.code(), native.status.code(), "{engine}");
    }
}

#[test]
fn the_pv_guest_enters_the_vmm_less_often_on_every_engine() {
    let mut engines = vec!["interp"];
    if accel_kvm::kvm_available() {
        engines.push("kvm");
    }
    for engine in engines {
        let Some((native, pv)) = both_rings(engine) else {
            continue;
        };
        let (n, p) = (vmm_entries(&stderr(&native)), vmm_entries(&stderr(&pv)));
        assert!(p * 10 < n, "{engine}: rings-pv {p} VMM entries, rings {n}");
    }
}

#[test]
fn stats_show_hypercalls_by_cause_where_rings_had_port_exits() {
    let native = stderr(&popek(&["run", "rings", "--stats"]));
    let pv = stderr(&popek(&["run", "rings-pv", "--stats"]));
    assert!(native.contains("port 0x03f8"), "{native}");
    assert!(!native.contains("hypercall"), "{native}");
    assert!(!pv.contains("port 0x03f8"), "{pv}");
    for cause in [
        "hypercall console-write",
        "hypercall mmu-update      2 calls, 0 failed",
        "hypercall set-trap-table  1 calls",
        "hypercall sched-op",
        "1 event callbacks",
    ] {
        assert!(pv.contains(cause), "{cause} missing from\n{pv}");
    }
}

#[test]
fn every_bad_hypercall_gets_its_error_and_the_guest_carries_on() {
    let o = popek(&["run", "pvcheck", "--stats"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "{out}{err}");
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.ends_with("PASS pv-carried-on\n"), "{out}");
    assert!(out.lines().count() >= 25, "{out}");
    // The VMM counted each refusal under its hypercall.
    assert!(
        err.contains("hypercall unknown         2 calls, 2 failed"),
        "{err}"
    );
    assert!(
        err.contains("hypercall mmu-update      8 calls, 7 failed"),
        "{err}"
    );
    assert!(
        err.contains("hypercall set-trap-table  5 calls, 5 failed"),
        "{err}"
    );
}

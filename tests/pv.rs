//! Para-virtualization through the `popek` command: `rings-pv` against `rings` on every
//! engine, hypercalls by cause in `--stats`, and the bad hypercalls of `pvcheck`.

use std::process::Command;

/// What one `popek` command printed, and its exit status.
struct Run {
    out: String,
    err: String,
    status: Option<i32>,
}

fn popek(args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(args)
        .output()
        .expect("popek runs");
    Run {
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
        status: o.status.code(),
    }
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
fn both_rings(engine: &str) -> Option<(Run, Run)> {
    let reference = popek(&["run", "rings", "--engine", "interp"]).out;
    let native = popek(&["run", "rings", "--engine", engine, "--stats"]);
    let pv = popek(&["run", "rings-pv", "--engine", engine, "--stats"]);
    if engine == "kvm" && (native.out != reference || pv.out != reference) {
        assert!(
            pvm_host(),
            "rings or rings-pv departs from the interpreter under a standard KVM:\n{}{}",
            native.err,
            pv.err
        );
        println!(
            "skipped: this host's KVM (PVM) does not run the 32-bit rings kernels: {}",
            pv.err.lines().last().unwrap_or_default()
        );
        return None;
    }
    Some((native, pv))
}

#[test]
fn rings_pv_prints_what_rings_prints_on_every_engine() {
    let mut engines = vec!["interp", "bt"];
    if accel_kvm::kvm_available() {
        engines.push("kvm");
    } else {
        println!("skipped kvm: /dev/kvm not available");
    }
    for engine in engines {
        let Some((native, pv)) = both_rings(engine) else {
            continue;
        };
        assert_eq!(native.status, Some(0), "{engine}: {}", native.err);
        assert!(native.out.contains("PASS pagefault-retry"));
        assert_eq!(pv.out, native.out, "{engine}");
        assert_eq!(pv.status, native.status, "{engine}");
    }
}

#[test]
fn the_pv_guest_enters_the_vmm_less_often_under_the_vtx_model_too() {
    // Hardware assist's exits (the SYSENTER MSRs, CR0 and CR3, CPUID) on top of the
    // port exits: rings-pv keeps its three SYSENTER WRMSRs and reads of CR0 and CR2,
    // but loads no CR3 or CR0 and prints without port exits.
    let run = |rom| popek(&["run", rom, "--assist", "vtx", "--stats"]);
    let (native, pv) = (run("rings"), run("rings-pv"));
    assert_eq!(pv.out, native.out);
    let (n, p) = (vmm_entries(&native.err), vmm_entries(&pv.err));
    assert!(p * 10 < n, "rings-pv {p} VMM entries, rings {n}");
}

#[test]
fn the_pv_guest_enters_the_vmm_less_often_on_every_engine() {
    let mut engines = vec!["interp", "bt"];
    if accel_kvm::kvm_available() {
        engines.push("kvm");
    }
    for engine in engines {
        let Some((native, pv)) = both_rings(engine) else {
            continue;
        };
        let (n, p) = (vmm_entries(&native.err), vmm_entries(&pv.err));
        assert!(p * 10 < n, "{engine}: rings-pv {p} VMM entries, rings {n}");
    }
}

#[test]
fn stats_show_hypercalls_by_cause_where_rings_had_port_exits() {
    let native = popek(&["run", "rings", "--stats"]).err;
    let pv = popek(&["run", "rings-pv", "--stats"]).err;
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
    // The translator runs VMCALL through the interpreter's handler: the same calls.
    let bt = popek(&["run", "pvcheck", "--engine", "bt"]);
    let Run { out, err, status } = popek(&["run", "pvcheck", "--stats"]);
    assert_eq!(bt.out, out);
    assert_eq!(status, Some(0), "{out}{err}");
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

#[test]
fn trace_shows_each_hypercall_with_its_result() {
    let err = popek(&["run", "pvcheck", "--trace", "exits"]).err;
    for line in [
        "vm-exit wrmsr msr 0x504f5000 value 0x",
        "vm-exit hypercall shared-info (7) -> 0 (VT-x reason 18)",
        "vm-exit hypercall unknown (4294967295) -> -38",
        "vm-exit hypercall mmu-update (4) -> -13",
    ] {
        assert!(err.contains(line), "{line} missing from\n{err}");
    }
}

#[test]
fn hypercalls_and_events_work_under_kvm() {
    if !accel_kvm::kvm_available() {
        println!("skipped: /dev/kvm not available");
        return;
    }
    let interp = popek(&["run", "pvcheck"]);
    let kvm = popek(&["run", "pvcheck", "--engine", "kvm", "--stats"]);
    // The OUT stubs, the MSR through user-space MSR exits, and the timer event of a
    // loop without hypercalls, all before the guest turns paging on.
    for check in [
        "PASS pv-unknown-number",
        "PASS pv-console-outside-ram",
        "PASS pv-trap-ring3-selector",
        "PASS pv-event-without-hypercalls",
        "PASS pv-base-gives-ring3-hypercall-page",
    ] {
        assert!(
            kvm.out.contains(check),
            "{check} missing:\n{}{}",
            kvm.out,
            kvm.err
        );
    }
    if kvm.out != interp.out {
        // PVM triple-faults 32-bit paging guests (see tests/cli.rs): up to there, the
        // same lines.
        assert!(
            pvm_host() && kvm.err.contains("triple fault"),
            "{}",
            kvm.err
        );
        assert!(interp.out.starts_with(&kvm.out), "{}", kvm.out);
        println!("this host's KVM (PVM) stops pvcheck at paging, as expected");
    }
    assert!(
        kvm.err
            .contains("hypercall unknown         2 calls, 2 failed"),
        "{}",
        kvm.err
    );
}

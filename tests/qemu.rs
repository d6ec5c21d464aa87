//! QEMU is the oracle: every embedded ROM prints byte-for-byte the same under
//! `qemu-system-x86_64` (`-kernel` for Multiboot kernels, `-bios` for BIOS images) as
//! under `popek run`, and ends with the same status — except for the checks listed in
//! [`QEMU_DEVIATIONS`], where QEMU is known to depart from the Intel SDM: there Popek
//! must print PASS (the ROM checks against the manual) and QEMU FAIL.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const QEMU: &str = "qemu-system-x86_64";
/// No ROM needs more than a few seconds under QEMU TCG; a hang must not stall the tests.
const QEMU_TIME_LIMIT: Duration = Duration::from_secs(120);
/// Keeps the `loop` ROM short; the other ROMs ignore their command line.
const LOOP_ARGS: &str = "iters=100000";

/// Checks of a ROM that QEMU's TCG gets wrong, and why.
struct Deviation {
    /// The ROM.
    rom: &'static str,
    /// What QEMU does not implement.
    reason: &'static str,
    /// The checks (the names on the ROM's PASS/FAIL lines) it fails for that reason.
    checks: &'static [&'static str],
}

/// Where QEMU TCG departs from the manual. If QEMU starts passing one of these checks,
/// the test says so: take it off the list.
const QEMU_DEVIATIONS: &[Deviation] = &[Deviation {
    rom: "segments",
    reason: "QEMU's TCG does not check segment limits, types or null selectors on data \
             and stack accesses (Intel SDM Vol. 3, 5.3 and 5.4)",
    checks: &[
        "seg-byte-limit-one-past",
        "seg-dword-straddling-limit",
        "seg-far-pointer-straddling-limit",
        "seg-bound-straddling-limit",
        "seg-fxsave-area-past-limit",
        "seg-page-limit-straddled",
        "seg-expand-down-at-limit",
        "seg-expand-down-b0-past-ffff",
        "seg-expand-down-b1-wrapping",
        "seg-read-only-write",
        "seg-read-only-add",
        "seg-read-only-unchanged",
        "seg-code-write",
        "seg-execute-only-read",
        "seg-null-fs-read",
        "seg-stos-with-null-es",
        "seg-movs-destination-past-es-limit",
        "seg-ss-pop-past-limit",
        "seg-ss-ebp-read-past-limit",
        "seg-fs-override-past-limit",
    ],
}];

/// ROMs that need Popek's para-virtualization interface (docs/guest-abi.md), which
/// QEMU does not offer: they stop at their first check there.
const POPEK_ONLY: &[&str] = &["pvcheck", "rings-pv"];

/// The check a PASS/FAIL line names ("PASS name" or "FAIL name: why").
fn check_name(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("PASS ")
        .or_else(|| line.strip_prefix("FAIL "))?;
    Some(rest.split(':').next().unwrap_or(rest))
}

/// Compares QEMU's output `q` with Popek's `p` for the ROM `name`: the same lines,
/// except that the checks of a known deviation pass under Popek and fail under QEMU.
/// Returns whether there was such a deviation (then the exit statuses differ too).
fn compare_outputs(name: &str, q: &str, p: &str) -> bool {
    let Some(dev) = QEMU_DEVIATIONS.iter().find(|d| d.rom == name) else {
        assert_eq!(
            q, p,
            "{name}: serial output differs (left QEMU, right Popek)"
        );
        return false;
    };
    let (qlines, plines): (Vec<&str>, Vec<&str>) = (q.lines().collect(), p.lines().collect());
    assert_eq!(
        qlines.len(),
        plines.len(),
        "{name}: line counts differ\nQEMU:\n{q}\nPopek:\n{p}"
    );
    for (ql, pl) in qlines.iter().zip(&plines) {
        match check_name(pl).filter(|c| dev.checks.contains(c)) {
            Some(check) => {
                assert_eq!(
                    *pl,
                    format!("PASS {check}"),
                    "{name}: Popek departs from the manual"
                );
                assert!(
                    ql.starts_with(&format!("FAIL {check}")),
                    "{name}: QEMU now gets {check} right ({ql:?}): drop it from \
                     QEMU_DEVIATIONS ({})",
                    dev.reason
                );
            }
            None => assert_eq!(
                ql, pl,
                "{name}: serial output differs (left QEMU, right Popek)"
            ),
        }
    }
    true
}

fn qemu_installed() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a command to completion, killing it if it outlives `limit`.
fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let start = Instant::now();
    while child.try_wait().expect("wait works").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{cmd:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output is collected")
}

/// QEMU's and Popek's arguments for booting `rom` the way its file name says.
fn boot_args(rom: &Path) -> (Vec<&'static str>, Vec<&'static str>) {
    if rom.extension().is_some_and(|e| e == "bin") {
        (vec!["-bios"], vec!["--bios"])
    } else {
        (
            vec!["-append", LOOP_ARGS, "-kernel"],
            vec!["--append", LOOP_ARGS],
        )
    }
}

#[test]
fn every_rom_prints_the_same_under_qemu_and_popek() {
    if !qemu_installed() {
        eprintln!("skipped: {QEMU} not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("popek-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let popek = env!("CARGO_BIN_EXE_popek");
    let o = Command::new(popek)
        .args(["roms", "--extract"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut compared = 0;
    for line in String::from_utf8(o.stdout).unwrap().lines() {
        let rom = Path::new(line);
        let stem = rom.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if POPEK_ONLY.contains(&stem) {
            continue;
        }
        let (qemu_args, popek_args) = boot_args(rom);
        let mut qemu = Command::new(QEMU);
        qemu.args([
            "-accel",
            "tcg",
            "-m",
            "64",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .args([
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ])
        .args(&qemu_args)
        .arg(rom);
        let q = run_with_limit(qemu, QEMU_TIME_LIMIT);
        let p = Command::new(popek)
            .arg("run")
            .arg(rom)
            .args(&popek_args)
            .args(["--max-instructions", "2000000000"])
            .output()
            .unwrap();
        let name = rom.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let deviates = compare_outputs(
            name,
            &String::from_utf8_lossy(&q.stdout),
            &String::from_utf8_lossy(&p.stdout),
        );
        // isa-debug-exit: QEMU exits with (v << 1) | 1, Popek with v.
        let q_status = q.status.code().expect("QEMU exited");
        assert_eq!(
            q_status & 1,
            1,
            "{}: QEMU did not end through debug-exit",
            rom.display()
        );
        // Where QEMU fails checks, the ROM reports failure (status 1) and Popek not.
        let want = if deviates {
            Some(0)
        } else {
            Some(q_status >> 1)
        };
        assert_eq!(
            p.status.code(),
            want,
            "{}: exit status differs",
            rom.display()
        );
        compared += 1;
    }
    assert!(compared >= 9, "only {compared} ROMs compared");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn checks_qemu_gets_wrong_pass_under_popek() {
    let popek = env!("CARGO_BIN_EXE_popek");
    for dev in QEMU_DEVIATIONS {
        let p = Command::new(popek).args(["run", dev.rom]).output().unwrap();
        let out = String::from_utf8_lossy(&p.stdout);
        assert_eq!(p.status.code(), Some(0), "{}: {out}", dev.rom);
        for check in dev.checks {
            let line = format!("PASS {check}");
            assert!(
                out.lines().any(|l| l == line),
                "{}: no {line:?} in\n{out}",
                dev.rom
            );
        }
    }
}

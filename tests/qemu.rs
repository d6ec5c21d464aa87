//! QEMU is the oracle: every embedded ROM prints byte-for-byte the same under
//! `qemu-system-x86_64` (`-kernel` for Multiboot kernels, `-bios` for BIOS images) as
//! under `popek run`, and ends with the same status.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const QEMU: &str = "qemu-system-x86_64";
/// No ROM needs more than a few seconds under QEMU TCG; a hang must not stall the tests.
const QEMU_TIME_LIMIT: Duration = Duration::from_secs(120);
/// Keeps the `loop` ROM short; the other ROMs ignore their command line.
const LOOP_ARGS: &str = "iters=100000";

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
        assert_eq!(
            String::from_utf8_lossy(&q.stdout),
            String::from_utf8_lossy(&p.stdout),
            "{}: serial output differs (left QEMU, right Popek)",
            rom.display()
        );
        // isa-debug-exit: QEMU exits with (v << 1) | 1, Popek with v.
        let q_status = q.status.code().expect("QEMU exited");
        assert_eq!(
            q_status & 1,
            1,
            "{}: QEMU did not end through debug-exit",
            rom.display()
        );
        assert_eq!(
            Some(q_status >> 1),
            p.status.code(),
            "{}: exit status differs",
            rom.display()
        );
        compared += 1;
    }
    assert!(compared >= 8, "only {compared} ROMs compared");
    std::fs::remove_dir_all(dir).ok();
}

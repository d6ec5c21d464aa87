//! QEMU is the oracle: every embedded ROM prints byte-for-byte the same under
//! `qemu-system-x86_64 -kernel` as under `popek run`, and ends with the same status.

use std::process::Command;

const QEMU: &str = "qemu-system-x86_64";

fn qemu_installed() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
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
        let elf = std::path::Path::new(line);
        // A small loop count keeps QEMU's run short; other ROMs ignore it.
        let append = "iters=100000";
        let q = Command::new(QEMU)
            .args([
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
            .arg("-kernel")
            .arg(elf)
            .args(["-append", append])
            .output()
            .unwrap();
        let p = Command::new(popek)
            .arg("run")
            .arg(elf)
            .args(["--append", append, "--max-instructions", "2000000000"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&q.stdout),
            String::from_utf8_lossy(&p.stdout),
            "{}: serial output differs (left QEMU, right Popek)",
            elf.display()
        );
        // isa-debug-exit: QEMU exits with (v << 1) | 1, Popek with v.
        let q_status = q.status.code().expect("QEMU exited");
        assert_eq!(
            q_status & 1,
            1,
            "{}: QEMU did not end through debug-exit",
            elf.display()
        );
        assert_eq!(
            Some(q_status >> 1),
            p.status.code(),
            "{}: exit status differs",
            elf.display()
        );
        compared += 1;
    }
    assert!(compared >= 3, "only {compared} ROMs compared");
    std::fs::remove_dir_all(dir).ok();
}

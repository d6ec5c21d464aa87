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
const QEMU_DEVIATIONS: &[Deviation] = &[
    Deviation {
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
    },
    Deviation {
        rom: "platform",
        reason: "QEMU 7.2's TCG MSR emulation departs from the SDM: RDMSR of an MSR it does \
             not know returns 0 instead of raising #GP (Vol. 4, 2.1), WRMSR IA32_PAT \
             accepts the reserved memory types 2 and 3 (Vol. 3A, 12.12.2: #GP), and \
             WRMSR IA32_TIME_STAMP_COUNTER does not move the counter RDTSC reads \
             (Vol. 3B, 18.17)",
        checks: &[
            "msr-tsc-write-moves-the-counter",
            "msr-pat-reserved-type-raises-gp",
            "msr-unknown-raises-gp",
        ],
    },
];

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

/// QEMU with devices like popek-pc's: TCG, 64 MiB, COM1 on standard output,
/// isa-debug-exit at 0xF4, no default devices, and no reboot (a triple fault ends it).
/// The caller adds the machine, the guest and its devices.
fn qemu_command() -> Command {
    let mut qemu = Command::new(QEMU);
    qemu.args(["-accel", "tcg"]).args(test_roms::QEMU_ARGS);
    qemu
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
        let mut qemu = qemu_command();
        qemu.args(&qemu_args).arg(rom);
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

/// QEMU's microvm machine with modern virtio-mmio transports. It announces them on the
/// command line only to Linux kernels, so the test announces all 24 of its slots
/// (0xfeb00000 + n * 512) itself; the guest takes the ones whose device ID it wants.
fn microvm(rom: &Path, append: &str) -> Command {
    let slots: String = (0..24u64)
        .map(|n| {
            format!(
                " virtio_mmio.device=512@{:#x}:{}",
                0xfeb0_0000 + n * 512,
                5 + n
            )
        })
        .collect();
    let mut qemu = qemu_command();
    qemu.args(["-M", "microvm", "-global", "virtio-mmio.force-legacy=false"])
        .arg("-append")
        .arg(format!("{append}{slots}"))
        .arg("-kernel")
        .arg(rom);
    qemu
}

/// The output without the line naming where the device sits (QEMU's microvm and
/// popek-pc put virtio-mmio at different addresses).
fn without_location(out: &[u8], prefix: &str) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.starts_with(prefix))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Checks a device ROM's run under QEMU (`q`) against Popek's (`p`): QEMU passed
/// `check`, both printed the same (but for the line starting with `location`, where
/// the device sits, if given), and both ended as the ROM ends when every check passed
/// (isa-debug-exit: QEMU exits with (0 << 1) | 1, Popek with 0).
fn assert_same_device_run(q: &Output, p: &Output, check: &str, location: Option<&str>) {
    assert!(
        String::from_utf8_lossy(&q.stdout).contains(&format!("PASS {check}")),
        "QEMU: {}{}",
        String::from_utf8_lossy(&q.stdout),
        String::from_utf8_lossy(&q.stderr)
    );
    match location {
        Some(location) => assert_eq!(
            without_location(&q.stdout, location),
            without_location(&p.stdout, location)
        ),
        None => assert_eq!(
            String::from_utf8_lossy(&q.stdout),
            String::from_utf8_lossy(&p.stdout)
        ),
    }
    assert_eq!((q.status.code(), p.status.code()), (Some(1), Some(0)));
}

#[test]
fn disk_and_net_roms_run_the_same_on_qemu_devices() {
    if !qemu_installed() {
        eprintln!("skipped: {QEMU} not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("popek-qemu-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let popek = env!("CARGO_BIN_EXE_popek");
    assert!(Command::new(popek)
        .args(["roms", "--extract"])
        .arg(&dir)
        .output()
        .unwrap()
        .status
        .success());
    let image = |name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
        path
    };
    let drive = |path: &Path| format!("id=d0,file={},format=raw,if=none", path.display());
    let disk_rom = dir.join("disk.elf");

    // virtio-blk: microvm's virtio-blk-device against --device virtio.
    let (q_img, p_img) = (image("q-virtio.img"), image("p-virtio.img"));
    let mut qemu = microvm(&disk_rom, "kib=256");
    qemu.args(["-drive", &drive(&q_img)])
        .args(["-device", "virtio-blk-device,drive=d0,serial=POPEK-IMAGE"]);
    let q = run_with_limit(qemu, QEMU_TIME_LIMIT);
    let p = Command::new(popek)
        .args([
            "run", "disk", "--device", "virtio", "--append", "kib=256", "--disk",
        ])
        .arg(&p_img)
        .output()
        .unwrap();
    assert_same_device_run(&q, &p, "disk-data", Some("disk: virtio-blk at "));
    assert!(
        std::fs::read(&q_img).unwrap() == std::fs::read(&p_img).unwrap(),
        "virtio images"
    );

    // ATA: the pc machine's IDE disk against --device ata, the output identical.
    let (q_img, p_img) = (image("q-ata.img"), image("p-ata.img"));
    let mut qemu = qemu_command();
    qemu.args(["-append", "kib=256", "-kernel"])
        .arg(&disk_rom)
        .args(["-drive", &drive(&q_img)])
        .args([
            "-device",
            "ide-hd,drive=d0,bus=ide.0,unit=0,serial=POPEK-IMAGE",
        ]);
    let q = run_with_limit(qemu, QEMU_TIME_LIMIT);
    let p = Command::new(popek)
        .args([
            "run", "disk", "--device", "ata", "--append", "kib=256", "--disk",
        ])
        .arg(&p_img)
        .output()
        .unwrap();
    assert_same_device_run(&q, &p, "disk-data", None);
    assert!(
        std::fs::read(&q_img).unwrap() == std::fs::read(&p_img).unwrap(),
        "ATA images"
    );

    // virtio-net: QEMU has no loopback device, so its frames go out a UDP socket on
    // 127.0.0.1 addressed to itself, and come back in.
    let port = 20000 + std::process::id() % 20000;
    let mut qemu = microvm(&dir.join("net.elf"), "frames=16");
    qemu.args([
        "-netdev",
        &format!("socket,id=n0,udp=127.0.0.1:{port},localaddr=127.0.0.1:{port}"),
    ])
    .args([
        "-device",
        "virtio-net-device,netdev=n0,mac=52:54:50:4f:50:4b",
    ]);
    let q = run_with_limit(qemu, QEMU_TIME_LIMIT);
    let p = Command::new(popek)
        .args(["run", "net", "--device", "net", "--append", "frames=16"])
        .output()
        .unwrap();
    assert_same_device_run(&q, &p, "net-data", Some("net: virtio-net at "));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn boot_modules_load_as_under_qemu() {
    if !qemu_installed() {
        println!("skipped: {QEMU} not installed");
        return;
    }
    let popek = env!("CARGO_BIN_EXE_popek");
    let dir = std::env::temp_dir().join(format!("popek-qemu-modules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let one = dir.join("one.bin");
    let two = dir.join("two.bin");
    std::fs::write(&one, b"first module").unwrap();
    std::fs::write(&two, vec![0x5A; 9000]).unwrap();
    let kernel = dir.join("modules.elf");
    std::fs::write(&kernel, test_roms::find("modules").unwrap().image).unwrap();
    let (one, two) = (one.to_str().unwrap(), two.to_str().unwrap());
    let mut qemu = qemu_command();
    qemu.arg("-initrd")
        .arg(format!("{one} with args,{two}"))
        .arg("-kernel")
        .arg(&kernel);
    let q = run_with_limit(qemu, QEMU_TIME_LIMIT);
    let p = Command::new(popek)
        .arg("run")
        .arg(&kernel)
        .arg("--module")
        .arg(format!("{one},with args"))
        .arg("--module")
        .arg(two)
        .output()
        .unwrap();
    let (q, p) = (
        String::from_utf8_lossy(&q.stdout),
        String::from_utf8_lossy(&p.stdout),
    );
    assert!(p.contains("modules: 2\n"), "{p}");
    assert_eq!(q, p, "left QEMU, right Popek");
    std::fs::remove_dir_all(dir).ok();
}

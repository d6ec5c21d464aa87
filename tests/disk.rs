//! The `disk` ROM end to end through `popek run --device ata|virtio`: the same data
//! moved through the ATA PIO disk and virtio-blk, checked by the guest, with the cost
//! report compared; and an image file that keeps what the guest flushed when the run is
//! killed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn popek(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(args)
        .output()
        .expect("popek runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch file path for this test process.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("popek-disk-{}-{name}", std::process::id()))
}

/// The number after `label` on its report line: "vmm entries   443 (0.216 per KiB)"
/// gives 443 for the count and 0.216 for `per KiB`.
fn report_figure(report: &str, label: &str, per_kib: bool) -> f64 {
    let line = report
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in the report:\n{report}"));
    let rest = line[label.len()..].trim();
    let word = if per_kib {
        rest.split('(')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
    } else {
        rest.split_whitespace().next()
    };
    word.and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no figure in `{line}`"))
}

/// Runs the disk ROM on `device` with `extra` arguments; checks the guest's verdict and
/// returns the report.
fn run_disk(device: &str, kib: u32, extra: &[&str]) -> String {
    let append = format!("kib={kib}");
    let mut args = vec!["run", "disk", "--device", device, "--append", &append];
    args.extend_from_slice(extra);
    let out = popek(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{device}: {stdout}\n{stderr}");
    for case in ["disk-write", "disk-flush", "disk-read", "disk-data"] {
        assert!(
            stdout.contains(&format!("PASS {case}\n")),
            "{device}: {stdout}"
        );
    }
    assert!(stdout.contains("disk: id POPEK-MEMDISK\n"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    stderr
}

/// Both devices move the same data; virtio needs far fewer VMM entries for it.
fn compare(kib: u32, extra: &[&str]) {
    let ata = run_disk("ata", kib, extra);
    let virtio = run_disk("virtio", kib, extra);
    assert!(ata.contains("device        ata pio"), "{ata}");
    assert!(virtio.contains("device        virtio-blk"), "{virtio}");
    // Each moved the data both ways, plus IDENTIFY's 512 or GET_ID's 20 bytes.
    let data = f64::from(2 * kib * 1024);
    assert_eq!(report_figure(&ata, "moved", false), data + 512.0, "{ata}");
    assert_eq!(
        report_figure(&virtio, "moved", false),
        data + 20.0,
        "{virtio}"
    );
    // One notification per request: GET_ID, the 64 KiB writes, the flush, the reads.
    let requests = f64::from(2 * kib / 64 + 2);
    assert_eq!(report_figure(&virtio, "notifications", false), requests);
    assert_eq!(report_figure(&virtio, "interrupts", false), requests);
    let ata_per_kib = report_figure(&ata, "vmm entries", true);
    let virtio_per_kib = report_figure(&virtio, "vmm entries", true);
    // ATA moves 2 bytes per exit: at least 512 per KiB.
    assert!(ata_per_kib >= 512.0, "{ata}");
    assert!(
        ata_per_kib >= 50.0 * virtio_per_kib,
        "virtio should need 50 x fewer VMM entries per KiB: ata {ata_per_kib}, virtio {virtio_per_kib}"
    );
}

#[test]
fn the_disk_rom_passes_on_ata_and_virtio_and_virtio_needs_50x_fewer_entries() {
    compare(256, &[]);
}

#[test]
fn the_disk_rom_passes_on_both_devices_under_kvm() {
    if !accel_kvm::kvm_available() {
        println!("skipped: /dev/kvm not available");
        return;
    }
    // Ring-0 32-bit code is emulated by this host's KVM, slowly: a small run.
    compare(64, &["--engine", "kvm"]);
}

/// The word the disk ROM writes at `sector`, 32-bit word `i` (its `word_at`).
fn rom_word(sector: u32, i: u32, seed: u32) -> u32 {
    let mut x = sector.wrapping_mul(0x9E37_79B1) ^ i.wrapping_add(seed.wrapping_mul(0x85EB_CA77));
    x ^= x >> 15;
    x = x.wrapping_mul(0x2C1B_3C6D);
    x ^= x >> 12;
    x
}

#[test]
fn flushed_data_is_in_the_image_when_the_run_is_killed() {
    let kib = 2048u32;
    let image = scratch("killed.img");
    std::fs::write(&image, vec![0u8; 4 << 20]).unwrap();
    let append = format!("kib={kib}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args([
            "run", "disk", "--device", "virtio", "--append", &append, "--disk",
        ])
        .arg(&image)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("popek starts");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut flushed = false;
    for line in lines {
        let line = line.unwrap();
        if line == "PASS disk-flush" {
            flushed = true;
            break;
        }
        assert!(!line.starts_with("FAIL"), "{line}");
    }
    // Killed while it reads the data back: no exit path of Popek's runs.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(flushed, "the guest never flushed");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::remove_file(&image).unwrap();
    let sectors = kib * 2;
    let mut bad = 0;
    for sector in 0..sectors {
        for i in 0..128 {
            let at = (sector * 512 + i * 4) as usize;
            let word = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            bad += u32::from(word != rom_word(sector, i, kib));
        }
    }
    assert_eq!(bad, 0, "words of the flushed data missing from the image");
    assert!(
        bytes[(sectors * 512) as usize..].iter().all(|&b| b == 0),
        "nothing written past the data"
    );
}

#[test]
fn bad_disk_options_get_one_error_line() {
    for (args, needle) in [
        (
            vec![
                "run",
                "disk",
                "--device",
                "virtio",
                "--disk",
                "/nonexistent/popek.img",
            ],
            "cannot open disk image /nonexistent/popek.img",
        ),
        (
            vec!["run", "disk", "--disk", "/nonexistent/popek.img"],
            "--disk: no disk device",
        ),
        (
            vec!["run", "disk", "--device", "ata", "--device", "virtio"],
            "one disk device per run",
        ),
    ] {
        let out = popek(&args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let odd = scratch("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let out = popek(&[
        "run",
        "disk",
        "--device",
        "ata",
        "--disk",
        odd.to_str().unwrap(),
    ]);
    std::fs::remove_file(&odd).unwrap();
    assert!(
        text(&out.stderr).contains("1000 bytes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2));
}

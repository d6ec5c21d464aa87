//! The `net` ROM end to end: frames sent over the virtio-net loopback come back
//! unchanged, and the summary written through virtio-console reaches stdout.

use std::process::{Command, Output};

fn popek(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(args)
        .output()
        .expect("popek runs")
}

fn check_net(extra: &[&str]) {
    let mut args = vec!["run", "net", "--device", "net", "--device", "console"];
    args.extend_from_slice(extra);
    let out = popek(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "net: virtio-net at 0xd0000000, mac 52:54:50:4f:50:4b",
        "PASS net-lost",
        "PASS net-data",
        "net: every frame came back",
        "PASS net-console",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no `{line}` in:\n{stdout}"
        );
    }
    assert!(stderr.contains("device        virtio-net"), "{stderr}");
    assert!(stderr.contains("device        virtio-console"), "{stderr}");
    assert!(
        stderr.contains("errors        0 (driver), 0 (requests)"),
        "{stderr}"
    );
}

#[test]
fn frames_come_back_over_the_loopback() {
    check_net(&["--append", "frames=40"]);
}

#[test]
fn frames_come_back_under_kvm() {
    if !accel_kvm::kvm_available() {
        println!("skipped: /dev/kvm not available");
        return;
    }
    check_net(&["--engine", "kvm", "--append", "frames=8"]);
}

#[test]
fn without_a_network_device_the_rom_says_so() {
    let out = popek(&["run", "net"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("FAIL net-found: no virtio-net device announced"),
        "{stdout}"
    );
}

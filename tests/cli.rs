//! End-to-end tests of the `popek` command: real guests, real exit statuses, and one
//! clear error line for every kind of bad input.

use std::path::PathBuf;
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

/// A scratch directory for this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("popek-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Asserts the run failed with exactly one line on stderr, mentioning `needle`.
fn assert_one_error_line(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got {:?}", o.status);
    assert_eq!(
        err.lines().count(),
        1,
        "expected one error line, got:\n{err}"
    );
    assert!(
        err.contains(needle),
        "error line should mention `{needle}`:\n{err}"
    );
    assert!(!err.contains("panicked"), "popek panicked:\n{err}");
}

#[test]
fn hello_prints_its_greeting_and_exits_zero() {
    let o = popek(&["run", "hello"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("Hello"), "stdout: {}", stdout(&o));
}

#[test]
fn arith_prints_only_pass_lines() {
    let o = popek(&["run", "arith"]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{out}\nstderr: {}",
        stderr(&o)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() >= 50,
        "expected many test cases, got {}",
        lines.len()
    );
    for line in lines {
        assert!(line.starts_with("PASS "), "not a PASS line: {line}");
    }
}

#[test]
fn loop_honours_its_command_line() {
    let o = popek(&["run", "loop", "--append", "iters=1234", "--stats"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("1234"), "stdout: {}", stdout(&o));
    // The loop itself is 2 instructions an iteration.
    let insns: u64 = stderr(&o)
        .lines()
        .find_map(|l| l.strip_prefix("instructions"))
        .and_then(|v| v.trim().parse().ok())
        .expect("--stats prints the instruction count");
    assert!(insns >= 2 * 1234, "only {insns} instructions");
}

#[test]
fn max_instructions_ends_a_runaway_guest() {
    let o = popek(&[
        "run",
        "loop",
        "--append",
        "iters=4000000000",
        "--max-instructions",
        "100000",
    ]);
    assert_eq!(o.status.code(), Some(124), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("budget"), "stderr: {}", stderr(&o));
}

#[test]
fn stats_count_exits_and_ports() {
    let o = popek(&["run", "hello", "--stats"]);
    let err = stderr(&o);
    assert!(err.contains("io-out"), "{err}");
    assert!(err.contains("port 0x03f8"), "{err}");
    assert!(err.contains("port 0x00f4"), "{err}");
}

#[test]
fn trace_prints_port_writes_as_they_happen() {
    let o = popek(&["run", "hello", "--trace", "io"]);
    assert!(stderr(&o).contains("trace:"), "{}", stderr(&o));
    assert!(stderr(&o).contains("out port 0x00f4"), "{}", stderr(&o));
}

#[test]
fn roms_lists_and_extracts_every_rom() {
    let list = stdout(&popek(&["roms"]));
    for name in [
        "hello", "arith", "loop", "rings", "longmode", "timer", "realmode", "segments",
    ] {
        assert!(
            list.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{list}"
        );
    }
    let dir = scratch("extract");
    let o = popek(&["roms", "--extract", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let elf = std::fs::read(dir.join("hello.elf")).expect("hello.elf written");
    assert_eq!(&elf[..4], b"\x7fELF");
    let bios = std::fs::read(dir.join("realmode.bin")).expect("realmode.bin written");
    assert_eq!(
        bios.len() % 0x10000,
        0,
        "a BIOS image is whole 64 KiB units"
    );
    // An extracted file runs like the embedded ROM.
    let o = popek(&["run", dir.join("hello.elf").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn missing_file_is_one_clear_error() {
    let o = popek(&["run", "/nonexistent/kernel.elf"]);
    assert_one_error_line(&o, "/nonexistent/kernel.elf");
}

#[test]
fn unknown_rom_name_is_one_clear_error() {
    let o = popek(&["run", "no-such-rom"]);
    assert_one_error_line(&o, "no-such-rom");
}

#[test]
fn file_that_is_not_multiboot_is_one_clear_error() {
    let dir = scratch("notmb");
    let path = dir.join("notes.txt");
    std::fs::write(&path, "just some text, not a kernel\n".repeat(50)).unwrap();
    let o = popek(&["run", path.to_str().unwrap()]);
    assert_one_error_line(&o, "Multiboot");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn truncated_elf_is_one_clear_error() {
    let dir = scratch("trunc");
    let path = dir.join("hello-truncated.elf");
    let hello = popek_rom_bytes("hello", &dir);
    // Keep the Multiboot header (first page) but cut off the rest of the segment.
    std::fs::write(&path, &hello[..hello.len().min(4200)]).unwrap();
    let o = popek(&["run", path.to_str().unwrap()]);
    assert_one_error_line(&o, "hello-truncated.elf");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_options_are_rejected() {
    let o = popek(&["run", "hello", "--trace", "nonsense"]);
    assert_one_error_line(&o, "nonsense");
    let o = popek(&["run", "hello", "--ram", "0"]);
    assert_one_error_line(&o, "--ram");
}

/// The ELF of an embedded ROM, via `popek roms --extract`.
fn popek_rom_bytes(name: &str, dir: &std::path::Path) -> Vec<u8> {
    let o = popek(&["roms", "--extract", dir.to_str().unwrap()]);
    assert!(o.status.success());
    std::fs::read(dir.join(format!("{name}.elf"))).unwrap()
}

#[test]
fn bench_reports_the_interpreter_speed() {
    let o = popek(&["bench", "--iters", "200000", "--no-qemu", "--no-kvm"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("interpreter:") && out.contains("MIPS"),
        "{out}"
    );
    assert!(out.contains("start-up"), "{out}");
}

/// Skips the calling test, passing, on a host without usable /dev/kvm.
macro_rules! require_kvm {
    () => {
        if !accel_kvm::kvm_available() {
            println!("skipped: /dev/kvm not available");
            return;
        }
    };
}

/// What `popek` says when KVM's instruction emulator gives up on a guest instruction:
/// on hosts whose KVM emulates ring-0 code (PVM), one it does not implement, such as
/// ENTER with a nesting level.
const EMULATION_FAILED: &str = "instruction emulation failed";

/// Whether the host's KVM is PVM, which emulates guest ring-0 code in the host kernel
/// (the module that provides it is loaded).
fn pvm_host() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

#[test]
fn every_rom_prints_the_same_under_kvm_and_the_interpreter() {
    require_kvm!();
    for rom in test_roms::all() {
        let mut args = vec!["run", rom.name];
        // A short loop: under KVM emulating ring 0, a guest instruction costs ~1 µs.
        if rom.name == "loop" {
            args.extend(["--append", "iters=100000"]);
        }
        let interp = popek(&[&args[..], &["--engine", "interp"]].concat());
        let kvm = popek(&[&args[..], &["--engine", "kvm"]].concat());
        let (iout, kout) = (stdout(&interp), stdout(&kvm));
        let kerr = stderr(&kvm);
        let emulation_failed = kerr.lines().find(|l| l.contains(EMULATION_FAILED));
        if kout != iout && (pvm_host() || emulation_failed.is_some()) {
            // A limit of this host's KVM, not a difference of the engines. PVM emulates
            // ring-0 code with gaps of its own (QEMU + KVM on this host fails the same
            // ROMs at the same places): either it stops on an instruction it cannot
            // emulate, or the guest notices a wrong result and prints FAIL. Everything
            // before that must be the same.
            let same = kout
                .lines()
                .zip(iout.lines())
                .take_while(|(k, i)| k == i)
                .count();
            let departs = kout.lines().nth(same);
            let host_limit = match departs {
                Some(line) => line.starts_with("FAIL") && pvm_host(),
                None => emulation_failed.is_some(),
            };
            assert!(
                host_limit,
                "{}: KVM's output departs at line {} ({departs:?}) for no host reason; \
                 KVM printed\n{kout}\nthe interpreter\n{iout}",
                rom.name,
                same + 1
            );
            println!(
                "{}: this host's KVM deviates after {same} identical lines: {}",
                rom.name,
                departs.or(emulation_failed).unwrap_or_default()
            );
            continue;
        }
        assert_eq!(kout, iout, "{}: output differs (left KVM)", rom.name);
        assert_eq!(
            kvm.status.code(),
            interp.status.code(),
            "{}: exit status differs (left KVM); KVM's stderr:\n{kerr}",
            rom.name,
        );
    }
}

#[test]
fn engine_kvm_runs_the_guest_or_says_why_not() {
    let o = popek(&["run", "hello", "--engine", "kvm"]);
    match accel_kvm::check_kvm() {
        Ok(()) => {
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            assert_eq!(stdout(&o), stdout(&popek(&["run", "hello"])));
            // Warnings only: the CPUID leaves this host's KVM changes.
            for line in stderr(&o).lines() {
                assert!(line.starts_with("popek: warning: CPUID leaf"), "{line}");
            }
        }
        Err(why) => {
            assert_one_error_line(&o, &format!("popek: error: {why}"));
            assert_eq!(o.status.code(), Some(2));
        }
    }
}

#[test]
fn engine_auto_says_which_engine_it_took() {
    let o = popek(&["run", "hello", "--engine", "auto"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = stderr(&o).lines().next().unwrap_or_default().to_string();
    match accel_kvm::check_kvm() {
        Ok(()) => assert_eq!(first, "popek: engine auto: using kvm"),
        Err(why) => assert_eq!(first, format!("popek: engine auto: using interp ({why})")),
    }
}

#[test]
fn max_instructions_under_kvm_is_a_warning() {
    require_kvm!();
    let o = popek(&[
        "run",
        "hello",
        "--engine",
        "kvm",
        "--max-instructions",
        "10",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let warnings: Vec<_> = stderr(&o)
        .lines()
        .filter(|l| l.contains("--max-instructions"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        warnings,
        [
            "popek: warning: --max-instructions is not enforced under kvm, \
          which cannot count instructions"
        ]
    );
}

#[test]
fn bench_reports_kvm_figures() {
    require_kvm!();
    let o = popek(&["bench", "--iters", "1000", "--no-qemu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "KVM ring-3 (64-bit): ",
        "x native",
        "KVM ring-0 (64-bit): ",
        "  ring 3, Popek's KVM engine: ",
        "  ring 0, Popek's KVM engine: ",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
}

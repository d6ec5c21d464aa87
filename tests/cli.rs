//! End-to-end tests of the `popek` command: real guests, real exit statuses, and one
//! clear error line for every kind of bad input.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    // A short nanobenchmark table: bench_prints_a_number_per_engine_... checks it.
    let o = popek(&[
        "bench",
        "--iters",
        "200000",
        "--no-qemu",
        "--no-kvm",
        "--nano-iters",
        "100",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("interpreter:") && out.contains("MIPS"),
        "{out}"
    );
    assert!(out.contains("start-up"), "{out}");
    assert!(
        out.contains("interpreter (VMCALL stubs): hypercall") && out.contains("port-I/O exit"),
        "{out}"
    );
}

#[test]
fn the_nano_rom_runs_the_op_it_is_given_and_refuses_others() {
    let o = popek(&["run", "nano", "--append", "op=pagefault iters=7"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "nano: pagefault x 7\nPASS nano-pagefault-count\nPASS nano-pagefault-handled\n"
    );
    let o = popek(&["run", "nano", "--append", "op=pagefaults"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("FAIL nano-op: "), "{}", stdout(&o));
}

#[test]
fn bench_prints_a_number_per_engine_for_every_nanobenchmark() {
    let o = popek(&["bench", "--nano", "--nano-iters", "200", "--no-kvm"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let header = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("operation"))
        .unwrap_or_else(|| panic!("no header in:\n{out}"));
    let columns: Vec<&str> = header.split_whitespace().skip(1).collect();
    assert_eq!(columns, ["interp", "bt", "bt+full", "interp+vtx"], "{out}");
    // Adams and Agesen's operations, in their order.
    for op in "syscall in callret pagefault divzero ptemod cr3write".split(' ') {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(op))
            .unwrap_or_else(|| panic!("no {op} row in:\n{out}"));
        let cells: Vec<f64> = row
            .split_whitespace()
            .skip(1)
            .map(|c| {
                c.parse()
                    .unwrap_or_else(|_| panic!("{op}: {c:?} in {row:?}"))
            })
            .collect();
        assert_eq!(cells.len(), columns.len(), "{op}: {row:?}");
    }
    let o = popek(&["bench", "--nano", "--nano-iters", "5", "--no-kvm"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--nano-iters"), "{}", stderr(&o));
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
            // PVM runs 64-bit guests: a 32-bit guest that turns on 32-bit paging (the
            // para-virtualized ROMs have the VMM do it) triple-faults there.
            let triple_fault = pvm_host() && kerr.contains("triple fault");
            let host_limit = match departs {
                Some(line) => line.starts_with("FAIL") && pvm_host(),
                None => emulation_failed.is_some() || triple_fault,
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
            // Nothing on stderr: the CPUID leaves this host's KVM changes are told only
            // under --verbose (or --stats), and only those.
            assert_eq!(stderr(&o), "");
            let verbose = popek(&["run", "hello", "--engine", "kvm", "--verbose"]);
            assert_eq!(verbose.status.code(), Some(0), "{}", stderr(&verbose));
            for line in stderr(&verbose).lines() {
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
    let o = popek(&[
        "bench",
        "--iters",
        "1000",
        "--no-qemu",
        "--nano-iters",
        "100",
    ]);
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

/// Runs popek with its stdin empty and stdout and stderr as given, waiting at most
/// `limit` (a hang fails the test instead of stalling the run).
fn popek_with(args: &[&str], stdout: Stdio, stderr: Stdio, limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("popek runs");
    let start = Instant::now();
    while child.try_wait().expect("wait works").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("popek {args:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output is collected")
}

/// A pipe whose reader is gone: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    writer.into()
}

/// A file where every write fails with ENOSPC.
fn full_disk() -> Stdio {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full")
        .into()
}

/// Exit status when the reader of stdout or stderr went away (as for SIGPIPE).
const EXIT_BROKEN_PIPE: i32 = 141;
/// Exit status when stdout or stderr cannot be written.
const EXIT_OUTPUT: i32 = 74;
/// Exit status after Ctrl-C.
const EXIT_INTERRUPTED: i32 = 130;
/// Longer than any of these runs takes.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_closed_pipe_ends_popek_quietly() {
    for args in [
        &["roms"][..],
        &["run", "hello"],
        &["run", "arith", "--stats"],
    ] {
        let o = popek_with(args, closed_pipe(), Stdio::piped(), LIMIT);
        assert_eq!(
            o.status.code(),
            Some(EXIT_BROKEN_PIPE),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("error"), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
    // The trace and stderr are the same pipe in `2>&1 | head`.
    let o = popek_with(
        &["run", "rings", "--trace", "all"],
        Stdio::null(),
        closed_pipe(),
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(EXIT_BROKEN_PIPE));
    let o = popek_with(
        &["run", "hello", "--stats"],
        Stdio::null(),
        closed_pipe(),
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(EXIT_BROKEN_PIPE));
}

#[test]
fn a_full_disk_is_one_error_line() {
    let o = popek_with(&["roms"], full_disk(), Stdio::piped(), LIMIT);
    assert_eq!(o.status.code(), Some(EXIT_OUTPUT));
    assert_one_error_line(&o, "cannot write to standard output");
    let o = popek_with(&["run", "hello"], full_disk(), Stdio::piped(), LIMIT);
    assert_eq!(o.status.code(), Some(EXIT_OUTPUT));
    assert_one_error_line(&o, "the guest's serial output is lost");
    // With stderr full, only the status can tell.
    for args in [
        &["run", "hello", "--stats"][..],
        &["run", "rings", "--trace", "all"],
    ] {
        let o = popek_with(args, Stdio::null(), full_disk(), LIMIT);
        assert_eq!(o.status.code(), Some(EXIT_OUTPUT), "{args:?}");
    }
}

#[test]
fn bad_options_are_one_line_and_help_still_works() {
    for args in [
        &["run", "hello", "--no-such-option"][..],
        &["run", "hello", "--ram"],
        &["run", "hello", "--engine", "warp"],
        &["run", "hello", "--ram", "lots"],
        &["run"],
        &["no-such-command"],
        &[],
    ] {
        let o = popek(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_one_error_line(&o, "popek: error: ");
        assert!(!stderr(&o).contains("Usage"), "{args:?}: {}", stderr(&o));
    }
    let o = popek(&["run", "hello", "--engine", "warp"]);
    assert_one_error_line(&o, "possible values: interp, kvm, auto");
    for args in [&["--help"][..], &["run", "--help"], &["--version"]] {
        let o = popek(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(!stdout(&o).is_empty(), "{args:?}");
    }
}

#[test]
fn rom_files_that_are_not_regular_files_are_refused() {
    let dir = scratch("special");
    let fifo = dir.join("fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c_path` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let dir_arg = dir.to_str().unwrap();
    let fifo_arg = fifo.to_str().unwrap();
    for (args, kind) in [
        (&["run", "/dev/zero"][..], "a character device"),
        (&["run", "--bios", "/dev/urandom"], "a character device"),
        (&["run", dir_arg], "a directory"),
        // No writer: opening must not wait for one.
        (&["run", fifo_arg], "a FIFO"),
    ] {
        let o = popek_with(args, Stdio::piped(), Stdio::piped(), LIMIT);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_one_error_line(&o, &format!("is {kind}, not a regular file"));
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn rom_files_larger_than_any_rom_are_refused() {
    let dir = scratch("large");
    let kernel = dir.join("huge.elf");
    // Sparse: 65 MiB that take no disk space.
    let file = std::fs::File::create(&kernel).unwrap();
    file.set_len(65 << 20).unwrap();
    let path = kernel.to_str().unwrap();
    let o = popek(&["run", path]);
    assert_one_error_line(&o, "is larger than the guest's RAM (64 MiB, --ram)");
    // With room for it, it is read (and is no kernel).
    let o = popek(&["run", path, "--ram", "128"]);
    assert_one_error_line(&o, "Multiboot");
    file.set_len(2 << 20).unwrap();
    let o = popek(&["run", "--bios", path]);
    assert_one_error_line(&o, "is larger than a BIOS image can be (1 MiB)");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_file_name_that_is_not_utf8_is_accepted() {
    let dir = scratch("nonutf8");
    let hello = popek_rom_bytes("hello", &dir);
    let path = dir.join(std::ffi::OsStr::from_bytes(b"hello-\xff.elf"));
    std::fs::write(&path, hello).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_popek"))
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("Hello"), "{}", stdout(&o));
    std::fs::remove_dir_all(dir).ok();
}

/// Whether process `pid` blocks SIGINT: Popek does once it waits for Ctrl-C.
fn blocks_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

/// Runs the `loop` ROM for longer than any test, presses Ctrl-C once it runs, and
/// returns what Popek printed.
fn ctrl_c_on_a_long_loop(engine: &str) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(["run", "loop", "--append", "iters=4000000000", "--stats"])
        .args(["--engine", engine])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("popek runs");
    let pid = child.id() as i32;
    let signal = |signal| {
        // SAFETY: kill has no memory-safety preconditions; `pid` is our child's, not yet
        // reaped (the waiting thread below reaps it only once it ended).
        unsafe { libc::kill(pid, signal) }
    };
    let start = Instant::now();
    while !blocks_sigint(child.id()) {
        if start.elapsed() > LIMIT {
            signal(libc::SIGKILL);
            panic!("popek never got ready for Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Well into the guest's loop.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(signal(libc::SIGINT), 0);
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match result.recv_timeout(LIMIT) {
        Ok(output) => output.expect("output is collected"),
        Err(_) => {
            signal(libc::SIGKILL);
            panic!("Ctrl-C did not end the run");
        }
    }
}

/// Checks a run that Ctrl-C ended: status 130, the stats and the summary printed.
fn assert_interrupted(o: &Output) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(EXIT_INTERRUPTED), "{err}");
    assert!(err.contains("stop          stopped on request"), "{err}");
    assert!(err.contains("instructions  "), "{err}");
    assert!(
        err.contains("popek: interrupted (Ctrl-C) at rip 0x"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn ctrl_c_stops_the_interpreter_and_prints_the_stats() {
    let o = ctrl_c_on_a_long_loop("interp");
    assert_interrupted(&o);
    let insns: u64 = stderr(&o)
        .lines()
        .find_map(|l| l.strip_prefix("instructions"))
        .and_then(|v| v.trim().parse().ok())
        .expect("--stats prints the instruction count");
    assert!(insns > 0, "the guest ran before Ctrl-C");
}

#[test]
fn ctrl_c_stops_kvm_and_prints_the_stats() {
    require_kvm!();
    assert_interrupted(&ctrl_c_on_a_long_loop("kvm"));
}

#[test]
#[expect(
    clippy::zombie_processes,
    reason = "wait4 reaps the child, and gives its peak memory as well"
)]
fn a_guest_sweeping_mmio_runs_in_bounded_memory_with_short_stats() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(["run", "mmio", "--append", "count=10000000", "--stats"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("popek runs");
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing its status and resource use into valid,
    // exclusively borrowed places.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "mmio: 10000000 stores past RAM\n");
    // ru_maxrss is in KiB.
    assert!(
        usage.ru_maxrss < 100 << 10,
        "peak RSS {} KiB for 10^7 MMIO addresses",
        usage.ru_maxrss
    );
    assert!(
        err.lines().count() < 100,
        "{} lines of stats",
        err.lines().count()
    );
    assert!(err.contains("mmio-write 10000000"), "{err}");
    assert!(err.contains("mmio others   0 reads, "), "{err}");
}

#[test]
fn modules_reach_the_kernel_and_a_missing_one_is_one_error_line() {
    let dir = scratch("modules");
    let file = dir.join("initrd.img");
    std::fs::write(&file, b"PK").unwrap();
    let arg = format!("{},root=/dev/ram", file.display());
    let o = popek(&["run", "modules", "--module", &arg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = format!(
        "module 0: \"{} root=/dev/ram\" 2 bytes: 0x00000050 0x0000004b\n",
        file.display()
    );
    assert!(stdout(&o).contains(&want), "{}", stdout(&o));
    let o = popek(&["run", "modules", "--module", "/nonexistent/initrd"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("--module /nonexistent/initrd: cannot read it"));
    std::fs::remove_dir_all(dir).ok();
}

//! The real gdb (`gdb -batch -x script`, the Debian gdb) against `popek run --gdb`, and
//! a raw client that breaks the protocol. Skipped where gdb is not installed (`.ci/run`
//! installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longer than any of these sessions takes, short enough that a hang fails the test.
const DEADLINE: Duration = Duration::from_secs(120);

/// `popek run ROM --gdb 127.0.0.1:0 ARGS`, listening.
struct Popek {
    child: Child,
    /// Where it listens.
    addr: String,
    /// Its stderr lines, as they come.
    stderr: mpsc::Receiver<String>,
}

impl Popek {
    fn start(rom: &str, args: &[&str]) -> Popek {
        let mut child = Command::new(env!("CARGO_BIN_EXE_popek"))
            .args(["run", rom, "--gdb", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("popek starts");
        let (lines, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let first = stderr
            .recv_timeout(DEADLINE)
            .expect("popek says where it listens");
        let addr = first
            .split("target remote ")
            .nth(1)
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no address in `{first}`"))
            .to_string();
        Popek {
            child,
            addr,
            stderr,
        }
    }

    /// Waits for the stderr line containing `what`.
    fn expect_line(&self, what: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(e) => panic!("popek never said `{what}`: {e}"),
            }
        }
    }

    /// Waits for popek to end: its status, its stdout and the rest of its stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let status = wait(&mut self.child);
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let err: Vec<String> = self.stderr.try_iter().collect();
        (status, out, err.join("\n"))
    }
}

/// Waits for `child`, killing it after [`DEADLINE`].
fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gdb_installed() -> bool {
    let found = Command::new("gdb")
        .arg("--version")
        .stdout(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: gdb not installed");
    }
    found
}

/// A scratch directory for this test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("popek-gdb-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The ELF file of the embedded ROM `name`, with its symbols, written to `dir`.
fn rom_elf(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.elf"));
    std::fs::write(&path, test_roms::find(name).unwrap().image).unwrap();
    path
}

/// Runs `gdb -batch` on the script `text`; what gdb printed.
fn run_gdb(dir: &Path, text: &str) -> String {
    let script = dir.join("script.gdb");
    std::fs::write(&script, text).unwrap();
    let mut child = Command::new("gdb")
        .args(["-nx", "-batch", "-x"])
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gdb starts");
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let _ = stdout.read_to_string(&mut out);
    wait(&mut child);
    out + &reader.join().unwrap()
}

/// Runs gdb with `commands` after connecting to `popek` with `elf`'s symbols; what
/// gdb printed.
fn gdb(dir: &Path, popek: &Popek, elf: &Path, commands: &str) -> String {
    run_gdb(
        dir,
        &format!(
            "set pagination off\nset confirm off\nset architecture i386:x86-64\n\
             file {}\ntarget remote {}\n{commands}\n",
            elf.display(),
            popek.addr
        ),
    )
}

/// Where gdb is installed: `popek run ROM --gdb ARGS` and gdb running `commands`
/// against it with the ROM's symbols (in the scratch directory `name`); what gdb
/// printed, and popek, to finish.
fn session(name: &str, rom: &str, args: &[&str], commands: &str) -> Option<(String, Popek)> {
    if !gdb_installed() {
        return None;
    }
    let dir = scratch(name);
    let elf = rom_elf(&dir, rom);
    let popek = Popek::start(rom, args);
    let out = gdb(&dir, &popek, &elf, commands);
    Some((out, popek))
}

/// Asserts `text` has a line that contains every one of `parts`, in order.
fn assert_line(text: &str, parts: &[&str]) {
    let found = text.lines().any(|line| {
        let mut rest = line;
        parts.iter().all(|p| match rest.find(p) {
            Some(at) => {
                rest = &rest[at + p.len()..];
                true
            }
            None => false,
        })
    });
    assert!(found, "no line with {parts:?} in gdb's output:\n{text}");
}

/// The session a student has with the `rings` ROM: break on a symbol, look at the
/// registers and the stack, step from ring 3 into the kernel's handler, watch a
/// write, ask the monitor, and run to the guest's exit.
#[test]
fn gdb_session_on_the_interpreter() {
    rings_session("interp", "bt");
}

/// The same session on the translator, moving the guest to the interpreter at the
/// watchpoint. While gdb has breakpoints or watchpoints set, the translator runs
/// blocks through the interpreter's debugging path (it looks at every instruction);
/// the interpreter's session above ends on the translator, with none set, translated.
#[test]
fn gdb_session_on_the_translator() {
    rings_session("bt", "interp");
}

/// The `rings` session on `engine`, moving the guest to `other` at the watchpoint.
fn rings_session(engine: &str, other: &str) {
    let script = format!(
        "break main
continue
info registers
x/8x $sp
monitor phys 0x100000 16
break user_main
continue
monitor ring
monitor walk 0x103000
monitor disas 0x103000 1
while ($cs & 3) == 3
  stepi
end
monitor ring
x/i $pc
monitor trace 2
watch *(int *)&seen_sysenter
continue
delete
monitor engine {other}
monitor counters
continue"
    );
    let Some((out, popek)) = session(
        &format!("session-{engine}"),
        "rings",
        &["--engine", engine],
        &script,
    ) else {
        return;
    };
    assert_line(&out, &["Breakpoint 1, ", " in main ()"]);
    // info registers: the system registers, with the names of their bits.
    assert_line(&out, &["cr0", "0x11", "[ PE ET ]"]);
    assert_line(&out, &["cr3", "0x0"]);
    assert_line(&out, &["efer", "0x0", "[ ]"]);
    assert_line(&out, &["fs_base", "0x0"]);
    // x/8x: two lines of four words, the first the return address into _start.
    assert_line(&out, &[":\t0x00100", "\t0x2badb002\t0x00009000\t"]);
    assert_line(&out, &["Breakpoint 2, ", " in user_main ()"]);
    assert_line(&out, &["ring 3, 32-bit protected mode, 32-bit paging"]);
    // The Multiboot header's magic, 0x1BADB002, at the start of the image.
    assert_line(&out, &["0x00100000: 02 b0 ad 1b"]);
    // The task's code: a user page, mapped one to one through a PDE and a PTE.
    assert_line(&out, &["PDE   at 0x"]);
    assert_line(&out, &["PTE   at 0x"]);
    assert_line(&out, &["-> physical 0x103000 (4 KiB page, user"]);
    assert_line(&out, &["=> 0x00103000:  "]);
    // stepi: the INT 0x80 lands in the kernel's stub for vector 0x80.
    assert_line(&out, &["ring 0, 32-bit protected mode"]);
    assert_line(&out, &["=> 0x", "<trap32_stubs+", "push"]);
    assert_line(&out, &["ring 3 -> 0: int 0x80"]);
    // The watchpoint fires when the kernel first sees SYSENTER.
    assert_line(&out, &["Hardware watchpoint 3: *(int *)&seen_sysenter"]);
    assert_line(&out, &["Old value = 0"]);
    assert_line(&out, &["New value = 1"]);
    assert_line(&out, &[&format!("engine: {engine} -> {other}")]);
    assert_line(
        &out,
        &[&format!("engine {other}, "), " instructions retired"],
    );
    assert_line(&out, &["ring transitions:", "3->0"]);
    // After the VMM's counters, the engine's own: the translator has them.
    if other == "bt" {
        assert_line(&out, &["blocks translated: "]);
        assert_line(&out, &["translation flushes: code written: "]);
    } else {
        assert!(!out.contains("blocks translated"), "{out}");
    }
    assert_line(&out, &["[Inferior 1 (process 1) exited normally]"]);
    let (status, stdout, stderr) = popek.finish();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stdout.contains("PASS sysenter"), "stdout:\n{stdout}");
    assert!(!stdout.contains("FAIL"), "stdout:\n{stdout}");
}

/// The same debugger on KVM, through KVM's guest-debug interface: a hardware
/// breakpoint on a symbol, single steps, an engine switch at a stop and back, and the
/// guest's exit. The `hello` ROM, because it is the one this host's KVM (PVM, which
/// emulates 32-bit ring-0 code) runs whole; PVM's emulation does not raise data
/// breakpoints, so watchpoints under KVM are left to hosts with real VMX or SVM.
#[test]
fn gdb_session_on_kvm() {
    if !accel_kvm::kvm_available() {
        println!("skipped: /dev/kvm not available");
        return;
    }
    let Some((out, popek)) = session(
        "kvm",
        "hello",
        &["--engine", "kvm"],
        "monitor engine
hbreak main
continue
info registers rip cr0 efer
stepi
stepi
delete
monitor engine interp
stepi
monitor engine kvm
break serial_putc
continue
delete
continue",
    ) else {
        return;
    };
    assert_line(&out, &["engine: kvm"]);
    assert_line(&out, &["Breakpoint 1, 0x0000000000100010 in main ()"]);
    assert_line(&out, &["cr0", "[ PE ET ]"]);
    assert_line(&out, &["0x0000000000100011 in main ()"]);
    assert_line(&out, &["0x0000000000100013 in main ()"]);
    assert_line(&out, &["engine: kvm -> interp"]);
    assert_line(&out, &["engine: interp -> kvm"]);
    assert_line(&out, &["Breakpoint 2, ", " in serial_putc ()"]);
    assert_line(&out, &["[Inferior 1 (process 1) exited normally]"]);
    let (status, stdout, stderr) = popek.finish();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stdout.contains("Hello from a Popek guest!"), "{stdout}");
}

/// Sends `bytes` and reads what comes back, up to the end of a packet (or for 5 s).
fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> String {
    stream
        .write_all(bytes)
        .expect("popek takes a well-formed packet");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.contains(&b'#') {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A packet with its checksum.
fn packet(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |s, b| s.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

/// Garbage, a bad checksum, a truncated packet, and a client that leaves while the
/// guest runs: Popek survives each, and the next gdb debugs the guest.
#[test]
fn gdb_protocol_abuse_leaves_popek_serving() {
    if !gdb_installed() {
        return;
    }
    let dir = scratch("abuse");
    let elf = rom_elf(&dir, "loop");
    // Long enough to be running when the client leaves.
    let popek = Popek::start("loop", &["--append", "iters=4000000000"]);

    // Each on a connection of its own: Popek may hang up on what is not the protocol.
    for abuse in [
        &b"\x00\xff garbage }}}$$$#zz"[..],
        b"$qSupported:multiprocess+#00",
        b"$qSupported:swbreak+;hwbr",
    ] {
        let mut client = TcpStream::connect(&popek.addr).unwrap();
        let _ = client.write_all(abuse);
        std::thread::sleep(Duration::from_millis(100));
        drop(client);
        popek.expect_line("gdb connection ended");
    }

    let mut second = TcpStream::connect(&popek.addr).unwrap();
    let reply = exchange(&mut second, &packet("?"));
    assert!(
        reply.contains("$S") || reply.contains("$T"),
        "reply: {reply:?}"
    );
    second.write_all(b"+").unwrap();
    // Continue, then Ctrl-C (the 0x03 byte) stops the running guest: SIGINT.
    second.write_all(&packet("c")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let reply = exchange(&mut second, b"\x03");
    assert!(reply.contains("$S02"), "reply to Ctrl-C: {reply:?}");
    second.write_all(b"+").unwrap();
    second.write_all(&packet("c")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(second);
    popek.expect_line("gdb connection ended");
    popek.expect_line("paused until gdb connects again");

    let out = gdb(
        &dir,
        &popek,
        &elf,
        "monitor ring
monitor counters
kill",
    );
    assert_line(&out, &["ring 0, 32-bit protected mode"]);
    assert_line(&out, &["engine interp, ", " instructions retired"]);
    let (status, _, stderr) = popek.finish();
    assert!(stderr.contains("gdb killed the guest"), "stderr:\n{stderr}");
    assert_eq!(status.code(), Some(130), "stderr:\n{stderr}");
}

/// Read and access watchpoints, on the `rings` kernel's flag for its copy-on-write
/// repair: read first (is the page fixed already?), then written.
#[test]
fn read_and_access_watchpoints() {
    let Some((out, popek)) = session(
        "rwatch",
        "rings",
        &[],
        "rwatch *(int *)&ro_page_fixed
continue
delete
awatch *(int *)&ro_page_fixed
continue
delete
continue",
    ) else {
        return;
    };
    assert_line(
        &out,
        &["Hardware read watchpoint 1: *(int *)&ro_page_fixed"],
    );
    assert_line(&out, &["Value = 0"]);
    assert_line(
        &out,
        &["Hardware access (read/write) watchpoint 2: *(int *)&ro_page_fixed"],
    );
    assert_line(&out, &["New value = 1"]);
    assert_line(&out, &["[Inferior 1 (process 1) exited normally]"]);
    let (status, _, stderr) = popek.finish();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
}

/// A real-mode guest (a BIOS image from the reset vector): the monitor says so and
/// decodes 16-bit code; gdb steps it and reads memory at linear addresses (RAM only:
/// the BIOS image at the top of 4 GiB is a device).
#[test]
fn a_real_mode_guest() {
    if !gdb_installed() {
        return;
    }
    let dir = scratch("realmode");
    let popek = Popek::start("realmode", &[]);
    // No ELF: the image is raw, and gdb takes the architecture from Popek.
    let out = run_gdb(
        &dir,
        &format!(
            "set pagination off\nset confirm off\ntarget remote {}\n\
             info registers cs rip\nmonitor ring\n\
             x/1xb $cs*16+$pc\nstepi\ninfo registers cs rip\nmonitor disas\nkill\n",
            popek.addr
        ),
    );
    assert_line(&out, &["cs", "0xf000"]);
    assert_line(&out, &["rip", "0xfff0"]);
    assert_line(&out, &["ring 0, real mode, paging off"]);
    // The far jump at the reset vector (CS.base is 0xFFFF0000 until it jumps, where
    // only the BIOS device answers), whose image shows below 1 MiB too, at CS * 16 + IP.
    assert_line(&out, &["0xffff0:", "0xea"]);
    // One step later, CS.base is 0xF0000.
    assert_line(&out, &["rip", "0x0"]);
    assert_line(&out, &["=> 0x000f0000:  fc", "cld"]);
    assert_line(&out, &["16-bit code:"]);
    let (status, _, stderr) = popek.finish();
    assert_eq!(status.code(), Some(130), "stderr:\n{stderr}");
}

#[test]
fn a_bad_gdb_address_is_one_error_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_popek"))
        .args(["run", "hello", "--gdb", "nowhere:port"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("popek: error: --gdb nowhere:port: cannot listen there"),
        "{err}"
    );
}

/// gdb writes registers (the system ones too) and memory; a segment selector it cannot
/// write alone (the descriptor would have to be loaded as well). After `detach` the
/// guest runs on to its end, and Popek exits with its status.
#[test]
fn register_and_memory_writes_then_detach() {
    let Some((out, popek)) = session(
        "writes",
        "hello",
        &[],
        "break main
continue
set $rax = 0x1234
set $cr2 = 0xdead000
info registers rax cr2
set {int}0x104000 = 0x55aa
x/1x 0x104000
monitor phys 0x104000 4
monitor writephys 0x104004 de ad
x/2xb 0x104004
delete
detach",
    ) else {
        return;
    };
    assert_line(&out, &["rax", "0x1234"]);
    assert_line(&out, &["cr2", "0xdead000"]);
    assert_line(&out, &["0x104000:", "0x000055aa"]);
    // Paging is off: the same bytes at the same physical address, and back.
    assert_line(&out, &["0x00104000: aa 55 00 00"]);
    assert_line(&out, &["wrote 2 bytes at physical 0x104004"]);
    assert_line(&out, &["0x104004:", "0xde", "0xad"]);
    assert_line(&out, &["[Inferior 1 (process 1) detached]"]);
    let (status, stdout, stderr) = popek.finish();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("gdb detached: the guest runs on"),
        "{stderr}"
    );
    assert!(stdout.contains("Hello from a Popek guest!"), "{stdout}");
}

/// The error ends gdb's batch script, and gdb detaches: the guest runs to its end.
#[test]
fn a_selector_is_not_written_alone() {
    let Some((out, popek)) = session("selector", "hello", &[], "set $cs = 0x10") else {
        return;
    };
    assert_line(&out, &["Could not write registers"]);
    let (status, _, stderr) = popek.finish();
    assert!(
        stderr.contains("a segment selector cannot be written"),
        "{stderr}"
    );
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
}

/// With `--gdb-disconnect run`, a guest whose gdb hangs up runs on to its end.
#[test]
fn a_broken_connection_can_let_the_guest_run_on() {
    if !gdb_installed() {
        return;
    }
    let popek = Popek::start(
        "loop",
        &["--gdb-disconnect", "run", "--append", "iters=1000000"],
    );
    let mut client = TcpStream::connect(&popek.addr).unwrap();
    exchange(&mut client, &packet("?"));
    client.write_all(b"+").unwrap();
    drop(client);
    popek.expect_line("gdb connection ended");
    let (status, _, stderr) = popek.finish();
    assert!(
        stderr.contains("the guest runs on; gdb can connect again"),
        "{stderr}"
    );
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
}

/// A guest that crashes stops gdb with a signal, where its state can still be read;
/// going on ends it, and Popek exits as it does for a crash without gdb.
#[test]
fn a_triple_fault_is_a_signal_then_the_end() {
    let Some((out, popek)) = session(
        "crash",
        "hello",
        &[],
        "break main
continue
delete
set {short}$pc = 0x0b0f
continue
info registers rip
continue",
    ) else {
        return;
    };
    // UD2 with no IDT: the #UD cannot be delivered.
    assert_line(&out, &["Program received signal SIGSEGV"]);
    assert_line(&out, &["rip", "0x100010", "<main>"]);
    assert_line(&out, &["Program terminated with signal SIGSEGV"]);
    let (status, _, stderr) = popek.finish();
    assert!(
        stderr.contains("popek: gdb: the guest finished (SIGSEGV"),
        "{stderr}"
    );
    assert_eq!(status.code(), Some(125), "stderr:\n{stderr}");
}

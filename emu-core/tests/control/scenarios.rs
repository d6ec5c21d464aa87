//! Control-plane scenarios every engine must pass, with guests in 64-bit ring 3 (which
//! KVM runs natively even on hosts whose KVM emulates 32-bit and ring-0 code). emu-core's
//! control tests run them on the interpreter, accel-kvm's on KVM.

// Each test crate uses its own part of these modules.
#![allow(dead_code)]

pub use emu_core::testkit::kernel;

use emu_core::cpu::SegReg;
use emu_core::engine::{WatchKind, Watchpoint};
use emu_core::exit::DebugStop;
use emu_core::exit::StopReason;
use emu_core::machine::{EngineFactory, Machine, MachineHandle, Pause, Status};
use iced_x86::code_asm::{dword_ptr, eax, ebx, rbx, rcx, rdi, CodeAssembler};
use kernel::{assemble, Kernel, Program, CODE, RAM, USER_DATA};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The debug-exit port: a write ends the run with the value written.
pub const DEBUG_EXIT: u16 = devices::DEBUG_EXIT_BASE as u16;
/// RCX and RBX in `CpuState::gpr`.
pub const RCX: usize = 1;
/// See [`RCX`].
pub const RBX: usize = 3;
/// A running guest must be paused within this (the figure).
pub const PAUSE_WITHIN: Duration = Duration::from_millis(50);
/// How long a guest runs before the test touches it: long enough to be well inside its
/// loop on any engine.
pub const RUN_FIRST: Duration = Duration::from_millis(20);
/// A machine that is to stop does so well within this; the test fails rather than hangs.
pub const PROMPTLY: Duration = Duration::from_secs(10);
/// How many times [`pause_write_resume`] pauses the spinning guest.
const PAUSES: u32 = 5;
/// The status the guest of [`code_written_while_running`] exits with.
const PATCHED_EXIT: u32 = 0x5A;

/// A machine on the engine `engine` builds, with `program` in the long-mode test kernel
/// at CPL 3, which may write a doubleword to the debug-exit port.
pub fn ring3_machine(engine: Box<EngineFactory<'static>>, program: &Program) -> Machine {
    let mut kernel = Kernel::long();
    for port in DEBUG_EXIT..DEBUG_EXIT + 4 {
        kernel.allow_port(port);
    }
    let mut m = Machine::new(RAM, Box::new(std::io::sink()), engine).expect("machine builds");
    let state = kernel.install(m.ram_mut().as_mut_slice(), program);
    m.set_cpu_state(&state).expect("the engine takes the state");
    m
}

/// Lets a paused machine run on and waits for it to stop.
pub fn resume_and_wait(h: &MachineHandle) -> Status {
    h.resume().unwrap();
    h.wait(PROMPTLY).unwrap()
}

/// Drops the last handle, which ends the machine thread; the machine it hands back.
pub fn finish(h: MachineHandle, thread: JoinHandle<Machine>) -> Machine {
    drop(h);
    thread.join().expect("the machine thread ends cleanly")
}

/// Spins until RBX is not zero, then exits with it.
fn spin_on_rbx() -> Program {
    assemble(64, CODE, |a| {
        let spin = a.target("spin");
        a.label("spin")?;
        a.test(rbx, rbx)?;
        a.jz(spin)?;
        a.label("exit")?;
        a.mov(eax, ebx)?;
        a.out(u32::from(DEBUG_EXIT), eax)
    })
}

/// Pauses a guest that spins forever from this thread while it runs on the machine
/// thread, several times, each within [`PAUSE_WITHIN`]; reads its registers, writes
/// the one its loop tests, resumes it and sees it exit with that value. Returns the
/// slowest pause.
pub fn pause_write_resume(engine: Box<EngineFactory<'static>>) -> Duration {
    let program = spin_on_rbx();
    let (h, thread) = MachineHandle::spawn(ring3_machine(engine, &program), None).unwrap();
    let mut slowest = Duration::ZERO;
    let mut regs = None;
    for _ in 0..PAUSES {
        h.resume().unwrap();
        std::thread::sleep(RUN_FIRST);
        assert_eq!(h.status().unwrap(), Status::Running);
        let asked = Instant::now();
        let status = h.pause().unwrap();
        let took = asked.elapsed();
        assert_eq!(status, Status::Paused(Pause::Requested));
        assert!(took < PAUSE_WITHIN, "the pause took {took:?}");
        slowest = slowest.max(took);
        let now = h.registers().unwrap();
        assert!(
            (program.ip("spin")..program.ip("exit")).contains(&now.rip),
            "paused at {:#x}, in the loop",
            now.rip
        );
        assert_eq!(now.seg[SegReg::Cs as usize].selector & 3, 3, "in ring 3");
        assert_eq!(now.gpr[RBX], 0);
        regs = Some(now);
    }
    // Paused stays paused.
    let mut regs = regs.expect("paused at least once");
    std::thread::sleep(RUN_FIRST);
    assert_eq!(h.registers().unwrap().rip, regs.rip);
    assert_eq!(h.status().unwrap(), Status::Paused(Pause::Requested));

    regs.gpr[RBX] = 42;
    h.set_registers(regs).unwrap();
    assert_eq!(
        resume_and_wait(&h),
        Status::Finished(StopReason::Exited(42))
    );
    finish(h, thread);
    slowest
}

/// Replaces an instruction of the loop a running guest spins in, through the handle,
/// without pausing first: the guest runs the new instruction (a jump out of the loop).
pub fn code_written_while_running(engine: Box<EngineFactory<'static>>) {
    let program = assemble(64, CODE, |a| {
        let top = a.target("top");
        a.label("top")?;
        a.inc(rcx)?;
        a.jmp(top)?;
        a.label("exit")?;
        a.mov(eax, PATCHED_EXIT)?;
        a.out(u32::from(DEBUG_EXIT), eax)
    });
    let body = program.ip("top");
    let mut jump = CodeAssembler::new(64).unwrap();
    jump.jmp(program.ip("exit")).unwrap();
    let jump = jump.assemble(body).unwrap();
    // INC RCX is 3 bytes: a short jump fits in its place.
    assert!(jump.len() <= 3, "{jump:02x?}");

    let (h, thread) = MachineHandle::spawn(ring3_machine(engine, &program), None).unwrap();
    h.resume().unwrap();
    std::thread::sleep(RUN_FIRST);
    assert_eq!(h.status().unwrap(), Status::Running);
    h.write_linear(body, &jump).unwrap();
    assert_eq!(
        h.wait(PROMPTLY).unwrap(),
        Status::Finished(StopReason::Exited(PATCHED_EXIT))
    );
    assert!(h.registers().unwrap().gpr[RCX] > 0, "the loop ran before");
    assert_eq!(h.read_linear(body, jump.len()).unwrap(), jump);
    finish(h, thread);
}

/// Where [`debugged_stores`] stores.
const WATCHED: u64 = USER_DATA + 8;

/// A NOP, then two stores to [`WATCHED`], then an exit with what it holds.
fn debugged_stores() -> Program {
    assemble(64, CODE, |a| {
        a.mov(rdi, WATCHED)?;
        a.label("nop")?;
        a.nop()?;
        a.label("first")?;
        a.mov(dword_ptr(rdi), 1)?;
        a.label("second")?;
        a.mov(dword_ptr(rdi), 2)?;
        a.label("exit")?;
        a.mov(eax, dword_ptr(rdi))?;
        a.out(u32::from(DEBUG_EXIT), eax)
    })
}

/// Whether the engine `engine` builds stops at a breakpoint in 64-bit ring 3 (some
/// hosts' KVM, PVM among them, run that code natively without the debug registers).
pub fn stops_at_a_ring3_breakpoint(engine: Box<EngineFactory<'static>>) -> bool {
    let program = debugged_stores();
    let m = ring3_machine(engine, &program);
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    h.add_breakpoint(program.ip("exit")).unwrap();
    let status = resume_and_wait(&h);
    finish(h, thread);
    matches!(
        status,
        Status::Paused(Pause::Debug(DebugStop::Breakpoint { .. }))
    )
}

/// A debugger's breakpoint, write watchpoint and single steps on the engine `engine`
/// builds, through the control plane: a breakpoint stops before its instruction and
/// the run resumed there passes it; a step runs one instruction; the watchpoint stops
/// after each store; the breakpoint before the exit; and the guest exits with 2.
pub fn breakpoint_watchpoint_and_steps(engine: Box<EngineFactory<'static>>) {
    let program = debugged_stores();
    let m = ring3_machine(engine, &program);
    let (h, thread) = MachineHandle::spawn(m, None).unwrap();
    let rip = |h: &MachineHandle| h.registers().unwrap().rip;
    h.add_breakpoint(program.ip("nop")).unwrap();
    let at_nop = DebugStop::Breakpoint {
        addr: program.ip("nop"),
    };
    assert_eq!(resume_and_wait(&h), Status::Paused(Pause::Debug(at_nop)));
    assert_eq!(rip(&h), program.ip("nop"));
    assert_eq!(h.step(1).unwrap(), Status::Paused(Pause::StepDone));
    assert_eq!(rip(&h), program.ip("first"));
    let watch = Watchpoint {
        addr: WATCHED,
        len: 4,
        kind: WatchKind::Write,
    };
    h.add_watchpoint(watch).unwrap();
    h.add_breakpoint(program.ip("exit")).unwrap();
    let stored = Status::Paused(Pause::Debug(DebugStop::Watchpoint {
        addr: WATCHED,
        len: 4,
        write: true,
    }));
    for after in ["second", "exit"] {
        assert_eq!(resume_and_wait(&h), stored, "the store before {after}");
        assert_eq!(rip(&h), program.ip(after));
    }
    // The watchpoint stopped the run at the breakpoint's instruction, after the store:
    // that instruction has not run, and the next run starts with it, exempt.
    assert_eq!(resume_and_wait(&h), Status::Finished(StopReason::Exited(2)));
    finish(h, thread);
}

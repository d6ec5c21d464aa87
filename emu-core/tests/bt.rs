//! The binary translator through the control plane: the engine-generic scenarios, and
//! the same questions asked of a 32-bit ring-3 guest under paging, whose loop runs as
//! translated host code — a pause must stop host code within 50 ms, and code written
//! into a running loop must be what runs next.

#[path = "control/scenarios.rs"]
mod scenarios;

use emu_core::cpu::SegReg;
use emu_core::exit::StopReason;
use emu_core::machine::{bt_factory, Machine, MachineHandle, Pause, Status};
use iced_x86::code_asm::{eax, ebx, ecx, CodeAssembler};
use scenarios::kernel::{assemble, Kernel, Program, CODE, RAM};
use scenarios::{finish, resume_and_wait, DEBUG_EXIT, PAUSE_WITHIN, PROMPTLY, RBX, RCX, RUN_FIRST};
use std::time::Instant;

#[test]
fn a_spinning_long_mode_guest_is_paused_changed_and_resumed() {
    let slowest = scenarios::pause_write_resume(bt_factory());
    println!("bt: slowest pause {slowest:?}");
}

#[test]
fn code_written_into_a_running_long_mode_loop_is_executed() {
    scenarios::code_written_while_running(bt_factory());
}

/// A machine on the translator with `program` in the 32-bit test kernel (paging on) at
/// CPL 3, which may write to the debug-exit port.
fn legacy_ring3(program: &Program) -> Machine {
    let mut kernel = Kernel::legacy();
    for port in DEBUG_EXIT..DEBUG_EXIT + 4 {
        kernel.allow_port(port);
    }
    let mut m = Machine::new(RAM, Box::new(std::io::sink()), bt_factory()).unwrap();
    let state = kernel.install(m.ram_mut().as_mut_slice(), program);
    m.set_cpu_state(&state).unwrap();
    m
}

#[test]
fn translated_code_is_paused_within_50_ms_and_resumes() {
    // Counts in ECX until EBX is not zero: a loop the translator chains to itself.
    let program = assemble(32, CODE, |a| {
        let spin = a.target("spin");
        a.label("spin")?;
        a.inc(ecx)?;
        a.test(ebx, ebx)?;
        a.jz(spin)?;
        a.label("exit")?;
        a.mov(eax, ebx)?;
        a.out(u32::from(DEBUG_EXIT), eax)
    });
    let (h, thread) = MachineHandle::spawn(legacy_ring3(&program), None).unwrap();
    let mut count = 0;
    for _ in 0..5 {
        h.resume().unwrap();
        std::thread::sleep(RUN_FIRST);
        let asked = Instant::now();
        assert_eq!(h.pause().unwrap(), Status::Paused(Pause::Requested));
        let took = asked.elapsed();
        assert!(took < PAUSE_WITHIN, "the pause took {took:?}");
        let regs = h.registers().unwrap();
        assert!((program.ip("spin")..program.ip("exit")).contains(&regs.rip));
        assert_eq!(regs.seg[SegReg::Cs as usize].selector & 3, 3, "in ring 3");
        assert!(regs.gpr[RCX] > count, "the loop ran on");
        count = regs.gpr[RCX];
    }
    let mut regs = h.registers().unwrap();
    regs.gpr[RBX] = 7;
    h.set_registers(regs).unwrap();
    assert_eq!(resume_and_wait(&h), Status::Finished(StopReason::Exited(7)));
    finish(h, thread);
}

#[test]
fn code_written_into_a_running_translated_loop_is_executed() {
    let program = assemble(32, CODE, |a| {
        let top = a.target("top");
        a.label("top")?;
        a.inc(ecx)?;
        a.inc(ecx)?;
        a.jmp(top)?;
        a.label("exit")?;
        a.mov(eax, 0x5A)?;
        a.out(u32::from(DEBUG_EXIT), eax)
    });
    let body = program.ip("top");
    let mut jump = CodeAssembler::new(32).unwrap();
    jump.jmp(program.ip("exit")).unwrap();
    let jump = jump.assemble(body).unwrap();
    assert!(jump.len() <= 2, "{jump:02x?}");
    let (h, thread) = MachineHandle::spawn(legacy_ring3(&program), None).unwrap();
    h.resume().unwrap();
    std::thread::sleep(RUN_FIRST);
    assert_eq!(h.status().unwrap(), Status::Running);
    h.write_linear(body, &jump).unwrap();
    assert_eq!(
        h.wait(PROMPTLY).unwrap(),
        Status::Finished(StopReason::Exited(0x5A))
    );
    assert!(h.registers().unwrap().gpr[RCX] > 0, "the loop ran before");
    finish(h, thread);
}

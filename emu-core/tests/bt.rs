//! The binary translator through the control plane: the engine-generic scenarios, and
//! the same questions asked of a 32-bit ring-3 guest under paging, whose loop runs as
//! translated host code — a pause must stop host code within 50 ms, and code written
//! into a running loop must be what runs next.

#[path = "control/scenarios.rs"]
mod scenarios;

use emu_core::cpu::SegReg;
use emu_core::exit::StopReason;
use emu_core::machine::{bt_factory, Machine, MachineHandle, Pause, Status};
use iced_x86::code_asm::{eax, ebx, ecx};
use scenarios::kernel::{assemble, Kernel, Program, CODE, RAM};
use scenarios::{finish, resume_and_wait, DEBUG_EXIT, PAUSE_WITHIN, RBX, RCX, RUN_FIRST};
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
    scenarios::code_written_while_running_in(32, legacy_ring3);
}

#[test]
fn a_chain_of_more_blocks_than_the_code_buffer_holds_runs_on() {
    // A chain of short jumps, each to the next one 16 bytes on, then INC EAX and HLT:
    // more host code than the translator keeps, so it starts afresh several times,
    // each time while the block that just ran waits to be chained to the next.
    const STRIDE: u64 = 16;
    const JUMPS: u64 = 30_000;
    const START: u64 = 0x10_0000;
    let mut m = Machine::new(16 << 20, Box::new(std::io::sink()), bt_factory()).unwrap();
    let ram = m.ram_mut().as_mut_slice();
    for i in 0..JUMPS {
        let at = (START + i * STRIDE) as usize;
        ram[at..at + 2].copy_from_slice(&[0xEB, (STRIDE - 2) as u8]);
    }
    let end = (START + JUMPS * STRIDE) as usize;
    ram[end..end + 2].copy_from_slice(&[0x40, 0xF4]);
    m.set_cpu_state(&emu_core::cpu::CpuState::multiboot(START as u32, 0, 0))
        .unwrap();
    assert_eq!(m.run(10 * JUMPS).stop, StopReason::Halted);
    assert_eq!(m.cpu_state().unwrap().gpr[0], 1, "INC EAX ran");
    assert!(m
        .engine_counters()
        .iter()
        .any(|(name, n)| name == "translation flushes: buffer full" && *n > 0));
}

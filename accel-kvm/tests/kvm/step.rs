//! Single steps under KVM (KVM_GUESTDBG_SINGLESTEP): one instruction a run, the STI
//! interrupt shadow respected, and the debugger's breakpoints in the debug registers.

use crate::common::*;
use crate::guests::*;
use crate::require_kvm;
use accel_kvm::KvmEngine;
use emu_core::engine::{DebugConfig, Engine};
use emu_core::exit::{DebugStop, StopReason};
use emu_core::memory::GuestRam;
use emu_core::testkit::TestInterrupts;
use iced_x86::code_asm::*;

/// The vector the waiting interrupt comes in on.
const VECTOR: u8 = 0x20;

/// `sti; nop; nop; hlt` at [`ENTRY`], and a handler that halts; the handler's address.
fn sti_nop() -> Guest {
    assemble(|a| {
        let mut handler = a.create_label();
        a.mov(esp, STACK_TOP)?;
        a.sti()?;
        a.nop()?;
        a.nop()?;
        a.hlt()?;
        a.set_label(&mut handler)?;
        a.hlt()?;
        Ok(vec![handler])
    })
}

/// A KVM engine with `guest` loaded, its tables installed, at its first instruction.
fn engine_for(guest: &Guest) -> (KvmEngine, GuestRam) {
    let mut ram = GuestRam::new(RAM_SIZE).unwrap();
    load(&mut ram, guest);
    let mut state = emu_core::cpu::CpuState::multiboot(ENTRY as u32, 0, 0);
    install_descriptor_tables(&mut ram, &mut state, VECTOR, guest.labels[0]);
    let mut engine = KvmEngine::new(&ram).unwrap();
    engine.set_state(&state).unwrap();
    (engine, ram)
}

#[test]
fn single_steps_through_sti_take_the_interrupt_after_the_next_instruction() {
    require_kvm!();
    let guest = sti_nop();
    let handler = guest.labels[0];
    let (mut engine, ram) = engine_for(&guest);
    let mut pic = TestInterrupts::once(VECTOR, false);
    // MOV ESP, then STI with the interrupt already waiting.
    assert_eq!(engine.step(&ram, &mut pic, 1), StopReason::Budget);
    pic.pending = true;
    let mut rips = Vec::new();
    for _ in 0..3 {
        assert_eq!(engine.step(&ram, &mut pic, 1), StopReason::Budget);
        rips.push(engine.state().unwrap().rip);
    }
    let sti = ENTRY + 5;
    println!("kvm: steps ended at {rips:#x?}, handler at {handler:#x}");
    // STI; the first NOP, inside the shadow; then the interrupt, taken before the
    // second NOP: the step ends in the handler, which returns to the second NOP. It ends
    // at the handler's first instruction (as the interpreter's does) or, on PVM, which
    // emulates this ring-0 code, after it: PVM counts the delivery and that instruction
    // as one step.
    assert_eq!(rips[..2], [sti + 1, sti + 2], "rips {rips:#x?}");
    assert!(
        rips[2] == handler || rips[2] == handler + 1,
        "the interrupt was not taken after the NOP: rips {rips:#x?}, handler {handler:#x}"
    );
    let state = engine.state().unwrap();
    let mut pushed = [0u8; 4];
    ram.read(state.gpr[4], &mut pushed).unwrap();
    assert_eq!(
        u64::from(u32::from_le_bytes(pushed)),
        sti + 2,
        "returns to the second NOP"
    );
    assert_eq!(engine.instructions_retired(), 4);
}

#[test]
fn a_breakpoint_stops_before_its_instruction_and_a_resumed_run_passes_it() {
    require_kvm!();
    let guest = sti_nop();
    let (mut engine, ram) = engine_for(&guest);
    let second_nop = ENTRY + 7;
    let mut debug = DebugConfig::default();
    debug.breakpoints.insert(second_nop);
    engine.set_debug(&debug).unwrap();
    let mut quiet = TestInterrupts::once(VECTOR, false);
    assert_eq!(
        engine.run(&ram, &mut quiet, UNLIMITED),
        StopReason::Debug(DebugStop::Breakpoint { addr: second_nop })
    );
    assert_eq!(engine.state().unwrap().rip, second_nop);
    // The run resumed at the breakpoint is exempt from it, and reaches the HLT.
    assert_eq!(engine.run(&ram, &mut quiet, UNLIMITED), StopReason::Halted);
    assert_eq!(engine.state().unwrap().rip, second_nop + 2);
    engine.set_debug(&DebugConfig::default()).unwrap();
}

//! The translator in 64-bit mode, against the interpreter: guest code that uses what
//! 64-bit translation has to handle — R8..R15 (kept in the context, not in host
//! registers), 64-bit operands, RIP-relative and 32-bit addressing, 64-bit stack
//! operations, calls and returns — and non-canonical addresses and branch targets,
//! which must raise #GP or #SS before anything is committed. Both engines must end
//! in the same state, RAM and exits (the final flags are all defined), and the
//! translator must have translated the code, not left it to the interpreter.

use emu_core::exit::StopReason;
use emu_core::machine::bt_factory;
use emu_core::testkit::{interpreter, Asm, Machine, Trap, DATA};
use iced_x86::code_asm::*;

/// A non-canonical address: bit 47 set, bits 63..48 clear.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;
const BUDGET: u64 = 100_000;

/// Runs `asm` in 64-bit mode (paging, IDT) on the interpreter and the translator,
/// which must agree; the final machine, halted (by the code's end or a trap handler).
fn both(asm: Asm) -> Machine {
    let mut m = Machine::long(asm);
    let engines = [("interp", interpreter as fn() -> _), ("bt", bt_factory)];
    assert_eq!(m.run_on_each(&engines, BUDGET), StopReason::Halted);
    m
}

/// How many guest instructions the translator translated (copied or rewritten) and
/// left to the interpreter while running `asm`.
fn translation(asm: Asm) -> (u64, u64) {
    let mut m = Machine::long(asm);
    let mut engine = bt_factory()(&m.ram).expect("bt builds");
    engine.set_state(&m.state).expect("bt takes the state");
    engine.run(&m.ram, &mut m.exits, BUDGET);
    let count = |name: &str| {
        engine
            .counters()
            .into_iter()
            .find_map(|(n, v)| (n == name).then_some(v))
            .unwrap_or(0)
    };
    (
        count("instructions translated"),
        count("instructions called out"),
    )
}

/// R8..R15 in every role: operands of 8, 32 and 64 bits, memory base and index,
/// pushed and popped, a call target; RIP-relative reads and writes; 32-bit addressing.
fn extended_registers(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut table = a.create_label();
    let mut sub = a.create_label();
    let mut top = a.create_label();
    let mut done = a.create_label();
    a.mov(r8, 10u64)?;
    a.xor(r9d, r9d)?;
    a.mov(r10, DATA)?;
    a.mov(r11, 0x1122_3344_5566_7788u64)?;
    a.lea(r12, ptr(table))?;
    a.set_label(&mut top)?;
    a.mov(r13, qword_ptr(r12 + r8 * 8 - 8))?;
    a.add(r9, r13)?;
    a.mov(qword_ptr(r10 + r8 * 8), r9)?;
    a.xchg(r14, r9)?;
    a.xchg(r9, r14)?;
    a.imul_3(r15, r9, 3)?;
    a.push(r15)?;
    a.pop(rbx)?;
    a.push(r11)?;
    a.pop(r14)?;
    a.push(-5)?;
    a.pop(rcx)?;
    a.add(r14b, r8b)?;
    a.add(sil, dil)?;
    a.mov(eax, r8d)?;
    a.movsxd(rdx, r14d)?;
    a.lea(r12, ptr(r12))?;
    a.lea(rdi, ptr(rsi + r8 * 2 + 1))?;
    a.lea(rbp, ptr(r13 + r15))?;
    a.call(sub)?;
    a.lea(r15, ptr(sub))?;
    a.call(r15)?;
    a.dec(r8)?;
    a.jnz(top)?;
    a.mov(rax, qword_ptr(table))?;
    a.mov(qword_ptr(r10 + 0x100), rax)?;
    a.lea(eax, ptr(r9d + r11d))?;
    a.lea(rdx, ptr(ebx + esi * 2))?;
    a.mov(cl, 3u32)?;
    a.shl(r9, cl)?;
    a.cqo()?;
    a.cdqe()?;
    a.add(rax, rbx)?;
    a.jmp(done)?;
    a.set_label(&mut sub)?;
    a.inc(rsi)?;
    a.mov(r13, rsp)?;
    a.add(qword_ptr(r13), 0)?;
    a.ret()?;
    a.set_label(&mut table)?;
    for i in 1..=10u64 {
        a.dq(&[i * 0x0101_0101_0101])?;
    }
    a.set_label(&mut done)?;
    a.nop()
}

#[test]
fn code_on_r8_to_r15_runs_the_same_translated() {
    let m = both(extended_registers);
    // Each round stored its running sum of the table: the last one at DATA + 8.
    assert_eq!(m.peek(DATA + 8, 8), 55 * 0x0101_0101_0101);
    assert_eq!(m.peek(DATA + 0x100, 8), 0x0101_0101_0101);
    let (translated, called_out) = translation(extended_registers);
    // Only the final HLT runs in the interpreter.
    assert!(
        translated > 40 && called_out == 1,
        "translated {translated}, called out {called_out}"
    );
}

/// The trap both engines took, which must be `vector`.
fn expect_fault(asm: Asm, vector: u8) -> Trap {
    let m = both(asm);
    let trap = m.trap().expect("an exception");
    assert_eq!(trap.vector, vector, "{trap:?}");
    trap
}

#[test]
fn a_non_canonical_data_address_raises_gp() {
    expect_fault(
        |a| {
            a.mov(rax, NON_CANONICAL)?;
            a.mov(rbx, qword_ptr(rax))
        },
        13,
    );
}

#[test]
fn a_non_canonical_stack_address_raises_ss() {
    expect_fault(
        |a| {
            a.mov(rbp, NON_CANONICAL)?;
            a.mov(rbx, qword_ptr(rbp))
        },
        12,
    );
}

#[test]
fn a_push_to_a_non_canonical_stack_raises_ss_before_moving_rsp() {
    let mut m = Machine::long(|a| {
        a.mov(r9, NON_CANONICAL + 8)?;
        a.mov(rsp, r9)?;
        a.push(rax)
    });
    let engines = [("interp", interpreter as fn() -> _), ("bt", bt_factory)];
    // Delivering the #SS needs the same stack: the guest shuts down, with the state at
    // the fault.
    match m.run_on_each(&engines, BUDGET) {
        StopReason::Shutdown(Some((e, st))) => {
            assert_eq!(e.vector, 12);
            assert_eq!(st.gpr[4], NON_CANONICAL + 8, "RSP not moved");
        }
        other => panic!("expected #SS and a shutdown, got {other}"),
    }
}

#[test]
fn branches_to_non_canonical_targets_raise_gp() {
    // Each with the first byte of its branch: JMP RAX, CALL R12 (REX.B), RET.
    for (asm, opcode) in [
        (
            (|a| {
                a.mov(rax, NON_CANONICAL)?;
                a.jmp(rax)
            }) as Asm,
            0xFF,
        ),
        (
            |a| {
                a.mov(r12, NON_CANONICAL)?;
                a.call(r12)
            },
            0x41,
        ),
        (
            |a| {
                a.mov(rax, NON_CANONICAL)?;
                a.push(rax)?;
                a.ret()
            },
            0xC3,
        ),
    ] {
        // The branch faults (SDM: #GP(0) if the target is not canonical), so the frame
        // holds the branch's address, not the target's.
        let m = both(asm);
        let trap = m.trap().expect("an exception");
        assert_eq!((trap.vector, trap.error_code), (13, Some(0)), "{trap:?}");
        assert_eq!(m.peek(trap.rip, 1), opcode, "{trap:?}");
        let (translated, _) = translation(asm);
        assert!(translated >= 2, "translated {translated}");
    }
}

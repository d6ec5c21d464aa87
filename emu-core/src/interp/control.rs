//! Near control transfers: JMP, Jcc, CALL, RET, LOOP*, JCXZ family; INT3/INTO/INT n,
//! INT1 and BOUND, which raise exceptions on purpose.
//!
//! Far transfers, gates and IRET live in [`crate::x86::far`].

use super::stack::{pop, push};
use super::{Ctx, Fault, Handler};
use crate::cpu::SegReg;
use crate::exception::Exception;
use crate::exit::GuestEvent;
use crate::x86::ctx::operand_size;
use crate::x86::far::{check_target, is_near};
use crate::x86::interrupt::{deliver, Source};
use crate::x86::mmu::Access;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Jmp if is_near(ins) => jmp,
        Mnemonic::Call if is_near(ins) => call,
        Mnemonic::Ret => ret,
        Mnemonic::Jo => jcc::<0x0>,
        Mnemonic::Jno => jcc::<0x1>,
        Mnemonic::Jb => jcc::<0x2>,
        Mnemonic::Jae => jcc::<0x3>,
        Mnemonic::Je => jcc::<0x4>,
        Mnemonic::Jne => jcc::<0x5>,
        Mnemonic::Jbe => jcc::<0x6>,
        Mnemonic::Ja => jcc::<0x7>,
        Mnemonic::Js => jcc::<0x8>,
        Mnemonic::Jns => jcc::<0x9>,
        Mnemonic::Jp => jcc::<0xA>,
        Mnemonic::Jnp => jcc::<0xB>,
        Mnemonic::Jl => jcc::<0xC>,
        Mnemonic::Jge => jcc::<0xD>,
        Mnemonic::Jle => jcc::<0xE>,
        Mnemonic::Jg => jcc::<0xF>,
        Mnemonic::Loop => loop_cc::<0>,
        Mnemonic::Loope => loop_cc::<1>,
        Mnemonic::Loopne => loop_cc::<2>,
        Mnemonic::Jcxz | Mnemonic::Jecxz | Mnemonic::Jrcxz => jcxz,
        Mnemonic::Int3 => int3,
        Mnemonic::Int1 => int1,
        Mnemonic::Into => into,
        Mnemonic::Int => int_n,
        Mnemonic::Bound => bound,
        _ => return None,
    })
}

/// The target of a near branch: immediate (already absolute) or register/memory.
#[inline]
fn target(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<u64, Fault> {
    match ins.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            Ok(ins.near_branch_target())
        }
        _ => cx.operand(ins, 0),
    }
}

/// Where a near branch may land: within CS's limit, or canonical in 64-bit mode. If
/// not, the branch itself raises #GP(0) (RIP at the branch, nothing of it done), not
/// the fetch at the target.
#[inline]
fn landing(cx: &Ctx<'_>, to: u64) -> Result<u64, Fault> {
    let target64 = cx.cpu.code_bitness() == 64;
    check_target(to, cx.cpu.seg[SegReg::Cs].limit, target64)
}

fn jmp(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let to = target(cx, ins)?;
    cx.cpu.rip = landing(cx, to)?;
    Ok(())
}

fn jcc<const CC: u8>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    if cx.cpu.rflags.condition(CC) {
        cx.cpu.rip = landing(cx, ins.near_branch_target())?;
    }
    Ok(())
}

fn call(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let to = target(cx, ins)?;
    let to = landing(cx, to)?;
    let size = (-ins.stack_pointer_increment()) as u8;
    push(cx, size, ins.next_ip())?;
    cx.cpu.rip = to;
    Ok(())
}

fn ret(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    // RET imm16 releases imm16 bytes of arguments after popping the return address.
    let extra = if ins.op_count() == 1 {
        ins.immediate(0)
    } else {
        0
    };
    let size = (ins.stack_pointer_increment() as u64 - extra) as u8;
    let old_sp = cx.cpu.gpr[4];
    let to = pop(cx, size, extra)?;
    match landing(cx, to) {
        Ok(to) => {
            cx.cpu.rip = to;
            Ok(())
        }
        Err(fault) => {
            cx.cpu.gpr[4] = old_sp;
            Err(fault)
        }
    }
}

/// The count register LOOP and JCXZ use: CX, ECX or RCX by address size.
fn count_reg(ins: &Instruction) -> Register {
    match ins.code().op_code().address_size() {
        16 => Register::CX,
        64 => Register::RCX,
        _ => Register::ECX,
    }
}

fn loop_cc<const KIND: u8>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let r = count_reg(ins);
    let n = cx.reg(r).wrapping_sub(1) & crate::x86::flags::size_mask(r.size() as u8);
    let zf = cx.cpu.rflags.zf();
    let taken = n != 0
        && match KIND {
            1 => zf,
            2 => !zf,
            _ => true,
        };
    // A faulting branch leaves the count as it was.
    let to = if taken {
        Some(landing(cx, ins.near_branch_target())?)
    } else {
        None
    };
    cx.set_reg(r, n);
    if let Some(to) = to {
        cx.cpu.rip = to;
    }
    Ok(())
}

fn jcxz(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    if cx.reg(count_reg(ins)) == 0 {
        cx.cpu.rip = landing(cx, ins.near_branch_target())?;
    }
    Ok(())
}

/// INT3, INTO and INT1 raise an exception on purpose, as a trap: the return address is
/// the next instruction. `source` says how the gate is checked.
fn trap_on_purpose(cx: &mut Ctx<'_>, e: Exception, source: Source) -> Result<(), Fault> {
    let rip = cx.cpu.rip;
    cx.notify(GuestEvent::Exception {
        vector: e.vector,
        error_code: None,
        rip,
    });
    deliver(cx, e.vector, source, None)
}

/// INT3 and INTO are refused by a gate with DPL below the CPL, like INT n.
fn int3(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    trap_on_purpose(cx, Exception::breakpoint(), Source::SoftwareException)
}

fn into(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    if cx.cpu.rflags.of() {
        return trap_on_purpose(cx, Exception::overflow(), Source::SoftwareException);
    }
    Ok(())
}

/// INT1 (ICEBP): a #DB trap delivered as an exception the hardware raised — no gate DPL
/// check, EXT set in error codes (the SDM's INT pseudo-code sets EXT for INT1 alone).
/// No debug condition caused it, so DR6 is left as it was.
fn int1(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    trap_on_purpose(cx, Exception::debug(), Source::Exception)
}

fn int_n(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    deliver(cx, ins.immediate8(), Source::Software, None)
}

/// Sign-extends the low `size` bytes of `v`.
fn signed(v: u64, size: u8) -> i64 {
    let shift = 64 - 8 * size as u32;
    ((v << shift) as i64) >> shift
}

/// BOUND r, m: #BR (a fault) unless the signed index lies within the bounds in memory.
fn bound(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let index = signed(cx.reg(ins.op0_register()), size);
    let at = cx.mem_addr(ins, 2 * u32::from(size), Access::Read)?;
    let lower = signed(cx.read(at, size)?, size);
    let upper = signed(cx.read(at.offset(size as u64), size)?, size);
    if index < lower || index > upper {
        return Err(Exception::bound_range().into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cpu::{dr6, Segment};
    use crate::exception::vector;
    use crate::testkit::{Asm, Machine, CODE_BASE, IDT_BASE, USER_CS};
    use crate::x86::debugreg::DR6;

    /// The error code of a fault while delivering through IDT entry `v`: IDT bit, EXT.
    fn idt_error(v: u8, ext: bool) -> u32 {
        u32::from(v) * 8 + 2 + u32::from(ext)
    }

    #[test]
    fn int1_from_ring_3_is_delivered_through_a_ring_0_gate() {
        // The gates are DPL 0: INT3 is refused with #GP, INT1 is not checked.
        let t = Machine::protected(|a| a.int3()).user().run_to_trap();
        let refused = (vector::GP, Some(idt_error(vector::BP, false)), CODE_BASE);
        assert_eq!((t.vector, t.error_code, t.rip), refused);
        let t = Machine::protected(|a| a.int1()).user().run_to_trap();
        assert_eq!(
            (t.vector, t.rip, t.cs),
            (vector::DB, CODE_BASE + 1, USER_CS)
        );
    }

    #[test]
    fn int1_leaves_dr6_alone() {
        let before = dr6::FIXED | dr6::B0 << 2;
        let mut m = Machine::protected(|a| a.int1());
        m.state.dr[DR6] = before;
        assert_eq!(m.run_to_trap().vector, vector::DB);
        assert_eq!(m.state.dr[DR6], before);
    }

    #[test]
    fn int1_works_in_64_bit_mode() {
        let t = Machine::long(|a| a.int1()).run_to_trap();
        assert_eq!((t.vector, t.rip), (vector::DB, CODE_BASE + 1));
    }

    #[test]
    fn a_fault_delivering_int1_has_ext_set() {
        let cases: [(Asm, u8, bool); 2] = [
            (|a| a.int1(), vector::DB, true),
            (|a| a.int3(), vector::BP, false),
        ];
        for (asm, v, ext) in cases {
            let mut m = Machine::protected(asm);
            let entry = IDT_BASE + 8 * u64::from(v) + 5;
            let attr = m.peek(entry, 1) as u8 & !(Segment::PRESENT as u8);
            m.poke(entry, &[attr]);
            let t = m.run_to_trap();
            assert_eq!(
                (t.vector, t.error_code),
                (vector::NP, Some(idt_error(v, ext)))
            );
        }
    }
}

//! Integer arithmetic and logic: ADD ADC SUB SBB CMP AND OR XOR TEST INC DEC NEG NOT.

use super::{Ctx, Fault, Handler};
use crate::x86::ctx::operand_size;
use crate::x86::flags::{size_mask, FlagOp};
use crate::x86::mmu::Access;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

const ADD: u8 = 0;
const OR: u8 = 1;
const ADC: u8 = 2;
const SBB: u8 = 3;
const AND: u8 = 4;
const SUB: u8 = 5;
const XOR: u8 = 6;
const CMP: u8 = 7;
const TEST: u8 = 8;

/// Whether operand `i` is a 32-bit general-purpose register: compiled code's most
/// common operand, which gets handlers without the generic operand decoding.
fn is_r32(ins: &Instruction, i: u32) -> bool {
    ins.op_kind(i) == OpKind::Register && ins.op_register(i).is_gpr32()
}

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    if is_r32(ins, 0) {
        let fast: Option<Handler> = match ins.mnemonic() {
            Mnemonic::Inc => Some(incdec_r32::<true>),
            Mnemonic::Dec => Some(incdec_r32::<false>),
            _ => None,
        };
        if fast.is_some() {
            return fast;
        }
    }
    Some(match ins.mnemonic() {
        Mnemonic::Add => binop::<ADD>,
        Mnemonic::Or => binop::<OR>,
        Mnemonic::Adc => binop::<ADC>,
        Mnemonic::Sbb => binop::<SBB>,
        Mnemonic::And => binop::<AND>,
        Mnemonic::Sub => binop::<SUB>,
        Mnemonic::Xor => binop::<XOR>,
        Mnemonic::Cmp => binop::<CMP>,
        Mnemonic::Test => binop::<TEST>,
        Mnemonic::Inc => incdec::<true>,
        Mnemonic::Dec => incdec::<false>,
        Mnemonic::Neg => neg,
        Mnemonic::Not => not,
        _ => return None,
    })
}

/// Two-operand arithmetic: `dst = dst OP src`, or only flags for CMP and TEST.
fn binop<const OP: u8>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let mask = size_mask(size);
    // CMP and TEST only read their first operand.
    let access = if OP == CMP || OP == TEST {
        Access::Read
    } else {
        Access::Write
    };
    let dst = cx.locate(ins, 0, size, access)?;
    let a = cx.load(dst, size)?;
    let b = cx.operand(ins, 1)? & mask;
    let cin = cx.cpu.rflags.cf();
    let res = match OP {
        ADD => a.wrapping_add(b),
        ADC => a.wrapping_add(b).wrapping_add(cin as u64),
        SUB | CMP => a.wrapping_sub(b),
        SBB => a.wrapping_sub(b).wrapping_sub(cin as u64),
        AND | TEST => a & b,
        OR => a | b,
        _ => a ^ b,
    };
    if OP != CMP && OP != TEST {
        cx.store(dst, size, res)?;
    }
    let flags = &mut cx.cpu.rflags;
    match OP {
        ADD => flags.set(FlagOp::Add, size, a, b, res),
        ADC => flags.set_with_carry(FlagOp::Adc, size, a, b, res, cin),
        SUB | CMP => flags.set(FlagOp::Sub, size, a, b, res),
        SBB => flags.set_with_carry(FlagOp::Sbb, size, a, b, res, cin),
        _ => flags.set(FlagOp::Logic, size, a, b, res),
    }
    Ok(())
}

fn incdec<const INC: bool>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let dst = cx.locate(ins, 0, size, Access::Write)?;
    let a = cx.load(dst, size)?;
    let res = if INC {
        a.wrapping_add(1)
    } else {
        a.wrapping_sub(1)
    };
    cx.store(dst, size, res)?;
    let op = if INC { FlagOp::Inc } else { FlagOp::Dec };
    cx.cpu.rflags.set_keep_cf(op, size, a, res);
    Ok(())
}

/// INC/DEC of a 32-bit register.
fn incdec_r32<const INC: bool>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let r = ins.op0_register() as usize - Register::EAX as usize;
    let a = cx.cpu.gpr[r] & 0xFFFF_FFFF;
    let res = if INC {
        a.wrapping_add(1)
    } else {
        a.wrapping_sub(1)
    } & 0xFFFF_FFFF;
    cx.cpu.gpr[r] = res;
    let op = if INC { FlagOp::Inc } else { FlagOp::Dec };
    cx.cpu.rflags.set_keep_cf(op, 4, a, res);
    Ok(())
}

fn neg(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let dst = cx.locate(ins, 0, size, Access::Write)?;
    let b = cx.load(dst, size)?;
    let res = 0u64.wrapping_sub(b);
    cx.store(dst, size, res)?;
    cx.cpu.rflags.set(FlagOp::Sub, size, 0, b, res);
    Ok(())
}

fn not(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let dst = cx.locate(ins, 0, size, Access::Write)?;
    let a = cx.load(dst, size)?;
    cx.store(dst, size, !a)
}

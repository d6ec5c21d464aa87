//! Data movement: MOV MOVZX MOVSX MOVSXD LEA XCHG CMPXCHG CMPXCHG8B XADD BSWAP SETcc
//! CMOVcc, the sign extensions CBW/CWDE/CDQE/CWD/CDQ/CQO, XLAT and NOP.

use super::{Ctx, Fault, Handler};
use crate::cpu::shadow;
use crate::cpu::SegReg;
use crate::exception::Exception;
use crate::x86::ctx::{operand_size, seg_of, Loc};
use crate::x86::flags::sign_extend;
use crate::x86::flags::{sign_bit, size_mask, FlagOp};
use crate::x86::mmu::Access;
use crate::x86::segment::load_data_segment;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Mov if !touches_segment_or_system(ins) => mov,
        Mnemonic::Mov if is_read_of_segment(ins) => mov,
        Mnemonic::Mov if is_load_of_segment(ins) => mov_to_segment,
        Mnemonic::Lds | Mnemonic::Les | Mnemonic::Lfs | Mnemonic::Lgs | Mnemonic::Lss => {
            load_far_pointer
        }
        Mnemonic::Movzx => movzx,
        Mnemonic::Movsx | Mnemonic::Movsxd => movsx,
        Mnemonic::Lea => lea,
        Mnemonic::Xchg => xchg,
        Mnemonic::Cmpxchg => cmpxchg,
        Mnemonic::Cmpxchg8b => cmpxchg8b,
        Mnemonic::Xadd => xadd,
        Mnemonic::Bswap => bswap,
        Mnemonic::Seto => setcc::<0x0>,
        Mnemonic::Setno => setcc::<0x1>,
        Mnemonic::Setb => setcc::<0x2>,
        Mnemonic::Setae => setcc::<0x3>,
        Mnemonic::Sete => setcc::<0x4>,
        Mnemonic::Setne => setcc::<0x5>,
        Mnemonic::Setbe => setcc::<0x6>,
        Mnemonic::Seta => setcc::<0x7>,
        Mnemonic::Sets => setcc::<0x8>,
        Mnemonic::Setns => setcc::<0x9>,
        Mnemonic::Setp => setcc::<0xA>,
        Mnemonic::Setnp => setcc::<0xB>,
        Mnemonic::Setl => setcc::<0xC>,
        Mnemonic::Setge => setcc::<0xD>,
        Mnemonic::Setle => setcc::<0xE>,
        Mnemonic::Setg => setcc::<0xF>,
        Mnemonic::Cmovo => cmovcc::<0x0>,
        Mnemonic::Cmovno => cmovcc::<0x1>,
        Mnemonic::Cmovb => cmovcc::<0x2>,
        Mnemonic::Cmovae => cmovcc::<0x3>,
        Mnemonic::Cmove => cmovcc::<0x4>,
        Mnemonic::Cmovne => cmovcc::<0x5>,
        Mnemonic::Cmovbe => cmovcc::<0x6>,
        Mnemonic::Cmova => cmovcc::<0x7>,
        Mnemonic::Cmovs => cmovcc::<0x8>,
        Mnemonic::Cmovns => cmovcc::<0x9>,
        Mnemonic::Cmovp => cmovcc::<0xA>,
        Mnemonic::Cmovnp => cmovcc::<0xB>,
        Mnemonic::Cmovl => cmovcc::<0xC>,
        Mnemonic::Cmovge => cmovcc::<0xD>,
        Mnemonic::Cmovle => cmovcc::<0xE>,
        Mnemonic::Cmovg => cmovcc::<0xF>,
        Mnemonic::Cbw | Mnemonic::Cwde | Mnemonic::Cdqe => widen_accumulator,
        Mnemonic::Cwd | Mnemonic::Cdq | Mnemonic::Cqo => split_accumulator,
        Mnemonic::Xlatb => xlat,
        // The long NOPs of the hint space and the prefetch hints (no cache to fill: they
        // access nothing and never fault).
        Mnemonic::Nop | Mnemonic::Pause | Mnemonic::Reservednop => nop,
        Mnemonic::Prefetchnta
        | Mnemonic::Prefetcht0
        | Mnemonic::Prefetcht1
        | Mnemonic::Prefetcht2 => nop,
        _ => return None,
    })
}

/// MOV with a segment, control, debug or test register operand is not a plain move.
fn touches_segment_or_system(ins: &Instruction) -> bool {
    (0..ins.op_count()).any(|i| {
        ins.op_kind(i) == OpKind::Register && {
            let r = ins.op_register(i);
            r.is_segment_register() || r.is_cr() || r.is_dr() || r.is_tr()
        }
    })
}

/// MOV r/m16, Sreg only reads a selector.
fn is_read_of_segment(ins: &Instruction) -> bool {
    ins.op1_kind() == OpKind::Register && ins.op1_register().is_segment_register()
}

/// MOV Sreg, r/m16.
fn is_load_of_segment(ins: &Instruction) -> bool {
    ins.op0_kind() == OpKind::Register && ins.op0_register().is_segment_register()
}

/// Loads a segment register; MOV to CS does not exist, and a load of SS holds off
/// interrupts for one instruction so the matching ESP load can follow.
pub fn load_segment(cx: &mut Ctx<'_>, reg: Register, sel: u16) -> Result<(), Fault> {
    let seg = seg_of(reg);
    if seg == SegReg::Cs {
        return Err(Exception::invalid_opcode().into());
    }
    load_data_segment(cx, seg, sel)?;
    if seg == SegReg::Ss {
        cx.inhibit_interrupts(shadow::MOV_SS);
    }
    Ok(())
}

fn mov_to_segment(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let sel = cx.operand(ins, 1)? as u16;
    load_segment(cx, ins.op0_register(), sel)
}

/// LDS/LES/LFS/LGS/LSS r, m16:16/32/64: offset first, then the selector.
fn load_far_pointer(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let at = cx.mem_addr(ins, u32::from(size) + 2, Access::Read)?;
    let offset = cx.read(at, size)?;
    let sel = cx.read(at.offset(size as u64), 2)? as u16;
    let seg = match ins.mnemonic() {
        Mnemonic::Lds => Register::DS,
        Mnemonic::Les => Register::ES,
        Mnemonic::Lfs => Register::FS,
        Mnemonic::Lgs => Register::GS,
        _ => Register::SS,
    };
    load_segment(cx, seg, sel)?;
    cx.set_reg(ins.op0_register(), offset);
    Ok(())
}

fn mov(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let v = cx.operand(ins, 1)?;
    // A segment selector stored to a 32-bit register is zero-extended.
    cx.set_operand(ins, 0, v)
}

/// Does nothing; also what a hint does on a processor without its feature.
pub fn nop(_: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    Ok(())
}

fn movzx(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let src_size = operand_size(ins, 1);
    let v = cx.operand(ins, 1)? & size_mask(src_size);
    cx.set_operand(ins, 0, v)
}

fn movsx(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let src_size = operand_size(ins, 1);
    let v = sign_extend(cx.operand(ins, 1)?, src_size);
    cx.set_operand(ins, 0, v)
}

fn lea(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let ea = cx.effective_address(ins);
    cx.set_reg(ins.op0_register(), ea);
    Ok(())
}

fn xchg(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let a_loc = cx.locate(ins, 0, size, Access::Write)?;
    let b_loc = cx.locate(ins, 1, size, Access::Write)?;
    let a = cx.load(a_loc, size)?;
    let b = cx.load(b_loc, size)?;
    // Memory (if any) is written first so a fault leaves the registers alone.
    if matches!(b_loc, crate::x86::ctx::Loc::Mem(_)) {
        cx.store(b_loc, size, a)?;
        cx.store(a_loc, size, b)
    } else {
        cx.store(a_loc, size, b)?;
        cx.store(b_loc, size, a)
    }
}

fn accumulator(size: u8) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

fn cmpxchg(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let acc = accumulator(size);
    // Written back even when unequal: checked as a write either way.
    let dst = cx.locate(ins, 0, size, Access::Write)?;
    let d = cx.load(dst, size)?;
    let a = cx.reg(acc);
    let src = cx.operand(ins, 1)?;
    if a == d {
        cx.store(dst, size, src)?;
    } else {
        // A memory destination is written back unchanged, as the locked cycle does
        // (so a read-only page faults either way). A register one is not written: a
        // 32-bit one keeps its upper half, as the hardware leaves it.
        if let Loc::Mem(_) = dst {
            cx.store(dst, size, d)?;
        }
        cx.set_reg(acc, d);
    }
    cx.cpu
        .rflags
        .set(FlagOp::Sub, size, a, d, a.wrapping_sub(d));
    Ok(())
}

fn cmpxchg8b(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let at = cx.mem_addr(ins, 8, Access::Write)?;
    let cur = cx.read(at, 8)?;
    let expect = (cx.cpu.gpr[2] & 0xFFFF_FFFF) << 32 | (cx.cpu.gpr[0] & 0xFFFF_FFFF);
    let equal = cur == expect;
    if equal {
        let new = (cx.cpu.gpr[1] & 0xFFFF_FFFF) << 32 | (cx.cpu.gpr[3] & 0xFFFF_FFFF);
        cx.write(at, 8, new)?;
    } else {
        cx.write(at, 8, cur)?;
        cx.cpu.gpr[0] = cur & 0xFFFF_FFFF;
        cx.cpu.gpr[2] = cur >> 32;
    }
    let zf = crate::cpu::rflags::ZF;
    cx.cpu.rflags.update(zf, if equal { zf } else { 0 });
    Ok(())
}

fn xadd(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let dst = cx.locate(ins, 0, size, Access::Write)?;
    let d = cx.load(dst, size)?;
    let s = cx.reg(ins.op1_register());
    let sum = d.wrapping_add(s);
    // The SDM order is SRC := DEST, then DEST := SUM, so `xadd eax, eax` leaves the sum.
    // A memory destination is stored first all the same: it cannot alias the source
    // register, and a faulting store must leave the register alone.
    if matches!(dst, crate::x86::ctx::Loc::Reg(_)) {
        cx.set_reg(ins.op1_register(), d);
        cx.store(dst, size, sum)?;
    } else {
        cx.store(dst, size, sum)?;
        cx.set_reg(ins.op1_register(), d);
    }
    cx.cpu
        .rflags
        .set(FlagOp::Add, size, d, s & size_mask(size), sum);
    Ok(())
}

fn bswap(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let r = ins.op0_register();
    let v = cx.reg(r);
    let swapped = match r.size() {
        8 => v.swap_bytes(),
        4 => (v as u32).swap_bytes() as u64,
        // BSWAP of a 16-bit register is undefined; processors clear it.
        _ => 0,
    };
    cx.set_reg(r, swapped);
    Ok(())
}

fn setcc<const CC: u8>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let v = cx.cpu.rflags.condition(CC) as u64;
    cx.set_operand(ins, 0, v)
}

fn cmovcc<const CC: u8>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    // The source is read (and may fault) whether or not the move happens.
    let v = cx.operand(ins, 1)?;
    let dst = ins.op0_register();
    if cx.cpu.rflags.condition(CC) {
        cx.set_reg(dst, v);
    } else if dst.size() == 4 {
        // A 32-bit destination is zero-extended even when nothing moves.
        let cur = cx.reg(dst);
        cx.set_reg(dst, cur);
    }
    Ok(())
}

/// CBW/CWDE/CDQE: sign-extend the low half of the accumulator into all of it.
fn widen_accumulator(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = (ins.code().op_code().operand_size() / 8) as u8;
    let v = sign_extend(cx.reg(accumulator(size)), size / 2);
    cx.set_reg(accumulator(size), v);
    Ok(())
}

/// CWD/CDQ/CQO: fill DX/EDX/RDX with the accumulator's sign.
fn split_accumulator(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = (ins.code().op_code().operand_size() / 8) as u8;
    let negative = cx.reg(accumulator(size)) & sign_bit(size) != 0;
    let high = if negative { u64::MAX } else { 0 };
    let dx = match size {
        2 => Register::DX,
        4 => Register::EDX,
        _ => Register::RDX,
    };
    cx.set_reg(dx, high);
    Ok(())
}

fn xlat(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let base = cx.reg(ins.memory_base());
    let offset = base.wrapping_add(cx.reg(Register::AL));
    let offset = offset & size_mask(ins.memory_base().size() as u8);
    let at = cx.seg_addr(seg_of(ins.memory_segment()), offset, 1, Access::Read)?;
    let v = cx.read(at, 1)?;
    cx.set_reg(Register::AL, v);
    Ok(())
}

/// The case tables of this family, which every engine runs (`testkit::tables`).
#[cfg(any(test, feature = "testkit"))]
pub mod cases {
    use crate::testkit::{Case, RAX, RBX, RCX};
    use iced_x86::code_asm::*;

    /// Upper halves the 32-bit forms must keep or clear.
    pub const HIGH: u64 = 0xAAAA_AAAA << 32;
    /// Cmpxchg writes only the register it changes.
    pub const CMPXCHG_WRITES_ONLY_THE_REGISTER_IT_CHANGES: &[Case] = &[
        Case {
            name: "cmpxchg ebx,ecx: not equal, so EAX is loaded, EBX kept whole",
            asm: |a| a.cmpxchg(ebx, ecx),
            regs: &[(RAX, HIGH | 1), (RBX, HIGH | 2), (RCX, HIGH | 3)],
            flags: 0,
            want: &[(RAX, 2), (RBX, HIGH | 2)],
            want_flags: 0,
            mask: 0,
        },
        Case {
            name: "cmpxchg ebx,ecx: equal, so EBX is written, RAX kept whole",
            asm: |a| a.cmpxchg(ebx, ecx),
            regs: &[(RAX, HIGH | 1), (RBX, HIGH | 1), (RCX, HIGH | 3)],
            flags: 0,
            want: &[(RAX, HIGH | 1), (RBX, 3)],
            want_flags: 0,
            mask: 0,
        },
    ];
}

#[cfg(test)]
mod tests {
    use super::cases::*;
    use crate::testkit::check64;

    #[test]
    fn cmpxchg_writes_only_the_register_it_changes() {
        check64(CMPXCHG_WRITES_ONLY_THE_REGISTER_IT_CHANGES);
    }
}

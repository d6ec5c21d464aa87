//! The stack: PUSH POP PUSHA POPA PUSHF POPF ENTER LEAVE, and the push/pop primitives
//! CALL, RET and interrupt delivery use.

use super::flags::size_mask;
use super::mmu::Access;
use super::sysinstr::iopl_allows;
use super::{Ctx, Fault, Handler};
use crate::cpu::{rflags, SegReg, Segment};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Push => push_op,
        Mnemonic::Pop if is_segment(ins) => pop_segment,
        Mnemonic::Pop => pop_op,
        Mnemonic::Pusha | Mnemonic::Pushad => pusha,
        Mnemonic::Popa | Mnemonic::Popad => popa,
        Mnemonic::Pushf | Mnemonic::Pushfd | Mnemonic::Pushfq => pushf,
        Mnemonic::Popf | Mnemonic::Popfd | Mnemonic::Popfq => popf,
        Mnemonic::Enter => enter,
        Mnemonic::Leave => leave,
        _ => return None,
    })
}

fn is_segment(ins: &Instruction) -> bool {
    ins.op0_kind() == OpKind::Register && ins.op0_register().is_segment_register()
}

/// Width of the stack pointer in bytes: SS.B picks SP or ESP; 64-bit code uses RSP.
#[inline]
fn sp_size(cx: &Ctx<'_>) -> u8 {
    if cx.cpu.code_bitness() == 64 {
        8
    } else if cx.cpu.seg[SegReg::Ss].attr & Segment::DB != 0 {
        4
    } else {
        2
    }
}

/// Replaces the low `sp_size` bytes of RSP, as a 16-bit stack leaves ESP's top alone.
#[inline]
fn set_sp(cx: &mut Ctx<'_>, sps: u8, sp: u64) {
    let mask = size_mask(sps);
    cx.cpu.regs[4] = (cx.cpu.regs[4] & !mask) | (sp & mask);
}

/// Pushes the low `size` bytes of `v`.
#[inline(always)]
pub fn push(cx: &mut Ctx<'_>, size: u8, v: u64) -> Result<(), Fault> {
    let sps = sp_size(cx);
    let sp = cx.cpu.regs[4].wrapping_sub(size as u64) & size_mask(sps);
    let at = cx.seg_addr(SegReg::Ss, sp, size.into(), Access::Write)?;
    cx.write(at, size, v)?;
    set_sp(cx, sps, sp);
    Ok(())
}

/// Pops `size` bytes, then releases `extra` more bytes of stack (RET imm16).
#[inline(always)]
pub fn pop(cx: &mut Ctx<'_>, size: u8, extra: u64) -> Result<u64, Fault> {
    let sps = sp_size(cx);
    let sp = cx.cpu.regs[4] & size_mask(sps);
    let at = cx.seg_addr(SegReg::Ss, sp, size.into(), Access::Read)?;
    let v = cx.read(at, size)?;
    set_sp(cx, sps, sp.wrapping_add(size as u64).wrapping_add(extra));
    Ok(v)
}

/// The operand size of a PUSH/POP-like instruction.
fn stack_size(ins: &Instruction) -> u8 {
    ins.stack_pointer_increment().unsigned_abs() as u8
}

fn push_op(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = stack_size(ins);
    let v = cx.operand(ins, 0)?;
    push(cx, size, v)
}

/// POP DS/ES/SS/FS/GS: the stack pointer moves only if the segment load succeeds.
fn pop_segment(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = stack_size(ins);
    let old_sp = cx.cpu.regs[4];
    let sel = pop(cx, size, 0)? as u16;
    let loaded = super::moves::load_segment(cx, ins.op0_register(), sel);
    if loaded.is_err() {
        cx.cpu.regs[4] = old_sp;
    }
    loaded
}

fn pop_op(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = stack_size(ins);
    let old_sp = cx.cpu.regs[4];
    let v = pop(cx, size, 0)?;
    // A memory destination is addressed with the incremented stack pointer.
    let stored = match ins.op0_kind() {
        OpKind::Register => {
            cx.set_reg(ins.op0_register(), v);
            Ok(())
        }
        _ => cx.set_operand(ins, 0, v),
    };
    if stored.is_err() {
        cx.cpu.regs[4] = old_sp;
    }
    stored
}

/// PUSHA/PUSHAD order: AX CX DX BX (original) SP BP SI DI.
fn pusha(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = opcode_size(ins);
    let saved = cx.cpu.regs;
    for v in saved.iter().take(8) {
        if let Err(f) = push(cx, size, *v) {
            cx.cpu.regs[4] = saved[4];
            return Err(f);
        }
    }
    Ok(())
}

fn popa(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = opcode_size(ins);
    let saved = cx.cpu.regs;
    let regs = if size == 2 {
        [
            Register::DI,
            Register::SI,
            Register::BP,
            Register::SP,
            Register::BX,
            Register::DX,
            Register::CX,
            Register::AX,
        ]
    } else {
        [
            Register::EDI,
            Register::ESI,
            Register::EBP,
            Register::ESP,
            Register::EBX,
            Register::EDX,
            Register::ECX,
            Register::EAX,
        ]
    };
    for r in regs {
        match pop(cx, size, 0) {
            // The saved stack pointer is skipped, not loaded.
            Ok(v) if r != Register::SP && r != Register::ESP => cx.set_reg(r, v),
            Ok(_) => {}
            Err(f) => {
                cx.cpu.regs = saved;
                return Err(f);
            }
        }
    }
    Ok(())
}

fn pushf(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    // The pushed image has VM and RF clear.
    let v = cx.cpu.flags.get() & !(rflags::VM | rflags::RF);
    push(cx, stack_size(ins), v)
}

fn popf(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    // Checked before the pop, so that an unsupported mode leaves the stack alone.
    let may_change_if = iopl_allows(cx)?;
    let size = stack_size(ins);
    let v = pop(cx, size, 0)?;
    // Every writable flag but VM/VIF/VIP and RF may change, except that IOPL changes
    // only at CPL 0 and IF only at CPL <= IOPL (silently: no fault). A 16-bit POPF
    // only touches the low 16 bits.
    let mut writable = rflags::WRITABLE & !(rflags::VIF | rflags::VIP | rflags::RF);
    if cx.cpu.cpl() > 0 {
        writable &= !rflags::IOPL;
    }
    if !may_change_if {
        writable &= !rflags::IF;
    }
    if size == 2 {
        writable &= 0xFFFF;
    }
    let cur = cx.cpu.flags.get();
    cx.cpu.flags.set_all((cur & !writable) | (v & writable));
    // IF or TF may have changed: let the run loop look again.
    cx.end_block = true;
    Ok(())
}

fn enter(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = opcode_size(ins);
    let alloc = ins.immediate16() as u64;
    let level = (ins.immediate8_2nd() % 32) as u64;
    let saved = cx.cpu.regs;
    let sps = sp_size(cx);
    let result = (|| {
        let bp_reg = match size {
            2 => Register::BP,
            4 => Register::EBP,
            _ => Register::RBP,
        };
        let bp = cx.reg(bp_reg);
        push(cx, size, bp)?;
        let frame = cx.cpu.regs[4] & size_mask(sps);
        if level > 0 {
            let mut walk = bp;
            for _ in 1..level {
                walk = walk.wrapping_sub(size as u64) & size_mask(sps);
                let at = cx.seg_addr(SegReg::Ss, walk, size.into(), Access::Read)?;
                let v = cx.read(at, size)?;
                push(cx, size, v)?;
            }
            push(cx, size, frame)?;
        }
        let sp = (cx.cpu.regs[4] & size_mask(sps)).wrapping_sub(alloc);
        // Touch the new stack top as the hardware does, so a bad frame faults here.
        let at = cx.seg_addr(SegReg::Ss, sp & size_mask(sps), 1, Access::Read)?;
        cx.read(at, 1)?;
        set_sp(cx, sps, sp);
        cx.set_reg(bp_reg, frame);
        Ok(())
    })();
    if result.is_err() {
        cx.cpu.regs = saved;
    }
    result
}

/// The operand size fixed by the opcode (PUSHA vs PUSHAD, ENTERW vs ENTERD), in bytes.
fn opcode_size(ins: &Instruction) -> u8 {
    (ins.code().op_code().operand_size() / 8) as u8
}

fn leave(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    // iced-x86 gives LEAVE no static stack increment (ESP comes from EBP).
    let size = opcode_size(ins);
    let sps = sp_size(cx);
    let saved_sp = cx.cpu.regs[4];
    set_sp(cx, sps, cx.cpu.regs[5]);
    match pop(cx, size, 0) {
        Ok(v) => {
            let r = match size {
                2 => Register::BP,
                4 => Register::EBP,
                _ => Register::RBP,
            };
            cx.set_reg(r, v);
            Ok(())
        }
        Err(f) => {
            cx.cpu.regs[4] = saved_sp;
            Err(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::systest::{Machine, RBX};
    use crate::cpu::rflags;
    use iced_x86::code_asm::*;

    /// POPF of an image with IF clear and IOPL 3; EBX gets the flags that resulted.
    fn popf_result(user: bool) -> u64 {
        let m = Machine::protected(|a| {
            a.pushfd()?;
            a.pop(eax)?;
            a.and(eax, !(rflags::IF as i32))?;
            a.or(eax, rflags::IOPL as i32)?;
            a.push(eax)?;
            a.popfd()?;
            a.pushfd()?;
            a.pop(ebx)
        });
        let mut m = if user { m.user() } else { m }.flags(rflags::IF);
        m.run();
        m.state.gpr[RBX]
    }

    #[test]
    fn popf_changes_iopl_only_at_cpl_0_and_if_only_within_iopl() {
        let kernel = popf_result(false);
        assert_eq!(kernel & (rflags::IF | rflags::IOPL), rflags::IOPL);
        let user = popf_result(true);
        assert_eq!(
            user & (rflags::IF | rflags::IOPL),
            rflags::IF,
            "silently kept"
        );
    }
}

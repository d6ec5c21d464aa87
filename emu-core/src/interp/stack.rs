//! The stack: PUSH POP PUSHA POPA PUSHF POPF ENTER LEAVE, and the push/pop primitives
//! CALL, RET and interrupt delivery use.

use super::sse::probe_write;
use super::{Ctx, Fault, Handler};
use crate::cpu::{rflags, SegReg, Segment};
use crate::x86::flags::size_mask;
use crate::x86::mmu::Access;
use crate::x86::system::iopl_allows;
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
    cx.cpu.gpr[4] = (cx.cpu.gpr[4] & !mask) | (sp & mask);
}

/// Pushes the low `size` bytes of `v`.
#[inline(always)]
pub fn push(cx: &mut Ctx<'_>, size: u8, v: u64) -> Result<(), Fault> {
    let sps = sp_size(cx);
    let sp = cx.cpu.gpr[4].wrapping_sub(size as u64) & size_mask(sps);
    let at = cx.seg_addr(SegReg::Ss, sp, size.into(), Access::Write)?;
    cx.write(at, size, v)?;
    set_sp(cx, sps, sp);
    Ok(())
}

/// Pops `size` bytes, then releases `extra` more bytes of stack (RET imm16).
#[inline(always)]
pub fn pop(cx: &mut Ctx<'_>, size: u8, extra: u64) -> Result<u64, Fault> {
    let sps = sp_size(cx);
    let sp = cx.cpu.gpr[4] & size_mask(sps);
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
    let old_sp = cx.cpu.gpr[4];
    let sel = pop(cx, size, 0)? as u16;
    let loaded = super::moves::load_segment(cx, ins.op0_register(), sel);
    if loaded.is_err() {
        cx.cpu.gpr[4] = old_sp;
    }
    loaded
}

fn pop_op(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = stack_size(ins);
    let old_sp = cx.cpu.gpr[4];
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
        cx.cpu.gpr[4] = old_sp;
    }
    stored
}

/// PUSHA/PUSHAD order: AX CX DX BX (original) SP BP SI DI.
fn pusha(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = opcode_size(ins);
    let saved = cx.cpu.gpr;
    for v in saved.iter().take(8) {
        if let Err(f) = push(cx, size, *v) {
            cx.cpu.gpr[4] = saved[4];
            return Err(f);
        }
    }
    Ok(())
}

fn popa(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = opcode_size(ins);
    let saved = cx.cpu.gpr;
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
                cx.cpu.gpr = saved;
                return Err(f);
            }
        }
    }
    Ok(())
}

fn pushf(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    // The pushed image has VM and RF clear.
    let v = cx.cpu.rflags.get() & !(rflags::VM | rflags::RF);
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
    let cur = cx.cpu.rflags.get();
    cx.cpu.rflags.set_all((cur & !writable) | (v & writable));
    // IF or TF may have changed: let the run loop look again.
    cx.end_block = true;
    Ok(())
}

/// ENTER imm16, imm8, as the SDM's pseudo-code has it: the operand size (the prefix)
/// decides what is pushed and which of BP, EBP or RBP receives the frame pointer; the
/// stack's address size (SS.B, or 64-bit mode) decides which of SP, ESP or RSP moves and
/// whether BP or EBP walks the enclosing frames.
fn enter(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = opcode_size(ins);
    let alloc = ins.immediate16() as u64;
    let level = (ins.immediate8_2nd() % 32) as u64;
    let saved = cx.cpu.gpr;
    let sps = sp_size(cx);
    let result = (|| {
        push(cx, size, cx.cpu.gpr[5])?;
        // FrameTemp: the stack pointer register as the operand size reads it (o32 on
        // a 16-bit stack takes all of ESP, not SP).
        let frame = cx.cpu.gpr[4];
        if level > 0 {
            let mut walk = cx.cpu.gpr[5];
            for _ in 1..level {
                walk = walk.wrapping_sub(size as u64) & size_mask(sps);
                let at = cx.seg_addr(SegReg::Ss, walk, size.into(), Access::Read)?;
                let v = cx.read(at, size)?;
                push(cx, size, v)?;
            }
            push(cx, size, frame)?;
        }
        let sp = cx.cpu.gpr[4].wrapping_sub(alloc) & size_mask(sps);
        // The processor checks that it may write the new stack top, so a frame that
        // cannot be used faults here — as a write.
        let at = cx.seg_addr(SegReg::Ss, sp, size.into(), Access::Write)?;
        probe_write(cx, at, size.into())?;
        set_sp(cx, sps, sp);
        cx.set_reg(frame_pointer(size), frame);
        Ok(())
    })();
    if result.is_err() {
        cx.cpu.gpr = saved;
    }
    result
}

/// BP, EBP or RBP: the frame pointer ENTER and LEAVE load, by operand size.
fn frame_pointer(size: u8) -> Register {
    match size {
        2 => Register::BP,
        4 => Register::EBP,
        _ => Register::RBP,
    }
}

/// The operand size fixed by the opcode (PUSHA vs PUSHAD, ENTERW vs ENTERD), in bytes.
fn opcode_size(ins: &Instruction) -> u8 {
    (ins.code().op_code().operand_size() / 8) as u8
}

fn leave(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    // iced-x86 gives LEAVE no static stack increment (ESP comes from EBP).
    let size = opcode_size(ins);
    let sps = sp_size(cx);
    let saved_sp = cx.cpu.gpr[4];
    set_sp(cx, sps, cx.cpu.gpr[5]);
    match pop(cx, size, 0) {
        Ok(v) => {
            cx.set_reg(frame_pointer(size), v);
            Ok(())
        }
        Err(f) => {
            cx.cpu.gpr[4] = saved_sp;
            Err(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::{cr0, rflags, SegReg};
    use crate::exception::vector;
    use crate::testkit::{kind, Desc, Machine, CODE_BASE, FREE_SLOT, RBX, USER_STACK};
    use iced_x86::code_asm::*;

    /// ESP and EBP in the register file.
    const RSP: usize = 4;
    /// EBP.
    const RBP: usize = 5;
    /// Page-table entry bit: writable.
    const PTE_WRITABLE: u32 = 2;

    /// A machine whose SS is a 16-bit (B = 0) flat data segment.
    fn on_a_16_bit_stack(asm: crate::testkit::Asm) -> Machine {
        let mut m = Machine::protected(asm);
        let stack16 = Desc::flat(kind::DATA, 0);
        m.set_gdt_entry(FREE_SLOT, stack16);
        m.state.seg.set(SegReg::Ss, stack16.segment(FREE_SLOT));
        m
    }

    #[test]
    fn o32_enter_on_a_16_bit_stack_moves_sp_and_loads_all_of_esp_into_ebp() {
        // ENTER 8, 2: push EBP, push the dword at BP - 4, push FrameTemp (all of ESP).
        let mut m = on_a_16_bit_stack(|a| a.enter(8u32, 2u32));
        m.state.gpr[RSP] = 0xABCD_0100;
        m.state.gpr[RBP] = 0x1234_0200;
        m.poke_u32(0x01FC, 0x5555_AAAA);
        let st = m.run_to_halt().clone();
        assert_eq!(st.gpr[RSP], 0xABCD_00EC, "SP moved, ESP's top kept");
        assert_eq!(st.gpr[RBP], 0xABCD_00FC, "EBP = FrameTemp, all 32 bits");
        let pushed = [m.peek(0xFC, 4), m.peek(0xF8, 4), m.peek(0xF4, 4)];
        assert_eq!(pushed, [0x1234_0200, 0x5555_AAAA, 0xABCD_00FC]);
    }

    #[test]
    fn o16_enter_on_a_32_bit_stack_walks_the_frames_with_ebp() {
        // 66 C8 08 00 02: ENTER 8, 2 with a 16-bit operand size.
        let mut m = Machine::protected(|a| a.db(&[0x66, 0xC8, 0x08, 0x00, 0x02]));
        let top = m.state.gpr[RSP];
        m.state.gpr[RBP] = 0x0003_0200;
        m.poke(0x3_01FE, &[0xEF, 0xBE]);
        m.poke(0x01FE, &[0x11, 0x11]);
        let st = m.run_to_halt().clone();
        let frame = (top - 2) & 0xFFFF;
        assert_eq!(st.gpr[RSP], top - 6 - 8);
        assert_eq!(
            st.gpr[RBP],
            0x0003_0000 | frame,
            "BP = FrameTemp, EBP's top kept"
        );
        let pushed = [m.peek(top - 2, 2), m.peek(top - 4, 2), m.peek(top - 6, 2)];
        assert_eq!(pushed, [0x0200, 0xBEEF, frame]);
    }

    #[test]
    fn enter_checks_that_the_new_stack_top_is_writable() {
        // At CPL 3 the new stack top is in a read-only page: #PF with P, W and U set,
        // and the registers as they were.
        const ALLOC: u64 = 0x1000;
        let mut m = Machine::protected(|a| a.enter(ALLOC as u32, 0u32)).user();
        let (pd, pt) = m.identity_map32();
        let new_top = USER_STACK - 4 - ALLOC;
        let pte = pt + 4 * (new_top >> 12);
        m.poke_u32(pte, m.peek(pte, 4) as u32 & !PTE_WRITABLE);
        m.state.cr3 = pd;
        m.state.cr0 |= cr0::PG;
        m.state.gpr[RBP] = 0x1234;
        let t = m.run_to_trap();
        assert_eq!(
            (t.vector, t.error_code, t.rip),
            (vector::PF, Some(0x7), CODE_BASE)
        );
        assert_eq!(m.state.cr2, new_top);
        let frame = m.peek(m.state.gpr[RSP] + 12, 4);
        assert_eq!(
            frame, USER_STACK,
            "the ring-3 ESP in the frame is unchanged"
        );
    }

    #[test]
    fn o32_leave_on_a_16_bit_stack_moves_sp_and_pops_all_of_ebp() {
        let mut m = on_a_16_bit_stack(|a| a.leave());
        m.state.gpr[RSP] = 0xABCD_0000;
        m.state.gpr[RBP] = 0x1234_0100;
        m.poke_u32(0x0100, 0xCAFE_BABE);
        let st = m.run_to_halt();
        assert_eq!((st.gpr[RSP], st.gpr[RBP]), (0xABCD_0104, 0xCAFE_BABE));
    }

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

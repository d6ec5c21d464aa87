//! Far control transfers and fast system calls: far JMP and CALL (to a code segment or
//! through a call gate), far RET, IRET, SYSENTER/SYSEXIT and SYSCALL/SYSRET.
//!
//! In real mode a far transfer loads CS with `selector * 16`. In protected mode it reads
//! the target's descriptor and applies the privilege rules of the Intel SDM (volume 2,
//! JMP/CALL/RET/IRET; volume 3, chapter 5): only a CALL through a call gate enters a more
//! privileged ring (switching to that ring's stack from the TSS), only a far RET or an
//! IRET goes back out (popping the outer stack pointer). Every check runs, and every
//! stack access is made, before anything is committed, so a fault leaves the CPU as it
//! was. IRET is interrupt delivery run backwards (see [`super::interrupt`]) and uses the
//! same stack and segment helpers.
//!
//! Hardware task switches (a far transfer to a TSS or task gate, IRET with NT set) and
//! virtual-8086 mode are not implemented: they are reported as unsupported.

use super::mmu::{is_canonical, Access};
use super::segment::{
    self, code_descriptor, descriptor_address, read_descriptor, selector, selector_error,
    stack_descriptor, system_type, tss_stack, Descriptor, Stack,
};
use super::{task, Ctx, Fault, Handler};
use crate::cpu::{cr0, dr6, efer, rflags, SegReg, Segment};
use crate::exception::{vector, Exception};
use crate::exit::RingCause;
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

/// SYSENTER, SYSEXIT and SYSCALL load SS with the selector after their CS; SYSRET with
/// the one after its 32-bit CS.
const SS_AFTER_CS: u16 = 8;
/// SYSEXIT to 32-bit code: CS is IA32_SYSENTER_CS + 16.
const SYSEXIT_CS32: u16 = 16;
/// SYSEXIT to 64-bit code: CS is IA32_SYSENTER_CS + 32.
const SYSEXIT_CS64: u16 = 32;
/// STAR bits 47:32: the CS of SYSCALL (SS follows it).
const STAR_SYSCALL_SHIFT: u32 = 32;
/// STAR bits 63:48: the 32-bit CS of SYSRET (SS follows it, the 64-bit CS after that).
const STAR_SYSRET_SHIFT: u32 = 48;
/// SYSRET to 64-bit code: CS is STAR[63:48] + 16.
const SYSRET_CS64: u16 = 16;
/// The RFLAGS bits a 64-bit SYSRET loads from R11: RF and VM stay clear.
const SYSRET_FLAGS: u64 = rflags::WRITABLE & !rflags::RF;
/// Second half of a 16-byte gate: its type field (bits 8-12 of the high dword) must be 0.
const GATE64_HIGH_TYPE: u64 = 0x1F << 40;

/// A near JMP or CALL (not one to a far pointer, immediate or in memory).
pub fn is_near(ins: &Instruction) -> bool {
    !matches!(ins.op0_kind(), OpKind::FarBranch16 | OpKind::FarBranch32)
        && ins.memory_size() != iced_x86::MemorySize::SegPtr16
        && ins.memory_size() != iced_x86::MemorySize::SegPtr32
        && ins.memory_size() != iced_x86::MemorySize::SegPtr64
}

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Jmp if !is_near(ins) => jmp_far,
        Mnemonic::Call if !is_near(ins) => call_far,
        Mnemonic::Retf => retf,
        Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => iret,
        Mnemonic::Sysenter => sysenter,
        Mnemonic::Sysexit | Mnemonic::Sysexitq => sysexit,
        Mnemonic::Syscall => syscall,
        Mnemonic::Sysret | Mnemonic::Sysretq => sysret,
        _ => return None,
    })
}

fn gp(code: u32) -> Fault {
    Exception::general_protection(code).into()
}

/// Long mode (IA-32e) is active: 64-bit and compatibility mode.
fn long_mode(cx: &Ctx<'_>) -> bool {
    cx.cpu.efer & efer::LMA != 0
}

/// In long mode a code descriptor with both L and D set is reserved.
fn reserved_code(cx: &Ctx<'_>, desc: Descriptor) -> bool {
    long_mode(cx) && desc.is_long() && desc.is_default32()
}

/// The operand size of RETF/IRET/far JMP/far CALL, in bytes.
fn operand_size(ins: &Instruction) -> u8 {
    (ins.code().op_code().operand_size() / 8) as u8
}

/// Checks where a transfer lands: within the limit of a legacy or compatibility-mode
/// code segment, or canonical in 64-bit mode.
pub(crate) fn check_target(rip: u64, limit: u32, target64: bool) -> Result<u64, Fault> {
    let fits = if target64 {
        is_canonical(rip)
    } else {
        rip <= limit as u64
    };
    if fits {
        Ok(rip)
    } else {
        Err(gp(0))
    }
}

/// Loads CS from a checked descriptor with the new CPL as its RPL, and RIP.
fn enter(cx: &mut Ctx<'_>, desc: Descriptor, sel: u16, cpl: u8, rip: u64) {
    let sel = (sel & !selector::RPL) | cpl as u16;
    cx.cpu.seg.set(SegReg::Cs, desc.segment(sel));
    cx.cpu.rip = rip;
}

/// Pushes the caller's CS and return offset (a far CALL).
fn push_return(
    cx: &mut Ctx<'_>,
    stack: &mut Stack,
    size: u8,
    cpl: u8,
    ins: &Instruction,
) -> Result<(), Fault> {
    let cs = cx.cpu.seg[SegReg::Cs].selector as u64;
    stack.push(cx, size, cs, cpl)?;
    stack.push(cx, size, ins.next_ip(), cpl)
}

// ---- far JMP and CALL ----

/// Where a far JMP or CALL goes, and its operand size in bytes (the offset's width and
/// the size of a CALL's pushes, unless a gate decides).
struct FarPointer {
    selector: u16,
    offset: u64,
    size: u8,
}

fn far_pointer(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<FarPointer, Fault> {
    let selector = ins.far_branch_selector();
    Ok(match ins.op0_kind() {
        OpKind::FarBranch16 => FarPointer {
            selector,
            offset: ins.far_branch16().into(),
            size: 2,
        },
        OpKind::FarBranch32 => FarPointer {
            selector,
            offset: ins.far_branch32().into(),
            size: 4,
        },
        _ => {
            // m16:16, m16:32 or m16:64: the offset, then the selector.
            let size = operand_size(ins);
            let at = cx.mem_addr(ins, u32::from(size) + 2, Access::Read)?;
            let offset = cx.read(at, size)?;
            let selector = cx.read(at.offset(size as u64), 2)? as u16;
            FarPointer {
                selector,
                offset,
                size,
            }
        }
    })
}

fn jmp_far(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    far(cx, ins, false)
}

fn call_far(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    far(cx, ins, true)
}

/// Far JMP (`call` false) or far CALL.
fn far(cx: &mut Ctx<'_>, ins: &Instruction, call: bool) -> Result<(), Fault> {
    let to = far_pointer(cx, ins)?;
    if segment::protected(cx) {
        protected_far(cx, ins, to, call)?;
    } else {
        // Real mode: the hidden limit stays, so the offset must fit the current one.
        let cs = cx.cpu.seg[SegReg::Cs];
        let rip = check_target(to.offset, cs.limit, false)?;
        if call {
            let mut stack = Stack::current(cx);
            push_return(cx, &mut stack, to.size, cx.cpu.cpl(), ins)?;
            stack.commit(cx);
        }
        segment::load_real(cx, SegReg::Cs, to.selector);
        cx.cpu.rip = rip;
    }
    // The code segment, and with it the bitness, may have changed.
    cx.end_block = true;
    Ok(())
}

fn protected_far(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    to: FarPointer,
    call: bool,
) -> Result<(), Fault> {
    let sel = to.selector;
    if sel & !selector::RPL == 0 {
        return Err(gp(0));
    }
    let (desc, addr) = read_descriptor(cx, sel)?.ok_or_else(|| gp(selector_error(sel)))?;
    if desc.is_code() {
        return to_code_segment(cx, ins, &to, desc, addr, call);
    }
    let legacy = !long_mode(cx);
    match (desc.is_code_data(), desc.kind()) {
        (false, system_type::CALL_GATE) => through_gate(cx, ins, sel, desc, call),
        (false, system_type::CALL_GATE16) if legacy => through_gate(cx, ins, sel, desc, call),
        // A task switch. (A busy TSS falls through to #GP, as on the processor.)
        (
            false,
            system_type::TASK_GATE | system_type::TSS_AVAILABLE | system_type::TSS16_AVAILABLE,
        ) if legacy => to_task(cx, sel, desc, call),
        _ => Err(gp(selector_error(sel))),
    }
}

/// A far JMP or CALL to a TSS or a task gate: the descriptor's DPL must admit the CPL and
/// the selector's RPL.
fn to_task(cx: &mut Ctx<'_>, sel: u16, desc: Descriptor, call: bool) -> Result<(), Fault> {
    let rpl = (sel & selector::RPL) as u8;
    if desc.dpl() < cx.cpu.cpl().max(rpl) {
        return Err(gp(selector_error(sel)));
    }
    if !desc.present() {
        return Err(Exception::not_present(selector_error(sel)).into());
    }
    let tss = if desc.kind() == system_type::TASK_GATE {
        desc.gate_selector()
    } else {
        sel
    };
    let cause = if call {
        task::Cause::Call
    } else {
        task::Cause::Jmp
    };
    task::switch(cx, tss, cause, 0)
}

/// A far JMP or CALL straight to a code segment: the CPL never changes.
fn to_code_segment(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    to: &FarPointer,
    desc: Descriptor,
    addr: u64,
    call: bool,
) -> Result<(), Fault> {
    let cpl = cx.cpu.cpl();
    let sel = to.selector;
    let rpl = (sel & selector::RPL) as u8;
    // Conforming code runs at the caller's CPL, so it may be more privileged than the
    // caller; other code must belong to the caller's own ring.
    let allowed = if desc.is_conforming() {
        desc.dpl() <= cpl
    } else {
        rpl <= cpl && desc.dpl() == cpl
    };
    if !allowed || reserved_code(cx, desc) {
        return Err(gp(selector_error(sel)));
    }
    if !desc.present() {
        return Err(Exception::not_present(selector_error(sel)).into());
    }
    let rip = check_target(to.offset, desc.limit(), long_mode(cx) && desc.is_long())?;
    let mut stack = Stack::current(cx);
    if call {
        push_return(cx, &mut stack, to.size, cpl, ins)?;
    }
    segment::mark_accessed(cx, desc, addr)?;
    stack.commit(cx);
    enter(cx, desc, sel, cpl, rip);
    Ok(())
}

/// The second half of a 16-byte long-mode gate.
fn gate_high_half(cx: &mut Ctx<'_>, gate_sel: u16) -> Result<u64, Fault> {
    let err = gp(selector_error(gate_sel));
    let next = (gate_sel & !7).checked_add(8).ok_or(err)? | (gate_sel & 7);
    let addr = descriptor_address(cx, next).ok_or(err)?;
    let high = cx.read_sys(addr, 8)?;
    if high & GATE64_HIGH_TYPE != 0 {
        return Err(err);
    }
    Ok(high)
}

/// A far JMP or CALL through a call gate. Only a CALL may enter a more privileged
/// (non-conforming) segment; it then switches to that ring's stack from the TSS.
fn through_gate(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    gate_sel: u16,
    gate: Descriptor,
    call: bool,
) -> Result<(), Fault> {
    let cpl = cx.cpu.cpl();
    let rpl = (gate_sel & selector::RPL) as u8;
    let gate_err = selector_error(gate_sel);
    if gate.dpl() < cpl.max(rpl) {
        return Err(gp(gate_err));
    }
    if !gate.present() {
        return Err(Exception::not_present(gate_err).into());
    }
    let long = long_mode(cx);
    // Entry offset, the size of what the transfer pushes, and the parameters it copies.
    let (offset, size, params) = if long {
        let high = gate_high_half(cx, gate_sel)?;
        (gate.gate_offset() | ((high & 0xFFFF_FFFF) << 32), 8, 0)
    } else if gate.kind() == system_type::CALL_GATE {
        (gate.gate_offset(), 4, gate.gate_params())
    } else {
        (gate.gate_offset() & 0xFFFF, 2, gate.gate_params())
    };
    let code_sel = gate.gate_selector();
    let (desc, addr) = code_descriptor(cx, code_sel, 0)?;
    let code_err = selector_error(code_sel);
    let jump_changes_ring = !call && !desc.is_conforming() && desc.dpl() != cpl;
    // Long-mode gates lead to 64-bit code only.
    let not_64bit = long && (!desc.is_long() || desc.is_default32());
    if desc.dpl() > cpl || jump_changes_ring || not_64bit {
        return Err(gp(code_err));
    }
    if !desc.present() {
        return Err(Exception::not_present(code_err).into());
    }
    let rip = check_target(offset, desc.limit(), long)?;
    let new_cpl = if desc.is_conforming() {
        cpl
    } else {
        desc.dpl()
    };
    let mut stack = if new_cpl < cpl {
        inner_stack(cx, new_cpl, size, params, long)?
    } else {
        // Through a long-mode gate the return address is pushed as 64-bit code pushes,
        // even when the caller runs in compatibility mode.
        let ss = cx.cpu.seg[SegReg::Ss];
        Stack::new(ss, cx.cpu.gpr[4], long)
    };
    if call {
        push_return(cx, &mut stack, size, new_cpl, ins)?;
    }
    segment::mark_accessed(cx, desc, addr)?;
    stack.commit(cx);
    enter(cx, desc, code_sel, new_cpl, rip);
    cx.report_ring_change(cpl, RingCause::CallGate);
    Ok(())
}

/// The stack of a CALL through a gate into ring `new_cpl`: that ring's stack from the
/// TSS, holding the caller's SS and ESP and then `params` parameters copied from the
/// caller's stack in their original order.
fn inner_stack(
    cx: &mut Ctx<'_>,
    new_cpl: u8,
    size: u8,
    params: u8,
    long: bool,
) -> Result<Stack, Fault> {
    let (ss_sel, sp) = tss_stack(cx, new_cpl, 0)?;
    let ss = if long {
        segment::null_stack(new_cpl)
    } else {
        stack_descriptor(cx, ss_sel, new_cpl, vector::TS, 0)?
    };
    let caller = Stack::current(cx);
    let mut source = caller;
    let mut copied = [0u64; 32];
    for p in copied.iter_mut().take(params as usize) {
        *p = source.pop(cx, size)?;
    }
    // Beyond the new stack's limit: #SS naming it.
    let mut inner = Stack::new(ss, sp, long).with_error(selector_error(ss.selector));
    inner.push(cx, size, caller.seg.selector as u64, new_cpl)?;
    inner.push(cx, size, caller.rsp(), new_cpl)?;
    for &p in copied[..params as usize].iter().rev() {
        inner.push(cx, size, p, new_cpl)?;
    }
    Ok(inner)
}

// ---- far RET and IRET ----

/// Where a far RET or IRET lands, checked but not yet committed.
struct Landing {
    cs: Segment,
    rip: u64,
    stack: Stack,
    /// The CPL grows: data segments the new ring may not use are emptied.
    outer: bool,
}

impl Landing {
    fn commit(self, cx: &mut Ctx<'_>) {
        self.stack.commit(cx);
        cx.cpu.seg.set(SegReg::Cs, self.cs);
        cx.cpu.rip = self.rip;
        if self.outer {
            let cpl = (self.cs.selector & selector::RPL) as u8;
            segment::clear_inaccessible_data_segments(cx, cpl);
        }
    }
}

/// The protected-mode half of far RET and IRET, after CS:EIP were popped from `stack`:
/// checks the code segment and, returning to an outer ring or when `pop_stack` says so
/// (IRET in 64-bit mode), pops and checks SS:ESP. `release` bytes of parameters (RET
/// imm16) are dropped from both stacks.
fn protected_return(
    cx: &mut Ctx<'_>,
    mut stack: Stack,
    rip: u64,
    sel: u16,
    size: u8,
    release: u64,
    pop_stack: bool,
) -> Result<Landing, Fault> {
    let cpl = cx.cpu.cpl();
    let (desc, addr) = code_descriptor(cx, sel, 0)?;
    let rpl = (sel & selector::RPL) as u8;
    // Returns never go inward; conforming code runs at the RPL, other code at its DPL.
    let allowed = rpl >= cpl
        && if desc.is_conforming() {
            desc.dpl() <= rpl
        } else {
            desc.dpl() == rpl
        };
    if !allowed || reserved_code(cx, desc) {
        return Err(gp(selector_error(sel)));
    }
    if !desc.present() {
        return Err(Exception::not_present(selector_error(sel)).into());
    }
    let target64 = long_mode(cx) && desc.is_long();
    let rip = check_target(rip, desc.limit(), target64)?;
    stack.release(release);
    let outer = rpl > cpl;
    if outer || pop_stack {
        let sp = stack.pop(cx, size)?;
        let ss_sel = stack.pop(cx, size)? as u16;
        let ss = return_stack_segment(cx, ss_sel, rpl, target64)?;
        stack = Stack::new(ss, sp, target64);
        stack.release(release);
    }
    segment::mark_accessed(cx, desc, addr)?;
    Ok(Landing {
        cs: desc.segment(sel),
        rip,
        stack,
        outer,
    })
}

/// The stack segment a return to ring `cpl` loads: checked like an inner stack but
/// refused with #GP; 64-bit code outside ring 3 may run on a null SS.
fn return_stack_segment(
    cx: &mut Ctx<'_>,
    sel: u16,
    cpl: u8,
    target64: bool,
) -> Result<Segment, Fault> {
    if sel & !selector::RPL == 0 && target64 && cpl != 3 {
        return Ok(segment::null_stack(cpl));
    }
    stack_descriptor(cx, sel, cpl, vector::GP, 0)
}

fn retf(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins);
    // RETF imm16 releases imm16 bytes of parameters.
    let release = if ins.op_count() == 1 {
        ins.immediate(0)
    } else {
        0
    };
    let from = cx.cpu.cpl();
    let mut stack = Stack::current(cx);
    let rip = stack.pop(cx, size)?;
    let sel = stack.pop(cx, size)? as u16;
    if segment::protected(cx) {
        protected_return(cx, stack, rip, sel, size, release, false)?.commit(cx);
        cx.report_ring_change(from, RingCause::FarReturn);
    } else {
        let rip = check_target(rip, cx.cpu.seg[SegReg::Cs].limit, false)?;
        stack.release(release);
        stack.commit(cx);
        segment::load_real(cx, SegReg::Cs, sel);
        cx.cpu.rip = rip;
    }
    cx.end_block = true;
    Ok(())
}

/// The RFLAGS an IRET leaves: the popped image, except for what the old CPL may not
/// change — IF only at CPL <= IOPL, IOPL (and VIF/VIP) only at CPL 0 — and, for a
/// 16-bit IRET, everything above bit 15.
fn iret_flags(cx: &Ctx<'_>, popped: u64, size: u8) -> u64 {
    let old = cx.cpu.rflags.get();
    let cpl = cx.cpu.cpl();
    let iopl = ((old & rflags::IOPL) >> rflags::IOPL.trailing_zeros()) as u8;
    let mut writable = rflags::ARITH | rflags::TF | rflags::DF | rflags::NT;
    if size > 2 {
        writable |= rflags::RF | rflags::AC | rflags::ID;
    }
    if cpl <= iopl {
        writable |= rflags::IF;
    }
    if cpl == 0 {
        writable |= rflags::IOPL;
        // Real mode keeps the virtual-interrupt flags, as the SDM's mask 257FD5H says.
        if size > 2 && segment::protected(cx) {
            writable |= rflags::VIF | rflags::VIP;
        }
    }
    if size == 2 {
        writable &= 0xFFFF;
    }
    (old & !writable) | (popped & writable)
}

/// Loads RFLAGS as a return leaves them. Unlike STI, IRET and SYSRET have no interrupt
/// shadow: if they enable interrupts, a pending one is taken before the next instruction.
fn load_flags(cx: &mut Ctx<'_>, flags: u64) {
    let was_enabled = cx.cpu.rflags.control(rflags::IF);
    cx.cpu.rflags.set_all(flags);
    if !was_enabled && flags & rflags::IF != 0 {
        cx.next_poll = 0;
    }
}

/// IRET. (It would also end the blocking of NMIs, which Popek does not model.)
fn iret(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins);
    let from = cx.cpu.cpl();
    let protected = cx.cpu.cr0 & cr0::PE != 0;
    if protected && cx.cpu.rflags.control(rflags::VM) {
        // IRET inside virtual-8086 mode: Popek does not implement that mode.
        return Err(Fault::Unsupported);
    }
    if protected && cx.cpu.rflags.control(rflags::NT) {
        // A return from a nested task is a task switch; long mode has none.
        if long_mode(cx) {
            return Err(gp(0));
        }
        let link = cx.read_sys(cx.cpu.tr.base, 2)? as u16;
        return task::switch(cx, link, task::Cause::Iret, 0);
    }
    let mut stack = Stack::current(cx);
    let rip = stack.pop(cx, size)?;
    let sel = stack.pop(cx, size)? as u16;
    let popped = stack.pop(cx, size)?;
    let flags = iret_flags(cx, popped, size);
    if !protected {
        let rip = check_target(rip, cx.cpu.seg[SegReg::Cs].limit, false)?;
        stack.commit(cx);
        segment::load_real(cx, SegReg::Cs, sel);
        cx.cpu.rip = rip;
    } else {
        if !long_mode(cx) && popped & rflags::VM != 0 && from == 0 {
            // A return to virtual-8086 mode.
            return Err(Fault::Unsupported);
        }
        // 64-bit mode always pops SS:RSP, even within a ring.
        let pop_stack = cx.cpu.code_bitness() == 64;
        protected_return(cx, stack, rip, sel, size, 0, pop_stack)?.commit(cx);
    }
    load_flags(cx, flags);
    cx.report_ring_change(from, RingCause::Iret);
    cx.end_block = true;
    Ok(())
}

// ---- SYSENTER/SYSEXIT, SYSCALL/SYSRET ----

/// The flat 4 GiB segment the fast system-call instructions load without reading the
/// GDT: code (64-bit if `long`) or data, of privilege `dpl`.
fn flat(selector: u16, type_bits: u16, dpl: u8, long: bool) -> Segment {
    let mut s = Segment::flat32(selector, type_bits);
    s.attr |= (dpl as u16) << 5;
    if long {
        s.attr = (s.attr & !Segment::DB) | Segment::LONG;
    }
    s
}

/// Where a fast system call or return goes: flat CS (64-bit if `long`) and SS of the
/// privilege their RPL says, RIP, and RSP if the instruction sets it.
struct FastTarget {
    cs: u16,
    ss: u16,
    long: bool,
    rsp: Option<u64>,
    rip: u64,
}

/// Loads a fast system call's or return's target, and tells the VMM about the ring
/// change.
fn fast_transfer(cx: &mut Ctx<'_>, to: FastTarget, cause: RingCause) {
    let from = cx.cpu.cpl();
    let dpl = (to.cs & selector::RPL) as u8;
    cx.cpu
        .seg
        .set(SegReg::Cs, flat(to.cs, Segment::TYPE_CODE_RX, dpl, to.long));
    cx.cpu
        .seg
        .set(SegReg::Ss, flat(to.ss, Segment::TYPE_DATA_RW, dpl, false));
    if let Some(rsp) = to.rsp {
        cx.cpu.gpr[4] = rsp;
    }
    cx.cpu.rip = to.rip;
    cx.report_ring_change(from, cause);
    cx.end_block = true;
}

/// IA32_SYSENTER_CS without its RPL; 0 means SYSENTER/SYSEXIT are not set up.
fn sysenter_cs(cx: &Ctx<'_>) -> u16 {
    cx.cpu.msr.sysenter_cs as u16 & !selector::RPL
}

fn sysenter(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let cs = sysenter_cs(cx);
    if cx.cpu.cr0 & cr0::PE == 0 || cs == 0 {
        return Err(gp(0));
    }
    let long = long_mode(cx);
    let (mut rsp, mut rip) = (cx.cpu.msr.sysenter_esp, cx.cpu.msr.sysenter_eip);
    if !long {
        (rsp, rip) = (rsp & 0xFFFF_FFFF, rip & 0xFFFF_FFFF);
    }
    let kept = cx.cpu.rflags.get() & !(rflags::VM | rflags::IF | rflags::RF);
    cx.cpu.rflags.set_all(kept);
    let to = FastTarget {
        cs,
        ss: cs.wrapping_add(SS_AFTER_CS),
        long,
        rsp: Some(rsp),
        rip,
    };
    fast_transfer(cx, to, RingCause::Sysenter);
    Ok(())
}

fn sysexit(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let base = sysenter_cs(cx);
    if cx.cpu.cr0 & cr0::PE == 0 || base == 0 || cx.cpu.cpl() != 0 {
        return Err(gp(0));
    }
    let to64 = ins.code() == Code::Sysexitq;
    let (rsp, rip, cs) = if to64 {
        let (rsp, rip) = (cx.cpu.gpr[1], cx.cpu.gpr[2]);
        if !is_canonical(rsp) || !is_canonical(rip) {
            return Err(gp(0));
        }
        (rsp, rip, base.wrapping_add(SYSEXIT_CS64))
    } else {
        let (esp, eip) = (cx.reg(Register::ECX), cx.reg(Register::EDX));
        (esp, eip, base.wrapping_add(SYSEXIT_CS32))
    };
    let cs = cs | 3;
    let to = FastTarget {
        cs,
        ss: cs.wrapping_add(SS_AFTER_CS),
        long: to64,
        rsp: Some(rsp),
        rip,
    };
    fast_transfer(cx, to, RingCause::Sysexit);
    Ok(())
}

fn syscall(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    // Intel's SYSCALL exists in 64-bit mode only (AMD's also in legacy and
    // compatibility mode): the processor CPUID reports is an Intel one.
    if cx.cpu.efer & efer::SCE == 0 || cx.cpu.code_bitness() != 64 {
        return Err(Exception::invalid_opcode().into());
    }
    let cs = (cx.cpu.msr.star >> STAR_SYSCALL_SHIFT) as u16 & !selector::RPL;
    let flags = cx.cpu.rflags.get();
    // RCX and R11 keep what SYSRET needs to come back.
    cx.cpu.gpr[1] = ins.next_ip();
    cx.cpu.gpr[11] = flags & !rflags::RF;
    let kept = flags & !cx.cpu.msr.fmask & !rflags::RF;
    cx.cpu.rflags.set_all(kept);
    if kept & rflags::TF == 0 {
        // With TF masked, no single-step trap follows SYSCALL: the kernel's first
        // instruction runs untraced.
        cx.debug_trap &= !dr6::BS;
    }
    let to = FastTarget {
        cs,
        ss: cs.wrapping_add(SS_AFTER_CS),
        long: true,
        rsp: None,
        rip: cx.cpu.msr.lstar,
    };
    fast_transfer(cx, to, RingCause::Syscall);
    Ok(())
}

fn sysret(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    // Like SYSCALL, Intel's SYSRET exists in 64-bit mode only.
    if cx.cpu.efer & efer::SCE == 0 || cx.cpu.code_bitness() != 64 {
        return Err(Exception::invalid_opcode().into());
    }
    if cx.cpu.cpl() != 0 {
        return Err(gp(0));
    }
    let base = (cx.cpu.msr.star >> STAR_SYSRET_SHIFT) as u16;
    let to64 = ins.code() == Code::Sysretq;
    let flags = (cx.cpu.gpr[11] & SYSRET_FLAGS) | rflags::FIXED;
    let (cs, rip) = if to64 {
        // Checked before the ring changes: the #GP is taken at CPL 0, on whatever
        // stack the kernel set up for the return, so kernels check RCX themselves.
        let rip = cx.cpu.gpr[1];
        if !is_canonical(rip) {
            return Err(gp(0));
        }
        (base.wrapping_add(SYSRET_CS64), rip)
    } else {
        (base, cx.reg(Register::ECX))
    };
    load_flags(cx, flags);
    let to = FastTarget {
        cs: cs | 3,
        ss: base.wrapping_add(SS_AFTER_CS) | 3,
        long: to64,
        rsp: None,
        rip,
    };
    fast_transfer(cx, to, RingCause::Sysret);
    Ok(())
}

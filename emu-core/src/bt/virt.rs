//! Ring compression, the full-virtualization technique of a binary translator, as a
//! model: what a guest kernel deprivileged to ring 1 under a VMM would see, and what
//! the VMM would have to do about it.
//!
//! The guest's [`crate::cpu::CpuState`] is its *virtual* CPU: the one it believes it
//! runs on, at CPL 0. Under ring compression its kernel code would really run at ring 1
//! on a CPU whose privileged state (GDTR, IDTR, TR, CR0, IF, IOPL) is the VMM's. Popek
//! does not keep that second, real CPU; it models what happens at the points where the
//! two differ, which are exactly the instructions the opcode table calls sensitive
//! ([`Sensitivity`]):
//!
//! - **privileged** and **IOPL-checked** ones (MOV CR, LGDT, HLT, CLI, IN, ...) fault at
//!   ring 1: the VMM traps them and emulates them on the virtual CPU. Popek runs them on
//!   the virtual CPU and counts the trap.
//! - **sensitive but unprivileged** ones (POPF, PUSHF, SGDT, SIDT, SLDT, STR, SMSW,
//!   LAR/LSL/VERR/VERW, PUSH and MOV of a segment register, ...) do *not* fault at
//!   ring 1. Under `--virt full` the translator rewrites them into VMM call-outs that act on
//!   the virtual CPU: they give the right answer, and are counted. Under `--virt trap`
//!   (trap-and-emulate alone, no rewriting) they run unseen on the real CPU and give
//!   what it holds: POPF cannot change IF or IOPL, PUSHF shows IF = 1 and IOPL = 0,
//!   SGDT and SIDT show the VMM's tables, STR the VMM's task register, SMSW the real
//!   CR0, PUSH CS or SS shows RPL 1, VERR/VERW/LAR/LSL check against CPL 1. That is why
//!   x86 is not classically virtualizable (Popek and Goldberg).
//!
//! Control transfers in the unprivileged list (INT n, IRET, far CALL/JMP/RET, loads of
//! segment registers) reach descriptors of DPL 0 from ring 1 and fault: under both
//! modes they are counted as traps and emulated.
//!
//! The model applies where the translator runs the guest (32-bit protected mode on
//! flat segments). Memory is virtualized the same VMM's way, by shadow page tables
//! behind the vCPU's TLB ([`crate::x86::spt`], installed by the engine under both
//! modes).

use crate::cpu::{cr0, rflags, SegReg};
use crate::exit::{EngineEvent, SensitiveHandling};
use crate::interp::cache::Op;
use crate::x86::mmu::Access;
use crate::x86::opcode::{self, Sensitivity};
use crate::x86::Ctx;
use iced_x86::{Mnemonic, OpKind, Register};
use std::collections::BTreeMap;

/// How the guest kernel runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Virt {
    /// At ring 0: plain binary translation.
    #[default]
    None,
    /// Deprivileged to ring 1, trap-and-emulate only: sensitive unprivileged
    /// instructions run unseen and give the real CPU's answers.
    Trap,
    /// Deprivileged to ring 1, with the translator rewriting the sensitive unprivileged
    /// instructions into VMM call-outs: full virtualization.
    Full,
}

/// Where the VMM's GDT would be: the top 4 MiB of the address space, which VMware's
/// VMM reserved for itself.
const VMM_GDT_BASE: u64 = 0xFFC0_0000;
/// The VMM's GDT limit.
const VMM_GDT_LIMIT: u64 = 0xFFF;
/// The VMM's IDT, after its GDT.
const VMM_IDT_BASE: u64 = 0xFFC0_1000;
/// The VMM's IDT limit (256 gates).
const VMM_IDT_LIMIT: u64 = 0x7FF;
/// The VMM's task-register selector.
const VMM_TR: u64 = 0x40;
/// The CR0 bits the VMM runs with whatever the guest set: protection, paging (shadow
/// tables), write protection and native FPU errors.
const VMM_CR0: u64 = cr0::PE | cr0::PG | cr0::WP | cr0::NE;
/// The real ring of guest kernel code.
const GUEST_KERNEL_RING: u64 = 1;

/// What ring compression cost, by instruction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtStats {
    /// Privileged instructions the guest kernel ran: each a trap to the VMM.
    pub traps: BTreeMap<Mnemonic, u64>,
    /// Sensitive unprivileged instructions rewritten into VMM call-outs (full).
    pub callouts: BTreeMap<Mnemonic, u64>,
    /// Sensitive unprivileged instructions that ran unseen, with the real CPU's
    /// answers (trap).
    pub unseen: BTreeMap<Mnemonic, u64>,
}

/// Runs `op`, a call-out of translated guest code, under the ring-compression model:
/// whether it went on (as [`crate::interp::execute`] says).
pub fn execute(virt: Virt, stats: &mut VirtStats, cx: &mut Ctx<'_>, op: &Op) -> bool {
    if virt == Virt::None || cx.cpu.cpl() != 0 {
        return crate::interp::execute(cx, op);
    }
    let mnemonic = op.ins.mnemonic();
    let handling = match opcode::facts(op.ins.code()).sensitivity {
        Sensitivity::None => return crate::interp::execute(cx, op),
        Sensitivity::Privileged | Sensitivity::IoplChecked => SensitiveHandling::Trap,
        Sensitivity::Unprivileged if !reveals_real_state(op) => SensitiveHandling::Trap,
        Sensitivity::Unprivileged if virt == Virt::Full => SensitiveHandling::Callout,
        Sensitivity::Unprivileged => SensitiveHandling::Unseen,
    };
    let counts = match handling {
        SensitiveHandling::Trap => &mut stats.traps,
        SensitiveHandling::Callout => &mut stats.callouts,
        SensitiveHandling::Unseen => &mut stats.unseen,
    };
    *counts.entry(mnemonic).or_default() += 1;
    let event = EngineEvent::Sensitive {
        rip: op.ins.ip(),
        mnemonic,
        handling,
    };
    cx.exits.engine_event(event, cx.icount);
    match handling {
        SensitiveHandling::Unseen => unseen(cx, op),
        _ => crate::interp::execute(cx, op),
    }
}

/// Whether a sensitive unprivileged instruction runs at ring 1 without faulting,
/// reading or dropping privileged state (rather than transferring control).
fn reveals_real_state(op: &Op) -> bool {
    use Mnemonic::*;
    match op.ins.mnemonic() {
        Popf | Popfd | Pushf | Pushfd | Sgdt | Sidt | Sldt | Str | Smsw | Lar | Lsl | Verr
        | Verw => true,
        // PUSH of a segment register, or MOV from one (not to one).
        Push => op.ins.op0_kind() == OpKind::Register,
        Mov => op.ins.op1_kind() == OpKind::Register && op.ins.op1_register().is_segment_register(),
        _ => false,
    }
}

/// Runs a sensitive unprivileged instruction as the real CPU would at ring 1: it is
/// run on the virtual CPU, then what it showed or changed is made what the real one
/// holds. Its faults are the virtual CPU's (an unmapped destination faults alike).
fn unseen(cx: &mut Ctx<'_>, op: &Op) -> bool {
    let ins = &op.ins;
    let before = cx.cpu.rflags.get();
    let ring1 = matches!(
        ins.mnemonic(),
        Mnemonic::Lar | Mnemonic::Lsl | Mnemonic::Verr | Mnemonic::Verw
    );
    if ring1 {
        // The descriptor checks run at CPL 1 (the guest's descriptors have DPL 0).
        set_rpl(cx, SegReg::Cs, GUEST_KERNEL_RING);
    }
    let went_on = crate::interp::execute(cx, op);
    if ring1 {
        set_rpl(cx, SegReg::Cs, 0);
    }
    if !went_on || cx.cpu.rip != ins.next_ip() {
        return went_on;
    }
    // What the real CPU showed instead; a fault while showing it cannot happen, as the
    // destination was just written.
    let _ = match ins.mnemonic() {
        Mnemonic::Popf | Mnemonic::Popfd => {
            // At CPL 1 with IOPL 0, POPF leaves IF and IOPL as they were.
            let keep = rflags::IF | rflags::IOPL;
            let now = cx.cpu.rflags.get();
            cx.cpu.rflags.set_all((now & !keep) | (before & keep));
            Ok(())
        }
        Mnemonic::Pushf | Mnemonic::Pushfd => {
            // The real IF is set (the VMM takes interrupts) and the real IOPL is 0.
            let size = if ins.code() == iced_x86::Code::Pushfd {
                4
            } else {
                2
            };
            let esp = cx.cpu.gpr[4] & 0xFFFF_FFFF;
            cx.seg_addr(SegReg::Ss, esp, u32::from(size), Access::Write)
                .and_then(|at| {
                    let shown = (before | rflags::IF) & !rflags::IOPL;
                    cx.write(at, size, shown)
                })
        }
        Mnemonic::Sgdt => patch_table(cx, op, VMM_GDT_BASE, VMM_GDT_LIMIT),
        Mnemonic::Sidt => patch_table(cx, op, VMM_IDT_BASE, VMM_IDT_LIMIT),
        Mnemonic::Str => patch_dest(cx, op, VMM_TR),
        Mnemonic::Sldt => patch_dest(cx, op, 0),
        Mnemonic::Smsw => patch_dest(cx, op, (cx.cpu.cr0 | VMM_CR0) & 0xFFFF),
        Mnemonic::Push => {
            let r = ins.op0_register();
            if r == Register::CS || r == Register::SS {
                let size = if ins.code() == iced_x86::Code::Pushw_CS
                    || ins.code() == iced_x86::Code::Pushw_SS
                {
                    2
                } else {
                    4
                };
                let esp = cx.cpu.gpr[4] & 0xFFFF_FFFF;
                cx.seg_addr(SegReg::Ss, esp, size, Access::Write)
                    .and_then(|at| {
                        let v = cx.read(at, size as u8)?;
                        cx.write(at, size as u8, v | GUEST_KERNEL_RING)
                    })
            } else {
                Ok(())
            }
        }
        Mnemonic::Mov => {
            let r = ins.op1_register();
            if r == Register::CS || r == Register::SS {
                let sel = u64::from(
                    cx.cpu.seg[if r == Register::CS {
                        SegReg::Cs
                    } else {
                        SegReg::Ss
                    }]
                    .selector,
                );
                patch_dest(cx, op, sel | GUEST_KERNEL_RING)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    };
    went_on
}

/// Sets the RPL of a segment register's selector (the ring code runs at).
fn set_rpl(cx: &mut Ctx<'_>, seg: SegReg, rpl: u64) {
    cx.cpu
        .seg
        .modify(seg, |s| s.selector = (s.selector & !3) | rpl as u16);
}

/// Overwrites the destination (register or memory, 16 bits or the register's size)
/// of an instruction that stored a selector or a machine status word.
fn patch_dest(cx: &mut Ctx<'_>, op: &Op, v: u64) -> Result<(), crate::x86::Fault> {
    let ins = &op.ins;
    match ins.op0_kind() {
        OpKind::Register => {
            cx.set_reg(ins.op0_register(), v);
            Ok(())
        }
        _ => {
            let at = cx.mem_addr(ins, 2, Access::Write)?;
            cx.write(at, 2, v)
        }
    }
}

/// Overwrites what SGDT or SIDT stored: a 16-bit limit, then a 32-bit base.
fn patch_table(cx: &mut Ctx<'_>, op: &Op, base: u64, limit: u64) -> Result<(), crate::x86::Fault> {
    let at = cx.mem_addr(&op.ins, 6, Access::Write)?;
    cx.write(at, 2, limit)?;
    let at = cx.seg_addr(
        crate::x86::ctx::seg_of(op.ins.memory_segment()),
        cx.effective_address(&op.ins).wrapping_add(2) & 0xFFFF_FFFF,
        4,
        Access::Write,
    )?;
    cx.write(at, 4, base)
}

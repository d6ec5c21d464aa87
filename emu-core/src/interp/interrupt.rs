//! Delivering exceptions and interrupts: through the real-mode interrupt vector table,
//! the protected-mode IDT (with the stack switch from the TSS when the privilege level
//! changes) or the long-mode IDT (with its interrupt stack table), and the escalation of
//! a fault during delivery to a double fault and then to a triple fault (shutdown).

use super::segment::{self, code_descriptor, selector_error, system_type, tss_stack};
use super::stack::push;
use super::{Ctx, Fault};
use crate::cpu::{cr0, efer, rflags, SegReg, Segment};
use crate::exception::{vector, Exception};
use crate::exit::{GuestEvent, RingCause, StopReason, VmExit};

/// What raised the event: it decides the return address, the gate DPL check and the
/// EXT bit of error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A fault or trap raised by an instruction.
    Exception,
    /// INT n.
    Software,
    /// INT3 or INTO: exceptions, but checked against the gate DPL like INT n.
    SoftwareException,
    /// A hardware interrupt from the interrupt controller.
    External,
}

impl Source {
    /// The EXT bit of error codes: set for events the program did not ask for.
    fn ext(self) -> u32 {
        matches!(self, Source::Exception | Source::External) as u32
    }

    fn cause(self, vector: u8) -> RingCause {
        match self {
            Source::Exception => RingCause::Exception(vector),
            Source::External => RingCause::Interrupt(vector),
            Source::Software | Source::SoftwareException => RingCause::SoftwareInterrupt(vector),
        }
    }
}

/// Size of a long-mode IDT gate.
const GATE64_SIZE: u64 = 16;
/// Offset of IST1 in a 64-bit TSS (IST n is at 36 + 8 (n - 1)).
const TSS64_IST1: u64 = 0x24;
/// Flags every delivery clears: single-step, nested task, resume, virtual-8086.
const CLEARED_ON_DELIVERY: u64 = rflags::TF | rflags::NT | rflags::RF | rflags::VM;

/// Delivers `vector` with the CPU's RIP as the return address. On `Err` nothing is
/// committed to the CPU (stack memory may have been written).
pub fn deliver(
    cx: &mut Ctx<'_>,
    vector: u8,
    source: Source,
    error_code: Option<u32>,
) -> Result<(), Fault> {
    // The handler runs in a new context: the current instruction's pending #DB traps
    // (single step, data breakpoints) are discarded, and resume on return.
    cx.debug_trap = 0;
    let from = cx.cpu.cpl();
    if cx.cpu.cr0 & cr0::PE == 0 {
        real_mode(cx, vector)?;
    } else if cx.cpu.efer & efer::LMA != 0 {
        long_mode(cx, vector, source, error_code)?;
    } else {
        protected_mode(cx, vector, source, error_code)?;
    }
    let to = cx.cpu.cpl();
    if to != from {
        cx.exits.notify(
            GuestEvent::RingTransition {
                from,
                to,
                cause: source.cause(vector),
            },
            cx.icount,
        );
    }
    // The CPU's mode, stack or CS changed: later instructions of this block are stale.
    cx.end_block = true;
    Ok(())
}

/// Whether an exception belongs to the contributory class of the double-fault rules.
fn contributory(v: u8) -> bool {
    matches!(
        v,
        vector::DE | vector::TS | vector::NP | vector::SS | vector::GP
    )
}

/// Raises an exception at the current instruction (RIP points at it): delivers it, and
/// escalates a fault during delivery as the processor does — to #DF, and a fault while
/// delivering #DF to a triple fault. Returns why the run stops, if it must.
pub fn raise(cx: &mut Ctx<'_>, first: Exception) -> Option<StopReason> {
    escalate(cx, first, first)
}

/// `raise`, remembering the exception that started it all for the shutdown report.
fn escalate(cx: &mut Ctx<'_>, first: Exception, origin: Exception) -> Option<StopReason> {
    let rip = cx.cpu.rip;
    cx.exits.notify(
        GuestEvent::Exception {
            vector: first.vector,
            error_code: first.error_code,
            rip,
        },
        cx.icount,
    );
    let second = match deliver(cx, first.vector, Source::Exception, first.error_code) {
        Ok(()) => return None,
        Err(Fault::Unsupported) => return Some(unsupported_delivery(cx, first)),
        Err(Fault::Exception(second)) => second,
    };
    if first.vector == vector::DF {
        return Some(shutdown(cx, origin));
    }
    let double = (contributory(first.vector) && contributory(second.vector))
        || (first.vector == vector::PF
            && (contributory(second.vector) || second.vector == vector::PF));
    if double {
        return escalate(
            cx,
            Exception {
                vector: vector::DF,
                error_code: Some(0),
            },
            origin,
        );
    }
    // A benign first exception: the second is simply handled instead.
    escalate(cx, second, origin)
}

/// Delivers a hardware interrupt (the vector from the interrupt controller).
pub fn external(cx: &mut Ctx<'_>, vector: u8) -> Option<StopReason> {
    cx.exits.notify(
        GuestEvent::Interrupt {
            vector,
            rip: cx.cpu.rip,
        },
        cx.icount,
    );
    match deliver(cx, vector, Source::External, None) {
        Ok(()) => None,
        Err(Fault::Exception(e)) => raise(cx, e),
        Err(Fault::Unsupported) => Some(unsupported_delivery(
            cx,
            Exception {
                vector,
                error_code: None,
            },
        )),
    }
}

fn shutdown(cx: &mut Ctx<'_>, cause: Exception) -> StopReason {
    let state = Box::new(cx.cpu.to_state());
    let mut stop = StopReason::Shutdown(Some((cause, state.clone())));
    cx.exit(VmExit::Shutdown {
        cause: Some((cause, state)),
    });
    if let Some(reason) = cx.stop.take() {
        stop = reason;
    }
    stop
}

fn unsupported_delivery(cx: &Ctx<'_>, e: Exception) -> StopReason {
    StopReason::Unsupported {
        rip: cx.cpu.rip,
        what: format!("delivery of {} through a task gate", e.mnemonic()),
    }
}

fn real_mode(cx: &mut Ctx<'_>, vector: u8) -> Result<(), Fault> {
    let entry = vector as u64 * 4;
    if entry + 3 > cx.cpu.idtr.limit as u64 {
        return Err(Exception::general_protection(0).into());
    }
    let ip = cx.read_sys(cx.cpu.idtr.base.wrapping_add(entry), 2)?;
    let cs = cx.read_sys(cx.cpu.idtr.base.wrapping_add(entry + 2), 2)? as u16;
    let saved = (cx.cpu.regs[4], cx.cpu.flags);
    let frame = [
        cx.cpu.flags.get(),
        cx.cpu.seg[SegReg::Cs as usize].selector as u64,
        cx.cpu.rip,
    ];
    for v in frame {
        if let Err(f) = push(cx, 2, v) {
            (cx.cpu.regs[4], cx.cpu.flags) = saved;
            return Err(f);
        }
    }
    let kept = cx.cpu.flags.get() & !(rflags::IF | rflags::TF | rflags::AC);
    cx.cpu.flags.set_all(kept);
    let cs_reg = &mut cx.cpu.seg[SegReg::Cs as usize];
    cs_reg.selector = cs;
    cs_reg.base = (cs as u64) << 4;
    cx.cpu.rip = ip;
    Ok(())
}

/// The gate for `vector`: its two halves (the second only in long mode).
fn read_gate(cx: &mut Ctx<'_>, vector: u8, size: u64, ext: u32) -> Result<(u64, u64), Fault> {
    let entry = vector as u64 * size;
    let idt_error = (vector as u32) * 8 + 2 + ext; // the IDT bit set in the error code
    if entry + size - 1 > cx.cpu.idtr.limit as u64 {
        return Err(Exception::general_protection(idt_error).into());
    }
    let low = cx.read_sys(cx.cpu.idtr.base.wrapping_add(entry), 8)?;
    let high = if size == GATE64_SIZE {
        cx.read_sys(cx.cpu.idtr.base.wrapping_add(entry + 8), 8)?
    } else {
        0
    };
    Ok((low, high))
}

/// Checks a gate's type, DPL and presence; returns (type, target selector).
fn check_gate(
    cx: &Ctx<'_>,
    low: u64,
    vector: u8,
    source: Source,
    allowed: &[u16],
) -> Result<(u16, u16), Fault> {
    let ext = source.ext();
    let idt_error = (vector as u32) * 8 + 2 + ext;
    let kind = ((low >> 40) & 0xF) as u16;
    let dpl = ((low >> 45) & 3) as u8;
    let present = low & (1 << 47) != 0;
    if low & (1 << 44) != 0 || !allowed.contains(&kind) {
        return Err(Exception::general_protection(idt_error).into());
    }
    let software = matches!(source, Source::Software | Source::SoftwareException);
    if software && dpl < cx.cpu.cpl() {
        return Err(Exception::general_protection((vector as u32) * 8 + 2).into());
    }
    if !present {
        return Err(Exception {
            vector: vector::NP,
            error_code: Some(idt_error),
        }
        .into());
    }
    Ok((kind, (low >> 16) as u16))
}

fn protected_mode(
    cx: &mut Ctx<'_>,
    vector: u8,
    source: Source,
    error_code: Option<u32>,
) -> Result<(), Fault> {
    let ext = source.ext();
    let (low, _) = read_gate(cx, vector, 8, ext)?;
    if (low >> 40) & 0x1F == system_type::TASK_GATE as u64 {
        // Hardware task switching is not implemented.
        return Err(Fault::Unsupported);
    }
    let gates = [
        system_type::INT_GATE16,
        system_type::TRAP_GATE16,
        system_type::INT_GATE,
        system_type::TRAP_GATE,
    ];
    let (kind, sel) = check_gate(cx, low, vector, source, &gates)?;
    let wide = kind == system_type::INT_GATE || kind == system_type::TRAP_GATE;
    let offset = if wide {
        (low & 0xFFFF) | ((low >> 32) & 0xFFFF_0000)
    } else {
        low & 0xFFFF
    };
    let (desc, addr) = code_descriptor(cx, sel, ext)?;
    let cpl = cx.cpu.cpl();
    if desc.dpl() > cpl {
        return Err(Exception::general_protection(selector_error(sel) | ext).into());
    }
    if !desc.present() {
        return Err(Exception {
            vector: vector::NP,
            error_code: Some(selector_error(sel) | ext),
        }
        .into());
    }
    let new_cpl = if desc.is_conforming() {
        cpl
    } else {
        desc.dpl()
    };
    let size: u8 = if wide { 4 } else { 2 };
    let old_ss = cx.cpu.seg[SegReg::Ss as usize];
    let old_esp = cx.cpu.regs[4];
    let eflags = cx.cpu.flags.get();
    let cs = cx.cpu.seg[SegReg::Cs as usize].selector as u64;
    let (stack, mut sp, mut frame) = if new_cpl < cpl {
        let (ss_sel, esp) = tss_stack(cx, new_cpl, ext)?;
        let ss = segment::stack_descriptor(cx, ss_sel, new_cpl, vector::TS, ext)?;
        (ss, esp, vec![old_ss.selector as u64, old_esp])
    } else {
        (old_ss, old_esp, Vec::new())
    };
    frame.extend([eflags, cs, cx.cpu.rip]);
    frame.extend(error_code.map(u64::from));
    let wide_stack = stack.attr & Segment::DB != 0;
    let sp_mask = if wide_stack { 0xFFFF_FFFF } else { 0xFFFF };
    for v in frame {
        sp = sp.wrapping_sub(size as u64) & sp_mask;
        let lin = stack.base.wrapping_add(sp) & 0xFFFF_FFFF;
        cx.write_as_cpl(lin, size, v, new_cpl)?;
    }
    segment::mark_accessed(cx, desc, addr)?;
    // Commit: nothing above could fault after this point.
    cx.cpu.seg[SegReg::Ss as usize] = stack;
    cx.cpu.regs[4] = (cx.cpu.regs[4] & !sp_mask) | sp;
    cx.cpu.seg[SegReg::Cs as usize] = desc.segment((sel & !3) | new_cpl as u16);
    cx.cpu.rip = offset;
    let interrupt_gate = kind == system_type::INT_GATE || kind == system_type::INT_GATE16;
    clear_flags_on_entry(cx, interrupt_gate);
    Ok(())
}

/// Every gate clears TF, NT, RF and VM; an interrupt gate (not a trap gate) also IF.
fn clear_flags_on_entry(cx: &mut Ctx<'_>, interrupt_gate: bool) {
    let cleared = CLEARED_ON_DELIVERY | if interrupt_gate { rflags::IF } else { 0 };
    let kept = cx.cpu.flags.get() & !cleared;
    cx.cpu.flags.set_all(kept);
}

fn long_mode(
    cx: &mut Ctx<'_>,
    vector: u8,
    source: Source,
    error_code: Option<u32>,
) -> Result<(), Fault> {
    let ext = source.ext();
    let (low, high) = read_gate(cx, vector, GATE64_SIZE, ext)?;
    let (kind, sel) = check_gate(
        cx,
        low,
        vector,
        source,
        &[system_type::INT_GATE, system_type::TRAP_GATE],
    )?;
    let offset = (low & 0xFFFF) | ((low >> 32) & 0xFFFF_0000) | ((high & 0xFFFF_FFFF) << 32);
    let ist = (low >> 32) & 7;
    let (desc, addr) = code_descriptor(cx, sel, ext)?;
    let cpl = cx.cpu.cpl();
    if desc.dpl() > cpl || desc.attr() & Segment::LONG == 0 || desc.attr() & Segment::DB != 0 {
        return Err(Exception::general_protection(selector_error(sel) | ext).into());
    }
    if !desc.present() {
        return Err(Exception {
            vector: vector::NP,
            error_code: Some(selector_error(sel) | ext),
        }
        .into());
    }
    let new_cpl = if desc.is_conforming() {
        cpl
    } else {
        desc.dpl()
    };
    let old_rsp = cx.cpu.regs[4];
    let mut rsp = if ist != 0 {
        let off = TSS64_IST1 + 8 * (ist - 1);
        if off + 7 > cx.cpu.tr.limit as u64 {
            let code = selector_error(cx.cpu.tr.selector) | ext;
            return Err(Exception {
                vector: vector::TS,
                error_code: Some(code),
            }
            .into());
        }
        cx.read_sys(cx.cpu.tr.base.wrapping_add(off), 8)?
    } else if new_cpl < cpl {
        tss_stack(cx, new_cpl, ext)?.1
    } else {
        old_rsp
    };
    // The frame is 16-byte aligned in long mode.
    rsp &= !0xF;
    let frame = [
        cx.cpu.seg[SegReg::Ss as usize].selector as u64,
        old_rsp,
        cx.cpu.flags.get(),
        cx.cpu.seg[SegReg::Cs as usize].selector as u64,
        cx.cpu.rip,
    ];
    for v in frame.into_iter().chain(error_code.map(u64::from)) {
        rsp = rsp.wrapping_sub(8);
        cx.write_as_cpl(rsp, 8, v, new_cpl)?;
    }
    segment::mark_accessed(cx, desc, addr)?;
    if new_cpl != cpl {
        // Entering an inner ring loads SS with a null selector carrying the new RPL.
        cx.cpu.seg[SegReg::Ss as usize] = Segment {
            selector: new_cpl as u16,
            ..Segment::default()
        };
    }
    cx.cpu.regs[4] = rsp;
    cx.cpu.seg[SegReg::Cs as usize] = desc.segment((sel & !3) | new_cpl as u16);
    cx.cpu.rip = offset;
    clear_flags_on_entry(cx, kind == system_type::INT_GATE);
    Ok(())
}

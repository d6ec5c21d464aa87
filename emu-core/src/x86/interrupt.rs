//! Delivering exceptions and interrupts: through the real-mode interrupt vector table,
//! the protected-mode IDT (with the stack switch from the TSS when the privilege level
//! changes) or the long-mode IDT (with its interrupt stack table), and the escalation of
//! a fault during delivery to a double fault and then to a triple fault (shutdown).

use super::segment::{
    self, code_descriptor, selector_error, system_type, tss_stack, Descriptor, Stack,
};
use super::{task, Ctx, Fault};
use crate::cpu::{cr0, efer, rflags, SegReg};
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
    cx.report_ring_change(from, source.cause(vector));
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
    cx.delivered += 1;
    escalate(cx, first, first)
}

/// `raise`, remembering the exception that started it all for the shutdown report.
fn escalate(cx: &mut Ctx<'_>, first: Exception, origin: Exception) -> Option<StopReason> {
    let rip = cx.cpu.rip;
    cx.notify(GuestEvent::Exception {
        vector: first.vector,
        error_code: first.error_code,
        rip,
    });
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
    cx.delivered += 1;
    cx.notify(GuestEvent::Interrupt {
        vector,
        rip: cx.cpu.rip,
    });
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
    let state = Box::new(cx.cpu.state().clone());
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
    let frame = [
        flags_image(cx),
        cx.cpu.seg[SegReg::Cs].selector as u64,
        cx.cpu.rip,
    ];
    let mut stack = Stack::current(cx);
    for v in frame {
        stack.push(cx, 2, v, 0)?;
    }
    stack.commit(cx);
    let kept = cx.cpu.rflags.get() & !(rflags::IF | rflags::TF | rflags::AC);
    cx.cpu.rflags.set_all(kept);
    segment::load_real(cx, SegReg::Cs, cs);
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

/// Checks a gate's type, DPL and presence.
fn check_gate(
    cx: &Ctx<'_>,
    gate: Descriptor,
    vector: u8,
    source: Source,
    allowed: &[u16],
) -> Result<(), Fault> {
    let ext = source.ext();
    let idt_error = (vector as u32) * 8 + 2 + ext;
    if gate.is_code_data() || !allowed.contains(&gate.kind()) {
        return Err(Exception::general_protection(idt_error).into());
    }
    let software = matches!(source, Source::Software | Source::SoftwareException);
    if software && gate.dpl() < cx.cpu.cpl() {
        return Err(Exception::general_protection((vector as u32) * 8 + 2).into());
    }
    if !gate.present() {
        return Err(Exception::not_present(idt_error).into());
    }
    Ok(())
}

/// The code segment a gate leads to, checked (present, DPL not above the CPL, and
/// `fits` for the mode), with the CPL the handler runs at.
fn gate_target(
    cx: &mut Ctx<'_>,
    sel: u16,
    ext: u32,
    fits: impl Fn(&Descriptor) -> bool,
) -> Result<(Descriptor, u64, u8), Fault> {
    let (desc, addr) = code_descriptor(cx, sel, ext)?;
    let cpl = cx.cpu.cpl();
    if desc.dpl() > cpl || !fits(&desc) {
        return Err(Exception::general_protection(selector_error(sel) | ext).into());
    }
    if !desc.present() {
        return Err(Exception::not_present(selector_error(sel) | ext).into());
    }
    let new_cpl = if desc.is_conforming() {
        cpl
    } else {
        desc.dpl()
    };
    Ok((desc, addr, new_cpl))
}

fn protected_mode(
    cx: &mut Ctx<'_>,
    vector: u8,
    source: Source,
    error_code: Option<u32>,
) -> Result<(), Fault> {
    let ext = source.ext();
    let gate = Descriptor(read_gate(cx, vector, 8, ext)?.0);
    if !gate.is_code_data() && gate.kind() == system_type::TASK_GATE {
        check_gate(cx, gate, vector, source, &[system_type::TASK_GATE])?;
        task::switch(cx, gate.gate_selector(), task::Cause::Gate, ext)?;
        // The error code goes on the new task's stack.
        if let Some(code) = error_code {
            let mut stack = Stack::current(cx).with_error(ext);
            let cpl = cx.cpu.cpl();
            stack.push(cx, 4, code.into(), cpl)?;
            stack.commit(cx);
        }
        return Ok(());
    }
    let gates = [
        system_type::INT_GATE16,
        system_type::TRAP_GATE16,
        system_type::INT_GATE,
        system_type::TRAP_GATE,
    ];
    check_gate(cx, gate, vector, source, &gates)?;
    let (kind, sel) = (gate.kind(), gate.gate_selector());
    let wide = kind == system_type::INT_GATE || kind == system_type::TRAP_GATE;
    let offset = if wide {
        gate.gate_offset()
    } else {
        gate.gate_offset() & 0xFFFF
    };
    let (desc, addr, new_cpl) = gate_target(cx, sel, ext, |_| true)?;
    let cpl = cx.cpu.cpl();
    let size: u8 = if wide { 4 } else { 2 };
    let mut stack = if new_cpl < cpl {
        let (ss_sel, esp) = tss_stack(cx, new_cpl, ext)?;
        let ss = segment::stack_descriptor(cx, ss_sel, new_cpl, vector::TS, ext)?;
        // A frame beyond the new stack's limit: #SS naming that stack.
        let mut inner = Stack::new(ss, esp, false).with_error(selector_error(ss_sel) | ext);
        let old_ss = cx.cpu.seg[SegReg::Ss].selector as u64;
        inner.push(cx, size, old_ss, new_cpl)?;
        inner.push(cx, size, cx.cpu.gpr[4], new_cpl)?;
        inner
    } else {
        Stack::current(cx).with_error(ext)
    };
    let frame = [
        flags_image(cx),
        cx.cpu.seg[SegReg::Cs].selector as u64,
        cx.cpu.rip,
    ];
    for v in frame.into_iter().chain(error_code.map(u64::from)) {
        stack.push(cx, size, v, new_cpl)?;
    }
    segment::mark_accessed(cx, desc, addr)?;
    // Commit: nothing above could fault after this point.
    stack.commit(cx);
    cx.cpu
        .seg
        .set(SegReg::Cs, desc.segment((sel & !3) | new_cpl as u16));
    cx.cpu.rip = offset;
    let interrupt_gate = kind == system_type::INT_GATE || kind == system_type::INT_GATE16;
    clear_flags_on_entry(cx, interrupt_gate);
    Ok(())
}

/// The EFLAGS image a delivery pushes: with RF set for faults in protected mode.
fn flags_image(cx: &Ctx<'_>) -> u64 {
    cx.cpu.rflags.get() | if cx.push_rf { rflags::RF } else { 0 }
}

/// Every gate clears TF, NT, RF and VM; an interrupt gate (not a trap gate) also IF.
fn clear_flags_on_entry(cx: &mut Ctx<'_>, interrupt_gate: bool) {
    let cleared = CLEARED_ON_DELIVERY | if interrupt_gate { rflags::IF } else { 0 };
    let kept = cx.cpu.rflags.get() & !cleared;
    cx.cpu.rflags.set_all(kept);
}

fn long_mode(
    cx: &mut Ctx<'_>,
    vector: u8,
    source: Source,
    error_code: Option<u32>,
) -> Result<(), Fault> {
    let ext = source.ext();
    let (low, high) = read_gate(cx, vector, GATE64_SIZE, ext)?;
    let gate = Descriptor(low);
    let allowed = [system_type::INT_GATE, system_type::TRAP_GATE];
    check_gate(cx, gate, vector, source, &allowed)?;
    let (kind, sel) = (gate.kind(), gate.gate_selector());
    let offset = gate.gate_offset() | ((high & 0xFFFF_FFFF) << 32);
    let ist = (low >> 32) & 7;
    // Long-mode gates lead to 64-bit code only.
    let (desc, addr, new_cpl) = gate_target(cx, sel, ext, |d| d.is_long() && !d.is_default32())?;
    let cpl = cx.cpu.cpl();
    let old_rsp = cx.cpu.gpr[4];
    let rsp = if ist != 0 {
        let off = TSS64_IST1 + 8 * (ist - 1);
        if off + 7 > cx.cpu.tr.limit as u64 {
            let code = selector_error(cx.cpu.tr.selector) | ext;
            return Err(Exception::invalid_tss(code).into());
        }
        cx.read_sys(cx.cpu.tr.base.wrapping_add(off), 8)?
    } else if new_cpl < cpl {
        tss_stack(cx, new_cpl, ext)?.1
    } else {
        old_rsp
    };
    let old_ss = cx.cpu.seg[SegReg::Ss];
    // Entering an inner ring loads SS with a null selector carrying the new RPL.
    let ss = if new_cpl != cpl {
        segment::null_stack(new_cpl)
    } else {
        old_ss
    };
    // The frame is 16-byte aligned in long mode. A non-canonical frame address raises
    // #SS naming the stack switched to (IST or a new ring), if any.
    let switched = ist != 0 || new_cpl < cpl;
    let error = if switched {
        selector_error(ss.selector) | ext
    } else {
        ext
    };
    let mut stack = Stack::new(ss, rsp & !0xF, true).with_error(error);
    let frame = [
        old_ss.selector as u64,
        old_rsp,
        flags_image(cx),
        cx.cpu.seg[SegReg::Cs].selector as u64,
        cx.cpu.rip,
    ];
    for v in frame.into_iter().chain(error_code.map(u64::from)) {
        stack.push(cx, 8, v, new_cpl)?;
    }
    segment::mark_accessed(cx, desc, addr)?;
    stack.commit(cx);
    cx.cpu
        .seg
        .set(SegReg::Cs, desc.segment((sel & !3) | new_cpl as u16));
    cx.cpu.rip = offset;
    clear_flags_on_entry(cx, kind == system_type::INT_GATE);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::segment::system_type;
    use crate::cpu::{rflags, shadow};
    use crate::engine::Engine;
    use crate::exit::StopReason;
    use crate::interp::Interpreter;
    use crate::testkit::{gate32, Machine, TestInterrupts, CODE_BASE, IDT_BASE};

    /// The vector the test interrupt controllers raise.
    const VECTOR: u8 = 0x20;

    #[test]
    fn an_interrupt_storm_stops_at_the_budget() {
        // A trap gate leaves IF set, so the next interrupt is delivered before the
        // handler's first instruction, and the next...: nothing ever retires.
        let mut m = Machine::protected(|a| a.nop()).flags(rflags::IF);
        let entry = IDT_BASE + 8 * u64::from(VECTOR);
        m.poke_u64(entry, gate32(system_type::TRAP_GATE, CODE_BASE, 0));
        m.state.idtr.limit = (entry + 7 - IDT_BASE) as u16;
        let mut engine = Interpreter::new();
        engine.set_state(&m.state).unwrap();
        let budget = 1000;
        let mut storm = TestInterrupts::impatient(VECTOR, true);
        assert_eq!(engine.run(&m.ram, &mut storm, budget), StopReason::Budget);
        assert_eq!(engine.instructions_retired(), 0);
    }

    #[test]
    fn a_controller_polled_at_every_instruction_lets_each_run() {
        let m = Machine::protected(|a| a.nop());
        let mut engine = Interpreter::new();
        engine.set_state(&m.state).unwrap();
        let ram = m.ram;
        let mut quiet = TestInterrupts::impatient(VECTOR, false);
        assert_eq!(engine.run(&ram, &mut quiet, 100), StopReason::Halted);
        assert_eq!(engine.instructions_retired(), 2, "NOP and HLT");
    }

    #[test]
    fn single_steps_through_sti_take_the_interrupt_after_the_next_instruction() {
        // sti; nop; nop; hlt with an interrupt waiting: it must arrive after the first
        // NOP (the STI shadow), even when every step is a run of its own on a fresh
        // engine that gets the state of the last one.
        const HANDLER: u64 = CODE_BASE + 0x100;
        let mut m = Machine::protected(|a| {
            a.sti()?;
            a.nop()?;
            a.nop()
        });
        let entry = IDT_BASE + 8 * u64::from(VECTOR);
        m.poke_u64(entry, gate32(system_type::INT_GATE, HANDLER, 0));
        m.poke(HANDLER, &[0xF4]);
        m.state.idtr.limit = (entry + 7 - IDT_BASE) as u16;
        let mut pic = TestInterrupts::once(VECTOR, true);
        let mut state = m.state.clone();
        let mut rips = Vec::new();
        for _ in 0..3 {
            let mut engine = Interpreter::new();
            engine.set_state(&state).unwrap();
            engine.run(&m.ram, &mut pic, 1);
            state = engine.state().unwrap();
            rips.push(state.rip);
        }
        // STI; the first NOP, inside the shadow; then the interrupt, whose delivery ends
        // the one-step run at the handler's first instruction.
        assert_eq!(rips, [CODE_BASE + 1, CODE_BASE + 2, HANDLER]);
        let pushed_eip = m.peek(state.gpr[4], 4);
        assert_eq!(pushed_eip, CODE_BASE + 2, "returns to the second NOP");
    }

    #[test]
    fn the_shadow_is_in_the_state_only_at_the_boundary_after_sti() {
        let m = Machine::protected(|a| {
            a.sti()?;
            a.nop()
        });
        let mut quiet = TestInterrupts::impatient(VECTOR, false);
        let mut engine = Interpreter::new();
        engine.set_state(&m.state).unwrap();
        engine.run(&m.ram, &mut quiet, 1);
        assert_eq!(engine.state().unwrap().interrupt_shadow, shadow::STI);
        engine.run(&m.ram, &mut quiet, 1);
        assert_eq!(engine.state().unwrap().interrupt_shadow, 0);
    }
}

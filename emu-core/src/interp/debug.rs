//! Debug exceptions (#DB): single-stepping with EFLAGS.TF and the breakpoints of
//! DR0-DR3. An instruction breakpoint is a fault, raised before the instruction runs
//! (EFLAGS.RF suppresses it for one instruction, so a handler can return to it); single
//! steps and data breakpoints are traps, raised after the instruction completes with RIP
//! at the next one. DR6 says which conditions were met.
//!
//! While unused this costs one test per block: the run loop hands a block to
//! [`run_block`] instead of running it directly only while TF or RF is set or DR7
//! enables a breakpoint ([`active`]).
//!
//! Data breakpoints are matched against the memory accesses iced-x86 reports for the
//! instruction (its memory operands, implicit stack slots, the first element of a string
//! instruction), computed before it runs and counted only if it completes. Not
//! implemented: I/O breakpoints (R/W = 10), general detect (DR7.GD), holding a #DB
//! off after MOV SS, and the accesses of event delivery (frames, descriptor reads).

use super::cache::BlockCache;
use super::{end_block_with, execute, raise_fault, Ctx, Vcpu};
use crate::cpu::{dr6, dr7, rflags, SegReg};
use crate::exception::Exception;
use crate::exit::{DebugStop, StopReason};
use crate::x86::ctx::seg_of;
use crate::x86::debugreg::{fixed_bits, DR6, DR7};
use crate::x86::interrupt;
use iced_x86::{Instruction, InstructionInfoFactory, OpAccess, Register};

/// DR0-DR3 hold breakpoint addresses.
const BREAKPOINTS: usize = 4;

/// Whether instructions must run one by one with the debug checks: single-stepping, RF
/// to clear after the next instruction, or a breakpoint armed in DR7.
#[inline(always)]
pub fn active(cpu: &Vcpu) -> bool {
    cpu.rflags.control(rflags::TF | rflags::RF) || cpu.dr[DR7] & dr7::ENABLES != 0
}

/// Whether instructions must run one by one for a debugger (Popek's, not the guest's):
/// it set breakpoints or watchpoints.
#[inline(always)]
pub fn debugger_active(cx: &Ctx<'_>) -> bool {
    cx.debugger.is_some_and(|d| !d.is_empty())
}

/// Runs at most `left` instructions of the block at RIP, checking for #DB conditions
/// and the debugger's breakpoints and watchpoints before and after each. Kept out of
/// the run loop, whose registers belong to the common case.
#[cold]
#[inline(never)]
pub fn run_block(cx: &mut Ctx<'_>, cache: &mut BlockCache, left: usize) {
    // Checked before the fetch too: a breakpoint outranks a fetch fault.
    if debugger_breakpoint(cx) {
        return;
    }
    let hits = instruction_breakpoints(cx);
    if hits != 0 {
        return raise(cx, hits);
    }
    let block = match cache.lookup_or_build(cx, None) {
        Ok(id) => cache.block(id),
        Err(fault) => return raise_fault(cx, fault, None),
    };
    for (i, op) in block.ops.iter().take(left).enumerate() {
        if i > 0 && debugger_breakpoint(cx) {
            return;
        }
        let hits = if i == 0 {
            0
        } else {
            instruction_breakpoints(cx)
        };
        if hits != 0 {
            return raise(cx, hits);
        }
        cx.debug_trap = traps(cx, &op.ins);
        let watched = watchpoint_hit(cx, &op.ins);
        // RF has done its work once the instruction breakpoints were checked; IRET and
        // POPF may set it again for the next instruction.
        cx.cpu.rflags.set_control(rflags::RF, false);
        let before = cx.icount;
        let go_on = execute(cx, op);
        cx.skip_breakpoint = false;
        let traps = std::mem::take(&mut cx.debug_trap);
        if let Some(stop) = watched.filter(|_| cx.icount != before) {
            // The instruction completed: the debugger sees it before the guest's #DB.
            if traps != 0 {
                raise(cx, traps);
            }
            return end_block_with(cx, Some(StopReason::Debug(stop)));
        }
        if traps != 0 {
            return raise(cx, traps);
        }
        if !go_on {
            return;
        }
    }
}

/// Stops the run if the debugger set a breakpoint at CS:RIP (not on the first
/// instruction of a run, so that resuming at a breakpoint moves on).
fn debugger_breakpoint(cx: &mut Ctx<'_>) -> bool {
    let Some(debugger) = cx.debugger else {
        return false;
    };
    if cx.skip_breakpoint || debugger.breakpoints.is_empty() {
        return false;
    }
    let addr = cx.linear(SegReg::Cs, cx.cpu.rip);
    if !debugger.breakpoints.contains(&addr) {
        return false;
    }
    end_block_with(cx, Some(StopReason::Debug(DebugStop::Breakpoint { addr })));
    true
}

/// The debugger's watchpoint the instruction's accesses will hit, if any.
fn watchpoint_hit(cx: &Ctx<'_>, ins: &Instruction) -> Option<DebugStop> {
    let debugger = cx.debugger?;
    if debugger.watchpoints.is_empty() {
        return None;
    }
    let mut hit = None;
    for_each_access(cx, ins, |lin, len, read, write| {
        if hit.is_none()
            && debugger
                .watchpoints
                .iter()
                .any(|w| w.kind.triggers(read, write) && w.overlaps(lin, len))
        {
            hit = Some(DebugStop::Watchpoint {
                addr: lin,
                len,
                write,
            });
        }
    });
    hit
}

/// Raises #DB for the conditions in `hits` (DR6 bits): B0-B3 say which breakpoints
/// matched this time, BS is sticky like the other status bits.
fn raise(cx: &mut Ctx<'_>, hits: u64) {
    let status = fixed_bits(DR6, cx.cpu.dr[DR6]) & !dr6::BREAKPOINTS;
    cx.cpu.dr[DR6] = status | hits;
    let stop = interrupt::raise(cx, Exception::debug());
    end_block_with(cx, stop);
}

/// DR6 bits of the armed instruction breakpoints at CS:RIP, unless RF suppresses them.
fn instruction_breakpoints(cx: &Ctx<'_>) -> u64 {
    if cx.cpu.rflags.control(rflags::RF) {
        return 0;
    }
    let lin = cx.linear(SegReg::Cs, cx.cpu.rip);
    matches(cx.cpu, lin, 1, |rw| rw == dr7::RW_EXECUTE)
}

/// The #DB trap conditions the instruction will meet if it completes: a single step if
/// TF is set as it starts, and the data breakpoints its accesses hit.
fn traps(cx: &Ctx<'_>, ins: &Instruction) -> u64 {
    let step = if cx.cpu.rflags.control(rflags::TF) {
        dr6::BS
    } else {
        0
    };
    let armed = cx.cpu.dr[DR7] & dr7::ENABLES != 0;
    step | if armed { data_breakpoints(cx, ins) } else { 0 }
}

/// DR6 bits of the data breakpoints the instruction's memory accesses hit.
fn data_breakpoints(cx: &Ctx<'_>, ins: &Instruction) -> u64 {
    let mut hits = 0;
    for_each_access(cx, ins, |lin, size, read, write| {
        hits |= matches(cx.cpu, lin, size, |rw| {
            (rw == dr7::RW_WRITE && write) || (rw == dr7::RW_READ_WRITE && (read || write))
        });
    });
    hits
}

/// Calls `f(linear address, size, read, write)` for each memory access the instruction
/// is about to make (its memory operands, implicit stack slots, the first element of a
/// string instruction), computed before it runs.
fn for_each_access(cx: &Ctx<'_>, ins: &Instruction, mut f: impl FnMut(u64, u64, bool, bool)) {
    let mut factory = InstructionInfoFactory::new();
    for mem in factory.info(ins).used_memory() {
        let (read, write) = match mem.access() {
            OpAccess::Read | OpAccess::CondRead => (true, false),
            OpAccess::Write | OpAccess::CondWrite => (false, true),
            OpAccess::ReadWrite | OpAccess::ReadCondWrite => (true, true),
            _ => continue,
        };
        // Segment bases are added below, with the mode's wrap-around.
        let value = |r: Register, _, _| {
            Some(if r.is_segment_register() {
                0
            } else {
                cx.reg(r)
            })
        };
        let Some(offset) = mem.virtual_address(0, value) else {
            continue;
        };
        let lin = match mem.segment() {
            Register::None => offset,
            seg => cx.linear(seg_of(seg), offset),
        };
        // String instructions report no size for their operands: use the element size.
        let size = match mem.memory_size().size() {
            0 => ins.memory_size().size().max(1),
            n => n,
        } as u64;
        f(lin, size, read, write);
    }
}

/// DR6 B0-B3 bits of the enabled breakpoints whose R/W field `kind` accepts and whose
/// range overlaps the `size` bytes at `lin`.
fn matches(cpu: &Vcpu, lin: u64, size: u64, kind: impl Fn(u64) -> bool) -> u64 {
    let dr7 = cpu.dr[DR7];
    let enable_mask = (1 << dr7::ENABLE_BITS) - 1;
    (0..BREAKPOINTS)
        .filter(|&n| {
            let field =
                |shift: u32| (dr7 >> (shift + dr7::FIELD_BITS * n as u32)) & dr7::FIELD_MASK;
            let enabled = (dr7 >> (dr7::ENABLE_BITS * n as u32)) & enable_mask != 0;
            let len = dr7::LEN_BYTES[field(dr7::LEN_SHIFT) as usize];
            // The processor ignores the address bits below the watched length.
            let start = cpu.dr[n] & !(len - 1);
            // Two ranges overlap when either starts inside the other (wrapping safely).
            let overlap = start.wrapping_sub(lin) < size || lin.wrapping_sub(start) < len;
            enabled && kind(field(dr7::RW_SHIFT)) && overlap
        })
        .fold(0, |hits, n| hits | dr6::B0 << n)
}

#[cfg(test)]
mod tests {
    use super::{DR6, DR7};
    use crate::cpu::{dr6, dr7, rflags};
    use crate::exception::vector;
    use crate::testkit::{Machine, Trap, CODE_BASE, DATA, RAX};
    use iced_x86::code_asm::*;

    /// DR7: breakpoint `n` enabled (L bit) with these R/W and LEN fields.
    fn arm(n: u32, rw: u64, len: u64) -> u64 {
        let field = |shift: u32| shift + dr7::FIELD_BITS * n;
        (1 << (dr7::ENABLE_BITS * n))
            | (rw << field(dr7::RW_SHIFT))
            | (len << field(dr7::LEN_SHIFT))
    }
    /// LEN = 00: one byte (what instruction breakpoints use).
    const ONE_BYTE: u64 = 0;
    /// LEN = 11: four bytes.
    const FOUR_BYTES: u64 = 3;

    /// Runs to the next #DB and checks DR6 holds `status` (beyond the fixed bits).
    fn next_db(m: &mut Machine, status: u64) -> Trap {
        let trap = m.run_to_trap();
        assert_eq!(trap.vector, vector::DB, "{trap:?}");
        assert_eq!(m.state.dr[DR6] & !dr6::FIXED, status);
        trap
    }

    #[test]
    fn single_step_traps_after_each_instruction() {
        // One-byte instructions from `nop` on, so each trap is one byte further.
        let mut m = Machine::protected(|a| {
            a.pushfd()?;
            a.or(dword_ptr(esp), rflags::TF as i32)?;
            a.popfd()?;
            a.nop()?;
            a.inc(eax)?;
            a.inc(eax)?;
            a.pushfd()?;
            a.pop(ebx)?;
            // Clears TF; the POPF itself still traps (TF was set as it started).
            a.push(ebx)?;
            a.xor(dword_ptr(esp), rflags::TF as i32)?;
            a.popfd()
        });
        let mut steps = Vec::new();
        while let Some(trap) = {
            m.run_to_halt();
            m.trap()
        } {
            assert_eq!(trap.vector, vector::DB);
            assert_ne!(m.state.dr[DR6] & dr6::BS, 0);
            steps.push((trap.rip, trap.rflags & rflags::TF != 0));
            m.return_from_trap(0);
        }
        // After NOP, INC, INC, PUSHFD, POP, PUSH: one byte each; then the 7-byte XOR,
        // and the POPF, after which TF is clear.
        let nop = steps[0].0 - 1;
        let expect: Vec<(u64, bool)> = [1, 2, 3, 4, 5, 6, 13, 14]
            .iter()
            .map(|d| (nop + d, *d != 14))
            .collect();
        assert_eq!(steps, expect);
        assert_eq!(m.state.gpr[RAX], 2);
    }

    #[test]
    fn instruction_breakpoints_fault_before_the_instruction_unless_rf() {
        let mut m = Machine::protected(|a| {
            a.nop()?;
            a.nop()?;
            a.inc(eax)?;
            a.inc(eax)
        });
        let target = CODE_BASE + 2;
        m.state.dr[0] = target;
        m.state.dr[DR7] = arm(0, dr7::RW_EXECUTE, ONE_BYTE);
        let trap = next_db(&mut m, dr6::B0);
        assert_eq!((trap.rip, m.state.gpr[RAX]), (target, 0), "a fault");
        // Returning without RF hits it again; with RF the instruction runs.
        m.return_from_trap(0);
        assert_eq!(next_db(&mut m, dr6::B0).rip, target);
        m.return_from_trap(rflags::RF);
        let st = m.run_to_halt();
        assert_eq!(st.gpr[RAX], 2);
        assert_eq!(
            st.rflags & rflags::RF,
            0,
            "RF is cleared after one instruction"
        );
        assert!(m.trap().is_none());
    }

    #[test]
    fn data_breakpoints_trap_after_the_access() {
        let mut m = Machine::protected(|a| {
            a.mov(eax, dword_ptr(DATA + 4))?;
            a.mov(byte_ptr(DATA + 6), 1)?;
            a.mov(ebx, dword_ptr(DATA + 0x40))?;
            a.nop()
        });
        m.state.dr[1] = DATA + 4;
        m.state.dr[2] = DATA + 0x40;
        m.state.dr[DR7] =
            arm(1, dr7::RW_WRITE, FOUR_BYTES) | arm(2, dr7::RW_READ_WRITE, FOUR_BYTES);
        // The read of DATA + 4 does not trigger the write breakpoint.
        let trap = next_db(&mut m, dr6::B0 << 1);
        assert_eq!(trap.rip, CODE_BASE + 5 + 7, "after the byte store");
        m.return_from_trap(0);
        let trap = next_db(&mut m, dr6::B0 << 2);
        assert_eq!(trap.rip, CODE_BASE + 5 + 7 + 6, "after the load");
        m.return_from_trap(0);
        m.run_to_halt();
        assert!(m.trap().is_none());
    }
}

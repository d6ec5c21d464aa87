//! HLT CLI STI CPUID RDTSC UD2 and the fences; the rest of the system instructions are
//! in [`super::system`].

use super::system::{iopl_allows, require_cpl0};
use super::{Assist, Ctx, Fault, Handler};
use crate::cpu::rflags::IF;
use crate::cpu::{cr4, shadow};
use crate::exception::Exception;
use crate::exit::VmExit;
use iced_x86::{Instruction, Mnemonic};

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Hlt => hlt,
        Mnemonic::Vmcall => vmcall,
        Mnemonic::Cli => |cx: &mut Ctx<'_>, _: &Instruction| set_if(cx, false),
        Mnemonic::Sti => |cx: &mut Ctx<'_>, _: &Instruction| set_if(cx, true),
        Mnemonic::Cpuid => cpuid,
        Mnemonic::Rdtsc => rdtsc,
        Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2 => {
            |_: &mut Ctx<'_>, _: &Instruction| Err(Exception::invalid_opcode().into())
        }
        Mnemonic::Lfence | Mnemonic::Mfence | Mnemonic::Sfence => {
            |_: &mut Ctx<'_>, _: &Instruction| Ok(())
        }
        _ => return None,
    })
}

fn hlt(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    require_cpl0(cx)?;
    // RIP already points past HLT, where the CPU resumes after an interrupt. The VMM
    // returns once an interrupt is pending (or stops the run if none can come).
    let interruptible = cx.cpu.rflags.control(IF);
    cx.exit(VmExit::Hlt { interruptible });
    cx.end_block = true;
    Ok(())
}

/// Whether `ins` is the instruction the interpreter's hypercall stubs trap with: the
/// guest runs in a VM, where VMCALL exits to the VMM whatever CPUID says of VMX.
pub fn is_hypercall(ins: &Instruction) -> bool {
    ins.mnemonic() == Mnemonic::Vmcall
}

/// VMCALL: a hypercall (`docs/guest-abi.md`). RIP already points past it; the VMM
/// answers in EAX, and refuses callers outside ring 0 itself.
fn vmcall(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    cx.hypercall();
    Ok(())
}

fn set_if(cx: &mut Ctx<'_>, on: bool) -> Result<(), Fault> {
    if !iopl_allows(cx)? {
        return Err(Exception::general_protection(0).into());
    }
    if on && !cx.cpu.rflags.control(IF) {
        // STI takes effect after the next instruction, so `sti; hlt` cannot miss a wake-up.
        cx.inhibit_interrupts(shadow::STI);
    }
    cx.cpu.rflags.set_control(IF, on);
    cx.end_block = true;
    Ok(())
}

fn cpuid(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let leaf = cx.cpu.gpr[0] as u32;
    let [a, b, c, d] = if cx.assist == Assist::Vtx {
        // VT-x cannot run CPUID in the guest: the VMM answers it.
        let mut result = [0; 4];
        cx.exit(VmExit::Cpuid {
            leaf,
            subleaf: cx.cpu.gpr[1] as u32,
            result: &mut result,
        });
        result
    } else {
        crate::cpuid::cpuid(leaf)
    };
    for (r, v) in [(0, a), (3, b), (1, c), (2, d)] {
        cx.cpu.gpr[r] = v as u64;
    }
    Ok(())
}

/// The time-stamp counter counts retired instructions: one cycle each, so runs are
/// reproducible and a student can time code in instructions.
pub fn tsc(cx: &Ctx<'_>) -> u64 {
    cx.icount.wrapping_add(cx.cpu.tsc_offset)
}

/// The counter as RDTSC and RDTSCP read it: CR4.TSD reserves it for CPL 0.
pub fn read_tsc(cx: &Ctx<'_>) -> Result<u64, Fault> {
    if cx.cpu.cr4 & cr4::TSD != 0 {
        require_cpl0(cx)?;
    }
    Ok(tsc(cx))
}

/// EDX:EAX, the register pair of RDTSC, RDMSR and WRMSR.
pub fn edx_eax(cx: &Ctx<'_>) -> u64 {
    (cx.cpu.gpr[2] & 0xFFFF_FFFF) << 32 | (cx.cpu.gpr[0] & 0xFFFF_FFFF)
}

/// Sets EDX:EAX to `v` (each half zero-extended, as 32-bit writes are).
pub fn set_edx_eax(cx: &mut Ctx<'_>, v: u64) {
    cx.cpu.gpr[0] = v & 0xFFFF_FFFF;
    cx.cpu.gpr[2] = v >> 32;
}

fn rdtsc(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let tsc = read_tsc(cx)?;
    set_edx_eax(cx, tsc);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cpu::{cr4, rflags};
    use crate::exception::vector;
    use crate::testkit::{Asm, Machine, CODE_BASE, RAX, USER_CS};

    /// Runs `asm` at CPL 3 with these flags; the #GP(0) a handler caught, if any.
    fn user_gp(asm: Asm, flags: u64) -> bool {
        let mut m = Machine::protected(asm).user().flags(flags);
        m.run_to_halt();
        let Some(trap) = m.trap() else {
            return false;
        };
        assert_eq!((trap.vector, trap.error_code), (vector::GP, Some(0)));
        assert_eq!(trap.cs, USER_CS, "the frame holds the ring-3 CS");
        true
    }

    #[test]
    fn hlt_is_privileged() {
        assert!(
            user_gp(|a| a.nop(), 0),
            "the HLT after the code faults at CPL 3"
        );
    }

    #[test]
    fn cli_and_sti_need_cpl_at_most_iopl() {
        assert!(user_gp(|a| a.cli(), 0));
        assert!(user_gp(|a| a.sti(), rflags::IF));
        // With IOPL 3 they work; the HLT after them still faults.
        let mut m = Machine::protected(|a| a.cli())
            .user()
            .flags(rflags::IOPL | rflags::IF);
        let trap = m.run_to_trap();
        assert_eq!(trap.rflags & rflags::IF, 0, "CLI cleared IF");
    }

    #[test]
    fn rdtsc_obeys_cr4_tsd() {
        let mut m = Machine::protected(|a| {
            a.nop()?;
            a.rdtsc()
        });
        m.state.cr4 = cr4::TSD;
        assert_eq!(m.run_to_halt().gpr[RAX], 1, "CPL 0 may read it");
        let mut m = Machine::protected(|a| a.rdtsc()).user();
        m.state.cr4 = cr4::TSD;
        let trap = m.run_to_trap();
        assert_eq!((trap.vector, trap.rip), (vector::GP, CODE_BASE));
    }
}

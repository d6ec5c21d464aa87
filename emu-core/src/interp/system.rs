//! System instructions available to the flat 32-bit guest: HLT CLI STI CPUID RDTSC UD2
//! and the fences and cache-control no-ops.

use super::{Ctx, Fault, Handler};
use crate::cpu::rflags::IF;
use crate::exception::Exception;
use crate::exit::VmExit;
use iced_x86::{Instruction, Mnemonic};

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Hlt => hlt,
        Mnemonic::Cli => |cx: &mut Ctx<'_>, _: &Instruction| set_if(cx, false),
        Mnemonic::Sti => |cx: &mut Ctx<'_>, _: &Instruction| set_if(cx, true),
        Mnemonic::Cpuid => cpuid,
        Mnemonic::Rdtsc => rdtsc,
        Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2 => {
            |_: &mut Ctx<'_>, _: &Instruction| Err(Exception::invalid_opcode().into())
        }
        Mnemonic::Lfence
        | Mnemonic::Mfence
        | Mnemonic::Sfence
        | Mnemonic::Wbinvd
        | Mnemonic::Invd => |_: &mut Ctx<'_>, _: &Instruction| Ok(()),
        _ => return None,
    })
}

fn hlt(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    // RIP already points past HLT, where the CPU resumes after an interrupt. The VMM
    // returns once an interrupt is pending (or stops the run if none can come).
    let interruptible = cx.cpu.flags.control(IF);
    cx.exit(VmExit::Hlt { interruptible });
    cx.end_block = true;
    Ok(())
}

fn set_if(cx: &mut Ctx<'_>, on: bool) -> Result<(), Fault> {
    if on && !cx.cpu.flags.control(IF) {
        // STI takes effect after the next instruction, so `sti; hlt` cannot miss a wake-up.
        cx.inhibit_interrupts();
    }
    cx.cpu.flags.set_control(IF, on);
    cx.end_block = true;
    Ok(())
}

fn cpuid(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let [a, b, c, d] = crate::cpuid::cpuid(cx.cpu.regs[0] as u32);
    for (r, v) in [(0, a), (3, b), (1, c), (2, d)] {
        cx.cpu.regs[r] = v as u64;
    }
    Ok(())
}

/// The time-stamp counter counts retired instructions: one cycle each, so runs are
/// reproducible and a student can time code in instructions.
fn rdtsc(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let tsc = cx.icount;
    cx.cpu.regs[0] = tsc & 0xFFFF_FFFF;
    cx.cpu.regs[2] = tsc >> 32;
    Ok(())
}

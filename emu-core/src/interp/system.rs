//! System instructions available to the flat 32-bit guest: HLT CLI STI CPUID RDTSC UD2
//! and the fences and cache-control no-ops.

use super::{Ctx, Fault, Handler};
use crate::cpu::rflags::IF;
use crate::exception::Exception;
use crate::exit::VmExit;
use iced_x86::{Instruction, Mnemonic};

/// CPUID leaf 0: highest basic leaf and vendor string.
const LEAF_VENDOR: u32 = 0;
/// CPUID leaf 1: family/model/stepping and feature bits.
const LEAF_FEATURES: u32 = 1;
/// CPUID leaf 0x8000_0000: highest extended leaf.
const LEAF_EXT_MAX: u32 = 0x8000_0000;
/// The vendor string, 12 bytes in EBX, EDX, ECX order.
const VENDOR: &[u8; 12] = b"PopekVirtCPU";
/// Leaf 1 EAX: family 6, model 0, stepping 0 — a plain P6-class processor.
const FAMILY_MODEL_STEPPING: u32 = 6 << 8;
/// Leaf 1 EDX: TSC (bit 4), CX8 (bit 8), CMOV (bit 15) — what the interpreter executes.
const FEATURES_EDX: u32 = (1 << 4) | (1 << 8) | (1 << 15);

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
    // RIP already points past HLT, where the CPU resumes after an interrupt.
    cx.exit(VmExit::Hlt);
    cx.end_block = true;
    Ok(())
}

fn set_if(cx: &mut Ctx<'_>, on: bool) -> Result<(), Fault> {
    cx.cpu.flags.set_control(IF, on);
    cx.end_block = true;
    Ok(())
}

fn cpuid(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let leaf = cx.cpu.regs[0] as u32;
    let word = |i: usize| u32::from_le_bytes(VENDOR[i..i + 4].try_into().unwrap_or_default());
    let (a, b, c, d) = match leaf {
        LEAF_VENDOR => (LEAF_FEATURES, word(0), word(8), word(4)),
        LEAF_FEATURES => (FAMILY_MODEL_STEPPING, 0, 0, FEATURES_EDX),
        LEAF_EXT_MAX => (LEAF_EXT_MAX, 0, 0, 0),
        _ => (0, 0, 0, 0),
    };
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

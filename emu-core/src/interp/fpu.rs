//! The x87 FPU's control side — FNINIT FNSTCW FLDCW FNSTSW FNCLEX FWAIT — and
//! FXSAVE/FXRSTOR of the whole x87/SSE state.
//!
//! x87 arithmetic is not implemented, and CPUID reports no FPU. Those instructions still
//! raise #NM where the hardware would (with CR0.EM, the OS's cue to emulate them, or
//! CR0.TS), so a kernel that emulates the FPU or switches its state lazily sees its
//! trap; past that they raise #UD, as the processor has no FPU to run them.

use super::sse::probe_write;
use super::{Ctx, Fault, Handler};
use crate::cpu::{cr0, fxsave, FpuState, FCW_INIT, MXCSR_MASK};
use crate::cpu::{FSW_B, FSW_ES, FSW_EXCEPTIONS, FSW_SF};
use crate::exception::{vector, Exception};
use crate::x86::mmu::Access;
use crate::x86::segaccess::Addr;
use iced_x86::{CpuidFeature, Instruction, Mnemonic};

/// #NM: the FPU/SSE state is not available (CR0.EM or CR0.TS).
pub const DEVICE_NOT_AVAILABLE: Exception = Exception {
    vector: vector::NM,
    error_code: None,
};
/// #MF: an unmasked x87 exception is pending.
const MATH_FAULT: Exception = Exception {
    vector: vector::MF,
    error_code: None,
};
/// FXSAVE/FXRSTOR memory operands must be 16-byte aligned.
const FXSAVE_ALIGN: u64 = 16;

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Fninit => fninit,
        Mnemonic::Fnstcw => fnstcw,
        Mnemonic::Fldcw => fldcw,
        Mnemonic::Fnstsw => fnstsw,
        Mnemonic::Fnclex => fnclex,
        Mnemonic::Wait => fwait,
        Mnemonic::Fxsave | Mnemonic::Fxsave64 => fxsave,
        Mnemonic::Fxrstor | Mnemonic::Fxrstor64 => fxrstor,
        _ if is_x87(ins) => x87_unimplemented,
        _ => return None,
    })
}

/// Whether `ins` is an x87 instruction.
pub fn is_x87(ins: &Instruction) -> bool {
    ins.cpuid_features().iter().any(|f| {
        matches!(
            f,
            CpuidFeature::FPU
                | CpuidFeature::FPU287
                | CpuidFeature::FPU287XL_ONLY
                | CpuidFeature::FPU387
                | CpuidFeature::FPU387SL_ONLY
        )
    })
}

/// x87 instructions (and FXSAVE/FXRSTOR) raise #NM with CR0.EM (the OS emulates the
/// FPU) or CR0.TS (the OS must restore this task's FPU state first).
fn x87_ready(cx: &Ctx<'_>) -> Result<(), Fault> {
    if cx.cpu.cr0 & (cr0::EM | cr0::TS) != 0 {
        return Err(DEVICE_NOT_AVAILABLE.into());
    }
    Ok(())
}

/// A waiting instruction with an unmasked x87 exception pending raises #MF. Without
/// CR0.NE a PC would signal IRQ 13 through FERR# instead, which popek-pc does not
/// wire, so then nothing happens.
fn check_pending(cx: &Ctx<'_>) -> Result<(), Fault> {
    if cx.cpu.fpu.fsw & FSW_ES != 0 && cx.cpu.cr0 & cr0::NE != 0 {
        return Err(MATH_FAULT.into());
    }
    Ok(())
}

fn x87_unimplemented(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    x87_ready(cx)?;
    Err(Exception::invalid_opcode().into())
}

/// FNINIT: default control word, clear status, all registers empty, pointers zeroed;
/// the register contents stay.
fn fninit(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    x87_ready(cx)?;
    let fpu = &mut cx.cpu.fpu;
    fpu.fcw = FCW_INIT;
    fpu.fsw = 0;
    fpu.ftw = 0;
    fpu.fop = 0;
    fpu.fip = 0;
    fpu.fdp = 0;
    Ok(())
}

fn fnstcw(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    x87_ready(cx)?;
    let fcw = cx.cpu.fpu.fcw;
    cx.set_operand(ins, 0, fcw.into())
}

/// FLDCW, a waiting instruction: a pending exception is raised first; one it
/// unmasks is raised by the next waiting instruction.
fn fldcw(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    x87_ready(cx)?;
    check_pending(cx)?;
    let fcw = cx.operand(ins, 0)? as u16;
    cx.cpu.fpu.set_fcw(fcw);
    Ok(())
}

/// FNSTSW to memory or AX.
fn fnstsw(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    x87_ready(cx)?;
    let fsw = cx.cpu.fpu.fsw;
    cx.set_operand(ins, 0, fsw.into())
}

/// FNCLEX: clears the exception flags, stack fault, error summary and busy.
fn fnclex(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    x87_ready(cx)?;
    cx.cpu.fpu.fsw &= !(FSW_EXCEPTIONS | FSW_SF | FSW_ES | FSW_B);
    Ok(())
}

/// FWAIT raises #NM only when both CR0.TS and CR0.MP are set (MP says WAIT should
/// honour TS), then any pending x87 exception.
fn fwait(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let both = cr0::TS | cr0::MP;
    if cx.cpu.cr0 & both == both {
        return Err(DEVICE_NOT_AVAILABLE.into());
    }
    check_pending(cx)
}

/// The FXSAVE area: all 512 bytes within the segment for `access`, 16-byte aligned
/// (#GP(0) otherwise), of which this mode uses the first `len` bytes (XMM8-XMM15 only
/// in 64-bit mode).
fn fxsave_area(cx: &Ctx<'_>, ins: &Instruction, access: Access) -> Result<(Addr, usize), Fault> {
    let at = cx.mem_addr(ins, fxsave::SIZE as u32, access)?;
    if !at.linear().is_multiple_of(FXSAVE_ALIGN) {
        return Err(Exception::general_protection(0).into());
    }
    let len = if cx.cpu.code_bitness() == 64 {
        fxsave::LONG_END
    } else {
        fxsave::LEGACY_END
    };
    Ok((at, len))
}

/// FXSAVE/FXSAVE64. The FPU instruction and data pointers are kept as FXSAVE stored
/// them, so both forms store what was loaded.
fn fxsave(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    x87_ready(cx)?;
    let (area, len) = fxsave_area(cx, ins, Access::Write)?;
    probe_write(cx, area, len as u64)?;
    let img = cx.cpu.fpu.to_fxsave();
    for (at, chunk) in (0u64..).step_by(8).zip(img[..len].chunks_exact(8)) {
        let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        cx.write(area.offset(at), 8, v)?;
    }
    Ok(())
}

/// FXRSTOR/FXRSTOR64: everything is read (and MXCSR checked: reserved bits raise
/// #GP(0)) before anything is loaded.
fn fxrstor(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    x87_ready(cx)?;
    let (area, len) = fxsave_area(cx, ins, Access::Read)?;
    // Outside 64-bit mode XMM8-XMM15 are not in the area and keep their values.
    let mut img = cx.cpu.fpu.to_fxsave();
    for (at, chunk) in (0u64..).step_by(8).zip(img[..len].chunks_exact_mut(8)) {
        chunk.copy_from_slice(&cx.read(area.offset(at), 8)?.to_le_bytes());
    }
    let state = FpuState::from_fxsave(&img);
    if state.mxcsr & !MXCSR_MASK != 0 {
        return Err(Exception::general_protection(0).into());
    }
    cx.cpu.fpu = state;
    Ok(())
}

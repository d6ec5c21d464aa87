//! Instructions that read or write flags directly: CLC STC CMC CLD STD LAHF SAHF, and
//! SALC (undocumented by Intel until recently, invalid in 64-bit mode: AL = CF ? FF : 0).
//! (CLI/STI live with the system instructions: they are privilege-checked.)

use super::{Ctx, Fault, Handler};
use crate::cpu::rflags::{AF, CF, DF, PF, SF, ZF};
use iced_x86::{Instruction, Mnemonic, Register};

/// The flags LAHF and SAHF move between AH and RFLAGS (bit 1 always reads as 1).
const AH_FLAGS: u64 = SF | ZF | AF | PF | CF;

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Clc => |cx: &mut Ctx<'_>, _: &Instruction| set_carry(cx, Some(false)),
        Mnemonic::Stc => |cx: &mut Ctx<'_>, _: &Instruction| set_carry(cx, Some(true)),
        Mnemonic::Cmc => |cx: &mut Ctx<'_>, _: &Instruction| set_carry(cx, None),
        Mnemonic::Cld => |cx: &mut Ctx<'_>, _: &Instruction| {
            cx.cpu.rflags.set_control(DF, false);
            Ok(())
        },
        Mnemonic::Std => |cx: &mut Ctx<'_>, _: &Instruction| {
            cx.cpu.rflags.set_control(DF, true);
            Ok(())
        },
        Mnemonic::Lahf => lahf,
        Mnemonic::Sahf => sahf,
        Mnemonic::Salc => salc,
        _ => return None,
    })
}

/// Sets CF to `to`, or complements it when `to` is None.
fn set_carry(cx: &mut Ctx<'_>, to: Option<bool>) -> Result<(), Fault> {
    let cf = to.unwrap_or(!cx.cpu.rflags.cf());
    cx.cpu.rflags.update(CF, cf as u64);
    Ok(())
}

fn lahf(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let ah = (cx.cpu.rflags.get() & AH_FLAGS) | crate::cpu::rflags::FIXED;
    cx.set_reg(Register::AH, ah);
    Ok(())
}

fn sahf(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let ah = cx.reg(Register::AH);
    cx.cpu.rflags.update(AH_FLAGS, ah);
    Ok(())
}

/// SALC: AL = 0xFF if CF is set, else 0; no flag changes.
fn salc(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let al = if cx.cpu.rflags.cf() { 0xFF } else { 0 };
    cx.set_reg(Register::AL, al);
    Ok(())
}

//! Decimal arithmetic on AL and AX: DAA DAS (packed BCD) and AAA AAS AAM AAD (unpacked
//! BCD), each as the Intel SDM's pseudo-code has it.
//!
//! All six are invalid in 64-bit mode; iced-x86 decodes their opcodes there as invalid,
//! so they raise #UD before reaching these handlers. The flags the manuals leave
//! undefined are set as QEMU sets them (compared result by result with QEMU TCG, which
//! the `bcd` test ROM keeps checking): OF is cleared by DAA and DAS; AAA and AAS leave
//! OF, SF, ZF and PF alone; AAM and AAD clear OF, AF and CF.

use super::{Ctx, Fault, Handler};
use crate::cpu::rflags::{AF, CF};
use crate::exception::Exception;
use crate::x86::flags::FlagOp;
use iced_x86::{Instruction, Mnemonic, Register};

/// A decimal digit's largest value: a low nibble above it needs adjusting.
const DIGIT_MAX: u8 = 9;
/// A packed BCD byte's largest value: above it the high digit needs adjusting.
const PACKED_MAX: u8 = 0x99;
/// What DAA/DAS add or subtract to adjust the low digit.
const LOW_ADJUST: u8 = 0x06;
/// What DAA/DAS add or subtract to adjust the high digit.
const HIGH_ADJUST: u8 = 0x60;
/// The low nibble: one unpacked BCD digit.
const LOW_NIBBLE: u8 = 0x0F;
/// One in AH, as AX sees it: AAA's carry and AAS's borrow.
const AH_ONE: u16 = 0x100;

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Daa => decimal_adjust::<true>,
        Mnemonic::Das => decimal_adjust::<false>,
        Mnemonic::Aaa => ascii_adjust::<true>,
        Mnemonic::Aas => ascii_adjust::<false>,
        Mnemonic::Aam => aam,
        Mnemonic::Aad => aad,
        _ => return None,
    })
}

/// AL and AH.
fn al_ah(cx: &Ctx<'_>) -> (u8, u8) {
    (cx.reg(Register::AL) as u8, cx.reg(Register::AH) as u8)
}

/// Whether the low digit of AL needs adjusting: above 9, or a carry (AF) out of it.
fn low_digit_overflowed(cx: &Ctx<'_>, al: u8) -> bool {
    al & LOW_NIBBLE > DIGIT_MAX || cx.cpu.rflags.af()
}

/// Sets SF, ZF and PF from `al`, clearing OF, AF and CF (the LOGIC flags of a byte).
fn byte_result_flags(cx: &mut Ctx<'_>, al: u8) {
    let al = u64::from(al);
    cx.cpu.rflags.set(FlagOp::Logic, 1, al, al, al);
}

/// DAA (`ADD`) or DAS: adjusts AL after adding or subtracting two packed BCD bytes.
fn decimal_adjust<const ADD: bool>(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let (old_al, _) = al_ah(cx);
    let old_cf = cx.cpu.rflags.cf();
    let mut al = old_al;
    let mut carries = 0;
    if low_digit_overflowed(cx, old_al) {
        carries |= AF;
        if ADD {
            al = al.wrapping_add(LOW_ADJUST);
        } else {
            // DAS: a borrow out of AL here sets CF even if the high digit needs nothing.
            if al < LOW_ADJUST {
                carries |= CF;
            }
            al = al.wrapping_sub(LOW_ADJUST);
        }
    }
    // (DAA's carry out of AL + 6 needs AL > 0xF9, which the test below catches too.)
    if old_al > PACKED_MAX || old_cf {
        carries |= CF;
        al = if ADD {
            al.wrapping_add(HIGH_ADJUST)
        } else {
            al.wrapping_sub(HIGH_ADJUST)
        };
    }
    cx.set_reg(Register::AL, al.into());
    byte_result_flags(cx, al);
    cx.cpu.rflags.update(AF | CF, carries);
    Ok(())
}

/// AAA (`ADD`) or AAS: adjusts AX after adding or subtracting two unpacked BCD digits,
/// carrying into or borrowing from AH.
fn ascii_adjust<const ADD: bool>(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let ax = cx.reg(Register::AX) as u16;
    let (al, _) = al_ah(cx);
    let adjust = low_digit_overflowed(cx, al);
    let low = u16::from(LOW_ADJUST);
    let ax = match (adjust, ADD) {
        // AX + 106H: AL + 6, its carry and one more into AH.
        (true, true) => ax.wrapping_add(low + AH_ONE),
        // AX - 6, then AH - 1.
        (true, false) => ax.wrapping_sub(low).wrapping_sub(AH_ONE),
        (false, _) => ax,
    };
    // AL keeps its low digit only.
    let ax = (ax & !(AH_ONE - 1)) | (ax & u16::from(LOW_NIBBLE));
    cx.set_reg(Register::AX, ax.into());
    let carries = if adjust { AF | CF } else { 0 };
    cx.cpu.rflags.update(AF | CF, carries);
    Ok(())
}

/// AAM imm8: AH = AL / imm8, AL = AL % imm8 (after multiplying two unpacked digits);
/// #DE when imm8 is 0.
fn aam(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let base = ins.immediate8();
    if base == 0 {
        return Err(Exception::divide_error().into());
    }
    let (al, _) = al_ah(cx);
    cx.set_reg(Register::AH, (al / base).into());
    cx.set_reg(Register::AL, (al % base).into());
    byte_result_flags(cx, al % base);
    Ok(())
}

/// AAD imm8: AL = AL + AH * imm8, AH = 0 (before dividing by an unpacked digit).
fn aad(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let (al, ah) = al_ah(cx);
    let al = al.wrapping_add(ah.wrapping_mul(ins.immediate8()));
    cx.set_reg(Register::AX, al.into());
    byte_result_flags(cx, al);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cpu::rflags::{AF, ARITH, CF, OF, PF, SF, ZF};
    use crate::exception::vector;
    use crate::testkit::{Asm, Machine, CODE_BASE, RAX};

    /// EAX and the status flags before, and after: results QEMU TCG produces, undefined
    /// flags included (see the module comment).
    type Case = (&'static str, Asm, u64, u64, u64, u64);

    const OSZP: u64 = OF | SF | ZF | PF;

    #[test]
    fn results_and_flags_match_the_manual_and_qemu() {
        let cases: [Case; 14] = [
            ("daa 9a", |a| a.daa(), 0x9A, 0, 0x00, ZF | PF | AF | CF),
            (
                "daa 1a cf: OF stays clear",
                |a| a.daa(),
                0x1A,
                OSZP | CF,
                0x80,
                SF | AF | CF,
            ),
            (
                "das 03 af: borrow",
                |a| a.das(),
                0x03,
                AF,
                0xFD,
                SF | AF | CF,
            ),
            ("das 9a cf", |a| a.das(), 0x9A, CF, 0x34, AF | CF),
            (
                "aaa fa: carry into ah",
                |a| a.aaa(),
                0xFA,
                OSZP | AF,
                0x200,
                OSZP | AF | CF,
            ),
            (
                "aaa 7f05: nothing to adjust",
                |a| a.aaa(),
                0x7F05,
                0,
                0x7F05,
                0,
            ),
            (
                "aas 00 af: borrow from ah",
                |a| a.aas(),
                0x0000,
                AF,
                0xFE0A,
                AF | CF,
            ),
            (
                "aas 05 af",
                |a| a.aas(),
                0x0005,
                OSZP | AF,
                0xFE0F,
                OSZP | AF | CF,
            ),
            ("aam 7f", |a| a.aam(10), 0x7F, 0, 0x0C07, 0),
            ("aam 7 ff", |a| a.aam(7), 0xFF, OSZP | AF | CF, 0x2403, PF),
            ("aad 7f05", |a| a.aad(10), 0x7F05, 0, 0xFB, SF),
            ("aad 7 ff12", |a| a.aad(7), 0xFF12, OSZP | AF | CF, 0x0B, 0),
            ("salc cf", |a| a.db(&[0xD6]), 0x12, CF, 0xFF, CF),
            (
                "salc nc",
                |a| a.db(&[0xD6]),
                0x12,
                OSZP | AF,
                0x00,
                OSZP | AF,
            ),
        ];
        for (name, asm, eax_in, flags, want_ax, want_flags) in cases {
            let upper = 0x1234_0000;
            let mut m = Machine::new(asm)
                .regs(&[(RAX, upper | eax_in)])
                .flags(flags);
            let st = m.run_to_halt();
            assert_eq!(st.gpr[RAX], upper | want_ax, "{name}");
            assert_eq!(st.rflags & ARITH, want_flags, "{name}");
        }
    }

    #[test]
    fn aam_0_raises_de_and_changes_nothing() {
        let mut m = Machine::new(|a| a.aam(0)).regs(&[(RAX, 0x1234)]);
        let (v, st) = m.run_to_exception();
        assert_eq!((v, st.rip, st.gpr[RAX]), (vector::DE, CODE_BASE, 0x1234));
    }

    #[test]
    fn decimal_instructions_are_invalid_in_64_bit_mode() {
        let opcodes: [&[u8]; 7] = [
            &[0x27],
            &[0x2F],
            &[0x37],
            &[0x3F],
            &[0xD4, 0x0A],
            &[0xD5, 0x0A],
            &[0xD6],
        ];
        for bytes in opcodes {
            let mut m = Machine::new64(|a| a.nop());
            m.poke(CODE_BASE, bytes);
            let (v, st) = m.run_to_exception();
            assert_eq!((v, st.rip), (vector::UD, CODE_BASE), "{bytes:02X?}");
        }
    }
}

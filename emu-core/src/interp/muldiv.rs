//! Multiplication and division: MUL, IMUL (one, two and three operands), DIV, IDIV.
//!
//! Products and dividends are twice the operand width, so they are computed in 128 bits.
//! The manual leaves SF, ZF, AF and PF undefined after a multiply: they are set from the
//! low half of the product (AF cleared), and the flags are left alone after a divide.

use super::shift::sign_zero_parity;
use super::{Ctx, Fault, Handler};
use crate::cpu::rflags::{ARITH, CF, OF};
use crate::exception::Exception;
use crate::x86::ctx::operand_size;
use crate::x86::flags::sign_extend;
use crate::x86::flags::size_mask;
use iced_x86::{Instruction, Mnemonic, Register};

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Mul => widening_multiply::<false>,
        Mnemonic::Imul if ins.op_count() == 1 => widening_multiply::<true>,
        Mnemonic::Imul => truncating_multiply,
        Mnemonic::Div => divide::<false>,
        Mnemonic::Idiv => divide::<true>,
        _ => return None,
    })
}

/// The register pair holding the double-width value of the one-operand forms: the low
/// and high halves (AX as a whole for byte operands).
fn accumulator_pair(size: u8) -> (Register, Register) {
    match size {
        1 => (Register::AX, Register::AX),
        2 => (Register::AX, Register::DX),
        4 => (Register::EAX, Register::EDX),
        _ => (Register::RAX, Register::RDX),
    }
}

/// Reads AX, DX:AX, EDX:EAX or RDX:RAX as one number.
fn read_wide(cx: &Ctx<'_>, size: u8) -> u128 {
    let (low, high) = accumulator_pair(size);
    if size == 1 {
        return cx.reg(low) as u128;
    }
    ((cx.reg(high) as u128) << (8 * size as u32)) | cx.reg(low) as u128
}

/// Writes the two halves of a double-width result: AL/AH, or (E/R)AX and (E/R)DX.
fn write_wide(cx: &mut Ctx<'_>, size: u8, low: u64, high: u64) {
    let (low_reg, high_reg) = accumulator_pair(size);
    if size == 1 {
        cx.set_reg(low_reg, (high & 0xFF) << 8 | (low & 0xFF));
    } else {
        cx.set_reg(low_reg, low);
        cx.set_reg(high_reg, high);
    }
}

/// The double-width product of two `size`-byte operands, and whether it does not fit
/// in one operand (CF and OF): for MUL the high half is not zero, for IMUL the product
/// is not the sign extension of its low half.
fn product(signed: bool, size: u8, a: u64, b: u64) -> (u128, bool) {
    let mask = size_mask(size);
    if signed {
        let widen = |v: u64| sign_extend(v & mask, size) as i64 as i128;
        let p = widen(a) * widen(b);
        (p as u128, widen(p as u64) != p)
    } else {
        let p = (a & mask) as u128 * (b & mask) as u128;
        (p, p >> (8 * size as u32) != 0)
    }
}

/// Sets the flags after a multiply: CF = OF = `overflow`, SF/ZF/PF from the low half.
fn multiply_flags(cx: &mut Ctx<'_>, size: u8, low: u64, overflow: bool) {
    let carry_overflow = overflow as u64 * (CF | OF);
    cx.cpu
        .rflags
        .update(ARITH, carry_overflow | sign_zero_parity(size, low));
}

/// MUL and one-operand IMUL: the accumulator times the operand, into the register pair.
fn widening_multiply<const SIGNED: bool>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let src = cx.operand(ins, 0)?;
    let acc = cx.reg(accumulator_pair(size).0);
    let (p, overflow) = product(SIGNED, size, acc, src);
    let bits = 8 * size as u32;
    let low = p as u64 & size_mask(size);
    write_wide(cx, size, low, (p >> bits) as u64);
    multiply_flags(cx, size, low, overflow);
    Ok(())
}

/// Two- and three-operand IMUL: `dst = dst * src` or `dst = src * imm`, truncated.
fn truncating_multiply(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let (a, b) = if ins.op_count() == 3 {
        (cx.operand(ins, 1)?, cx.operand(ins, 2)?)
    } else {
        (cx.reg(ins.op0_register()), cx.operand(ins, 1)?)
    };
    let (p, overflow) = product(true, size, a, b);
    let low = p as u64 & size_mask(size);
    cx.set_reg(ins.op0_register(), low);
    multiply_flags(cx, size, low, overflow);
    Ok(())
}

/// Divides a double-width `dividend` by a `size`-byte `divisor`: the quotient and the
/// remainder, or None (#DE) for a zero divisor or a quotient that does not fit.
fn quotient(signed: bool, size: u8, dividend: u128, divisor: u64) -> Option<(u64, u64)> {
    let bits = 8 * size as u32;
    let mask = size_mask(size);
    let divisor = divisor & mask;
    if divisor == 0 {
        return None;
    }
    if !signed {
        let q = dividend / divisor as u128;
        let r = dividend % divisor as u128;
        return (q <= mask as u128).then_some((q as u64, r as u64));
    }
    // Sign-extend the 2×bits-wide dividend to 128 bits.
    let unused = 128 - 2 * bits;
    let dividend = ((dividend << unused) as i128) >> unused;
    let divisor = sign_extend(divisor, size) as i64 as i128;
    // Only i128::MIN / -1 (a 64-bit IDIV) overflows i128 itself.
    let q = dividend.checked_div(divisor)?;
    let r = dividend % divisor;
    let (min, max) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
    (min..=max)
        .contains(&q)
        .then_some((q as u64 & mask, r as u64 & mask))
}

/// DIV and IDIV: the register pair divided by the operand; quotient to the low
/// register, remainder to the high one. Flags are left as they were.
fn divide<const SIGNED: bool>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let divisor = cx.operand(ins, 0)?;
    let dividend = read_wide(cx, size);
    let (q, r) = quotient(SIGNED, size, dividend, divisor).ok_or(Exception::divide_error())?;
    write_wide(cx, size, q, r);
    Ok(())
}

/// The case tables of this family, which every engine runs (`testkit::tables`).
#[cfg(any(test, feature = "testkit"))]
pub mod cases {
    use crate::cpu::rflags::*;
    use crate::testkit::{Case, RAX, RCX, RDX};
    use iced_x86::code_asm::*;

    /// The flags the manual defines after a multiply.
    pub const MUL_FLAGS: u64 = CF | OF;

    /// Unsigned multiply.
    pub const UNSIGNED_MULTIPLY: &[Case] = &[
        Case {
            name: "mul cl: AX = AL * CL, the high half set",
            asm: |a| a.mul(cl),
            regs: &[(RAX, 0xABCD_0080), (RCX, 2)],
            flags: 0,
            want: &[(RAX, 0xABCD_0100)],
            want_flags: CF | OF,
            mask: MUL_FLAGS,
        },
        Case {
            name: "mul cl without overflow clears CF and OF",
            asm: |a| a.mul(cl),
            regs: &[(RAX, 0xABCD_FF03), (RCX, 4)],
            flags: CF | OF,
            want: &[(RAX, 0xABCD_000C)],
            want_flags: 0,
            mask: MUL_FLAGS,
        },
        Case {
            name: "mul cx: DX:AX, upper halves of EAX/EDX kept",
            asm: |a| a.mul(cx),
            regs: &[(RAX, 0x5555_1234), (RDX, 0x6666_FFFF), (RCX, 0x100)],
            flags: 0,
            want: &[(RAX, 0x5555_3400), (RDX, 0x6666_0012)],
            want_flags: CF | OF,
            mask: MUL_FLAGS,
        },
        Case {
            name: "mul ecx: 0xFFFFFFFF squared",
            asm: |a| a.mul(ecx),
            regs: &[(RAX, 0xFFFF_FFFF), (RCX, 0xFFFF_FFFF)],
            flags: 0,
            want: &[(RAX, 1), (RDX, 0xFFFF_FFFE)],
            want_flags: CF | OF,
            mask: MUL_FLAGS,
        },
        Case {
            name: "mul ecx: SF/ZF/PF from the low half (Popek's choice), AF 0",
            asm: |a| a.mul(ecx),
            regs: &[(RAX, 0), (RCX, 5), (RDX, 7)],
            flags: ARITH,
            want: &[(RAX, 0), (RDX, 0)],
            want_flags: ZF | PF,
            mask: ARITH,
        },
    ];

    /// Signed multiply.
    pub const SIGNED_MULTIPLY: &[Case] = &[
        Case {
            name: "imul cl: -2 * 3 fits in AL",
            asm: |a| a.imul(cl),
            regs: &[(RAX, 0xFE), (RCX, 3)],
            flags: CF | OF,
            want: &[(RAX, 0xFFFA)],
            want_flags: 0,
            mask: MUL_FLAGS,
        },
        Case {
            name: "imul cl: -128 * -1 does not fit in AL",
            asm: |a| a.imul(cl),
            regs: &[(RAX, 0x80), (RCX, 0xFF)],
            flags: 0,
            want: &[(RAX, 0x0080)],
            want_flags: CF | OF,
            mask: MUL_FLAGS,
        },
        Case {
            name: "imul ecx: -1 * -1 into EDX:EAX",
            asm: |a| a.imul(ecx),
            regs: &[(RAX, 0xFFFF_FFFF), (RCX, 0xFFFF_FFFF), (RDX, 0x1234)],
            flags: CF | OF,
            want: &[(RAX, 1), (RDX, 0)],
            want_flags: 0,
            mask: MUL_FLAGS,
        },
        Case {
            name: "imul ecx: a negative product sign-extends into EDX",
            asm: |a| a.imul(ecx),
            regs: &[(RAX, 0xFFFF_FFFE), (RCX, 3)],
            flags: CF | OF,
            want: &[(RAX, 0xFFFF_FFFA), (RDX, 0xFFFF_FFFF)],
            want_flags: 0,
            mask: MUL_FLAGS,
        },
        Case {
            name: "imul eax,ecx truncates and reports the overflow",
            asm: |a| a.imul_2(eax, ecx),
            regs: &[(RAX, 0x1_0000), (RCX, 0x1_0000), (RDX, 0x77)],
            flags: 0,
            want: &[(RAX, 0), (RDX, 0x77)],
            want_flags: CF | OF,
            mask: MUL_FLAGS,
        },
        Case {
            name: "imul eax,ecx,-2 sign-extends the imm8",
            asm: |a| a.imul_3(eax, ecx, -2),
            regs: &[(RAX, 0x55), (RCX, 5)],
            flags: CF | OF,
            want: &[(RAX, 0xFFFF_FFF6)],
            want_flags: 0,
            mask: MUL_FLAGS,
        },
        Case {
            name: "imul ax,cx,0x4000 overflows the word and keeps EAX's top",
            asm: |a| a.imul_3(ax, cx, 0x4000),
            regs: &[(RAX, 0x1234_5678), (RCX, 4)],
            flags: 0,
            want: &[(RAX, 0x1234_0000)],
            want_flags: CF | OF,
            mask: MUL_FLAGS,
        },
    ];

    /// Divide.
    pub const DIVIDE: &[Case] = &[
        Case {
            name: "div cl: AL = quotient, AH = remainder; flags unchanged",
            asm: |a| a.div(cl),
            regs: &[(RAX, 0x0107), (RCX, 2)],
            flags: CF | ZF,
            want: &[(RAX, 0x0183)],
            want_flags: CF | ZF,
            mask: ARITH,
        },
        Case {
            name: "div ecx: EDX:EAX = 2^32 / 3",
            asm: |a| a.div(ecx),
            regs: &[(RAX, 0), (RDX, 1), (RCX, 3)],
            flags: 0,
            want: &[(RAX, 0x5555_5555), (RDX, 1)],
            want_flags: 0,
            mask: ARITH,
        },
        Case {
            name: "div cx keeps the upper halves",
            asm: |a| a.div(cx),
            regs: &[(RAX, 0xAAAA_0005), (RDX, 0xBBBB_0001), (RCX, 0x10)],
            flags: SF,
            want: &[(RAX, 0xAAAA_1000), (RDX, 0xBBBB_0005)],
            want_flags: SF,
            mask: ARITH,
        },
        Case {
            name: "idiv cl truncates toward zero: -7 / 2 = -3 rem -1",
            asm: |a| a.idiv(cl),
            regs: &[(RAX, 0xFFF9), (RCX, 2)],
            flags: 0,
            want: &[(RAX, 0xFFFD)],
            want_flags: 0,
            mask: ARITH,
        },
        Case {
            name: "idiv ecx: -100 / 7 = -14 rem -2",
            asm: |a| a.idiv(ecx),
            regs: &[(RAX, 0xFFFF_FF9C), (RDX, 0xFFFF_FFFF), (RCX, 7)],
            flags: 0,
            want: &[(RAX, 0xFFFF_FFF2), (RDX, 0xFFFF_FFFE)],
            want_flags: 0,
            mask: ARITH,
        },
        Case {
            name: "idiv ecx: 100 / -7 = -14 rem 2",
            asm: |a| a.idiv(ecx),
            regs: &[(RAX, 100), (RDX, 0), (RCX, 0xFFFF_FFF9)],
            flags: 0,
            want: &[(RAX, 0xFFFF_FFF2), (RDX, 2)],
            want_flags: 0,
            mask: ARITH,
        },
    ];

    /// Sixty four bit operands.
    pub const SIXTY_FOUR_BIT_OPERANDS: &[Case] = &[
        Case {
            name: "mul rcx: RDX:RAX",
            asm: |a| a.mul(rcx),
            regs: &[(RAX, u64::MAX), (RCX, 2)],
            flags: 0,
            want: &[(RAX, u64::MAX - 1), (RDX, 1)],
            want_flags: CF | OF,
            mask: MUL_FLAGS,
        },
        Case {
            name: "imul rax,rcx: i64::MIN * -1 overflows",
            asm: |a| a.imul_2(rax, rcx),
            regs: &[(RAX, 1 << 63), (RCX, u64::MAX)],
            flags: 0,
            want: &[(RAX, 1 << 63)],
            want_flags: CF | OF,
            mask: MUL_FLAGS,
        },
        Case {
            name: "imul eax,ecx zero-extends into RAX",
            asm: |a| a.imul_2(eax, ecx),
            regs: &[(RAX, 0xFFFF_FFFF_0000_0003), (RCX, 0xFFFF_FFFF)],
            flags: 0,
            want: &[(RAX, 0xFFFF_FFFD)],
            want_flags: 0,
            mask: MUL_FLAGS,
        },
        Case {
            name: "div rcx: 2^64 / 2",
            asm: |a| a.div(rcx),
            regs: &[(RAX, 0), (RDX, 1), (RCX, 2)],
            flags: 0,
            want: &[(RAX, 1 << 63), (RDX, 0)],
            want_flags: 0,
            mask: ARITH,
        },
        Case {
            name: "idiv rcx: (-2^63 - 1) / 2 = -2^62 rem -1",
            asm: |a| a.idiv(rcx),
            regs: &[(RAX, 0x7FFF_FFFF_FFFF_FFFF), (RDX, u64::MAX), (RCX, 2)],
            flags: 0,
            want: &[(RAX, 0xC000_0000_0000_0000), (RDX, u64::MAX)],
            want_flags: 0,
            mask: ARITH,
        },
    ];
}

#[cfg(test)]
mod tests {
    use super::cases::*;
    use crate::cpu::rflags::{CF, SF};
    use crate::exception::vector;
    use crate::testkit::{check, check64, Asm, Machine, CODE_BASE, RAX, RCX, RDX};
    use iced_x86::code_asm::*;

    #[test]
    fn unsigned_multiply() {
        check(UNSIGNED_MULTIPLY);
    }

    #[test]
    fn signed_multiply() {
        check(SIGNED_MULTIPLY);
    }

    #[test]
    fn divide() {
        check(DIVIDE);
    }

    #[test]
    fn sixty_four_bit_operands() {
        check64(SIXTY_FOUR_BIT_OPERANDS);
    }

    /// A divide that must raise #DE.
    struct DivideError {
        name: &'static str,
        asm: Asm,
        regs: &'static [(usize, u64)],
    }

    /// Runs each case and checks it raised #DE at its first byte, changing nothing.
    fn expect_divide_errors(machine: fn(Asm) -> Machine, cases: &[DivideError]) {
        for c in cases {
            let mut m = machine(c.asm).regs(c.regs).flags(CF | SF);
            let before = m.state.clone();
            let (vec, st) = m.run_to_exception();
            assert_eq!(vec, vector::DE, "{}", c.name);
            assert_eq!(st.rip, CODE_BASE, "{}: reported at the DIV", c.name);
            assert_eq!(st.gpr, before.gpr, "{}: registers changed", c.name);
            assert_eq!(st.rflags, before.rflags, "{}: flags changed", c.name);
        }
    }

    #[test]
    fn divide_errors_commit_nothing() {
        expect_divide_errors(
            Machine::new,
            &[
                DivideError {
                    name: "div ecx by zero",
                    asm: |a| a.div(ecx),
                    regs: &[(RAX, 5), (RCX, 0)],
                },
                DivideError {
                    name: "idiv cl by zero (CX = 0x100)",
                    asm: |a| a.idiv(cl),
                    regs: &[(RAX, 5), (RCX, 0x100)],
                },
                DivideError {
                    name: "div cl: 0x200 / 2 does not fit in AL",
                    asm: |a| a.div(cl),
                    regs: &[(RAX, 0x200), (RCX, 2)],
                },
                DivideError {
                    name: "div ecx: EDX >= ECX",
                    asm: |a| a.div(ecx),
                    regs: &[(RDX, 3), (RCX, 3)],
                },
                DivideError {
                    name: "idiv cl: -128 / -1",
                    asm: |a| a.idiv(cl),
                    regs: &[(RAX, 0xFF80), (RCX, 0xFF)],
                },
                DivideError {
                    name: "idiv ecx: -2^31 / -1",
                    asm: |a| a.idiv(ecx),
                    regs: &[(RAX, 0x8000_0000), (RDX, 0xFFFF_FFFF), (RCX, 0xFFFF_FFFF)],
                },
            ],
        );
        expect_divide_errors(
            Machine::new64,
            &[
                DivideError {
                    name: "idiv rcx: -2^63 / -1",
                    asm: |a| a.idiv(rcx),
                    regs: &[(RAX, 1 << 63), (RDX, u64::MAX), (RCX, u64::MAX)],
                },
                DivideError {
                    name: "idiv rcx: the most negative 128-bit dividend / -1",
                    asm: |a| a.idiv(rcx),
                    regs: &[(RAX, 0), (RDX, 1 << 63), (RCX, u64::MAX)],
                },
            ],
        );
    }
}

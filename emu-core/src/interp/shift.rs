//! Shifts and rotates: SHL/SAL SHR SAR ROL ROR RCL RCR, and the double shifts SHLD SHRD.
//!
//! The flags are computed at once (`Eager` in [`crate::x86::flags`]): CF is the last bit
//! shifted out, which a lazy record of operands and result could not recover without
//! the count. Where the manual leaves OF undefined (counts above 1) it is computed with
//! the count-1 formula, as most processors do; AF, undefined for every shift, is cleared.

use super::{Ctx, Fault, Handler};
use crate::cpu::rflags::{ARITH, CF, OF, PF, SF, ZF};
use crate::x86::ctx::{operand_size, Loc};
use crate::x86::flags::sign_extend;
use crate::x86::flags::{sign_bit, size_mask};
use crate::x86::mmu::Access;
use iced_x86::{Instruction, Mnemonic};

const SHL: u8 = 0;
const SHR: u8 = 1;
const SAR: u8 = 2;
const ROL: u8 = 3;
const ROR: u8 = 4;
const RCL: u8 = 5;
const RCR: u8 = 6;

/// The count bits the processor honours for 8-, 16- and 32-bit operands.
const COUNT_MASK: u64 = 0x1F;
/// The count bits the processor honours for 64-bit operands.
const COUNT_MASK_64: u64 = 0x3F;
/// The flags a rotate changes; the others keep their values.
const ROTATE_FLAGS: u64 = CF | OF;

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => shift::<SHL>,
        Mnemonic::Shr => shift::<SHR>,
        Mnemonic::Sar => shift::<SAR>,
        Mnemonic::Rol => shift::<ROL>,
        Mnemonic::Ror => shift::<ROR>,
        Mnemonic::Rcl => shift::<RCL>,
        Mnemonic::Rcr => shift::<RCR>,
        Mnemonic::Shld => double_shift::<true>,
        Mnemonic::Shrd => double_shift::<false>,
        _ => return None,
    })
}

/// SF, ZF and PF of a `size`-byte result, as RFLAGS bits.
#[inline]
pub(super) fn sign_zero_parity(size: u8, res: u64) -> u64 {
    let res = res & size_mask(size);
    let mut f = 0;
    if res & sign_bit(size) != 0 {
        f |= SF;
    }
    if res == 0 {
        f |= ZF;
    }
    if (res as u8).count_ones().is_multiple_of(2) {
        f |= PF;
    }
    f
}

/// The shift count (the last operand: 1, imm8 or CL) masked as the processor masks it.
#[inline]
fn masked_count(cx: &mut Ctx<'_>, ins: &Instruction, size: u8) -> Result<u32, Fault> {
    let raw = cx.operand(ins, ins.op_count() - 1)?;
    let mask = if size == 8 { COUNT_MASK_64 } else { COUNT_MASK };
    Ok((raw & mask) as u32)
}

/// A masked count of 0 changes neither the operand nor the flags, but a 32-bit register
/// destination is still written, which clears the upper half of its 64-bit register.
#[inline]
fn rewrite_unchanged(cx: &mut Ctx<'_>, dst: Loc, value: u64) {
    if let Loc::Reg(r) = dst {
        cx.set_reg(r, value);
    }
}

/// Rotates the low `width` bits of `v` left by `r` (`r < width <= 65`).
#[inline]
fn rotate_left(v: u128, r: u32, width: u32) -> u128 {
    let mask = (1u128 << width) - 1;
    // For r = 0 the right-hand part shifts by `width` and vanishes, as it should.
    ((v << r) | (v >> (width - r))) & mask
}

/// What a shift or rotate produced.
struct Outcome {
    res: u64,
    cf: bool,
    of: bool,
}

/// Shifts or rotates the `size`-byte value `a` by a non-zero masked `count`, with the
/// carry flag `carry` going in (for RCL and RCR).
fn compute(op: u8, size: u8, a: u64, count: u32, carry: bool) -> Outcome {
    let bits = 8 * size as u32;
    let mask = size_mask(size);
    let msb = |v: u64| v & sign_bit(size) != 0;
    match op {
        SHL => {
            // Counts reach 31 for a byte: in 128 bits the last bit out is still there.
            let wide = (a as u128) << count;
            let res = wide as u64 & mask;
            let cf = (wide >> bits) & 1 != 0;
            Outcome {
                res,
                cf,
                of: msb(res) != cf,
            }
        }
        SHR => Outcome {
            res: a >> count,
            cf: (a >> (count - 1)) & 1 != 0,
            of: msb(a),
        },
        SAR => {
            let signed = sign_extend(a, size) as i64;
            Outcome {
                res: (signed >> count) as u64 & mask,
                cf: (signed >> (count - 1)) & 1 != 0,
                of: false,
            }
        }
        ROL | ROR => {
            // A count that is a multiple of the size leaves the value, yet sets CF/OF.
            let r = count % bits;
            let left = if op == ROL { r } else { (bits - r) % bits };
            let res = rotate_left(a as u128, left, bits) as u64;
            let (cf, of) = if op == ROL {
                (res & 1 != 0, msb(res) != (res & 1 != 0))
            } else {
                (msb(res), msb(res) != msb(res << 1))
            };
            Outcome { res, cf, of }
        }
        _ => {
            // RCL/RCR rotate bits+1 bits: the operand with CF above it.
            let width = bits + 1;
            let r = count % width;
            let left = if op == RCL { r } else { width - r };
            let v = (a as u128) | ((carry as u128) << bits);
            let rotated = rotate_left(v, left % width, width);
            let res = rotated as u64 & mask;
            let cf = (rotated >> bits) & 1 != 0;
            let of = if op == RCL {
                msb(res) != cf
            } else {
                msb(a) != carry
            };
            Outcome { res, cf, of }
        }
    }
}

/// SHL SHR SAR ROL ROR RCL RCR: `dst = dst OP count`.
fn shift<const OP: u8>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let count = masked_count(cx, ins, size)?;
    // Checked as a write even for a count of 0, which then writes nothing.
    let dst = cx.locate(ins, 0, size, Access::Write)?;
    let a = cx.load(dst, size)? & size_mask(size);
    if count == 0 {
        rewrite_unchanged(cx, dst, a);
        return Ok(());
    }
    let out = compute(OP, size, a, count, cx.cpu.rflags.cf());
    cx.store(dst, size, out.res)?;
    let carry_overflow = (out.cf as u64 * CF) | (out.of as u64 * OF);
    if OP >= ROL {
        cx.cpu.rflags.update(ROTATE_FLAGS, carry_overflow);
    } else {
        let flags = carry_overflow | sign_zero_parity(size, out.res);
        cx.cpu.rflags.update(ARITH, flags);
    }
    Ok(())
}

/// Shifts `a` by `count` (1 to twice its width), filling from `b`: SHLD when `left`,
/// SHRD otherwise. Returns the result and the last bit shifted out of `a`.
fn double(left: bool, size: u8, a: u64, b: u64, count: u32) -> (u64, bool) {
    let bits = 8 * size as u32;
    if count > bits {
        // Only a 16-bit operand gets here (counts up to 31), and the manual leaves the
        // result undefined. Intel parts (as QEMU and Bochs model them) shift the 48-bit
        // string dst:src:dst: past `a`, the shift goes on into `b` filled from `a` again.
        // AMD parts fill from `b` instead.
        return double(left, size, b, a, count - bits);
    }
    let (wa, wb) = (a as u128, b as u128);
    let res = if left {
        (wa << count) | (wb >> (bits - count))
    } else {
        (wa >> count) | (wb << (bits - count))
    };
    let out_bit = if left { bits - count } else { count - 1 };
    (res as u64 & size_mask(size), (a >> out_bit) & 1 != 0)
}

/// SHLD and SHRD: shift the destination, filling the vacated bits from the source.
fn double_shift<const LEFT: bool>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let count = masked_count(cx, ins, size)?;
    let dst = cx.locate(ins, 0, size, Access::Write)?;
    let a = cx.load(dst, size)? & size_mask(size);
    if count == 0 {
        rewrite_unchanged(cx, dst, a);
        return Ok(());
    }
    let b = cx.reg(ins.op1_register());
    let (res, cf) = double(LEFT, size, a, b, count);
    cx.store(dst, size, res)?;
    // OF: the sign changed (defined for a count of 1, computed the same way for others).
    let of = (res ^ a) & sign_bit(size) != 0;
    let flags = (cf as u64 * CF) | (of as u64 * OF) | sign_zero_parity(size, res);
    cx.cpu.rflags.update(ARITH, flags);
    Ok(())
}

/// The case tables of this family, which every engine runs (`testkit::tables`).
#[cfg(any(test, feature = "testkit"))]
pub mod cases {
    use crate::cpu::rflags::*;
    use crate::testkit::{Case, RAX, RCX, RDX};
    use iced_x86::code_asm::*;

    /// The flags the manual defines for a shift by more than 1 (OF and AF undefined).
    pub const SHIFT_N: u64 = CF | SF | ZF | PF;

    /// The flags it defines for a shift by 1.
    pub const SHIFT_1: u64 = SHIFT_N | OF;

    /// Shifts.
    pub const SHIFTS: &[Case] = &[
        Case {
            name: "shl eax,1 moves the top bit to CF; OF = MSB xor CF",
            asm: |a| a.shl(eax, 1),
            regs: &[(RAX, 0x8000_0001)],
            flags: 0,
            want: &[(RAX, 0x0000_0002)],
            want_flags: CF | OF,
            mask: SHIFT_1,
        },
        Case {
            name: "shl al,cl by 8 clears the byte and keeps AH",
            asm: |a| a.shl(al, cl),
            regs: &[(RAX, 0xFF01), (RCX, 8)],
            flags: SF,
            want: &[(RAX, 0xFF00)],
            want_flags: ZF | PF,
            mask: SF | ZF | PF,
        },
        Case {
            name: "shl eax,cl uses only 5 bits of CL",
            asm: |a| a.shl(eax, cl),
            regs: &[(RAX, 1), (RCX, 33)],
            flags: CF | OF,
            want: &[(RAX, 2)],
            want_flags: 0,
            mask: SHIFT_1,
        },
        Case {
            name: "shr eax,1: OF = the original sign",
            asm: |a| a.shr(eax, 1),
            regs: &[(RAX, 0x8000_0000)],
            flags: 0,
            want: &[(RAX, 0x4000_0000)],
            want_flags: OF | PF,
            mask: SHIFT_1,
        },
        Case {
            name: "shr eax,4: CF = the last bit out",
            asm: |a| a.shr(eax, 4),
            regs: &[(RAX, 0x18)],
            flags: 0,
            want: &[(RAX, 1)],
            want_flags: CF,
            mask: SHIFT_N,
        },
        Case {
            name: "sar eax,1 keeps the sign, clears OF",
            asm: |a| a.sar(eax, 1),
            regs: &[(RAX, 0x8000_0001)],
            flags: OF,
            want: &[(RAX, 0xC000_0000)],
            want_flags: CF | SF | PF,
            mask: SHIFT_1,
        },
        Case {
            name: "sar al,7 fills with the sign",
            asm: |a| a.sar(al, 7),
            regs: &[(RAX, 0x80)],
            flags: CF,
            want: &[(RAX, 0xFF)],
            want_flags: SF | PF,
            mask: SHIFT_N,
        },
        Case {
            name: "sar ax,cl by 31 (beyond the width) leaves all sign bits",
            asm: |a| a.sar(ax, cl),
            regs: &[(RAX, 0x1234_8000), (RCX, 31)],
            flags: 0,
            want: &[(RAX, 0x1234_FFFF)],
            want_flags: CF | SF | PF,
            mask: SHIFT_N,
        },
        Case {
            name: "shl eax,cl by 0 changes no flag",
            asm: |a| a.shl(eax, cl),
            regs: &[(RAX, 0x1234), (RCX, 0)],
            flags: ARITH,
            want: &[(RAX, 0x1234)],
            want_flags: ARITH,
            mask: ARITH,
        },
        Case {
            name: "shr eax,cl by 32 is masked to 0",
            asm: |a| a.shr(eax, cl),
            regs: &[(RAX, 0x1234), (RCX, 32)],
            flags: CF | AF,
            want: &[(RAX, 0x1234)],
            want_flags: CF | AF,
            mask: ARITH,
        },
        Case {
            name: "shl clears AF (undefined by the manual, 0 in Popek)",
            asm: |a| a.shl(eax, 2),
            regs: &[(RAX, 0x10)],
            flags: AF,
            want: &[(RAX, 0x40)],
            want_flags: 0,
            mask: AF | SHIFT_N,
        },
    ];

    /// Rotates change only cf and of.
    pub const ROTATES_CHANGE_ONLY_CF_AND_OF: &[Case] = &[
        Case {
            name: "rol eax,1",
            asm: |a| a.rol(eax, 1),
            regs: &[(RAX, 0x8000_0001)],
            flags: ZF | SF | PF,
            want: &[(RAX, 3)],
            want_flags: ZF | SF | PF | CF | OF,
            mask: ARITH,
        },
        Case {
            name: "rol al,cl by 8 keeps the value but sets CF from bit 0",
            asm: |a| a.rol(al, cl),
            regs: &[(RAX, 0x81), (RCX, 8)],
            flags: ZF,
            want: &[(RAX, 0x81)],
            want_flags: ZF | CF,
            mask: ARITH & !OF,
        },
        Case {
            name: "ror eax,1: OF = the two top bits differ",
            asm: |a| a.ror(eax, 1),
            regs: &[(RAX, 1)],
            flags: 0,
            want: &[(RAX, 0x8000_0000)],
            want_flags: CF | OF,
            mask: ARITH,
        },
        Case {
            name: "ror ax,4 keeps the upper half of EAX",
            asm: |a| a.ror(ax, 4),
            regs: &[(RAX, 0xAAAA_1234)],
            flags: CF | SF,
            want: &[(RAX, 0xAAAA_4123)],
            want_flags: SF,
            mask: ARITH & !OF,
        },
        Case {
            name: "rcl al,1 rotates CF in at the bottom",
            asm: |a| a.rcl(al, 1),
            regs: &[(RAX, 0x80)],
            flags: CF,
            want: &[(RAX, 0x01)],
            want_flags: CF | OF,
            mask: ARITH,
        },
        Case {
            name: "rcl al,cl by 9 rotates all 9 bits back into place",
            asm: |a| a.rcl(al, cl),
            regs: &[(RAX, 0x80), (RCX, 9)],
            flags: CF,
            want: &[(RAX, 0x80)],
            want_flags: CF,
            mask: ARITH & !OF,
        },
        Case {
            name: "rcr eax,1 leaves ZF alone even for a zero result",
            asm: |a| a.rcr(eax, 1),
            regs: &[(RAX, 1)],
            flags: 0,
            want: &[(RAX, 0)],
            want_flags: CF,
            mask: ARITH,
        },
        Case {
            name: "rcr al,1: OF = original MSB xor CF",
            asm: |a| a.rcr(al, 1),
            regs: &[(RAX, 0x01)],
            flags: CF,
            want: &[(RAX, 0x80)],
            want_flags: CF | OF,
            mask: ARITH,
        },
        Case {
            name: "rcr ax,cl by 17 is a full turn",
            asm: |a| a.rcr(ax, cl),
            regs: &[(RAX, 0x1234), (RCX, 17)],
            flags: 0,
            want: &[(RAX, 0x1234)],
            want_flags: 0,
            mask: ARITH & !OF,
        },
        Case {
            name: "rcl eax,cl by 0 changes nothing",
            asm: |a| a.rcl(eax, cl),
            regs: &[(RAX, 0x8000_0000), (RCX, 0x20)],
            flags: OF,
            want: &[(RAX, 0x8000_0000)],
            want_flags: OF,
            mask: ARITH,
        },
    ];

    /// Double shifts.
    pub const DOUBLE_SHIFTS: &[Case] = &[
        Case {
            name: "shld eax,edx,4",
            asm: |a| a.shld(eax, edx, 4),
            regs: &[(RAX, 0x1234_5678), (RDX, 0x9ABC_DEF0)],
            flags: 0,
            want: &[(RAX, 0x2345_6789), (RDX, 0x9ABC_DEF0)],
            want_flags: CF,
            mask: SHIFT_N,
        },
        Case {
            name: "shrd eax,edx,cl by 4",
            asm: |a| a.shrd(eax, edx, cl),
            regs: &[(RAX, 0x1234_5678), (RDX, 0x9ABC_DEF1), (RCX, 4)],
            flags: 0,
            want: &[(RAX, 0x1123_4567)],
            want_flags: CF,
            mask: SHIFT_N,
        },
        Case {
            name: "shld ax,dx,1: OF = the sign changed",
            asm: |a| a.shld(ax, dx, 1),
            regs: &[(RAX, 0x4000), (RDX, 0x8000)],
            flags: CF,
            want: &[(RAX, 0x8001)],
            want_flags: OF | SF,
            mask: SHIFT_1,
        },
        Case {
            name: "shrd eax,edx,cl by 32 is masked to 0",
            asm: |a| a.shrd(eax, edx, cl),
            regs: &[(RAX, 5), (RDX, 7), (RCX, 32)],
            flags: ARITH,
            want: &[(RAX, 5)],
            want_flags: ARITH,
            mask: ARITH,
        },
    ];

    /// Sixty four bit operands.
    pub const SIXTY_FOUR_BIT_OPERANDS: &[Case] = &[
        Case {
            name: "shl rax,cl by 63",
            asm: |a| a.shl(rax, cl),
            regs: &[(RAX, 1), (RCX, 63)],
            flags: 0,
            want: &[(RAX, 1 << 63)],
            want_flags: SF | PF,
            mask: SHIFT_N,
        },
        Case {
            name: "shl rax,cl by 64 is masked to 0",
            asm: |a| a.shl(rax, cl),
            regs: &[(RAX, 3), (RCX, 64)],
            flags: 0,
            want: &[(RAX, 3)],
            want_flags: 0,
            mask: ARITH,
        },
        Case {
            name: "shl eax,cl by 0 still zero-extends into RAX",
            asm: |a| a.shl(eax, cl),
            regs: &[(RAX, 0xFFFF_FFFF_0000_0001), (RCX, 0)],
            flags: 0,
            want: &[(RAX, 1)],
            want_flags: 0,
            mask: ARITH,
        },
        Case {
            name: "rcr rax,1 brings CF into bit 63",
            asm: |a| a.rcr(rax, 1),
            regs: &[(RAX, 1)],
            flags: CF,
            want: &[(RAX, 1 << 63)],
            want_flags: CF | OF,
            mask: ARITH,
        },
        Case {
            name: "rcl rax,cl by 63",
            asm: |a| a.rcl(rax, cl),
            regs: &[(RAX, 2), (RCX, 63)],
            flags: CF,
            // 65-bit rotate left by 63 = right by 2: bit 1 goes to CF, CF to bit 62.
            want: &[(RAX, 1 << 62)],
            want_flags: CF,
            mask: CF,
        },
        Case {
            name: "sar rax,63: CF = bit 62",
            asm: |a| a.sar(rax, 63),
            regs: &[(RAX, 0x8000_0000_0000_0000)],
            flags: CF,
            want: &[(RAX, u64::MAX)],
            want_flags: SF | PF,
            mask: SHIFT_N,
        },
        Case {
            name: "shrd rax,rdx,cl by 63",
            asm: |a| a.shrd(rax, rdx, cl),
            regs: &[(RAX, 0x4000_0000_0000_0000), (RDX, 3), (RCX, 63)],
            flags: 0,
            want: &[(RAX, 6)],
            want_flags: CF | PF,
            mask: SHIFT_N,
        },
    ];
}

#[cfg(test)]
mod tests {
    use super::cases::*;
    use crate::cpu::rflags::CF;
    use crate::testkit::{check, check64, Machine, DATA, RAX, RBX, RCX, RDX, SOFTWARE_ENGINES};
    use iced_x86::code_asm::*;

    #[test]
    fn shifts() {
        check(SHIFTS);
    }

    #[test]
    fn rotates_change_only_cf_and_of() {
        check(ROTATES_CHANGE_ONLY_CF_AND_OF);
    }

    #[test]
    fn double_shifts() {
        check(DOUBLE_SHIFTS);
    }

    #[test]
    fn sixty_four_bit_operands() {
        check64(SIXTY_FOUR_BIT_OPERANDS);
    }

    #[test]
    fn memory_destination_is_read_modified_written() {
        let mut m = Machine::new(|a| a.shl(dword_ptr(ebx), 4)).regs(&[(RBX, DATA)]);
        m.poke(DATA, &0x1000_0001u32.to_le_bytes());
        let st = m.run_to_halt().clone();
        assert_eq!(m.bytes(DATA, 4), 0x10u32.to_le_bytes());
        assert_eq!(st.rflags & SHIFT_N, CF);
    }

    #[test]
    fn shld_of_a_word_by_more_than_16_is_sane() {
        // Undefined by the manual: it must only not panic, and stay within the word. The
        // engines need not agree on the word (the translator leaves it as the host CPU
        // computes it), so each runs on its own.
        for &(_, engine) in SOFTWARE_ENGINES {
            let mut m = Machine::new(|a| a.shld(ax, dx, cl))
                .regs(&[(RAX, 0xAAAA_1234), (RDX, 0xABCD), (RCX, 17)])
                .on(engine);
            let st = m.run_to_halt();
            assert_eq!(st.gpr[RAX] >> 16, 0xAAAA);
        }
    }
}

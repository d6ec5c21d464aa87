//! SSE and SSE2 on XMM registers: the data moves (MOVD MOVQ MOVDQA MOVDQU MOVAPS
//! MOVUPS MOVAPD MOVUPD MOVSS MOVSD MOVLPS MOVHPS MOVLPD MOVHPD MOVHLPS MOVLHPS and the
//! non-temporal stores), bitwise logic, packed-integer arithmetic, compares, shifts,
//! shuffles, unpacks and packs, PMOVMSKB MOVMSKPS MOVMSKPD PEXTRW PINSRW PSADBW
//! PMADDWD, and
//! LDMXCSR/STMXCSR.
//!
//! Floating-point arithmetic is not implemented (reported as unsupported). The moves
//! and the logic treat floats as bits, which is all they do on hardware too.
//!
//! Every packed-integer instruction is one lane-wise operation applied to 8-, 16-, 32-
//! or 64-bit lanes: [`packed`] with an operation code and a lane width.

use super::fpu::DEVICE_NOT_AVAILABLE;
use super::{Ctx, Fault, Handler};
use crate::cpu::{cr0, cr4, MXCSR_MASK};
use crate::exception::Exception;
use crate::x86::ctx::PAGE_SHIFT;
use crate::x86::mmu::Access;
use crate::x86::segaccess::Addr;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// Bytes in an XMM register (and in a full-width memory operand).
const XMM_BYTES: u64 = 16;

// Lane-wise operations, for `packed` and `lane_op`.
/// Wrapping add.
const ADD: u8 = 0;
/// Wrapping subtract.
const SUB: u8 = 1;
/// Add with signed saturation.
const ADDS: u8 = 2;
/// Subtract with signed saturation.
const SUBS: u8 = 3;
/// Add with unsigned saturation.
const ADDUS: u8 = 4;
/// Subtract with unsigned saturation.
const SUBUS: u8 = 5;
/// All ones where equal.
const CMPEQ: u8 = 6;
/// All ones where signed greater.
const CMPGT: u8 = 7;
/// Unsigned minimum.
const MINU: u8 = 8;
/// Unsigned maximum.
const MAXU: u8 = 9;
/// Signed minimum.
const MINS: u8 = 10;
/// Signed maximum.
const MAXS: u8 = 11;
/// Low half of the product.
const MULLO: u8 = 12;
/// High half of the signed product.
const MULHI: u8 = 13;
/// High half of the unsigned product.
const MULHIU: u8 = 14;
/// Unsigned 32x32->64 product of each quadword's low doubleword (PMULUDQ).
const MULUDQ: u8 = 15;
/// Unsigned average, rounded up.
const AVG: u8 = 16;
/// Bitwise AND.
const AND: u8 = 17;
/// Bitwise OR.
const OR: u8 = 18;
/// Bitwise XOR.
const XOR: u8 = 19;
/// Bitwise AND of the complemented destination with the source.
const ANDN: u8 = 20;
/// Logical shift left by the source count.
const SLL: u8 = 21;
/// Logical shift right by the source count.
const SRL: u8 = 22;
/// Arithmetic shift right by the source count.
const SRA: u8 = 23;

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    let f: Handler = match ins.mnemonic() {
        Mnemonic::Ldmxcsr => ldmxcsr,
        Mnemonic::Stmxcsr => stmxcsr,
        Mnemonic::Movnti => movnti,
        _ => return xmm_handler(ins),
    };
    Some(f)
}

/// Handlers for the instructions with XMM operands. The same mnemonics on MMX
/// registers (PADDB mm, ...) are not implemented, and MOVSD without XMM operands is
/// the string move.
fn xmm_handler(ins: &Instruction) -> Option<Handler> {
    let registers = || {
        (0..ins.op_count())
            .filter(|&i| ins.op_kind(i) == OpKind::Register)
            .map(|i| ins.op_register(i))
    };
    if !registers().any(|r| r.is_xmm()) || registers().any(|r| r.is_mm()) {
        return None;
    }
    Some(match ins.mnemonic() {
        Mnemonic::Movdqa | Mnemonic::Movaps | Mnemonic::Movapd => mov128::<true>,
        Mnemonic::Movntdq | Mnemonic::Movntps | Mnemonic::Movntpd => mov128::<true>,
        Mnemonic::Movdqu | Mnemonic::Movups | Mnemonic::Movupd => mov128::<false>,
        Mnemonic::Movd => mov_scalar::<4, false>,
        Mnemonic::Movq => mov_scalar::<8, false>,
        Mnemonic::Movss => mov_scalar::<4, true>,
        Mnemonic::Movsd => mov_scalar::<8, true>,
        Mnemonic::Movlps | Mnemonic::Movlpd => mov_half::<false, false>,
        Mnemonic::Movhps | Mnemonic::Movhpd => mov_half::<true, true>,
        Mnemonic::Movhlps => mov_half::<false, true>,
        Mnemonic::Movlhps => mov_half::<true, false>,
        Mnemonic::Pand | Mnemonic::Andps | Mnemonic::Andpd => packed::<AND, 64>,
        Mnemonic::Por | Mnemonic::Orps | Mnemonic::Orpd => packed::<OR, 64>,
        Mnemonic::Pxor | Mnemonic::Xorps | Mnemonic::Xorpd => packed::<XOR, 64>,
        Mnemonic::Pandn | Mnemonic::Andnps | Mnemonic::Andnpd => packed::<ANDN, 64>,
        Mnemonic::Paddb => packed::<ADD, 8>,
        Mnemonic::Paddw => packed::<ADD, 16>,
        Mnemonic::Paddd => packed::<ADD, 32>,
        Mnemonic::Paddq => packed::<ADD, 64>,
        Mnemonic::Psubb => packed::<SUB, 8>,
        Mnemonic::Psubw => packed::<SUB, 16>,
        Mnemonic::Psubd => packed::<SUB, 32>,
        Mnemonic::Psubq => packed::<SUB, 64>,
        Mnemonic::Paddsb => packed::<ADDS, 8>,
        Mnemonic::Paddsw => packed::<ADDS, 16>,
        Mnemonic::Psubsb => packed::<SUBS, 8>,
        Mnemonic::Psubsw => packed::<SUBS, 16>,
        Mnemonic::Paddusb => packed::<ADDUS, 8>,
        Mnemonic::Paddusw => packed::<ADDUS, 16>,
        Mnemonic::Psubusb => packed::<SUBUS, 8>,
        Mnemonic::Psubusw => packed::<SUBUS, 16>,
        Mnemonic::Pcmpeqb => packed::<CMPEQ, 8>,
        Mnemonic::Pcmpeqw => packed::<CMPEQ, 16>,
        Mnemonic::Pcmpeqd => packed::<CMPEQ, 32>,
        Mnemonic::Pcmpgtb => packed::<CMPGT, 8>,
        Mnemonic::Pcmpgtw => packed::<CMPGT, 16>,
        Mnemonic::Pcmpgtd => packed::<CMPGT, 32>,
        Mnemonic::Pminub => packed::<MINU, 8>,
        Mnemonic::Pmaxub => packed::<MAXU, 8>,
        Mnemonic::Pminsw => packed::<MINS, 16>,
        Mnemonic::Pmaxsw => packed::<MAXS, 16>,
        Mnemonic::Pmullw => packed::<MULLO, 16>,
        Mnemonic::Pmulhw => packed::<MULHI, 16>,
        Mnemonic::Pmulhuw => packed::<MULHIU, 16>,
        Mnemonic::Pmuludq => packed::<MULUDQ, 64>,
        Mnemonic::Pavgb => packed::<AVG, 8>,
        Mnemonic::Pavgw => packed::<AVG, 16>,
        Mnemonic::Psllw => packed::<SLL, 16>,
        Mnemonic::Pslld => packed::<SLL, 32>,
        Mnemonic::Psllq => packed::<SLL, 64>,
        Mnemonic::Psrlw => packed::<SRL, 16>,
        Mnemonic::Psrld => packed::<SRL, 32>,
        Mnemonic::Psrlq => packed::<SRL, 64>,
        Mnemonic::Psraw => packed::<SRA, 16>,
        Mnemonic::Psrad => packed::<SRA, 32>,
        Mnemonic::Pslldq => byte_shift::<true>,
        Mnemonic::Psrldq => byte_shift::<false>,
        Mnemonic::Pshufd => shuffle::<32, 0>,
        Mnemonic::Pshuflw => shuffle::<16, 0>,
        Mnemonic::Pshufhw => shuffle::<16, 4>,
        Mnemonic::Shufps => shufp::<32>,
        Mnemonic::Shufpd => shufp::<64>,
        Mnemonic::Punpcklbw => unpack::<8, false>,
        Mnemonic::Punpcklwd => unpack::<16, false>,
        Mnemonic::Punpckldq | Mnemonic::Unpcklps => unpack::<32, false>,
        Mnemonic::Punpcklqdq | Mnemonic::Unpcklpd => unpack::<64, false>,
        Mnemonic::Punpckhbw => unpack::<8, true>,
        Mnemonic::Punpckhwd => unpack::<16, true>,
        Mnemonic::Punpckhdq | Mnemonic::Unpckhps => unpack::<32, true>,
        Mnemonic::Punpckhqdq | Mnemonic::Unpckhpd => unpack::<64, true>,
        Mnemonic::Packsswb => pack::<16, true>,
        Mnemonic::Packssdw => pack::<32, true>,
        Mnemonic::Packuswb => pack::<16, false>,
        Mnemonic::Pmovmskb => movmsk::<8>,
        Mnemonic::Movmskps => movmsk::<32>,
        Mnemonic::Movmskpd => movmsk::<64>,
        Mnemonic::Pextrw => pextrw,
        Mnemonic::Pinsrw => pinsrw,
        Mnemonic::Psadbw => psadbw,
        Mnemonic::Pmaddwd => pmaddwd,
        _ => return None,
    })
}

// ---- availability and operands ----

/// Whether SSE instructions may run: #UD with CR0.EM set or without CR4.OSFXSR (the
/// OS has not declared that it saves XMM state), #NM with CR0.TS set (an OS that
/// switches FPU state lazily must first restore this task's).
fn sse_ready(cx: &Ctx<'_>) -> Result<(), Fault> {
    if cx.cpu.cr0 & cr0::EM != 0 || cx.cpu.cr4 & cr4::OSFXSR == 0 {
        return Err(Exception::invalid_opcode().into());
    }
    if cx.cpu.cr0 & cr0::TS != 0 {
        return Err(DEVICE_NOT_AVAILABLE.into());
    }
    Ok(())
}

fn xmm(cx: &Ctx<'_>, r: Register) -> u128 {
    cx.cpu.fpu.xmm[r as usize - Register::XMM0 as usize]
}

fn set_xmm(cx: &mut Ctx<'_>, r: Register, v: u128) {
    cx.cpu.fpu.xmm[r as usize - Register::XMM0 as usize] = v;
}

/// Address of a 16-byte memory operand, checked for `access`. Legacy SSE requires
/// 16-byte alignment of every such operand (#GP(0) otherwise) except in the explicitly
/// unaligned moves.
fn mem128(cx: &Ctx<'_>, ins: &Instruction, aligned: bool, access: Access) -> Result<Addr, Fault> {
    let at = cx.mem_addr(ins, XMM_BYTES as u32, access)?;
    if aligned && !at.linear().is_multiple_of(XMM_BYTES) {
        return Err(Exception::general_protection(0).into());
    }
    Ok(at)
}

/// Reads 16 bytes as two halves; reads commit nothing, so a fault on the second half
/// leaves the instruction without effect.
fn read128(cx: &mut Ctx<'_>, at: Addr) -> Result<u128, Fault> {
    let lo = cx.read(at, 8)?;
    let hi = cx.read(at.offset(8), 8)?;
    Ok(u128::from(hi) << 64 | u128::from(lo))
}

/// Checks that the `len` bytes at `at` (at most a page) may be written, so a store
/// made in 8-byte pieces faults before the first piece lands. As for any access that
/// crosses into a page it may not use, a fault there reports that page's first byte.
pub fn probe_write(cx: &mut Ctx<'_>, at: Addr, len: u64) -> Result<(), Fault> {
    let user = cx.cpu.cpl() == 3;
    let lin = at.linear();
    let last = lin.wrapping_add(len - 1);
    cx.translate(lin, Access::Write, user)?;
    if (lin ^ last) >> PAGE_SHIFT != 0 {
        cx.translate(last >> PAGE_SHIFT << PAGE_SHIFT, Access::Write, user)?;
    }
    Ok(())
}

fn write128(cx: &mut Ctx<'_>, at: Addr, v: u128) -> Result<(), Fault> {
    probe_write(cx, at, XMM_BYTES)?;
    cx.write(at, 8, v as u64)?;
    cx.write(at.offset(8), 8, (v >> 64) as u64)
}

/// Operand `i` as 128 bits: an XMM register, a 16-byte memory operand, or anything
/// narrower (general register, smaller memory operand, immediate) zero-extended.
fn source(cx: &mut Ctx<'_>, ins: &Instruction, i: u32, aligned: bool) -> Result<u128, Fault> {
    match ins.op_kind(i) {
        OpKind::Register if ins.op_register(i).is_xmm() => Ok(xmm(cx, ins.op_register(i))),
        OpKind::Memory if ins.memory_size().size() as u64 == XMM_BYTES => {
            let at = mem128(cx, ins, aligned, Access::Read)?;
            read128(cx, at)
        }
        _ => Ok(cx.operand(ins, i)?.into()),
    }
}

/// Writes operand 0: a whole XMM register, 16 bytes of memory, or the low bits of `v`
/// to a general register or narrower memory operand.
fn store(cx: &mut Ctx<'_>, ins: &Instruction, v: u128, aligned: bool) -> Result<(), Fault> {
    match ins.op0_kind() {
        OpKind::Register if ins.op0_register().is_xmm() => {
            set_xmm(cx, ins.op0_register(), v);
            Ok(())
        }
        OpKind::Memory if ins.memory_size().size() as u64 == XMM_BYTES => {
            let at = mem128(cx, ins, aligned, Access::Write)?;
            write128(cx, at, v)
        }
        _ => cx.set_operand(ins, 0, v as u64),
    }
}

/// The common shape `xmm_dst = f(xmm_dst, src)`, src an XMM register, aligned memory
/// or an immediate.
fn binary(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    f: impl FnOnce(u128, u128) -> u128,
) -> Result<(), Fault> {
    sse_ready(cx)?;
    let src = source(cx, ins, 1, true)?;
    let dst = ins.op0_register();
    let v = f(xmm(cx, dst), src);
    set_xmm(cx, dst, v);
    Ok(())
}

// ---- lanes ----

/// All ones in the low `bits` bits.
fn ones(bits: u32) -> u64 {
    u64::MAX >> (64 - bits)
}

/// Lane `i` of `v`, `bits` wide.
fn lane(v: u128, bits: u32, i: u32) -> u64 {
    (v >> (i * bits)) as u64 & ones(bits)
}

/// `v` with lane `i` (`bits` wide) replaced by the low bits of `x`.
fn with_lane(v: u128, bits: u32, i: u32, x: u64) -> u128 {
    let shift = i * bits;
    let mask = u128::from(ones(bits)) << shift;
    (v & !mask) | (u128::from(x & ones(bits)) << shift)
}

/// A `bits`-wide lane value, sign-extended.
fn signed(x: u64, bits: u32) -> i64 {
    ((x << (64 - bits)) as i64) >> (64 - bits)
}

/// The range of a signed `bits`-wide lane.
fn signed_range(bits: u32) -> (i64, i64) {
    let max = (ones(bits) >> 1) as i64;
    (-max - 1, max)
}

/// `f` applied to each pair of `bits`-wide lanes of `a` and `b`.
fn map_lanes(a: u128, b: u128, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    (0..128 / bits).fold(0, |acc, i| {
        with_lane(acc, bits, i, f(lane(a, bits, i), lane(b, bits, i)))
    })
}

/// One lane of a packed-integer operation: destination lane `x`, source lane (or
/// shift count) `y`, both `bits` wide; the caller keeps the low `bits` of the result.
fn lane_op(op: u8, bits: u32, x: u64, y: u64) -> u64 {
    let (sx, sy) = (signed(x, bits), signed(y, bits));
    let (min, max) = signed_range(bits);
    let all = |cond: bool| if cond { ones(bits) } else { 0 };
    match op {
        ADD => x.wrapping_add(y),
        SUB => x.wrapping_sub(y),
        // Saturating ops exist for 8- and 16-bit lanes only, so the sums cannot overflow.
        ADDS => (sx + sy).clamp(min, max) as u64,
        SUBS => (sx - sy).clamp(min, max) as u64,
        ADDUS => (x + y).min(ones(bits)),
        SUBUS => x.saturating_sub(y),
        CMPEQ => all(x == y),
        CMPGT => all(sx > sy),
        MINU => x.min(y),
        MAXU => x.max(y),
        MINS => sx.min(sy) as u64,
        MAXS => sx.max(sy) as u64,
        MULLO => x.wrapping_mul(y),
        MULHI => ((sx * sy) >> bits) as u64,
        MULHIU => (x * y) >> bits,
        MULUDQ => (x & 0xFFFF_FFFF) * (y & 0xFFFF_FFFF),
        AVG => (x + y + 1) >> 1,
        AND => x & y,
        OR => x | y,
        XOR => x ^ y,
        ANDN => !x & y,
        // Counts beyond the lane width clear it (or fill it with the sign).
        SLL => x
            .checked_shl(y as u32)
            .filter(|_| y < u64::from(bits))
            .unwrap_or(0),
        SRL => x
            .checked_shr(y as u32)
            .filter(|_| y < u64::from(bits))
            .unwrap_or(0),
        _ => (sx >> y.min(u64::from(bits) - 1)) as u64, // SRA
    }
}

// ---- handlers ----

/// Lane-wise packed-integer and logic instructions; shifts take their count from an
/// immediate or from the low quadword of the source, applied to every lane.
fn packed<const OP: u8, const BITS: u32>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let shift = matches!(OP, SLL | SRL | SRA);
    binary(cx, ins, |a, b| {
        if shift {
            let count = b as u64;
            map_lanes(a, 0, BITS, |x, _| lane_op(OP, BITS, x, count))
        } else {
            map_lanes(a, b, BITS, |x, y| lane_op(OP, BITS, x, y))
        }
    })
}

/// PSLLDQ/PSRLDQ: the whole register shifted by whole bytes.
fn byte_shift<const LEFT: bool>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    binary(cx, ins, |a, bytes| {
        let bits = (bytes as u32).saturating_mul(8);
        let shifted = if LEFT {
            a.checked_shl(bits)
        } else {
            a.checked_shr(bits)
        };
        shifted.unwrap_or(0)
    })
}

/// PSHUFD/PSHUFLW/PSHUFHW: four `BITS`-wide lanes from lane `FIRST` on, each picked
/// from those four by two bits of the immediate; other lanes copied from the source.
fn shuffle<const BITS: u32, const FIRST: u32>(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
) -> Result<(), Fault> {
    let imm = u32::from(ins.immediate8());
    binary(cx, ins, |_, src| {
        (0..4).fold(src, |acc, i| {
            let pick = (imm >> (2 * i)) & 3;
            with_lane(acc, BITS, FIRST + i, lane(src, BITS, FIRST + pick))
        })
    })
}

/// SHUFPS/SHUFPD: the low half of the result from destination lanes, the high half
/// from source lanes, each chosen by a field of the immediate.
fn shufp<const BITS: u32>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let imm = u32::from(ins.immediate8());
    let lanes = 128 / BITS;
    let field = lanes.trailing_zeros();
    binary(cx, ins, |a, b| {
        (0..lanes).fold(0, |acc, i| {
            let from = if i < lanes / 2 { a } else { b };
            let pick = (imm >> (field * i)) & (lanes - 1);
            with_lane(acc, BITS, i, lane(from, BITS, pick))
        })
    })
}

/// PUNPCKL*/PUNPCKH*, UNPCKL*/UNPCKH*: interleave the low (or high) halves' lanes of
/// destination and source.
fn unpack<const BITS: u32, const HIGH: bool>(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
) -> Result<(), Fault> {
    let half = 64 / BITS;
    let base = if HIGH { half } else { 0 };
    binary(cx, ins, |a, b| {
        (0..half).fold(0, |acc, i| {
            let acc = with_lane(acc, BITS, 2 * i, lane(a, BITS, base + i));
            with_lane(acc, BITS, 2 * i + 1, lane(b, BITS, base + i))
        })
    })
}

/// PACKSSWB/PACKSSDW/PACKUSWB: signed `FROM`-bit lanes of destination then source,
/// narrowed to half width with signed (or unsigned) saturation.
fn pack<const FROM: u32, const SIGNED: bool>(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
) -> Result<(), Fault> {
    let to = FROM / 2;
    let lanes = 128 / FROM;
    let (min, max) = if SIGNED {
        signed_range(to)
    } else {
        (0, ones(to) as i64)
    };
    binary(cx, ins, |a, b| {
        (0..2 * lanes).fold(0, |acc, i| {
            let from = if i < lanes { a } else { b };
            let x = signed(lane(from, FROM, i % lanes), FROM).clamp(min, max);
            with_lane(acc, to, i, x as u64)
        })
    })
}

/// PMOVMSKB/MOVMSKPS/MOVMSKPD: the sign bit of each lane into a general register.
fn movmsk<const BITS: u32>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    sse_ready(cx)?;
    let v = xmm(cx, ins.op1_register());
    let mask = (0..128 / BITS).fold(0, |acc, i| acc | (lane(v, BITS, i) >> (BITS - 1)) << i);
    cx.set_reg(ins.op0_register(), mask);
    Ok(())
}

/// PEXTRW: one word, picked by the immediate, zero-extended into a general register.
fn pextrw(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    sse_ready(cx)?;
    let word = lane(
        xmm(cx, ins.op1_register()),
        16,
        u32::from(ins.immediate8() & 7),
    );
    cx.set_operand(ins, 0, word)
}

/// PINSRW: the low word of a general register or memory into the word the immediate
/// picks.
fn pinsrw(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let at = u32::from(ins.immediate8() & 7);
    binary(cx, ins, |a, v| with_lane(a, 16, at, v as u64))
}

/// PSADBW: per quadword, the sum of the absolute differences of its eight bytes.
fn psadbw(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    binary(cx, ins, |a, b| {
        map_lanes(a, b, 64, |x, y| {
            (0..8)
                .map(|i| lane(x.into(), 8, i).abs_diff(lane(y.into(), 8, i)))
                .sum()
        })
    })
}

/// PMADDWD: per doubleword, the sum of the signed products of its two word pairs.
fn pmaddwd(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    binary(cx, ins, |a, b| {
        map_lanes(a, b, 32, |x, y| {
            let product = |i| signed(lane(x.into(), 16, i), 16) * signed(lane(y.into(), 16, i), 16);
            (product(0) + product(1)) as u64
        })
    })
}

/// MOVDQA/MOVDQU/MOVAPS/MOVUPS/MOVAPD/MOVUPD/MOVNT*: 128 bits, register or memory to
/// register or memory.
fn mov128<const ALIGNED: bool>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    sse_ready(cx)?;
    let v = source(cx, ins, 1, ALIGNED)?;
    store(cx, ins, v, ALIGNED)
}

/// MOVD/MOVQ/MOVSS/MOVSD: the low `SIZE` bytes. Into an XMM register the rest is
/// zeroed, except that MOVSS/MOVSD (`MERGE`) between registers keep the rest.
fn mov_scalar<const SIZE: u32, const MERGE: bool>(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
) -> Result<(), Fault> {
    sse_ready(cx)?;
    let mask = u128::from(ones(8 * SIZE));
    let mut v = source(cx, ins, 1, true)? & mask;
    let reg_to_reg = ins.op0_kind() == OpKind::Register && ins.op1_kind() == OpKind::Register;
    if MERGE && reg_to_reg {
        v |= xmm(cx, ins.op0_register()) & !mask;
    }
    store(cx, ins, v, true)
}

/// MOVLPS/MOVLPD, MOVHPS/MOVHPD, MOVHLPS, MOVLHPS: one quadword from the `SRC_HIGH`
/// half of the source (or 8 bytes of memory) into the `DST_HIGH` half of the
/// destination (or 8 bytes of memory); the other destination half is kept.
fn mov_half<const DST_HIGH: bool, const SRC_HIGH: bool>(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
) -> Result<(), Fault> {
    sse_ready(cx)?;
    let half = |high: bool| u32::from(high);
    let v = match ins.op1_kind() {
        OpKind::Register => lane(xmm(cx, ins.op1_register()), 64, half(SRC_HIGH)),
        _ => cx.operand(ins, 1)?,
    };
    match ins.op0_kind() {
        OpKind::Register => {
            let dst = ins.op0_register();
            let merged = with_lane(xmm(cx, dst), 64, half(DST_HIGH), v);
            set_xmm(cx, dst, merged);
            Ok(())
        }
        _ => cx.set_operand(ins, 0, v),
    }
}

/// MOVNTI: the non-temporal hint means nothing without caches, so a plain store. It
/// only touches general registers: no SSE state checks.
fn movnti(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let v = cx.operand(ins, 1)?;
    cx.set_operand(ins, 0, v)
}

/// LDMXCSR: setting a bit outside [`MXCSR_MASK`] raises #GP(0).
fn ldmxcsr(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    sse_ready(cx)?;
    let v = cx.operand(ins, 0)? as u32;
    if v & !MXCSR_MASK != 0 {
        return Err(Exception::general_protection(0).into());
    }
    cx.cpu.fpu.mxcsr = v;
    Ok(())
}

fn stmxcsr(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    sse_ready(cx)?;
    let v = cx.cpu.fpu.mxcsr;
    cx.set_operand(ins, 0, v.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_lanes_clamp_at_the_lane_range() {
        assert_eq!(lane_op(ADDS, 8, 0x7F, 0x01), 0x7F);
        assert_eq!(lane_op(SUBS, 16, 0x8000, 1) & 0xFFFF, 0x8000);
        assert_eq!(lane_op(ADDUS, 8, 0xF0, 0x20), 0xFF);
        assert_eq!(lane_op(SUBUS, 8, 0x10, 0x20), 0);
    }

    #[test]
    fn shifts_past_the_lane_width_clear_or_fill_with_the_sign() {
        assert_eq!(lane_op(SLL, 16, 0x1234, 16), 0);
        assert_eq!(lane_op(SRL, 64, u64::MAX, 64), 0);
        assert_eq!(lane_op(SRA, 16, 0x8000, 100) & 0xFFFF, 0xFFFF);
        assert_eq!(lane_op(SRA, 32, 0x4000_0000, 1 << 40) & 0xFFFF_FFFF, 0);
    }

    #[test]
    fn map_lanes_keeps_lanes_apart() {
        let a = u128::MAX;
        // Adding 1 to every byte of all-ones wraps each byte without carrying.
        assert_eq!(map_lanes(a, a, 8, |x, _| lane_op(ADD, 8, x, 1)), 0);
    }
}

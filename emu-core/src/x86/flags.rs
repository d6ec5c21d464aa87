//! Lazily computed arithmetic flags.
//!
//! Most flag results are never read: `dec ecx; jnz` reads only ZF. So an arithmetic
//! instruction records what it did (the operation, operand size, operands and result) and
//! each flag is derived only when something reads it, as Bochs and QEMU do. Operations
//! whose flags are awkward to derive later (shifts, multiplies) compute them at once and
//! store them as `Eager`.

use crate::cpu::rflags::{AF, ARITH, CF, FIXED, IOPL, OF, PF, SF, ZF};

/// The last flag-setting operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    /// The arithmetic flags are stored in `bits` as they are.
    Eager,
    /// a + b (+ carry-in, held in `bits` CF, for ADC).
    Add,
    /// a + b + CF.
    Adc,
    /// a - b (also CMP and NEG with a = 0).
    Sub,
    /// a - b - CF.
    Sbb,
    /// AND/OR/XOR/TEST: CF = OF = 0.
    Logic,
    /// a + 1: like Add, but CF is kept (held in `bits`).
    Inc,
    /// a - 1: like Sub, but CF is kept.
    Dec,
}

/// RFLAGS with lazily evaluated status flags. Compares, prints and serializes as the
/// architectural value.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(from = "u64", into = "u64")]
pub struct Flags {
    /// The non-arithmetic flags always; the arithmetic ones when `op` is `Eager`; the
    /// carry-in (ADC/SBB) or the preserved CF (INC/DEC) in the CF position otherwise.
    bits: u64,
    op: FlagOp,
    /// Operand size in bytes: 1, 2, 4 or 8.
    size: u8,
    a: u64,
    b: u64,
    /// The result, masked to `size`.
    res: u64,
}

/// All-ones mask of an operand size in bytes.
#[inline(always)]
pub fn size_mask(size: u8) -> u64 {
    u64::MAX >> (64 - 8 * size as u32)
}

/// The sign bit of an operand size in bytes.
#[inline(always)]
pub fn sign_bit(size: u8) -> u64 {
    1u64 << (8 * size as u32 - 1)
}

/// `v`'s low `size` bytes, sign-extended to 64 bits.
#[inline(always)]
pub fn sign_extend(v: u64, size: u8) -> u64 {
    let shift = 64 - 8 * size as u32;
    (((v << shift) as i64) >> shift) as u64
}

/// PF: set when the low byte has an even number of one bits.
#[inline(always)]
fn parity(res: u64) -> bool {
    (res as u8).count_ones().is_multiple_of(2)
}

impl PartialEq for Flags {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Flags {}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.get())
    }
}

/// `rflags & mask`: the architectural bits under a mask.
impl std::ops::BitAnd<u64> for Flags {
    type Output = u64;

    fn bitand(self, mask: u64) -> u64 {
        self.get() & mask
    }
}

impl From<u64> for Flags {
    fn from(bits: u64) -> Self {
        Flags::from_bits(bits)
    }
}

impl From<Flags> for u64 {
    fn from(f: Flags) -> Self {
        f.get()
    }
}

impl Default for Flags {
    fn default() -> Self {
        Flags::from_bits(FIXED)
    }
}

impl Flags {
    /// Flags with these RFLAGS bits.
    pub fn from_bits(bits: u64) -> Self {
        Flags {
            bits: bits | FIXED,
            op: FlagOp::Eager,
            size: 4,
            a: 0,
            b: 0,
            res: 0,
        }
    }

    /// Records an operation whose flags will be derived when read.
    #[inline(always)]
    pub fn set(&mut self, op: FlagOp, size: u8, a: u64, b: u64, res: u64) {
        self.op = op;
        self.size = size;
        self.a = a;
        self.b = b;
        self.res = res & size_mask(size);
    }

    /// ADC or SBB: the carry that went in is kept in the CF position of `bits`.
    #[inline(always)]
    pub fn set_with_carry(&mut self, op: FlagOp, size: u8, a: u64, b: u64, res: u64, cin: bool) {
        self.bits = (self.bits & !CF) | cin as u64;
        self.set(op, size, a, b, res);
    }

    /// INC or DEC: CF is left as it was.
    #[inline(always)]
    pub fn set_keep_cf(&mut self, op: FlagOp, size: u8, a: u64, res: u64) {
        // After an eager update or another INC/DEC, CF already sits in `bits`.
        if !matches!(self.op, FlagOp::Eager | FlagOp::Inc | FlagOp::Dec) {
            let cf = self.cf();
            self.bits = (self.bits & !CF) | cf as u64;
        }
        self.set(op, size, a, 1, res);
    }

    /// Stores the arithmetic flags given in `arith` (only its ARITH bits are used).
    #[inline]
    pub fn set_arith(&mut self, arith: u64) {
        self.bits = (self.bits & !ARITH) | (arith & ARITH);
        self.op = FlagOp::Eager;
    }

    /// Replaces only the flags in `mask` with those of `value`, keeping the others.
    pub fn update(&mut self, mask: u64, value: u64) {
        let cur = self.get();
        self.bits = (cur & !mask) | (value & mask) | FIXED;
        self.op = FlagOp::Eager;
    }

    /// Full RFLAGS.
    pub fn get(&self) -> u64 {
        if self.op == FlagOp::Eager {
            return self.bits;
        }
        let mut f = self.bits & !ARITH;
        f |= self.cf() as u64 * CF;
        f |= parity(self.res) as u64 * PF;
        f |= self.af() as u64 * AF;
        f |= (self.res == 0) as u64 * ZF;
        f |= self.sf() as u64 * SF;
        f |= self.of() as u64 * OF;
        f
    }

    /// Replaces RFLAGS (the caller masks what software may change).
    pub fn set_all(&mut self, value: u64) {
        *self = Flags::from_bits(value);
    }

    /// One of the non-arithmetic flags (IF, DF, TF, ...).
    #[inline(always)]
    pub fn control(&self, bit: u64) -> bool {
        self.bits & bit != 0
    }

    /// The I/O privilege level (EFLAGS bits 12-13).
    #[inline]
    pub fn iopl(&self) -> u8 {
        ((self.bits & IOPL) >> IOPL.trailing_zeros()) as u8
    }

    /// Sets or clears one non-arithmetic flag.
    #[inline]
    pub fn set_control(&mut self, bit: u64, on: bool) {
        debug_assert_eq!(bit & ARITH, 0, "use update() for arithmetic flags");
        self.bits = (self.bits & !bit) | (on as u64 * bit);
    }

    /// Carry flag.
    #[inline]
    pub fn cf(&self) -> bool {
        let (a, b, res) = (self.a, self.b, self.res);
        let cin = self.bits & CF != 0;
        match self.op {
            FlagOp::Eager | FlagOp::Inc | FlagOp::Dec => cin,
            FlagOp::Add => res < a,
            // a + b + 1 carries out exactly when the truncated result is not above a.
            FlagOp::Adc => res < a || (cin && res == a),
            FlagOp::Sub => a < b,
            // a - b - 1 borrows exactly when a is not above b.
            FlagOp::Sbb => a < b || (cin && a == b),
            FlagOp::Logic => false,
        }
    }

    /// Zero flag.
    #[inline(always)]
    pub fn zf(&self) -> bool {
        match self.op {
            FlagOp::Eager => self.bits & ZF != 0,
            _ => self.res == 0,
        }
    }

    /// Sign flag.
    #[inline(always)]
    pub fn sf(&self) -> bool {
        match self.op {
            FlagOp::Eager => self.bits & SF != 0,
            _ => self.res & sign_bit(self.size) != 0,
        }
    }

    /// Overflow flag.
    #[inline]
    pub fn of(&self) -> bool {
        let (a, b, res, sign) = (self.a, self.b, self.res, sign_bit(self.size));
        match self.op {
            FlagOp::Eager => self.bits & OF != 0,
            FlagOp::Add | FlagOp::Adc | FlagOp::Inc => (a ^ res) & (b ^ res) & sign != 0,
            FlagOp::Sub | FlagOp::Sbb | FlagOp::Dec => (a ^ b) & (a ^ res) & sign != 0,
            FlagOp::Logic => false,
        }
    }

    /// Parity flag.
    #[inline]
    pub fn pf(&self) -> bool {
        match self.op {
            FlagOp::Eager => self.bits & PF != 0,
            _ => parity(self.res),
        }
    }

    /// Adjust flag: the carry or borrow out of bit 3.
    #[inline]
    pub fn af(&self) -> bool {
        match self.op {
            FlagOp::Eager => self.bits & AF != 0,
            FlagOp::Logic => false,
            _ => (self.a ^ self.b ^ self.res) & 0x10 != 0,
        }
    }

    /// Evaluates a condition code (the low nibble of Jcc/SETcc/CMOVcc opcodes).
    #[inline]
    pub fn condition(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || self.sf() != self.of(),
        };
        r != (cc & 1 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eager(f: &Flags) -> u64 {
        f.get() & ARITH
    }

    #[test]
    fn add_carry_overflow_and_adjust() {
        let mut f = Flags::default();
        f.set(FlagOp::Add, 1, 0x7F, 0x01, 0x80);
        assert_eq!(eager(&f), OF | SF | AF);
        f.set(FlagOp::Add, 1, 0xFF, 0x01, 0x100);
        assert_eq!(eager(&f), CF | ZF | PF | AF);
    }

    #[test]
    fn adc_with_carry_in_of_all_ones() {
        let mut f = Flags::default();
        // 0xFFFFFFFF + 0xFFFFFFFF + 1 = 0x1_FFFFFFFF: carry, result 0xFFFFFFFF.
        f.set_with_carry(
            FlagOp::Adc,
            4,
            0xFFFF_FFFF,
            0xFFFF_FFFF,
            0x1_FFFF_FFFF,
            true,
        );
        assert!(f.cf());
        assert_eq!(f.res, 0xFFFF_FFFF);
        // 5 + 0 + 1: no carry even though res > a.
        f.set_with_carry(FlagOp::Adc, 4, 5, 0, 6, true);
        assert!(!f.cf());
    }

    #[test]
    fn sbb_borrow_when_equal_and_carry_in() {
        let mut f = Flags::default();
        f.set_with_carry(FlagOp::Sbb, 2, 7, 7, 7u64.wrapping_sub(8), true);
        assert!(f.cf());
        assert!(f.sf());
        f.set_with_carry(FlagOp::Sbb, 2, 8, 7, 0, true);
        assert!(!f.cf() && f.zf());
    }

    #[test]
    fn inc_dec_keep_carry() {
        let mut f = Flags::default();
        f.set(FlagOp::Sub, 4, 0, 1, u64::MAX); // CF = 1
        f.set_keep_cf(FlagOp::Dec, 4, 1, 0);
        assert!(f.cf() && f.zf());
        f.set_keep_cf(FlagOp::Inc, 4, 0x7FFF_FFFF, 0x8000_0000);
        assert!(f.cf() && f.of() && f.sf() && f.af());
    }

    #[test]
    fn conditions_follow_the_manual() {
        let mut f = Flags::default();
        f.set(FlagOp::Sub, 4, 1, 2, 1u64.wrapping_sub(2)); // 1 < 2 signed and unsigned
        assert!(f.condition(0x2)); // B
        assert!(f.condition(0xC)); // L
        assert!(!f.condition(0x4)); // E
        assert!(f.condition(0x5)); // NE
        assert!(f.condition(0x6)); // BE
        assert!(!f.condition(0xF)); // G
    }

    #[test]
    fn control_bits_survive_arithmetic() {
        let mut f = Flags::from_bits(crate::cpu::rflags::IF | crate::cpu::rflags::DF);
        f.set(FlagOp::Logic, 4, 0, 0, 0);
        assert_eq!(
            f.get() & !ARITH,
            FIXED | crate::cpu::rflags::IF | crate::cpu::rflags::DF
        );
    }
}

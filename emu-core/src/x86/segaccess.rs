//! What segmentation allows a data access: the limit checks and type checks of the Intel
//! SDM (Vol. 3, 5.3 and 5.4) every read and write through a segment register passes
//! before paging sees its linear address.
//!
//! Outside 64-bit mode (real mode, protected mode, compatibility mode) an access of `len`
//! bytes at `offset` must lie within the segment: at offsets `0..=limit` of an expand-up
//! segment, or `limit+1..=0xFFFF` (B clear) or `limit+1..=0xFFFF_FFFF` (B set) of an
//! expand-down data segment, with no wrap past the end. In protected mode the register
//! must also hold a usable descriptor (a null selector leaves it unusable) of a type
//! that allows the access: no writes to code or read-only data, no reads of execute-only
//! code. Real mode checks the limit only, but the one the hidden part holds, which in
//! "unreal mode" is what protected mode loaded. A refused access raises #SS(0) through
//! SS and #GP(0) through the others. In 64-bit mode there are no limits; the address must
//! be canonical instead (#SS(0) for SS, #GP(0) otherwise), and only FS and GS add a base.
//!
//! Two design choices keep this exact and cheap:
//!
//! - [`Addr`], the only address [`Ctx::read`](super::Ctx::read) and
//!   [`Ctx::write`](super::Ctx::write) take, can only be made here, by a function that
//!   ran the checks: a handler (or a future engine) cannot access guest data without
//!   them. The processor's own accesses to descriptor tables, the TSS and the IDT use
//!   `read_sys`/`write_sys` with plain linear addresses, as they are not made through a
//!   segment register.
//! - Most guests run on flat segments (limit 4 GiB - 1, expand-up, read/write data), for
//!   which no check can fail in any mode. [`SegRegs`] holds the six segment registers
//!   with one precomputed bit each saying whether its checks can be skipped; its only
//!   setter recomputes the bit from the segment alone (the bit does not depend on the
//!   mode), so the many writers of segment registers (loads, far transfers, interrupt
//!   delivery, fast system calls, mode switches, `set_state`) keep it right without
//!   knowing of it. A flat access outside long mode costs a test of EFER.LMA and of the
//!   bit, inline in the handler ([`address`]); long mode and the checks are one call
//!   away, which keeps the handlers small enough for the compiler to inline what they
//!   call (measured: the `loop` ROM and a load/store/push/pop loop run no more host
//!   instructions than before the checks).

use super::mmu::{is_canonical, Access};
use super::segment::code_data;
use super::{Fault, Vcpu};
use crate::cpu::{cr0, efer, SegReg, Segment};
use crate::exception::Exception;

/// The highest offset of a 16-bit expand-down segment (B clear).
const EXPAND_DOWN_TOP16: u64 = 0xFFFF;
/// The highest offset of a 32-bit expand-down segment (B set).
const EXPAND_DOWN_TOP32: u64 = 0xFFFF_FFFF;
/// Linear addresses outside 64-bit mode are 32 bits wide and wrap.
const LINEAR32: u64 = 0xFFFF_FFFF;

/// A linear address segmentation allowed a data access at. Made only by the checks in
/// this module (for the whole access: an instruction operand or a stack slot), so every
/// [`Ctx::read`](super::Ctx::read) and [`Ctx::write`](super::Ctx::write) has passed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(u64);

impl Addr {
    /// The linear address.
    #[inline(always)]
    pub fn linear(self) -> u64 {
        self.0
    }

    /// The address `n` bytes further on: a later part of the same checked access (the
    /// selector of a far pointer, the upper half of a 16-byte operand).
    #[inline(always)]
    pub fn offset(self, n: u64) -> Addr {
        Addr(self.0.wrapping_add(n))
    }
}

/// The address of a data access of `len` bytes at `offset` through `seg`, if
/// segmentation allows it. Outside long mode through a flat segment, the common case,
/// it is inline and one bit test; the rest is not.
#[inline(always)]
pub fn address(cpu: &Vcpu, seg: SegReg, offset: u64, len: u32, access: Access) -> Option<Addr> {
    if cpu.efer & efer::LMA == 0 && !cpu.seg.needs_checks(seg) {
        return Some(Addr(cpu.seg[seg].base.wrapping_add(offset) & LINEAR32));
    }
    checked_address(cpu, seg, offset, len, access)
}

/// [`address`] in long mode or through a segment that needs the checks.
#[inline(never)]
fn checked_address(cpu: &Vcpu, seg: SegReg, offset: u64, len: u32, access: Access) -> Option<Addr> {
    let s = &cpu.seg[seg];
    if cpu.code_bitness() == 64 {
        // 64-bit mode: flat, except that FS and GS keep their bases.
        let base = match seg {
            SegReg::Fs | SegReg::Gs => s.base,
            _ => 0,
        };
        long_addr(base, offset, len)
    } else {
        let checked = cpu.seg.needs_checks(seg);
        legacy_addr(s, checked, offset, len, access, cpu.cr0 & cr0::PE != 0)
    }
}

/// Whether `s` allows an access of `len` bytes at `offset` (below 4 GiB), checking the
/// type only in protected mode. Never inlined: flat segments do not get here.
#[inline(never)]
pub fn permits(s: &Segment, offset: u64, len: u32, access: Access, protected: bool) -> bool {
    let kind = s.attr & Segment::TYPE;
    let code = kind & code_data::CODE != 0;
    let rw_bit = kind & code_data::WRITABLE_READABLE != 0;
    if protected {
        // A null selector leaves the register unusable: its hidden part is not present.
        let usable = Segment::PRESENT | Segment::CODE_DATA;
        let allowed = match access {
            Access::Write => !code && rw_bit,
            // Every data segment is readable, code only with its R bit.
            Access::Read | Access::Exec => !code || rw_bit,
        };
        if s.attr & usable != usable || !allowed {
            return false;
        }
    }
    let last = offset + u64::from(len.max(1)) - 1;
    if !code && kind & code_data::EXPAND_DOWN != 0 {
        // Valid offsets run from just above the limit to the top the B bit sets.
        let top = if s.attr & Segment::DB != 0 {
            EXPAND_DOWN_TOP32
        } else {
            EXPAND_DOWN_TOP16
        };
        offset > u64::from(s.limit) && last <= top
    } else {
        // With a 4 GiB limit only an access wrapping past the top could be refused, and
        // the SDM (5.3) leaves that to the implementation: Popek lets it wrap.
        s.limit == u32::MAX || last <= u64::from(s.limit)
    }
}

/// The address of an access outside 64-bit mode through `s`, whose checks `checked`
/// says are needed (see [`SegRegs::needs_checks`]); None if segmentation refuses it.
#[inline(always)]
pub fn legacy_addr(
    s: &Segment,
    checked: bool,
    offset: u64,
    len: u32,
    access: Access,
    protected: bool,
) -> Option<Addr> {
    if checked && !permits(s, offset, len, access, protected) {
        return None;
    }
    Some(Addr(s.base.wrapping_add(offset) & LINEAR32))
}

/// The address of an access in 64-bit mode (`base` is 0 except for FS and GS); None if
/// any byte of it is not canonical.
#[inline(always)]
pub fn long_addr(base: u64, offset: u64, len: u32) -> Option<Addr> {
    let lin = base.wrapping_add(offset);
    let last = lin.wrapping_add(u64::from(len.max(1)) - 1);
    (is_canonical(lin) && is_canonical(last)).then_some(Addr(lin))
}

/// Whether `s` needs checks at all (for a segment not held in [`SegRegs`]: the stack a
/// control transfer is about to switch to).
#[inline(always)]
pub fn needs_checks(s: &Segment) -> bool {
    !s.is_flat()
}

/// The fault of a refused access through `seg`: #SS through SS, #GP through the others.
#[cold]
pub fn refused(seg: SegReg) -> Fault {
    if seg == SegReg::Ss {
        Exception::stack_fault(0).into()
    } else {
        Exception::general_protection(0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{SegRegs, Segment};

    /// Data type bits: read-only, read/write, read-only expand-down, read/write
    /// expand-down.
    const RO: u16 = 0x1;
    const RW: u16 = 0x3;
    const RW_DOWN: u16 = 0x7;
    /// Code type bits: execute-only, execute/read.
    const XO: u16 = 0x9;
    const XR: u16 = 0xB;

    fn seg(kind: u16, limit: u32, big: bool) -> Segment {
        let db = if big { Segment::DB } else { 0 };
        Segment {
            selector: 0x10,
            base: 0x1000,
            limit,
            attr: kind | Segment::CODE_DATA | Segment::PRESENT | db,
        }
    }

    #[test]
    fn expand_up_limits_admit_the_last_byte_and_refuse_straddling() {
        let s = seg(RW, 0xFFF, true);
        assert!(permits(&s, 0xFFF, 1, Access::Read, true));
        assert!(permits(&s, 0xFFC, 4, Access::Write, true));
        assert!(!permits(&s, 0xFFD, 4, Access::Read, true), "straddles");
        assert!(!permits(&s, 0x1000, 1, Access::Read, true));
        assert!(!permits(&s, 0xFFFF_FFFF, 2, Access::Read, true), "wraps");
    }

    #[test]
    fn expand_down_offsets_lie_above_the_limit_up_to_the_b_bit_top() {
        let small = seg(RW_DOWN, 0xFFF, false);
        assert!(!permits(&small, 0xFFF, 1, Access::Read, true));
        assert!(permits(&small, 0x1000, 2, Access::Read, true));
        assert!(permits(&small, 0xFFFE, 2, Access::Write, true));
        assert!(
            !permits(&small, 0xFFFF, 2, Access::Read, true),
            "past 0xFFFF"
        );
        let big = seg(RW_DOWN, 0xFFF, true);
        assert!(permits(&big, 0xFFFF, 2, Access::Read, true));
        assert!(permits(&big, 0xFFFF_FFFC, 4, Access::Read, true));
        assert!(!permits(&big, 0xFFFF_FFFD, 4, Access::Read, true), "wraps");
    }

    #[test]
    fn types_decide_reads_and_writes_in_protected_mode_only() {
        assert!(!permits(&seg(RO, 0xFFF, true), 0, 1, Access::Write, true));
        assert!(permits(&seg(RO, 0xFFF, true), 0, 1, Access::Read, true));
        assert!(!permits(&seg(XO, 0xFFF, true), 0, 1, Access::Read, true));
        assert!(permits(&seg(XR, 0xFFF, true), 0, 1, Access::Read, true));
        assert!(!permits(&seg(XR, 0xFFF, true), 0, 1, Access::Write, true));
        assert!(permits(&seg(XO, 0xFFF, true), 0, 1, Access::Write, false));
        assert!(!permits(
            &seg(XO, 0xFFF, true),
            0xFFF,
            2,
            Access::Write,
            false
        ));
        let null = Segment::default();
        assert!(!permits(&null, 0, 1, Access::Read, true));
    }

    #[test]
    fn only_flat_read_write_data_skips_the_checks() {
        let flat = Segment::flat32(0x10, Segment::TYPE_DATA_RW);
        let regs = SegRegs::new([flat; 6]);
        assert!(!regs.needs_checks(SegReg::Ds));
        let mut regs = regs;
        regs.set(SegReg::Ds, seg(RO, u32::MAX, true));
        regs.set(SegReg::Es, seg(RW_DOWN, u32::MAX, true));
        regs.set(SegReg::Cs, Segment::flat32(0x08, Segment::TYPE_CODE_RX));
        regs.set(SegReg::Fs, seg(RW, 0xFFFF, false));
        let skipped = [SegReg::Ss, SegReg::Gs];
        for s in [SegReg::Es, SegReg::Cs, SegReg::Ds, SegReg::Fs] {
            assert!(regs.needs_checks(s), "{s:?}");
        }
        for s in skipped {
            assert!(!regs.needs_checks(s), "{s:?}");
            // Skipping is safe: the checks would allow anything.
            assert!(permits(&regs[s], 0xFFFF_FFFF, 8, Access::Write, true));
        }
        regs.set(SegReg::Ds, flat);
        assert!(!regs.needs_checks(SegReg::Ds));
    }

    #[test]
    fn long_mode_addresses_must_be_canonical_to_the_last_byte() {
        assert_eq!(
            long_addr(0, 0x7FFF_FFFF_FFF8, 8).map(Addr::linear),
            Some(0x7FFF_FFFF_FFF8)
        );
        assert_eq!(long_addr(0, 0x7FFF_FFFF_FFFC, 8), None);
        assert_eq!(
            long_addr(0x1000, u64::MAX - 0xFFF, 4).map(Addr::linear),
            Some(0)
        );
    }
}

//! Segment descriptors, and loading segment registers with the protection checks of
//! protected mode (or the plain `selector * 16` of real and virtual-8086 mode); the
//! stacks control transfers build and unwind (interrupt delivery, far CALL through a
//! gate, far RET, IRET).

use super::flags::size_mask;
use super::mmu::Access;
use super::segaccess::{self, Addr};
use super::{Ctx, Fault};
use crate::cpu::{cr0, rflags, SegReg, Segment};
use crate::exception::Exception;

/// Selector bits.
pub mod selector {
    /// Requested privilege level.
    pub const RPL: u16 = 3;
    /// Table indicator: the LDT rather than the GDT.
    pub const TI: u16 = 1 << 2;
}

/// Descriptor type values of system descriptors (S = 0).
pub mod system_type {
    /// Available 16-bit TSS.
    pub const TSS16_AVAILABLE: u16 = 1;
    /// LDT.
    pub const LDT: u16 = 2;
    /// Busy 16-bit TSS.
    pub const TSS16_BUSY: u16 = 3;
    /// 16-bit call gate.
    pub const CALL_GATE16: u16 = 4;
    /// Task gate.
    pub const TASK_GATE: u16 = 5;
    /// 16-bit interrupt gate.
    pub const INT_GATE16: u16 = 6;
    /// 16-bit trap gate.
    pub const TRAP_GATE16: u16 = 7;
    /// Available 32/64-bit TSS.
    pub const TSS_AVAILABLE: u16 = 9;
    /// Busy 32/64-bit TSS.
    pub const TSS_BUSY: u16 = 11;
    /// 32/64-bit call gate.
    pub const CALL_GATE: u16 = 12;
    /// 32/64-bit interrupt gate.
    pub const INT_GATE: u16 = 14;
    /// 32/64-bit trap gate.
    pub const TRAP_GATE: u16 = 15;
}

pub use crate::cpu::code_data;

/// An 8-byte segment descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor(pub u64);

impl Descriptor {
    /// Attributes in the layout of [`Segment::attr`]: bits 40-47 and 52-55.
    pub fn attr(self) -> u16 {
        (((self.0 >> 40) & 0xFF) | (((self.0 >> 52) & 0xF) << 8)) as u16
    }
    /// Type (4 bits).
    pub fn kind(self) -> u16 {
        self.attr() & 0xF
    }
    /// Code or data (S = 1), not a system descriptor.
    pub fn is_code_data(self) -> bool {
        self.attr() & Segment::CODE_DATA != 0
    }
    /// A code segment.
    pub fn is_code(self) -> bool {
        self.is_code_data() && self.kind() & code_data::CODE != 0
    }
    /// A conforming code segment.
    pub fn is_conforming(self) -> bool {
        self.is_code() && self.kind() & code_data::CONFORMING != 0
    }
    /// A writable data segment.
    pub fn is_writable_data(self) -> bool {
        self.is_code_data() && !self.is_code() && self.kind() & code_data::WRITABLE_READABLE != 0
    }
    /// A readable code segment or any data segment.
    pub fn is_readable(self) -> bool {
        self.is_code_data() && (!self.is_code() || self.kind() & code_data::WRITABLE_READABLE != 0)
    }
    /// A 64-bit code segment (the L bit).
    pub fn is_long(self) -> bool {
        self.attr() & Segment::LONG != 0
    }
    /// Default operand size 32 bits (the D/B bit).
    pub fn is_default32(self) -> bool {
        self.attr() & Segment::DB != 0
    }
    /// Present.
    pub fn present(self) -> bool {
        self.attr() & Segment::PRESENT != 0
    }
    /// Descriptor privilege level.
    pub fn dpl(self) -> u8 {
        ((self.attr() >> 5) & 3) as u8
    }
    /// Base address (32 bits; system descriptors in long mode add 32 more).
    pub fn base(self) -> u64 {
        ((self.0 >> 16) & 0xFF_FFFF) | (((self.0 >> 56) & 0xFF) << 24)
    }
    /// Limit in bytes, scaled by the granularity bit.
    pub fn limit(self) -> u32 {
        let raw = ((self.0 & 0xFFFF) | (((self.0 >> 48) & 0xF) << 16)) as u32;
        if self.attr() & Segment::GRANULARITY != 0 {
            (raw << 12) | 0xFFF
        } else {
            raw
        }
    }
    /// Gates: the selector of the code segment they lead to.
    pub fn gate_selector(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// 32-bit gates: the entry point's offset (16-bit gates use its low half, 64-bit
    /// gates add 32 more bits from their second half).
    pub fn gate_offset(self) -> u64 {
        (self.0 & 0xFFFF) | ((self.0 >> 32) & 0xFFFF_0000)
    }
    /// Call gates: how many stack parameters a privilege change copies (5 bits).
    pub fn gate_params(self) -> u8 {
        ((self.0 >> 32) & 0x1F) as u8
    }
    /// The segment register contents this descriptor loads with `selector`.
    pub fn segment(self, selector: u16) -> Segment {
        Segment {
            selector,
            base: self.base(),
            limit: self.limit(),
            attr: self.attr(),
        }
    }
}

/// The #GP/#TS/#NP error code naming a selector.
pub fn selector_error(sel: u16) -> u32 {
    (sel & !selector::RPL) as u32
}

/// Where the descriptor of `sel` lives (linear address), or None if the selector is
/// beyond its table's limit (or names the LDT when none is loaded).
pub fn descriptor_address(cx: &Ctx<'_>, sel: u16) -> Option<u64> {
    let (base, limit) = if sel & selector::TI != 0 {
        let ldtr = &cx.cpu.ldtr;
        if ldtr.attr & Segment::PRESENT == 0 {
            return None;
        }
        (ldtr.base, ldtr.limit as u64)
    } else {
        (cx.cpu.gdtr.base, cx.cpu.gdtr.limit as u64)
    };
    let offset = (sel & !7) as u64;
    (offset + 7 <= limit).then_some(base.wrapping_add(offset))
}

/// Reads the descriptor of `sel`; None if it is outside its table.
pub fn read_descriptor(cx: &mut Ctx<'_>, sel: u16) -> Result<Option<(Descriptor, u64)>, Fault> {
    match descriptor_address(cx, sel) {
        Some(addr) => Ok(Some((Descriptor(cx.read_sys(addr, 8)?), addr))),
        None => Ok(None),
    }
}

/// Sets the accessed bit of a code/data descriptor, as the processor does on load.
pub fn mark_accessed(cx: &mut Ctx<'_>, desc: Descriptor, addr: u64) -> Result<(), Fault> {
    if desc.kind() & code_data::ACCESSED == 0 {
        let byte = ((desc.0 >> 40) as u8 | code_data::ACCESSED as u8) as u64;
        cx.write_sys(addr.wrapping_add(5), 1, byte)?;
    }
    Ok(())
}

/// Whether the CPU runs in protected mode outside virtual-8086 mode.
pub fn protected(cx: &Ctx<'_>) -> bool {
    cx.cpu.cr0 & cr0::PE != 0 && !cx.cpu.rflags.control(rflags::VM)
}

/// A real-mode (or virtual-8086) segment load: base = selector * 16, the hidden limit and
/// attributes stay as they are (which is what lets "unreal mode" work).
pub fn load_real(cx: &mut Ctx<'_>, seg: SegReg, sel: u16) {
    let mut s = cx.cpu.seg[seg];
    s.selector = sel;
    s.base = (sel as u64) << 4;
    if cx.cpu.rflags.control(rflags::VM) {
        s = Segment {
            selector: sel,
            base: (sel as u64) << 4,
            limit: 0xFFFF,
            attr: 0xF3,
        };
    }
    cx.cpu.seg.set(seg, s);
}

/// Loads DS, ES, FS, GS or SS (MOV, POP, LDS/LES/LFS/LGS/LSS) with protected-mode checks.
pub fn load_data_segment(cx: &mut Ctx<'_>, seg: SegReg, sel: u16) -> Result<(), Fault> {
    if !protected(cx) {
        load_real(cx, seg, sel);
        return Ok(());
    }
    let cpl = cx.cpu.cpl();
    let long = cx.cpu.code_bitness() == 64;
    let gp = |code: u32| Fault::Exception(Exception::general_protection(code));
    if sel & !selector::RPL == 0 {
        // A null selector: allowed for data segments (using them faults later), and for
        // SS only in 64-bit mode below CPL 3.
        if seg == SegReg::Ss && !(long && cpl < 3 && (sel & 3) as u8 == cpl) {
            return Err(gp(0));
        }
        cx.cpu.seg.set(
            seg,
            Segment {
                selector: sel,
                ..Segment::default()
            },
        );
        return Ok(());
    }
    let (desc, addr) = read_descriptor(cx, sel)?.ok_or_else(|| gp(selector_error(sel)))?;
    let rpl = (sel & selector::RPL) as u8;
    if seg == SegReg::Ss {
        if rpl != cpl || !desc.is_writable_data() || desc.dpl() != cpl {
            return Err(gp(selector_error(sel)));
        }
        if !desc.present() {
            return Err(Exception::stack_fault(selector_error(sel)).into());
        }
    } else {
        if !desc.is_readable() {
            return Err(gp(selector_error(sel)));
        }
        if !desc.is_conforming() && desc.dpl() < cpl.max(rpl) {
            return Err(gp(selector_error(sel)));
        }
        if !desc.present() {
            return Err(Exception::not_present(selector_error(sel)).into());
        }
    }
    mark_accessed(cx, desc, addr)?;
    cx.cpu.seg.set(seg, desc.segment(sel));
    Ok(())
}

/// Reads and checks the descriptor of a code segment a control transfer goes to; errors
/// carry `ext` (1 for hardware events) in their error codes.
pub fn code_descriptor(cx: &mut Ctx<'_>, sel: u16, ext: u32) -> Result<(Descriptor, u64), Fault> {
    let gp = |code: u32| Fault::Exception(Exception::general_protection(code));
    if sel & !selector::RPL == 0 {
        return Err(gp(ext));
    }
    let (desc, addr) = read_descriptor(cx, sel)?.ok_or_else(|| gp(selector_error(sel) | ext))?;
    if !desc.is_code() {
        return Err(gp(selector_error(sel) | ext));
    }
    Ok((desc, addr))
}

/// The SS:ESP (or RSP) of ring `dpl` from the current TSS: 32-bit TSS holds ESPn at
/// 4 + 8n and SSn at 8 + 8n; a 64-bit TSS holds RSPn at 4 + 8n.
pub fn tss_stack(cx: &mut Ctx<'_>, dpl: u8, ext: u32) -> Result<(u16, u64), Fault> {
    let tr = cx.cpu.tr;
    let ts = |code: u32| Fault::Exception(Exception::invalid_tss(code));
    let trerr = selector_error(tr.selector) | ext;
    let long = cx.cpu.efer & crate::cpu::efer::LMA != 0;
    let kind = tr.attr & 0xF;
    if tr.attr & Segment::PRESENT == 0 {
        return Err(ts(trerr));
    }
    if long {
        let off = 4 + 8 * dpl as u64;
        if off + 7 > tr.limit as u64 {
            return Err(ts(trerr));
        }
        let rsp = cx.read_sys(tr.base.wrapping_add(off), 8)?;
        return Ok((dpl as u16, rsp));
    }
    if kind == system_type::TSS16_AVAILABLE || kind == system_type::TSS16_BUSY {
        let off = 2 + 4 * dpl as u64;
        if off + 3 > tr.limit as u64 {
            return Err(ts(trerr));
        }
        let sp = cx.read_sys(tr.base.wrapping_add(off), 2)?;
        let ss = cx.read_sys(tr.base.wrapping_add(off + 2), 2)? as u16;
        return Ok((ss, sp));
    }
    let off = 4 + 8 * dpl as u64;
    if off + 5 > tr.limit as u64 {
        return Err(ts(trerr));
    }
    let esp = cx.read_sys(tr.base.wrapping_add(off), 4)?;
    let ss = cx.read_sys(tr.base.wrapping_add(off + 4), 2)? as u16;
    Ok((ss, esp))
}

/// Checks the stack segment a privilege change switches to (from the TSS or a return
/// frame); `ts_vector` says whether problems are #TS (entering) or #GP (returning).
pub fn stack_descriptor(
    cx: &mut Ctx<'_>,
    sel: u16,
    new_cpl: u8,
    fault_vector: u8,
    ext: u32,
) -> Result<Segment, Fault> {
    let fault = |code: u32| {
        Fault::Exception(Exception {
            vector: fault_vector,
            error_code: Some(code),
        })
    };
    if sel & !selector::RPL == 0 {
        return Err(fault(ext));
    }
    let (desc, addr) = read_descriptor(cx, sel)?.ok_or_else(|| fault(selector_error(sel) | ext))?;
    if (sel & selector::RPL) as u8 != new_cpl || !desc.is_writable_data() || desc.dpl() != new_cpl {
        return Err(fault(selector_error(sel) | ext));
    }
    if !desc.present() {
        return Err(Exception::stack_fault(selector_error(sel) | ext).into());
    }
    mark_accessed(cx, desc, addr)?;
    Ok(desc.segment(sel))
}

/// The SS a long-mode transfer to an inner ring (and a 64-bit return within rings 0-2)
/// loads: a null selector carrying the new CPL as its RPL.
pub fn null_stack(cpl: u8) -> Segment {
    Segment {
        selector: cpl as u16,
        ..Segment::default()
    }
}

/// Empties DS, ES, FS and GS when a return to an outer ring (far RET, IRET) leaves them
/// naming data or non-conforming code more privileged than the new CPL, so the outer ring
/// cannot keep using the inner ring's segments.
pub fn clear_inaccessible_data_segments(cx: &mut Ctx<'_>, cpl: u8) {
    for seg in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
        let s = &cx.cpu.seg[seg];
        let kind = s.attr & 0xF;
        let conforming_code = kind & code_data::CODE != 0 && kind & code_data::CONFORMING != 0;
        if s.attr & Segment::CODE_DATA != 0 && !conforming_code && s.dpl() < cpl {
            cx.cpu.seg.set(seg, Segment::default());
        }
    }
}

/// A stack a control transfer pushes to or pops from before it commits anything: the
/// CPU's stack pointer only changes in [`Stack::commit`], so a fault half-way leaves
/// the registers as they were (memory already written stays written, as on hardware).
/// Every push and pop is checked against the stack segment's limit (or, in 64-bit mode,
/// for a canonical address), raising #SS with the error code [`Stack::with_error`] set.
#[derive(Debug, Clone, Copy)]
pub struct Stack {
    /// The stack segment.
    pub seg: Segment,
    /// The stack pointer, within `mask`.
    sp: u64,
    /// SP, ESP or RSP: what the stack pointer wraps at.
    mask: u64,
    /// Register bits above `mask`: a 16-bit stack leaves the top of ESP alone.
    high: u64,
    /// 64-bit mode: the stack is flat whatever SS says.
    flat: bool,
    /// The error code of the #SS an access beyond the stack raises: 0 on the stack in
    /// use, the new SS selector on the stack a privilege change switches to (the SDM's
    /// interrupt and CALL pseudo-code), with EXT for events the program did not cause.
    error: u32,
}

impl Stack {
    /// The stack of SS:RSP with the width SS.B (or 64-bit mode) gives it; a limit
    /// violation raises #SS(0) unless [`Stack::with_error`] says otherwise.
    pub fn new(seg: Segment, rsp: u64, long: bool) -> Self {
        let width = if long {
            8
        } else if seg.attr & Segment::DB != 0 {
            4
        } else {
            2
        };
        let mask = size_mask(width);
        Stack {
            seg,
            sp: rsp & mask,
            mask,
            high: rsp & !mask,
            flat: long,
            error: 0,
        }
    }

    /// The stack the CPU is using.
    pub fn current(cx: &Ctx<'_>) -> Self {
        let long = cx.cpu.code_bitness() == 64;
        Self::new(cx.cpu.seg[SegReg::Ss], cx.cpu.gpr[4], long)
    }

    /// The same stack, raising #SS(`code`) on a limit violation.
    pub fn with_error(self, code: u32) -> Self {
        Stack {
            error: code,
            ..self
        }
    }

    /// The checked address of `size` bytes at `sp`.
    fn addr(&self, cx: &Ctx<'_>, sp: u64, size: u8, access: Access) -> Result<Addr, Fault> {
        let len = u32::from(size);
        let addr = if self.flat {
            segaccess::long_addr(0, sp, len)
        } else {
            let checked = segaccess::needs_checks(&self.seg);
            let protected = cx.cpu.cr0 & cr0::PE != 0;
            segaccess::legacy_addr(&self.seg, checked, sp, len, access, protected)
        };
        addr.ok_or(Exception::stack_fault(self.error).into())
    }

    /// Pushes the low `size` bytes of `v` with the access rights of ring `cpl` (a
    /// transfer to an inner ring writes its new stack with that ring's rights).
    pub fn push(&mut self, cx: &mut Ctx<'_>, size: u8, v: u64, cpl: u8) -> Result<(), Fault> {
        let sp = self.sp.wrapping_sub(size as u64) & self.mask;
        let at = self.addr(cx, sp, size, Access::Write)?;
        cx.write_as_cpl(at, size, v, cpl)?;
        self.sp = sp;
        Ok(())
    }

    /// Pops `size` bytes with the current CPL's rights.
    pub fn pop(&mut self, cx: &mut Ctx<'_>, size: u8) -> Result<u64, Fault> {
        let at = self.addr(cx, self.sp, size, Access::Read)?;
        let v = cx.read(at, size)?;
        self.release(size as u64);
        Ok(v)
    }

    /// Drops `n` bytes (the parameters RET imm16 releases).
    pub fn release(&mut self, n: u64) {
        self.sp = self.sp.wrapping_add(n) & self.mask;
    }

    /// The whole stack-pointer register value.
    pub fn rsp(&self) -> u64 {
        self.high | self.sp
    }

    /// Makes this the CPU's stack: SS and RSP.
    pub fn commit(&self, cx: &mut Ctx<'_>) {
        cx.cpu.seg.set(SegReg::Ss, self.seg);
        cx.cpu.gpr[4] = self.rsp();
    }
}

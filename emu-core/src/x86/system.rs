//! System instructions: the descriptor-table registers (LGDT LIDT SGDT SIDT LLDT SLDT
//! LTR STR), selector probes (LAR LSL VERR VERW ARPL), control and debug registers
//! (MOV CRn/DRn, CLTS LMSW SMSW), the TLB (INVLPG), model-specific registers (RDMSR
//! WRMSR, SWAPGS), RDTSCP RDPMC WBINVD INVD — and the privilege checks other families
//! share ([`require_cpl0`], [`iopl_allows`]).
//!
//! Whatever changes how code is decoded or translated (CR0, CR3, CR4, EFER, descriptor
//! tables, DR7) ends the block, so the next instruction is looked up afresh.

use super::ctx::seg_of;
use super::debugreg;
use super::mmu::{is_canonical, Access, MAXPHYADDR};
use super::processor::{edx_eax, read_tsc, set_edx_eax, tsc};
use super::segment::{self, read_descriptor, selector, selector_error, system_type, Descriptor};
use super::{Ctx, Fault, Handler};
use crate::cpu::{cr0, cr4, efer, msr, rflags, DescriptorTable, SegReg, Segment};
use crate::exception::Exception;
use crate::exit::VmExit;
use iced_x86::{Instruction, Mnemonic, Register};

/// With a 16-bit operand size LGDT and LIDT load a 24-bit base.
const BASE24: u64 = 0xFF_FFFF;
/// In long mode, LDT and TSS descriptors take 16 bytes.
const SYSTEM_DESCRIPTOR64_SIZE: u64 = 16;
/// The type and S fields of a 16-byte descriptor's upper half, which must be zero.
const UPPER_TYPE: u64 = 0x1F << 40;
/// Offset of the type/DPL/P byte in a descriptor.
const ACCESS_BYTE: u64 = 5;
/// The type bit that marks a TSS busy (available 9 -> busy 11, 16-bit 1 -> 3).
const TSS_BUSY_BIT: u16 = system_type::TSS_BUSY ^ system_type::TSS_AVAILABLE;
/// The descriptor bits LAR returns: type, S, DPL, P (bits 8-15 of the high dword) and
/// AVL, L, D/B, G (bits 20-23).
const ACCESS_RIGHTS: u64 = 0x00F0_FF00;
/// The CR0 bits LMSW loads (it can set PE but not clear it).
const MSW_BITS: u64 = cr0::PE | cr0::MP | cr0::EM | cr0::TS;
/// CR8 holds a 4-bit priority class; the other bits are reserved.
const CR8_TPR: u64 = 0xF;
/// Where IA32_APIC_BASE says the local APIC lives (the architectural default).
const APIC_DEFAULT_BASE: u64 = 0xFEE0_0000;
/// IA32_APIC_BASE.BSP: this is the bootstrap processor.
const APIC_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE as Popek reports it: the default base, BSP, and the enable bit clear,
/// since there is no local APIC.
const APIC_BASE_VALUE: u64 = APIC_DEFAULT_BASE | APIC_BSP;
/// DR4 and DR5 are the 386's names for DR6 and DR7.
const DR4: usize = 4;
/// See [`DR4`].
const DR5: usize = 5;

/// System descriptor types LAR accepts outside long mode.
const LAR_TYPES: [u16; 8] = [
    system_type::TSS16_AVAILABLE,
    system_type::LDT,
    system_type::TSS16_BUSY,
    system_type::CALL_GATE16,
    system_type::TASK_GATE,
    system_type::TSS_AVAILABLE,
    system_type::TSS_BUSY,
    system_type::CALL_GATE,
];
/// System descriptor types LAR accepts in long mode (no 16-bit types, no task gates).
const LAR_TYPES_LONG: [u16; 4] = [
    system_type::LDT,
    system_type::TSS_AVAILABLE,
    system_type::TSS_BUSY,
    system_type::CALL_GATE,
];
/// System descriptor types LSL accepts outside long mode (those with a limit).
const LSL_TYPES: [u16; 5] = [
    system_type::TSS16_AVAILABLE,
    system_type::LDT,
    system_type::TSS16_BUSY,
    system_type::TSS_AVAILABLE,
    system_type::TSS_BUSY,
];
/// System descriptor types LSL accepts in long mode.
const LSL_TYPES_LONG: [u16; 3] = [
    system_type::LDT,
    system_type::TSS_AVAILABLE,
    system_type::TSS_BUSY,
];

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Lgdt => |cx: &mut Ctx<'_>, ins: &Instruction| {
            cx.cpu.gdtr = read_table_operand(cx, ins)?;
            cx.end_block = true;
            Ok(())
        },
        Mnemonic::Lidt => |cx: &mut Ctx<'_>, ins: &Instruction| {
            cx.cpu.idtr = read_table_operand(cx, ins)?;
            cx.end_block = true;
            Ok(())
        },
        Mnemonic::Sgdt => |cx: &mut Ctx<'_>, ins: &Instruction| {
            let table = cx.cpu.gdtr;
            write_table_operand(cx, ins, table)
        },
        Mnemonic::Sidt => |cx: &mut Ctx<'_>, ins: &Instruction| {
            let table = cx.cpu.idtr;
            write_table_operand(cx, ins, table)
        },
        Mnemonic::Lldt => lldt,
        Mnemonic::Ltr => ltr,
        Mnemonic::Sldt => |cx: &mut Ctx<'_>, ins: &Instruction| {
            require_protected(cx)?;
            let sel = cx.cpu.ldtr.selector;
            cx.set_operand(ins, 0, sel.into())
        },
        Mnemonic::Str => |cx: &mut Ctx<'_>, ins: &Instruction| {
            require_protected(cx)?;
            let sel = cx.cpu.tr.selector;
            cx.set_operand(ins, 0, sel.into())
        },
        Mnemonic::Lar => lar,
        Mnemonic::Lsl => lsl,
        Mnemonic::Verr => {
            |cx: &mut Ctx<'_>, ins: &Instruction| verify(cx, ins, Descriptor::is_readable)
        }
        Mnemonic::Verw => {
            |cx: &mut Ctx<'_>, ins: &Instruction| verify(cx, ins, Descriptor::is_writable_data)
        }
        // In 64-bit mode the opcode is MOVSXD, which iced-x86 decodes as such.
        Mnemonic::Arpl => arpl,
        Mnemonic::Clts => |cx: &mut Ctx<'_>, _: &Instruction| {
            require_cpl0(cx)?;
            cr_exit(cx, Register::CR0, true);
            write_cr0(cx, cx.cpu.cr0 & !cr0::TS)
        },
        Mnemonic::Lmsw => lmsw,
        Mnemonic::Smsw => |cx: &mut Ctx<'_>, ins: &Instruction| {
            let v = cx.cpu.cr0;
            cx.set_operand(ins, 0, v)
        },
        Mnemonic::Mov if ins.op0_register().is_cr() => mov_to_cr,
        Mnemonic::Mov if ins.op1_register().is_cr() => mov_from_cr,
        Mnemonic::Mov if ins.op0_register().is_dr() => mov_to_dr,
        Mnemonic::Mov if ins.op1_register().is_dr() => mov_from_dr,
        Mnemonic::Invlpg => |cx: &mut Ctx<'_>, ins: &Instruction| {
            require_cpl0(cx)?;
            // No access, so no segment checks: only the linear address counts.
            let lin = cx.linear(seg_of(ins.memory_segment()), cx.effective_address(ins));
            cx.cpu.tlb.flush_page(lin);
            // The page being executed may have been remapped.
            cx.end_block = true;
            Ok(())
        },
        Mnemonic::Rdmsr => rdmsr,
        Mnemonic::Wrmsr => wrmsr,
        Mnemonic::Rdtscp => rdtscp,
        // Popek has no performance counters: every counter number is invalid.
        Mnemonic::Rdpmc => |_: &mut Ctx<'_>, _: &Instruction| Err(gp(0)),
        // There are no caches to write back or drop; only the privilege check remains.
        Mnemonic::Wbinvd | Mnemonic::Invd => |cx: &mut Ctx<'_>, _: &Instruction| require_cpl0(cx),
        // iced-x86 decodes SWAPGS in 64-bit mode only; elsewhere it is #UD.
        Mnemonic::Swapgs => |cx: &mut Ctx<'_>, _: &Instruction| {
            require_cpl0(cx)?;
            let gs = cx.cpu.seg[SegReg::Gs].base;
            let kernel_gs = cx.cpu.msr.kernel_gs_base;
            cx.cpu.seg.set_base(SegReg::Gs, kernel_gs);
            cx.cpu.msr.kernel_gs_base = gs;
            Ok(())
        },
        _ => return None,
    })
}

/// #GP with an error code.
fn gp(code: u32) -> Fault {
    Exception::general_protection(code).into()
}

/// Privileged instructions run only at CPL 0 (real mode is CPL 0); elsewhere #GP(0).
pub fn require_cpl0(cx: &Ctx<'_>) -> Result<(), Fault> {
    if cx.cpu.cpl() == 0 {
        Ok(())
    } else {
        Err(gp(0))
    }
}

/// Whether the CPL may execute IOPL-sensitive instructions (CLI, STI, IN, OUT) and
/// change IF with POPF: CPL <= IOPL, always true in real mode. Virtual-8086 mode, with
/// its own rules, is not implemented.
pub fn iopl_allows(cx: &Ctx<'_>) -> Result<bool, Fault> {
    if cx.cpu.rflags.control(rflags::VM) {
        return Err(Fault::Unsupported);
    }
    Ok(cx.cpu.cpl() <= cx.cpu.rflags.iopl())
}

/// The selector instructions exist only in protected mode: #UD in real mode (and in
/// virtual-8086 mode).
fn require_protected(cx: &Ctx<'_>) -> Result<(), Fault> {
    if segment::protected(cx) {
        Ok(())
    } else {
        Err(Exception::invalid_opcode().into())
    }
}

/// `v` if canonical, else #GP(0) (MSRs and descriptor-table bases holding addresses).
fn canonical(v: u64) -> Result<u64, Fault> {
    if is_canonical(v) {
        Ok(v)
    } else {
        Err(gp(0))
    }
}

/// Sets ZF to `on` (LAR, LSL, VERR, VERW and ARPL report through it).
fn set_zf(cx: &mut Ctx<'_>, on: bool) {
    let zf = rflags::ZF;
    cx.cpu.rflags.update(zf, if on { zf } else { 0 });
}

// ---- descriptor-table registers ----

/// The operand of LGDT/LIDT: a 16-bit limit, then a 32-bit base (24 bits with a 16-bit
/// operand size) or, in 64-bit mode, a 64-bit one.
fn read_table_operand(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<DescriptorTable, Fault> {
    require_cpl0(cx)?;
    let long = cx.cpu.code_bitness() == 64;
    let base_size = if long { 8 } else { 4 };
    let at = cx.mem_addr(ins, 2 + base_size, Access::Read)?;
    let limit = cx.read(at, 2)? as u16;
    let base = cx.read(at.offset(2), base_size as u8)?;
    let base = match ins.code().op_code().operand_size() {
        16 => base & BASE24,
        _ if long => canonical(base)?,
        _ => base,
    };
    Ok(DescriptorTable { base, limit })
}

/// SGDT/SIDT: the limit, then the base (32 bits, 64 in 64-bit mode), written at once.
fn write_table_operand(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    table: DescriptorTable,
) -> Result<(), Fault> {
    let base_size = if cx.cpu.code_bitness() == 64 { 8 } else { 4 };
    let at = cx.mem_addr(ins, 2 + base_size as u32, Access::Write)?;
    let mut bytes = [0u8; 10];
    bytes[..2].copy_from_slice(&table.limit.to_le_bytes());
    bytes[2..].copy_from_slice(&table.base.to_le_bytes());
    cx.write_bytes(at, &bytes[..2 + base_size])
}

/// The LDT or TSS descriptor `sel` names for LLDT or LTR, its full base and where it
/// is. These live only in the GDT; in long mode they take 16 bytes, the upper half
/// holding base bits 63:32 and a zero type.
fn gdt_system_descriptor(cx: &mut Ctx<'_>, sel: u16) -> Result<(Descriptor, u64, u64), Fault> {
    let refused = gp(selector_error(sel));
    if sel & selector::TI != 0 {
        return Err(refused);
    }
    let (desc, addr) = read_descriptor(cx, sel)?.ok_or(refused)?;
    if desc.is_code_data() {
        return Err(refused);
    }
    if cx.cpu.efer & efer::LMA == 0 {
        return Ok((desc, desc.base(), addr));
    }
    let offset = addr.wrapping_sub(cx.cpu.gdtr.base);
    if offset + SYSTEM_DESCRIPTOR64_SIZE - 1 > cx.cpu.gdtr.limit.into() {
        return Err(refused);
    }
    let upper = cx.read_sys(addr.wrapping_add(SYSTEM_DESCRIPTOR64_SIZE / 2), 8)?;
    let base = desc.base() | (upper & 0xFFFF_FFFF) << 32;
    if upper & UPPER_TYPE != 0 || !is_canonical(base) {
        return Err(refused);
    }
    Ok((desc, base, addr))
}

fn lldt(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    require_protected(cx)?;
    require_cpl0(cx)?;
    let sel = cx.operand(ins, 0)? as u16;
    cx.end_block = true;
    if sel & !selector::RPL == 0 {
        // A null selector leaves no LDT: selectors with TI = 1 fault from now on.
        cx.cpu.ldtr = Segment {
            selector: sel,
            ..Segment::default()
        };
        return Ok(());
    }
    let (desc, base, _) = gdt_system_descriptor(cx, sel)?;
    if desc.kind() != system_type::LDT {
        return Err(gp(selector_error(sel)));
    }
    if !desc.present() {
        return Err(Exception::not_present(selector_error(sel)).into());
    }
    cx.cpu.ldtr = Segment {
        selector: sel,
        base,
        limit: desc.limit(),
        attr: desc.attr(),
    };
    Ok(())
}

fn ltr(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    require_protected(cx)?;
    require_cpl0(cx)?;
    let sel = cx.operand(ins, 0)? as u16;
    if sel & !selector::RPL == 0 {
        return Err(gp(0));
    }
    let (desc, base, addr) = gdt_system_descriptor(cx, sel)?;
    let long = cx.cpu.efer & efer::LMA != 0;
    let available = desc.kind() == system_type::TSS_AVAILABLE
        || (!long && desc.kind() == system_type::TSS16_AVAILABLE);
    if !available {
        return Err(gp(selector_error(sel)));
    }
    if !desc.present() {
        return Err(Exception::not_present(selector_error(sel)).into());
    }
    // The busy bit in the GDT keeps the task from being entered again while it runs.
    let attr = desc.attr() | TSS_BUSY_BIT;
    cx.write_sys(addr.wrapping_add(ACCESS_BYTE), 1, attr.into())?;
    cx.cpu.tr = Segment {
        selector: sel,
        base,
        limit: desc.limit(),
        attr,
    };
    cx.end_block = true;
    Ok(())
}

// ---- selector probes ----

/// The descriptor of `sel` if the program may inspect it at its CPL and the selector's
/// RPL (conforming code segments always). A null selector or one beyond its table gives
/// None: the probes report through ZF and never fault on a bad selector.
fn visible_descriptor(cx: &mut Ctx<'_>, sel: u16) -> Result<Option<Descriptor>, Fault> {
    if sel & !selector::RPL == 0 {
        return Ok(None);
    }
    let Some((desc, _)) = read_descriptor(cx, sel)? else {
        return Ok(None);
    };
    let rpl = (sel & selector::RPL) as u8;
    let privileged = desc.dpl() >= cx.cpu.cpl().max(rpl);
    Ok((desc.is_conforming() || privileged).then_some(desc))
}

/// LAR and LSL: the descriptor of the selector in operand 1 if it is visible and a code
/// or data segment or one of the system `types` of this mode; ZF says whether it was.
fn probe(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    types: &[u16],
    long_types: &[u16],
) -> Result<Option<Descriptor>, Fault> {
    require_protected(cx)?;
    let sel = cx.operand(ins, 1)? as u16;
    let types = if cx.cpu.efer & efer::LMA != 0 {
        long_types
    } else {
        types
    };
    let desc =
        visible_descriptor(cx, sel)?.filter(|d| d.is_code_data() || types.contains(&d.kind()));
    set_zf(cx, desc.is_some());
    Ok(desc)
}

fn lar(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    if let Some(desc) = probe(cx, ins, &LAR_TYPES, &LAR_TYPES_LONG)? {
        cx.set_reg(ins.op0_register(), (desc.0 >> 32) & ACCESS_RIGHTS);
    }
    Ok(())
}

fn lsl(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    if let Some(desc) = probe(cx, ins, &LSL_TYPES, &LSL_TYPES_LONG)? {
        cx.set_reg(ins.op0_register(), desc.limit().into());
    }
    Ok(())
}

/// VERR and VERW: ZF says whether the segment is visible and allows the access.
fn verify(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    allows: fn(Descriptor) -> bool,
) -> Result<(), Fault> {
    require_protected(cx)?;
    let sel = cx.operand(ins, 0)? as u16;
    let ok = visible_descriptor(cx, sel)?.is_some_and(allows);
    set_zf(cx, ok);
    Ok(())
}

/// ARPL: raises the destination selector's RPL to the source's, ZF saying whether it
/// had to (an OS lowering the privilege of a selector a caller passed in).
fn arpl(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    require_protected(cx)?;
    let dst = match cx.locate(ins, 0, 2, Access::Write)? {
        // iced-x86 names the 32-bit register; the operation is on its low word.
        super::ctx::Loc::Reg(r) => super::ctx::Loc::Reg(Register::AX + r.number() as u32),
        mem => mem,
    };
    let d = cx.load(dst, 2)?;
    let rpl = cx.reg(ins.op1_register()) & u64::from(selector::RPL);
    let raise = d & u64::from(selector::RPL) < rpl;
    if raise {
        cx.store(dst, 2, (d & !u64::from(selector::RPL)) | rpl)?;
    }
    set_zf(cx, raise);
    Ok(())
}

// ---- control registers ----

/// Loads CR0 (MOV, LMSW, CLTS), checking the combination, entering or leaving long mode
/// as paging turns on or off with EFER.LME, and flushing the TLB when translation
/// changes.
fn write_cr0(cx: &mut Ctx<'_>, v: u64) -> Result<(), Fault> {
    if v >> 32 != 0 {
        return Err(gp(0));
    }
    let old = cx.cpu.cr0;
    let new = (v & cr0::WRITABLE) | cr0::ET;
    if (new & cr0::PG != 0 && new & cr0::PE == 0) || (new & cr0::NW != 0 && new & cr0::CD == 0) {
        return Err(gp(0));
    }
    let mut efer = cx.cpu.efer;
    let paging_on = new & cr0::PG != 0 && old & cr0::PG == 0;
    let paging_off = new & cr0::PG == 0 && old & cr0::PG != 0;
    if paging_on && efer & efer::LME != 0 {
        // Long mode needs PAE tables and must start from legacy (not 64-bit) code.
        let cs_long = cx.cpu.seg[SegReg::Cs].attr & Segment::LONG != 0;
        if cx.cpu.cr4 & cr4::PAE == 0 || cs_long {
            return Err(gp(0));
        }
        efer |= efer::LMA;
    }
    if paging_off && efer & efer::LMA != 0 {
        // Long mode is left from compatibility mode only.
        if cx.cpu.code_bitness() == 64 {
            return Err(gp(0));
        }
        efer &= !efer::LMA;
    }
    cx.cpu.cr0 = new;
    cx.cpu.efer = efer;
    if (old ^ new) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
        cx.cpu.tlb.flush_all();
    }
    cx.end_block = true;
    Ok(())
}

fn write_cr3(cx: &mut Ctx<'_>, v: u64) -> Result<(), Fault> {
    // In long mode the bits above the physical address width are reserved.
    if cx.cpu.efer & efer::LMA != 0 && v >> MAXPHYADDR != 0 {
        return Err(gp(0));
    }
    cx.cpu.cr3 = v;
    cx.cpu.tlb.flush_non_global();
    Ok(())
}

fn write_cr4(cx: &mut Ctx<'_>, v: u64) -> Result<(), Fault> {
    if v & !cr4::SUPPORTED != 0 {
        return Err(gp(0));
    }
    // Long mode cannot run without PAE tables.
    if cx.cpu.efer & efer::LMA != 0 && v & cr4::PAE == 0 {
        return Err(gp(0));
    }
    let old = cx.cpu.cr4;
    cx.cpu.cr4 = v;
    if (old ^ v) & (cr4::PGE | cr4::PAE | cr4::PSE) != 0 {
        cx.cpu.tlb.flush_all();
    }
    Ok(())
}

fn lmsw(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    require_cpl0(cx)?;
    // VT-x reports the source operand with the exit: a fault reading it comes first.
    let msw = cx.operand(ins, 0)? & MSW_BITS;
    cr_exit(cx, Register::CR0, true);
    let cr0 = cx.cpu.cr0;
    // LMSW can enter protected mode but not leave it.
    write_cr0(cx, (cr0 & !MSW_BITS) | msw | (cr0 & cr0::PE))
}

/// Under hardware assist, the VM exit VT-x takes on an access to `cr`. It comes after
/// the privilege check (a #GP at CPL > 0 has priority) and before the access, which the
/// interpreter then completes for the VMM. CR2 accesses do not exit.
fn cr_exit(cx: &mut Ctx<'_>, cr: Register, write: bool) {
    if matches!(
        cr,
        Register::CR0 | Register::CR3 | Register::CR4 | Register::CR8
    ) {
        let cr = cr.number() as u8;
        cx.assist_exit(|| VmExit::CrAccess { cr, write });
    }
}

fn mov_to_cr(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    require_cpl0(cx)?;
    cr_exit(cx, ins.op0_register(), true);
    let v = cx.reg(ins.op1_register());
    match ins.op0_register() {
        Register::CR0 => write_cr0(cx, v)?,
        Register::CR2 => cx.cpu.cr2 = v,
        Register::CR3 => write_cr3(cx, v)?,
        Register::CR4 => write_cr4(cx, v)?,
        Register::CR8 if v & !CR8_TPR == 0 => cx.cpu.cr8 = v,
        Register::CR8 => return Err(gp(0)),
        _ => return Err(Exception::invalid_opcode().into()),
    }
    cx.end_block = true;
    Ok(())
}

fn mov_from_cr(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let v = match ins.op1_register() {
        Register::CR0 => cx.cpu.cr0,
        Register::CR2 => cx.cpu.cr2,
        Register::CR3 => cx.cpu.cr3,
        Register::CR4 => cx.cpu.cr4,
        Register::CR8 => cx.cpu.cr8,
        _ => return Err(Exception::invalid_opcode().into()),
    };
    require_cpl0(cx)?;
    cr_exit(cx, ins.op1_register(), false);
    cx.set_reg(ins.op0_register(), v);
    Ok(())
}

// ---- debug registers ----

/// The index in [`super::Vcpu::dr`] of the register a MOV DRn names: DR4 and DR5 alias
/// DR6 and DR7 unless CR4.DE makes them #UD; DR8-DR15 do not exist.
fn debug_register(cx: &Ctx<'_>, r: Register) -> Result<usize, Fault> {
    let aliased = cx.cpu.cr4 & cr4::DE == 0;
    match r.number() {
        n @ (0..=3 | debugreg::DR6 | debugreg::DR7) => Ok(n),
        DR4 if aliased => Ok(debugreg::DR6),
        DR5 if aliased => Ok(debugreg::DR7),
        _ => Err(Exception::invalid_opcode().into()),
    }
}

fn mov_to_dr(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let n = debug_register(cx, ins.op0_register())?;
    require_cpl0(cx)?;
    let v = cx.reg(ins.op1_register());
    // The upper halves of DR6 and DR7 are reserved.
    if n >= debugreg::DR6 && v >> 32 != 0 {
        return Err(gp(0));
    }
    cx.cpu.dr[n] = debugreg::fixed_bits(n, v);
    // DR7 may have armed or disarmed breakpoints: the run loop must look again.
    cx.end_block = true;
    Ok(())
}

fn mov_from_dr(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let n = debug_register(cx, ins.op1_register())?;
    require_cpl0(cx)?;
    let v = debugreg::fixed_bits(n, cx.cpu.dr[n]);
    cx.set_reg(ins.op0_register(), v);
    Ok(())
}

// ---- model-specific registers ----

/// Under hardware assist, the VM exit VT-x takes on RDMSR/WRMSR (Popek's model has no
/// MSR bitmaps: every access exits). The interpreter's MSR logic below then completes
/// the access: it plays the part of the VMM's MSR emulation.
fn msr_exit(cx: &mut Ctx<'_>, write: bool) {
    let index = cx.cpu.gpr[1] as u32;
    let value = if write { edx_eax(cx) } else { 0 };
    cx.assist_exit(|| VmExit::Msr {
        write,
        index,
        value,
    });
}

fn rdmsr(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    require_cpl0(cx)?;
    msr_exit(cx, false);
    let m = &cx.cpu.msr;
    let v = match cx.cpu.gpr[1] as u32 {
        msr::TSC => tsc(cx),
        msr::APIC_BASE => APIC_BASE_VALUE,
        msr::SYSENTER_CS => m.sysenter_cs,
        msr::SYSENTER_ESP => m.sysenter_esp,
        msr::SYSENTER_EIP => m.sysenter_eip,
        msr::EFER => cx.cpu.efer,
        msr::STAR => m.star,
        msr::LSTAR => m.lstar,
        msr::CSTAR => m.cstar,
        msr::SFMASK => m.fmask,
        msr::FS_BASE => cx.cpu.seg[SegReg::Fs].base,
        msr::GS_BASE => cx.cpu.seg[SegReg::Gs].base,
        msr::KERNEL_GS_BASE => m.kernel_gs_base,
        msr::TSC_AUX => m.tsc_aux,
        index if is_vmm_msr(index) => cx.vmm_msr(false, index, 0)?,
        _ => return Err(gp(0)),
    };
    set_edx_eax(cx, v);
    Ok(())
}

fn wrmsr(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    require_cpl0(cx)?;
    msr_exit(cx, true);
    let v = edx_eax(cx);
    match cx.cpu.gpr[1] as u32 {
        msr::EFER => write_efer(cx, v)?,
        msr::SYSENTER_CS => cx.cpu.msr.sysenter_cs = v,
        msr::SYSENTER_ESP => cx.cpu.msr.sysenter_esp = canonical(v)?,
        msr::SYSENTER_EIP => cx.cpu.msr.sysenter_eip = canonical(v)?,
        msr::STAR => cx.cpu.msr.star = v,
        msr::LSTAR => cx.cpu.msr.lstar = canonical(v)?,
        msr::CSTAR => cx.cpu.msr.cstar = canonical(v)?,
        // SFMASK and TSC_AUX are 32-bit registers: the upper halves are reserved.
        msr::SFMASK | msr::TSC_AUX if v >> 32 != 0 => return Err(gp(0)),
        msr::SFMASK => cx.cpu.msr.fmask = v,
        msr::TSC_AUX => cx.cpu.msr.tsc_aux = v,
        msr::FS_BASE => cx.cpu.seg.set_base(SegReg::Fs, canonical(v)?),
        msr::GS_BASE => cx.cpu.seg.set_base(SegReg::Gs, canonical(v)?),
        msr::KERNEL_GS_BASE => cx.cpu.msr.kernel_gs_base = canonical(v)?,
        // The counter is the instruction count, and there is no local APIC to move or
        // enable: these read fine but cannot be changed.
        msr::TSC | msr::APIC_BASE => return Err(Fault::Unsupported),
        index if is_vmm_msr(index) => {
            cx.vmm_msr(true, index, v)?;
        }
        _ => return Err(gp(0)),
    }
    cx.end_block = true;
    Ok(())
}

/// Whether the VMM implements MSR `index` itself (the para-virtualization interface).
fn is_vmm_msr(index: u32) -> bool {
    index == crate::pv::abi::MSR_HYPERCALL_PAGE
}

/// IA32_EFER: LMA is the processor's to set (written values are ignored), LME cannot
/// change while paging is on, unknown bits are reserved.
fn write_efer(cx: &mut Ctx<'_>, v: u64) -> Result<(), Fault> {
    let old = cx.cpu.efer;
    let paging = cx.cpu.cr0 & cr0::PG != 0;
    if v & !(efer::WRITABLE | efer::LMA) != 0 || (paging && (old ^ v) & efer::LME != 0) {
        return Err(gp(0));
    }
    let new = (v & efer::WRITABLE) | (old & efer::LMA);
    cx.cpu.efer = new;
    // The TLB remembers what NX forbade.
    if (old ^ new) & efer::NXE != 0 {
        cx.cpu.tlb.flush_all();
    }
    Ok(())
}

/// RDTSCP: RDTSC, plus IA32_TSC_AUX in ECX.
fn rdtscp(cx: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    let tsc = read_tsc(cx)?;
    set_edx_eax(cx, tsc);
    cx.cpu.gpr[1] = cx.cpu.msr.tsc_aux;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{system_type, ACCESS_RIGHTS};
    use crate::cpu::{cr0, cr4, efer, msr, SegReg, Segment};
    use crate::exception::vector;
    use crate::exit::StopReason;
    use crate::testkit::{
        busy_tss, kind, Asm, Desc, Machine, Trap, DATA, FREE_SLOT, GDT_BASE, KERNEL_CS, KERNEL_DS,
        RAX, RBX, RCX, RDX, TSS_SEL, USER_CS, USER_DS,
    };
    use iced_x86::code_asm::*;
    use iced_x86::{Code, Instruction, MemoryOperand};

    /// Runs `m` expecting a handler to catch `vector` with `code`.
    fn expect(mut m: Machine, vector: u8, code: Option<u32>) -> (Trap, Machine) {
        let trap = m.run_to_trap();
        assert_eq!((trap.vector, trap.error_code), (vector, code), "{trap:?}");
        (trap, m)
    }

    /// Runs `m` expecting #GP with this error code.
    fn expect_gp(m: Machine, code: u32) -> (Trap, Machine) {
        expect(m, vector::GP, Some(code))
    }

    #[test]
    fn lgdt_and_sgdt_in_each_operand_size() {
        let mut m = Machine::flat32(|a| {
            a.mov(eax, DATA as u32)?;
            a.lidt(ptr(eax))?;
            a.sidt(ptr(eax + 16))?;
            // LGDT with a 16-bit operand size (66 0F 01 /2) keeps 24 bits of the base.
            let mem = MemoryOperand::with_base(iced_x86::Register::EAX);
            a.add_instruction(Instruction::with1(Code::Lgdt_m1632_16, mem)?)?;
            a.sgdt(ptr(eax + 32))
        });
        m.poke(DATA, &[0x34, 0x12, 0x78, 0x56, 0x34, 0x12]);
        let st = m.run_to_halt().clone();
        assert_eq!((st.idtr.base, st.idtr.limit), (0x1234_5678, 0x1234));
        assert_eq!((st.gdtr.base, st.gdtr.limit), (0x34_5678, 0x1234));
        assert_eq!(m.peek(DATA + 16, 6), 0x1234_5678_1234);
        assert_eq!(m.peek(DATA + 32, 6), 0x0034_5678_1234);
    }

    #[test]
    fn lidt_and_sidt_in_64_bit_mode_use_a_64_bit_base() {
        let mut m = Machine::long(|a| {
            a.mov(rax, DATA)?;
            a.sidt(ptr(rax))?;
            a.mov(dword_ptr(rax + 6), 0xFFFF_8000u32)?;
            a.lidt(ptr(rax))?;
            a.sidt(ptr(rax + 16))
        });
        let st = m.run_to_halt().clone();
        assert_eq!(st.idtr.base >> 32, 0xFFFF_8000);
        assert_eq!(m.peek(DATA + 16 + 2, 8), st.idtr.base);
    }

    #[test]
    fn an_idt_at_the_top_of_the_address_space_wraps_instead_of_panicking() {
        let mut m = Machine::long(|a| {
            a.mov(rax, DATA)?;
            a.lidt(ptr(rax))?;
            a.ud2()
        });
        m.poke(DATA, &[0xFF, 0x0F]);
        m.poke_u64(DATA + 2, 0xFFFF_FFFF_FFFF_FFF0);
        // The gate addresses wrap around to low memory, which holds no valid gates:
        // #GP, #DF, then shutdown.
        assert!(matches!(m.run(), StopReason::Shutdown(Some(_))));
    }

    #[test]
    fn lgdt_refuses_a_non_canonical_base_and_cpl_3() {
        let mut m = Machine::long(|a| {
            a.mov(rax, DATA)?;
            a.lgdt(ptr(rax))
        });
        m.poke_u64(DATA + 2, 0x0000_8000_0000_0000);
        expect_gp(m, 0);
        let user = Machine::protected(|a| {
            a.mov(eax, DATA as u32)?;
            a.lgdt(ptr(eax))
        })
        .user();
        let (trap, _) = expect_gp(user, 0);
        assert_eq!(trap.cs, USER_CS, "saved CS has RPL 3");
    }

    #[test]
    fn ltr_loads_tr_and_marks_the_tss_busy() {
        let mut m = Machine::protected(|a| {
            a.mov(ax, u32::from(FREE_SLOT))?;
            a.ltr(ax)?;
            a.str(ebx)
        });
        m.set_gdt_entry(
            FREE_SLOT,
            Desc::system(system_type::TSS_AVAILABLE, DATA, 0x67),
        );
        let st = m.run_to_halt().clone();
        assert_eq!(st.gpr[RBX], u64::from(FREE_SLOT));
        assert_eq!(
            (st.tr.selector, st.tr.base, st.tr.limit),
            (FREE_SLOT, DATA, 0x67)
        );
        assert_eq!(st.tr.attr & Segment::TYPE, system_type::TSS_BUSY);
        let busy = Desc::system(system_type::TSS_BUSY, DATA, 0x67);
        let entry = m.peek(GDT_BASE + u64::from(FREE_SLOT), 8);
        assert_eq!(entry, busy.encode());
    }

    #[test]
    fn ltr_refuses_a_busy_tss_and_a_null_selector() {
        let busy = Machine::protected(|a| {
            a.mov(ax, u32::from(TSS_SEL))?;
            a.ltr(ax)
        });
        expect_gp(busy, TSS_SEL.into());
        let null = Machine::protected(|a| {
            a.xor(eax, eax)?;
            a.ltr(ax)
        });
        expect_gp(null, 0);
    }

    #[test]
    fn ltr_in_long_mode_reads_a_16_byte_descriptor() {
        let mut m = Machine::long(|a| {
            a.mov(ax, u32::from(FREE_SLOT))?;
            a.ltr(ax)
        });
        let base = 0xFFFF_8000_0001_2000;
        m.set_gdt_entry64(
            FREE_SLOT,
            Desc::system(system_type::TSS_AVAILABLE, base, 0x67),
        );
        assert_eq!(m.run_to_halt().tr.base, base);
    }

    /// LDT index 1, TI = 1, RPL 0.
    const LDT_DATA: u16 = 0x8 | 0x4;

    #[test]
    fn lldt_loads_the_ldt_and_a_null_selector_unloads_it() {
        let mut m = Machine::protected(|a| {
            a.mov(ax, u32::from(FREE_SLOT))?;
            a.lldt(ax)?;
            a.mov(cx, u32::from(LDT_DATA))?;
            a.mov(es, cx)?;
            a.sldt(edx)?;
            a.xor(eax, eax)?;
            a.lldt(ax)?;
            a.mov(fs, cx)
        });
        m.set_gdt_entry(FREE_SLOT, Desc::system(system_type::LDT, DATA, 0xF));
        let mut data = Desc::data(0);
        data.base = 0x5000;
        m.poke_u64(DATA + 8, data.encode());
        let (trap, m) = expect_gp(m, LDT_DATA.into());
        let st = &m.state;
        assert_eq!(st.seg[SegReg::Es as usize].base, 0x5000);
        assert_eq!(st.gpr[RDX], u64::from(FREE_SLOT));
        assert_eq!(st.ldtr.attr & Segment::PRESENT, 0);
        assert_eq!(trap.cs, KERNEL_CS);
    }

    #[test]
    fn lldt_refuses_a_tss_and_an_absent_ldt() {
        let tss = Machine::protected(|a| {
            a.mov(ax, u32::from(TSS_SEL))?;
            a.lldt(ax)
        });
        expect_gp(tss, TSS_SEL.into());
        let mut absent = Machine::protected(|a| {
            a.mov(ax, u32::from(FREE_SLOT))?;
            a.lldt(ax)
        });
        let ldt = Desc::system(system_type::LDT, DATA, 0xF).absent();
        absent.set_gdt_entry(FREE_SLOT, ldt);
        expect(absent, vector::NP, Some(FREE_SLOT.into()));
    }

    /// Selectors the probe tests look at.
    const READ_ONLY: u16 = FREE_SLOT;
    const EXEC_ONLY: u16 = FREE_SLOT + 8;
    const CONFORMING: u16 = FREE_SLOT + 16;
    const GATE: u16 = FREE_SLOT + 24;
    const BEYOND_GDT: u16 = 0x400;

    fn probe_machine(asm: Asm) -> Machine {
        let mut m = Machine::protected(asm);
        m.set_gdt_entry(READ_ONLY, Desc::flat(kind::DATA_RO, 0));
        m.set_gdt_entry(EXEC_ONLY, Desc::flat(kind::CODE_XO | Segment::DB, 0));
        m.set_gdt_entry(
            CONFORMING,
            Desc::flat(kind::CODE_CONFORMING | Segment::DB, 0),
        );
        m.set_gdt_entry(GATE, Desc::system(system_type::INT_GATE, 0, 0));
        m
    }

    /// ZF after each probe, as the code stored it in bytes at DATA.
    fn zf_bytes(m: &Machine, n: usize) -> Vec<u64> {
        (0..n).map(|i| m.peek(DATA + i as u64, 1)).collect()
    }

    /// (selector, LAR rather than LSL)
    const LAR_LSL_PROBES: [(u16, bool); 6] = [
        (KERNEL_CS, true),
        (USER_DS, false),
        (TSS_SEL, true),
        (GATE, true),
        (BEYOND_GDT, true),
        (0, false),
    ];

    #[test]
    fn lar_and_lsl_report_rights_and_limits() {
        let mut m = probe_machine(|a| {
            for (i, (s, lar)) in LAR_LSL_PROBES.into_iter().enumerate() {
                a.mov(ecx, u32::from(s))?;
                a.mov(eax, 0xDEADu32)?;
                if lar {
                    a.lar(eax, ecx)?;
                } else {
                    a.lsl(eax, ecx)?;
                }
                a.setz(byte_ptr(DATA + i as u64))?;
                a.mov(dword_ptr(DATA + 0x100 + 4 * i as u64), eax)?;
            }
            Ok(())
        });
        m.run_to_halt();
        assert_eq!(zf_bytes(&m, LAR_LSL_PROBES.len()), [1, 1, 1, 0, 0, 0]);
        let result = |i: u64| m.peek(DATA + 0x100 + 4 * i, 4);
        assert_eq!(result(0), (Desc::code32(0).encode() >> 32) & ACCESS_RIGHTS);
        assert_eq!(result(1), 0xFFFF_FFFF, "LSL scales a page-granular limit");
        assert_eq!(result(2), (busy_tss().encode() >> 32) & ACCESS_RIGHTS);
        assert_eq!(
            result(3),
            0xDEAD,
            "a failed probe leaves the destination alone"
        );
    }

    /// (selector, VERR rather than VERW)
    const VERIFY_PROBES: [(u16, bool); 7] = [
        (KERNEL_DS, false),
        (READ_ONLY, true),
        (READ_ONLY, false),
        (EXEC_ONLY, true),
        (CONFORMING, true),
        (USER_DS, false),
        (KERNEL_DS, true),
    ];

    #[test]
    fn verr_and_verw_check_the_access_and_the_privilege() {
        fn code(a: &mut CodeAssembler) -> Result<(), IcedError> {
            for (i, (s, read)) in VERIFY_PROBES.into_iter().enumerate() {
                a.mov(cx, u32::from(s))?;
                if read {
                    a.verr(cx)?;
                } else {
                    a.verw(cx)?;
                }
                a.setz(byte_ptr(DATA + i as u64))?;
            }
            Ok(())
        }
        let mut m = probe_machine(code);
        m.run_to_halt();
        assert_eq!(zf_bytes(&m, VERIFY_PROBES.len()), [1, 1, 0, 0, 1, 1, 1]);
        // At CPL 3 only the DPL-3 segment and the conforming one are visible.
        let mut m = probe_machine(code).user();
        m.run_to_halt();
        assert_eq!(zf_bytes(&m, VERIFY_PROBES.len()), [0, 0, 0, 0, 1, 1, 0]);
    }

    #[test]
    fn selector_instructions_are_invalid_in_real_mode() {
        let mut m = Machine::flat32(|a| a.verr(cx));
        m.state.cr0 &= !cr0::PE;
        match m.run() {
            StopReason::Shutdown(Some((e, _))) => assert_eq!(e.vector, vector::UD),
            other => panic!("expected #UD, got {other}"),
        }
    }

    #[test]
    fn arpl_raises_the_rpl_of_the_low_word() {
        let mut m = Machine::protected(|a| {
            a.mov(eax, 0xABCD_0010u32)?;
            a.mov(ecx, u32::from(USER_DS))?;
            a.arpl(ax, cx)?;
            a.setz(bl)?;
            a.arpl(ax, cx)?;
            a.setz(bh)
        });
        let st = m.run_to_halt();
        assert_eq!(st.gpr[RAX], 0xABCD_0013);
        assert_eq!(st.gpr[RBX] & 0xFFFF, 0x0001, "ZF set the first time only");
    }

    /// Linear address the paging tests remap.
    const REMAPPED: u64 = 0x30_0000;
    /// The physical page it is remapped to.
    const OTHER_PAGE: u64 = 0x30_1000;
    /// PTE bit: global page.
    const PTE_GLOBAL: u32 = 1 << 8;

    /// A guest with 32-bit paging running `asm`; DATA holds the address of the PTE of
    /// REMAPPED, whose page holds 0xAAAA (0xBBBB in OTHER_PAGE).
    fn paged(asm: Asm, global: bool) -> Machine {
        let mut m = Machine::flat32(asm);
        let (pd, pt) = m.identity_map32();
        let pte = pt + 4 * (REMAPPED >> 12);
        m.poke_u32(REMAPPED, 0xAAAA);
        m.poke_u32(OTHER_PAGE, 0xBBBB);
        if global {
            m.poke_u32(pte, m.peek(pte, 4) as u32 | PTE_GLOBAL);
            m.state.cr4 |= cr4::PGE;
        }
        m.poke_u32(DATA, pte as u32);
        m.state.cr3 = pd;
        m.state.cr0 |= cr0::PG;
        m
    }

    /// Reads REMAPPED (EBX), points its PTE at OTHER_PAGE, reads it again (ECX: the
    /// TLB still has the old translation), then `flush`es and reads it once more (EDX).
    fn remap(a: &mut CodeAssembler, flush: Asm) -> Result<(), IcedError> {
        a.mov(ebx, dword_ptr(REMAPPED))?;
        a.mov(edi, dword_ptr(DATA))?;
        a.mov(eax, dword_ptr(edi))?;
        a.and(eax, 0xFFF)?;
        a.or(eax, OTHER_PAGE as i32)?;
        a.mov(dword_ptr(edi), eax)?;
        a.mov(ecx, dword_ptr(REMAPPED))?;
        flush(a)?;
        a.mov(edx, dword_ptr(REMAPPED))
    }

    fn reads(m: &mut Machine) -> (u64, u64, u64) {
        let st = m.run_to_halt();
        (st.gpr[RBX], st.gpr[RCX], st.gpr[RDX])
    }

    #[test]
    fn invlpg_makes_a_new_mapping_visible() {
        let mut m = paged(|a| remap(a, |a| a.invlpg(ptr(REMAPPED))), false);
        assert_eq!(reads(&mut m), (0xAAAA, 0xAAAA, 0xBBBB));
    }

    fn reload_cr3(a: &mut CodeAssembler) -> Result<(), IcedError> {
        a.mov(eax, cr3)?;
        a.mov(cr3, eax)
    }

    #[test]
    fn mov_cr3_flushes_all_but_global_pages() {
        let mut m = paged(|a| remap(a, reload_cr3), false);
        assert_eq!(reads(&mut m), (0xAAAA, 0xAAAA, 0xBBBB));
        let mut m = paged(|a| remap(a, reload_cr3), true);
        assert_eq!(reads(&mut m), (0xAAAA, 0xAAAA, 0xAAAA));
        // INVLPG flushes a global page too.
        let mut m = paged(|a| remap(a, |a| a.invlpg(ptr(REMAPPED))), true);
        assert_eq!(reads(&mut m), (0xAAAA, 0xAAAA, 0xBBBB));
    }

    /// Turns on PAE, points CR3 at the long-mode tables, sets EFER.LME, then paging.
    fn enter_long_mode(a: &mut CodeAssembler, pae: bool) -> Result<(), IcedError> {
        if pae {
            a.mov(eax, cr4)?;
            a.or(eax, cr4::PAE as i32)?;
            a.mov(cr4, eax)?;
        }
        a.mov(eax, dword_ptr(DATA))?;
        a.mov(cr3, eax)?;
        a.mov(ecx, msr::EFER)?;
        a.rdmsr()?;
        a.or(eax, efer::LME as i32)?;
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        a.or(eax, cr0::PG as i32)?;
        a.mov(cr0, eax)
    }

    /// A protected-mode guest with long-mode page tables (their root at DATA).
    fn before_long_mode(asm: Asm) -> Machine {
        let mut m = Machine::protected(asm);
        let root = m.identity_map_long();
        m.poke_u32(DATA, root as u32);
        m
    }

    #[test]
    fn paging_with_efer_lme_activates_long_mode() {
        let mut m = before_long_mode(|a| {
            enter_long_mode(a, true)?;
            a.rdmsr()?;
            a.mov(ebx, eax)?;
            // Leaving: paging off (from compatibility mode) clears LMA.
            a.mov(eax, cr0)?;
            a.and(eax, !(cr0::PG as i32))?;
            a.mov(cr0, eax)?;
            a.rdmsr()
        });
        let st = m.run_to_halt();
        assert_ne!(st.gpr[RBX] & efer::LMA, 0, "LMA after paging on");
        assert_eq!(st.gpr[RAX] & efer::LMA, 0, "no LMA after paging off");
        assert_eq!(st.efer, efer::LME);
    }

    #[test]
    fn long_mode_needs_pae() {
        let m = before_long_mode(|a| enter_long_mode(a, false));
        expect_gp(m, 0);
    }

    #[test]
    fn long_mode_keeps_pae_and_paging_on() {
        let no_pae = Machine::long(|a| {
            a.mov(rax, cr4)?;
            a.and(eax, !(cr4::PAE as i32))?;
            a.mov(cr4, rax)
        });
        expect_gp(no_pae, 0);
        let no_paging = Machine::long(|a| {
            a.mov(rax, cr0)?;
            a.and(eax, !(cr0::PG as i32))?;
            a.mov(cr0, rax)
        });
        expect_gp(no_paging, 0);
    }

    #[test]
    fn control_registers_refuse_bad_values_and_cpl_3() {
        let cases: [Asm; 4] = [
            // Paging without protection.
            |a| {
                a.mov(eax, (cr0::PG | cr0::ET) as u32)?;
                a.mov(cr0, eax)
            },
            // CR4.VME: virtual-8086 extensions are not implemented.
            |a| {
                a.mov(eax, 1)?;
                a.mov(cr4, eax)
            },
            // Not-write-through without cache-disable.
            |a| {
                a.mov(eax, cr0)?;
                a.or(eax, cr0::NW as i32)?;
                a.mov(cr0, eax)
            },
            // WRMSR EFER with a reserved bit.
            |a| {
                a.mov(ecx, msr::EFER)?;
                a.mov(eax, 1 << 4)?;
                a.xor(edx, edx)?;
                a.wrmsr()
            },
        ];
        for case in cases {
            expect_gp(Machine::protected(case), 0);
        }
        expect_gp(Machine::protected(|a| a.mov(eax, cr0)).user(), 0);
        let tpr = Machine::long(|a| {
            a.mov(eax, 0x10)?;
            a.mov(cr8, rax)
        });
        expect_gp(tpr, 0);
    }

    #[test]
    fn clts_lmsw_and_smsw() {
        let mut m = Machine::protected(|a| {
            a.mov(eax, (cr0::TS | cr0::MP) as u32)?;
            a.lmsw(ax)?;
            a.smsw(ebx)?;
            a.clts()?;
            a.smsw(ecx)?;
            // LMSW cannot leave protected mode.
            a.xor(eax, eax)?;
            a.lmsw(ax)?;
            a.mov(edx, cr0)
        });
        let st = m.run_to_halt();
        let base = cr0::PE | cr0::ET;
        assert_eq!(st.gpr[RBX], base | cr0::TS | cr0::MP);
        assert_eq!(st.gpr[RCX], base | cr0::MP);
        assert_eq!(st.gpr[RDX], base);
    }

    #[test]
    fn wrmsr_and_rdmsr_round_trip() {
        /// A canonical kernel address.
        const ENTRY: u64 = 0xFFFF_8000_1234_5678;
        let mut m = Machine::protected(|a| {
            a.mov(ecx, msr::LSTAR)?;
            a.mov(edx, (ENTRY >> 32) as u32)?;
            a.mov(eax, ENTRY as u32)?;
            a.wrmsr()?;
            a.xor(eax, eax)?;
            a.xor(edx, edx)?;
            a.rdmsr()?;
            a.mov(ebx, edx)?;
            a.mov(ecx, msr::EFER)?;
            a.mov(eax, efer::NXE as u32)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.mov(ecx, msr::LSTAR)?;
            a.rdmsr()
        });
        let st = m.run_to_halt();
        assert_eq!(st.msr.lstar, ENTRY);
        assert_eq!((st.gpr[RBX] << 32) | st.gpr[RAX], ENTRY);
        assert_eq!(st.efer, efer::NXE);
    }

    #[test]
    fn wrmsr_and_rdmsr_refuse_unknown_msrs_and_bad_values() {
        let cases: [Asm; 3] = [
            |a| {
                a.mov(ecx, 0x1234)?;
                a.rdmsr()
            },
            |a| {
                a.mov(ecx, 0x1234)?;
                a.wrmsr()
            },
            // A non-canonical SYSCALL target.
            |a| {
                a.mov(ecx, msr::LSTAR)?;
                a.mov(edx, 0x8000)?;
                a.wrmsr()
            },
        ];
        for case in cases {
            expect_gp(Machine::protected(case), 0);
        }
        let user = Machine::protected(|a| {
            a.mov(ecx, msr::EFER)?;
            a.rdmsr()
        });
        expect_gp(user.user(), 0);
    }

    #[test]
    fn swapgs_exchanges_gs_base_with_kernel_gs_base() {
        let mut m = Machine::long(|a| {
            a.mov(ecx, msr::KERNEL_GS_BASE)?;
            a.mov(eax, 0x5000)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.swapgs()?;
            a.mov(ecx, msr::GS_BASE)?;
            a.rdmsr()
        });
        let st = m.run_to_halt();
        assert_eq!(st.seg[SegReg::Gs as usize].base, 0x5000);
        assert_eq!(st.gpr[RAX], 0x5000);
        assert_eq!(st.msr.kernel_gs_base, 0);
    }

    #[test]
    fn rdtscp_returns_tsc_aux() {
        let mut m = Machine::protected(|a| {
            a.mov(ecx, msr::TSC_AUX)?;
            a.mov(eax, 7)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.rdtscp()
        });
        let st = m.run_to_halt();
        assert_eq!(st.gpr[RCX], 7);
        assert_eq!(st.gpr[RAX], 4, "four instructions retired before RDTSCP");
    }

    #[test]
    fn debug_registers_have_fixed_bits_and_dr4_aliases_dr6() {
        let mut m = Machine::protected(|a| {
            a.mov(ebx, dr7)?;
            a.xor(eax, eax)?;
            a.mov(dr6, eax)?;
            a.mov(ecx, dr4)?;
            a.mov(eax, 0x1234_5678)?;
            a.mov(dr0, eax)?;
            a.mov(edx, dr0)
        });
        let st = m.run_to_halt();
        assert_eq!(st.gpr[RBX], 0x400, "DR7 bit 10 reads as 1");
        assert_eq!(st.gpr[RCX], 0xFFFF_0FF0, "DR6 reserved bits read as 1");
        assert_eq!(st.gpr[RDX], 0x1234_5678);
        let de = Machine::protected(|a| {
            a.mov(eax, cr4::DE as u32)?;
            a.mov(cr4, eax)?;
            a.mov(eax, dr4)
        });
        expect(de, vector::UD, None);
        expect_gp(Machine::protected(|a| a.mov(eax, dr7)).user(), 0);
    }
}

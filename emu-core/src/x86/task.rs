//! Hardware task switching between 32-bit TSSs (Intel SDM Vol. 3A, 7.3): a far JMP or
//! CALL to a TSS or a task gate, an interrupt or exception through a task gate in the
//! IDT, and IRET with EFLAGS.NT set, which returns to the task in the back link.
//!
//! The switch saves the registers into the current TSS, moves the busy bits, links the
//! tasks (CALL and gates: the back link and NT), loads TR, sets CR0.TS and loads CR3, the
//! LDT, EFLAGS, EIP, the general registers and the segment registers from the new TSS.
//!
//! Every check is made before anything changes, so a switch that faults leaves the old
//! task as it was (the processor reports faults of the new task's segment registers in
//! the new task; Popek reports them at the instruction that started the switch, which
//! keeps faults precise). Not implemented: 16-bit TSSs (the run ends as unsupported),
//! the TSS's debug trap bit T, and the I/O map of a TSS the switch loads (it is read from
//! TR when used, as for any TSS).

use super::segment::{read_descriptor, selector, selector_error, system_type, Descriptor};
use super::{Ctx, Fault};
use crate::cpu::{code_data, cr0, rflags, SegReg, Segment};
use crate::exception::Exception;

/// The smallest limit of a 32-bit TSS: 104 bytes.
const TSS32_MIN_LIMIT: u32 = 0x67;
/// Offset of the back link (the previous task's TSS selector).
const LINK: u64 = 0x00;
/// Offset of CR3.
const CR3: u64 = 0x1C;
/// Offset of EIP; EFLAGS, then EAX ECX EDX EBX ESP EBP ESI EDI follow, 4 bytes each.
const EIP: u64 = 0x20;
/// Offset of EFLAGS.
const EFLAGS: u64 = 0x24;
/// Offset of EAX.
const GPRS: u64 = 0x28;
/// Offset of ES; CS SS DS FS GS follow, 4 bytes apart ([`SegReg`] order).
const SEGS: u64 = 0x48;
/// Offset of the LDT selector.
const LDT: u64 = 0x60;
/// The type bit that marks a TSS busy.
const BUSY: u64 = 1 << 41;

/// What started a task switch: it decides the busy bits, the back link and NT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A far JMP: the old task is left, no link.
    Jmp,
    /// A far CALL: the new task nests in the old one.
    Call,
    /// An interrupt or exception through a task gate: nests like a CALL.
    Gate,
    /// IRET with NT: back to the task in the back link.
    Iret,
}

/// The new task's state, read and checked before anything changes.
struct NewTask {
    cr3: u64,
    eip: u64,
    eflags: u64,
    gprs: [u64; 8],
    segs: [Segment; 6],
    ldtr: Segment,
}

fn ts(sel: u16, ext: u32) -> Fault {
    Exception::invalid_tss(selector_error(sel) | ext).into()
}

/// Switches to the task of TSS selector `sel` (from a JMP, CALL or gate: an available
/// 32-bit TSS; from IRET: a busy one). RIP must be where the old task resumes; `ext` is
/// the EXT bit of error codes.
pub fn switch(cx: &mut Ctx<'_>, sel: u16, cause: Cause, ext: u32) -> Result<(), Fault> {
    // The TSS descriptor, from the GDT only.
    let not_tss = || {
        if cause == Cause::Jmp || cause == Cause::Call {
            Exception::general_protection(selector_error(sel) | ext).into()
        } else {
            ts(sel, ext)
        }
    };
    if sel & selector::TI != 0 {
        return Err(not_tss());
    }
    let (desc, addr) = read_descriptor(cx, sel)?.ok_or_else(not_tss)?;
    let kind = desc.kind();
    let want = if cause == Cause::Iret {
        system_type::TSS_BUSY
    } else {
        system_type::TSS_AVAILABLE
    };
    if kind == system_type::TSS16_AVAILABLE || kind == system_type::TSS16_BUSY {
        return Err(Fault::Unsupported);
    }
    if desc.is_code_data() || kind != want {
        return Err(not_tss());
    }
    if !desc.present() {
        return Err(Exception::not_present(selector_error(sel) | ext).into());
    }
    if desc.limit() < TSS32_MIN_LIMIT {
        return Err(ts(sel, ext));
    }
    let old = cx.cpu.tr;
    if old.attr & Segment::TYPE != system_type::TSS_BUSY {
        // A 16-bit current TSS (or none loaded).
        return Err(Fault::Unsupported);
    }
    if old.limit < TSS32_MIN_LIMIT {
        return Err(ts(old.selector, ext));
    }
    let new = read_task(cx, desc.base(), ext)?;

    // Save the old task. IRET clears NT in the image it saves.
    let mut flags = cx.cpu.rflags.get();
    if cause == Cause::Iret {
        flags &= !rflags::NT;
    }
    cx.write_sys(old.base + EIP, 4, cx.cpu.rip)?;
    cx.write_sys(old.base + EFLAGS, 4, flags)?;
    for i in 0..8 {
        cx.write_sys(old.base + GPRS + 4 * i as u64, 4, cx.cpu.gpr[i])?;
    }
    for i in 0..6 {
        let s = u64::from(cx.cpu.seg[i].selector);
        cx.write_sys(old.base + SEGS + 4 * i as u64, 2, s)?;
    }
    // The busy bits and the link.
    if cause == Cause::Jmp || cause == Cause::Iret {
        set_busy(cx, old.selector, false)?;
    }
    let mut eflags = new.eflags;
    if cause != Cause::Iret {
        cx.write_sys(addr + 5, 1, ((desc.0 | BUSY) >> 40) & 0xFF)?;
    }
    if cause == Cause::Call || cause == Cause::Gate {
        cx.write_sys(desc.base() + LINK, 2, u64::from(old.selector))?;
        eflags |= rflags::NT;
    }

    // Load the new task.
    cx.cpu.tr = Descriptor(desc.0 | BUSY).segment(sel);
    cx.cpu.cr0 |= cr0::TS;
    if cx.cpu.cr0 & cr0::PG != 0 {
        cx.cpu.cr3 = new.cr3;
        cx.cpu.tlb.flush_all();
    }
    cx.cpu.rip = new.eip;
    cx.cpu.rflags.set_all(eflags | rflags::FIXED);
    cx.cpu.gpr[..8].copy_from_slice(&new.gprs);
    cx.cpu.ldtr = new.ldtr;
    for (reg, s) in SegReg::ALL.into_iter().zip(new.segs) {
        cx.cpu.seg.set(reg, s);
    }
    cx.end_block = true;
    Ok(())
}

/// Sets or clears the busy bit of the TSS descriptor `sel` in the GDT.
fn set_busy(cx: &mut Ctx<'_>, sel: u16, busy: bool) -> Result<(), Fault> {
    let Some((desc, addr)) = read_descriptor(cx, sel)? else {
        return Ok(());
    };
    let v = if busy { desc.0 | BUSY } else { desc.0 & !BUSY };
    cx.write_sys(addr + 5, 1, (v >> 40) & 0xFF)
}

/// Reads the task at TSS `base` and checks its LDT and segment registers, as the switch
/// will load them.
fn read_task(cx: &mut Ctx<'_>, base: u64, ext: u32) -> Result<NewTask, Fault> {
    let cr3 = cx.read_sys(base + CR3, 4)?;
    let eip = cx.read_sys(base + EIP, 4)?;
    let eflags = cx.read_sys(base + EFLAGS, 4)?;
    let mut gprs = [0; 8];
    for (i, r) in gprs.iter_mut().enumerate() {
        *r = cx.read_sys(base + GPRS + 4 * i as u64, 4)?;
    }
    let mut sels = [0u16; 6];
    for (i, s) in sels.iter_mut().enumerate() {
        *s = cx.read_sys(base + SEGS + 4 * i as u64, 2)? as u16;
    }
    let ldt_sel = cx.read_sys(base + LDT, 2)? as u16;
    let ldtr = load_ldt(cx, ldt_sel, ext)?;
    // The new CPL is CS's RPL.
    let cpl = (sels[SegReg::Cs as usize] & selector::RPL) as u8;
    let mut segs = [Segment::default(); 6];
    for (i, &sel) in sels.iter().enumerate() {
        segs[i] = task_segment(cx, &ldtr, i, sel, cpl, ext)?;
    }
    Ok(NewTask {
        cr3,
        eip,
        eflags,
        gprs,
        segs,
        ldtr,
    })
}

/// The LDT the new task names (null: none).
fn load_ldt(cx: &mut Ctx<'_>, sel: u16, ext: u32) -> Result<Segment, Fault> {
    if sel & !selector::RPL == 0 {
        return Ok(Segment {
            selector: sel,
            ..Segment::default()
        });
    }
    if sel & selector::TI != 0 {
        return Err(ts(sel, ext));
    }
    let (desc, _) = read_descriptor(cx, sel)?.ok_or_else(|| ts(sel, ext))?;
    if desc.is_code_data() || desc.kind() != system_type::LDT || !desc.present() {
        return Err(ts(sel, ext));
    }
    Ok(desc.segment(sel))
}

/// Reads descriptor `sel` from the GDT or from `ldt`, the new task's LDT.
fn descriptor_in(cx: &mut Ctx<'_>, ldt: &Segment, sel: u16) -> Result<Option<Descriptor>, Fault> {
    let (base, limit) = if sel & selector::TI != 0 {
        if ldt.attr & Segment::PRESENT == 0 {
            return Ok(None);
        }
        (ldt.base, u64::from(ldt.limit))
    } else {
        (cx.cpu.gdtr.base, u64::from(cx.cpu.gdtr.limit))
    };
    let offset = u64::from(sel & !7);
    if offset + 7 > limit {
        return Ok(None);
    }
    Ok(Some(Descriptor(cx.read_sys(base.wrapping_add(offset), 8)?)))
}

/// Segment register `i` ([`SegReg`] order) of a task running at `cpl`, checked as the
/// switch loads it: #TS for a wrong selector or type, #NP (#SS for SS) if not present.
fn task_segment(
    cx: &mut Ctx<'_>,
    ldt: &Segment,
    i: usize,
    sel: u16,
    cpl: u8,
    ext: u32,
) -> Result<Segment, Fault> {
    let is_cs = i == SegReg::Cs as usize;
    let is_ss = i == SegReg::Ss as usize;
    if sel & !selector::RPL == 0 {
        if is_cs || is_ss {
            return Err(ts(sel, ext));
        }
        return Ok(Segment {
            selector: sel,
            ..Segment::default()
        });
    }
    let desc = descriptor_in(cx, ldt, sel)?.ok_or_else(|| ts(sel, ext))?;
    let rpl = (sel & selector::RPL) as u8;
    let ok = if !desc.is_code_data() {
        false
    } else if is_cs {
        desc.is_code() && (desc.is_conforming() && desc.dpl() <= cpl || desc.dpl() == cpl)
    } else if is_ss {
        desc.is_writable_data() && desc.dpl() == cpl && rpl == cpl
    } else {
        let readable = !desc.is_code() || desc.kind() & code_data::WRITABLE_READABLE != 0;
        let privileged = desc.is_code() && desc.is_conforming() || desc.dpl() >= cpl.max(rpl);
        readable && privileged
    };
    if !ok {
        return Err(ts(sel, ext));
    }
    if !desc.present() {
        let code = selector_error(sel) | ext;
        return Err(if is_ss {
            Exception::stack_fault(code)
        } else {
            Exception::not_present(code)
        }
        .into());
    }
    Ok(desc.segment(sel))
}

#[cfg(test)]
mod tests {
    use super::system_type;
    use crate::cpu::{cr0, rflags};
    use crate::testkit::{
        Asm, Desc, Machine, CODE_BASE, DATA, FREE_SLOT, GDT_BASE, IDT_BASE, KERNEL_CS, KERNEL_DS,
        RAX, RCX, TSS_BASE, TSS_SEL,
    };
    use iced_x86::code_asm::*;

    /// The second task's TSS.
    const TSS2: u64 = 0x1_3000;
    /// Its stack.
    const STACK2: u32 = 0x2_8000;
    /// What its EAX starts with.
    const EAX2: u32 = 0x1234;

    /// A protected-mode machine running `asm` (task 1, TR = TSS_SEL), with a second
    /// task at FREE_SLOT entered at CODE_BASE + `entry`.
    fn two_tasks(asm: Asm, entry: u64) -> Machine {
        let mut m = Machine::protected(asm);
        let limit = super::TSS32_MIN_LIMIT;
        m.set_gdt_entry(
            FREE_SLOT,
            Desc::system(system_type::TSS_AVAILABLE, TSS2, limit),
        );
        for (offset, v) in [
            (super::EIP, (CODE_BASE + entry) as u32),
            (super::EFLAGS, rflags::FIXED as u32),
            (super::GPRS, EAX2),
            (super::GPRS + 16, STACK2),
        ] {
            m.poke_u32(TSS2 + offset, v);
        }
        for i in 0..6u64 {
            let s = if i == 1 { KERNEL_CS } else { KERNEL_DS };
            m.poke_u32(TSS2 + super::SEGS + 4 * i, s.into());
        }
        m
    }

    fn busy(m: &Machine, selector: u16) -> bool {
        let desc = m.peek(GDT_BASE + u64::from(selector), 8);
        (desc >> 40) & 0xF == u64::from(system_type::TSS_BUSY)
    }

    #[test]
    fn call_to_a_tss_nests_and_iret_returns() {
        // call far FREE:0 (7 bytes); jmp short done (2); task 2: store EAX; iretd.
        let mut m = two_tasks(
            |a| {
                let mut done = a.create_label();
                a.db(&[0x9A, 0, 0, 0, 0, FREE_SLOT as u8, 0])?;
                a.jmp(done)?;
                a.mov(dword_ptr(DATA), eax)?;
                a.iretd()?;
                a.set_label(&mut done)?;
                a.mov(ecx, 7)
            },
            9,
        );
        let st = m.run_to_halt().clone();
        assert_eq!(m.trap(), None);
        assert_eq!(m.peek(DATA, 4), u64::from(EAX2), "task 2 ran");
        assert_eq!(st.gpr[RAX], 0, "task 1 has its own registers back");
        assert_eq!(st.gpr[RCX], 7, "task 1 went on after the CALL");
        assert_eq!(st.tr.selector, TSS_SEL);
        assert_eq!(st.rflags.get() & rflags::NT, 0);
        assert_ne!(st.cr0 & cr0::TS, 0, "a task switch sets CR0.TS");
        assert_eq!(m.peek(TSS2, 2), u64::from(TSS_SEL), "the back link");
        assert_eq!(
            m.peek(TSS2 + super::EIP, 4),
            CODE_BASE + 15,
            "task 2 saved after IRET"
        );
        assert_eq!(
            m.peek(TSS2 + super::EFLAGS, 4) & rflags::NT,
            0,
            "IRET cleared NT"
        );
        assert!(!busy(&m, FREE_SLOT) && busy(&m, TSS_SEL));
        assert_eq!(
            m.peek(TSS_BASE + super::EIP, 4),
            CODE_BASE + 7,
            "task 1 saved"
        );
    }

    #[test]
    fn jmp_to_a_busy_tss_faults_and_jmp_leaves_no_link() {
        let mut m = two_tasks(|a| a.db(&[0xEA, 0, 0, 0, 0, TSS_SEL as u8, 0]), 0);
        let trap = m.run_to_trap();
        assert_eq!(
            (trap.vector, trap.error_code),
            (13, Some(u32::from(TSS_SEL)))
        );

        // Task 2 is a HLT right after the JMP; it runs with no link and NT clear.
        let mut m = two_tasks(|a| a.db(&[0xEA, 0, 0, 0, 0, FREE_SLOT as u8, 0]), 7);
        let st = m.run_to_halt().clone();
        assert_eq!(st.tr.selector, FREE_SLOT);
        assert_eq!(st.gpr[RAX], u64::from(EAX2));
        assert_eq!(st.rflags.get() & rflags::NT, 0);
        assert!(
            busy(&m, FREE_SLOT) && !busy(&m, TSS_SEL),
            "JMP freed task 1"
        );
    }

    #[test]
    fn an_exception_through_a_task_gate_switches_and_pushes_its_error_code() {
        // mov ax, 0x1234 (4); mov ds, ax (3): #GP(0x1234: the selector with TI); task 2: pop ecx, then HLT.
        let mut m = two_tasks(
            |a| {
                a.mov(ax, 0x1234)?;
                a.mov(ds, ax)?;
                a.pop(ecx)
            },
            7,
        );
        let gate = (0x8500u64 << 32) | u64::from(FREE_SLOT) << 16;
        m.poke(IDT_BASE + 13 * 8, &gate.to_le_bytes());
        let st = m.run_to_halt().clone();
        assert_eq!(st.tr.selector, FREE_SLOT);
        assert_eq!(st.gpr[RCX], 0x1234, "the error code, on task 2's stack");
        assert_eq!(st.gpr[4], u64::from(STACK2));
        assert_ne!(st.rflags.get() & rflags::NT, 0, "nested");
        assert_eq!(
            m.peek(TSS_BASE + super::EIP, 4),
            CODE_BASE + 4,
            "at the fault"
        );
    }
}

//! Converting the architectural state between Popek's [`CpuState`] and KVM's
//! `kvm_regs` + `kvm_sregs`.
//!
//! The conversion is pure (no ioctls), so it is unit-tested without /dev/kvm.
//!
//! Not converted yet, because [`CpuState`] has no field for them: the x87/SSE state
//! (KVM_GET/SET_FPU or XSAVE), debug registers, MSRs other than EFER, and pending events
//! (KVM_GET/SET_VCPU_EVENTS: interrupt shadow, pending exception). A fresh vCPU has KVM's
//! reset values for these, and the engine only stops at instruction boundaries where no
//! event is pending (see `KvmEngine::run`), so nothing the guest relies on is lost today.

use emu_core::cpu::{CpuState, DescriptorTable, Segment};
use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};

/// [`Segment::attr`] bits 0-3: the descriptor type.
const ATTR_TYPE: u16 = 0xF;
/// [`Segment::attr`] bits 5-6: the descriptor privilege level.
const ATTR_DPL_SHIFT: u16 = 5;
/// [`Segment::attr`] bit 8: available for software.
const ATTR_AVL: u16 = 1 << 8;
/// System descriptor type of a busy 32-bit TSS.
const TYPE_TSS32_BUSY: u16 = 0xB;

/// What TR holds under KVM while the guest has not loaded one.
///
/// Multiboot leaves TR undefined (a zero [`Segment`] in [`CpuState`]), but hardware
/// virtualization checks it on every entry: Intel's VM entry requires a present busy TSS,
/// and KVM on AMD reports the type as busy whatever was set. This is KVM's own reset value
/// (busy 32-bit TSS at 0, 64 KiB), which a guest can never load itself, because LTR refuses
/// a null selector — so it converts back to "undefined" without ambiguity.
const UNDEFINED_TR: Segment = Segment {
    selector: 0,
    base: 0,
    limit: 0xFFFF,
    attr: TYPE_TSS32_BUSY | Segment::PRESENT,
};

/// KVM's general registers in x86 encoding order, the order of [`CpuState::gpr`].
fn gprs_mut(r: &mut kvm_regs) -> [&mut u64; 16] {
    [
        &mut r.rax, &mut r.rcx, &mut r.rdx, &mut r.rbx, &mut r.rsp, &mut r.rbp, &mut r.rsi,
        &mut r.rdi, &mut r.r8, &mut r.r9, &mut r.r10, &mut r.r11, &mut r.r12, &mut r.r13,
        &mut r.r14, &mut r.r15,
    ]
}

/// KVM's segment registers in encoding order, the order of [`CpuState::seg`].
fn segments_mut(s: &mut kvm_sregs) -> [&mut kvm_segment; 6] {
    [
        &mut s.es, &mut s.cs, &mut s.ss, &mut s.ds, &mut s.fs, &mut s.gs,
    ]
}

/// 1 if any bit of `mask` is set in `attr`, as KVM's one-byte flags want.
fn flag(attr: u16, mask: u16) -> u8 {
    u8::from(attr & mask != 0)
}

fn to_kvm_segment(seg: &Segment) -> kvm_segment {
    let attr = seg.attr;
    kvm_segment {
        base: seg.base,
        limit: seg.limit,
        selector: seg.selector,
        type_: (attr & ATTR_TYPE) as u8,
        s: flag(attr, Segment::CODE_DATA),
        dpl: seg.dpl(),
        present: flag(attr, Segment::PRESENT),
        avl: flag(attr, ATTR_AVL),
        l: flag(attr, Segment::LONG),
        db: flag(attr, Segment::DB),
        g: flag(attr, Segment::GRANULARITY),
        // A segment register holding no descriptor (a null selector in a data segment or
        // LDTR) is "unusable" in VMX terms; KVM wants it flagged so VM entry skips the
        // checks a real descriptor must pass. On AMD KVM derives it from P the same way.
        unusable: u8::from(attr & Segment::PRESENT == 0),
        padding: 0,
    }
}

/// The inverse of [`to_kvm_segment`]. An unusable segment comes back with the attributes
/// KVM reports for it: all zero on Intel, as set on AMD — either way not present.
fn from_kvm_segment(k: &kvm_segment) -> Segment {
    let bit = |v: u8, mask: u16| if v != 0 { mask } else { 0 };
    Segment {
        selector: k.selector,
        base: k.base,
        limit: k.limit,
        attr: (u16::from(k.type_) & ATTR_TYPE)
            | bit(k.s, Segment::CODE_DATA)
            | (u16::from(k.dpl & 3) << ATTR_DPL_SHIFT)
            | bit(k.present, Segment::PRESENT)
            | bit(k.avl, ATTR_AVL)
            | bit(k.l, Segment::LONG)
            | bit(k.db, Segment::DB)
            | bit(k.g, Segment::GRANULARITY),
    }
}

fn to_kvm_dtable(t: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: t.base,
        limit: t.limit,
        padding: [0; 3],
    }
}

fn from_kvm_dtable(t: &kvm_dtable) -> DescriptorTable {
    DescriptorTable {
        base: t.base,
        limit: t.limit,
    }
}

/// The general registers of `state` as KVM takes them.
pub(crate) fn to_kvm_regs(state: &CpuState) -> kvm_regs {
    let mut regs = kvm_regs {
        rip: state.rip,
        rflags: state.rflags,
        ..Default::default()
    };
    for (dst, src) in gprs_mut(&mut regs).into_iter().zip(state.gpr) {
        *dst = src;
    }
    regs
}

/// Writes the system registers of `state` into `sregs`, which holds the vCPU's current
/// ones so the fields [`CpuState`] does not cover (APIC base, CR8, pending interrupt
/// bitmap) keep KVM's values.
pub(crate) fn to_kvm_sregs(state: &CpuState, sregs: &mut kvm_sregs) {
    for (dst, src) in segments_mut(sregs).into_iter().zip(&state.seg) {
        *dst = to_kvm_segment(src);
    }
    sregs.ldt = to_kvm_segment(&state.ldtr);
    let tr = if state.tr == Segment::default() {
        UNDEFINED_TR
    } else {
        state.tr
    };
    sregs.tr = to_kvm_segment(&tr);
    sregs.gdt = to_kvm_dtable(&state.gdtr);
    sregs.idt = to_kvm_dtable(&state.idtr);
    sregs.cr0 = state.cr0;
    sregs.cr2 = state.cr2;
    sregs.cr3 = state.cr3;
    sregs.cr4 = state.cr4;
    sregs.efer = state.efer;
}

/// The architectural state held in `regs` and `sregs`.
pub(crate) fn from_kvm(regs: &kvm_regs, sregs: &kvm_sregs) -> CpuState {
    let (mut regs, mut sregs) = (*regs, *sregs);
    let tr = from_kvm_segment(&sregs.tr);
    CpuState {
        gpr: gprs_mut(&mut regs).map(|r| *r),
        rip: regs.rip,
        rflags: regs.rflags,
        seg: segments_mut(&mut sregs).map(|s| from_kvm_segment(s)),
        ldtr: from_kvm_segment(&sregs.ldt),
        tr: if tr == UNDEFINED_TR {
            Segment::default()
        } else {
            tr
        },
        gdtr: from_kvm_dtable(&sregs.gdt),
        idtr: from_kvm_dtable(&sregs.idt),
        cr0: sregs.cr0,
        cr2: sregs.cr2,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        efer: sregs.efer,
        // Debug registers and MSRs travel through other ioctls (KVM_GET_DEBUGREGS,
        // KVM_GET_MSRS); the engine fills them in where it transfers them.
        ..CpuState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(state: &CpuState) -> (CpuState, kvm_sregs) {
        let mut sregs = kvm_sregs::default();
        to_kvm_sregs(state, &mut sregs);
        (from_kvm(&to_kvm_regs(state), &sregs), sregs)
    }

    #[test]
    fn multiboot_state_round_trips_and_gets_a_usable_tr() {
        let mut state = CpuState::multiboot(0x10_0000, 0x2BAD_B002, 0x9000);
        for (i, r) in state.gpr.iter_mut().enumerate() {
            *r = 0x1111 * i as u64;
        }
        state.gdtr = DescriptorTable {
            base: 0x1000,
            limit: 0x17,
        };
        let (back, sregs) = round_trip(&state);
        assert_eq!(back, state);
        assert_eq!(sregs.tr.type_, TYPE_TSS32_BUSY as u8);
        assert_eq!((sregs.tr.present, sregs.tr.unusable), (1, 0));
        assert_eq!(sregs.ldt.unusable, 1, "a null LDTR is unusable");
        assert_eq!(sregs.cs.unusable, 0);
    }

    #[test]
    fn every_attribute_bit_reaches_its_kvm_field() {
        let seg = Segment {
            selector: 0x2B,
            base: 0xDEAD_0000,
            limit: 0xFFFFF,
            attr: 0xA | Segment::CODE_DATA | (3 << ATTR_DPL_SHIFT) | Segment::PRESENT | ATTR_AVL,
        };
        let k = to_kvm_segment(&seg);
        assert_eq!(
            (k.type_, k.s, k.dpl, k.present, k.avl, k.l, k.db, k.g),
            (0xA, 1, 3, 1, 1, 0, 0, 0)
        );
        assert_eq!(from_kvm_segment(&k), seg);
        let wide = Segment {
            attr: Segment::LONG | Segment::DB | Segment::GRANULARITY,
            ..seg
        };
        let k = to_kvm_segment(&wide);
        assert_eq!((k.l, k.db, k.g, k.present, k.unusable), (1, 1, 1, 0, 1));
        assert_eq!(from_kvm_segment(&k), wide);
    }

    #[test]
    fn a_loaded_tr_is_kept() {
        let mut state = CpuState::multiboot(0, 0, 0);
        state.tr = Segment {
            selector: 0x28,
            base: 0x5000,
            limit: 0x67,
            attr: TYPE_TSS32_BUSY | Segment::PRESENT,
        };
        assert_eq!(round_trip(&state).0, state);
    }
}

//! Converting the architectural state between Popek's [`CpuState`] and the structures
//! of the KVM ioctls that carry it: `kvm_regs`, `kvm_sregs`, the MSRs, `kvm_debugregs`
//! and the XSAVE area. Every field of [`CpuState`] has its place in one of them.
//!
//! The x87/SSE state travels in the XSAVE area (KVM_GET/SET_XSAVE), whose first 512
//! bytes are the FXSAVE image [`FpuState`] converts to and from. KVM_GET/SET_FPU would
//! seem the natural pair, but KVM ignores the `mxcsr` field of `kvm_fpu` both ways.
//!
//! The conversion is pure (no ioctls), so it is unit-tested without /dev/kvm.
//!
//! The events interface (KVM_GET/SET_VCPU_EVENTS) carries the STI/MOV SS interrupt shadow
//! and an event KVM has accepted but not yet delivered (an injected interrupt, an
//! exception), both of which [`CpuState`] holds: a vCPU stopped right after STI keeps
//! its shadow across a switch of engines, and an interrupt KVM took but had not
//! delivered when it stopped (its delivery exited to MMIO, say) is delivered by whichever
//! engine runs next.

use emu_core::cpu::{self, fxsave, msr, CpuState, DescriptorTable, FpuState, Segment};
use emu_core::cpu::{shadow, PendingEvent};
use kvm_bindings::{
    kvm_debugregs, kvm_dtable, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events,
    kvm_xsave, KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW,
    KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI,
};

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
/// Copies the general-purpose registers and RIP of `state` into `regs`.
pub(crate) fn put_gprs(regs: &mut kvm_regs, state: &CpuState) {
    for (k, v) in gprs_mut(regs).into_iter().zip(state.gpr) {
        *k = v;
    }
    regs.rip = state.rip;
}

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

/// The MSRs [`cpu::Msrs`] holds, in the order of [`msr_fields_mut`]. (EFER travels in
/// `kvm_sregs`, the FS and GS bases in their segments.)
pub(crate) const MSR_INDICES: [u32; 10] = [
    msr::SYSENTER_CS,
    msr::SYSENTER_ESP,
    msr::SYSENTER_EIP,
    msr::STAR,
    msr::LSTAR,
    msr::CSTAR,
    msr::SFMASK,
    msr::KERNEL_GS_BASE,
    msr::TSC,
    msr::TSC_AUX,
];

/// The fields of `m`, in the order of [`MSR_INDICES`].
fn msr_fields_mut(m: &mut cpu::Msrs) -> [&mut u64; MSR_INDICES.len()] {
    [
        &mut m.sysenter_cs,
        &mut m.sysenter_esp,
        &mut m.sysenter_eip,
        &mut m.star,
        &mut m.lstar,
        &mut m.cstar,
        &mut m.fmask,
        &mut m.kernel_gs_base,
        &mut m.tsc,
        &mut m.tsc_aux,
    ]
}

/// The vCPU state as the KVM ioctls carry it: everything [`CpuState`] holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KvmState {
    /// KVM_GET/SET_REGS: general registers, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// KVM_GET/SET_SREGS: segments, descriptor tables, control registers, EFER.
    pub sregs: kvm_sregs,
    /// KVM_GET/SET_MSRS: the MSRs of [`MSR_INDICES`], in that order.
    pub msrs: [kvm_msr_entry; MSR_INDICES.len()],
    /// KVM_GET/SET_DEBUGREGS: DR0-DR3, DR6, DR7.
    pub debugregs: kvm_debugregs,
    /// The FXSAVE image, as [`fxsave_of`] and [`put_fxsave`] find it in the XSAVE area.
    pub fxsave: [u8; fxsave::SIZE],
    /// Interrupt shadow and pending events.
    pub(crate) events: kvm_vcpu_events,
}

/// The MSR entries KVM_GET_MSRS is asked to fill: the indices, data zero.
pub(crate) fn msr_requests() -> [kvm_msr_entry; MSR_INDICES.len()] {
    MSR_INDICES.map(|index| kvm_msr_entry {
        index,
        ..Default::default()
    })
}

/// Debug register numbers [`CpuState::dr`] and `kvm_debugregs` share: DR0-DR3
/// (breakpoint addresses), DR6 (status) and DR7 (control). DR4 and DR5 are aliases.
const DR_ADDRESSES: usize = 4;
const DR6: usize = 6;
const DR7: usize = 7;

/// XSAVE header: the state-component bitmap (XSTATE_BV) follows the legacy area.
const XSTATE_BV_WORD: usize = fxsave::SIZE / 4;
/// XSTATE_BV bits of the components the legacy area holds: x87 and SSE. A component
/// whose bit is clear is in its initial state, and KVM would ignore what the area says.
const XSTATE_X87_SSE: u32 = 0b11;

/// The FXSAVE image at the start of an XSAVE area.
pub(crate) fn fxsave_of(xsave: &kvm_xsave) -> [u8; fxsave::SIZE] {
    let mut img = [0u8; fxsave::SIZE];
    for (bytes, word) in img.chunks_exact_mut(4).zip(xsave.region) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    img
}

/// Replaces the x87 and SSE state of `xsave` with the FXSAVE image `img`, leaving the
/// other components (AVX, ...) as they are.
pub(crate) fn put_fxsave(xsave: &mut kvm_xsave, img: &[u8; fxsave::SIZE]) {
    for (word, bytes) in xsave.region.iter_mut().zip(img.chunks_exact(4)) {
        *word = u32::from_le_bytes(bytes.try_into().expect("4-byte chunk"));
    }
    xsave.region[XSTATE_BV_WORD] |= XSTATE_X87_SSE;
}

/// `state` as the KVM ioctls take it. `sregs` holds the vCPU's current system registers,
/// so the fields [`CpuState`] does not cover (APIC base, CR8, pending interrupt bitmap)
/// keep KVM's values.
pub(crate) fn to_kvm(state: &CpuState, sregs: kvm_sregs) -> KvmState {
    let mut k = KvmState {
        regs: kvm_regs {
            rip: state.rip,
            rflags: state.rflags.get(),
            ..Default::default()
        },
        sregs,
        msrs: msr_requests(),
        debugregs: kvm_debugregs {
            dr6: state.dr[DR6],
            dr7: state.dr[DR7],
            ..Default::default()
        },
        fxsave: state.fpu.to_fxsave(),
        events: to_kvm_events(state),
    };
    for (dst, src) in gprs_mut(&mut k.regs).into_iter().zip(state.gpr) {
        *dst = src;
    }
    for (dst, src) in segments_mut(&mut k.sregs).into_iter().zip(state.seg.all()) {
        *dst = to_kvm_segment(&src);
    }
    let s = &mut k.sregs;
    s.ldt = to_kvm_segment(&state.ldtr);
    let tr = if state.tr == Segment::default() {
        UNDEFINED_TR
    } else {
        state.tr
    };
    s.tr = to_kvm_segment(&tr);
    s.gdt = to_kvm_dtable(&state.gdtr);
    s.idt = to_kvm_dtable(&state.idtr);
    s.cr0 = state.cr0;
    s.cr2 = state.cr2;
    s.cr3 = state.cr3;
    s.cr4 = state.cr4;
    s.cr8 = state.cr8;
    s.efer = state.efer;
    let mut msr = state.msr;
    for (entry, value) in k.msrs.iter_mut().zip(msr_fields_mut(&mut msr)) {
        entry.data = *value;
    }
    k.debugregs.db.copy_from_slice(&state.dr[..DR_ADDRESSES]);
    k
}

/// The architectural state `k` holds.
pub(crate) fn from_kvm(k: &KvmState) -> CpuState {
    let KvmState {
        mut regs,
        mut sregs,
        msrs,
        debugregs,
        fxsave,
        events,
    } = *k;
    let tr = from_kvm_segment(&sregs.tr);
    let mut msr = cpu::Msrs::default();
    for (field, entry) in msr_fields_mut(&mut msr).into_iter().zip(msrs) {
        *field = entry.data;
    }
    let mut dr = [0; 8];
    dr[..DR_ADDRESSES].copy_from_slice(&debugregs.db);
    dr[DR6] = debugregs.dr6;
    dr[DR7] = debugregs.dr7;
    CpuState {
        gpr: gprs_mut(&mut regs).map(|r| *r),
        rip: regs.rip,
        rflags: regs.rflags.into(),
        seg: segments_mut(&mut sregs).map(|s| from_kvm_segment(s)).into(),
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
        cr8: sregs.cr8,
        efer: sregs.efer,
        dr,
        msr,
        fpu: FpuState::from_fxsave(&fxsave),
        interrupt_shadow: from_kvm_shadow(events.interrupt.shadow),
        pending_event: pending_of(&events),
        // A halt is the VMM's business under KVM too (HLT exits to it).
        halted: false,
    }
}

/// KVM's shadow bits and Popek's, pairwise.
const SHADOW_BITS: [(u8, u32); 2] = [
    (shadow::STI, KVM_X86_SHADOW_INT_STI),
    (shadow::MOV_SS, KVM_X86_SHADOW_INT_MOV_SS),
];

fn from_kvm_shadow(kvm: u8) -> u8 {
    SHADOW_BITS
        .iter()
        .filter(|(_, k)| u32::from(kvm) & k != 0)
        .fold(0, |bits, (p, _)| bits | p)
}

/// The event KVM accepted but has not delivered, if any.
fn pending_of(e: &kvm_vcpu_events) -> Option<PendingEvent> {
    if e.exception.injected != 0 || e.exception.pending != 0 {
        Some(PendingEvent::Exception {
            vector: e.exception.nr,
            error_code: (e.exception.has_error_code != 0).then_some(e.exception.error_code),
        })
    } else if e.interrupt.injected != 0 && e.interrupt.soft == 0 {
        Some(PendingEvent::Interrupt {
            vector: e.interrupt.nr,
        })
    } else {
        None
    }
}

/// `state`'s shadow and pending event as KVM_SET_VCPU_EVENTS takes them (no NMI).
fn to_kvm_events(state: &CpuState) -> kvm_vcpu_events {
    let mut e = kvm_vcpu_events {
        // Also set the shadow and clear pending NMIs, which KVM only touches when told.
        flags: KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_NMI_PENDING,
        ..Default::default()
    };
    e.interrupt.shadow = SHADOW_BITS
        .iter()
        .filter(|(p, _)| state.interrupt_shadow & p != 0)
        .fold(0, |bits, (_, k)| bits | *k as u8);
    match state.pending_event {
        Some(PendingEvent::Interrupt { vector }) => {
            e.interrupt.injected = 1;
            e.interrupt.nr = vector;
        }
        Some(PendingEvent::Exception { vector, error_code }) => {
            e.exception.injected = 1;
            e.exception.nr = vector;
            e.exception.has_error_code = u8::from(error_code.is_some());
            e.exception.error_code = error_code.unwrap_or(0);
        }
        None => {}
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(state: &CpuState) -> (CpuState, KvmState) {
        let k = to_kvm(state, kvm_sregs::default());
        (from_kvm(&k), k)
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
        let (back, k) = round_trip(&state);
        assert_eq!(back, state);
        let sregs = k.sregs;
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

    #[test]
    fn msrs_travel_by_index() {
        let mut state = CpuState::multiboot(0, 0, 0);
        for (i, field) in msr_fields_mut(&mut state.msr).into_iter().enumerate() {
            *field = 0x1000 + i as u64;
        }
        let (back, k) = round_trip(&state);
        assert_eq!(back.msr, state.msr);
        let index_of = |data: u64| k.msrs.iter().find(|e| e.data == data).unwrap().index;
        assert_eq!(index_of(state.msr.sysenter_eip), msr::SYSENTER_EIP);
        assert_eq!(index_of(state.msr.kernel_gs_base), msr::KERNEL_GS_BASE);
        assert_eq!(index_of(state.msr.tsc), msr::TSC);
    }

    #[test]
    fn debug_registers_skip_the_dr4_dr5_aliases() {
        let mut state = CpuState::multiboot(0, 0, 0);
        state.dr = [0x1000, 0x2000, 0x3000, 0x4000, 0, 0, 0xFFFF_4FF1, 0x0402];
        let (back, k) = round_trip(&state);
        assert_eq!(back.dr, state.dr);
        assert_eq!(k.debugregs.db, [0x1000, 0x2000, 0x3000, 0x4000]);
        assert_eq!((k.debugregs.dr6, k.debugregs.dr7), (0xFFFF_4FF1, 0x0402));
    }

    #[test]
    fn fpu_state_travels_in_the_legacy_area_of_the_xsave_area() {
        let mut state = CpuState::multiboot(0, 0, 0);
        let fpu = &mut state.fpu;
        fpu.fsw = 3 << 11; // TOP = 3: ST(0) is R3
        fpu.ftw = 0b1000_1000;
        fpu.fop = 0x5D9;
        fpu.fip = 0x0008_0010_2030;
        fpu.fdp = 0x0010_0000_4050;
        fpu.regs[3] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        fpu.xmm = std::array::from_fn(|i| 0x0102_0304_0506_0708_090A_0B0C_0D0E_0F00 + i as u128);
        fpu.mxcsr = 0x1F80 | 0x3;
        fpu.set_fcw(0x027F);
        let mut xsave = kvm_xsave::default();
        let avx_word = 576 / 4; // the first word of the AVX component, which must survive
        xsave.region[avx_word] = 0xA5A5_A5A5;
        xsave.region[XSTATE_BV_WORD] = 1 << 2; // AVX in use, x87 and SSE initial
        put_fxsave(&mut xsave, &to_kvm(&state, kvm_sregs::default()).fxsave);
        assert_eq!(xsave.region[XSTATE_BV_WORD], 0b111);
        assert_eq!(xsave.region[avx_word], 0xA5A5_A5A5);
        assert_eq!(xsave.region[fxsave::MXCSR / 4], 0x1F83);
        let k = KvmState {
            fxsave: fxsave_of(&xsave),
            ..to_kvm(&CpuState::default(), kvm_sregs::default())
        };
        assert_eq!(from_kvm(&k).fpu, state.fpu);
    }
}

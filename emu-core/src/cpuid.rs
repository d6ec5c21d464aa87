//! The CPUID the popek-pc processor reports, whichever engine runs it.
//!
//! Every engine answers CPUID from this one table (the interpreter directly, KVM through
//! KVM_SET_CPUID2), so a guest sees the same processor under each and may only use what
//! every engine implements.
//!
//! The processor is an Intel one, as hypervisors report the vendor of a real processor
//! (guests choose their vendor-specific code paths by it: performance counters, errata,
//! microcode), and names itself in the hypervisor leaves from 0x4000_0000, which leaf 1
//! announces with its hypervisor bit. Every bit set here is implemented by every engine;
//! what is not set raises #UD (an instruction) or #GP (an MSR) in the guest.

use crate::pv::abi as pv;
use iced_x86::CpuidFeature;

/// Leaf 0: highest basic leaf and vendor string.
pub const LEAF_VENDOR: u32 = 0;
/// Leaf 1: family/model/stepping and feature bits.
pub const LEAF_FEATURES: u32 = 1;
/// Leaf 7: structured extended features (sub-leaf in ECX); the highest basic leaf.
pub const LEAF_STRUCTURED: u32 = 7;
/// The highest basic leaf. Leaves 2 to 6 (caches, MONITOR, power management) describe
/// nothing Popek has and answer zeros.
pub const MAX_BASIC_LEAF: u32 = LEAF_STRUCTURED;
/// Leaf 0x8000_0000: highest extended leaf.
pub const LEAF_EXT_MAX: u32 = 0x8000_0000;
/// Leaf 0x8000_0001: extended feature bits (long mode, NX, SYSCALL).
pub const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
/// Leaves 0x8000_0002 to 0x8000_0004: the processor brand string, 16 bytes each.
pub const LEAF_BRAND: [u32; 3] = [0x8000_0002, 0x8000_0003, 0x8000_0004];
/// Leaf 0x8000_0008: physical and linear address widths.
pub const LEAF_ADDRESS_SIZES: u32 = 0x8000_0008;
/// The vendor string, returned in EBX, EDX, ECX order: a real vendor, whose documented
/// behaviour (the SDM) Popek follows.
pub const VENDOR: &[u8; 12] = b"GenuineIntel";
/// The brand string of leaves 0x8000_0002 to 0x8000_0004, NUL-padded: where a guest that
/// prints its processor's name finds Popek's.
pub const BRAND: &[u8; 48] =
    b"Popek virtual CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
/// Leaf 1 EAX: family 6, model 15, stepping 0 — a P6-class processor recent enough that
/// operating systems trust its SYSENTER (family 6 below model 3 had a broken one).
pub const FAMILY_MODEL_STEPPING: u32 = (6 << 8) | (15 << 4);
/// Leaf 1 EDX bit: an x87 FPU on chip.
pub const EDX_FPU: u32 = 1 << 0;
/// Leaf 1 EDX bit: debugging extensions (CR4.DE).
pub const EDX_DE: u32 = 1 << 2;
/// Leaf 1 EDX bit: 4 MiB pages (CR4.PSE).
pub const EDX_PSE: u32 = 1 << 3;
/// Leaf 1 EDX bit: RDMSR/WRMSR.
pub const EDX_MSR: u32 = 1 << 5;
/// Leaf 1 EDX bit: physical address extension (CR4.PAE).
pub const EDX_PAE: u32 = 1 << 6;
/// Leaf 1 EDX bit: an on-chip local APIC (at IA32_APIC_BASE, 0xFEE0_0000 at reset).
pub const EDX_APIC: u32 = 1 << 9;
/// Leaf 1 EDX bit: SYSENTER/SYSEXIT.
pub const EDX_SEP: u32 = 1 << 11;
/// Leaf 1 EDX bit: memory type range registers (IA32_MTRRCAP and the MTRR MSRs).
pub const EDX_MTRR: u32 = 1 << 12;
/// Leaf 1 EDX bit: the page attribute table (IA32_PAT).
pub const EDX_PAT: u32 = 1 << 16;
/// Leaf 1 EDX bit: global pages (CR4.PGE).
pub const EDX_PGE: u32 = 1 << 13;
/// Leaf 1 EDX bit: time-stamp counter (RDTSC).
pub const EDX_TSC: u32 = 1 << 4;
/// Leaf 1 EDX bit: CMPXCHG8B.
pub const EDX_CX8: u32 = 1 << 8;
/// Leaf 1 EDX bit: CMOVcc.
pub const EDX_CMOV: u32 = 1 << 15;
/// Leaf 1 EDX bit: MMX.
pub const EDX_MMX: u32 = 1 << 23;
/// Leaf 1 EDX bit: FXSAVE/FXRSTOR and CR4.OSFXSR.
pub const EDX_FXSR: u32 = 1 << 24;
/// Leaf 1 EDX bit: SSE.
pub const EDX_SSE: u32 = 1 << 25;
/// Leaf 1 EDX bit: SSE2.
pub const EDX_SSE2: u32 = 1 << 26;
/// Leaf 1 EDX: the features every engine implements. The SSE/SSE2 integer and move
/// instructions are all there; their floating-point arithmetic is not yet in the
/// interpreter. FPU (bit 0) and MMX (bit 23) stay clear: the interpreter has the x87
/// state and control instructions but no x87 arithmetic, and no MMX. MTRR and PAT are
/// their MSRs: Popek keeps them (memory types change nothing in an emulator's memory).
pub const FEATURES_EDX: u32 = EDX_DE
    | EDX_PSE
    | EDX_TSC
    | EDX_MSR
    | EDX_PAE
    | EDX_CX8
    | EDX_APIC
    | EDX_SEP
    | EDX_MTRR
    | EDX_PGE
    | EDX_CMOV
    | EDX_PAT
    | EDX_FXSR
    | EDX_SSE
    | EDX_SSE2;
/// Leaf 1 ECX bit: the processor runs under a hypervisor, which describes itself in the
/// leaves from 0x4000_0000 (the bit no real processor sets).
pub const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: the hypervisor bit; none of SSE3's or later features.
pub const FEATURES_ECX: u32 = ECX_HYPERVISOR;
/// Leaf 7 sub-leaf 0 EBX bit: IA32_TSC_ADJUST.
pub const STRUCTURED_EBX_TSC_ADJUST: u32 = 1 << 1;
/// Leaf 7 sub-leaf 0 EBX: the structured extended features every engine implements.
pub const STRUCTURED_EBX: u32 = STRUCTURED_EBX_TSC_ADJUST;
/// Leaf 0x8000_0001 ECX bit: LAHF/SAHF in 64-bit mode.
pub const EXT_ECX_LAHF_LM: u32 = 1 << 0;
/// Leaf 0x8000_0001 EDX bit: SYSCALL/SYSRET.
pub const EXT_EDX_SYSCALL: u32 = 1 << 11;
/// Leaf 0x8000_0001 EDX bit: no-execute pages (EFER.NXE).
pub const EXT_EDX_NX: u32 = 1 << 20;
/// Leaf 0x8000_0001 EDX bit: RDTSCP.
pub const EXT_EDX_RDTSCP: u32 = 1 << 27;
/// Leaf 0x8000_0001 EDX bit: long mode (EFER.LME).
pub const EXT_EDX_LM: u32 = 1 << 29;
/// Leaf 0x8000_0001 EDX: the extended features every engine implements.
pub const EXT_FEATURES_EDX: u32 = EXT_EDX_SYSCALL | EXT_EDX_NX | EXT_EDX_RDTSCP | EXT_EDX_LM;
/// Leaf 0x8000_0008 EAX: 48-bit linear and 40-bit physical addresses (the MAXPHYADDR
/// the page walker enforces).
pub const ADDRESS_SIZES: u32 = (48 << 8) | 40;

/// Whether the processor this table describes has `feature`, as iced-x86 names what an
/// instruction needs: the 8086 to 486 instruction set (not what later processors
/// dropped, such as LOADALL or the 386's IBTS), what every family-6 processor has (the
/// long NOP, CPUID, RDPMC, and PAUSE, a NOP where it predates it), and every feature
/// whose bit the table sets.
pub fn advertises(feature: CpuidFeature) -> bool {
    use CpuidFeature as F;
    let edx = |bit: u32| FEATURES_EDX & bit != 0;
    let ext_edx = |bit: u32| EXT_FEATURES_EDX & bit != 0;
    match feature {
        F::INTEL8086 | F::INTEL186 | F::INTEL286 | F::INTEL386 | F::INTEL486 => true,
        // Family 6 has these without a feature bit of their own.
        F::CPUID | F::MULTIBYTENOP | F::PAUSE | F::RDPMC => true,
        F::FPU | F::FPU287 | F::FPU387 => edx(EDX_FPU),
        F::TSC => edx(EDX_TSC),
        F::MSR => edx(EDX_MSR),
        F::CX8 => edx(EDX_CX8),
        F::SEP => edx(EDX_SEP),
        F::CMOV => edx(EDX_CMOV),
        F::MMX => edx(EDX_MMX),
        F::FXSR => edx(EDX_FXSR),
        F::SSE => edx(EDX_SSE),
        F::SSE2 => edx(EDX_SSE2),
        F::SYSCALL => ext_edx(EXT_EDX_SYSCALL),
        F::RDTSCP => ext_edx(EXT_EDX_RDTSCP),
        F::X64 => ext_edx(EXT_EDX_LM),
        _ => false,
    }
}

/// The leaves the table defines, for engines that load it up front (each at sub-leaf 0;
/// [`INDEXED_LEAVES`] says which answer by sub-leaf).
pub const LEAVES: [u32; 17] = [
    LEAF_VENDOR,
    LEAF_FEATURES,
    2,
    3,
    4,
    5,
    6,
    LEAF_STRUCTURED,
    LEAF_EXT_MAX,
    LEAF_EXT_FEATURES,
    LEAF_BRAND[0],
    LEAF_BRAND[1],
    LEAF_BRAND[2],
    0x8000_0005,
    0x8000_0006,
    0x8000_0007,
    LEAF_ADDRESS_SIZES,
];

/// The leaves whose answer depends on the sub-leaf in ECX (the others ignore it).
pub const INDEXED_LEAVES: [u32; 1] = [LEAF_STRUCTURED];

/// The hypervisor leaves (0x4000_0000 up): Popek's signature and para-virtualization
/// interface (`docs/guest-abi.md`). Leaves the processor table does not define.
pub const HYPERVISOR_LEAVES: [u32; 2] = [pv::LEAF_SIGNATURE, pv::LEAF_INTERFACE];

/// EAX, EBX, ECX, EDX of a hypervisor leaf, if `leaf` is one.
pub fn hypervisor_leaf(leaf: u32) -> Option<[u32; 4]> {
    let word = |i: usize| {
        let s = pv::SIGNATURE;
        u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]])
    };
    match leaf {
        pv::LEAF_SIGNATURE => Some([pv::LEAF_INTERFACE, word(0), word(4), word(8)]),
        pv::LEAF_INTERFACE => Some([pv::VERSION, pv::MSR_HYPERCALL_PAGE, pv::HC_COUNT, 0]),
        _ => None,
    }
}

/// EAX, EBX, ECX, EDX for `leaf` at sub-leaf 0 (see [`cpuid_indexed`]).
pub fn cpuid(leaf: u32) -> [u32; 4] {
    cpuid_indexed(leaf, 0)
}

/// EAX, EBX, ECX, EDX for `leaf` and sub-leaf `index` (ECX). A leaf above the highest
/// basic or extended leaf (and not a hypervisor leaf) answers as the highest basic leaf
/// does, Intel's rule (SDM Vol. 2A, CPUID: "If a value entered for CPUID.EAX is higher
/// than the maximum input value ... the data for the highest basic information leaf is
/// returned").
pub fn cpuid_indexed(leaf: u32, index: u32) -> [u32; 4] {
    if let Some(regs) = hypervisor_leaf(leaf) {
        return regs;
    }
    let word = |s: &[u8], i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    match leaf {
        LEAF_VENDOR => [
            MAX_BASIC_LEAF,
            word(VENDOR, 0),
            word(VENDOR, 8),
            word(VENDOR, 4),
        ],
        LEAF_FEATURES => [FAMILY_MODEL_STEPPING, 0, FEATURES_ECX, FEATURES_EDX],
        // Sub-leaf 0 gives the highest sub-leaf (0) in EAX; the others are zero.
        LEAF_STRUCTURED if index == 0 => [0, STRUCTURED_EBX, 0, 0],
        2..=MAX_BASIC_LEAF => [0; 4],
        LEAF_EXT_MAX => [LEAF_ADDRESS_SIZES, 0, 0, 0],
        LEAF_EXT_FEATURES => [0, 0, EXT_ECX_LAHF_LM, EXT_FEATURES_EDX],
        0x8000_0002..=0x8000_0004 => {
            let at = (leaf - LEAF_BRAND[0]) as usize * 16;
            std::array::from_fn(|i| word(BRAND, at + 4 * i))
        }
        LEAF_ADDRESS_SIZES => [ADDRESS_SIZES, 0, 0, 0],
        // Caches, TLBs and power management: nothing to describe.
        0x8000_0005..=0x8000_0007 => [0; 4],
        _ => cpuid_indexed(MAX_BASIC_LEAF, index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_reads_in_ebx_edx_ecx_order() {
        let [_, b, c, d] = cpuid(LEAF_VENDOR);
        let mut s = Vec::new();
        for r in [b, d, c] {
            s.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&s, VENDOR);
    }

    #[test]
    fn the_brand_string_reads_in_leaf_order() {
        let s: Vec<u8> = LEAF_BRAND
            .iter()
            .flat_map(|&l| cpuid(l))
            .flat_map(u32::to_le_bytes)
            .collect();
        assert_eq!(&s[..18], b"Popek virtual CPU\0");
    }

    #[test]
    fn leaves_past_the_highest_answer_as_the_highest_basic_leaf() {
        let highest = cpuid(MAX_BASIC_LEAF);
        assert_eq!(highest, [0, STRUCTURED_EBX, 0, 0]);
        for leaf in [MAX_BASIC_LEAF + 1, 0x1000, LEAF_ADDRESS_SIZES + 1, u32::MAX] {
            assert_eq!(cpuid(leaf), highest, "{leaf:#x}");
        }
        assert_eq!(cpuid_indexed(MAX_BASIC_LEAF + 1, 1), [0; 4], "sub-leaf 1");
        assert_eq!(cpuid(0).first(), Some(&MAX_BASIC_LEAF));
    }

    #[test]
    fn leaf_1_announces_a_hypervisor() {
        let [_, _, ecx, _] = cpuid(LEAF_FEATURES);
        assert_ne!(ecx & ECX_HYPERVISOR, 0);
    }

    #[test]
    fn hypervisor_signature_reads_in_ebx_ecx_edx_order() {
        let [max, b, c, d] = cpuid(pv::LEAF_SIGNATURE);
        assert_eq!(max, pv::LEAF_INTERFACE);
        let s: Vec<u8> = [b, c, d].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&s[..], b"PopekPopekVM");
        assert_eq!(cpuid(pv::LEAF_INTERFACE)[1], pv::MSR_HYPERCALL_PAGE);
    }
}

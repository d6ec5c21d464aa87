//! The CPUID the popek-pc processor reports, whichever engine runs it.
//!
//! Every engine answers CPUID from this one table (the interpreter directly, KVM through
//! KVM_SET_CPUID2), so a guest sees the same processor under each and may only use what
//! every engine implements.

use crate::pv::abi as pv;
use iced_x86::CpuidFeature;

/// Leaf 0: highest basic leaf and vendor string.
pub const LEAF_VENDOR: u32 = 0;
/// Leaf 1: family/model/stepping and feature bits.
pub const LEAF_FEATURES: u32 = 1;
/// Leaf 0x8000_0000: highest extended leaf.
pub const LEAF_EXT_MAX: u32 = 0x8000_0000;
/// Leaf 0x8000_0001: extended feature bits (long mode, NX, SYSCALL).
pub const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
/// Leaf 0x8000_0008: physical and linear address widths.
pub const LEAF_ADDRESS_SIZES: u32 = 0x8000_0008;
/// The vendor string, returned in EBX, EDX, ECX order.
pub const VENDOR: &[u8; 12] = b"PopekVirtCPU";
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
/// Leaf 1 EDX bit: SYSENTER/SYSEXIT.
pub const EDX_SEP: u32 = 1 << 11;
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
/// state and control instructions but no x87 arithmetic, and no MMX.
pub const FEATURES_EDX: u32 = EDX_DE
    | EDX_PSE
    | EDX_TSC
    | EDX_MSR
    | EDX_PAE
    | EDX_CX8
    | EDX_SEP
    | EDX_PGE
    | EDX_CMOV
    | EDX_FXSR
    | EDX_SSE
    | EDX_SSE2;
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

/// The leaves the table defines, for engines that load it up front.
pub const LEAVES: [u32; 5] = [
    LEAF_VENDOR,
    LEAF_FEATURES,
    LEAF_EXT_MAX,
    LEAF_EXT_FEATURES,
    LEAF_ADDRESS_SIZES,
];

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

/// EAX, EBX, ECX, EDX for `leaf` (sub-leaf ignored: no defined leaf has sub-leaves).
pub fn cpuid(leaf: u32) -> [u32; 4] {
    if let Some(regs) = hypervisor_leaf(leaf) {
        return regs;
    }
    let word =
        |i: usize| u32::from_le_bytes([VENDOR[i], VENDOR[i + 1], VENDOR[i + 2], VENDOR[i + 3]]);
    match leaf {
        LEAF_VENDOR => [LEAF_FEATURES, word(0), word(8), word(4)],
        LEAF_FEATURES => [FAMILY_MODEL_STEPPING, 0, 0, FEATURES_EDX],
        LEAF_EXT_MAX => [LEAF_ADDRESS_SIZES, 0, 0, 0],
        LEAF_EXT_FEATURES => [0, 0, EXT_ECX_LAHF_LM, EXT_FEATURES_EDX],
        LEAF_ADDRESS_SIZES => [ADDRESS_SIZES, 0, 0, 0],
        _ => [0; 4],
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
    fn hypervisor_signature_reads_in_ebx_ecx_edx_order() {
        let [max, b, c, d] = cpuid(pv::LEAF_SIGNATURE);
        assert_eq!(max, pv::LEAF_INTERFACE);
        let s: Vec<u8> = [b, c, d].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&s[..], b"PopekPopekVM");
        assert_eq!(cpuid(pv::LEAF_INTERFACE)[1], pv::MSR_HYPERCALL_PAGE);
    }
}

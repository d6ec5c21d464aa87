//! The architectural state of one x86 vCPU, as every engine sees it.
//!
//! This is the state an engine hands over when a paused machine moves from one engine to
//! another, and what the debugger and the GUI show. Engines keep their own working copy in
//! whatever form is fastest for them (the interpreter keeps its flags lazily, KVM keeps
//! them in the kernel) and convert at the boundary.

use crate::x86::flags::Flags;
use serde::{Deserialize, Serialize};
use std::ops::Index;

/// EFLAGS/RFLAGS bits.
pub mod rflags {
    /// Carry flag: unsigned overflow of the last arithmetic operation.
    pub const CF: u64 = 1 << 0;
    /// Reserved bit 1, always reads as 1.
    pub const FIXED: u64 = 1 << 1;
    /// Parity flag: the low byte of the result has an even number of set bits.
    pub const PF: u64 = 1 << 2;
    /// Adjust flag: carry out of bit 3 (for BCD arithmetic).
    pub const AF: u64 = 1 << 4;
    /// Zero flag: the result was zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign flag: the top bit of the result.
    pub const SF: u64 = 1 << 7;
    /// Trap flag: single-step, a #DB after every instruction.
    pub const TF: u64 = 1 << 8;
    /// Interrupt flag: maskable interrupts are delivered.
    pub const IF: u64 = 1 << 9;
    /// Direction flag: string instructions walk downwards.
    pub const DF: u64 = 1 << 10;
    /// Overflow flag: signed overflow of the last arithmetic operation.
    pub const OF: u64 = 1 << 11;
    /// I/O privilege level (two bits): the CPL at or below which IN/OUT/CLI/STI are allowed.
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume flag: suppress instruction breakpoints for one instruction.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check (with CR0.AM at CPL 3).
    pub const AC: u64 = 1 << 18;
    /// Virtual interrupt flag.
    pub const VIF: u64 = 1 << 19;
    /// Virtual interrupt pending.
    pub const VIP: u64 = 1 << 20;
    /// CPUID is available (the bit can be toggled).
    pub const ID: u64 = 1 << 21;
    /// The six status flags the arithmetic instructions compute.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
    /// Bits software can change with POPF at CPL 0 on a 32-bit CPU with CPUID.
    pub const WRITABLE: u64 = ARITH | TF | IF | DF | IOPL | NT | RF | AC | VIF | VIP | ID;
}

/// CR0 bits.
pub mod cr0 {
    /// Protection enable: protected mode.
    pub const PE: u64 = 1 << 0;
    /// Monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// x87 emulation: FPU instructions raise #NM.
    pub const EM: u64 = 1 << 2;
    /// Task switched: the next FPU instruction raises #NM.
    pub const TS: u64 = 1 << 3;
    /// Extension type (always 1 on modern CPUs).
    pub const ET: u64 = 1 << 4;
    /// Numeric error: report x87 errors as #MF.
    pub const NE: u64 = 1 << 5;
    /// Write protect: supervisor writes honour read-only pages.
    pub const WP: u64 = 1 << 16;
    /// Alignment mask: enables EFLAGS.AC checking.
    pub const AM: u64 = 1 << 18;
    /// Not write-through (cache control; only its combination with CD is checked).
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
    /// The bits MOV to CR0 can change; writes to the other bits of 31:0 are ignored.
    pub const WRITABLE: u64 = PE | MP | EM | TS | NE | WP | AM | NW | CD | PG;
}

/// CR4 bits.
pub mod cr4 {
    /// Time-stamp disable: RDTSC and RDTSCP only at CPL 0.
    pub const TSD: u64 = 1 << 2;
    /// Debug extensions: DR4/DR5 references raise #UD instead of aliasing DR6/DR7.
    pub const DE: u64 = 1 << 3;
    /// Page size extension: 4 MiB pages in 32-bit paging.
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension: 64-bit page-table entries.
    pub const PAE: u64 = 1 << 5;
    /// Machine-check enable (Popek raises no machine checks, so the bit is only stored).
    pub const MCE: u64 = 1 << 6;
    /// Global pages survive CR3 reloads.
    pub const PGE: u64 = 1 << 7;
    /// Performance-counter enable: RDPMC at any CPL.
    pub const PCE: u64 = 1 << 8;
    /// The OS saves SSE state with FXSAVE: SSE instructions are enabled (else #UD).
    pub const OSFXSR: u64 = 1 << 9;
    /// The OS handles #XM: unmasked SIMD floating-point exceptions raise #XM, not #UD.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// The bits Popek accepts; setting any other bit raises #GP, as a processor without
    /// the feature does (no VME/PVI: virtual-8086 mode is not implemented).
    pub const SUPPORTED: u64 = TSD | DE | PSE | PAE | MCE | PGE | PCE | OSFXSR | OSXMMEXCPT;
}

/// IA32_EFER bits.
pub mod efer {
    /// SYSCALL/SYSRET enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable (takes effect when paging is turned on).
    pub const LME: u64 = 1 << 8;
    /// Long mode active (set by the processor).
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable: page-table bit 63 forbids instruction fetches.
    pub const NXE: u64 = 1 << 11;
    /// The bits WRMSR may set (LMA is read-only: writes keep its current value).
    pub const WRITABLE: u64 = SCE | LME | NXE;
}

/// Debug status register (DR6) bits.
pub mod dr6 {
    /// B0: breakpoint 0's condition was met (B1-B3 follow at bits 1-3).
    pub const B0: u64 = 1 << 0;
    /// B0-B3 together.
    pub const BREAKPOINTS: u64 = 0xF;
    /// BD: a MOV DR was detected with DR7.GD set.
    pub const BD: u64 = 1 << 13;
    /// BS: the #DB is a single-step trap (EFLAGS.TF).
    pub const BS: u64 = 1 << 14;
    /// BT: the #DB came from a task switch to a TSS with the T bit.
    pub const BT: u64 = 1 << 15;
    /// Reserved bits that read as 1 (4-11 and 16-31).
    pub const FIXED: u64 = 0xFFFF_0FF0;
    /// The status bits software can write.
    pub const WRITABLE: u64 = BREAKPOINTS | BD | BS | BT;
}

/// Debug control register (DR7) fields.
pub mod dr7 {
    /// The local and global enable bits of the four breakpoints (L0 G0 L1 G1 ...).
    pub const ENABLES: u64 = 0xFF;
    /// Bits per breakpoint in [`ENABLES`] (Ln and Gn).
    pub const ENABLE_BITS: u32 = 2;
    /// LE and GE: exact-breakpoint hints, ignored by modern processors.
    pub const EXACT: u64 = 3 << 8;
    /// Reserved bit 10, reads as 1.
    pub const FIXED: u64 = 1 << 10;
    /// GD: general detect, MOV DR raises #DB (Popek stores it but does not act on it).
    pub const GD: u64 = 1 << 13;
    /// R/W and LEN fields of the four breakpoints (bits 16-31).
    pub const CONDITIONS: u64 = 0xFFFF_0000;
    /// The bits software can write.
    pub const WRITABLE: u64 = ENABLES | EXACT | GD | CONDITIONS;
    /// Breakpoint n's R/W field starts at bit RW_SHIFT + FIELD_BITS * n.
    pub const RW_SHIFT: u32 = 16;
    /// Breakpoint n's LEN field starts at bit LEN_SHIFT + FIELD_BITS * n.
    pub const LEN_SHIFT: u32 = 18;
    /// Bits of R/W and LEN per breakpoint.
    pub const FIELD_BITS: u32 = 4;
    /// R/W and LEN are two bits wide each.
    pub const FIELD_MASK: u64 = 3;
    /// R/W = 00: break on instruction execution.
    pub const RW_EXECUTE: u64 = 0;
    /// R/W = 01: break on data writes.
    pub const RW_WRITE: u64 = 1;
    /// R/W = 11: break on data reads or writes.
    pub const RW_READ_WRITE: u64 = 3;
    /// The size in bytes each LEN encoding watches (10 means 8 bytes, 11 means 4).
    pub const LEN_BYTES: [u64; 4] = [1, 2, 8, 4];
}

/// Model-specific register numbers (ECX of RDMSR and WRMSR).
pub mod msr {
    /// IA32_TIME_STAMP_COUNTER: the counter RDTSC reads.
    pub const TSC: u32 = 0x10;
    /// IA32_PLATFORM_ID: the platform a microcode update is for (read-only).
    pub const PLATFORM_ID: u32 = 0x17;
    /// IA32_APIC_BASE: where the local APIC is and whether it is enabled.
    pub const APIC_BASE: u32 = 0x1B;
    /// IA32_TSC_ADJUST: what software added to the time-stamp counter.
    pub const TSC_ADJUST: u32 = 0x3B;
    /// IA32_BIOS_SIGN_ID: the loaded microcode revision (high half).
    pub const BIOS_SIGN_ID: u32 = 0x8B;
    /// IA32_MTRRCAP: how many variable MTRRs there are, and fixed and write-combining
    /// support (read-only).
    pub const MTRRCAP: u32 = 0xFE;
    /// IA32_MISC_ENABLE: fast strings and what the processor lacks (BTS, PEBS).
    pub const MISC_ENABLE: u32 = 0x1A0;
    /// IA32_MTRR_PHYSBASE0; PHYSMASK0 follows, then base and mask of each next pair.
    pub const MTRR_PHYS_BASE0: u32 = 0x200;
    /// IA32_MTRR_FIX64K_00000: memory types of 0..0x80000, 64 KiB a byte.
    pub const MTRR_FIX64K_00000: u32 = 0x250;
    /// IA32_MTRR_FIX16K_80000 (and A0000 at the next number): 16 KiB a byte.
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    /// IA32_MTRR_FIX4K_C0000 (to F8000 at 0x26F): 4 KiB a byte.
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    /// IA32_PAT: the eight memory types the page tables' PAT, PCD and PWT bits select.
    pub const PAT: u32 = 0x277;
    /// IA32_MTRR_DEF_TYPE: the default memory type and the MTRR enables.
    pub const MTRR_DEF_TYPE: u32 = 0x2FF;
    /// IA32_SYSENTER_CS: the kernel code selector SYSENTER loads.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP: the kernel stack pointer SYSENTER loads.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP: the kernel entry point SYSENTER jumps to.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_EFER: long mode, NX and SYSCALL enables.
    pub const EFER: u32 = 0xC000_0080;
    /// STAR: SYSCALL/SYSRET selectors.
    pub const STAR: u32 = 0xC000_0081;
    /// LSTAR: the 64-bit SYSCALL target.
    pub const LSTAR: u32 = 0xC000_0082;
    /// CSTAR: the compatibility-mode SYSCALL target.
    pub const CSTAR: u32 = 0xC000_0083;
    /// SFMASK (IA32_FMASK): RFLAGS bits SYSCALL clears.
    pub const SFMASK: u32 = 0xC000_0084;
    /// FS.base.
    pub const FS_BASE: u32 = 0xC000_0100;
    /// GS.base.
    pub const GS_BASE: u32 = 0xC000_0101;
    /// KERNEL_GS_BASE: what SWAPGS exchanges with GS.base.
    pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
    /// IA32_TSC_AUX: the value RDTSCP returns in ECX (an OS puts the CPU number there).
    pub const TSC_AUX: u32 = 0xC000_0103;
}

/// The six segment registers, in the order of their encoding in instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegReg {
    /// Extra segment (string destinations).
    Es = 0,
    /// Code segment.
    Cs = 1,
    /// Stack segment.
    Ss = 2,
    /// Data segment (the default).
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

impl SegReg {
    /// All six, in encoding order (the order of [`SegRegs::all`]).
    pub const ALL: [SegReg; 6] = [
        SegReg::Es,
        SegReg::Cs,
        SegReg::Ss,
        SegReg::Ds,
        SegReg::Fs,
        SegReg::Gs,
    ];
}

/// A segment register: the visible selector and the hidden descriptor cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Segment {
    /// The selector software loaded.
    pub selector: u16,
    /// Linear base address from the descriptor.
    pub base: u64,
    /// Limit in bytes (already scaled by the granularity bit).
    pub limit: u32,
    /// Descriptor attributes: type (bits 0-3), S (4), DPL (5-6), P (7), AVL (8), L (9),
    /// D/B (10), G (11) — the layout of bits 40-47 and 52-55 of a descriptor.
    pub attr: u16,
}

impl Segment {
    /// Attribute bits: the descriptor type.
    pub const TYPE: u16 = 0xF;
    /// Attribute bit: descriptor present.
    pub const PRESENT: u16 = 1 << 7;
    /// Attribute bit: code/data (not system) descriptor.
    pub const CODE_DATA: u16 = 1 << 4;
    /// Attribute bit: 64-bit code segment.
    pub const LONG: u16 = 1 << 9;
    /// Attribute bit: default operand size 32 bits (code) or 32-bit stack (SS).
    pub const DB: u16 = 1 << 10;
    /// Attribute bit: limit counted in 4 KiB units.
    pub const GRANULARITY: u16 = 1 << 11;
    /// Type bits for an execute/read code segment, accessed.
    pub const TYPE_CODE_RX: u16 = 0xB;
    /// Type bits for a read/write data segment, accessed.
    pub const TYPE_DATA_RW: u16 = 0x3;

    /// A flat 4 GiB segment of the given type, DPL 0, 32-bit — what Multiboot leaves.
    pub fn flat32(selector: u16, type_bits: u16) -> Self {
        Segment {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            attr: type_bits | Self::CODE_DATA | Self::PRESENT | Self::DB | Self::GRANULARITY,
        }
    }

    /// Descriptor privilege level.
    pub fn dpl(&self) -> u8 {
        ((self.attr >> 5) & 3) as u8
    }

    /// Whether no access through this segment can fail the checks, in any mode: a present read/write
    /// expand-up data segment with a 4 GiB limit.
    pub fn is_flat(&self) -> bool {
        let kind = Segment::PRESENT
            | Segment::CODE_DATA
            | code_data::CODE
            | code_data::EXPAND_DOWN
            | code_data::WRITABLE_READABLE;
        let read_write = Segment::PRESENT | Segment::CODE_DATA | code_data::WRITABLE_READABLE;
        self.limit == u32::MAX && self.attr & kind == read_write
    }
}

/// GDTR or IDTR: where a descriptor table lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes (size - 1).
    pub limit: u16,
}

/// Code/data type bits (S = 1).
pub mod code_data {
    /// Accessed.
    pub const ACCESSED: u16 = 1 << 0;
    /// Data: writable. Code: readable.
    pub const WRITABLE_READABLE: u16 = 1 << 1;
    /// Code: conforming.
    pub const CONFORMING: u16 = 1 << 2;
    /// Data: expand-down (the bit code segments use for [`CONFORMING`]).
    pub const EXPAND_DOWN: u16 = 1 << 2;
    /// Code segment.
    pub const CODE: u16 = 1 << 3;
}

/// The six segment registers, each with a precomputed bit saying whether a data access
/// through it needs segmentation's limit and type checks (outside 64-bit mode; see
/// [`crate::x86::segaccess`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[Segment; 6]", into = "[Segment; 6]")]
pub struct SegRegs {
    /// ES, CS, SS, DS, FS, GS (indexed by [`SegReg`]).
    regs: [Segment; 6],
    /// Bit n set: segment register n is not flat, its accesses are checked.
    checked: u8,
}

impl Default for SegRegs {
    fn default() -> Self {
        SegRegs::new([Segment::default(); 6])
    }
}

impl Index<SegReg> for SegRegs {
    type Output = Segment;

    #[inline(always)]
    fn index(&self, seg: SegReg) -> &Segment {
        &self.regs[seg as usize]
    }
}

impl SegRegs {
    /// Segment registers holding `regs` (in [`SegReg`] order).
    pub fn new(regs: [Segment; 6]) -> Self {
        let checked = regs
            .iter()
            .enumerate()
            .fold(0, |bits, (i, s)| bits | (u8::from(!s.is_flat()) << i));
        SegRegs { regs, checked }
    }

    /// All six, in [`SegReg`] order.
    pub fn all(&self) -> [Segment; 6] {
        self.regs
    }

    /// Loads segment register `seg` (selector and hidden part).
    #[inline]
    pub fn set(&mut self, seg: SegReg, s: Segment) {
        let bit = 1 << seg as u8;
        self.checked = (self.checked & !bit) | if s.is_flat() { 0 } else { bit };
        self.regs[seg as usize] = s;
    }

    /// Changes segment register `seg` in place (a debugger, a test), keeping what
    /// accesses through it must check right.
    pub fn modify(&mut self, seg: SegReg, f: impl FnOnce(&mut Segment)) {
        let mut s = self.regs[seg as usize];
        f(&mut s);
        self.set(seg, s);
    }

    /// Changes only the base (WRMSR to FS.base or GS.base, SWAPGS): neither the limit nor
    /// the type, so not whether checks are needed.
    pub fn set_base(&mut self, seg: SegReg, base: u64) {
        self.regs[seg as usize].base = base;
    }

    /// Whether accesses through `seg` must be checked (outside 64-bit mode).
    #[inline(always)]
    pub fn needs_checks(&self, seg: SegReg) -> bool {
        self.checked & (1 << seg as u8) != 0
    }
}

impl Index<usize> for SegRegs {
    type Output = Segment;

    fn index(&self, i: usize) -> &Segment {
        &self.regs[i]
    }
}

impl From<[Segment; 6]> for SegRegs {
    fn from(regs: [Segment; 6]) -> Self {
        SegRegs::new(regs)
    }
}

impl From<SegRegs> for [Segment; 6] {
    fn from(s: SegRegs) -> Self {
        s.regs
    }
}

/// The model-specific registers the guests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msrs {
    /// IA32_SYSENTER_CS: the kernel code selector SYSENTER loads.
    pub sysenter_cs: u64,
    /// IA32_SYSENTER_ESP: the kernel stack pointer SYSENTER loads.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP: the kernel entry point SYSENTER jumps to.
    pub sysenter_eip: u64,
    /// STAR: SYSCALL/SYSRET selectors (and the 32-bit SYSCALL target).
    pub star: u64,
    /// LSTAR: the 64-bit SYSCALL target.
    pub lstar: u64,
    /// CSTAR: the compatibility-mode SYSCALL target.
    pub cstar: u64,
    /// SFMASK: RFLAGS bits SYSCALL clears.
    pub fmask: u64,
    /// KERNEL_GS_BASE: what SWAPGS exchanges with GS.base.
    pub kernel_gs_base: u64,
    /// The time-stamp counter.
    pub tsc: u64,
    /// IA32_TSC_AUX: what RDTSCP returns in ECX.
    pub tsc_aux: u64,
    /// IA32_TSC_ADJUST: the sum of what writes to it and to IA32_TSC added to the counter.
    pub tsc_adjust: u64,
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_APIC_BASE: the local APIC's page, its global enable, and BSP.
    pub apic_base: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// The fixed-range MTRRs, in MSR order (FIX64K_00000, FIX16K_80000, FIX16K_A0000,
    /// FIX4K_C0000 to FIX4K_F8000).
    pub mtrr_fixed: [u64; MTRR_FIXED_COUNT],
    /// The variable-range MTRRs in MSR order: PHYSBASE0, PHYSMASK0, PHYSBASE1, ...
    pub mtrr_var: [u64; 2 * MTRR_VAR_COUNT],
}

/// How many variable-range MTRR pairs the processor has (IA32_MTRRCAP.VCNT).
pub const MTRR_VAR_COUNT: usize = 8;
/// How many fixed-range MTRRs there are: one 64K, two 16K, eight 4K.
pub const MTRR_FIXED_COUNT: usize = 11;

/// IA32_MISC_ENABLE bits.
pub mod misc_enable {
    /// Fast-strings enable (REP MOVS/STOS in larger units; no visible effect here).
    pub const FAST_STRINGS: u64 = 1 << 0;
    /// Branch trace storage unavailable (read-only).
    pub const BTS_UNAVAILABLE: u64 = 1 << 11;
    /// Processor event-based sampling unavailable (read-only).
    pub const PEBS_UNAVAILABLE: u64 = 1 << 12;
    /// The value at reset: fast strings on, neither BTS nor PEBS.
    pub const RESET: u64 = FAST_STRINGS | BTS_UNAVAILABLE | PEBS_UNAVAILABLE;
}

/// IA32_APIC_BASE fields.
pub mod apic_base {
    /// BSP: this is the bootstrap processor (read-only).
    pub const BSP: u64 = 1 << 8;
    /// Global enable: the local APIC is on.
    pub const ENABLE: u64 = 1 << 11;
    /// The architectural base of the APIC page.
    pub const DEFAULT_BASE: u64 = 0xFEE0_0000;
    /// The page-frame bits (below MAXPHYADDR, which the writer checks).
    pub const BASE_MASK: u64 = !0xFFF;
    /// The value at reset: the default page, enabled, bootstrap processor.
    pub const RESET: u64 = DEFAULT_BASE | ENABLE | BSP;
}

/// IA32_PAT's value at reset: WB, WT, UC-, UC, twice.
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

impl Default for Msrs {
    /// The MSRs at reset.
    fn default() -> Self {
        Msrs {
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            star: 0,
            lstar: 0,
            cstar: 0,
            fmask: 0,
            kernel_gs_base: 0,
            tsc: 0,
            tsc_aux: 0,
            tsc_adjust: 0,
            misc_enable: misc_enable::RESET,
            apic_base: apic_base::RESET,
            pat: PAT_RESET,
            mtrr_def_type: 0,
            mtrr_fixed: [0; MTRR_FIXED_COUNT],
            mtrr_var: [0; 2 * MTRR_VAR_COUNT],
        }
    }
}

/// Interrupt-shadow bits of [`CpuState::interrupt_shadow`]: what holds off maskable
/// interrupts (and, after MOV SS, debug traps) until the next instruction completes.
pub mod shadow {
    /// STI set IF: interrupts wait one more instruction, so `sti; hlt` cannot miss one.
    pub const STI: u8 = 1 << 0;
    /// MOV SS or POP SS loaded the stack segment: interrupts and single-step traps wait
    /// until the stack pointer is loaded too.
    pub const MOV_SS: u8 = 1 << 1;
}

/// An event the processor has accepted but not yet delivered to the guest (KVM reports
/// an interrupt injected but not yet taken); the next run delivers it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingEvent {
    /// A hardware interrupt acknowledged at the interrupt controller.
    Interrupt {
        /// Its vector.
        vector: u8,
    },
    /// An exception raised at the current instruction.
    Exception {
        /// Its vector.
        vector: u8,
        /// Its error code, if the vector has one.
        error_code: Option<u32>,
    },
}

/// The whole architectural state of one vCPU: what engines exchange when a paused
/// machine moves between them, what the debugger and the GUI show, what snapshots keep.
/// The software engines run on it directly ([`crate::x86::Vcpu`] wraps it): RFLAGS is
/// kept lazily and the segment registers know whether they need checks, but both read
/// and compare as their architectural values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15, in encoding order.
    pub gpr: [u64; 16],
    /// Instruction pointer (offset within CS).
    pub rip: u64,
    /// RFLAGS (its arithmetic flags evaluated when read).
    pub rflags: Flags,
    /// ES, CS, SS, DS, FS, GS (indexed by [`SegReg`]).
    pub seg: SegRegs,
    /// Local descriptor table register.
    pub ldtr: Segment,
    /// Task register.
    pub tr: Segment,
    /// Global descriptor table register.
    pub gdtr: DescriptorTable,
    /// Interrupt descriptor table register.
    pub idtr: DescriptorTable,
    /// CR0: protection, paging and FPU control.
    pub cr0: u64,
    /// CR2: the linear address of the last page fault.
    pub cr2: u64,
    /// CR3: the page-table root.
    pub cr3: u64,
    /// CR4: architecture extensions (PAE, PSE, OSFXSR, ...).
    pub cr4: u64,
    /// CR8: the task-priority register (64-bit mode; no local APIC consults it yet).
    pub cr8: u64,
    /// IA32_EFER: long mode, NX and SYSCALL enables.
    pub efer: u64,
    /// Debug registers DR0-DR7 (DR4/DR5 alias DR6/DR7 and stay zero).
    pub dr: [u64; 8],
    /// Model-specific registers.
    pub msr: Msrs,
    /// x87, MMX and SSE registers.
    pub fpu: FpuState,
    /// Interrupts are held off at this instruction boundary ([`shadow`] bits).
    pub interrupt_shadow: u8,
    /// An event accepted but not yet delivered.
    pub pending_event: Option<PendingEvent>,
    /// The processor is halted (HLT), waiting for an interrupt; RIP is past the HLT.
    pub halted: bool,
}

/// Byte offsets in the 512-byte FXSAVE image (Intel SDM Vol. 1, table 10-2).
pub mod fxsave {
    /// Size of the image.
    pub const SIZE: usize = 512;
    /// x87 control word (2 bytes).
    pub const FCW: usize = 0;
    /// x87 status word (2 bytes).
    pub const FSW: usize = 2;
    /// Abridged tag word (1 byte; byte 5 is reserved).
    pub const FTW: usize = 4;
    /// Last x87 opcode (2 bytes, 11 bits used).
    pub const FOP: usize = 6;
    /// Last x87 instruction pointer (8 bytes).
    pub const FIP: usize = 8;
    /// Last x87 data pointer (8 bytes).
    pub const FDP: usize = 16;
    /// MXCSR (4 bytes).
    pub const MXCSR: usize = 24;
    /// MXCSR_MASK: the MXCSR bits the processor supports (4 bytes).
    pub const MXCSR_MASK: usize = 28;
    /// ST0/MM0; each register takes a 16-byte slot, of which it uses 10.
    pub const ST: usize = 32;
    /// XMM0; each register takes 16 bytes.
    pub const XMM: usize = 160;
    /// Size of one ST or XMM slot.
    pub const SLOT: usize = 16;
    /// End of the XMM0-XMM7 area: all a legacy-mode (not 64-bit) FXSAVE stores.
    pub const LEGACY_END: usize = XMM + 8 * SLOT;
    /// End of the XMM0-XMM15 area: all a 64-bit-mode FXSAVE stores (the rest is
    /// reserved or left to software).
    pub const LONG_END: usize = XMM + 16 * SLOT;
}

/// x87 control word at reset and after FNINIT: all exceptions masked, 64-bit
/// precision, round to nearest.
pub const FCW_INIT: u16 = 0x037F;
/// MXCSR at reset: all SIMD exceptions masked, round to nearest.
pub const MXCSR_INIT: u32 = 0x1F80;
/// MXCSR bits Popek lets software set (all 16 defined ones, DAZ included); FXSAVE
/// stores it as MXCSR_MASK, and setting any other bit raises #GP(0).
pub const MXCSR_MASK: u32 = 0xFFFF;
/// FOP holds the low 11 bits of the last x87 opcode.
const FOP_MASK: u16 = 0x07FF;
/// FCW bits that exist: exception masks (0-5), precision (8-9), rounding (10-11) and
/// the vestigial infinity control (12); the others read back as zero...
const FCW_WRITABLE: u16 = 0x1F3F;
/// ...except reserved bit 6, which reads as one.
const FCW_ONE: u16 = 1 << 6;
/// FSW exception flags: invalid, denormal, zero divide, overflow, underflow, precision.
pub const FSW_EXCEPTIONS: u16 = 0x3F;
/// FSW stack fault flag.
pub const FSW_SF: u16 = 1 << 6;
/// FSW error summary: an unmasked exception is pending.
pub const FSW_ES: u16 = 1 << 7;
/// Position of FSW TOP.
const FSW_TOP_SHIFT: u32 = 11;
/// FSW TOP: the physical register that is ST(0) (three bits).
pub const FSW_TOP: u16 = 7 << FSW_TOP_SHIFT;
/// FSW busy bit (a copy of ES on every processor since the 387).
pub const FSW_B: u16 = 1 << 15;

/// The x87/MMX and SSE state: everything FXSAVE stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpuState {
    /// x87 control word: exception masks, precision and rounding control.
    pub fcw: u16,
    /// x87 status word: exception flags, condition codes, top of stack.
    pub fsw: u16,
    /// Abridged tag word, as FXSAVE stores it: bit i set = physical register i in use.
    pub ftw: u8,
    /// Last x87 opcode (11 bits).
    pub fop: u16,
    /// Last x87 instruction pointer, as FXSAVE stores it: the 64-bit offset in the
    /// 64-bit form, the 32-bit offset with the CS selector in bits 32-47 in the legacy
    /// form. Kept as the raw 8 bytes so both forms round-trip unchanged.
    pub fip: u64,
    /// Last x87 data pointer, likewise (DS selector in bits 32-47 in the legacy form).
    pub fdp: u64,
    /// The x87 data registers R0-R7 in physical order, 80 bits each, little-endian
    /// (MM0-MM7 are their low 64 bits). ST(i) is R((TOP + i) mod 8); FXSAVE stores
    /// them in ST order, so the image conversions rotate by TOP.
    pub regs: [[u8; 10]; 8],
    /// XMM0-XMM15 (XMM8-15 reachable in 64-bit mode only).
    pub xmm: [u128; 16],
    /// SSE control and status.
    pub mxcsr: u32,
}

impl Default for FpuState {
    /// The state FNINIT leaves, which is also how KVM resets a vCPU (a real processor
    /// powers up with FCW 0x0040 and leaves the FNINIT to the firmware).
    fn default() -> Self {
        FpuState {
            fcw: FCW_INIT,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            regs: [[0; 10]; 8],
            xmm: [0; 16],
            mxcsr: MXCSR_INIT,
        }
    }
}

impl FpuState {
    /// The 512-byte FXSAVE image of this state, XMM0-XMM15 included; reserved bytes
    /// are zero.
    pub fn to_fxsave(&self) -> [u8; fxsave::SIZE] {
        let mut img = [0u8; fxsave::SIZE];
        let mut put = |at: usize, bytes: &[u8]| img[at..at + bytes.len()].copy_from_slice(bytes);
        put(fxsave::FCW, &self.fcw.to_le_bytes());
        put(fxsave::FSW, &self.fsw.to_le_bytes());
        put(fxsave::FTW, &[self.ftw]);
        put(fxsave::FOP, &(self.fop & FOP_MASK).to_le_bytes());
        put(fxsave::FIP, &self.fip.to_le_bytes());
        put(fxsave::FDP, &self.fdp.to_le_bytes());
        put(fxsave::MXCSR, &self.mxcsr.to_le_bytes());
        put(fxsave::MXCSR_MASK, &MXCSR_MASK.to_le_bytes());
        for i in 0..8 {
            put(fxsave::ST + i * fxsave::SLOT, &self.regs[self.physical(i)]);
        }
        for (i, xmm) in self.xmm.iter().enumerate() {
            put(fxsave::XMM + i * fxsave::SLOT, &xmm.to_le_bytes());
        }
        img
    }

    /// The state an FXSAVE image describes (XMM0-XMM15 all loaded), as FXRSTOR loads
    /// it: the control word's reserved bits read back fixed, and the error summary
    /// follows the exception flags and masks. The caller checks MXCSR against
    /// [`MXCSR_MASK`] first: FXRSTOR faults on reserved bits.
    pub fn from_fxsave(img: &[u8; fxsave::SIZE]) -> Self {
        let mut state = FpuState {
            fsw: u16::from_le_bytes(field(img, fxsave::FSW)),
            ftw: img[fxsave::FTW],
            fop: u16::from_le_bytes(field(img, fxsave::FOP)) & FOP_MASK,
            fip: u64::from_le_bytes(field(img, fxsave::FIP)),
            fdp: u64::from_le_bytes(field(img, fxsave::FDP)),
            xmm: std::array::from_fn(|i| {
                u128::from_le_bytes(field(img, fxsave::XMM + i * fxsave::SLOT))
            }),
            mxcsr: u32::from_le_bytes(field(img, fxsave::MXCSR)),
            ..FpuState::default()
        };
        for i in 0..8 {
            let r = state.physical(i);
            state.regs[r] = field(img, fxsave::ST + i * fxsave::SLOT);
        }
        state.set_fcw(u16::from_le_bytes(field(img, fxsave::FCW)));
        state
    }

    /// The physical register that is ST(`i`).
    fn physical(&self, i: usize) -> usize {
        (usize::from((self.fsw & FSW_TOP) >> FSW_TOP_SHIFT) + i) % 8
    }

    /// Loads the control word (FLDCW, FXRSTOR). Unmasking an exception whose flag is
    /// set makes it pending: ES and B are set exactly while some flag is unmasked.
    pub fn set_fcw(&mut self, fcw: u16) {
        self.fcw = (fcw & FCW_WRITABLE) | FCW_ONE;
        if self.fsw & !self.fcw & FSW_EXCEPTIONS != 0 {
            self.fsw |= FSW_ES | FSW_B;
        } else {
            self.fsw &= !(FSW_ES | FSW_B);
        }
    }
}

/// `N` bytes of an FXSAVE image from offset `at`.
fn field<const N: usize>(img: &[u8; fxsave::SIZE], at: usize) -> [u8; N] {
    img[at..at + N].try_into().expect("field inside the image")
}

/// Names of the general-purpose registers in encoding order, for dumps.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

impl CpuState {
    /// Current privilege level: CS.RPL in protected mode, 3 in virtual-8086 mode, 0 in
    /// real mode.
    #[inline(always)]
    pub fn cpl(&self) -> u8 {
        if self.cr0 & cr0::PE == 0 {
            0
        } else if self.rflags.control(rflags::VM) {
            3
        } else {
            (self.seg[SegReg::Cs].selector & 3) as u8
        }
    }

    /// The linear address of `offset` in segment `seg`: in 64-bit mode only FS and GS add
    /// their bases; elsewhere the base is added and the sum wraps at 4 GiB.
    #[inline(always)]
    pub fn linear(&self, seg: SegReg, offset: u64) -> u64 {
        if self.code_bitness() == 64 {
            match seg {
                SegReg::Fs | SegReg::Gs => self.seg[seg].base.wrapping_add(offset),
                _ => offset,
            }
        } else {
            self.seg[seg].base.wrapping_add(offset) & 0xFFFF_FFFF
        }
    }

    /// The linear address of the instruction at CS:RIP (where breakpoints are set).
    pub fn code_address(&self) -> u64 {
        self.linear(SegReg::Cs, self.rip)
    }

    /// Code bitness from CS (16, 32 or 64): what the decoder needs.
    #[inline]
    pub fn code_bitness(&self) -> u32 {
        let cs = &self.seg[SegReg::Cs];
        let lma = self.efer & efer::LMA != 0;
        if lma && cs.attr & Segment::LONG != 0 {
            64
        } else if cs.attr & Segment::DB != 0 {
            32
        } else {
            16
        }
    }

    /// The state Multiboot v1 leaves: 32-bit protected mode, flat segments, paging and
    /// interrupts off, EAX = magic, EBX = info structure, EIP = entry.
    pub fn multiboot(entry: u32, eax: u32, ebx: u32) -> Self {
        let code = Segment::flat32(0x08, Segment::TYPE_CODE_RX);
        let data = Segment::flat32(0x10, Segment::TYPE_DATA_RW);
        let mut st = CpuState {
            rip: entry.into(),
            rflags: Flags::from_bits(rflags::FIXED),
            seg: SegRegs::new([data, code, data, data, data, data]),
            cr0: cr0::PE | cr0::ET,
            ..Default::default()
        };
        st.gpr[0] = eax.into();
        st.gpr[3] = ebx.into();
        st
    }

    /// The state after RESET, as a PC starts: real mode, CS = F000 with its hidden base
    /// at FFFF0000, so the first fetch is at linear FFFFFFF0 (the top of the BIOS ROM).
    pub fn reset() -> Self {
        let data = Segment {
            selector: 0,
            base: 0,
            limit: 0xFFFF,
            attr: 0x93,
        };
        let code = Segment {
            selector: 0xF000,
            base: 0xFFFF_0000,
            limit: 0xFFFF,
            attr: 0x9B,
        };
        let mut st = CpuState {
            rip: 0xFFF0,
            rflags: Flags::from_bits(rflags::FIXED),
            seg: SegRegs::new([data, code, data, data, data, data]),
            // The LDTR and TR hold present system descriptors of the right types.
            ldtr: Segment {
                selector: 0,
                base: 0,
                limit: 0xFFFF,
                attr: 0x82,
            },
            tr: Segment {
                selector: 0,
                base: 0,
                limit: 0xFFFF,
                attr: 0x8B,
            },
            gdtr: DescriptorTable {
                base: 0,
                limit: 0xFFFF,
            },
            idtr: DescriptorTable {
                base: 0,
                limit: 0x3FF,
            },
            // CD and NW set, caches off; ET set.
            cr0: 0x6000_0000 | cr0::ET,
            ..Default::default()
        };
        // EDX holds the processor signature after reset (family 6, as CPUID reports).
        st.gpr[2] = crate::cpuid::FAMILY_MODEL_STEPPING as u64;
        st
    }

    /// A register dump in the layout students know from kernel panics.
    pub fn dump(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let wide = self.efer & efer::LMA != 0; // long mode: show 64-bit registers
        let count = if wide { 16 } else { 8 };
        for (i, name) in GPR_NAMES.iter().enumerate().take(count) {
            let sep = if i % 4 == 3 { "\n" } else { "  " };
            if wide {
                let _ = write!(s, "{name:>3}={:016x}{sep}", self.gpr[i]);
            } else {
                let name = format!("e{}", &name[1..]);
                let _ = write!(s, "{name}={:08x}{sep}", self.gpr[i]);
            }
        }
        let _ = writeln!(s, "rip={:08x}  rflags={:08x}", self.rip, self.rflags.get());
        for (name, seg) in ["es", "cs", "ss", "ds", "fs", "gs"]
            .iter()
            .zip(self.seg.all())
        {
            let _ = writeln!(
                s,
                "{name}={:04x} base={:08x} limit={:08x} attr={:03x}",
                seg.selector, seg.base, seg.limit, seg.attr
            );
        }
        let _ = write!(
            s,
            "cr0={:08x} cr2={:08x} cr3={:08x} cr4={:08x} efer={:x}",
            self.cr0, self.cr2, self.cr3, self.cr4, self.efer
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fxsave_images_hold_the_x87_registers_in_stack_order() {
        let mut s = FpuState {
            fsw: 5 << FSW_TOP_SHIFT,
            ..FpuState::default()
        };
        for (i, r) in s.regs.iter_mut().enumerate() {
            r[0] = i as u8 + 1;
        }
        let img = s.to_fxsave();
        assert_eq!(img[fxsave::ST], 6, "ST(0) is R5");
        assert_eq!(img[fxsave::ST + 3 * fxsave::SLOT], 1, "ST(3) is R0");
        assert_eq!(FpuState::from_fxsave(&img), s);
    }

    #[test]
    fn loading_the_control_word_fixes_reserved_bits_and_the_error_summary() {
        let mut s = FpuState {
            fsw: 0x0001, // invalid operation flagged
            ..FpuState::default()
        };
        s.set_fcw(0xFFFE); // ... and unmasked
        assert_eq!(s.fcw, 0x1F7E);
        assert_eq!(s.fsw, 0x0001 | FSW_ES | FSW_B);
        s.set_fcw(0x0000);
        assert_eq!(s.fcw, 0x0040, "bit 6 reads as one");
        s.set_fcw(FCW_INIT);
        assert_eq!(s.fsw, 0x0001, "masked again: nothing pending");
    }
}

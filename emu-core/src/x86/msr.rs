//! The platform MSRs every PC operating system touches at start-up: the time-stamp
//! counter and its adjust register, IA32_MISC_ENABLE, IA32_APIC_BASE, the MTRRs and the
//! PAT (which CPUID advertises), and the microcode identification registers of a
//! family-6 processor. [`super::system`]'s RDMSR and WRMSR come here for every MSR they
//! do not hold themselves; an MSR neither knows raises #GP(0), as on a processor without
//! it.
//!
//! Memory types change nothing in an emulator, whose memory has no caches: the MTRRs and
//! the PAT hold what the guest wrote, checked as the SDM checks it, and nothing more.

use super::mmu::MAXPHYADDR;
use super::processor::tsc;
use super::{Ctx, Fault};
use crate::cpu::{apic_base, misc_enable, msr, MTRR_FIXED_COUNT, MTRR_VAR_COUNT};
use crate::exception::Exception;

/// IA32_MTRRCAP: VCNT variable ranges (bits 0-7), fixed ranges (bit 8), write combining
/// (bit 10); no SMRR.
const MTRRCAP_VALUE: u64 = MTRR_VAR_COUNT as u64 | 1 << 8 | 1 << 10;
/// IA32_MTRR_DEF_TYPE: the default type (bits 0-7), fixed-range enable (10), MTRR
/// enable (11).
const DEF_TYPE_WRITABLE: u64 = 0xFF | 1 << 10 | 1 << 11;
/// The memory-type field of PHYSBASE and DEF_TYPE.
const TYPE_FIELD: u64 = 0xFF;
/// PHYSMASK's valid bit.
const PHYSMASK_VALID: u64 = 1 << 11;
/// The bits a physical page frame may use: 12 up to MAXPHYADDR.
const FRAME_BITS: u64 = ((1 << MAXPHYADDR) - 1) & !0xFFF;
/// The IA32_MISC_ENABLE bits software may change. The others it may write only as they
/// read: the read-only ones (BTS and PEBS unavailable) are kept whatever is written, the
/// reserved ones and the features Popek lacks (enhanced SpeedStep, MONITOR, limiting
/// CPUID, XD disable) raise #GP when set.
const MISC_ENABLE_WRITABLE: u64 = misc_enable::FAST_STRINGS;
/// IA32_MISC_ENABLE's read-only bits.
const MISC_ENABLE_FIXED: u64 = misc_enable::BTS_UNAVAILABLE | misc_enable::PEBS_UNAVAILABLE;
/// IA32_APIC_BASE's writable bits: the page frame and the global enable (x2APIC mode,
/// bit 10, is reserved: CPUID does not advertise x2APIC).
const APIC_BASE_WRITABLE: u64 = FRAME_BITS | apic_base::ENABLE;

/// Memory types an MTRR may hold: UC, WC, WT, WP, WB (2, 3 and 7 up are reserved).
fn valid_mtrr_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// Memory types a PAT entry may hold: those of an MTRR and UC- (7).
fn valid_pat_type(t: u64) -> bool {
    valid_mtrr_type(t) || t == 7
}

/// Whether every byte of `v` is a memory type `valid` accepts.
fn bytes_valid(v: u64, valid: fn(u64) -> bool) -> bool {
    v.to_le_bytes().iter().all(|&b| valid(b.into()))
}

/// The index into [`crate::cpu::Msrs::mtrr_fixed`] of a fixed-range MTRR.
fn fixed_index(index: u32) -> Option<usize> {
    match index {
        msr::MTRR_FIX64K_00000 => Some(0),
        msr::MTRR_FIX16K_80000 => Some(1),
        0x259 => Some(2),
        msr::MTRR_FIX4K_C0000..=0x26F => Some(3 + (index - msr::MTRR_FIX4K_C0000) as usize),
        _ => None,
    }
}

/// The index into [`crate::cpu::Msrs::mtrr_var`] of a variable-range MTRR (even: a
/// PHYSBASE, odd: a PHYSMASK).
fn var_index(index: u32) -> Option<usize> {
    let i = index.checked_sub(msr::MTRR_PHYS_BASE0)? as usize;
    (i < 2 * MTRR_VAR_COUNT).then_some(i)
}

const _: () = assert!(3 + (0x26F - msr::MTRR_FIX4K_C0000 as usize) + 1 == MTRR_FIXED_COUNT);

fn gp() -> Fault {
    Exception::general_protection(0).into()
}

/// RDMSR of a platform MSR: its value, or #GP(0) for an MSR the processor lacks.
pub fn read(cx: &Ctx<'_>, index: u32) -> Result<u64, Fault> {
    let m = &cx.cpu.msr;
    Ok(match index {
        msr::TSC => tsc(cx),
        msr::TSC_ADJUST => m.tsc_adjust,
        msr::APIC_BASE => m.apic_base,
        msr::MISC_ENABLE => m.misc_enable,
        msr::PAT => m.pat,
        msr::MTRRCAP => MTRRCAP_VALUE,
        msr::MTRR_DEF_TYPE => m.mtrr_def_type,
        // No platform ID (bits 50-52) and no microcode update loaded (revision 0).
        msr::PLATFORM_ID | msr::BIOS_SIGN_ID => 0,
        _ => {
            if let Some(i) = fixed_index(index) {
                m.mtrr_fixed[i]
            } else if let Some(i) = var_index(index) {
                m.mtrr_var[i]
            } else {
                return Err(gp());
            }
        }
    })
}

/// WRMSR of a platform MSR, checked as the SDM says; #GP(0) for an MSR the processor
/// lacks, a read-only one, or a reserved bit set.
pub fn write(cx: &mut Ctx<'_>, index: u32, v: u64) -> Result<(), Fault> {
    match index {
        // Writing the counter moves IA32_TSC_ADJUST by as much (SDM Vol. 3B, 18.17.3).
        msr::TSC => {
            let old = tsc(cx);
            adjust_tsc(cx, v.wrapping_sub(old));
        }
        msr::TSC_ADJUST => {
            let delta = v.wrapping_sub(cx.cpu.msr.tsc_adjust);
            adjust_tsc(cx, delta);
        }
        msr::APIC_BASE => {
            if v & !(APIC_BASE_WRITABLE | apic_base::BSP) != 0 {
                return Err(gp());
            }
            let m = &mut cx.cpu.msr;
            m.apic_base = (v & APIC_BASE_WRITABLE) | (m.apic_base & apic_base::BSP);
            let value = m.apic_base;
            cx.exits.apic_base_written(value);
        }
        msr::MISC_ENABLE => {
            if v & !(MISC_ENABLE_WRITABLE | MISC_ENABLE_FIXED) != 0 {
                return Err(gp());
            }
            cx.cpu.msr.misc_enable = (v & MISC_ENABLE_WRITABLE) | MISC_ENABLE_FIXED;
        }
        msr::PAT if bytes_valid(v, valid_pat_type) => cx.cpu.msr.pat = v,
        msr::MTRR_DEF_TYPE if v & !DEF_TYPE_WRITABLE == 0 && valid_mtrr_type(v & TYPE_FIELD) => {
            cx.cpu.msr.mtrr_def_type = v
        }
        msr::BIOS_SIGN_ID => {
            // Software writes 0 here, then executes CPUID, to read the revision:
            // the revision is the processor's, so the write changes nothing.
        }
        _ => {
            if let Some(i) = fixed_index(index) {
                if !bytes_valid(v, valid_mtrr_type) {
                    return Err(gp());
                }
                cx.cpu.msr.mtrr_fixed[i] = v;
            } else if let Some(i) = var_index(index) {
                let ok = if i % 2 == 0 {
                    v & !(FRAME_BITS | TYPE_FIELD) == 0 && valid_mtrr_type(v & TYPE_FIELD)
                } else {
                    v & !(FRAME_BITS | PHYSMASK_VALID) == 0
                };
                if !ok {
                    return Err(gp());
                }
                cx.cpu.msr.mtrr_var[i] = v;
            } else {
                // PAT and DEF_TYPE with bad values, MTRRCAP and PLATFORM_ID (read-only),
                // and every MSR the processor lacks.
                return Err(gp());
            }
        }
    }
    Ok(())
}

/// Adds `delta` to the time-stamp counter and to IA32_TSC_ADJUST, which records it.
fn adjust_tsc(cx: &mut Ctx<'_>, delta: u64) {
    cx.cpu.tsc_offset = cx.cpu.tsc_offset.wrapping_add(delta);
    cx.cpu.msr.tsc_adjust = cx.cpu.msr.tsc_adjust.wrapping_add(delta);
}

#[cfg(test)]
mod tests {
    use crate::cpu::{apic_base, misc_enable, msr, PAT_RESET};
    use crate::exception::vector;
    use crate::testkit::{Asm, Machine, CODE_BASE, RAX, RBX, RDX};
    use iced_x86::code_asm::*;

    /// Runs `asm` at CPL 0 in 32-bit protected mode; the vector of the exception it
    /// raised at its first instruction, if any.
    fn fault(asm: Asm) -> Option<u8> {
        let mut m = Machine::protected(asm);
        m.run_to_halt();
        m.trap().map(|t| {
            assert_eq!(t.rip, CODE_BASE + 10, "the WRMSR/RDMSR faulted");
            t.vector
        })
    }

    /// The reads a guest's start-up code makes: every one answers.
    #[test]
    fn the_platform_msrs_read_their_reset_values() {
        for (index, want) in [
            (msr::MISC_ENABLE, misc_enable::RESET),
            (msr::APIC_BASE, apic_base::RESET),
            (msr::PAT, PAT_RESET),
            (msr::MTRRCAP, 0x508),
            (msr::MTRR_DEF_TYPE, 0),
            (msr::TSC_ADJUST, 0),
            (0x20F, 0),
            (0x26F, 0),
            (msr::BIOS_SIGN_ID, 0),
        ] {
            let mut m = Machine::protected(|a| a.rdmsr());
            m.state.gpr[1] = index.into();
            let st = m.run_to_halt();
            assert_eq!(st.gpr[RDX] << 32 | st.gpr[RAX], want, "MSR {index:#x}");
        }
    }

    #[test]
    fn writes_to_the_counter_move_it_and_tsc_adjust() {
        let mut m = Machine::protected(|a| {
            a.mov(ecx, msr::TSC)?;
            a.mov(edx, 1)?;
            a.mov(eax, 0)?;
            a.wrmsr()?; // TSC = 1 << 32 as the fourth instruction runs
            a.rdtsc()?; // one instruction later
            a.mov(esi, eax)?;
            a.mov(ebx, edx)?;
            a.mov(ecx, msr::TSC_ADJUST)?;
            a.rdmsr()?; // (1 << 32) - 3
            a.mov(ecx, msr::TSC_ADJUST)?;
            a.wrmsr()?; // unchanged: the counter stays
            a.rdtsc()
        });
        let st = m.run_to_halt().clone();
        assert_eq!((st.gpr[RBX], st.gpr[6]), (1, 1), "RDTSC right after");
        assert_eq!(st.msr.tsc_adjust, (1 << 32) - 3);
        assert_eq!(
            st.gpr[RDX] << 32 | st.gpr[RAX],
            (1 << 32) + 8,
            "12th instruction"
        );
    }

    #[test]
    fn apic_base_and_misc_enable_keep_their_read_only_bits() {
        let mut m = Machine::protected(|a| {
            a.mov(ecx, msr::APIC_BASE)?;
            a.xor(edx, edx)?;
            a.mov(eax, 0xFEE0_0000u32)?; // enable and BSP cleared
            a.wrmsr()?;
            a.mov(ecx, msr::MISC_ENABLE)?;
            a.xor(eax, eax)?; // fast strings off, BTS/PEBS bits cleared
            a.wrmsr()
        });
        let st = m.run_to_halt().clone();
        assert_eq!(st.msr.apic_base, 0xFEE0_0000 | apic_base::BSP);
        assert_eq!(
            st.msr.misc_enable,
            misc_enable::BTS_UNAVAILABLE | misc_enable::PEBS_UNAVAILABLE
        );
    }

    #[test]
    fn reserved_bits_read_only_msrs_and_unknown_msrs_raise_gp() {
        // Each case loads ECX and EAX (two 5-byte MOVs; EDX is zero), then executes
        // WRMSR or RDMSR at CODE_BASE + 10.
        let cases: [(&str, Asm); 10] = [
            ("x2APIC enable", |a| {
                a.mov(ecx, msr::APIC_BASE)?;
                a.mov(eax, 0xFEE0_0C00u32)?;
                a.wrmsr()
            }),
            ("MISC_ENABLE limit CPUID", |a| {
                a.mov(ecx, msr::MISC_ENABLE)?;
                a.mov(eax, 1u32 << 22)?;
                a.wrmsr()
            }),
            ("PAT type 2", |a| {
                a.mov(ecx, msr::PAT)?;
                a.mov(eax, 2)?;
                a.wrmsr()
            }),
            ("MTRRCAP is read-only", |a| {
                a.mov(ecx, msr::MTRRCAP)?;
                a.mov(eax, 0x508)?;
                a.wrmsr()
            }),
            ("DEF_TYPE type 7", |a| {
                a.mov(ecx, msr::MTRR_DEF_TYPE)?;
                a.mov(eax, 7)?;
                a.wrmsr()
            }),
            ("PHYSMASK low bits", |a| {
                a.mov(ecx, msr::MTRR_PHYS_BASE0 + 1)?;
                a.mov(eax, 0x100)?;
                a.wrmsr()
            }),
            ("fixed MTRR type 3", |a| {
                a.mov(ecx, 0x26F)?;
                a.mov(eax, 0x0300)?;
                a.wrmsr()
            }),
            ("AMD performance counter", |a| {
                a.mov(ecx, 0xC001_0000u32)?;
                a.mov(eax, 0)?;
                a.rdmsr()
            }),
            ("x2APIC register", |a| {
                a.mov(ecx, 0x802)?;
                a.mov(eax, 0)?;
                a.rdmsr()
            }),
            ("MTRR pair 8 does not exist", |a| {
                a.mov(ecx, msr::MTRR_PHYS_BASE0 + 16)?;
                a.mov(eax, 0)?;
                a.rdmsr()
            }),
        ];
        for (name, asm) in cases {
            assert_eq!(fault(asm), Some(vector::GP), "{name}");
        }
    }

    #[test]
    fn mtrrs_and_pat_hold_valid_values() {
        let mut m = Machine::protected(|a| {
            a.mov(ecx, msr::MTRR_PHYS_BASE0 + 2)?;
            a.mov(eax, 0x8000_0006u32)?;
            a.wrmsr()?;
            a.mov(ecx, msr::MTRR_PHYS_BASE0 + 3)?;
            a.mov(eax, 0xC000_0800u32)?;
            a.mov(edx, 0xFF)?;
            a.wrmsr()?;
            a.mov(ecx, msr::MTRR_DEF_TYPE)?;
            a.mov(eax, 0xC06)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.mov(ecx, 0x259)?;
            a.mov(eax, 0x0101_0101)?;
            a.wrmsr()?;
            a.mov(ecx, msr::PAT)?;
            a.mov(eax, 0x0701_0406)?;
            a.wrmsr()
        });
        let st = m.run_to_halt().clone();
        assert_eq!(st.msr.mtrr_var[2..4], [0x8000_0006, 0xFF_C000_0800]);
        assert_eq!(st.msr.mtrr_def_type, 0xC06);
        assert_eq!(st.msr.mtrr_fixed[2], 0x0101_0101);
        assert_eq!(st.msr.pat, 0x0701_0406);
    }
}

//! From a decoded instruction to the handler that executes it.
//!
//! Each family module answers for the mnemonics it implements; the first that knows the
//! instruction wins. An undecodable instruction raises #UD, and so does one that needs
//! a feature the processor's CPUID does not report (MMX, SSE3, AVX, RTM, ...): such a
//! processor does not have the instruction. Only an instruction of a reported feature
//! that no family knows is unsupported — a missing piece of Popek, not a guest error.
//!
//! Two kinds of encoding mean something else on a processor without their feature: the
//! hint space (0F 0D, 0F 18 to 0F 1F: prefetches, CET's ENDBR and RDSSP, CLDEMOTE, the
//! reserved NOPs) runs as NOP, as Intel defines it; x87 instructions are the FPU
//! family's to decide (#NM comes first). The decoder already turns TZCNT, LZCNT and
//! WBNOINVD into what they are without their feature (see [`crate::x86::decode`]).

use super::{alu, bcd, bits, control, flagops, fpu, moves, muldiv, shift, sse, stack, string};
use super::{Ctx, Fault, Handler};
use crate::cpuid::advertises;
use crate::exception::Exception;
use crate::x86::{far, io, processor, system};
use iced_x86::{CpuidFeature, EncodingKind, Instruction, OpCodeTableKind};

/// The one-byte 0F opcode of PREFETCH/PREFETCHW, a hint: a NOP without the feature.
const PREFETCH_HINT: u32 = 0x0D;
/// The 0F opcodes Intel reserves for hints that run as NOP where unimplemented.
const HINT_NOPS: std::ops::RangeInclusive<u32> = 0x18..=0x1F;

/// The handler for `ins`.
pub fn handler(ins: &Instruction) -> Handler {
    if ins.is_invalid() {
        return invalid_opcode;
    }
    if !processor_has(ins) && !fpu::is_x87(ins) && !processor::is_hypercall(ins) {
        return if is_hint(ins) {
            moves::nop
        } else {
            invalid_opcode
        };
    }
    alu::handler(ins)
        .or_else(|| far::handler(ins))
        .or_else(|| control::handler(ins))
        .or_else(|| moves::handler(ins))
        .or_else(|| stack::handler(ins))
        .or_else(|| shift::handler(ins))
        .or_else(|| muldiv::handler(ins))
        .or_else(|| bcd::handler(ins))
        .or_else(|| bits::handler(ins))
        // Before string: MOVSD with XMM operands is SSE2's, not the string move.
        .or_else(|| sse::handler(ins))
        .or_else(|| fpu::handler(ins))
        .or_else(|| string::handler(ins))
        .or_else(|| flagops::handler(ins))
        .or_else(|| io::handler(ins))
        .or_else(|| processor::handler(ins))
        .or_else(|| system::handler(ins))
        .unwrap_or(unsupported)
}

/// Whether the processor has every CPUID feature `ins` needs: the features iced-x86
/// lists for it, and MMX if it uses an MMX register (the MMX forms of SSE's integer
/// instructions are listed as SSE's).
fn processor_has(ins: &Instruction) -> bool {
    let uses_mmx = (0..ins.op_count()).any(|i| ins.op_register(i).is_mm());
    ins.cpuid_features().iter().all(|&f| advertises(f))
        && (!uses_mmx || advertises(CpuidFeature::MMX))
}

/// Whether `ins` is encoded in the hint space of the 0F opcode map.
fn is_hint(ins: &Instruction) -> bool {
    let op = ins.op_code();
    // iced-x86 counts a fixed ModRM byte into the opcode (ENDBR32 is 0F 1E FB).
    let byte = op.op_code() >> (8 * (op.op_code_len() - 1));
    ins.encoding() == EncodingKind::Legacy
        && op.table() == OpCodeTableKind::T0F
        && (byte == PREFETCH_HINT || HINT_NOPS.contains(&byte))
}

fn invalid_opcode(_: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    Err(Exception::invalid_opcode().into())
}

fn unsupported(_: &mut Ctx<'_>, _: &Instruction) -> Result<(), Fault> {
    Err(Fault::Unsupported)
}

#[cfg(test)]
mod tests {
    use crate::cpu::{cr0, rflags};
    use crate::exception::vector;
    use crate::exit::StopReason;
    use crate::testkit::{Asm, Machine, CODE_BASE, RAX};
    use iced_x86::code_asm::*;

    /// Runs `asm` in 32-bit protected mode; the vector and return address of the
    /// exception it raised.
    fn first_trap(asm: Asm) -> (u8, u64) {
        let t = Machine::protected(asm).run_to_trap();
        (t.vector, t.rip)
    }

    #[test]
    fn instructions_of_features_cpuid_does_not_report_raise_ud() {
        let cases: [(&str, Asm); 12] = [
            ("emms (MMX)", |a| a.emms()),
            ("paddb mm0, mm1 (MMX)", |a| a.paddb(mm0, mm1)),
            ("pavgb mm0, mm1 (SSE on MMX registers)", |a| {
                a.pavgb(mm0, mm1)
            }),
            ("popcnt (POPCNT)", |a| a.popcnt(eax, ecx)),
            ("haddps (SSE3)", |a| a.haddps(xmm0, xmm1)),
            ("pshufb (SSSE3)", |a| a.pshufb(xmm0, xmm1)),
            ("pextrw m16 (SSE4.1)", |a| {
                a.pextrw(word_ptr(0x8000), xmm0, 1)
            }),
            ("xabort (RTM)", |a| a.xabort(0)),
            ("xbegin (RTM)", |a| a.db(&[0xC7, 0xF8, 0, 0, 0, 0])),
            ("clflush (CLFSH)", |a| a.clflush(byte_ptr(0x8000))),
            ("movbe (MOVBE)", |a| a.movbe(eax, dword_ptr(0x8000))),
            ("xgetbv (XSAVE)", |a| a.xgetbv()),
        ];
        for (name, asm) in cases {
            assert_eq!(first_trap(asm), (vector::UD, CODE_BASE), "{name}");
        }
    }

    #[test]
    fn vex_instructions_raise_ud_in_64_bit_mode() {
        // CR4.OSXSAVE cannot be set (no XSAVE), and CPUID reports no AVX.
        let t = Machine::long(|a| a.vaddps(xmm0, xmm1, xmm2)).run_to_trap();
        assert_eq!((t.vector, t.rip), (vector::UD, CODE_BASE));
    }

    #[test]
    fn hints_run_as_nop_without_their_feature() {
        let mut m = Machine::protected(|a| {
            a.mov(eax, 0x1234)?;
            a.endbr32()?;
            a.endbr64()?;
            a.rdsspd(eax)?;
            a.cldemote(byte_ptr(0x8000))?;
            a.prefetchw(byte_ptr(0x8000))?;
            a.prefetchnta(byte_ptr(0x8000))?;
            // 0F 19 /0 and 0F 1F /0: the reserved and the documented long NOP.
            a.db(&[0x0F, 0x19, 0x00])?;
            a.nop_1(dword_ptr(eax))
        });
        let st = m.run_to_halt();
        assert_eq!(st.gpr[RAX], 0x1234, "RDSSPD left EAX alone");
        assert_eq!(m.trap(), None);
    }

    #[test]
    fn x87_arithmetic_raises_nm_with_cr0_em_and_ud_without() {
        // CPUID reports no FPU: CR0.EM is how an OS asks to emulate it.
        assert_eq!(first_trap(|a| a.fld1()), (vector::UD, CODE_BASE));
        let mut m = Machine::protected(|a| a.fld1());
        m.state.cr0 |= cr0::EM;
        assert_eq!(m.run_to_trap().vector, vector::NM);
    }

    #[test]
    fn sse_floating_point_arithmetic_is_unsupported_not_ud() {
        // SSE is reported, so the guest may use ADDPS: Popek lacks it, the guest not.
        let mut m = Machine::protected(|a| a.addps(xmm0, xmm1));
        m.state.cr4 |= crate::cpu::cr4::OSFXSR;
        assert!(matches!(m.run(), StopReason::Unsupported { .. }));
    }

    #[test]
    fn wbnoinvd_without_its_feature_is_wbinvd() {
        // F3 0F 09: WBINVD with a REP prefix, privileged like WBINVD.
        let wbnoinvd: Asm = |a| a.db(&[0xF3, 0x0F, 0x09]);
        assert!(Machine::protected(wbnoinvd).run_to_halt().gpr[RAX] == 0);
        let mut m = Machine::protected(wbnoinvd).user().flags(rflags::FIXED);
        let t = m.run_to_trap();
        assert_eq!((t.vector, t.rip), (vector::GP, CODE_BASE));
    }
}

//! Decoding as the popek-pc processor does: iced-x86 set up for the features its CPUID
//! reports, and the encodings whose meaning depends on a feature it lacks.
//!
//! iced-x86 decodes for the newest processor by default. Popek's processor has no BMI1,
//! LZCNT or WBNOINVD, so their F3-prefixed encodings are the older BSF, BSR and WBINVD
//! with the prefix ignored, as on the processors that predate them (compilers rely on
//! this when they emit TZCNT as `rep bsf`). It has no AVX or AVX-512 either, so outside
//! 64-bit mode C4, C5 and 62 followed by a register ModRM byte (mod = 11) are not the
//! VEX and EVEX prefixes but LES, LDS and BOUND with a register operand, which raise
//! #UD; iced-x86 would decode a VEX or EVEX instruction there, of another length.

use crate::cpuid::advertises;
use iced_x86::{Code, CpuidFeature, Decoder, DecoderOptions, Instruction};

/// Opcodes that are VEX (C4, C5) or EVEX (62) prefixes in 64-bit mode and on processors
/// with AVX or AVX-512, and LES, LDS and BOUND otherwise.
const VEX_OR_LEGACY: [u8; 3] = [0xC4, 0xC5, 0x62];
/// The legacy prefixes: operand and address size, REP/REPNE, LOCK, segment overrides.
const LEGACY_PREFIXES: [u8; 11] = [
    0x66, 0x67, 0xF2, 0xF3, 0xF0, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65,
];
/// ModRM mod field of a register operand.
const MOD_REGISTER: u8 = 0xC0;
/// Longest x86 instruction, in bytes: at most this many prefixes are looked through.
const MAX_INSN_LEN: usize = 15;

/// The iced-x86 decoder options for Popek's processor.
pub fn options() -> u32 {
    let mut options = DecoderOptions::NONE;
    if !advertises(CpuidFeature::BMI1) {
        options |= DecoderOptions::NO_MPFX_0FBC;
    }
    if !advertises(CpuidFeature::LZCNT) {
        options |= DecoderOptions::NO_MPFX_0FBD;
    }
    if !advertises(CpuidFeature::WBNOINVD) {
        options |= DecoderOptions::NO_WBNOINVD;
    }
    options
}

/// Decodes the instruction at the decoder's position in `bytes` (what the decoder was
/// made over) for code of `bitness`.
pub fn next(decoder: &mut Decoder<'_>, bytes: &[u8], bitness: u32) -> Instruction {
    let at = decoder.position();
    match legacy_register_form(&bytes[at..], bitness) {
        Some(len) => {
            let ip = decoder.ip();
            let mut ins = Instruction::default();
            ins.set_code(Code::INVALID);
            ins.set_len(len);
            ins.set_next_ip(ip.wrapping_add(len as u64));
            decoder.set_ip(ip.wrapping_add(len as u64));
            decoder
                .set_position(at + len)
                .expect("the prefixes and two bytes were found in the buffer");
            ins
        }
        None => decoder.decode(),
    }
}

/// The length of LES, LDS or BOUND with a register operand (prefixes, opcode, ModRM)
/// if `code` starts with one in a mode and on a processor where those bytes are not a
/// VEX or EVEX prefix.
fn legacy_register_form(code: &[u8], bitness: u32) -> Option<usize> {
    let has_vex = advertises(CpuidFeature::AVX) || advertises(CpuidFeature::AVX512F);
    if bitness == 64 || has_vex {
        return None;
    }
    let prefixes = code
        .iter()
        .take(MAX_INSN_LEN)
        .take_while(|b| LEGACY_PREFIXES.contains(b))
        .count();
    if prefixes + 2 > MAX_INSN_LEN {
        // Too long: iced-x86 reports it invalid, as the processor does (#GP, in fact).
        return None;
    }
    match code.get(prefixes..prefixes + 2)? {
        [op, modrm] if VEX_OR_LEGACY.contains(op) && modrm & MOD_REGISTER == MOD_REGISTER => {
            Some(prefixes + 2)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::{cr0, SegReg};
    use crate::exception::vector;
    use crate::testkit::{Machine, CODE_BASE, DATA, KERNEL_DS, RAX, RBX};
    use iced_x86::code_asm::*;

    /// A page-aligned address in the identity-mapped first 4 MiB for code at a page end.
    const PAGE: u64 = 0x20_0000;
    /// Page-table entry bit: present.
    const PTE_P: u64 = 1;

    #[test]
    fn les_lds_bound_with_a_register_operand_raise_ud_outside_64_bit_mode() {
        // C5 C0 58 C1 would be VADDPS xmm0, xmm7, xmm1 where VEX exists.
        for bytes in [
            &[0xC5, 0xC0, 0x58, 0xC1][..],
            &[0xC4, 0xC0, 0x00],
            &[0x62, 0xC1],
        ] {
            let mut m = Machine::protected(|a| a.nop());
            m.poke(CODE_BASE, bytes);
            let t = m.run_to_trap();
            assert_eq!((t.vector, t.rip), (vector::UD, CODE_BASE), "{bytes:02X?}");
        }
    }

    #[test]
    fn lds_with_a_register_operand_is_two_bytes_long() {
        // LDS EAX, EAX in the last two bytes of a page whose successor is not mapped:
        // #UD, not the #PF that fetching a longer VEX instruction would raise.
        let mut m = Machine::protected(|a| a.nop());
        let (pd, pt) = m.identity_map32();
        let next = PAGE + 0x1000;
        m.poke_u32(pt + 4 * (next >> 12), (next & !PTE_P) as u32);
        m.poke(next - 2, &[0xC5, 0xC0]);
        m.state.rip = next - 2;
        m.state.cr3 = pd;
        m.state.cr0 |= cr0::PG;
        let t = m.run_to_trap();
        assert_eq!((t.vector, t.rip), (vector::UD, next - 2));
    }

    #[test]
    fn les_lds_and_bound_with_memory_operands_still_work() {
        let mut m = Machine::protected(|a| {
            a.les(eax, ptr(DATA))?;
            a.lds(bx, ptr(DATA + 8))?;
            a.mov(ecx, 5)?;
            a.bound(ecx, qword_ptr(DATA + 16))
        });
        m.poke_u32(DATA, 0x1234_5678);
        m.poke_u32(DATA + 4, KERNEL_DS.into());
        m.poke_u32(DATA + 8, 0xBEEF);
        m.poke_u32(DATA + 10, KERNEL_DS.into());
        m.poke_u32(DATA + 16, 0);
        m.poke_u32(DATA + 20, 10);
        let st = m.run_to_halt().clone();
        assert_eq!((st.gpr[RAX], st.gpr[RBX] & 0xFFFF), (0x1234_5678, 0xBEEF));
        assert_eq!(st.seg[SegReg::Es as usize].selector, KERNEL_DS);
        assert_eq!(m.trap(), None);
    }
}

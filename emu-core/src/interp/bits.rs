//! Bit instructions: BT BTS BTR BTC, BSF BSR. (CPUID reports no POPCNT, BMI1 or LZCNT:
//! POPCNT raises #UD, and TZCNT/LZCNT decode as the BSF/BSR they are without them.)
//!
//! The flags the manual leaves undefined are left as they were: BT* change only CF,
//! BSF/BSR only ZF.

use super::{Ctx, Fault, Handler};
use crate::cpu::rflags::{CF, ZF};
use crate::x86::ctx::{operand_size, seg_of, Loc};
use crate::x86::flags::sign_extend;
use crate::x86::flags::size_mask;
use crate::x86::mmu::Access;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

const BT: u8 = 0;
const BTS: u8 = 1;
const BTR: u8 = 2;
const BTC: u8 = 3;

/// The handler for `ins`, if this family implements it.
pub fn handler(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Bt => bit_test::<BT>,
        Mnemonic::Bts => bit_test::<BTS>,
        Mnemonic::Btr => bit_test::<BTR>,
        Mnemonic::Btc => bit_test::<BTC>,
        Mnemonic::Bsf => bit_scan::<true>,
        Mnemonic::Bsr => bit_scan::<false>,
        _ => return None,
    })
}

/// The address-size mask of the memory operand, from its base, index or displacement
/// (as [`Ctx::effective_address`] decides it): offsets wrap within it.
fn address_mask(ins: &Instruction) -> u64 {
    let size = [ins.memory_base(), ins.memory_index()]
        .into_iter()
        .find(|&r| r != Register::None)
        .map_or(ins.memory_displ_size() as usize, |r| r.size());
    match size {
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// Where the bit lives: the operand holding it and the bit's index in that operand.
///
/// With a memory operand and a register offset the offset is a signed index into a bit
/// string that starts at the operand and may reach far outside it: the operand-sized
/// word that holds the bit is addressed. Otherwise the offset is taken modulo the
/// operand width.
///
/// The word is checked for `access` (BT reads, the others write).
fn locate_bit(
    cx: &mut Ctx<'_>,
    ins: &Instruction,
    size: u8,
    access: Access,
) -> Result<(Loc, u32), Fault> {
    let bits = 8 * size as u64;
    let offset = cx.operand(ins, 1)?;
    let bit = (offset & (bits - 1)) as u32;
    let loc = match ins.op0_kind() {
        OpKind::Memory if ins.op1_kind() == OpKind::Register => {
            let words = (sign_extend(offset, size) as i64) >> bits.trailing_zeros();
            let ea = cx
                .effective_address(ins)
                .wrapping_add((words as u64).wrapping_mul(size as u64))
                & address_mask(ins);
            let seg = seg_of(ins.memory_segment());
            Loc::Mem(cx.seg_addr(seg, ea, size.into(), access)?)
        }
        _ => cx.locate(ins, 0, size, access)?,
    };
    Ok((loc, bit))
}

/// BT BTS BTR BTC: CF = the selected bit, which BTS sets, BTR clears and BTC flips.
fn bit_test<const OP: u8>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let access = if OP == BT {
        Access::Read
    } else {
        Access::Write
    };
    let (loc, bit) = locate_bit(cx, ins, size, access)?;
    let v = cx.load(loc, size)?;
    let m = 1u64 << bit;
    if OP != BT {
        let new = match OP {
            BTS => v | m,
            BTR => v & !m,
            _ => v ^ m,
        };
        cx.store(loc, size, new)?;
    }
    cx.cpu.rflags.update(CF, if v & m != 0 { CF } else { 0 });
    Ok(())
}

/// BSF (forward) and BSR: the index of the lowest or highest set bit. A zero source sets
/// ZF and leaves the destination alone, as Intel and AMD processors do.
fn bit_scan<const FORWARD: bool>(cx: &mut Ctx<'_>, ins: &Instruction) -> Result<(), Fault> {
    let size = operand_size(ins, 0);
    let src = cx.operand(ins, 1)? & size_mask(size);
    if src == 0 {
        cx.cpu.rflags.update(ZF, ZF);
        return Ok(());
    }
    let index = if FORWARD {
        src.trailing_zeros()
    } else {
        u64::BITS - 1 - src.leading_zeros()
    };
    cx.set_reg(ins.op0_register(), index.into());
    cx.cpu.rflags.update(ZF, 0);
    Ok(())
}

/// The case tables of this family, which every engine runs (`testkit::tables`).
#[cfg(any(test, feature = "testkit"))]
pub mod cases {
    use crate::cpu::rflags::*;
    use crate::testkit::{Case, RAX, RCX};
    use iced_x86::code_asm::*;

    /// Bit tests on registers.
    pub const BIT_TESTS_ON_REGISTERS: &[Case] = &[
        Case {
            name: "bt eax,5 copies the bit to CF and leaves the other flags",
            asm: |a| a.bt(eax, 5),
            regs: &[(RAX, 0x20)],
            flags: ZF | OF | SF,
            want: &[(RAX, 0x20)],
            want_flags: CF | ZF | OF | SF,
            mask: ARITH,
        },
        Case {
            name: "bt eax,ecx takes the offset modulo 32",
            asm: |a| a.bt(eax, ecx),
            regs: &[(RAX, 0x20), (RCX, 37)],
            flags: PF | AF,
            want: &[(RAX, 0x20)],
            want_flags: CF | PF | AF,
            mask: ARITH,
        },
        Case {
            name: "bts eax,ecx sets a clear bit, CF = 0",
            asm: |a| a.bts(eax, ecx),
            regs: &[(RAX, 0), (RCX, 3)],
            flags: CF,
            want: &[(RAX, 8)],
            want_flags: 0,
            mask: CF,
        },
        Case {
            name: "btr eax,31 clears the sign bit",
            asm: |a| a.btr(eax, 31),
            regs: &[(RAX, 0x8000_0001)],
            flags: 0,
            want: &[(RAX, 1)],
            want_flags: CF,
            mask: CF,
        },
        Case {
            name: "btc ax,17 takes the immediate modulo 16 and keeps EAX's top",
            asm: |a| a.btc(ax, 17),
            regs: &[(RAX, 0xAAAA_0000)],
            flags: CF,
            want: &[(RAX, 0xAAAA_0002)],
            want_flags: 0,
            mask: CF,
        },
    ];

    /// Bit scans.
    pub const BIT_SCANS: &[Case] = &[
        Case {
            name: "bsf eax,ecx: lowest set bit",
            asm: |a| a.bsf(eax, ecx),
            regs: &[(RCX, 0x8000_0100)],
            flags: ZF | CF,
            want: &[(RAX, 8)],
            want_flags: CF,
            mask: ZF | CF,
        },
        Case {
            name: "bsr eax,ecx: highest set bit",
            asm: |a| a.bsr(eax, ecx),
            regs: &[(RCX, 0x8000_0100)],
            flags: ZF,
            want: &[(RAX, 31)],
            want_flags: 0,
            mask: ZF,
        },
        Case {
            name: "bsf of zero sets ZF and leaves the destination",
            asm: |a| a.bsf(eax, ecx),
            regs: &[(RAX, 0x1234), (RCX, 0)],
            flags: 0,
            want: &[(RAX, 0x1234)],
            want_flags: ZF,
            mask: ZF,
        },
        Case {
            name: "bsr ax,cx",
            asm: |a| a.bsr(ax, cx),
            regs: &[(RAX, 0xAAAA_0000), (RCX, 0x1_8000)],
            flags: 0,
            want: &[(RAX, 0xAAAA_000F)],
            want_flags: 0,
            mask: ZF,
        },
        Case {
            name: "tzcnt decodes as bsf (CPUID has no BMI1): zero leaves EAX",
            asm: |a| a.tzcnt(eax, ecx),
            regs: &[(RAX, 7), (RCX, 0)],
            flags: CF,
            want: &[(RAX, 7)],
            want_flags: CF | ZF,
            mask: CF | ZF,
        },
        Case {
            name: "lzcnt decodes as bsr (CPUID has no LZCNT): 1 gives 0, not 31",
            asm: |a| a.lzcnt(eax, ecx),
            regs: &[(RAX, 7), (RCX, 1)],
            flags: ZF,
            want: &[(RAX, 0)],
            want_flags: 0,
            mask: ZF,
        },
    ];

    /// Sixty four bit operands.
    pub const SIXTY_FOUR_BIT_OPERANDS: &[Case] = &[
        Case {
            name: "bt rax,rcx: bit 63",
            asm: |a| a.bt(rax, rcx),
            regs: &[(RAX, 1 << 63), (RCX, 127)],
            flags: 0,
            want: &[],
            want_flags: CF,
            mask: CF,
        },
        Case {
            name: "bsr rax,rcx",
            asm: |a| a.bsr(rax, rcx),
            regs: &[(RAX, u64::MAX), (RCX, 1 << 40)],
            flags: ZF,
            want: &[(RAX, 40)],
            want_flags: 0,
            mask: ZF,
        },
    ];
}

#[cfg(test)]
mod tests {
    use super::cases::*;
    use crate::cpu::rflags::CF;
    use crate::testkit::{check, check64, Asm, Machine, DATA, RBX, RCX};
    use iced_x86::code_asm::*;

    #[test]
    fn bit_tests_on_registers() {
        check(BIT_TESTS_ON_REGISTERS);
    }

    /// Runs a BT* on a bit string around DATA (EBX = DATA, ECX = `offset`), with the 8
    /// bytes below DATA set to `before`.
    fn on_bit_string(asm: Asm, offset: u64, before: &[u8]) -> Machine {
        let mut m = Machine::new(asm).regs(&[(RBX, DATA), (RCX, offset)]);
        m.poke(DATA - 8, before);
        m.run_to_halt();
        m
    }

    #[test]
    fn register_offset_into_memory_is_a_signed_bit_string_index() {
        // Bit -1 is the top bit of the dword below the operand.
        let m = on_bit_string(
            |a| a.bt(dword_ptr(ebx), ecx),
            u64::from(u32::MAX),
            &[0, 0, 0, 0, 0, 0, 0, 0x80],
        );
        assert_eq!(m.state.rflags & CF, CF);

        // Bit 100 = dword 3, bit 4.
        let m = on_bit_string(|a| a.bts(dword_ptr(ebx), ecx), 100, &[0; 8]);
        assert_eq!(m.bytes(DATA + 12, 4), 0x10u32.to_le_bytes());
        assert_eq!(
            m.bytes(DATA, 4),
            [0; 4],
            "the addressed operand itself is untouched"
        );
        assert_eq!(m.state.rflags & CF, 0);

        // A 16-bit offset is a signed word: 0xFFF0 = -16 = the word below, bit 0.
        let m = on_bit_string(|a| a.btr(word_ptr(ebx), cx), 0xFFF0, &[0xFF; 8]);
        assert_eq!(m.bytes(DATA - 2, 2), [0xFE, 0xFF]);
        assert_eq!(m.state.rflags & CF, CF);

        // With a displacement: [ebx+4] and bit 33 is DATA+8, bit 1.
        let m = on_bit_string(|a| a.btc(dword_ptr(ebx + 4), ecx), 33, &[0; 8]);
        assert_eq!(m.bytes(DATA + 8, 1), [2]);
    }

    #[test]
    fn immediate_offset_into_memory_stays_in_the_operand() {
        let mut m = Machine::new(|a| a.bts(dword_ptr(ebx), 36)).regs(&[(RBX, DATA)]);
        m.run_to_halt();
        assert_eq!(m.bytes(DATA, 8), [0x10, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn bit_scans() {
        check(BIT_SCANS);
    }

    #[test]
    fn sixty_four_bit_operands() {
        check64(SIXTY_FOUR_BIT_OPERANDS);
        // Offset -65 = qword -2, bit 63.
        let mut m = Machine::new64(|a| a.bts(qword_ptr(rbx), rcx))
            .regs(&[(RBX, DATA), (RCX, (-65i64) as u64)]);
        m.run_to_halt();
        assert_eq!(m.bytes(DATA - 16, 8), (1u64 << 63).to_le_bytes());
    }
}

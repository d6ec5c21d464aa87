//! One table of facts about every instruction form (iced-x86 [`Code`]), for every part
//! of Popek that must agree on them: the interpreter's block builder, the binary
//! translator, the differential-test generator and the disassembly views.
//!
//! The facts come from two places. iced-x86's generated tables give what the manuals
//! say of each form (control flow, the flags it reads and writes, CPL-0 only, the CPUID
//! features it needs); Popek adds what only a VMM cares about: which instructions are
//! sensitive when a guest kernel runs deprivileged (Popek and Goldberg's criterion), and
//! which change how the code after them must be decoded or run. The table is built once,
//! on first use, from those two sources, so there is nothing to keep in step by hand.

use iced_x86::{Code, FlowControl, Instruction, Mnemonic};
use std::sync::LazyLock;

/// How an instruction behaves when the guest kernel runs outside ring 0 (ring
/// compression, the full-virtualization technique of the binary translator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Behaves the same in every ring.
    None,
    /// Faults outside ring 0 (#GP or #UD): a deprivileged kernel traps on it, and the
    /// VMM emulates it. Trap-and-emulate handles these.
    Privileged,
    /// Checked against EFLAGS.IOPL (and the I/O bitmap): faults when CPL > IOPL, so a
    /// deprivileged kernel traps on it as long as the VMM keeps IOPL below its ring.
    IoplChecked,
    /// Reads or changes privileged state without faulting outside ring 0 (POPF drops
    /// IF silently, SGDT reveals the VMM's table, PUSH CS shows the real ring, ...):
    /// trap-and-emulate cannot see it, so the translator must rewrite it. These make
    /// x86 not classically virtualizable.
    Unprivileged,
}

/// What Popek knows about one instruction form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpFacts {
    /// The mnemonic, for grouping forms (ADD has dozens of encodings).
    pub mnemonic: Mnemonic,
    /// Where execution goes next.
    pub flow: FlowControl,
    /// A block of straight-line code ends after this instruction: it transfers control,
    /// or it may change the mode, the paging, the interrupt state or anything else that
    /// decides how the following instructions decode or run.
    pub ends_block: bool,
    /// Status and control flags it reads (iced-x86 `RflagsBits`).
    pub flags_read: u32,
    /// Flags it may change, whether to a defined or an undefined value.
    pub flags_written: u32,
    /// Flags the manuals leave undefined after it.
    pub flags_undefined: u32,
    /// What ring compression makes of it.
    pub sensitivity: Sensitivity,
}

/// Instructions that change the execution environment of the code after them without
/// being control transfers: the mode or paging (control registers, EFER through WRMSR,
/// descriptor tables), the TLB, the interrupt state (STI and POPF may open an interrupt
/// window; MOV SS and POP SS hold interrupts off for one instruction), or the processor's
/// wait state.
fn changes_environment(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Hlt | Sti
            | Popf
            | Popfd
            | Popfq
            | Lmsw
            | Clts
            | Wrmsr
            | Xsetbv
            | Invlpg
            | Invpcid
            | Lgdt
            | Lidt
            | Lldt
            | Ltr
            | Rsm
            | Swapgs
            | Pause
            | Mwait
            | Monitor
            | Vmcall
    )
}

/// Sensitive instructions that do not fault outside ring 0 (DESIGN.md's list): they
/// read or write state a deprivileged kernel must not see or touch for real.
fn sensitive_unprivileged(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Popf | Popfd
            | Popfq
            | Pushf
            | Pushfd
            | Pushfq
            | Sgdt
            | Sidt
            | Sldt
            | Smsw
            | Str
            | Lar
            | Lsl
            | Verr
            | Verw
            | Iret
            | Iretd
            | Iretq
            | Int
            | Int3
            | Into
            | Int1
    )
}

/// The form's name in iced-x86 (`Mov_Sreg_rm16`, `Call_m1632`, ...), which spells its
/// operands. Asked only of the few mnemonics below: iced-x86's operand tables are
/// costly to build, and Popek would pay for them at every start.
fn name(code: Code) -> String {
    format!("{code:?}")
}

/// Whether one of the form's operands is a segment register.
fn has_segment_operand(code: Code) -> bool {
    let name = name(code);
    name.contains("Sreg")
        || ["_ES", "_CS", "_SS", "_DS", "_FS", "_GS"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// Whether a MOV, PUSH or POP form moves a segment register: these reveal or set the
/// selector's RPL, which under ring compression is the real ring, not the guest's.
fn moves_segment_register(code: Code) -> bool {
    matches!(
        code.mnemonic(),
        Mnemonic::Mov | Mnemonic::Push | Mnemonic::Pop
    ) && has_segment_operand(code)
}

/// Far transfers: the target's selector carries a privilege level. The far CALL and JMP
/// forms take a far pointer (`ptr16:16`, `ptr16:32`) or a memory operand holding one
/// (`m16:16`, `m16:32`, `m16:64`).
fn is_far_transfer(code: Code) -> bool {
    match code.mnemonic() {
        Mnemonic::Retf => true,
        Mnemonic::Call | Mnemonic::Jmp => {
            let name = name(code);
            name.contains("_ptr16") || name.contains("_m16")
        }
        _ => false,
    }
}

/// Whether the form may load SS (MOV to a segment register, POP SS, LSS), which holds
/// off interrupts and single-step traps until the next instruction completes.
pub fn may_load_ss(code: Code) -> bool {
    match code.mnemonic() {
        Mnemonic::Mov => name(code).starts_with("Mov_Sreg"),
        Mnemonic::Pop => name(code).ends_with("_SS"),
        Mnemonic::Lss => true,
        _ => false,
    }
}

/// Whether the form writes a control or debug register (mode, paging, breakpoints).
fn writes_control_register(code: Code) -> bool {
    code.mnemonic() == Mnemonic::Mov && {
        let name = name(code);
        name.starts_with("Mov_cr") || name.starts_with("Mov_dr")
    }
}

fn build(code: Code) -> OpFacts {
    let mnemonic = code.mnemonic();
    let flow = code.flow_control();
    let mut ins = Instruction::default();
    ins.set_code(code);
    let sensitivity = if sensitive_unprivileged(mnemonic)
        || moves_segment_register(code)
        || is_far_transfer(code)
    {
        // POPF and PUSHF are IOPL-checked only in virtual-8086 mode; in protected mode
        // they quietly ignore IF: unprivileged, like the rest of this list.
        Sensitivity::Unprivileged
    } else if matches!(
        mnemonic,
        Mnemonic::In
            | Mnemonic::Out
            | Mnemonic::Insb
            | Mnemonic::Insw
            | Mnemonic::Insd
            | Mnemonic::Outsb
            | Mnemonic::Outsw
            | Mnemonic::Outsd
            | Mnemonic::Cli
            | Mnemonic::Sti
    ) {
        Sensitivity::IoplChecked
    } else if code.is_privileged() {
        Sensitivity::Privileged
    } else {
        Sensitivity::None
    };
    OpFacts {
        mnemonic,
        flow,
        ends_block: flow != FlowControl::Next
            || changes_environment(mnemonic)
            || may_load_ss(code)
            || writes_control_register(code),
        flags_read: ins.rflags_read(),
        flags_written: ins.rflags_modified(),
        flags_undefined: ins.rflags_undefined(),
        sensitivity,
    }
}

static TABLE: LazyLock<Box<[OpFacts]>> = LazyLock::new(|| Code::values().map(build).collect());

/// The facts about one instruction form.
#[inline]
pub fn facts(code: Code) -> &'static OpFacts {
    &TABLE[code as usize]
}

/// Converts iced-x86 flag bits (those of [`OpFacts`]) to RFLAGS bits.
pub fn rflags_bits(iced: u32) -> u64 {
    use crate::cpu::rflags;
    use iced_x86::RflagsBits as F;
    const MAP: [(u32, u64); 9] = [
        (F::CF, rflags::CF),
        (F::PF, rflags::PF),
        (F::AF, rflags::AF),
        (F::ZF, rflags::ZF),
        (F::SF, rflags::SF),
        (F::OF, rflags::OF),
        (F::DF, rflags::DF),
        (F::IF, rflags::IF),
        (F::AC, rflags::AC),
    ];
    MAP.iter()
        .filter(|(bit, _)| iced & bit != 0)
        .map(|(_, flag)| flag)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_transfers_and_mode_changes_end_blocks() {
        for code in [
            Code::Jmp_rel32_32,
            Code::Jne_rel8_32,
            Code::Call_rm32,
            Code::Retnd,
            Code::Iretd,
            Code::Int_imm8,
            Code::Hlt,
            Code::Sti,
            Code::Popfd,
            Code::Mov_cr_r32,
            Code::Mov_Sreg_rm16,
            Code::Popd_SS,
            Code::Wrmsr,
            Code::Invlpg_m,
            Code::Lgdt_m1632,
        ] {
            assert!(facts(code).ends_block, "{code:?} should end a block");
        }
        for code in [
            Code::Add_rm32_r32,
            Code::Dec_r32,
            Code::Mov_r32_rm32,
            Code::Mov_rm16_Sreg,
            Code::Push_r32,
            Code::Cli,
            Code::Cpuid,
        ] {
            assert!(!facts(code).ends_block, "{code:?} should not end a block");
        }
    }

    #[test]
    fn popek_goldberg_sensitive_instructions_are_classified() {
        use Sensitivity::*;
        let cases = [
            (Code::Popfd, Unprivileged),
            (Code::Pushfd, Unprivileged),
            (Code::Sgdt_m1632, Unprivileged),
            (Code::Sidt_m1632, Unprivileged),
            (Code::Sldt_rm16, Unprivileged),
            (Code::Smsw_rm16, Unprivileged),
            (Code::Str_rm16, Unprivileged),
            (Code::Lar_r32_r32m16, Unprivileged),
            (Code::Lsl_r32_r32m16, Unprivileged),
            (Code::Verr_rm16, Unprivileged),
            (Code::Verw_rm16, Unprivileged),
            (Code::Mov_rm16_Sreg, Unprivileged),
            (Code::Mov_Sreg_rm16, Unprivileged),
            (Code::Pushd_CS, Unprivileged),
            (Code::Popd_DS, Unprivileged),
            (Code::Call_ptr1632, Unprivileged),
            (Code::Jmp_m1632, Unprivileged),
            (Code::Retfd, Unprivileged),
            (Code::Int_imm8, Unprivileged),
            (Code::Iretd, Unprivileged),
            (Code::Cli, IoplChecked),
            (Code::In_AL_DX, IoplChecked),
            (Code::Outsb_DX_m8, IoplChecked),
            (Code::Hlt, Privileged),
            (Code::Lgdt_m1632, Privileged),
            (Code::Mov_cr_r32, Privileged),
            (Code::Wrmsr, Privileged),
            (Code::Add_rm32_r32, None),
            (Code::Call_rel32_32, None),
            (Code::Jmp_rm32, None),
            (Code::Push_r32, None),
            (Code::Cpuid, None),
        ];
        for (code, want) in cases {
            assert_eq!(facts(code).sensitivity, want, "{code:?}");
        }
    }

    #[test]
    fn flags_come_from_the_manuals() {
        use iced_x86::RflagsBits as F;
        let add = facts(Code::Add_rm32_r32);
        assert_eq!(add.flags_read, 0);
        assert_eq!(
            add.flags_written,
            F::OF | F::SF | F::ZF | F::AF | F::CF | F::PF
        );
        let adc = facts(Code::Adc_rm32_r32);
        assert_eq!(adc.flags_read, F::CF);
        let mul = facts(Code::Mul_rm32);
        assert_eq!(mul.flags_undefined, F::SF | F::ZF | F::AF | F::PF);
        assert_eq!(
            rflags_bits(mul.flags_undefined),
            crate::cpu::rflags::ARITH & !(crate::cpu::rflags::CF | crate::cpu::rflags::OF)
        );
        let jz = facts(Code::Je_rel8_32);
        assert_eq!(jz.flags_read, F::ZF);
        assert_eq!(jz.flags_written, 0);
    }

    #[test]
    fn every_form_has_facts() {
        assert_eq!(TABLE.len(), Code::values().len());
        assert_eq!(facts(Code::INVALID).flow, FlowControl::Exception);
    }
}

//! Every exception the interpreter raises, delivered through a real IDT.
//!
//! Each case runs a few instructions on the small kernel of `common` (32-bit protected
//! mode with paging, a TSS and an IDT whose stubs record the frame and halt) through
//! [`Machine`], then checks which stub ran, with which error code, for which
//! instruction: the one labelled "mark". Cases that must not fault run to a `ud2` at
//! "mark" instead (vector 6 there proves that everything before it ran).
//!

mod common;

use common::*;
use emu_core::cpu::{cr0, rflags};
use emu_core::exception::vector;
use emu_core::exit::StopReason;
use emu_core::machine::Machine;
use iced_x86::code_asm::*;
use iced_x86::IcedError;

/// Far more instructions than any case needs: a runaway case ends at the budget.
const BUDGET: u64 = 10_000;
/// A value no case computes by accident.
const MAGIC: u32 = 0x5A;
/// The COM1 scratch register: reads back what was written to it.
const SCRATCH_PORT: u16 = 0x3FF;
/// A port the I/O bitmap denies (the CMOS index register).
const DENIED_PORT: u16 = 0x70;
/// An IDT vector no exception uses, for INT n.
const SPARE_VECTOR: u8 = 31;
/// Where the #TS case sends INT3: a ring-1 code segment.
const RING1_CS: u16 = FREE_SLOT | 1;
/// A not-present ring-3 data segment.
const ABSENT_DS: u16 = (FREE_SLOT + 8) | 3;
/// The error code of a fault caused by IDT entry `v` (the IDT bit set).
const fn idt_error(v: u8) -> u32 {
    v as u32 * 8 + 2
}

/// What a case should end with.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The stub of the vector ran, with that error code, for the instruction at "mark".
    Fault(u8, Option<u32>),
    /// A page fault with this error code, and CR2 = the address.
    PageFault(u32, u64),
    /// A double fault (error code 0; the saved CS:EIP are undefined).
    DoubleFault,
    /// Nothing faulted up to the `ud2` at "mark".
    Completes,
    /// HLT stopped the machine, no exception.
    Halts,
    /// A triple fault shut the processor down.
    Shutdown,
}

/// One row of the table.
struct Case {
    /// CPL the code starts at.
    cpl: u8,
    /// Changes to the kernel.
    setup: fn(&mut Kernel),
    /// The code.
    code: fn(&mut Asm) -> Result<(), IcedError>,
    /// The outcome.
    expect: Expect,
    /// Further checks on the outcome.
    check: fn(&Outcome),
}

/// How a case ended.
struct Outcome {
    /// Why the run stopped.
    stop: StopReason,
    /// What the stub recorded.
    record: Record,
    /// The CPU at the end.
    state: emu_core::cpu::CpuState,
    /// Where the test code is.
    program: Program,
    /// Guest RAM at the end.
    ram: Vec<u8>,
}

fn no_setup(_: &mut Kernel) {}
fn no_check(_: &Outcome) {}

impl Case {
    const DEFAULT: Case = Case {
        cpl: 3,
        setup: no_setup,
        code: |a| a.nop(),
        expect: Expect::Completes,
        check: no_check,
    };
}

fn run(name: &str, case: Case) {
    let mut kernel = Kernel::legacy();
    kernel.cpl = case.cpl;
    (case.setup)(&mut kernel);
    let program = assemble(32, CODE, case.code);
    let mut m = Machine::interpreted(RAM, Box::new(std::io::sink())).expect("machine");
    let state = kernel.install(m.ram_mut().as_mut_slice(), &program);
    m.set_cpu_state(&state).unwrap();
    let stop = m.run(BUDGET).stop;
    let out = Outcome {
        stop,
        record: Record::read(m.ram().as_slice(), false),
        state: m.cpu_state().unwrap(),
        program,
        ram: m.ram().as_slice()[..0x2_0000].to_vec(),
    };
    let r = &out.record;
    let fault = |v: u8, error: Option<u32>, eip: Option<u64>| {
        assert_eq!(
            out.stop,
            StopReason::Halted,
            "{name}: run ended with {}",
            out.stop
        );
        assert_eq!(r.vector, Some(v), "{name}: stub that ran; record {r:x?}");
        assert_eq!(r.error, error.map(u64::from), "{name}: error code");
        if let Some(eip) = eip {
            assert_eq!(r.eip, eip, "{name}: saved EIP");
        }
    };
    let mark = out.program.ip("mark");
    match case.expect {
        Expect::Fault(v, error) => fault(v, error, Some(mark)),
        Expect::PageFault(error, address) => {
            fault(vector::PF, Some(error), Some(mark));
            assert_eq!(out.state.cr2, address, "{name}: CR2");
        }
        Expect::DoubleFault => fault(vector::DF, Some(0), None),
        Expect::Completes => fault(vector::UD, None, Some(mark)),
        Expect::Halts => {
            assert_eq!(
                out.stop,
                StopReason::Halted,
                "{name}: run ended with {}",
                out.stop
            );
            assert_eq!(r.vector, None, "{name}: a stub ran: {r:x?}");
            assert_eq!(out.state.rip, mark, "{name}: halted elsewhere");
        }
        Expect::Shutdown => assert!(
            matches!(out.stop, StopReason::Shutdown(_)),
            "{name}: run ended with {}",
            out.stop
        ),
    }
    (case.check)(&out);
}

/// One `#[test]` per row, named after it, so a failure says which case broke.
macro_rules! cases {
    ($($(#[$meta:meta])* $name:ident { $($field:ident: $value:expr),* $(,)? })*) => {
        $(
            $(#[$meta])*
            #[test]
            #[allow(clippy::needless_update)] // some rows set every field
            fn $name() {
                run(stringify!($name), Case { $($field: $value,)* ..Case::DEFAULT });
            }
        )*
    };
}

/// Saved CS of a fault in the test code at CPL 3.
fn from_user(out: &Outcome) {
    assert_eq!(out.record.cs, USER_CS as u64, "saved CS");
    assert_eq!(out.record.esp, Some(USER_STACK), "saved ESP");
    assert_eq!(out.record.ss, Some(USER_DS as u64), "saved SS");
}

cases! {
    single_step_traps_after_the_next_instruction {
        // POPF sets TF; the NOP after it runs with TF set and traps when it is done.
        code: |a| {
            a.pushfd()?;
            a.or(dword_ptr(esp), rflags::TF as i32)?;
            a.popfd()?;
            a.nop()?;
            a.label("mark")?;
            a.nop()
        },
        expect: Expect::Fault(vector::DB, None),
        check: from_user,
    }

    device_not_available_with_cr0_ts {
        // A task switch left TS set: the first x87 instruction asks the kernel to
        // restore the FPU state.
        cpl: 0,
        setup: |k| k.cr0 |= cr0::TS,
        code: |a| {
            a.label("mark")?;
            a.fninit()
        },
        expect: Expect::Fault(vector::NM, None),
    }

    alignment_check_on_a_misaligned_load_at_cpl3 {
        setup: |k| k.cr0 |= cr0::AM,
        code: |a| {
            a.pushfd()?;
            a.or(dword_ptr(esp), rflags::AC as i32)?;
            a.popfd()?;
            a.mov(ebx, USER_STACK as u32 - 0x100)?;
            a.label("mark")?;
            a.mov(eax, dword_ptr(ebx + 1))
        },
        expect: Expect::Fault(vector::AC, Some(0)),
        check: from_user,
    }

    misaligned_load_without_eflags_ac_is_fine {
        setup: |k| k.cr0 |= cr0::AM,
        code: |a| {
            a.mov(ebx, USER_STACK as u32 - 0x100)?;
            a.mov(eax, dword_ptr(ebx + 1))?;
            a.label("mark")?;
            a.ud2()
        },
    }

    divide_error {
        code: |a| {
            a.xor(ecx, ecx)?;
            a.label("mark")?;
            a.div(ecx)
        },
        expect: Expect::Fault(vector::DE, None),
    }

    breakpoint_returns_after_int3 {
        code: |a| {
            a.int3()?;
            a.label("mark")?;
            a.nop()
        },
        expect: Expect::Fault(vector::BP, None),
        check: from_user,
    }

    overflow_with_into {
        code: |a| {
            a.mov(al, 0x7F)?;
            a.add(al, 1)?; // signed overflow: OF = 1
            CodeAssembler::into(a)?; // not Into::into
            a.label("mark")?;
            a.nop()
        },
        expect: Expect::Fault(vector::OF, None),
    }

    into_without_overflow_does_nothing {
        code: |a| {
            a.xor(eax, eax)?;
            CodeAssembler::into(a)?; // not Into::into
            a.label("mark")?;
            a.ud2()
        },
    }

    bound_range_exceeded {
        code: |a| {
            a.mov(dword_ptr(USER_DATA), 10u32)?;
            a.mov(dword_ptr(USER_DATA + 4), 20u32)?;
            a.mov(eax, 21u32)?;
            a.label("mark")?;
            a.bound(eax, dword_ptr(USER_DATA))
        },
        expect: Expect::Fault(vector::BR, None),
    }

    bound_within_range_passes {
        code: |a| {
            a.mov(dword_ptr(USER_DATA), 0xFFFF_FFF6u32)?; // -10: the bounds are signed
            a.mov(dword_ptr(USER_DATA + 4), 20u32)?;
            a.mov(eax, 0xFFFF_FFFBu32)?; // -5
            a.bound(eax, dword_ptr(USER_DATA))?;
            a.label("mark")?;
            a.ud2()
        },
    }

    invalid_opcode {
        code: |a| {
            a.label("mark")?;
            a.ud2()
        },
        expect: Expect::Fault(vector::UD, None),
        check: from_user,
    }

    double_fault_when_the_gp_gate_is_missing {
        setup: |k| k.gates[vector::GP as usize].present = false,
        code: |a| {
            a.mov(ax, KERNEL_DS as u32)?;
            a.label("mark")?;
            a.mov(ds, ax) // #GP, whose gate is absent: #NP during #GP delivery
        },
        expect: Expect::DoubleFault,
    }

    invalid_tss_on_a_ring_change_with_a_bad_inner_stack {
        // INT3 leads to ring 1, whose SS in the TSS is a ring-3 segment. (Ring 1, not 0:
        // the #TS handler itself needs a good ring-0 stack.)
        setup: |k| {
            k.set_descriptor(RING1_CS, &[code32(1)]);
            k.gates[vector::BP as usize].selector = RING1_CS;
            k.ring_stacks[1] = (USER_DS, INNER_STACK);
        },
        code: |a| {
            a.label("mark")?;
            a.int3()
        },
        expect: Expect::Fault(vector::TS, Some((USER_DS & !3) as u32)),
        check: from_user,
    }

    not_present_gate {
        setup: |k| {
            let g = &mut k.gates[SPARE_VECTOR as usize];
            g.dpl = 3;
            g.present = false;
        },
        code: |a| {
            a.label("mark")?;
            a.int(SPARE_VECTOR as u32)
        },
        expect: Expect::Fault(vector::NP, Some(idt_error(SPARE_VECTOR))),
    }

    stack_fault_loading_a_not_present_ss {
        setup: |k| k.set_descriptor(ABSENT_DS, &[absent(data(3))]),
        code: |a| {
            a.mov(ax, ABSENT_DS as u32)?;
            a.label("mark")?;
            a.mov(ss, ax)
        },
        expect: Expect::Fault(vector::SS, Some((ABSENT_DS & !3) as u32)),
    }

    not_present_data_segment {
        setup: |k| k.set_descriptor(ABSENT_DS, &[absent(data(3))]),
        code: |a| {
            a.mov(ax, ABSENT_DS as u32)?;
            a.label("mark")?;
            a.mov(es, ax)
        },
        expect: Expect::Fault(vector::NP, Some((ABSENT_DS & !3) as u32)),
    }

    gp_loading_a_ring0_data_segment_at_cpl3 {
        code: |a| {
            a.mov(ax, KERNEL_DS as u32)?;
            a.label("mark")?;
            a.mov(ds, ax)
        },
        expect: Expect::Fault(vector::GP, Some(KERNEL_DS as u32)),
        check: from_user,
    }

    gp_int_to_a_ring0_gate_from_cpl3 {
        code: |a| {
            a.label("mark")?;
            a.int(SPARE_VECTOR as u32)
        },
        expect: Expect::Fault(vector::GP, Some(idt_error(SPARE_VECTOR))),
    }

    gp_hlt_at_cpl3 {
        code: |a| {
            a.label("mark")?;
            a.hlt()
        },
        expect: Expect::Fault(vector::GP, Some(0)),
    }

    hlt_at_cpl0_halts {
        cpl: 0,
        code: |a| {
            a.hlt()?;
            a.label("mark")?;
            a.ud2()
        },
        expect: Expect::Halts,
    }

    gp_cli_with_iopl0_at_cpl3 {
        code: |a| {
            a.label("mark")?;
            a.cli()
        },
        expect: Expect::Fault(vector::GP, Some(0)),
    }

    cli_with_iopl3_at_cpl3_runs {
        setup: |k| k.rflags |= rflags::IOPL | rflags::IF,
        code: |a| {
            a.cli()?;
            a.label("mark")?;
            a.ud2()
        },
        check: |out| assert_eq!(out.record.eflags & rflags::IF, 0, "IF after CLI"),
    }

    gp_in_from_a_port_the_bitmap_denies {
        code: |a| {
            a.mov(dx, DENIED_PORT as u32)?;
            a.label("mark")?;
            a.in_(al, dx)
        },
        expect: Expect::Fault(vector::GP, Some(0)),
    }

    in_and_out_to_a_port_the_bitmap_allows {
        setup: |k| k.allow_port(SCRATCH_PORT),
        code: |a| {
            a.mov(dx, SCRATCH_PORT as u32)?;
            a.mov(al, MAGIC)?;
            a.out(dx, al)?;
            a.xor(eax, eax)?;
            a.in_(al, dx)?;
            a.label("mark")?;
            a.ud2()
        },
        check: |out| assert_eq!(out.record.eax, MAGIC as u64, "value read back"),
    }

    gp_rdmsr_at_cpl3 {
        code: |a| {
            a.xor(ecx, ecx)?;
            a.label("mark")?;
            a.rdmsr()
        },
        expect: Expect::Fault(vector::GP, Some(0)),
    }

    gp_mov_from_cr0_at_cpl3 {
        code: |a| {
            a.label("mark")?;
            a.mov(eax, cr0)
        },
        expect: Expect::Fault(vector::GP, Some(0)),
    }

    page_fault_reading_an_absent_page_at_cpl3 {
        code: |a| {
            a.label("mark")?;
            a.mov(eax, dword_ptr(ABSENT + 0x10))
        },
        expect: Expect::PageFault(0x4, ABSENT + 0x10),
        check: from_user,
    }

    page_fault_writing_a_read_only_page_at_cpl3 {
        code: |a| {
            a.label("mark")?;
            a.mov(dword_ptr(USER_RO), MAGIC)
        },
        expect: Expect::PageFault(0x7, USER_RO),
    }

    page_fault_reading_a_kernel_page_at_cpl3 {
        code: |a| {
            a.label("mark")?;
            a.mov(eax, dword_ptr(RECORD))
        },
        expect: Expect::PageFault(0x5, RECORD),
    }

    cpl0_writes_a_read_only_page_without_cr0_wp {
        cpl: 0,
        code: |a| {
            a.mov(dword_ptr(USER_RO), MAGIC)?;
            a.label("mark")?;
            a.ud2()
        },
        check: |out| {
            let at = USER_RO as usize;
            assert_eq!(out.ram[at], MAGIC as u8, "the write happened");
        },
    }

    page_fault_cpl0_writes_a_read_only_page_with_cr0_wp {
        cpl: 0,
        setup: |k| k.cr0 |= cr0::WP,
        code: |a| {
            a.label("mark")?;
            a.mov(dword_ptr(USER_RO), MAGIC)
        },
        expect: Expect::PageFault(0x3, USER_RO),
        check: |out| assert_eq!(out.record.cs, KERNEL_CS as u64, "saved CS"),
    }

    triple_fault_without_an_idt {
        setup: |k| k.idt_limit = 0,
        code: |a| {
            a.label("mark")?;
            a.ud2()
        },
        expect: Expect::Shutdown,
        check: |out| match &out.stop {
            StopReason::Shutdown(Some((first, state))) => {
                assert_eq!(first.vector, vector::UD, "the exception that started it");
                assert_eq!(state.rip, out.program.ip("mark"));
            }
            other => panic!("no cause reported: {other}"),
        },
    }
}

//! The exception table: every exception Popek's engines raise, delivered through a
//! real IDT, one named row per architectural case.
//!
//! Each row runs a few instructions on the small kernel of [`super::kernel`] (32-bit
//! protected mode with paging, a TSS and an IDT whose stubs record the frame and halt,
//! unless the row picks long or real mode) in a whole [`Machine`], then checks which stub
//! ran, with which error code, for which instruction: the one labelled "mark". Rows that
//! must not fault run to a `ud2` at "mark" instead (vector 6 there proves that everything
//! before it ran).
//!
//! The rows live in the macro [`exception_table!`](crate::exception_table) so that each
//! crate's tests can make what they want of them: emu-core's tests one `#[test]` per row
//! on every software engine, accel-kvm's the rows KVM can run.

use super::kernel::*;
use super::SOFTWARE_ENGINES;
use crate::exception::vector;
use crate::exit::StopReason;
use crate::machine::{EngineFactory, Machine};
use iced_x86::code_asm::*;
use iced_x86::IcedError;

/// Far more instructions than any case needs: a runaway case ends at the budget.
pub const BUDGET: u64 = 10_000;
/// A value no case computes by accident.
pub const MAGIC: u32 = 0x5A;
/// The COM1 scratch register: reads back what was written to it.
pub const SCRATCH_PORT: u16 = 0x3FF;
/// A port the I/O bitmap denies (the CMOS index register).
pub const DENIED_PORT: u16 = 0x70;
/// An IDT vector no exception uses, for INT n.
pub const SPARE_VECTOR: u8 = 31;
/// Where the #TS case sends INT3: a ring-1 code segment.
pub const RING1_CS: u16 = FREE_SLOT | 1;
/// A not-present ring-3 data segment.
pub const ABSENT_DS: u16 = (FREE_SLOT + 8) | 3;
/// A segment each segment-check case describes for itself (ring 3 data, RPL 3).
pub const TEST_DS: u16 = (FREE_SLOT + 0x10) | 3;
/// A stack segment for the segment-check cases (ring 3).
pub const TEST_SS: u16 = (FREE_SLOT + 0x18) | 3;
/// A flat ring-3 execute-only code segment.
pub const EXEC_ONLY_CS: u16 = (FREE_SLOT + 0x20) | 3;
/// A ring-1 stack segment too small for what is pushed on it.
pub const RING1_SS: u16 = (FREE_SLOT + 0x28) | 1;
/// A call gate from ring 3 into [`RING1_CS`].
pub const RING1_GATE: u16 = (FREE_SLOT + 0x30) | 3;
/// Top of the ring-1 stack; [`RING1_SS`]'s limit leaves the top 8 bytes out.
pub const RING1_STACK_LIMIT: u32 = INNER_STACK as u32 - 9;
/// A non-canonical address: bit 63 set, bits 62:47 clear.
pub const NON_CANONICAL: u64 = 1 << 63;
/// Offsets of the first byte past a one-page byte-granular limit, and of the last
/// byte within it.
pub const PAGE_END: u32 = 0x1000;
pub const LAST_BYTE: u32 = PAGE_END - 1;

/// A data segment of privilege `dpl` at `base` with the raw 20-bit `limit`, extra type
/// bits `kind` (access::RW: writable; access::EXPAND_DOWN) and `flags` (G, D/B).
pub fn data_desc(dpl: u8, base: u64, limit: u32, kind: u8, flags: u8) -> u64 {
    let a = access::P | access::S | (dpl << access::DPL_SHIFT) | kind;
    descriptor(base as u32, limit, a, flags)
}

/// A ring-3 data segment for [`TEST_DS`] or [`TEST_SS`].
pub fn user_data(base: u64, limit: u32, kind: u8, flags: u8) -> u64 {
    data_desc(3, base, limit, kind, flags)
}

/// Loads `sel` into DS (or whichever data segment register `seg` is).
pub fn load(a: &mut Asm, seg: AsmRegisterSegment, sel: u16) -> Result<(), IcedError> {
    a.mov(ax, sel as u32)?;
    a.mov(seg, ax)
}

/// DS = [`TEST_DS`]: one byte-granular page at [`USER_DATA`] (offsets 0..=0xFFF).
pub fn one_page_ds(k: &mut Kernel) {
    k.set_descriptor(
        TEST_DS,
        &[user_data(USER_DATA, LAST_BYTE, access::RW, flags::D)],
    );
}

/// CS = USER_CS limited to the code's first page (offsets up to [`CODE`] + 0xFFF).
pub fn one_page_cs(k: &mut Kernel) {
    let a = access::P | access::S | access::CODE | access::RW | (3 << access::DPL_SHIFT);
    k.set_descriptor(
        USER_CS,
        &[descriptor(0, CODE as u32 + LAST_BYTE, a, flags::D)],
    );
}

/// DS = [`TEST_DS`]: raw limit 1 with G, so offsets 0-0x1FFF, ending at the end of
/// [`USER_DATA`].
pub fn two_page_ds(k: &mut Kernel) {
    let desc = user_data(USER_DATA - 0x1000, 1, access::RW, flags::G | flags::D);
    k.set_descriptor(TEST_DS, &[desc]);
}

/// DS = [`TEST_DS`]: expand-down above a one-page limit, with the D/B bit `FLAGS`
/// sets (0: offsets 0x1000-0xFFFF; D: up to 0xFFFF_FFFF). Its base lies in kernel
/// pages: the rows using it run at CPL 0.
pub fn expand_down_ds<const FLAGS: u8>(k: &mut Kernel) {
    let desc = user_data(0x2_0000, LAST_BYTE, access::RW | access::EXPAND_DOWN, FLAGS);
    k.set_descriptor(TEST_DS, &[desc]);
}

/// [`TEST_DS`] read-only and flat: only the type can refuse an access.
pub fn read_only_ds(k: &mut Kernel) {
    k.set_descriptor(TEST_DS, &[user_data(0, 0xF_FFFF, 0, flags::G | flags::D)]);
}

/// SS = [`TEST_SS`]: expand-up, 32-bit, ending just below [`USER_STACK`].
pub fn short_stack(k: &mut Kernel) {
    let limit = USER_STACK as u32 - 1;
    k.set_descriptor(TEST_SS, &[user_data(0, limit, access::RW, flags::D)]);
}

/// INT n, #UD and a call gate lead to ring 1, whose stack is too small for a frame.
pub fn ring1_with_small_stack(k: &mut Kernel) {
    k.set_descriptor(RING1_CS, &[code32(1)]);
    let stack = data_desc(1, 0, RING1_STACK_LIMIT, access::RW, flags::D);
    k.set_descriptor(RING1_SS, &[stack]);
    k.set_descriptor(RING1_GATE, &[gate(system::CALL_GATE, 3, RING1_CS, 0, 0)]);
    k.ring_stacks[1] = (RING1_SS, INNER_STACK);
    for v in [SPARE_VECTOR, vector::UD] {
        let g = &mut k.gates[v as usize];
        g.selector = RING1_CS;
        g.dpl = 3;
    }
}

/// The error code of a fault caused by IDT entry `v` (the IDT bit set).
pub const fn idt_error(v: u8) -> u32 {
    v as u32 * 8 + 2
}

/// What a case should end with.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
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
pub struct Case {
    /// The kernel to start from: 32-bit protected mode unless the row says otherwise.
    pub kernel: fn() -> Kernel,
    /// CPL the code starts at (ignored in real mode).
    pub cpl: u8,
    /// Changes to the kernel.
    pub setup: fn(&mut Kernel),
    /// The code.
    pub code: fn(&mut Asm) -> Result<(), IcedError>,
    /// The outcome.
    pub expect: Expect,
    /// Further checks on the outcome.
    pub check: fn(&Outcome),
}

/// How a case ended.
pub struct Outcome {
    /// Why the run stopped.
    pub stop: StopReason,
    /// What the stub recorded.
    pub record: Record,
    /// The CPU at the end.
    pub state: crate::cpu::CpuState,
    /// Where the test code is.
    pub program: Program,
    /// Guest RAM at the end.
    pub ram: Vec<u8>,
}

pub fn no_setup(_: &mut Kernel) {}
pub fn no_check(_: &Outcome) {}

impl Case {
    /// A row with nothing set: 32-bit protected mode at CPL 3, running to its `ud2`.
    pub const DEFAULT: Case = Case {
        kernel: Kernel::legacy,
        cpl: 3,
        setup: no_setup,
        code: |a| a.nop(),
        expect: Expect::Completes,
        check: no_check,
    };
}

pub fn run(name: &str, case: Case) {
    for &(engine, maker) in SOFTWARE_ENGINES {
        run_on(&format!("{name} on {engine}"), maker(), &case);
    }
}

pub fn run_on(name: &str, engine: Box<EngineFactory<'static>>, case: &Case) {
    let mut kernel = (case.kernel)();
    if !kernel.real {
        kernel.cpl = case.cpl;
    }
    (case.setup)(&mut kernel);
    let program = assemble(kernel.bitness(), kernel.origin(), case.code);
    let mut m = Machine::new(RAM, Box::new(std::io::sink()), engine).expect("machine");
    let state = kernel.install(m.ram_mut().as_mut_slice(), &program);
    m.set_cpu_state(&state).unwrap();
    let stop = m.run(BUDGET).stop;
    let out = Outcome {
        stop,
        record: Record::read(m.ram().as_slice(), kernel.long),
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

/// Saved CS of a fault in the test code at CPL 3.
pub fn from_user(out: &Outcome) {
    assert_eq!(out.record.cs, USER_CS as u64, "saved CS");
    assert_eq!(out.record.esp, Some(USER_STACK), "saved ESP");
    assert_eq!(out.record.ss, Some(USER_DS as u64), "saved SS");
}

/// Hands every row of the exception table to the macro `$m`, as
/// `name { field: value, ... }` with the fields of
/// [`testkit::exceptions::Case`](crate::testkit::exceptions::Case). The rows name items
/// of `testkit::exceptions`, `testkit::kernel`, `cpu::{cr0, rflags}`,
/// `exception::vector`, `exit::StopReason` and `iced_x86::code_asm`, which the caller brings into scope.
#[macro_export]
macro_rules! exception_table {
    ($m:ident) => {
        $m! {
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

    // ---- segment limits and types on data and stack accesses (SDM Vol. 3, 5.3, 5.4) ----

        byte_limit_admits_its_last_byte {
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(al, byte_ptr(LAST_BYTE))?;
                a.mov(eax, dword_ptr(LAST_BYTE - 3))?;
                a.label("mark")?;
                a.ud2()
            },
        }

        gp_near_jmp_past_the_cs_limit {
            // The branch faults, not the fetch at its target: the frame holds its EIP.
            setup: one_page_cs,
            code: |a| {
                a.mov(eax, CODE as u32 + PAGE_END)?;
                a.label("mark")?;
                a.jmp(eax)
            },
            expect: Expect::Fault(vector::GP, Some(0)),
            check: from_user,
        }

        gp_near_call_past_the_cs_limit_pushes_nothing {
            setup: one_page_cs,
            code: |a| {
                a.label("mark")?;
                a.call(CODE + u64::from(PAGE_END))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
            check: from_user,
        }

        gp_near_ret_past_the_cs_limit_leaves_esp {
            setup: one_page_cs,
            code: |a| {
                a.push(CODE as u32 + PAGE_END)?;
                a.label("mark")?;
                a.ret()
            },
            expect: Expect::Fault(vector::GP, Some(0)),
            check: |out| assert_eq!(out.record.esp, Some(USER_STACK - 4), "ESP kept"),
        }

        gp_reading_one_byte_past_a_byte_limit {
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.mov(al, byte_ptr(PAGE_END)) // MOV AL, moffs8
            },
            expect: Expect::Fault(vector::GP, Some(0)),
            check: from_user,
        }

        gp_reading_a_dword_straddling_a_byte_limit {
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(ebx, LAST_BYTE - 2)?;
                a.label("mark")?;
                a.mov(eax, dword_ptr(ebx))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        page_limit_admits_its_last_page {
            // Raw limit 1 with G: offsets up to 0x1FFF.
            setup: two_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(eax, dword_ptr(0x1FFC))?;
                a.label("mark")?;
                a.ud2()
            },
        }

        gp_straddling_a_page_limit {
            setup: two_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.mov(eax, dword_ptr(0x1FFD))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        expand_down_b0_admits_offsets_above_its_limit_up_to_ffff {
            // Valid offsets 0x1000-0xFFFF. CPL 0: the bytes may lie in kernel pages.
            cpl: 0,
            setup: expand_down_ds::<0>,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(al, byte_ptr(PAGE_END))?;
                a.mov(ax, word_ptr(0xFFFE))?;
                a.label("mark")?;
                a.ud2()
            },
        }

        gp_expand_down_b0_at_its_limit {
            cpl: 0,
            setup: expand_down_ds::<0>,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.mov(al, byte_ptr(LAST_BYTE))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_expand_down_b0_word_past_ffff {
            cpl: 0,
            setup: expand_down_ds::<0>,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.mov(ax, word_ptr(0xFFFF))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        expand_down_b1_admits_offsets_up_to_4g {
            // The top dword wraps to the byte below the base.
            cpl: 0,
            setup: expand_down_ds::<{ flags::D }>,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(eax, dword_ptr(0x1_0000))?;
                a.mov(ebx, 0xFFFF_FFFCu32)?;
                a.mov(eax, dword_ptr(ebx))?;
                a.label("mark")?;
                a.ud2()
            },
        }

        gp_expand_down_b1_dword_wrapping_past_4g {
            cpl: 0,
            setup: expand_down_ds::<{ flags::D }>,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(ebx, 0xFFFF_FFFEu32)?;
                a.label("mark")?;
                a.mov(eax, dword_ptr(ebx))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        read_only_data_segment_reads {
            setup: read_only_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(eax, dword_ptr(USER_DATA))?;
                a.cmp(dword_ptr(USER_DATA), eax)?; // CMP only reads its destination
                a.bt(dword_ptr(USER_DATA), eax)?; // so does BT
                a.label("mark")?;
                a.ud2()
            },
        }

        gp_writing_through_a_read_only_data_segment {
            setup: read_only_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.mov(dword_ptr(USER_DATA), MAGIC)
            },
            expect: Expect::Fault(vector::GP, Some(0)),
            check: |out| assert_ne!(out.ram[USER_DATA as usize], MAGIC as u8, "nothing written"),
        }

        gp_before_the_page_fault_for_read_modify_write_through_a_read_only_segment {
            // ADD reads first, but the write check comes before any access: no #PF.
            setup: read_only_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.add(dword_ptr(ABSENT), eax)
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_cmpxchg8b_through_a_read_only_segment {
            setup: read_only_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.cmpxchg8b(qword_ptr(USER_DATA))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_sgdt_through_a_read_only_segment {
            setup: read_only_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.sgdt(ptr(USER_DATA))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        readable_code_segment_reads_through_a_cs_override {
            code: |a| {
                a.mov(dword_ptr(USER_DATA), MAGIC)?;
                a.mov(eax, dword_ptr(USER_DATA).cs())?;
                a.label("mark")?;
                a.ud2()
            },
            check: |out| assert_eq!(out.record.eax, MAGIC as u64, "value read"),
        }

        gp_writing_through_a_cs_override {
            code: |a| {
                a.label("mark")?;
                a.mov(dword_ptr(USER_DATA).cs(), eax)
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_reading_through_an_execute_only_code_segment {
            // RETF into the execute-only segment (flat, so the code is where it was).
            setup: |k| {
                let a = access::P | access::S | access::CODE | (3 << access::DPL_SHIFT);
                k.set_descriptor(EXEC_ONLY_CS, &[descriptor(0, 0xF_FFFF, a, flags::G | flags::D)]);
            },
            code: |a| {
                let mut over = a.create_label();
                a.push(EXEC_ONLY_CS as u32)?;
                a.call(over)?; // pushes the address of "mark"
                a.label("mark")?;
                a.mov(eax, dword_ptr(USER_DATA).cs())?;
                a.set_label(&mut over)?;
                a.retf()
            },
            expect: Expect::Fault(vector::GP, Some(0)),
            check: |out| assert_eq!(out.record.cs, EXEC_ONLY_CS as u64, "saved CS"),
        }

        gp_using_a_null_ds {
            code: |a| {
                load(a, ds, 0)?;
                a.label("mark")?;
                a.mov(eax, dword_ptr(USER_DATA))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
            check: from_user,
        }

        stos_does_not_use_a_null_ds {
            code: |a| {
                load(a, ds, 0)?;
                a.mov(edi, USER_DATA as u32)?;
                a.stosd()?;
                a.label("mark")?;
                a.ud2()
            },
        }

        gp_stos_through_a_null_es {
            code: |a| {
                load(a, es, 0)?;
                a.mov(edi, USER_DATA as u32)?;
                a.label("mark")?;
                a.stosd()
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_movs_destination_straddling_the_es_limit {
            setup: one_page_ds,
            code: |a| {
                load(a, es, TEST_DS)?;
                a.mov(esi, USER_DATA as u32)?;
                a.mov(edi, LAST_BYTE - 1)?;
                a.label("mark")?;
                a.movsd()
            },
            expect: Expect::Fault(vector::GP, Some(0)),
            check: |out| assert_eq!(out.state.gpr[7], (LAST_BYTE - 1) as u64, "EDI kept"),
        }

        gp_outsb_to_a_port_the_bitmap_denies {
            code: |a| {
                a.mov(dx, DENIED_PORT as u32)?;
                a.mov(esi, USER_DATA as u32)?;
                a.label("mark")?;
                a.outsb()
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_lds_far_pointer_straddling_the_limit {
            // The whole 6-byte pointer must fit, not just its offset.
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.lds(eax, ptr(LAST_BYTE - 3))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_xlat_past_the_limit {
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(ebx, LAST_BYTE)?;
                a.mov(eax, 1u32)?;
                a.label("mark")?;
                a.xlatb()
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_bound_straddling_the_limit {
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.bound(eax, qword_ptr(LAST_BYTE - 3))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_fxsave_area_past_the_limit {
            // All 512 bytes of the area must fit.
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.fxsave(ptr(PAGE_END - 0x100))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        ss_fault_pushing_below_an_expand_down_stack {
            // Stack offsets above USER_STACK - 1 only: one push fits, the second does not.
            setup: |k| {
                let limit = USER_STACK as u32 - 1;
                k.set_descriptor(TEST_SS, &[user_data(0, limit, access::RW | access::EXPAND_DOWN, flags::D)]);
            },
            code: |a| {
                load(a, ss, TEST_SS)?;
                a.mov(esp, USER_STACK as u32 + 4)?;
                a.push(eax)?;
                a.label("mark")?;
                a.push(eax)
            },
            expect: Expect::Fault(vector::SS, Some(0)),
            check: |out| {
                assert_eq!(out.record.esp, Some(USER_STACK), "saved ESP");
                assert_eq!(out.record.ss, Some(TEST_SS as u64), "saved SS");
            },
        }

        ss_fault_popping_past_the_stack_limit {
            setup: short_stack,
            code: |a| {
                load(a, ss, TEST_SS)?;
                a.mov(esp, USER_STACK as u32 - 2)?;
                a.label("mark")?;
                a.pop(eax)
            },
            expect: Expect::Fault(vector::SS, Some(0)),
        }

        ss_fault_for_ret_past_the_stack_limit {
            setup: short_stack,
            code: |a| {
                load(a, ss, TEST_SS)?;
                a.mov(esp, USER_STACK as u32)?;
                a.label("mark")?;
                a.ret()
            },
            expect: Expect::Fault(vector::SS, Some(0)),
        }

        ss_fault_for_leave_with_ebp_past_the_stack_limit {
            setup: short_stack,
            code: |a| {
                load(a, ss, TEST_SS)?;
                a.mov(ebp, USER_STACK as u32)?;
                a.label("mark")?;
                a.leave()
            },
            expect: Expect::Fault(vector::SS, Some(0)),
            check: |out| assert_eq!(out.record.esp, Some(USER_STACK), "ESP kept"),
        }

        ss_fault_for_an_ebp_based_read_past_the_stack_limit {
            setup: short_stack,
            code: |a| {
                load(a, ss, TEST_SS)?;
                a.mov(ebp, USER_STACK as u32)?;
                a.label("mark")?;
                a.mov(eax, dword_ptr(ebp)) // SS by default
            },
            expect: Expect::Fault(vector::SS, Some(0)),
        }

        gp_for_a_ds_override_of_an_ebp_based_read {
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(ebp, PAGE_END)?;
                a.label("mark")?;
                a.mov(eax, dword_ptr(ebp).ds())
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        ss_fault_naming_the_new_stack_when_an_int_frame_does_not_fit {
            // INT n into ring 1: its stack cannot hold the frame. No EXT: INT n is the
            // program's own doing.
            setup: ring1_with_small_stack,
            code: |a| {
                a.label("mark")?;
                a.int(SPARE_VECTOR as u32)
            },
            expect: Expect::Fault(vector::SS, Some((RING1_SS & !3) as u32)),
            check: from_user,
        }

        ss_fault_with_ext_when_an_exception_frame_does_not_fit_the_new_stack {
            setup: ring1_with_small_stack,
            code: |a| {
                a.label("mark")?;
                a.ud2()
            },
            expect: Expect::Fault(vector::SS, Some((RING1_SS & !3) as u32 | 1)),
        }

        ss_fault_naming_the_new_stack_of_a_call_gate {
            setup: ring1_with_small_stack,
            code: |a| {
                a.label("mark")?;
                a.call_far(RING1_GATE, 0)
            },
            expect: Expect::Fault(vector::SS, Some((RING1_SS & !3) as u32)),
        }

        compatibility_mode_checks_limits {
            kernel: || Kernel { compat: true, ..Kernel::long() },
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.label("mark")?;
                a.mov(al, byte_ptr(PAGE_END))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        long_mode_ignores_limits_and_data_segment_bases {
            kernel: Kernel::long,
            setup: one_page_ds,
            code: |a| {
                load(a, ds, TEST_DS)?;
                a.mov(dword_ptr(USER_DATA + 0x100), MAGIC)?;
                a.mov(eax, dword_ptr(USER_DATA + 0x100))?;
                a.label("mark")?;
                a.ud2()
            },
            check: |out| assert_eq!(out.record.eax, MAGIC as u64, "value read"),
        }

        ss_fault_for_a_non_canonical_stack_address_in_64_bit_mode {
            kernel: Kernel::long,
            code: |a| {
                a.mov(rbp, NON_CANONICAL)?;
                a.label("mark")?;
                a.mov(rax, qword_ptr(rbp))
            },
            expect: Expect::Fault(vector::SS, Some(0)),
        }

        gp_for_a_non_canonical_data_address_in_64_bit_mode {
            kernel: Kernel::long,
            code: |a| {
                a.mov(rbx, NON_CANONICAL)?;
                a.label("mark")?;
                a.mov(rax, qword_ptr(rbx))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        gp_for_a_qword_running_into_non_canonical_space {
            kernel: Kernel::long,
            code: |a| {
                a.mov(rbx, 0x7FFF_FFFF_FFFCu64)?;
                a.label("mark")?;
                a.mov(rax, qword_ptr(rbx))
            },
            expect: Expect::Fault(vector::GP, Some(0)),
        }

        real_mode_byte_read_at_ffff_is_fine {
            kernel: Kernel::real_mode,
            code: |a| {
                a.mov(bx, 0xFFFFu32)?;
                a.mov(al, byte_ptr(bx))?;
                a.label("mark")?;
                a.ud2()
            },
        }

        real_mode_gp_for_a_word_read_at_ffff {
            // Real mode pushes no error codes.
            kernel: Kernel::real_mode,
            code: |a| {
                a.mov(bx, 0xFFFFu32)?;
                a.label("mark")?;
                a.mov(ax, word_ptr(bx))
            },
            expect: Expect::Fault(vector::GP, None),
            check: |out| assert_eq!(out.record.cs, REAL_CS as u64, "saved CS"),
        }

        real_mode_ss_fault_for_a_word_read_at_ffff_through_bp {
            kernel: Kernel::real_mode,
            code: |a| {
                a.mov(bp, 0xFFFFu32)?;
                a.label("mark")?;
                a.mov(ax, word_ptr(bp))
            },
            expect: Expect::Fault(vector::SS, None),
        }

        real_mode_gp_for_a_32_bit_offset_past_64k {
            kernel: Kernel::real_mode,
            code: |a| {
                a.mov(ebx, USER_DATA as u32)?;
                a.label("mark")?;
                a.mov(eax, dword_ptr(ebx))
            },
            expect: Expect::Fault(vector::GP, None),
        }

        real_mode_word_push_at_sp_1_shuts_down {
            // The push straddles offset 0xFFFF; so does delivering its #SS, and the #DF
            // after that (SDM, PUSH: "IA-32 Architecture Compatibility").
            kernel: Kernel::real_mode,
            code: |a| {
                a.mov(sp, 1u32)?;
                a.label("mark")?;
                a.push(ax)
            },
            expect: Expect::Shutdown,
            check: |out| match &out.stop {
                StopReason::Shutdown(Some((first, _))) => {
                    assert_eq!(first.vector, vector::SS, "the exception that started it");
                }
                other => panic!("no cause reported: {other}"),
            },
        }

        unreal_mode_keeps_the_limit_protected_mode_loaded {
            // Load DS with a flat 4 GiB segment in protected mode, return to real mode and
            // reload DS the real-mode way: the hidden limit stays, so a 32-bit offset past
            // 64 KiB works.
            kernel: Kernel::real_mode,
            code: |a| {
                a.mov(eax, cr0)?;
                a.or(eax, cr0::PE as u32)?;
                a.mov(cr0, eax)?;
                load(a, ds, KERNEL_DS)?;
                a.and(eax, !(cr0::PE as u32))?;
                a.mov(cr0, eax)?;
                load(a, ds, 0)?;
                a.mov(ebx, USER_DATA as u32)?;
                a.mov(dword_ptr(ebx), MAGIC)?;
                a.mov(eax, dword_ptr(ebx))?;
                a.label("mark")?;
                a.ud2()
            },
            check: |out| assert_eq!(out.record.eax, MAGIC as u64, "value read"),
        }
        }
    };
}

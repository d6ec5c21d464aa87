//! SSE and x87-control behaviour the native differential test cannot show: the
//! CR0/CR4 gating (#UD, #NM), alignment faults, precise faults of 16-byte and FXSAVE
//! accesses that straddle pages, FXSAVE/FXRSTOR in 32-bit mode, and unsupported x87
//! arithmetic. Guests run in 32-bit protected mode with no IDT, so an exception ends
//! the run as a triple fault that names it.

use emu_core::cpu::{cr0, cr4, fxsave, CpuState, FpuState, MXCSR_MASK};
use emu_core::exception::{vector, Exception};
use emu_core::exit::StopReason;
use emu_core::machine::Machine;
use emu_core::testkit::board::on_every_engine;
use iced_x86::code_asm::*;

/// Guest RAM.
const RAM: usize = 4 << 20;
/// Where the code under test starts.
const CODE: u64 = 0x10_0000;
/// A page of data, 16-byte aligned.
const DATA: u64 = 0x20_0000;
/// With paging on: a read-only page right after `DATA`.
const READ_ONLY: u64 = DATA + 0x1000;
/// With paging on: a not-present page after the read-only one.
const MISSING: u64 = DATA + 0x2000;
/// The page directory when paging is on.
const PAGE_DIR: u64 = 0x1000;
/// The one page table, mapping the first 4 MiB.
const PAGE_TABLE: u64 = 0x2000;
/// Page-table entry bits: present.
const PTE_P: u32 = 1 << 0;
/// Writable.
const PTE_RW: u32 = 1 << 1;
/// A byte pattern that marks memory nothing should have written.
const UNTOUCHED: u8 = 0xA5;

/// An SSE-enabled 32-bit protected-mode state (flat segments, CR4.OSFXSR).
fn sse_state() -> CpuState {
    let mut st = CpuState::multiboot(CODE as u32, 0, 0);
    st.cr4 |= cr4::OSFXSR;
    st
}

/// Identity paging of the first 4 MiB, with `READ_ONLY` read-only and `MISSING` not
/// present; CR0.WP so that the kernel-mode test code honours read-only pages.
fn with_paging(st: &mut CpuState, ram: &mut [u8]) {
    let put = |ram: &mut [u8], at: u64, v: u32| {
        ram[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes())
    };
    put(ram, PAGE_DIR, PAGE_TABLE as u32 | PTE_P | PTE_RW);
    for page in 0..1024u32 {
        let base = page << 12;
        let flags = match u64::from(base) {
            READ_ONLY => PTE_P,
            MISSING => 0,
            _ => PTE_P | PTE_RW,
        };
        put(ram, PAGE_TABLE + 4 * u64::from(page), base | flags);
    }
    st.cr3 = PAGE_DIR;
    st.cr0 |= cr0::PG | cr0::WP;
}

/// Runs `emit`'s code (then HLT) from `st` after `setup`; returns how it stopped and
/// the machine.
fn run(
    mut st: CpuState,
    setup: impl FnOnce(&mut CpuState, &mut [u8]),
    emit: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (StopReason, Machine) {
    let mut a = CodeAssembler::new(32).expect("assembler");
    emit(&mut a).expect("assemble");
    a.hlt().expect("assemble");
    let code = a.assemble(CODE).expect("encode");
    let mut ram = vec![0; RAM];
    ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
    ram[DATA as usize..DATA as usize + 0x3000].fill(UNTOUCHED);
    setup(&mut st, &mut ram);
    on_every_engine(RAM, |m| {
        m.ram_mut().as_mut_slice().copy_from_slice(&ram);
        m.set_cpu_state(&st).unwrap();
        m.run(1000).stop
    })
}

/// The exception a run ended with (by triple fault: there is no IDT) and the state at
/// the faulting instruction.
fn fault(stop: StopReason) -> (Exception, Box<CpuState>) {
    match stop {
        StopReason::Shutdown(Some(cause)) => cause,
        other => panic!("expected an exception, got {other:?}"),
    }
}

/// Asserts that the first instruction raised `vector` (with `code` if it has one).
fn assert_first_faults(stop: StopReason, vector: u8, code: Option<u32>) {
    let (e, st) = fault(stop);
    assert_eq!((e.vector, e.error_code), (vector, code), "{e}");
    assert_eq!(st.rip, CODE, "the fault is reported at the instruction");
}

fn no_setup(_: &mut CpuState, _: &mut [u8]) {}

/// Code for a test, emitted into an assembler.
type Emit = fn(&mut CodeAssembler) -> Result<(), IcedError>;

#[test]
fn sse_without_cr4_osfxsr_raises_invalid_opcode() {
    let st = CpuState::multiboot(CODE as u32, 0, 0);
    let (stop, _) = run(st.clone(), no_setup, |a| a.pxor(xmm0, xmm1));
    assert_first_faults(stop, vector::UD, None);
    let (stop, _) = run(st, no_setup, |a| a.stmxcsr(dword_ptr(DATA)));
    assert_first_faults(stop, vector::UD, None);
}

#[test]
fn cr0_em_makes_sse_undefined_and_x87_unavailable() {
    let mut st = sse_state();
    st.cr0 |= cr0::EM;
    let (stop, _) = run(st.clone(), no_setup, |a| a.movdqa(xmm0, xmm1));
    assert_first_faults(stop, vector::UD, None);
    let (stop, _) = run(st.clone(), no_setup, |a| a.fninit());
    assert_first_faults(stop, vector::NM, None);
    let (stop, _) = run(st, no_setup, |a| a.fxsave(ptr(DATA)));
    assert_first_faults(stop, vector::NM, None);
}

#[test]
fn cr0_ts_makes_sse_and_x87_unavailable() {
    let mut st = sse_state();
    st.cr0 |= cr0::TS;
    let cases: [Emit; 5] = [
        |a| a.paddd(xmm0, xmm1),
        |a| a.ldmxcsr(dword_ptr(DATA)),
        |a| a.fnstcw(word_ptr(DATA)),
        |a| a.fxsave(ptr(DATA)),
        |a| a.fxrstor(ptr(DATA)),
    ];
    for emit in cases {
        let (stop, _) = run(st.clone(), no_setup, emit);
        assert_first_faults(stop, vector::NM, None);
    }
    // MOVNTI only touches general registers: TS does not concern it.
    let (stop, _) = run(st, no_setup, |a| a.movnti(dword_ptr(DATA), eax));
    assert_eq!(stop, StopReason::Halted);
}

#[test]
fn fwait_raises_nm_only_with_both_ts_and_mp() {
    let mut st = sse_state();
    st.cr0 |= cr0::TS;
    let (stop, _) = run(st.clone(), no_setup, |a| a.wait());
    assert_eq!(stop, StopReason::Halted);
    st.cr0 |= cr0::MP;
    let (stop, _) = run(st, no_setup, |a| a.wait());
    assert_first_faults(stop, vector::NM, None);
}

#[test]
fn a_pending_x87_exception_raises_math_fault_with_cr0_ne() {
    let mut st = sse_state();
    // Invalid-operation flag set and unmasked: pending.
    st.fpu = FpuState::from_fxsave(&{
        let mut img = FpuState::default().to_fxsave();
        img[fxsave::FCW] = 0x7E;
        img[fxsave::FSW] = 0x01;
        img
    });
    let (stop, _) = run(st.clone(), no_setup, |a| a.wait());
    assert_eq!(
        stop,
        StopReason::Halted,
        "without CR0.NE the error goes to FERR#"
    );
    st.cr0 |= cr0::NE;
    let (stop, _) = run(st.clone(), no_setup, |a| a.wait());
    assert_first_faults(stop, vector::MF, None);
    let (stop, _) = run(st.clone(), no_setup, |a| a.fldcw(word_ptr(DATA)));
    assert_first_faults(stop, vector::MF, None);
    // The non-waiting forms go ahead; FNCLEX clears the error.
    let (stop, m) = run(st, no_setup, |a| {
        a.fnstsw(ax)?;
        a.fnclex()?;
        a.wait()
    });
    assert_eq!(stop, StopReason::Halted);
    let state = m.cpu_state().unwrap();
    assert_eq!(state.gpr[0] & 0xFFFF, 0x8081, "FNSTSW saw IE, ES and B");
    assert_eq!(state.fpu.fsw, 0);
}

#[test]
fn misaligned_operands_of_aligned_forms_raise_gp0() {
    let cases: [Emit; 6] = [
        |a| a.movdqa(xmm0, xmmword_ptr(DATA + 8)),
        |a| a.movaps(xmmword_ptr(DATA + 4), xmm0),
        |a| a.movntdq(xmmword_ptr(DATA + 1), xmm0),
        |a| a.pxor(xmm0, xmmword_ptr(DATA + 8)),
        |a| a.fxsave(ptr(DATA + 8)),
        |a| a.fxrstor(ptr(DATA + 8)),
    ];
    for emit in cases {
        let (stop, _) = run(sse_state(), no_setup, emit);
        assert_first_faults(stop, vector::GP, Some(0));
    }
    let (stop, m) = run(sse_state(), no_setup, |a| {
        a.movdqu(xmm0, xmmword_ptr(DATA + 3))?;
        a.movups(xmmword_ptr(DATA + 0x107), xmm0)
    });
    assert_eq!(stop, StopReason::Halted);
    let ram = m.ram().as_slice();
    assert_eq!(ram[DATA as usize + 0x107..][..16], [UNTOUCHED; 16]);
}

#[test]
fn reserved_mxcsr_bits_raise_gp0() {
    let bad = MXCSR_MASK + 1;
    let (stop, _) = run(
        sse_state(),
        |_, ram| ram[DATA as usize..][..4].copy_from_slice(&bad.to_le_bytes()),
        |a| a.ldmxcsr(dword_ptr(DATA)),
    );
    assert_first_faults(stop, vector::GP, Some(0));

    let mut img = FpuState::default().to_fxsave();
    img[fxsave::MXCSR..][..4].copy_from_slice(&bad.to_le_bytes());
    img[fxsave::XMM] = 0x42;
    let (stop, _) = run(
        sse_state(),
        |_, ram| ram[DATA as usize..][..fxsave::SIZE].copy_from_slice(&img),
        |a| a.fxrstor(ptr(DATA)),
    );
    let (e, st) = fault(stop);
    assert_eq!(e, Exception::general_protection(0));
    assert_eq!(st.fpu, FpuState::default(), "nothing loaded");
}

#[test]
fn fxsave_and_fxrstor_round_trip_in_32_bit_mode() {
    let mut st = sse_state();
    let mut img = [0u8; fxsave::SIZE];
    for (i, b) in img.iter_mut().enumerate() {
        *b = i as u8 ^ 0x5A;
    }
    img[fxsave::MXCSR..][..4].copy_from_slice(&0x1F3Fu32.to_le_bytes());
    st.fpu = FpuState::from_fxsave(&img);
    let saved = st.fpu.clone();
    let area = DATA + 0x400;
    /// Where ST(3) is in the image.
    const ST3: u64 = (fxsave::ST + 3 * fxsave::SLOT) as u64;
    let (stop, m) = run(st, no_setup, |a| {
        a.fxsave(ptr(area))?;
        // Clobber what FXRSTOR must bring back.
        a.fninit()?;
        a.pcmpeqd(xmm0, xmm0)?;
        a.pxor(xmm7, xmm7)?;
        a.mov(dword_ptr(area + ST3), 0)?;
        a.mov(eax, 0x1F80)?;
        a.mov(dword_ptr(area + 0x800), eax)?;
        a.ldmxcsr(dword_ptr(area + 0x800))?;
        // Restore from the image with ST(3) modified.
        a.fxrstor(ptr(area))
    });
    assert_eq!(stop, StopReason::Halted);
    let after = m.cpu_state().unwrap().fpu;
    let mut expect = saved.to_fxsave();
    expect[fxsave::ST + 3 * fxsave::SLOT..][..4].fill(0);
    assert_eq!(after, FpuState::from_fxsave(&expect));

    // The image in memory: the layout up to XMM7; a 32-bit FXSAVE stores no more.
    let ram = m.ram().as_slice();
    let stored = &ram[area as usize..area as usize + fxsave::SIZE];
    assert_eq!(stored[fxsave::FCW..][..2], saved.fcw.to_le_bytes());
    assert_eq!(stored[fxsave::MXCSR..][..4], 0x1F3Fu32.to_le_bytes());
    assert_eq!(stored[fxsave::MXCSR_MASK..][..4], MXCSR_MASK.to_le_bytes());
    assert_eq!(
        stored[fxsave::XMM + 7 * fxsave::SLOT..][..16],
        saved.xmm[7].to_le_bytes()
    );
    assert!(stored[fxsave::LEGACY_END..].iter().all(|&b| b == UNTOUCHED));
    // XMM8-15 are beyond 32-bit code's reach: FXRSTOR left them as they were.
    assert_eq!(after.xmm[8..], saved.xmm[8..]);
}

#[test]
fn a_16_byte_store_that_reaches_a_read_only_page_writes_nothing() {
    let mut st = sse_state();
    st.fpu.xmm[1] = 0x1111_2222_3333_4444_5555_6666_7777_8888;
    let (stop, m) = run(st, with_paging, |a| {
        a.movdqu(xmmword_ptr(READ_ONLY - 8), xmm1)
    });
    let (e, st) = fault(stop);
    assert_eq!(e.vector, vector::PF, "{e}");
    assert_eq!(st.cr2, READ_ONLY);
    let ram = m.ram().as_slice();
    assert_eq!(ram[READ_ONLY as usize - 8..][..16], [UNTOUCHED; 16]);
}

#[test]
fn an_fxsave_that_reaches_a_read_only_page_writes_nothing() {
    let (stop, m) = run(sse_state(), with_paging, |a| {
        a.fxsave(ptr(READ_ONLY - 0x100))
    });
    assert_eq!(fault(stop).0.vector, vector::PF);
    let ram = m.ram().as_slice();
    assert!(ram[READ_ONLY as usize - 0x100..][..fxsave::SIZE]
        .iter()
        .all(|&b| b == UNTOUCHED));
}

#[test]
fn a_16_byte_load_that_reaches_a_missing_page_changes_nothing() {
    let mut st = sse_state();
    st.fpu.xmm[2] = 42;
    let (stop, _) = run(st, with_paging, |a| {
        a.movdqu(xmm2, xmmword_ptr(MISSING - 8))
    });
    let (e, st) = fault(stop);
    assert_eq!(e.vector, vector::PF, "{e}");
    assert_eq!(st.cr2, MISSING);
    assert_eq!(st.fpu.xmm[2], 42);
}

#[test]
fn x87_arithmetic_raises_ud_but_honours_cr0_ts() {
    // CPUID reports no FPU: past the #NM checks the instruction does not exist.
    let (stop, _) = run(sse_state(), no_setup, |a| a.fld1());
    assert_first_faults(stop, vector::UD, None);
    let mut st = sse_state();
    st.cr0 |= cr0::TS;
    let (stop, _) = run(st, no_setup, |a| a.fld1());
    assert_first_faults(stop, vector::NM, None);
}

#[test]
fn gcc_style_32_bit_code_runs() {
    // A broadcast, a vectorised add, a horizontal reduction and a 64-bit copy, as gcc
    // -O2 -msse2 emits them for 32-bit code.
    let (stop, m) = run(
        sse_state(),
        |st, ram| {
            st.gpr[0] = 5; // eax
            st.gpr[3] = DATA as u32 as u64; // ebx
            for i in 0..4u32 {
                ram[DATA as usize + 4 * i as usize..][..4].copy_from_slice(&(i + 1).to_le_bytes());
            }
        },
        |a| {
            a.movd(xmm0, eax)?;
            a.pshufd(xmm0, xmm0, 0)?;
            a.paddd(xmm0, xmmword_ptr(ebx))?;
            a.movdqa(xmmword_ptr(ebx + 16), xmm0)?;
            a.movdqa(xmm1, xmm0)?;
            a.psrldq(xmm1, 8)?;
            a.paddd(xmm0, xmm1)?;
            a.movdqa(xmm1, xmm0)?;
            a.psrldq(xmm1, 4)?;
            a.paddd(xmm0, xmm1)?;
            a.movd(ecx, xmm0)?;
            a.movq(xmm2, qword_ptr(ebx + 16))?;
            a.movq(qword_ptr(ebx + 32), xmm2)
        },
    );
    assert_eq!(stop, StopReason::Halted);
    let st = m.cpu_state().unwrap();
    assert_eq!(st.gpr[1], 6 + 7 + 8 + 9, "ecx: the sum");
    let ram = m.ram().as_slice();
    let word = |at: u64| u32::from_le_bytes(ram[at as usize..][..4].try_into().unwrap());
    assert_eq!([word(DATA + 16), word(DATA + 28)], [6, 9]);
    assert_eq!(
        [word(DATA + 32), word(DATA + 36), word(DATA + 40)],
        [6, 7, u32::from_le_bytes([UNTOUCHED; 4])]
    );
}

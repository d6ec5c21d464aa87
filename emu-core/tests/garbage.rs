//! A guest can do anything to itself and nothing to Popek: random bytes executed as code,
//! on every software engine, end in a guest exception, an unsupported-instruction stop,
//! a halt or the budget — never a panic, a hang or a write outside guest RAM (guest RAM
//! lies between inaccessible guard regions, `memory::GUARD_BELOW` and `GUARD_ABOVE`:
//! an engine reaching past it through its host pointer would kill the test with a
//! fault). Unless the code can leave a flag undefined, the engines end in the same
//! state.

use emu_core::cpu::{efer, CpuState, SegReg, Segment};
use emu_core::exit::StopReason;
use emu_core::machine::Machine;
use emu_core::testkit::board::{board, on_every_engine};
use emu_core::testkit::SOFTWARE_ENGINES;
use iced_x86::{Decoder, DecoderOptions};
use proptest::prelude::*;

/// Where the random code goes: in the middle of a page, so it can run off its end.
const CODE: u64 = 0x10_0800;
/// Guest RAM for these tests: small, so wild addresses leave RAM quickly.
const RAM: usize = 2 << 20;

/// The processor mode random code starts in.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Real mode, as after reset.
    Real,
    /// 32-bit protected mode, as Multiboot leaves it.
    Protected,
    /// 64-bit mode (long mode without paging, which the interpreter accepts).
    Long,
}

fn state_for(mode: Mode) -> CpuState {
    match mode {
        Mode::Protected => CpuState::multiboot(CODE as u32, 0, 0),
        Mode::Real => {
            let mut st = CpuState::reset();
            st.seg.modify(SegReg::Cs, |cs| {
                cs.selector = (CODE >> 4) as u16;
                cs.base = CODE & !0xF;
            });
            st.rip = CODE & 0xF;
            st
        }
        Mode::Long => {
            let mut st = CpuState::multiboot(CODE as u32, 0, 0);
            st.efer = efer::LME | efer::LMA;
            st.seg.modify(SegReg::Cs, |cs| {
                cs.attr = (cs.attr | Segment::LONG) & !Segment::DB;
            });
            st
        }
    }
}

/// Puts `code` in RAM and starts it in `mode` with `regs`.
fn load(m: &mut Machine, mode: Mode, code: &[u8], regs: [u32; 8]) {
    let at = CODE as usize;
    m.ram_mut().as_mut_slice()[at..at + code.len()].copy_from_slice(code);
    let mut st = state_for(mode);
    for (r, v) in st.gpr.iter_mut().zip(regs) {
        *r = v.into();
    }
    m.set_cpu_state(&st).unwrap();
}

fn run_bytes(code: &[u8], regs: [u32; 8], budget: u64) -> StopReason {
    run_in(Mode::Protected, code, regs, budget)
}

/// Runs `code` in `mode` on a machine of its own per software engine. Each ends within
/// the budget; unless the code can leave a flag undefined, all end with the same stop,
/// state and RAM. Returns the first engine's stop.
fn run_in(mode: Mode, code: &[u8], regs: [u32; 8], budget: u64) -> StopReason {
    let runs: Vec<_> = SOFTWARE_ENGINES
        .iter()
        .map(|&(name, engine)| {
            let mut m = board(engine, RAM);
            load(&mut m, mode, code, regs);
            let outcome = m.run(budget);
            assert!(outcome.instructions <= budget, "{name} ran past the budget");
            (name, outcome.stop, m)
        })
        .collect();
    let ((first, stop, m), others) = runs.split_first().expect("an engine");
    if !may_leave_flags_undefined(mode, code) {
        for (name, other_stop, other) in others {
            let pair = format!("{name} and {first}");
            assert_eq!(other_stop, stop, "{pair}: stop");
            assert_eq!(other.cpu_state().ok(), m.cpu_state().ok(), "{pair}: state");
            assert!(other.ram().as_slice() == m.ram().as_slice(), "{pair}: RAM");
        }
    }
    stop.clone()
}

/// Whether an instruction that starts at any byte of `code` leaves a flag undefined
/// (MUL, shifts, BSF, ...; SHLD and BSF also leave their result undefined in some
/// cases). The translator runs those on the host CPU, which sets such flags as its
/// processor model does, and code that branches on one (or pushes it) may then go
/// elsewhere than on the interpreter, as it may on another processor. Every start is
/// decoded, since random code jumps into the middle of its own instructions.
fn may_leave_flags_undefined(mode: Mode, code: &[u8]) -> bool {
    let bitness = match mode {
        Mode::Real => 16,
        Mode::Protected => 32,
        Mode::Long => 64,
    };
    (0..code.len()).any(|start| {
        let mut decoder = Decoder::new(bitness, &code[start..], DecoderOptions::NONE);
        decoder.decode().rflags_undefined() != 0
    })
}

/// Instructions each random guest may run.
const BUDGET: u64 = 10_000;
/// Random guests in the at-scale run (`cargo test --release --workspace -- --ignored`):
/// random or plausible bytes, in every processor mode.
const AT_SCALE: u32 = 100_000;

/// Up to 63 random bytes.
fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..64)
}

/// Common prefixes and opcode bytes, so more sequences decode to real instructions.
fn plausible_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(0x66u8),
            Just(0x67),
            Just(0xF3),
            Just(0xF2),
            Just(0x0F),
            Just(0xF0),
            Just(0x26),
            Just(0x64),
            0x00u8..0x40,
            0x80u8..0x90,
            0xA4u8..0xB0,
            0xC0u8..0xD4,
            0xE0u8..0xF8,
            any::<u8>()
        ],
        1..48,
    )
}

/// Any processor mode.
fn any_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Real), Just(Mode::Protected), Just(Mode::Long)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_code_never_panics(code in random_bytes(), regs in any::<[u32; 8]>()) {
        // Whatever happens, the run ends and says why.
        let _ = run_bytes(&code, regs, BUDGET);
    }

    #[test]
    fn plausible_code_never_panics(code in plausible_bytes(), regs in any::<[u32; 8]>()) {
        let _ = run_bytes(&code, regs, BUDGET);
    }

    /// Real mode and 64-bit mode take other paths: the IVT, 16-bit addressing,
    /// canonical addresses, 64-bit gates.
    #[test]
    fn random_code_in_real_and_long_mode_never_panics(
        code in random_bytes(),
        regs in any::<[u32; 8]>(),
        long in any::<bool>(),
    ) {
        let mode = if long { Mode::Long } else { Mode::Real };
        let _ = run_in(mode, &code, regs, BUDGET);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(AT_SCALE))]

    #[test]
    #[ignore = "fuzzing at scale: cargo test --release --workspace -- --ignored"]
    fn random_code_in_every_mode_at_scale_never_panics(
        code in prop_oneof![random_bytes(), plausible_bytes()],
        regs in any::<[u32; 8]>(),
        mode in any_mode(),
    ) {
        let _ = run_in(mode, &code, regs, BUDGET);
    }
}

#[test]
fn a_rep_string_with_a_huge_count_stops_at_the_budget() {
    // rep stosb with ECX = 0xFFFFFFFF and EDI in RAM, then hlt.
    let regs = [0, 0xFFFF_FFFF, 0, 0, 0, 0, 0, 0x10_0000];
    let stop = run_bytes(&[0xF3, 0xAA, 0xF4], regs, 1000);
    assert_eq!(stop, StopReason::Budget);
}

#[test]
fn an_endless_loop_stops_at_the_budget() {
    let stop = run_bytes(&[0xEB, 0xFE], [0; 8], 100_000);
    assert_eq!(stop, StopReason::Budget);
}

#[test]
fn executing_outside_ram_raises_invalid_opcode() {
    // jmp eax with EAX beyond RAM: open bus reads 0xFF bytes, which do not decode. With
    // no IDT (Multiboot leaves none) the #UD cannot be delivered: a triple fault, which
    // names the #UD and where it happened.
    let stop = run_bytes(&[0xFF, 0xE0], [0x4000_0000, 0, 0, 0, 0, 0, 0, 0], 100);
    match stop {
        StopReason::Shutdown(Some((exception, state))) => {
            assert_eq!(exception.vector, 6);
            assert_eq!(state.rip, 0x4000_0000);
        }
        other => panic!("expected a triple fault on #UD, got {other}"),
    }
}

#[test]
fn self_modifying_code_runs_the_new_bytes() {
    // mov byte [CODE+10], 0x41 ; jmp +0 ; inc eax ; hlt
    // The store turns the already-decoded `inc eax` (0x40) into `inc ecx` (0x41).
    let patch_at = (CODE + 10) as u32;
    let mut code = vec![0xC6, 0x05];
    code.extend_from_slice(&patch_at.to_le_bytes());
    code.extend_from_slice(&[0x41, 0xEB, 0x00, 0x90, 0x40, 0xF4]);
    assert_eq!(code[10], 0x40, "the patched byte is the inc");
    let (stop, m) = on_every_engine(RAM, |m| {
        load(m, Mode::Protected, &code, [0; 8]);
        m.run(100).stop
    });
    assert_eq!(stop, StopReason::Halted);
    let st = m.cpu_state().unwrap();
    assert_eq!(
        (st.gpr[0], st.gpr[1]),
        (0, 1),
        "the patched instruction ran"
    );
}

#[test]
fn writes_beyond_ram_go_to_the_mmio_bus_not_the_host() {
    // mov dword [0xFFFF_FFFC], eax ; mov ebx, [0xFFFF_FFFC] ; hlt
    let code = [
        0xA3, 0xFC, 0xFF, 0xFF, 0xFF, 0x8B, 0x1D, 0xFC, 0xFF, 0xFF, 0xFF, 0xF4,
    ];
    let (exits, m) = on_every_engine(RAM, |m| {
        load(
            m,
            Mode::Protected,
            &code,
            [0x1234_5678, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(m.run(100).stop, StopReason::Halted);
        let c = &m.vmm.counters;
        [
            c.exits(emu_core::exit::ExitReason::MmioWrite),
            c.exits(emu_core::exit::ExitReason::MmioRead),
        ]
    });
    // Nothing answers there: the load reads open bus.
    assert_eq!(m.cpu_state().unwrap().gpr[3], 0xFFFF_FFFF);
    assert_eq!(exits, [1, 1], "one MMIO write and one MMIO read");
}

#[test]
fn a_fault_loop_stops_at_the_budget() {
    // Real mode, IVT entry 6 (#UD) pointing at a UD2: every delivery faults again at
    // once, and no instruction ever retires. The stack is away from the IVT so the
    // frames never overwrite the entry.
    const HANDLER: u64 = 0x7C00;
    const STACK_SEGMENT: u16 = 0x1000;
    let budget = 10_000;
    let (outcome, _) = on_every_engine(RAM, |m| {
        let ram = m.ram_mut().as_mut_slice();
        ram[HANDLER as usize..HANDLER as usize + 2].copy_from_slice(&[0x0F, 0x0B]);
        let ivt_ud = 6 * 4;
        ram[ivt_ud..ivt_ud + 4].copy_from_slice(&[0x00, 0x7C, 0x00, 0x00]);
        let mut st = CpuState::reset();
        for (reg, selector) in [(SegReg::Cs, 0), (SegReg::Ss, STACK_SEGMENT)] {
            st.seg.modify(reg, |seg| {
                seg.selector = selector;
                seg.base = u64::from(selector) << 4;
            });
        }
        st.rip = HANDLER;
        m.set_cpu_state(&st).unwrap();
        let outcome = m.run(budget);
        (
            outcome.stop,
            outcome.instructions,
            m.vmm.counters.exceptions[&6],
        )
    });
    assert_eq!(
        outcome,
        (StopReason::Budget, 0, budget),
        "nothing retired, one #UD per unit of budget"
    );
}

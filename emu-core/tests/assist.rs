//! Hardware assist in the interpreter: under `Assist::Vtx` the events VT-x exits on reach
//! the VMM through `ExitHandler::handle`, and the guest computes what it computes under
//! trap and emulate.

use emu_core::cpu::{msr, CpuState};
use emu_core::cpuid;
use emu_core::exit::{ExitReason, StopReason};
use emu_core::interp::{Assist, Interpreter};
use emu_core::machine::Machine;
use iced_x86::code_asm::*;

/// Guest RAM.
const RAM: usize = 2 << 20;
/// Where the test code goes (and the flat 32-bit Multiboot state starts).
const CODE: u64 = 0x10_0000;
/// Enough instructions for any test here.
const BUDGET: u64 = 10_000;
/// EAX, ECX, EDX, EBX in `CpuState::gpr`.
const EAX: usize = 0;
/// See [`EAX`].
const ECX: usize = 1;
/// See [`EAX`].
const EDX: usize = 2;
/// See [`EAX`].
const EBX: usize = 3;
/// An MSR Popek does not have: RDMSR raises #GP.
const NO_SUCH_MSR: u32 = 0xDEAD;

/// Runs `asm`, then `cli; hlt`, at CPL 0 in flat 32-bit protected mode (no IDT: an
/// exception triple-faults); the machine and how the run ended.
fn run(
    assist: Assist,
    asm: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Machine, StopReason) {
    let mut a = CodeAssembler::new(32).expect("assembler");
    asm(&mut a).expect("test code");
    a.cli().expect("cli");
    a.hlt().expect("hlt");
    let code = a.assemble(CODE).expect("assembles");
    let mut m = Machine::new(
        RAM,
        Box::new(std::io::sink()),
        Box::new(move |_| Ok(Box::new(Interpreter::with_assist(assist)))),
    )
    .expect("machine");
    m.ram_mut().as_mut_slice()[CODE as usize..][..code.len()].copy_from_slice(&code);
    m.set_cpu_state(&CpuState::multiboot(CODE as u32, 0, 0))
        .unwrap();
    let stop = m.run(BUDGET).stop;
    (m, stop)
}

/// Runs `asm` to the final HLT.
fn run_to_halt(
    assist: Assist,
    asm: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Machine {
    let (m, stop) = run(assist, asm);
    assert_eq!(stop, StopReason::Halted);
    m
}

/// Runs `asm` under both policies to the final HLT; the VT-x machine.
fn run_both(asm: fn(&mut CodeAssembler) -> Result<(), IcedError>) -> Machine {
    let plain = run_to_halt(Assist::None, asm);
    let vtx = run_to_halt(Assist::Vtx, asm);
    assert_eq!(
        plain.cpu_state().unwrap().gpr,
        vtx.cpu_state().unwrap().gpr,
        "same results"
    );
    for reason in ExitReason::ALL.into_iter().filter(|r| r.vtx_only()) {
        assert_eq!(plain.vmm.counters.exits(reason), 0, "{}", reason.name());
    }
    vtx
}

#[test]
fn cpuid_is_answered_by_the_vmm_from_the_cpuid_table() {
    /// Beyond the table: CPUID answers zeros.
    const UNDEFINED_LEAF: u32 = 0x4000_0000;
    for leaf in cpuid::LEAVES.into_iter().chain([UNDEFINED_LEAF]) {
        let m = run_to_halt(Assist::Vtx, |a| {
            a.mov(eax, leaf)?;
            a.cpuid()
        });
        let gpr = m.cpu_state().unwrap().gpr;
        let got = [gpr[EAX], gpr[EBX], gpr[ECX], gpr[EDX]].map(|r| r as u32);
        assert_eq!(got, cpuid::cpuid(leaf), "leaf {leaf:#x}");
        assert_eq!(m.vmm.counters.exits(ExitReason::Cpuid), 1);
        let plain = run_to_halt(Assist::None, |a| {
            a.mov(eax, leaf)?;
            a.cpuid()
        });
        assert_eq!(
            plain.cpu_state().unwrap().gpr,
            gpr,
            "trap and emulate agrees"
        );
        assert_eq!(plain.vmm.counters.exits(ExitReason::Cpuid), 0);
    }
}

#[test]
fn every_control_register_access_vtx_intercepts_exits() {
    let m = run_both(|a| {
        for (read, write) in [(cr0, cr0), (cr3, cr3), (cr4, cr4)] {
            a.mov(eax, read)?;
            a.mov(write, eax)?;
        }
        a.clts()?;
        a.smsw(ax)?;
        a.lmsw(ax)?;
        // CR2 and SMSW are not intercepted.
        a.mov(eax, cr2)?;
        a.mov(cr2, eax)
    });
    assert_eq!(m.vmm.counters.exits(ExitReason::CrAccess), 8);
    assert_eq!(m.vmm.counters.total_exits(), 9, "and the HLT");
}

#[test]
fn rdmsr_and_wrmsr_exit() {
    let m = run_both(|a| {
        a.mov(ecx, msr::SYSENTER_ESP)?;
        a.mov(eax, 0x1234)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.xor(eax, eax)?;
        a.rdmsr()
    });
    assert_eq!(
        m.cpu_state().unwrap().gpr[EAX],
        0x1234,
        "the access completed"
    );
    assert_eq!(m.vmm.counters.exits(ExitReason::Wrmsr), 1);
    assert_eq!(m.vmm.counters.exits(ExitReason::Rdmsr), 1);
}

#[test]
fn an_msr_access_that_faults_still_exits_first() {
    let (m, stop) = run(Assist::Vtx, |a| {
        a.mov(ecx, NO_SUCH_MSR)?;
        a.rdmsr()
    });
    assert!(matches!(stop, StopReason::Shutdown(_)), "{stop}");
    // The VMM's emulation injects the #GP; with no IDT it becomes a triple fault.
    assert_eq!(m.vmm.counters.exits(ExitReason::Rdmsr), 1);
    assert_eq!(m.vmm.counters.exits(ExitReason::Shutdown), 1);
}

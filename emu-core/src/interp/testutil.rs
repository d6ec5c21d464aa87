//! A small machine for instruction tests: assembles a few instructions with iced-x86,
//! places them at [`CODE_BASE`] followed by HLT, runs them through the interpreter and
//! hands back the final state.

use super::Interpreter;
use crate::cpu::{rflags, CpuState, SegReg, Segment};
use crate::engine::Engine;
use crate::exit::{ExitHandler, Flow, StopReason, VmExit};
use crate::memory::GuestRam;
use iced_x86::code_asm::CodeAssembler;
use iced_x86::IcedError;
use std::collections::VecDeque;

/// Where the code under test is placed (and where execution starts).
pub(crate) const CODE_BASE: u64 = 0x1000;
/// Guest RAM size: enough for code, data and a long REP run.
pub(crate) const RAM_SIZE: usize = 1 << 20;
/// A scratch data area well away from the code.
pub(crate) const DATA: u64 = 0x8000;
/// Budget for tests that are expected to halt on their own.
const DEFAULT_BUDGET: u64 = 1_000_000;
/// HLT, appended after the code so a test run ends by itself.
const HLT: u8 = 0xF4;
/// EFER.LME and EFER.LMA: long mode enabled and active.
const EFER_LONG_MODE: u64 = (1 << 8) | (1 << 10);

/// General-purpose register indices, in encoding order (as in [`CpuState::gpr`]).
pub(crate) const RAX: usize = 0;
/// RCX.
pub(crate) const RCX: usize = 1;
/// RDX.
pub(crate) const RDX: usize = 2;
/// RBX.
pub(crate) const RBX: usize = 3;
/// RSI.
pub(crate) const RSI: usize = 6;
/// RDI.
pub(crate) const RDI: usize = 7;

/// Builds the code under test.
pub(crate) type Asm = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// The VMM side of a test: records port and MMIO traffic and stops on HLT, exceptions
/// and unsupported instructions.
#[derive(Debug, Default)]
pub(crate) struct TestExits {
    /// Bytes IN instructions read, in order (0xFF once exhausted).
    pub(crate) port_input: VecDeque<u8>,
    /// Every OUT: port and bytes.
    pub(crate) port_output: Vec<(u16, Vec<u8>)>,
    /// Every MMIO write: address and bytes.
    pub(crate) mmio_writes: Vec<(u64, Vec<u8>)>,
    /// Ask the engine to stop after an MMIO write (as a device wanting attention would).
    pub(crate) stop_on_mmio_write: bool,
}

/// What a test stops with after an MMIO write when `stop_on_mmio_write` is set.
pub(crate) const MMIO_STOP: StopReason = StopReason::Exited(0x4D4D);

impl ExitHandler for TestExits {
    fn handle(&mut self, exit: VmExit<'_>, _icount: u64) -> Flow {
        match exit {
            VmExit::Hlt { .. } => Flow::Stop(StopReason::Halted),
            VmExit::Unsupported { rip, what } => Flow::Stop(StopReason::Unsupported { rip, what }),
            // Test guests have no IDT: an exception becomes a triple fault naming it.
            VmExit::Shutdown { cause } => Flow::Stop(StopReason::Shutdown(cause)),
            VmExit::IoIn { data, .. } => {
                for b in data.iter_mut() {
                    *b = self.port_input.pop_front().unwrap_or(0xFF);
                }
                Flow::Continue
            }
            VmExit::IoOut { port, data } => {
                self.port_output.push((port, data.to_vec()));
                Flow::Continue
            }
            VmExit::MmioRead { .. } => Flow::Continue,
            // Only hardware assist reports these, and these tests run trap and emulate.
            VmExit::Cpuid { .. }
            | VmExit::Msr { .. }
            | VmExit::CrAccess { .. }
            | VmExit::ExternalInterrupt { .. } => Flow::Continue,
            // No para-virtualization here: the VMM's MSR refuses (#GP), a hypercall
            // leaves EAX as it is.
            VmExit::Hypercall { .. } | VmExit::VmmMsr { .. } => Flow::Continue,
            VmExit::MmioWrite { addr, data } => {
                self.mmio_writes.push((addr, data.to_vec()));
                if self.stop_on_mmio_write {
                    Flow::Stop(MMIO_STOP)
                } else {
                    Flow::Continue
                }
            }
        }
    }
}

/// A guest with code loaded, a CPU state to start from, and a test VMM.
pub(crate) struct Machine {
    /// The state the next run starts from; the final state after it.
    pub(crate) state: CpuState,
    /// Guest RAM.
    pub(crate) ram: GuestRam,
    /// The VMM.
    pub(crate) exits: TestExits,
}

impl Machine {
    /// 32-bit flat protected mode (the Multiboot state) running `asm`, then HLT.
    pub(crate) fn new(asm: Asm) -> Self {
        Self::assembled(32, asm)
    }

    /// 64-bit mode running `asm`, then HLT (for 64-bit operands).
    pub(crate) fn new64(asm: Asm) -> Self {
        Self::assembled(64, asm)
    }

    fn assembled(bitness: u32, asm: Asm) -> Self {
        let mut a = CodeAssembler::new(bitness).expect("valid bitness");
        asm(&mut a).expect("test code assembles");
        let bytes = a.assemble(CODE_BASE).expect("test code assembles");
        let mut m = Self::with_bytes(&bytes);
        if bitness == 64 {
            m.state.efer = EFER_LONG_MODE;
            m.state.seg.modify(SegReg::Cs, |cs| {
                cs.attr = (cs.attr | Segment::LONG) & !Segment::DB;
            });
        }
        m
    }

    /// 32-bit flat protected mode running raw machine code, then HLT.
    pub(crate) fn with_bytes(code: &[u8]) -> Self {
        let mut ram = GuestRam::new(RAM_SIZE).expect("test RAM maps");
        let start = CODE_BASE as usize;
        let mem = ram.as_mut_slice();
        mem[start..start + code.len()].copy_from_slice(code);
        mem[start + code.len()] = HLT;
        Machine {
            state: CpuState::multiboot(CODE_BASE as u32, 0, 0),
            ram,
            exits: TestExits::default(),
        }
    }

    /// Sets general-purpose registers.
    pub(crate) fn regs(mut self, regs: &[(usize, u64)]) -> Self {
        for &(r, v) in regs {
            self.state.gpr[r] = v;
        }
        self
    }

    /// Sets RFLAGS (the reserved bit 1 is added).
    pub(crate) fn flags(mut self, flags: u64) -> Self {
        self.state.rflags = (flags | rflags::FIXED).into();
        self
    }

    /// Copies bytes into guest RAM.
    pub(crate) fn poke(&mut self, addr: u64, bytes: &[u8]) {
        let a = addr as usize;
        self.ram.as_mut_slice()[a..a + bytes.len()].copy_from_slice(bytes);
    }

    /// Guest RAM bytes.
    pub(crate) fn peek(&self, addr: u64, len: usize) -> &[u8] {
        &self.ram.as_slice()[addr as usize..addr as usize + len]
    }

    /// Runs until the guest stops, within a generous budget.
    pub(crate) fn run(&mut self) -> StopReason {
        self.run_for(DEFAULT_BUDGET)
    }

    /// Runs at most `budget` instructions; the final state lands in `self.state`.
    pub(crate) fn run_for(&mut self, budget: u64) -> StopReason {
        let mut engine = Interpreter::new();
        engine.set_state(&self.state).unwrap();
        let stop = engine.run(&self.ram, &mut self.exits, budget);
        self.state = engine.state().unwrap();
        stop
    }

    /// Runs to the HLT after the code, failing the test on any other stop.
    pub(crate) fn run_to_halt(&mut self) -> &CpuState {
        match self.run() {
            StopReason::Halted => &self.state,
            other => panic!("expected HLT, stopped with: {other}"),
        }
    }

    /// Runs expecting an exception; returns its vector and the state at the fault.
    pub(crate) fn run_to_exception(&mut self) -> (u8, CpuState) {
        match self.run() {
            StopReason::Shutdown(Some((exception, state))) => (exception.vector, *state),
            other => panic!("expected an exception, stopped with: {other}"),
        }
    }
}

/// One table-driven case: registers and flags in, registers and flags out.
pub(crate) struct Case {
    /// Shown when the case fails.
    pub(crate) name: &'static str,
    /// The code under test.
    pub(crate) asm: Asm,
    /// Registers set before the run.
    pub(crate) regs: &'static [(usize, u64)],
    /// RFLAGS before the run.
    pub(crate) flags: u64,
    /// Registers expected after the run (full 64-bit values).
    pub(crate) want: &'static [(usize, u64)],
    /// Expected flags, compared under `mask`.
    pub(crate) want_flags: u64,
    /// The flags the case checks (those the manual defines for it).
    pub(crate) mask: u64,
}

/// Runs every case in 32-bit mode and checks it.
pub(crate) fn check(cases: &[Case]) {
    check_in(cases, Machine::new);
}

/// Runs every case in 64-bit mode and checks it.
pub(crate) fn check64(cases: &[Case]) {
    check_in(cases, Machine::new64);
}

fn check_in(cases: &[Case], machine: fn(Asm) -> Machine) {
    for c in cases {
        let mut m = machine(c.asm).regs(c.regs).flags(c.flags);
        let stop = m.run();
        assert_eq!(stop, StopReason::Halted, "{}: stopped with {stop}", c.name);
        for &(r, v) in c.want {
            assert_eq!(
                m.state.gpr[r], v,
                "{}: register {r} is {:#x}, want {v:#x}",
                c.name, m.state.gpr[r]
            );
        }
        let got = m.state.rflags & c.mask;
        assert_eq!(
            got,
            c.want_flags & c.mask,
            "{}: flags {got:#x}, want {:#x} (mask {:#x})",
            c.name,
            c.want_flags & c.mask,
            c.mask
        );
    }
}

//! Shared by the KVM tests: hand-assembled guests and machines to run them in.

use accel_kvm::KvmEngine;
use devices::SharedBuffer;
use emu_core::cpu::CpuState;
use emu_core::engine::Engine;
use emu_core::exit::{ExitHandler, ExitReason, Flow, StopReason, VmExit};
use emu_core::machine::{EngineFactory, Machine, RunOutcome, Vmm};
use emu_core::memory::GuestRam;
use emu_core::testkit::kernel::assemble_labelled;
use emu_core::testkit::{self, EngineMaker};
use iced_x86::code_asm::*;

/// Skips the calling test, passing, on a host without usable /dev/kvm.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !accel_kvm::kvm_available() {
            println!("skipped: /dev/kvm not available");
            return;
        }
    };
}

/// Guest RAM of every test machine.
pub const RAM_SIZE: usize = 64 << 20;
/// Where guest code is loaded and starts, as for a Multiboot kernel.
pub const ENTRY: u64 = 0x10_0000;
/// Initial stack pointer: Multiboot leaves ESP undefined, so guests set their own.
pub const STACK_TOP: u32 = 0x9_0000;
/// COM1's transmit register.
pub const COM1_DATA: u16 = devices::COM1_BASE as u16;
/// COM1's line status register.
pub const COM1_LSR: u16 = COM1_DATA + 5;
/// LSR bit: the transmit holding register is empty, a byte may be written.
pub const LSR_THR_EMPTY: u32 = 1 << 5;
/// isa-debug-exit: a write ends the run with the value written.
pub const DEBUG_EXIT: u16 = devices::DEBUG_EXIT_BASE as u16;
/// A guest-physical address above RAM where nothing is mapped: MMIO to nowhere.
pub const MMIO_NOWHERE: u64 = 0xD000_0000;
/// A big enough budget for any test guest: the interpreter's runs end on their own.
pub const UNLIMITED: u64 = u64::MAX;

/// Assembled guest code and the addresses of the labels the test asked for.
pub struct Guest {
    pub code: Vec<u8>,
    pub labels: Vec<u64>,
}

/// Assembles 32-bit code at [`ENTRY`]; `build` emits it and returns the labels whose
/// addresses the test needs.
pub fn assemble(
    build: impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError>,
) -> Guest {
    let (code, labels) = assemble_labelled(32, ENTRY, build);
    Guest { code, labels }
}

/// Emits the `putc` routine at `label`: writes BL to COM1 once the transmitter is ready,
/// as a driver would. Clobbers EAX and EDX and leaves AF undefined (TEST), so callers set
/// the flags again before the guest's final state is compared.
pub fn emit_putc(a: &mut CodeAssembler, label: &mut CodeLabel) -> Result<(), IcedError> {
    let mut wait = a.create_label();
    a.set_label(label)?;
    a.mov(dx, u32::from(COM1_LSR))?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, LSR_THR_EMPTY)?;
    a.jz(wait)?;
    a.mov(dx, u32::from(COM1_DATA))?;
    a.mov(al, bl)?;
    a.out(dx, al)?;
    a.ret()
}

/// Emits code printing `text` through `putc`, one call a byte.
pub fn emit_print(a: &mut CodeAssembler, putc: CodeLabel, text: &[u8]) -> Result<(), IcedError> {
    for &byte in text {
        a.mov(bl, u32::from(byte))?;
        a.call(putc)?;
    }
    Ok(())
}

/// Emits `out DEBUG_EXIT, eax`: ends the run with EAX as the status.
pub fn emit_exit_with_eax(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.out(u32::from(DEBUG_EXIT), eax)
}

/// The factory that puts a machine on KVM (an [`emu_core::testkit::EngineMaker`]).
pub fn kvm_factory() -> Box<EngineFactory<'static>> {
    Box::new(|ram: &GuestRam| {
        KvmEngine::new(ram)
            .map(|e| Box::new(e) as Box<dyn Engine>)
            .map_err(|e| e.to_string())
    })
}

/// Which engine a test machine starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Interp,
    Kvm,
}

impl Start {
    /// What makes its engine.
    pub fn engine(self) -> EngineMaker {
        match self {
            Start::Interp => testkit::interpreter,
            Start::Kvm => kvm_factory,
        }
    }
}

/// A machine with `guest` loaded at [`ENTRY`] and the CPU as Multiboot leaves it, and
/// the buffer its COM1 writes to.
pub fn boot(start: Start, guest: &Guest) -> (Machine, SharedBuffer) {
    let serial = SharedBuffer::new();
    let sink = Box::new(serial.clone());
    let mut m = Machine::new(RAM_SIZE, sink, start.engine()()).expect("machine builds");
    load(m.ram_mut(), guest);
    m.set_cpu_state(&CpuState::multiboot(ENTRY as u32, 0, 0))
        .unwrap();
    (m, serial)
}

/// Copies `guest`'s code to [`ENTRY`].
pub fn load(ram: &mut GuestRam, guest: &Guest) {
    let at = ENTRY as usize;
    ram.as_mut_slice()[at..at + guest.code.len()].copy_from_slice(&guest.code);
}

/// Runs `guest` to its end on one engine: what it printed and how the run went.
pub fn run_on(start: Start, guest: &Guest) -> (Machine, Vec<u8>, RunOutcome) {
    let (mut m, serial) = boot(start, guest);
    let outcome = m.run(UNLIMITED);
    (m, serial.contents(), outcome)
}

/// The part of the state two engines must agree on after running the same guest: the
/// eight 32-bit general registers, EIP and every bit of EFLAGS.
pub fn user_visible(s: &CpuState) -> ([u64; 8], u64, u64) {
    let mut gpr = [0; 8];
    gpr.copy_from_slice(&s.gpr[..8]);
    (gpr, s.rip, s.rflags.get())
}

/// An exit handler that passes every exit to a VMM and pauses the run after the first
/// exit of one kind, remembering the bytes a read exit returned.
///
/// The run ends with [`StopReason::Budget`], the reason for a run its driver cut short.
pub struct PauseAfter<'a> {
    pub vmm: &'a mut Vmm,
    pub reason: ExitReason,
    pub read: Vec<u8>,
    paused: bool,
}

impl<'a> PauseAfter<'a> {
    pub fn new(vmm: &'a mut Vmm, reason: ExitReason) -> Self {
        PauseAfter {
            vmm,
            reason,
            read: Vec::new(),
            paused: false,
        }
    }
}

impl ExitHandler for PauseAfter<'_> {
    fn handle(&mut self, exit: VmExit<'_>, icount: u64) -> Flow {
        let reason = exit.reason();
        let flow = match exit {
            VmExit::IoIn { port, data } => {
                let flow = self.vmm.handle(
                    VmExit::IoIn {
                        port,
                        data: &mut *data,
                    },
                    icount,
                );
                self.read = data.to_vec();
                flow
            }
            VmExit::MmioRead { addr, data } => {
                let flow = self.vmm.handle(
                    VmExit::MmioRead {
                        addr,
                        data: &mut *data,
                    },
                    icount,
                );
                self.read = data.to_vec();
                flow
            }
            other => self.vmm.handle(other, icount),
        };
        if reason != self.reason || self.paused {
            return flow;
        }
        self.paused = true;
        match flow {
            Flow::Continue => Flow::Stop(StopReason::Budget),
            stop => stop,
        }
    }
}

/// A KVM engine driven directly, without a [`Machine`], so a test can put its own exit
/// handler between the engine and the VMM.
pub struct Rig {
    pub kvm: KvmEngine,
    pub ram: GuestRam,
    pub vmm: Vmm,
    pub serial: SharedBuffer,
}

impl Rig {
    /// `guest` loaded at [`ENTRY`] on a fresh KVM engine, in the Multiboot state.
    pub fn new(guest: &Guest) -> Self {
        let mut ram = GuestRam::new(RAM_SIZE).expect("guest RAM");
        load(&mut ram, guest);
        let mut kvm = KvmEngine::new(&ram).expect("KVM engine");
        kvm.set_state(&CpuState::multiboot(ENTRY as u32, 0, 0))
            .unwrap();
        let serial = SharedBuffer::new();
        let vmm = Vmm::new(Box::new(serial.clone()));
        Rig {
            kvm,
            ram,
            vmm,
            serial,
        }
    }

    /// Runs until just after the first exit of kind `reason`; returns how the run ended
    /// and the bytes the last read exit returned.
    pub fn run_until_first(&mut self, reason: ExitReason) -> (StopReason, Vec<u8>) {
        let mut pause = PauseAfter::new(&mut self.vmm, reason);
        let stop = self.kvm.run(&self.ram, &mut pause, UNLIMITED);
        (stop, pause.read)
    }

    /// Moves the paused guest — RAM, devices and CPU state — to an interpreted machine.
    pub fn into_interpreted(self) -> Machine {
        let mut m = Machine::interpreted(RAM_SIZE, Box::new(std::io::sink())).expect("machine");
        m.ram_mut()
            .as_mut_slice()
            .copy_from_slice(self.ram.as_slice());
        m.vmm = self.vmm;
        m.set_cpu_state(&self.kvm.state().unwrap()).unwrap();
        m
    }
}

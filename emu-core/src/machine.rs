//! The machine: guest RAM, one engine, the shared devices, and the VMM that connects
//! them. This is the one public API the command line, gdb, the GUI and labs drive.

use crate::clock::Clock;
use crate::cpu::CpuState;
use crate::engine::Engine;
use crate::exit::{ExitHandler, ExitReason, Flow, GuestEvent, InterruptPoll, StopReason, VmExit};
use crate::interp::{Assist, Interpreter};
use crate::loader::{load_multiboot, BootInfo, LoadError};
use crate::memory::{GuestRam, MemoryError};
use crate::stop::StopRequest;
use crate::trace::{Counters, Event, EventKind, EventMask, Trace};
use devices::{BusError, DeviceRequest, PcDevices, OPEN_BUS};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The VMM: handles every engine's exits with the board's devices, and counts them.
#[derive(Debug)]
pub struct Vmm {
    /// The popek-pc devices.
    pub devices: PcDevices,
    /// Counters every engine feeds.
    pub counters: Counters,
    /// The event trace.
    pub trace: Trace,
    /// Virtual time, as the devices see it.
    pub clock: Clock,
    /// Stops the run from outside (Ctrl-C, the control plane).
    stop: Arc<StopRequest>,
    /// The processor is halted, waiting for an interrupt, since a stop request ended
    /// the run during the wait.
    halted: bool,
}

impl Vmm {
    /// A VMM over a fresh board whose COM1 writes to `serial_out`.
    pub fn new(serial_out: Box<dyn Write + Send>) -> Self {
        Vmm {
            devices: PcDevices::new(serial_out),
            counters: Counters::default(),
            trace: Trace::new(Trace::DEFAULT_CAPACITY),
            clock: Clock::new(true),
            stop: Arc::new(StopRequest::new()),
            halted: false,
        }
    }

    /// Brings the devices to the virtual time of `icount`.
    fn sync_devices(&mut self, icount: u64) -> u64 {
        let now = self.clock.now_ns(icount);
        self.devices.advance_clock(now);
        now
    }

    fn has_interrupt(&self) -> bool {
        lock(&self.devices.pic).has_interrupt()
    }

    /// A halted CPU: with interrupts enabled, let time run on to the next interrupt;
    /// with nothing that could ever wake it, stop. A stop request cuts a wait in real
    /// time (under KVM) short: the processor stays halted, and the next run waits on.
    fn wait_for_interrupt(&mut self, interruptible: bool, icount: u64) -> Flow {
        if !interruptible {
            return Flow::Stop(StopReason::Halted);
        }
        self.sync_devices(icount);
        // A timer whose interrupt is masked may tick many times: give up after that
        // many ticks without a deliverable interrupt.
        let mut ticks = 0;
        while ticks < MAX_IDLE_TICKS {
            if self.has_interrupt() {
                return Flow::Continue;
            }
            let Some(next) = lock(&self.devices.pit).next_irq0_ns() else {
                break;
            };
            if !self.clock.wait_until(next, icount, &self.stop) {
                self.stop.take();
                self.halted = true;
                return Flow::Stop(StopReason::Paused);
            }
            self.sync_devices(icount);
            ticks += 1;
        }
        if self.has_interrupt() {
            Flow::Continue
        } else {
            Flow::Stop(StopReason::HaltedNoInterrupt { timer_ticks: ticks })
        }
    }

    /// Before a run: a processor paused while halted goes on waiting for its interrupt
    /// (the engine's state is past the HLT, as a woken processor's is). The reason the
    /// run ends, if the wait does not end in an interrupt.
    fn resume_halt(&mut self, icount: u64) -> Option<StopReason> {
        if !std::mem::take(&mut self.halted) {
            return None;
        }
        match self.wait_for_interrupt(true, icount) {
            Flow::Continue => None,
            Flow::Stop(reason) => Some(reason),
        }
    }

    fn io_event(&mut self, icount: u64, port: u16, write: bool, data: &[u8]) {
        self.counters.ports.entry(port).or_default().add(write);
        self.trace.record(EventMask::IO, || Event {
            icount,
            kind: EventKind::Io {
                port,
                write,
                value: le_value(data) as u32,
                size: data.len() as u8,
            },
        });
    }

    fn mmio_event(&mut self, icount: u64, addr: u64, write: bool, data: &[u8]) {
        self.counters.mmio.add(addr, write);
        self.trace.record(EventMask::MMIO, || Event {
            icount,
            kind: EventKind::Mmio {
                addr,
                write,
                value: le_value(data),
                size: data.len() as u8,
            },
        });
    }
}

/// How many timer ticks a halted CPU waits for a deliverable interrupt before the machine
/// is declared stuck.
const MAX_IDLE_TICKS: u64 = 10_000;

/// Locks a device; a device that panicked while locked is still usable for reading.
fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The little-endian value of up to 8 bytes.
fn le_value(data: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = data.len().min(8);
    buf[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(buf)
}

/// What a device's answer to a write means for the run.
fn write_flow(result: Result<Option<DeviceRequest>, BusError>) -> Flow {
    match result {
        Ok(Some(DeviceRequest::Exit(status))) => Flow::Stop(StopReason::Exited(status)),
        // A write nobody claims goes nowhere, as on a real bus.
        Ok(None) | Err(_) => Flow::Continue,
    }
}

impl ExitHandler for Vmm {
    fn poll_interrupts(&mut self, icount: u64) -> InterruptPoll {
        self.sync_devices(icount);
        let next_tick = lock(&self.devices.pit).next_irq0_ns();
        InterruptPoll {
            pending: self.has_interrupt(),
            next_poll: next_tick
                .and_then(|ns| self.clock.icount_at(ns))
                .unwrap_or(u64::MAX),
            next_poll_at: next_tick.and_then(|ns| self.clock.host_instant_at(ns)),
        }
    }

    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        lock(&self.devices.pic).acknowledge()
    }

    fn stop_request(&self) -> Option<Arc<StopRequest>> {
        Some(Arc::clone(&self.stop))
    }

    fn notify(&mut self, event: GuestEvent, icount: u64) {
        let (mask, kind) = match event {
            GuestEvent::Exception {
                vector,
                error_code,
                rip,
            } => {
                *self.counters.exceptions.entry(vector).or_default() += 1;
                (
                    EventMask::EXCEPTIONS,
                    EventKind::Exception {
                        vector,
                        error_code,
                        rip,
                    },
                )
            }
            GuestEvent::Interrupt { vector, rip } => {
                *self.counters.interrupts.entry(vector).or_default() += 1;
                (EventMask::INTERRUPTS, EventKind::Interrupt { vector, rip })
            }
            GuestEvent::RingTransition { from, to, cause } => {
                *self
                    .counters
                    .ring_transitions
                    .entry((from, to))
                    .or_default() += 1;
                (EventMask::RINGS, EventKind::Ring { from, to, cause })
            }
        };
        self.trace.record(mask, || Event { icount, kind });
    }

    fn handle(&mut self, exit: VmExit<'_>, icount: u64) -> Flow {
        let reason = exit.reason();
        self.counters.exits[reason as usize] += 1;
        // Accesses are traced with their data, under their own kinds; every other exit
        // is traced by reason.
        let access = matches!(
            reason,
            ExitReason::IoIn | ExitReason::IoOut | ExitReason::MmioRead | ExitReason::MmioWrite
        );
        if !access {
            self.trace.record(EventMask::EXITS, || Event {
                icount,
                kind: EventKind::Exit(reason),
            });
        }
        match exit {
            VmExit::IoIn { port, data } => {
                self.sync_devices(icount);
                if self.devices.pio.read(port.into(), data).is_err() {
                    data.fill(OPEN_BUS);
                }
                self.io_event(icount, port, false, data);
                Flow::Continue
            }
            VmExit::IoOut { port, data } => {
                self.sync_devices(icount);
                self.io_event(icount, port, true, data);
                write_flow(self.devices.pio.write(port.into(), data))
            }
            VmExit::MmioRead { addr, data } => {
                if self.devices.mmio.read(addr, data).is_err() {
                    data.fill(OPEN_BUS);
                }
                self.mmio_event(icount, addr, false, data);
                Flow::Continue
            }
            VmExit::MmioWrite { addr, data } => {
                self.mmio_event(icount, addr, true, data);
                write_flow(self.devices.mmio.write(addr, data))
            }
            VmExit::Hlt { interruptible } => self.wait_for_interrupt(interruptible, icount),
            VmExit::Shutdown { cause } => Flow::Stop(StopReason::Shutdown(cause)),
            VmExit::Unsupported { rip, what } => Flow::Stop(StopReason::Unsupported { rip, what }),
            VmExit::Cpuid { leaf, result, .. } => {
                // The VMM emulates CPUID, from the table KVM loads with KVM_SET_CPUID2.
                *result = crate::cpuid::cpuid(leaf);
                Flow::Continue
            }
            // The engine completes these once the VMM returns (see `Assist::Vtx`): the
            // VMM's part is to count and trace them.
            VmExit::Msr { .. } | VmExit::CrAccess { .. } | VmExit::ExternalInterrupt { .. } => {
                Flow::Continue
            }
        }
    }
}

/// Errors building or loading a machine.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// Guest RAM could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The kernel image could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A BIOS image of the wrong size.
    #[error(
        "a BIOS image must be a non-zero multiple of 64 KiB, at most 1 MiB (this one is {0} bytes)"
    )]
    Bios(usize),
    /// The engine could not be set up (e.g. /dev/kvm is missing).
    #[error("{0}")]
    Engine(String),
}

/// Builds an engine for a machine's RAM (KVM registers it as a memory slot).
pub type EngineFactory<'a> = dyn FnOnce(&GuestRam) -> Result<Box<dyn Engine>, String> + 'a;

/// Builds the interpreter, playing the VMM policy `assist`.
pub fn interpreter_factory(assist: Assist) -> Box<EngineFactory<'static>> {
    Box::new(move |_| Ok(Box::new(Interpreter::with_assist(assist))))
}

/// BIOS images come in 64 KiB units.
const BIOS_ALIGN: usize = 64 << 10;
/// The largest BIOS image popek-pc maps.
pub const BIOS_MAX: usize = 1 << 20;
/// How much of the image also appears below 1 MiB (0xE0000-0xFFFFF on a PC).
const BIOS_LOW_MAX: usize = 128 << 10;
/// The end of the low BIOS area.
const BIOS_LOW_END: usize = 1 << 20;

/// How a run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Why it ended.
    pub stop: StopReason,
    /// Guest instructions retired during this run.
    pub instructions: u64,
    /// Wall-clock time.
    pub wall: Duration,
    /// CPU time the host thread spent.
    pub host_cpu: Duration,
}

/// A popek-pc machine.
pub struct Machine {
    ram: GuestRam,
    engine: Box<dyn Engine>,
    /// Instructions retired by engines this machine ran before the current one.
    retired_before: u64,
    /// The VMM: devices, counters and trace.
    pub vmm: Vmm,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("engine", &self.engine.name())
            .field("ram", &self.ram.size())
            .finish()
    }
}

impl Machine {
    /// A machine with `ram_size` bytes of RAM, COM1 going to `serial_out`, run by the
    /// engine `make_engine` builds for that RAM.
    pub fn new(
        ram_size: usize,
        serial_out: Box<dyn Write + Send>,
        make_engine: Box<EngineFactory<'_>>,
    ) -> Result<Self, MachineError> {
        let ram = GuestRam::new(ram_size)?;
        let engine = make_engine(&ram).map_err(MachineError::Engine)?;
        let mut vmm = Vmm::new(serial_out);
        vmm.clock = Clock::new(engine.counts_instructions());
        Ok(Machine {
            ram,
            engine,
            retired_before: 0,
            vmm,
        })
    }

    /// A machine run by the interpreter.
    pub fn interpreted(
        ram_size: usize,
        serial_out: Box<dyn Write + Send>,
    ) -> Result<Self, MachineError> {
        Self::new(ram_size, serial_out, interpreter_factory(Assist::None))
    }

    /// Moves the paused machine to another engine, with the whole CPU state, at the
    /// current instruction boundary.
    pub fn switch_engine(
        &mut self,
        make_engine: Box<EngineFactory<'_>>,
    ) -> Result<(), MachineError> {
        let state = self.engine.state();
        let mut engine = make_engine(&self.ram).map_err(MachineError::Engine)?;
        engine.set_state(&state);
        let old_icount = self.engine.instructions_retired();
        self.vmm.clock.rebase(
            old_icount,
            engine.counts_instructions(),
            engine.instructions_retired(),
        );
        self.retired_before += old_icount;
        self.engine = engine;
        Ok(())
    }

    /// Loads a Multiboot kernel and sets the CPU as Multiboot leaves it.
    pub fn load_multiboot(
        &mut self,
        image: &[u8],
        cmdline: &str,
    ) -> Result<BootInfo, MachineError> {
        let boot = load_multiboot(self.ram.guest_memory(), image, cmdline)?;
        self.engine
            .set_state(&CpuState::multiboot(boot.entry, boot.eax, boot.ebx));
        Ok(boot)
    }

    /// Boots from a BIOS image, as a PC does from reset: the image sits at the top of the
    /// 4 GiB space (where the first instruction is fetched) and, up to its last 128 KiB,
    /// below 1 MiB (where real-mode code runs it).
    pub fn load_bios(&mut self, image: &[u8]) -> Result<(), MachineError> {
        if image.is_empty() || !image.len().is_multiple_of(BIOS_ALIGN) || image.len() > BIOS_MAX {
            return Err(MachineError::Bios(image.len()));
        }
        let low = image.len().min(BIOS_LOW_MAX);
        self.ram
            .write((BIOS_LOW_END - low) as u64, &image[image.len() - low..])?;
        let rom = devices::Rom::new(Arc::from(image));
        let base = (1u64 << 32) - image.len() as u64;
        self.vmm
            .devices
            .mmio
            .insert(base, image.len() as u64, Arc::new(Mutex::new(rom)))
            .map_err(|e| MachineError::Engine(format!("cannot map the BIOS image: {e}")))?;
        self.engine.set_state(&CpuState::reset());
        Ok(())
    }

    /// Runs until the guest stops, `budget` instructions have retired, or a stop is
    /// requested ([`Machine::stop_request`]; the run then ends with
    /// [`StopReason::Paused`], and the next one continues where it stopped).
    pub fn run(&mut self, budget: u64) -> RunOutcome {
        let before = self.engine.instructions_retired();
        let (wall0, cpu0) = (Instant::now(), thread_cpu_time());
        let stop = match self.vmm.resume_halt(before) {
            Some(stop) => stop,
            None => self.engine.run(&self.ram, &mut self.vmm, budget),
        };
        RunOutcome {
            stop,
            instructions: self.engine.instructions_retired() - before,
            wall: wall0.elapsed(),
            host_cpu: thread_cpu_time().saturating_sub(cpu0),
        }
    }

    /// The machine's stop request: [`StopRequest::request`] on it, from any thread, ends
    /// the current (or next) [`Machine::run`] at an instruction boundary.
    pub fn stop_request(&self) -> Arc<StopRequest> {
        Arc::clone(&self.vmm.stop)
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Whether the engine counts the instructions it runs (see
    /// [`Engine::counts_instructions`]).
    pub fn counts_instructions(&self) -> bool {
        self.engine.counts_instructions()
    }

    /// The CPU state at the current instruction boundary.
    pub fn cpu_state(&self) -> CpuState {
        self.engine.state()
    }

    /// Replaces the CPU state.
    pub fn set_cpu_state(&mut self, state: &CpuState) {
        self.engine.set_state(state);
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Guest RAM, for writing.
    pub fn ram_mut(&mut self) -> &mut GuestRam {
        &mut self.ram
    }

    /// Guest instructions retired since the machine was built (by engines that count).
    pub fn instructions_retired(&self) -> u64 {
        self.retired_before + self.engine.instructions_retired()
    }
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

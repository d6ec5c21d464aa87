//! The machine: guest RAM, one engine, the shared devices, and the VMM that connects
//! them. The command line drives it directly; gdb, the GUI and labs drive it on a thread
//! of its own, through a [`MachineHandle`] (the control plane).

pub mod control;
mod snapshot;
mod vmm;

pub use control::{ControlError, MachineHandle, Pause, Status};
pub use snapshot::{RamPage, Snapshot, SnapshotError, SNAPSHOT_VERSION};
pub use vmm::Vmm;

use crate::clock::Clock;
use crate::cpu::CpuState;
use crate::engine::{DebugConfig, Engine, EngineError, Watchpoint};
use crate::exit::{StopOn, StopReason};
use crate::interp::{Assist, Interpreter};
use crate::loader::{load_multiboot, BootInfo, LoadError};
use crate::memory::{GuestMemory, GuestRam, MemoryError, PAGE_SIZE};
use crate::stop::StopRequest;
use crate::x86::paging::{self, PagingRegs, Translation, WalkFault};
use devices::ata::AtaDisk;
use devices::virtio::VirtioDevice;
use devices::{AttachError, Disk, VirtioSlot};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The engine refused a request (a state, a breakpoint).
    #[error(transparent)]
    EngineRequest(#[from] EngineError),
    /// A linear address the guest's page tables do not map.
    #[error("linear address {addr:#x} is not mapped ({why})")]
    NotMapped {
        /// The address.
        addr: u64,
        /// What the walk found.
        why: &'static str,
    },
}

/// Builds an engine for a machine's RAM (KVM registers it as a memory slot). `Send`, so
/// that a client can hand one to a machine on its own thread
/// ([`MachineHandle::switch_engine`]).
pub type EngineFactory<'a> = dyn FnOnce(&GuestRam) -> Result<Box<dyn Engine>, String> + Send + 'a;

/// Builds the interpreter, playing the VMM policy `assist`.
pub fn interpreter_factory(assist: Assist) -> Box<EngineFactory<'static>> {
    Box::new(move |_| Ok(Box::new(Interpreter::with_assist(assist))))
}

/// Builds the binary translator.
pub fn bt_factory() -> Box<EngineFactory<'static>> {
    Box::new(|_| Ok(Box::new(crate::bt::Bt::new())))
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
    /// The debugger's breakpoints and watchpoints, given to every engine the machine
    /// moves to.
    debug: DebugConfig,
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
        vmm.set_hypercall_trap(engine.hypercall_trap(), &ram);
        Ok(Machine {
            ram,
            engine,
            retired_before: 0,
            debug: DebugConfig::default(),
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
        let state = self.engine.state()?;
        let mut engine = make_engine(&self.ram).map_err(MachineError::Engine)?;
        engine.set_state(&state)?;
        engine.set_debug(&self.debug)?;
        let old_icount = self.engine.instructions_retired();
        self.vmm.clock.rebase(
            old_icount,
            engine.counts_instructions(),
            engine.instructions_retired(),
        );
        self.retired_before += old_icount;
        // The guest's hypercall stubs trap the way the new engine sees.
        self.vmm
            .set_hypercall_trap(engine.hypercall_trap(), &self.ram);
        self.engine = engine;
        Ok(())
    }

    /// Loads a Multiboot kernel and sets the CPU as Multiboot leaves it.
    pub fn load_multiboot(
        &mut self,
        image: &[u8],
        cmdline: &str,
    ) -> Result<BootInfo, MachineError> {
        // The virtio devices attached so far are announced as Linux (and QEMU's microvm)
        // do: `virtio_mmio.device=4K@0xd0000000:5` words after the command line.
        let announced = self.vmm.devices.virtio_cmdline();
        let cmdline = match (cmdline.is_empty(), announced.is_empty()) {
            (_, true) => cmdline.to_string(),
            (true, false) => announced,
            (false, false) => format!("{cmdline} {announced}"),
        };
        let boot = load_multiboot(self.ram.guest_memory(), image, &cmdline)?;
        self.engine
            .set_state(&CpuState::multiboot(boot.entry, boot.eax, boot.ebx))?;
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
        self.engine.set_state(&CpuState::reset())?;
        Ok(())
    }

    /// Runs until the guest stops, `budget` instructions have retired, or a stop is
    /// requested ([`Machine::stop_request`]; the run then ends with
    /// [`StopReason::Paused`], and the next one continues where it stopped).
    pub fn run(&mut self, budget: u64) -> RunOutcome {
        self.run_engine(budget, false)
    }

    /// Runs `n` instructions exactly, as a debugger steps (see [`Engine::step`]), or
    /// fewer if the guest stops first or a stop is requested, as [`Machine::run`]
    /// does; [`StopReason::Budget`] once they ran.
    pub fn step(&mut self, n: u64) -> RunOutcome {
        self.run_engine(n, true)
    }

    /// [`Machine::run`], or with `step` [`Machine::step`].
    fn run_engine(&mut self, budget: u64, step: bool) -> RunOutcome {
        let before = self.engine.instructions_retired();
        let (wall0, cpu0) = (Instant::now(), thread_cpu_time());
        let stop = match self.vmm.resume_halt(before) {
            Some(stop) => stop,
            None if step => self.engine.step(&self.ram, &mut self.vmm, budget),
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
        self.vmm.stop_request()
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// The engine's own counters (see [`Engine::counters`]).
    pub fn engine_counters(&self) -> Vec<(&'static str, u64)> {
        self.engine.counters()
    }

    /// Whether the engine counts the instructions it runs (see
    /// [`Engine::counts_instructions`]).
    pub fn counts_instructions(&self) -> bool {
        self.engine.counts_instructions()
    }

    /// Whether the engine can step a few instructions exactly (see
    /// [`Engine::can_step`]).
    pub fn can_step(&self) -> bool {
        self.engine.can_step()
    }

    /// The CPU state at the current instruction boundary. Whether the processor is
    /// halted is the VMM's to say: it waits for the interrupt that wakes a halted
    /// processor, whichever engine runs it.
    pub fn cpu_state(&self) -> Result<CpuState, MachineError> {
        let mut state = self.engine.state()?;
        state.halted = self.vmm.halted;
        Ok(state)
    }

    /// Replaces the CPU state.
    pub fn set_cpu_state(&mut self, state: &CpuState) -> Result<(), MachineError> {
        self.engine.set_state(state)?;
        self.vmm.halted = state.halted;
        Ok(())
    }

    // ---- the debugger's view ----

    /// The debugger's breakpoints and watchpoints.
    pub fn debug_config(&self) -> &DebugConfig {
        &self.debug
    }

    /// Replaces the debugger's breakpoints and watchpoints.
    pub fn set_debug_config(&mut self, debug: DebugConfig) -> Result<(), MachineError> {
        self.engine.set_debug(&debug)?;
        self.debug = debug;
        Ok(())
    }

    /// Stops runs before the instruction at linear address `addr`.
    pub fn add_breakpoint(&mut self, addr: u64) -> Result<(), MachineError> {
        let mut debug = self.debug.clone();
        debug.breakpoints.insert(addr);
        self.set_debug_config(debug)
    }

    /// Removes a breakpoint; false if there was none at `addr`.
    pub fn remove_breakpoint(&mut self, addr: u64) -> Result<bool, MachineError> {
        let mut debug = self.debug.clone();
        let had = debug.breakpoints.remove(&addr);
        self.set_debug_config(debug)?;
        Ok(had)
    }

    /// Stops runs after an instruction that accesses the watched range.
    pub fn add_watchpoint(&mut self, watch: Watchpoint) -> Result<(), MachineError> {
        let mut debug = self.debug.clone();
        debug.watchpoints.insert(watch);
        self.set_debug_config(debug)
    }

    /// Removes a watchpoint; false if there was no such one.
    pub fn remove_watchpoint(&mut self, watch: &Watchpoint) -> Result<bool, MachineError> {
        let mut debug = self.debug.clone();
        let had = debug.watchpoints.remove(watch);
        self.set_debug_config(debug)?;
        Ok(had)
    }

    /// The guest events and exits runs stop at ("run until the next ring change").
    pub fn stop_on(&self) -> StopOn {
        self.vmm.stop_on
    }

    /// Sets the guest events and exits runs stop at.
    pub fn set_stop_on(&mut self, stop_on: StopOn) {
        self.vmm.stop_on = stop_on;
    }

    /// How the guest's page tables map linear address `addr` now: the walk, without
    /// touching the guest (no accessed or dirty bits, no CR2, no TLB).
    pub fn translate(&self, addr: u64) -> Result<Translation, MachineError> {
        let state = self.cpu_state()?;
        paging::walk(&PagingRegs::from(&state), &self.ram.view(), addr).map_err(|e| {
            MachineError::NotMapped {
                addr,
                why: match e {
                    WalkFault::NotPresent => "a paging entry is not present",
                    WalkFault::Reserved => "a paging entry has a reserved bit set",
                },
            }
        })
    }

    /// Reads guest memory at a linear address through the guest's page tables, without
    /// side effects on the guest. Only RAM can be read this way (reading a device
    /// register could change the device).
    pub fn read_linear(&self, addr: u64, buf: &mut [u8]) -> Result<(), MachineError> {
        let mut done = 0;
        while done < buf.len() {
            let at = addr.wrapping_add(done as u64);
            let n = (PAGE_SIZE - (at as usize & (PAGE_SIZE - 1))).min(buf.len() - done);
            let phys = self.translate(at)?.phys;
            self.ram.read(phys, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Writes guest memory at a linear address through the guest's page tables, as a
    /// debugger does: no accessed or dirty bits, no protection checks; decoded code it
    /// overwrites is dropped. Every page is translated before anything is written.
    pub fn write_linear(&mut self, addr: u64, data: &[u8]) -> Result<(), MachineError> {
        let mut pieces = Vec::new();
        let mut done = 0;
        while done < data.len() {
            let at = addr.wrapping_add(done as u64);
            let n = (PAGE_SIZE - (at as usize & (PAGE_SIZE - 1))).min(data.len() - done);
            let phys = self.translate(at)?.phys;
            if phys
                .checked_add(n as u64)
                .is_none_or(|end| end > self.ram.size() as u64)
            {
                return Err(MemoryError::OutOfRange { addr: phys, len: n }.into());
            }
            pieces.push((phys, done..done + n));
            done += n;
        }
        for (phys, range) in pieces {
            self.ram.write(phys, &data[range])?;
        }
        Ok(())
    }

    /// Reads guest-physical RAM.
    pub fn read_physical(&self, addr: u64, buf: &mut [u8]) -> Result<(), MachineError> {
        Ok(self.ram.read(addr, buf)?)
    }

    /// Writes guest-physical RAM; decoded code it overwrites is dropped.
    pub fn write_physical(&mut self, addr: u64, data: &[u8]) -> Result<(), MachineError> {
        Ok(self.ram.write(addr, data)?)
    }

    /// Puts a virtio device on the board's next virtio-mmio slot, reaching guest RAM
    /// through vm-memory (so what it writes there drops decoded code). Attach devices
    /// before [`Machine::load_multiboot`], which announces them to the guest.
    pub fn attach_virtio(
        &mut self,
        device: Box<dyn VirtioDevice<GuestMemory>>,
    ) -> Result<VirtioSlot, AttachError> {
        let mem = self.ram.guest_memory().clone();
        self.vmm.devices.attach_virtio(device, mem)
    }

    /// Puts an ATA PIO disk serving `disk` on the primary IDE channel (0x1F0, 0x3F6,
    /// IRQ 14).
    pub fn attach_ata(&mut self, disk: Disk) -> Result<Arc<Mutex<AtaDisk>>, AttachError> {
        self.vmm.devices.attach_ata(disk)
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

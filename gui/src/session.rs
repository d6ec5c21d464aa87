//! One machine as the window sees it: a worker thread holds its [`MachineHandle`],
//! carries out the window's commands and publishes a [`View`] about 30 times a second
//! while the guest runs. The window only sends commands and reads the latest view, so
//! it never waits for the guest: a request the guest makes the handle wait for (a step,
//! a pause) waits on the worker.

use crate::disasm::{self, Line};
use crate::launcher::Launcher;
use crate::log::{EventLog, History, Sample};
use devices::virtio::VirtioView;
use emu_core::cpu::CpuState;
use emu_core::exit::StopOn;
use emu_core::machine::control::{ControlError, MachineHandle, Pause, Status};
use emu_core::machine::{Machine, MachineError};
use emu_core::trace::{Counters, Event, EventMask};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{self, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the window asks of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run until a breakpoint, a pause or the end.
    Run,
    /// Run until the privilege level changes.
    RunToRingChange,
    /// Stop at the next instruction boundary.
    Pause,
    /// Run one instruction.
    Step,
    /// Run one instruction, or a whole CALL, INT n or REP string instruction.
    StepOver,
    /// Set or clear a breakpoint at a linear address.
    ToggleBreakpoint(u64),
    /// Show memory from here.
    Memory(MemoryRequest),
    /// Run at most this many instructions a second from now on (None: full speed).
    Speed(Option<u64>),
}

/// Which memory the hex view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRequest {
    /// First address.
    pub addr: u64,
    /// Guest-physical (true) or linear, through the guest's page tables.
    pub physical: bool,
}

impl MemoryRequest {
    /// Bytes the hex view shows.
    pub const LEN: usize = 256;
    /// What it shows first: physical 1 MiB, where Multiboot kernels are loaded.
    pub const FIRST: MemoryRequest = MemoryRequest {
        addr: 0x10_0000,
        physical: true,
    };
}

/// The hex view's bytes.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// What was read.
    pub request: Option<MemoryRequest>,
    /// The bytes, or why they could not be read.
    pub bytes: Option<Result<Vec<u8>, String>>,
    /// The same bytes at the stop before, to show what changed.
    pub before: Option<Vec<u8>>,
}

/// Everything the window draws about the machine: the latest the worker saw.
#[derive(Debug, Default)]
pub struct View {
    /// The engine's name, once booted.
    pub engine: Option<&'static str>,
    /// Whether the engine counts instructions (it can step and has an icount).
    pub counts_instructions: bool,
    /// The status; None until the machine is booted.
    pub status: Option<Status>,
    /// The last thing that went wrong (a bad ROM, a refused request), in the CLI's words.
    pub error: Option<String>,
    /// The registers now.
    pub regs: Option<CpuState>,
    /// The registers at the stop before the last one: what "changed" is measured from.
    pub baseline: Option<CpuState>,
    /// Disassembly around RIP.
    pub disasm: Vec<Line>,
    /// Breakpoints set, by linear address.
    pub breakpoints: BTreeSet<u64>,
    /// The hex view.
    pub memory: Memory,
    /// The counters.
    pub counters: Counters,
    /// The engine's own counters, by name (the translator's, shadow paging's).
    pub engine_counters: Vec<(String, u64)>,
    /// Instructions retired.
    pub instructions: u64,
    /// Recent events.
    pub log: EventLog,
    /// Events the worker could not keep up with (they are still counted).
    pub events_dropped: u64,
    /// Counter samples, for rates.
    pub history: History,
    /// The virtio devices and their queues.
    pub virtio: Vec<VirtioView>,
    /// A slowed-down run is on: the machine runs in short steps, so its status reads
    /// paused between them.
    pub slow_run: bool,
    /// Bumped at every update.
    pub generation: u64,
}

/// A machine being shown: dropping it ends the worker, which quits the machine.
pub struct Session {
    commands: mpsc::Sender<Command>,
    view: Arc<Mutex<View>>,
    /// What the guest wrote to its serial port: apart from the view, so the machine
    /// thread writing it never waits for a frame being drawn from the view.
    serial: Arc<Mutex<String>>,
    /// The ROM and engine it was booted with, for a reset.
    pub rom: OsString,
    /// See `rom`.
    pub engine: String,
}

impl Session {
    /// Boots `rom` on `engine` on a new worker thread, its runs going at `speed`
    /// instructions a second (None: full speed). Failures (a bad ROM, an engine not
    /// available) end up in the view.
    pub fn start(
        launcher: Arc<dyn Launcher>,
        rom: OsString,
        engine: String,
        repaint: Box<dyn Fn() + Send>,
        speed: Option<u64>,
    ) -> Session {
        let (commands, inbox) = mpsc::channel();
        let view = Arc::new(Mutex::new(View::default()));
        let serial = Arc::new(Mutex::new(String::new()));
        let _ = commands.send(Command::Speed(speed));
        let session = Session {
            commands,
            view: Arc::clone(&view),
            serial: Arc::clone(&serial),
            rom: rom.clone(),
            engine: engine.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("popek-gui-worker".into())
            .spawn({
                let view = Arc::clone(&view);
                move || work(&*launcher, &rom, &engine, inbox, view, serial, repaint)
            });
        if let Err(e) = spawned {
            lock(&view).error = Some(format!("cannot start the worker thread: {e}"));
        }
        session
    }

    /// Sends `command` to the worker; it is carried out in order, without waiting here.
    pub fn send(&self, command: Command) {
        // A worker that ended has put its reason in the view already.
        let _ = self.commands.send(command);
    }

    /// The latest view, locked for reading: hold it only while drawing.
    pub fn view(&self) -> MutexGuard<'_, View> {
        lock(&self.view)
    }

    /// The serial console's text, locked for reading.
    pub fn serial(&self) -> MutexGuard<'_, String> {
        lock(&self.serial)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every writer leaves the view whole; a panic elsewhere does not make it unreadable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The serial port's far end: appends to the console text, keeping about its last
/// [`SERIAL_KEEP`] bytes.
struct Console(Arc<Mutex<String>>);

/// Bytes of serial output the console keeps.
const SERIAL_KEEP: usize = 256 << 10;

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut text = lock(&self.0);
        text.push_str(&String::from_utf8_lossy(buf));
        if text.len() > SERIAL_KEEP {
            let mut cut = text.len() - SERIAL_KEEP / 2;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text.drain(..cut);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Events recorded on the machine thread, waiting for the worker: at most
/// [`Pending::KEEP`], so a guest making millions of exits a second cannot grow it.
#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    dropped: u64,
}

impl Pending {
    const KEEP: usize = 100_000;
}

/// How often the worker looks at a running machine.
const PERIOD: Duration = Duration::from_millis(33);

/// The worker thread's body.
fn work(
    launcher: &dyn Launcher,
    rom: &OsString,
    engine: &str,
    inbox: mpsc::Receiver<Command>,
    view: Arc<Mutex<View>>,
    serial: Arc<Mutex<String>>,
    repaint: Box<dyn Fn() + Send>,
) {
    let pending = Arc::new(Mutex::new(Pending::default()));
    let booted = launcher
        .boot(rom, engine, Box::new(Console(serial)))
        .and_then(|machine| spawn(machine, &pending).map_err(|e| e.to_string()));
    let (handle, thread) = match booted {
        Ok(spawned) => spawned,
        Err(e) => {
            lock(&view).error = Some(e);
            return repaint();
        }
    };
    let mut worker = Worker {
        handle,
        view,
        pending,
        repaint,
        booted: Instant::now(),
        at_last_stop: None,
        memory_at_last_stop: None,
        ran: false,
        temporary: None,
        memory: MemoryRequest::FIRST,
        speed: None,
        slow_run: false,
        window: None,
    };
    worker.refresh(true);
    loop {
        let command = match inbox.recv_timeout(PERIOD) {
            Ok(command) => Some(command),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let forced = command.is_some();
        if let Some(command) = command {
            let done = worker.execute(command);
            lock(&worker.view).error = done.err().map(|e| e.to_string());
        } else if worker.slow_run {
            worker.run_slowly();
        }
        worker.refresh(forced);
    }
    let _ = worker.handle.quit();
    let _ = thread.join();
}

/// Puts `machine` on its own thread with every kind of event traced into `pending`.
fn spawn(
    mut machine: Machine,
    pending: &Arc<Mutex<Pending>>,
) -> Result<(MachineHandle, JoinHandle<Machine>), ControlError> {
    machine.vmm.trace.set_mask(EventMask::ALL);
    let sink = Arc::clone(pending);
    machine.vmm.trace.set_sink(Some(Box::new(move |event| {
        let mut pending = lock(&sink);
        if pending.events.len() < Pending::KEEP {
            pending.events.push(event.clone());
        } else {
            pending.dropped += 1;
        }
    })));
    MachineHandle::spawn(machine, None)
}

struct Worker {
    handle: MachineHandle,
    view: Arc<Mutex<View>>,
    pending: Arc<Mutex<Pending>>,
    repaint: Box<dyn Fn() + Send>,
    booted: Instant,
    /// Registers at the last stop.
    at_last_stop: Option<CpuState>,
    /// The hex view's bytes at the last stop.
    memory_at_last_stop: Option<(MemoryRequest, Vec<u8>)>,
    /// The machine ran since the last stop was seen.
    ran: bool,
    /// A breakpoint "step over" set, removed at the next stop.
    temporary: Option<u64>,
    memory: MemoryRequest,
    /// Instructions a second a run may take; None for full speed.
    speed: Option<u64>,
    /// A run at `speed` is on.
    slow_run: bool,
    /// Where the disassembly window starts, kept while RIP stays inside it so stepping
    /// does not scroll it.
    window: Option<u64>,
}

impl Worker {
    fn execute(&mut self, command: Command) -> Result<(), ControlError> {
        // Any command but a change of speed or of the memory shown ends a slow run.
        if !matches!(command, Command::Speed(_) | Command::Memory(_)) {
            self.slow_run = false;
        }
        match command {
            Command::Run if self.speed.is_some() => {
                self.slow_run = true;
                Ok(())
            }
            Command::Run => {
                self.ran = true;
                self.handle.resume()
            }
            Command::Speed(speed) => {
                self.speed = speed;
                Ok(())
            }
            Command::RunToRingChange => {
                self.ran = true;
                self.handle.run_until(StopOn {
                    ring_change: true,
                    ..StopOn::default()
                })
            }
            Command::Pause => self.handle.pause().map(drop),
            Command::Step => {
                self.ran = true;
                self.handle.step(1).map(drop)
            }
            Command::StepOver => self.step_over(),
            Command::ToggleBreakpoint(addr) => {
                if !self.handle.remove_breakpoint(addr)? {
                    self.handle.add_breakpoint(addr)?;
                }
                let mut view = lock(&self.view);
                if !view.breakpoints.remove(&addr) {
                    view.breakpoints.insert(addr);
                }
                Ok(())
            }
            Command::Memory(request) => {
                self.memory = request;
                Ok(())
            }
        }
    }

    /// One period's worth of a slow run: `speed` instructions a second as steps of
    /// [`PERIOD`]. Anything but a finished step (a breakpoint, the end) ends the run.
    fn run_slowly(&mut self) {
        let Some(speed) = self.speed else {
            self.slow_run = false;
            return;
        };
        self.ran = true;
        let n = (speed * PERIOD.as_millis() as u64 / 1000).max(1);
        match self.handle.step(n) {
            Ok(Status::Paused(Pause::StepDone)) => {}
            Ok(_) => self.slow_run = false,
            Err(e) => {
                self.slow_run = false;
                lock(&self.view).error = Some(e.to_string());
            }
        }
    }

    /// Steps over a CALL, INT n or REP string instruction by running to the instruction
    /// after it (a temporary breakpoint); steps any other one.
    fn step_over(&mut self) -> Result<(), ControlError> {
        self.ran = true;
        let regs = self.handle.registers()?;
        let addr = regs.code_address();
        let bytes = self.handle.read_linear(addr, 15).unwrap_or_default();
        let target = disasm::step_over_target(&bytes, addr, regs.code_bitness())
            .filter(|target| !lock(&self.view).breakpoints.contains(target));
        match target {
            Some(target) => {
                self.handle.add_breakpoint(target)?;
                self.temporary = Some(target);
                self.handle.resume()
            }
            None => self.handle.step(1).map(drop),
        }
    }

    /// Reads what changed and publishes it; with `forced` (after a command) even when
    /// the machine is paused.
    fn refresh(&mut self, forced: bool) {
        if let Err(e) = self.try_refresh(forced) {
            lock(&self.view).error = Some(e.to_string());
        }
        (self.repaint)();
    }

    fn try_refresh(&mut self, forced: bool) -> Result<(), ControlError> {
        let status = self.handle.status()?;
        let running = status == Status::Running;
        let new_stop = !running && self.ran;
        if !(forced || running || new_stop) {
            return Ok(());
        }
        if running {
            self.ran = true;
        }
        if new_stop {
            self.ran = false;
            if let Some(addr) = self.temporary.take() {
                self.handle.remove_breakpoint(addr)?;
            }
        }
        let memory = self.memory;
        let snapshot = self
            .handle
            .call(move |m| Snapshot::take(m, memory))?
            .map_err(ControlError::from)?;
        let Snapshot {
            regs,
            counters,
            engine_counters,
            instructions,
            counts,
            engine,
            code: (code_base, code),
            memory: read,
            virtio,
        } = snapshot;
        let disasm = self.disassemble(&regs, code_base, &code);
        let (events, dropped) = {
            let mut pending = lock(&self.pending);
            (
                std::mem::take(&mut pending.events),
                std::mem::take(&mut pending.dropped),
            )
        };
        let baseline = if new_stop || self.at_last_stop.is_none() {
            self.at_last_stop.replace(regs.clone())
        } else {
            None
        };
        let memory_before = match (&read, new_stop) {
            (Ok(bytes), true) => self
                .memory_at_last_stop
                .replace((self.memory, bytes.clone())),
            _ => None,
        };
        let time = self.booted.elapsed().as_secs_f64();
        let mut view = lock(&self.view);
        view.engine = Some(engine);
        view.counts_instructions = counts;
        view.status = Some(status);
        view.slow_run = self.slow_run;
        if new_stop {
            view.baseline = baseline;
            view.memory.before = memory_before
                .filter(|(request, _)| *request == self.memory)
                .map(|(_, bytes)| bytes);
        }
        view.regs = Some(regs);
        view.disasm = disasm;
        view.memory.request = Some(self.memory);
        view.memory.bytes = Some(read);
        view.history
            .push(Sample::new(time, instructions, &counters));
        view.counters = counters;
        view.engine_counters = engine_counters;
        view.virtio = virtio;
        view.instructions = instructions;
        for event in events {
            view.log.push(event);
        }
        view.events_dropped += dropped;
        view.generation += 1;
        Ok(())
    }

    /// The disassembly around RIP from `code`, the bytes at `base`; unreadable code
    /// gives none. The window stays where it started while RIP is well inside it.
    fn disassemble(&mut self, regs: &CpuState, base: u64, code: &[u8]) -> Vec<Line> {
        let rip = regs.code_address();
        let bitness = regs.code_bitness();
        if code.is_empty() {
            return Vec::new();
        }
        if let Some(start) = self.window.filter(|s| (base..=rip).contains(s)) {
            let lines = disasm::decode(
                &code[(start - base) as usize..],
                start,
                bitness,
                disasm::LINES,
            );
            let at = lines.iter().position(|l| l.addr == rip);
            if at.is_some_and(|at| at + 4 < lines.len()) {
                return lines;
            }
        }
        let back = (rip - base).min(disasm::LOOKBACK);
        let from = (rip - back - base) as usize;
        let lines = disasm::around(&code[from..], rip, back, bitness);
        self.window = lines.first().map(|l| l.addr);
        lines
    }
}

/// What the worker reads of the machine in one request, so that it all comes from the
/// same instruction boundary and a running guest is stopped once per look.
struct Snapshot {
    regs: CpuState,
    counters: Counters,
    engine_counters: Vec<(String, u64)>,
    instructions: u64,
    /// The engine counts instructions (and can step).
    counts: bool,
    engine: &'static str,
    /// The code around RIP: where it starts, and its bytes (none if unreadable).
    code: (u64, Vec<u8>),
    /// The hex view's bytes.
    memory: Result<Vec<u8>, String>,
    virtio: Vec<VirtioView>,
}

impl Snapshot {
    fn take(m: &mut Machine, memory: MemoryRequest) -> Result<Snapshot, MachineError> {
        let regs = m.cpu_state()?;
        let code = code_around(m, regs.code_address());
        let mut bytes = vec![0; MemoryRequest::LEN];
        let read = if memory.physical {
            m.read_physical(memory.addr, &mut bytes)
        } else {
            m.read_linear(memory.addr, &mut bytes)
        };
        Ok(Snapshot {
            regs,
            counters: m.vmm.counters.clone(),
            engine_counters: m.engine_counters(),
            instructions: m.instructions_retired(),
            counts: m.counts_instructions(),
            engine: m.engine_name(),
            code,
            memory: read.map(|()| bytes).map_err(|e| e.to_string()),
            virtio: m.vmm.devices.virtio_views(),
        })
    }
}

/// The code around `rip` that can be read, to [`disasm::AHEAD`] bytes after it: from as
/// far before it (so a window that started there can be kept), else from
/// [`disasm::LOOKBACK`] before it, else from `rip` itself.
fn code_around(m: &Machine, rip: u64) -> (u64, Vec<u8>) {
    for back in [disasm::AHEAD, disasm::LOOKBACK, 0] {
        let start = rip.saturating_sub(back);
        let mut bytes = vec![0; (rip - start + disasm::AHEAD) as usize];
        if m.read_linear(start, &mut bytes).is_ok() {
            return (start, bytes);
        }
    }
    (rip, Vec::new())
}

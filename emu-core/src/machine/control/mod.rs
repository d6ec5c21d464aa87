//! The control plane: a [`Machine`] on a thread of its own, driven through a cloneable
//! [`MachineHandle`]. gdb, the GUI and the labs each hold a handle and nothing else;
//! nothing outside the machine thread touches the engine or the devices.
//!
//! The machine thread is a small state machine (Firecracker's vCPU is the model):
//! [`Status::Paused`] at an instruction boundary, [`Status::Running`] towards a goal (run
//! on, run until a [`StopOn`] event, step N instructions), or [`Status::Finished`] once
//! the guest ended. Every request is a message on a channel with its own reply channel.
//! A request made while the guest runs is served at once all the same: the handle raises
//! the machine's [`StopRequest`] after sending, the run ends at the next instruction
//! boundary (KVM is kicked out of KVM_RUN), the thread serves every waiting request and
//! runs on towards the same goal. So registers, memory, counters and the trace can be
//! read, and written, at any moment. The goal also sets [`Machine::set_stop_on`] before
//! every run.
//!
//! Races, and how they are settled:
//! - A run cut short to serve a request is not a stop: it is run again, for what is left
//!   of a step (instructions are counted per run) and of the whole-run budget
//!   (`max_instructions` of [`MachineHandle::spawn`]). A breakpoint exactly where such a
//!   run ended would be skipped by the next run, whose first instruction is exempt, so
//!   the thread reports it itself.
//! - A stop request left raised from an earlier kick is taken down before the thread
//!   looks for requests and runs; one raised after that look ends the run at once (an
//!   empty run, which goes on as above).
//! - A pause that arrives as the guest finishes replies [`Status::Finished`]; requests to
//!   run a finished guest fail with [`ControlError::Finished`], while its registers,
//!   memory and counters stay readable.
//! - Several clients may send at once: requests are served in the order they arrive, and
//!   every client sees the same [`Status`]. Resuming a running machine changes only what
//!   it stops at; stepping one is refused ([`ControlError::Running`]).
//! - A client dropping its handle affects no other. When the last handle is dropped the
//!   thread ends at the next instruction boundary and hands the machine back through its
//!   `JoinHandle`; [`MachineHandle::quit`] does the same at once, for every client.
//! - A machine thread that ended, by quitting or by a panic, makes every request fail
//!   with [`ControlError::Gone`]; no request waits for it forever.
//!
//! Stop the machine through the handle: a stop request raised directly on the
//! [`Machine`] (as `popek run` does on Ctrl-C) looks like a kick, and the guest runs on.

mod serve;

use super::{EngineFactory, Machine, MachineError};
use crate::cpu::CpuState;
use crate::engine::Watchpoint;
use crate::exit::{DebugStop, StopOn, StopReason};
use crate::memory::MemoryError;
use crate::stop::StopRequest;
use crate::trace::{Counters, Event, EventMask};
use crate::x86::paging::Translation;
use serve::{Goal, Request};
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a machine is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pause {
    /// It has not run since [`MachineHandle::spawn`].
    Start,
    /// A client asked ([`MachineHandle::pause`]).
    Requested,
    /// A step ([`MachineHandle::step`]) ran its instructions.
    StepDone,
    /// A breakpoint, a watchpoint, or an event the run was to stop at.
    Debug(DebugStop),
}

/// Where a machine is, as every client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The guest runs.
    Running,
    /// Stopped at an instruction boundary; it can go on.
    Paused(Pause),
    /// The guest ended (it exited, triple-faulted, used an unsupported instruction,
    /// halted for good, used up the instruction budget, or the engine failed): it runs
    /// no more, but can still be inspected.
    Finished(StopReason),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Running => write!(f, "running"),
            Status::Paused(Pause::Start) => write!(f, "paused: not started"),
            Status::Paused(Pause::Requested) => write!(f, "paused on request"),
            Status::Paused(Pause::StepDone) => write!(f, "paused: step done"),
            Status::Paused(Pause::Debug(stop)) => write!(f, "paused: {stop}"),
            Status::Finished(reason) => write!(f, "finished: {reason}"),
        }
    }
}

/// Why a request to the machine failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The machine thread has ended (quit, or panicked): nothing serves requests.
    #[error("the machine thread has ended")]
    Gone,
    /// The thread could not be started.
    #[error("cannot start the machine thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The guest has finished and cannot run again.
    #[error("the guest has finished ({0})")]
    Finished(StopReason),
    /// The request needs a paused machine.
    #[error("the machine is running: pause it first")]
    Running,
    /// The engine can neither count instructions nor single-step, so it cannot step.
    #[error("{engine} can neither count instructions nor single-step, so it cannot step")]
    CannotStep {
        /// The engine's name.
        engine: &'static str,
    },
    /// The machine refused the request (an address not mapped, an engine that cannot
    /// hold a state or a breakpoint, ...).
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// A closure given to [`MachineHandle::call`] panicked; the machine thread goes on.
    #[error("a request panicked on the machine thread: {0}")]
    Panicked(String),
}

/// Where a reply goes: one message, then the channel is dropped.
type Reply<T> = mpsc::SyncSender<Result<T, ControlError>>;

/// What the machine thread and its clients share: the status, and the stop request that
/// gets a running guest to an instruction boundary.
struct Shared {
    board: Mutex<Board>,
    /// Notified at every change of [`Board`].
    changed: Condvar,
    stop: Arc<StopRequest>,
}

/// The status as clients see it.
struct Board {
    status: Status,
    /// False once the machine thread ended.
    alive: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Board> {
        // Nothing is left half-written under this lock: a panic elsewhere leaves it usable.
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, status: Status) {
        self.lock().status = status;
        self.changed.notify_all();
    }

    /// The machine thread ends: requests fail from now on, and waiters wake to hear it.
    fn end(&self) {
        self.lock().alive = false;
        self.changed.notify_all();
    }
}

/// Held by every clone of a handle, and dropped after its request channel: when the
/// last handle goes, the channel is closed, and this gets a running guest to look.
struct LastHandle(Arc<StopRequest>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.request();
    }
}

/// A client's end of a machine running on its own thread: cloneable, usable from any
/// thread. See the module documentation.
#[derive(Clone)]
pub struct MachineHandle {
    // Declared (so dropped) before `_last`.
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    _last: Arc<LastHandle>,
}

impl fmt::Debug for MachineHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineHandle")
            .field("status", &self.shared.lock().status)
            .finish_non_exhaustive()
    }
}

impl MachineHandle {
    /// Moves `machine` to a thread of its own, paused ([`Pause::Start`]), and returns the
    /// first handle and the thread, which hands the machine back when it ends (after
    /// [`MachineHandle::quit`] or once every handle is dropped). `max_instructions` bounds
    /// the instructions all its runs retire together, as `--max-instructions` bounds
    /// one run (engines that cannot count instructions ignore it).
    pub fn spawn(
        machine: Machine,
        max_instructions: Option<u64>,
    ) -> Result<(MachineHandle, JoinHandle<Machine>), ControlError> {
        let stop = machine.stop_request();
        let shared = Arc::new(Shared {
            board: Mutex::new(Board {
                status: Status::Paused(Pause::Start),
                alive: true,
            }),
            changed: Condvar::new(),
            stop: Arc::clone(&stop),
        });
        let (requests, inbox) = mpsc::channel();
        let thread = {
            let shared = Arc::clone(&shared);
            let budget = max_instructions.unwrap_or(u64::MAX);
            std::thread::Builder::new()
                .name("popek-machine".into())
                .spawn(move || serve::serve(machine, inbox, shared, budget))
                .map_err(ControlError::Spawn)?
        };
        let handle = MachineHandle {
            requests,
            shared,
            _last: Arc::new(LastHandle(stop)),
        };
        Ok((handle, thread))
    }

    // ---- status ----

    /// The status now, without waiting.
    pub fn status(&self) -> Result<Status, ControlError> {
        let board = self.shared.lock();
        if board.alive {
            Ok(board.status.clone())
        } else {
            Err(ControlError::Gone)
        }
    }

    /// Waits until the machine is not running, for at most `timeout`; the status then
    /// ([`Status::Running`] if the time ran out).
    pub fn wait(&self, timeout: Duration) -> Result<Status, ControlError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut board = self.shared.lock();
        loop {
            if !board.alive {
                return Err(ControlError::Gone);
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if board.status != Status::Running || left.is_zero() {
                return Ok(board.status.clone());
            }
            board = self
                .shared
                .changed
                .wait_timeout(board, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    // ---- running ----

    /// Stops a running guest at the next instruction boundary (within a millisecond or
    /// so on every engine) and returns once it is paused, with the status: the machine
    /// may also have been paused already, or have finished.
    pub fn pause(&self) -> Result<Status, ControlError> {
        self.ask(Request::Pause)
    }

    /// Lets the guest run on, until a breakpoint or watchpoint, the end of the guest or
    /// a pause; returns at once. A running machine runs on, stopping at nothing new.
    pub fn resume(&self) -> Result<(), ControlError> {
        self.run_until(StopOn::default())
    }

    /// As [`MachineHandle::resume`], and also stops after the next event `stop_on`
    /// names (a ring change, an exception, an interrupt, a VM exit), with
    /// [`Pause::Debug`]. Given to a running machine, it replaces what that run stops at.
    pub fn run_until(&self, stop_on: StopOn) -> Result<(), ControlError> {
        self.ask(|reply| Request::Go {
            goal: Goal::run(stop_on),
            reply,
            at_stop: false,
        })
        .map(drop)
    }

    /// Runs `n` instructions of a paused machine and returns once it stopped again:
    /// [`Pause::StepDone`] after `n` instructions, or earlier at a breakpoint, a
    /// watchpoint, the end of the guest or another client's pause. An exception or
    /// interrupt delivered counts as a step as well (as in `--max-instructions`).
    /// Engines that can neither count instructions nor single-step cannot step
    /// ([`ControlError::CannotStep`]); KVM single-steps.
    pub fn step(&self, n: u64) -> Result<Status, ControlError> {
        self.ask(|reply| Request::Go {
            goal: Goal::step(n),
            reply,
            at_stop: true,
        })
    }

    /// Ends the machine thread at the next instruction boundary, running or not; its
    /// `JoinHandle` gives the machine back. Every handle's requests then fail with
    /// [`ControlError::Gone`].
    pub fn quit(&self) -> Result<(), ControlError> {
        self.ask(Request::Quit)
    }

    // ---- the machine's state ----

    /// The CPU state at the current instruction boundary.
    pub fn registers(&self) -> Result<CpuState, ControlError> {
        self.call_machine(|m| m.cpu_state())
    }

    /// Replaces the CPU state.
    pub fn set_registers(&self, state: CpuState) -> Result<(), ControlError> {
        self.call_machine(move |m| m.set_cpu_state(&state))
    }

    /// Reads `len` bytes of guest memory at linear address `addr`, through the guest's
    /// page tables, without side effects on the guest (no accessed or dirty bits, no CR2,
    /// no TLB fill). Only RAM can be read this way.
    pub fn read_linear(&self, addr: u64, len: usize) -> Result<Vec<u8>, ControlError> {
        self.read(addr, len, Machine::read_linear)
    }

    /// Writes guest memory at linear address `addr`, as a debugger does (no accessed or
    /// dirty bits, no protection checks); decoded code it overwrites is dropped, so the
    /// guest runs what was written.
    pub fn write_linear(&self, addr: u64, data: &[u8]) -> Result<(), ControlError> {
        let data = data.to_vec();
        self.call_machine(move |m| m.write_linear(addr, &data))
    }

    /// Reads `len` bytes of guest-physical RAM at `addr`.
    pub fn read_physical(&self, addr: u64, len: usize) -> Result<Vec<u8>, ControlError> {
        self.read(addr, len, Machine::read_physical)
    }

    /// Writes guest-physical RAM at `addr`; decoded code it overwrites is dropped.
    pub fn write_physical(&self, addr: u64, data: &[u8]) -> Result<(), ControlError> {
        let data = data.to_vec();
        self.call_machine(move |m| m.write_physical(addr, &data))
    }

    /// The page walk for linear address `addr`, level by level, without side effects.
    pub fn translate(&self, addr: u64) -> Result<Translation, ControlError> {
        self.call_machine(move |m| m.translate(addr))
    }

    // ---- breakpoints and watchpoints ----

    /// Stops runs before the instruction at linear address `addr`.
    pub fn add_breakpoint(&self, addr: u64) -> Result<(), ControlError> {
        self.call_machine(move |m| m.add_breakpoint(addr))
    }

    /// Removes a breakpoint; false if there was none at `addr`.
    pub fn remove_breakpoint(&self, addr: u64) -> Result<bool, ControlError> {
        self.call_machine(move |m| m.remove_breakpoint(addr))
    }

    /// Stops runs after an instruction that accesses the watched range.
    pub fn add_watchpoint(&self, watch: Watchpoint) -> Result<(), ControlError> {
        self.call_machine(move |m| m.add_watchpoint(watch))
    }

    /// Removes a watchpoint; false if there was no such one.
    pub fn remove_watchpoint(&self, watch: Watchpoint) -> Result<bool, ControlError> {
        self.call_machine(move |m| m.remove_watchpoint(&watch))
    }

    // ---- counters and trace ----

    /// The counters now.
    pub fn counters(&self) -> Result<Counters, ControlError> {
        self.call(|m| m.vmm.counters.clone())
    }

    /// The engine's own counters, by name (the translator's blocks, hits and flushes,
    /// shadow paging's faults; none for the interpreter).
    pub fn engine_counters(&self) -> Result<Vec<(String, u64)>, ControlError> {
        self.call(|m| m.engine_counters())
    }

    /// Guest instructions retired since the machine was built (by engines that count).
    pub fn instructions_retired(&self) -> Result<u64, ControlError> {
        self.call(|m| m.instructions_retired())
    }

    /// Chooses what the trace records.
    pub fn set_trace_mask(&self, mask: EventMask) -> Result<(), ControlError> {
        self.call(move |m| m.vmm.trace.set_mask(mask))
    }

    /// The latest `n` trace events (fewer if fewer are kept), oldest first.
    pub fn trace_events(&self, n: usize) -> Result<Vec<Event>, ControlError> {
        self.call(move |m| {
            let kept = m.vmm.trace.events().count();
            m.vmm
                .trace
                .events()
                .skip(kept.saturating_sub(n))
                .cloned()
                .collect()
        })
    }

    /// Every virtio device and its queues as they stand now (descriptor table, rings,
    /// indices, chains in flight, counters), in slot order. Only reads guest memory.
    pub fn virtio_queues(&self) -> Result<Vec<devices::virtio::VirtioView>, ControlError> {
        self.call(|m| m.vmm.devices.virtio_views())
    }

    // ---- engines ----

    /// Moves a paused machine to the engine `make_engine` builds, with the whole CPU
    /// state, at the current instruction boundary.
    pub fn switch_engine(
        &self,
        make_engine: Box<EngineFactory<'static>>,
    ) -> Result<(), ControlError> {
        self.ask(|reply| Request::Switch(make_engine, reply))
    }

    /// The engine's name.
    pub fn engine_name(&self) -> Result<&'static str, ControlError> {
        self.call(|m| m.engine_name())
    }

    /// Runs `f` on the machine thread at an instruction boundary (a running guest stops
    /// for it and runs on) and returns what it returned: the escape hatch for what the
    /// other requests do not cover. `f` must neither run the machine (the thread's
    /// goal sets [`Machine::set_stop_on`] before every run) nor wait for a handle's
    /// request, which only this thread could serve. If it panics the request fails with
    /// [`ControlError::Panicked`], and whatever it changed before stays changed.
    pub fn call<R, F>(&self, f: F) -> Result<R, ControlError>
    where
        F: FnOnce(&mut Machine) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.ask(|reply| {
            Request::Call(Box::new(move |m: &mut Machine| {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(m)))
                    .map_err(|panic| ControlError::Panicked(panic_message(&*panic)));
                let _ = reply.send(result);
            }))
        })
    }

    /// [`MachineHandle::call`] for a machine method that can fail.
    fn call_machine<R, F>(&self, f: F) -> Result<R, ControlError>
    where
        F: FnOnce(&mut Machine) -> Result<R, MachineError> + Send + 'static,
        R: Send + 'static,
    {
        Ok(self.call(f)??)
    }

    /// Reads `len` bytes at `addr` with `read`. No read can be larger than RAM (a linear
    /// one would alias pages), which keeps a wild length from exhausting host memory.
    fn read(
        &self,
        addr: u64,
        len: usize,
        read: fn(&Machine, u64, &mut [u8]) -> Result<(), MachineError>,
    ) -> Result<Vec<u8>, ControlError> {
        self.call_machine(move |m| {
            if len > m.ram().size() {
                return Err(MemoryError::OutOfRange { addr, len }.into());
            }
            let mut buf = vec![0; len];
            read(m, addr, &mut buf)?;
            Ok(buf)
        })
    }

    /// Sends the request `make` builds around a reply channel, and waits for the reply.
    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, ControlError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .send(make(reply))
            .map_err(|_| ControlError::Gone)?;
        // A running guest stops at the next instruction boundary, where the thread
        // serves the request; a paused machine thread is waiting for it anyway.
        self.shared.stop.request();
        // A thread that ends drops every request it still holds, and with it the reply.
        answer.recv().map_err(|_| ControlError::Gone)?
    }
}

/// What a panic said, if it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

//! gdbstub's target: one gdb session's view of a machine, through its
//! [`MachineHandle`] and nothing else.

use crate::arch::{PopekX86, Registers};
use crate::{EngineChooser, PAGE};
use emu_core::engine::{WatchKind as MachineWatch, Watchpoint};
use emu_core::exit::{DebugStop, StopReason};
use emu_core::machine::{ControlError, MachineHandle, Pause, Status};
use gdbstub::common::Signal;
use gdbstub::stub::SingleThreadStopReason;
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::{Target, TargetError, TargetResult};
use std::collections::BTreeSet;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// A stop as gdb hears it.
pub type StopReply = SingleThreadStopReason<u64>;

/// What a session is waiting for after gdb said continue or step.
pub(crate) enum Running {
    /// Nothing: the machine is paused (or finished).
    Nothing,
    /// The machine runs on (continue).
    Continue,
    /// A thread waits for a one-instruction step and sends its end here.
    Step(Receiver<Result<Status, ControlError>>),
    /// A stop to report at once, without running (the guest had finished).
    Report(StopReply),
}

/// One gdb session's target.
pub struct PopekTarget {
    pub(crate) handle: MachineHandle,
    /// Builds the engine `monitor engine NAME` moves to.
    pub(crate) engines: Arc<EngineChooser>,
    /// gdb's software and hardware breakpoints (linear addresses): the machine has a
    /// breakpoint wherever either set has one.
    sw_breaks: BTreeSet<u64>,
    hw_breaks: BTreeSet<u64>,
    /// gdb's watchpoints (each kind of gdb's is one of the machine's).
    watches: BTreeSet<Watchpoint>,
    pub(crate) running: Running,
    /// A guest that finished other than by exiting was told to gdb as a signal (so
    /// its state can be looked at): going on then ends the session.
    told_finish: bool,
}

impl PopekTarget {
    /// A target for `handle`.
    pub fn new(handle: MachineHandle, engines: Arc<EngineChooser>) -> PopekTarget {
        PopekTarget {
            handle,
            engines,
            sw_breaks: BTreeSet::new(),
            hw_breaks: BTreeSet::new(),
            watches: BTreeSet::new(),
            running: Running::Nothing,
            told_finish: false,
        }
    }

    /// Removes from the machine every breakpoint and watchpoint this session set (the
    /// session ends; gdb may not have removed them).
    pub fn clear_debug(&mut self) -> Result<(), ControlError> {
        for addr in std::mem::take(&mut self.sw_breaks).union(&std::mem::take(&mut self.hw_breaks))
        {
            self.handle.remove_breakpoint(*addr)?;
        }
        for watch in std::mem::take(&mut self.watches) {
            self.handle.remove_watchpoint(watch)?;
        }
        Ok(())
    }

    /// Waits at most `timeout` for the run gdb started to stop; the stop, if it did.
    pub(crate) fn poll_stop(&mut self, timeout: Duration) -> Result<Option<StopReply>, String> {
        let status = match std::mem::replace(&mut self.running, Running::Nothing) {
            // gdbstub waits only after a continue or a step; were it to wait otherwise,
            // this keeps the wait from spinning.
            Running::Nothing => {
                std::thread::sleep(timeout);
                return Ok(None);
            }
            Running::Report(stop) => return Ok(Some(stop)),
            Running::Continue => {
                let status = self.handle.wait(timeout).map_err(|e| e.to_string())?;
                if status == Status::Running {
                    self.running = Running::Continue;
                    return Ok(None);
                }
                status
            }
            Running::Step(done) => match done.recv_timeout(timeout) {
                Ok(Ok(status)) => status,
                Ok(Err(e)) => return Ok(Some(self.refused(&e))),
                Err(RecvTimeoutError::Timeout) => {
                    self.running = Running::Step(done);
                    return Ok(None);
                }
                Err(RecvTimeoutError::Disconnected) => return Err("the step was lost".into()),
            },
        };
        Ok(Some(self.stop_reply(&status)))
    }

    /// Stops a running guest for gdb's Ctrl-C; the stop to report.
    pub(crate) fn interrupt(&mut self) -> Result<StopReply, String> {
        // A step waiting for its end ends with the pause; its thread's answer is moot.
        self.running = Running::Nothing;
        let status = self.handle.pause().map_err(|e| e.to_string())?;
        Ok(match status {
            Status::Paused(Pause::Requested) => StopReply::Signal(Signal::SIGINT),
            other => self.stop_reply(&other),
        })
    }

    /// What gdb hears for a machine that stopped with `status`.
    fn stop_reply(&mut self, status: &Status) -> StopReply {
        match status {
            Status::Running | Status::Paused(Pause::Requested | Pause::Start) => {
                StopReply::Signal(Signal::SIGINT)
            }
            Status::Paused(Pause::StepDone) => StopReply::DoneStep,
            Status::Paused(Pause::Debug(DebugStop::Breakpoint { addr })) => {
                if self.hw_breaks.contains(addr) && !self.sw_breaks.contains(addr) {
                    StopReply::HwBreak(())
                } else {
                    StopReply::SwBreak(())
                }
            }
            Status::Paused(Pause::Debug(DebugStop::Watchpoint { addr, len, write })) => {
                match self.watch_hit(*addr, *len, *write) {
                    Some((watch_addr, kind)) => StopReply::Watch {
                        tid: (),
                        kind,
                        addr: watch_addr.max(*addr),
                    },
                    None => StopReply::Signal(Signal::SIGTRAP),
                }
            }
            Status::Paused(Pause::Debug(_)) => StopReply::Signal(Signal::SIGTRAP),
            Status::Finished(StopReason::Exited(value)) => {
                StopReply::Exited(u8::try_from(*value).unwrap_or(u8::MAX))
            }
            Status::Finished(reason) => {
                let signal = finish_signal(reason);
                if self.told_finish {
                    return StopReply::Terminated(signal);
                }
                // Popek says the whole of it (a register dump) when it exits.
                let what = reason.to_string();
                let first = what.lines().next().unwrap_or_default();
                eprintln!("popek: gdb: the guest finished ({signal} in gdb): {first}");
                self.told_finish = true;
                StopReply::Signal(signal)
            }
        }
    }

    /// The stop for a continue or step the machine refused: the end, for a guest that
    /// finished; otherwise the machine did not move, and gdb hears it stopped at once.
    fn refused(&mut self, e: &ControlError) -> StopReply {
        match e {
            ControlError::Finished(reason) => self.stop_reply(&Status::Finished(reason.clone())),
            other => {
                eprintln!("popek: gdb: {other}");
                StopReply::Signal(Signal::SIGILL)
            }
        }
    }

    /// The watchpoint of gdb's that an access of `len` bytes at `addr` triggers.
    fn watch_hit(&self, addr: u64, len: u64, write: bool) -> Option<(u64, WatchKind)> {
        self.watches
            .iter()
            .find(|w| w.overlaps(addr, len) && w.kind.triggers(!write, write))
            .map(|w| (w.addr, gdb_kind(w.kind)))
    }

    /// Adds a breakpoint to one of the sets, and to the machine if it is new there.
    fn add_break(&mut self, addr: u64, hw: bool) -> TargetResult<bool, Self> {
        let had = self.sw_breaks.contains(&addr) || self.hw_breaks.contains(&addr);
        if !had {
            self.handle.add_breakpoint(addr).map_err(non_fatal)?;
        }
        let set = if hw {
            &mut self.hw_breaks
        } else {
            &mut self.sw_breaks
        };
        set.insert(addr);
        Ok(true)
    }

    /// Removes a breakpoint from one of the sets, and from the machine if neither set
    /// has it any more.
    fn remove_break(&mut self, addr: u64, hw: bool) -> TargetResult<bool, Self> {
        let set = if hw {
            &mut self.hw_breaks
        } else {
            &mut self.sw_breaks
        };
        if !set.remove(&addr) {
            return Ok(false);
        }
        if !self.sw_breaks.contains(&addr) && !self.hw_breaks.contains(&addr) {
            self.handle.remove_breakpoint(addr).map_err(non_fatal)?;
        }
        Ok(true)
    }
}

/// What a guest that ended other than by exiting looks like to gdb.
fn finish_signal(reason: &StopReason) -> Signal {
    match reason {
        StopReason::Shutdown(_) => Signal::SIGSEGV,
        StopReason::Unsupported { .. } => Signal::SIGILL,
        StopReason::Budget => Signal::SIGXCPU,
        StopReason::Halted | StopReason::HaltedNoInterrupt { .. } => Signal::SIGSTOP,
        _ => Signal::SIGABRT,
    }
}

/// The machine's watchpoint kind for gdb's.
fn machine_kind(kind: WatchKind) -> MachineWatch {
    match kind {
        WatchKind::Write => MachineWatch::Write,
        WatchKind::Read => MachineWatch::Read,
        WatchKind::ReadWrite => MachineWatch::Access,
    }
}

/// gdb's watchpoint kind for the machine's.
fn gdb_kind(kind: MachineWatch) -> WatchKind {
    match kind {
        MachineWatch::Write => WatchKind::Write,
        MachineWatch::Read => WatchKind::Read,
        MachineWatch::Access => WatchKind::ReadWrite,
    }
}

/// A request the machine refused: gdb hears an error reply and the session goes on.
fn non_fatal(e: ControlError) -> TargetError<String> {
    match e {
        ControlError::Gone => TargetError::Fatal(e.to_string()),
        _ => TargetError::NonFatal,
    }
}

impl Target for PopekTarget {
    type Arch = PopekX86;
    /// A fatal error: the machine thread is gone.
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, PopekX86, String> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    /// gdb inserts software breakpoints as Z0 packets, not by writing INT3 into guest
    /// memory, which the guest could see.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl SingleThreadBase for PopekTarget {
    fn read_registers(&mut self, regs: &mut Registers) -> TargetResult<(), Self> {
        let state = self.handle.registers().map_err(non_fatal)?;
        *regs = Registers::from_state(&state);
        Ok(())
    }

    fn write_registers(&mut self, regs: &Registers) -> TargetResult<(), Self> {
        let mut state = self.handle.registers().map_err(non_fatal)?;
        let old = Registers::from_state(&state);
        if let Err(why) = regs.apply(&old, &mut state) {
            eprintln!("popek: gdb: {why}");
            return Err(TargetError::NonFatal);
        }
        self.handle.set_registers(state).map_err(|e| {
            eprintln!("popek: gdb: {e}");
            non_fatal(e)
        })
    }

    /// Reads through the guest's page tables without touching the guest; stops at the
    /// first page that is not mapped (gdb then shows what it got).
    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        match self.handle.read_linear(start_addr, data.len()) {
            Ok(bytes) => {
                data.copy_from_slice(&bytes);
                Ok(bytes.len())
            }
            Err(ControlError::Gone) => Err(TargetError::Fatal("the machine is gone".into())),
            Err(_) => {
                // Some pages may be mapped: read up to the first that is not.
                let mut done = 0;
                while done < data.len() {
                    let at = start_addr.wrapping_add(done as u64);
                    let n = (PAGE - (at as usize & (PAGE - 1))).min(data.len() - done);
                    match self.handle.read_linear(at, n) {
                        Ok(bytes) => data[done..done + n].copy_from_slice(&bytes),
                        Err(_) => break,
                    }
                    done += n;
                }
                if done == 0 {
                    Err(TargetError::NonFatal)
                } else {
                    Ok(done)
                }
            }
        }
    }

    fn write_addrs(&mut self, start_addr: u64, data: &[u8]) -> TargetResult<(), Self> {
        self.handle
            .write_linear(start_addr, data)
            .map_err(non_fatal)
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for PopekTarget {
    /// Lets the guest run. Signals gdb passes along are dropped: a machine has no
    /// process to deliver them to.
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), String> {
        self.running = match self.handle.resume() {
            Ok(()) => Running::Continue,
            Err(ControlError::Gone) => return Err("the machine is gone".into()),
            Err(e) => Running::Report(self.refused(&e)),
        };
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for PopekTarget {
    /// Steps one instruction on a thread of its own, so that gdb's Ctrl-C still
    /// reaches a step that waits (a halted guest waits for its interrupt).
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), String> {
        let (done, wait) = mpsc::sync_channel(1);
        let handle = self.handle.clone();
        std::thread::Builder::new()
            .name("popek-gdb-step".into())
            .spawn(move || {
                let _ = done.send(handle.step(1));
            })
            .map_err(|e| format!("cannot start a step: {e}"))?;
        self.running = Running::Step(wait);
        Ok(())
    }
}

impl Breakpoints for PopekTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for PopekTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.add_break(addr, false)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove_break(addr, false)
    }
}

impl HwBreakpoint for PopekTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.add_break(addr, true)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove_break(addr, true)
    }
}

impl HwWatchpoint for PopekTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        if len == 0 {
            return Ok(false);
        }
        let watch = Watchpoint {
            addr,
            len,
            kind: machine_kind(kind),
        };
        if !self.watches.contains(&watch) {
            self.handle.add_watchpoint(watch).map_err(non_fatal)?;
            self.watches.insert(watch);
        }
        Ok(true)
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let watch = Watchpoint {
            addr,
            len,
            kind: machine_kind(kind),
        };
        if !self.watches.remove(&watch) {
            return Ok(false);
        }
        self.handle.remove_watchpoint(watch).map_err(non_fatal)
    }
}

//! The machine thread: serves requests and runs the guest towards the current goal.

use super::{ControlError, Pause, Reply, Shared, Status};
use crate::cpu::CpuState;
use crate::exit::{DebugStop, StopOn, StopReason};
use crate::machine::{EngineFactory, Machine};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

/// A message from a client; each carries where its answer goes.
pub(super) enum Request {
    /// Run towards `goal`. The reply comes once the thread took the goal (with
    /// [`Status::Running`]) or, with `at_stop`, once the run towards it stopped.
    Go {
        goal: Goal,
        reply: Reply<Status>,
        at_stop: bool,
    },
    /// Pause a running guest; the reply is the status then.
    Pause(Reply<Status>),
    /// Run a closure on the machine; it replies itself.
    Call(Box<dyn FnOnce(&mut Machine) + Send>),
    /// Move a paused machine to another engine.
    Switch(Box<EngineFactory<'static>>, Reply<()>),
    /// End the thread.
    Quit(Reply<()>),
}

/// What a running machine runs towards.
pub(super) struct Goal {
    /// The events it stops at, besides breakpoints and watchpoints.
    stop_on: StopOn,
    /// Instructions left to step, if stepping.
    steps: Option<u64>,
    /// Who waits for the stop.
    waiting: Option<Reply<Status>>,
}

impl Goal {
    /// Run until `stop_on` (or a breakpoint, a watchpoint, the end, a pause).
    pub(super) fn run(stop_on: StopOn) -> Goal {
        Goal {
            stop_on,
            steps: None,
            waiting: None,
        }
    }

    /// Run `n` instructions.
    pub(super) fn step(n: u64) -> Goal {
        Goal {
            stop_on: StopOn::default(),
            steps: Some(n),
            waiting: None,
        }
    }
}

/// Where the machine is: the thread's side of [`Status`].
enum Mode {
    Paused(Pause),
    Running(Goal),
    Finished(StopReason),
}

/// The machine thread's state.
struct Vcpu {
    machine: Machine,
    mode: Mode,
    shared: Arc<Shared>,
    /// Instructions the runs may still retire (`max_instructions`).
    budget: u64,
}

/// Marks the thread ended when dropped, however it ends (a panic included), and wakes
/// every client waiting for a status.
struct Alive<'a>(&'a Shared);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The thread's body: until a client quits or every handle is gone, serves requests
/// and, while running, runs the guest between them. Returns the machine.
pub(super) fn serve(
    machine: Machine,
    inbox: Receiver<Request>,
    shared: Arc<Shared>,
    budget: u64,
) -> Machine {
    let alive = Arc::clone(&shared);
    let _alive = Alive(&alive);
    let mut vcpu = Vcpu {
        machine,
        mode: Mode::Paused(Pause::Start),
        shared,
        budget,
    };
    loop {
        let request = if let Mode::Running(_) = vcpu.mode {
            // Requests sent before this look are served now; one sent after it raises
            // the stop request after sending, which ends the run below.
            vcpu.shared.stop.take();
            match inbox.try_recv() {
                Ok(request) => request,
                Err(TryRecvError::Empty) => {
                    vcpu.run();
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            match inbox.recv() {
                Ok(request) => request,
                Err(_) => break,
            }
        };
        if !vcpu.serve(request) {
            break;
        }
    }
    vcpu.machine
}

impl Vcpu {
    fn status(&self) -> Status {
        match &self.mode {
            Mode::Paused(pause) => Status::Paused(pause.clone()),
            Mode::Running(_) => Status::Running,
            Mode::Finished(reason) => Status::Finished(reason.clone()),
        }
    }

    /// Enters `mode`, tells every client, and answers whoever waited for the run
    /// towards the old goal to stop.
    fn enter(&mut self, mode: Mode) {
        let old = std::mem::replace(&mut self.mode, mode);
        let status = self.status();
        self.shared.publish(status.clone());
        if let Mode::Running(Goal {
            waiting: Some(reply),
            ..
        }) = old
        {
            let _ = reply.send(Ok(status));
        }
    }

    /// Serves one request; false if the thread is to end.
    fn serve(&mut self, request: Request) -> bool {
        match request {
            Request::Go {
                goal,
                reply,
                at_stop,
            } => self.go(goal, reply, at_stop),
            Request::Pause(reply) => {
                if let Mode::Running(_) = self.mode {
                    self.enter(Mode::Paused(Pause::Requested));
                }
                let _ = reply.send(Ok(self.status()));
            }
            Request::Call(f) => f(&mut self.machine),
            Request::Switch(make_engine, reply) => {
                let result = match self.mode {
                    Mode::Running(_) => Err(ControlError::Running),
                    _ => self.machine.switch_engine(make_engine).map_err(Into::into),
                };
                let _ = reply.send(result);
            }
            Request::Quit(reply) => {
                // Ended for every client before the one quitting hears back.
                self.shared.end();
                let _ = reply.send(Ok(()));
                return false;
            }
        }
        true
    }

    /// Takes a goal, or says why not.
    fn go(&mut self, mut goal: Goal, reply: Reply<Status>, at_stop: bool) {
        let refused = match &mut self.mode {
            Mode::Finished(reason) => Some(ControlError::Finished(reason.clone())),
            Mode::Running(_) if goal.steps.is_some() => Some(ControlError::Running),
            // Running on: only what the run stops at changes.
            Mode::Running(running) => {
                running.stop_on = goal.stop_on;
                None
            }
            Mode::Paused(_) if goal.steps.is_some() && !self.machine.can_step() => {
                Some(ControlError::CannotStep {
                    engine: self.machine.engine_name(),
                })
            }
            Mode::Paused(_) => None,
        };
        // A step of nothing leaves the machine as it is.
        let start =
            refused.is_none() && matches!(self.mode, Mode::Paused(_)) && goal.steps != Some(0);
        if start && at_stop {
            goal.waiting = Some(reply);
            return self.enter(Mode::Running(goal));
        }
        if start {
            self.enter(Mode::Running(goal));
        }
        let _ = reply.send(match refused {
            Some(error) => Err(error),
            None => Ok(self.status()),
        });
    }

    /// Runs the guest towards the goal until the run ends; enters the mode that ending
    /// means (a run ended only to serve requests changes nothing).
    fn run(&mut self) {
        let Mode::Running(goal) = &mut self.mode else {
            return;
        };
        // The whole-run budget is the limit unless the step ends first.
        let step_limits = goal.steps.is_some_and(|steps| steps < self.budget);
        let limit = goal
            .steps
            .map_or(self.budget, |steps| steps.min(self.budget));
        let next = if limit == 0 {
            Mode::Finished(StopReason::Budget)
        } else {
            self.machine.set_stop_on(goal.stop_on);
            let outcome = if goal.steps.is_some() {
                self.machine.step(limit)
            } else {
                self.machine.run(limit)
            };
            self.budget = self.budget.saturating_sub(outcome.instructions);
            if let Some(steps) = &mut goal.steps {
                *steps = steps.saturating_sub(outcome.instructions);
            }
            match outcome.stop {
                StopReason::Paused if goal.steps == Some(0) => Mode::Paused(Pause::StepDone),
                // Ended to serve a request, which the thread now looks for: the next run
                // goes on, but exempts its first instruction from breakpoints.
                StopReason::Paused => match self.breakpoint_here(outcome.instructions) {
                    Some(addr) => Mode::Paused(Pause::Debug(DebugStop::Breakpoint { addr })),
                    None => return,
                },
                StopReason::Budget if step_limits => Mode::Paused(Pause::StepDone),
                StopReason::Debug(stop) => Mode::Paused(Pause::Debug(stop)),
                end => Mode::Finished(end),
            }
        };
        self.enter(next);
    }

    /// The breakpoint at the current instruction, if a run that retired `retired`
    /// instructions ended there: the run did not stop for it (it ended before looking),
    /// and the next run would not either. A run that retired none started there and
    /// was exempt already.
    fn breakpoint_here(&self, retired: u64) -> Option<u64> {
        let breakpoints = &self.machine.debug_config().breakpoints;
        if retired == 0 || breakpoints.is_empty() {
            return None;
        }
        let addr = CpuState::code_address(&self.machine.cpu_state().ok()?);
        breakpoints.contains(&addr).then_some(addr)
    }
}

//! Getting the vCPU out of KVM_RUN when the next timer interrupt is due.
//!
//! A guest that computes without exits would otherwise keep the thread inside KVM_RUN
//! past any number of PIT ticks, and the VMM only sees the time when an exit hands it
//! control. So the engine arms a host timer for the deadline the VMM reports
//! ([`emu_core::exit::InterruptPoll::next_poll_at`]), and the timer "kicks" the vCPU.
//!
//! The kick is Firecracker's: a real-time signal sent to the thread that runs the vCPU,
//! whose handler sets `immediate_exit` in that vCPU's `kvm_run` structure. A signal that
//! arrives while the thread is inside KVM_RUN makes KVM_RUN return EINTR (the handler is
//! installed without `SA_RESTART`, and KVM_RUN is never restarted anyway); one that arrives
//! between the engine's last look at the clock and the next KVM_RUN leaves
//! `immediate_exit` set, so that KVM_RUN returns EINTR at once instead of running the
//! guest past the deadline. Either way no tick is lost, and the engine clears the flag
//! and goes back to polling the interrupt controller.
//!
//! A [`StopRequest`](emu_core::stop::StopRequest) (Ctrl-C, the control plane) kicks the
//! vCPU the same way, from another thread: [`Kicker::kick_this_thread`] is the kick the
//! engine installs in it while it runs.
//!
//! The signal comes from a POSIX timer (`timer_create`) aimed at this very thread
//! (`SIGEV_THREAD_ID`), so other threads of the process never see it; it is armed
//! one-shot, only when the deadline changes.

use emu_core::stop::Kick;
use std::cell::Cell;
use std::io;
use std::ptr;
use std::sync::Once;
use std::time::{Duration, Instant};

thread_local! {
    /// The `immediate_exit` byte of the vCPU this thread is running, null when none. The
    /// signal handler writes through it; const-initialized and without a destructor, so
    /// reading it from a signal handler neither allocates nor registers anything.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

/// The signal that kicks a vCPU: the first real-time signal the C library leaves to
/// applications, as Firecracker uses.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_signal: libc::c_int) {
    let flag = IMMEDIATE_EXIT.with(Cell::get);
    if !flag.is_null() {
        // SAFETY: a non-null IMMEDIATE_EXIT points into the kvm_run mapping of the vCPU
        // this thread is running: a `Kicker` sets it and clears it again before that vCPU
        // (and the mapping) can go away, and only this thread reads it. A volatile byte
        // store is what the interrupted code may safely observe at any point.
        unsafe { ptr::write_volatile(flag, 1) };
    }
}

/// Installs [`on_kick`] once per process.
fn install_handler() -> io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        // SAFETY: sigaction is plain data; all-zero is a valid value (no flags, empty
        // mask), completed below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // No SA_RESTART: a system call the kick interrupts returns EINTR.
        action.sa_flags = 0;
        // SAFETY: `action` is a valid sigaction with an async-signal-safe handler (it
        // only reads a thread-local pointer and stores one byte), and the signal is one
        // no other part of Popek uses.
        if unsafe { libc::sigaction(kick_signal(), &action, ptr::null_mut()) } != 0 {
            result = Err(io::Error::last_os_error());
        }
    });
    result
}

/// Unblocks the kick signal in this thread, in case the thread was created with it
/// blocked.
fn unblock_signal() -> io::Result<()> {
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t; the signal number is valid.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, kick_signal());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, ptr::null_mut())
    };
    match rc {
        0 => Ok(()),
        err => Err(io::Error::from_raw_os_error(err)),
    }
}

/// The shortest timer period: a zero `it_value` would disarm the timer instead of
/// firing it at once.
const MIN_DELAY: Duration = Duration::from_nanos(1);

/// A one-shot host timer that kicks this thread's vCPU out of KVM_RUN.
///
/// It must live on the thread that runs the vCPU, and not outlive the vCPU whose
/// `immediate_exit` it was given: the engine keeps it for one `run` call.
pub(crate) struct Kicker {
    timer: libc::timer_t,
    /// The deadline the timer is armed for, if any.
    armed: Option<Instant>,
}

impl Kicker {
    /// A disarmed timer for the vCPU whose `kvm_run.immediate_exit` is at
    /// `immediate_exit`, kicking the calling thread.
    pub(crate) fn new(immediate_exit: *mut u8) -> io::Result<Kicker> {
        install_handler()?;
        unblock_signal()?;
        // SAFETY: sigevent is plain data; all-zero is valid, completed below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = kick_signal();
        // SAFETY: gettid has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = ptr::null_mut();
        // SAFETY: `event` is a valid sigevent naming a live thread (this one) and
        // `timer` a valid place for the new timer's id.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) } != 0 {
            return Err(io::Error::last_os_error());
        }
        IMMEDIATE_EXIT.with(|flag| flag.set(immediate_exit));
        Ok(Kicker { timer, armed: None })
    }

    /// Makes the timer fire at `deadline` (host time, [`Instant`] being CLOCK_MONOTONIC as
    /// the timer is), or not at all for `None`. Re-arms only when the deadline changed
    /// or has passed (a timer that fired is spent).
    pub(crate) fn arm(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let now = Instant::now();
        if deadline == self.armed && deadline.is_none_or(|d| d > now) {
            return Ok(());
        }
        let delay = deadline.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(now).max(MIN_DELAY)
        });
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: delay.as_secs() as libc::time_t,
                tv_nsec: delay.subsec_nanos().into(),
            },
        };
        // SAFETY: `self.timer` is a live timer created by `new`; `spec` is valid and
        // the old value is not asked for.
        if unsafe { libc::timer_settime(self.timer, 0, &spec, ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = deadline;
        Ok(())
    }
}

impl Kicker {
    /// A kick, for a stop request, that sends the kick signal to the calling thread (the
    /// one running the vCPU). The engine must remove it (drop its
    /// [`KickGuard`](emu_core::stop::KickGuard)) before this kicker and before the thread's
    /// run ends.
    pub(crate) fn kick_this_thread(&self) -> Kick {
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        Box::new(move || {
            // SAFETY: `thread` is the vCPU thread, which runs the engine as long as the kick
            // is installed: the engine removes it before its run returns, and removing it
            // waits for a kick in progress. The handler for the signal is installed (by
            // `Kicker::new`) and only touches this thread's vCPU.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        })
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        // SAFETY: `self.timer` is a live timer created by `new`, deleted only here;
        // a signal it already queued still finds the handler, which no longer writes.
        unsafe { libc::timer_delete(self.timer) };
        IMMEDIATE_EXIT.with(|flag| flag.set(ptr::null_mut()));
    }
}

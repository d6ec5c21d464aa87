//! Asking a running machine to stop from outside: Ctrl-C, a failed output, later the
//! control plane's "pause" from another thread.
//!
//! A [`StopRequest`] is a flag any thread may raise. The engine running the guest looks
//! at it at instruction boundaries (the interpreter when it polls for interrupts, at least
//! every [`POLL_INTERVAL`] instructions; KVM before every entry) and the run that honours
//! it takes the flag down again and ends with
//! [`StopReason::Paused`](crate::exit::StopReason::Paused). An engine that can sit where
//! it would not look for a long time (KVM inside KVM_RUN) installs a *kick* while it
//! runs: [`StopRequest::request`] calls it to get the engine out. A halted processor that
//! waits in real time for its next timer tick waits with [`StopRequest::sleep`], which a
//! request cuts short.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// At most this many instructions run between two looks at the stop request under the
/// interpreter: well under a millisecond at its speed, and one poll in 65,536
/// instructions costs nothing measurable.
pub const POLL_INTERVAL: u64 = 1 << 16;

/// What gets a running engine out to look at the request (KVM: a signal to the vCPU
/// thread, which makes KVM_RUN return).
pub type Kick = Box<dyn Fn() + Send + Sync>;

/// A request, from any thread, that the machine stop at the next instruction boundary.
/// Shared as an `Arc`; see the module documentation.
#[derive(Default)]
pub struct StopRequest {
    requested: AtomicBool,
    /// The kick of the engine now running, if it needs one. Requests and sleepers
    /// synchronize on this lock, so a sleeper cannot miss a request.
    kick: Mutex<Option<Kick>>,
    /// Wakes [`StopRequest::sleep`].
    wake: Condvar,
}

impl std::fmt::Debug for StopRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopRequest")
            .field("requested", &self.is_requested())
            .finish_non_exhaustive()
    }
}

impl StopRequest {
    /// No request raised, no kick installed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the machine to stop: raises the flag, kicks the running engine if it
    /// installed a kick, and wakes a halted processor's wait. Safe to call from any
    /// thread, any number of times (the requests merge until a run takes them).
    pub fn request(&self) {
        let kick = self.lock();
        self.requested.store(true, Ordering::SeqCst);
        if let Some(kick) = kick.as_ref() {
            kick();
        }
        drop(kick);
        self.wake.notify_all();
    }

    /// Whether a request waits to be taken.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Takes the request: true (and the flag is down again) if one was waiting. The
    /// engine calls this where it can stop, and stops if it returns true.
    #[inline]
    pub fn take(&self) -> bool {
        // A load first: the common case (no request) writes nothing.
        self.requested.load(Ordering::Relaxed) && self.requested.swap(false, Ordering::SeqCst)
    }

    /// Installs the kick of the engine that starts running; it stays until the guard is
    /// dropped, when the engine stops running. A request raised before the kick was
    /// installed is not kicked for: the engine looks at the flag after installing it.
    pub fn install_kick(&self, kick: Kick) -> KickGuard<'_> {
        *self.lock() = Some(kick);
        KickGuard { stop: self }
    }

    /// Sleeps for `duration`, or less if a request is raised meanwhile (or was before).
    /// Returns whether one is waiting; it is not taken.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now().checked_add(duration);
        let mut guard = self.lock();
        loop {
            if self.is_requested() {
                return true;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return false;
            }
            guard = self
                .wake
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Kick>> {
        // A kick that panicked leaves nothing half-done behind: the lock stays usable.
        self.kick.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps an engine's kick installed; dropping it removes the kick, after which a
/// request no longer calls it.
#[must_use = "the kick is removed when the guard is dropped"]
pub struct KickGuard<'a> {
    stop: &'a StopRequest,
}

impl Drop for KickGuard<'_> {
    fn drop(&mut self) {
        *self.stop.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn a_request_is_taken_once() {
        let stop = StopRequest::new();
        assert!(!stop.take());
        stop.request();
        stop.request();
        assert!(stop.is_requested());
        assert!(stop.take());
        assert!(!stop.take());
        assert!(!stop.is_requested());
    }

    #[test]
    fn the_kick_is_called_only_while_installed() {
        let stop = StopRequest::new();
        let kicks = Arc::new(AtomicUsize::new(0));
        {
            let kicks = kicks.clone();
            let _guard = stop.install_kick(Box::new(move || {
                kicks.fetch_add(1, Ordering::SeqCst);
            }));
            stop.request();
        }
        stop.request();
        assert_eq!(kicks.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_request_from_another_thread_cuts_a_sleep_short() {
        let stop = Arc::new(StopRequest::new());
        let requester = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                stop.request();
            })
        };
        let start = Instant::now();
        assert!(stop.sleep(Duration::from_secs(60)));
        assert!(start.elapsed() < Duration::from_secs(30));
        requester.join().unwrap();
        // Not taken by the sleep: the run that stops takes it.
        assert!(stop.take());
        // With nothing requested, a sleep lasts its time.
        let start = Instant::now();
        assert!(!stop.sleep(Duration::from_millis(10)));
        assert!(start.elapsed() >= Duration::from_millis(10));
    }
}

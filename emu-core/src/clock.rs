//! Virtual time: how the devices see time pass.
//!
//! Under the interpreter, time is a function of the instructions retired — a virtual
//! processor of [`Clock::NS_PER_INSTRUCTION`] nanoseconds an instruction — so a run is
//! reproducible and a slow host does not see more timer interrupts per instruction than
//! a fast one. A halted processor skips ahead to the next timer event, so waiting costs
//! nothing. Under engines that cannot count instructions (KVM), time is host time.
//!
//! # State
//! What a snapshot saves of the clock is the virtual time it shows ([`ClockState`]): its
//! source (an instruction count or a host instant) belongs to the engine running, so a
//! restore continues that time from the new engine's count, exactly as [`Clock::rebase`]
//! does when the engine changes.

use crate::stop::StopRequest;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Where time comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The instruction count, counted from `icount_base`.
    Instructions { icount_base: u64 },
    /// The host's monotonic clock, counted from `since`.
    Host { since: Instant },
}

/// The virtual clock's state: everything a snapshot saves of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockState {
    /// Virtual time when the state was taken, in nanoseconds since machine start.
    pub now_ns: u64,
}

/// The machine's virtual clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    source: Source,
    /// Virtual time at the source's base, plus time skipped while halted.
    base_ns: u64,
}

impl Clock {
    /// Virtual nanoseconds per instruction under the interpreter: a 100-MIPS processor.
    pub const NS_PER_INSTRUCTION: u64 = 10;

    /// A clock at time zero, counting instructions or host time.
    pub fn new(counts_instructions: bool) -> Self {
        Clock {
            source: Self::source(counts_instructions, 0),
            base_ns: 0,
        }
    }

    /// A clock showing `state`'s time now, counting on from instruction count `icount`
    /// (the engine's, as restored) or from host time now.
    pub fn from_state(state: &ClockState, counts_instructions: bool, icount: u64) -> Self {
        Clock {
            source: Self::source(counts_instructions, icount),
            base_ns: state.now_ns,
        }
    }

    /// The clock's state when the engine's instruction count is `icount`.
    pub fn state(&self, icount: u64) -> ClockState {
        ClockState {
            now_ns: self.now_ns(icount),
        }
    }

    /// Puts the clock in `state`, counting on from instruction count `icount` under
    /// the same kind of source (instructions or host time).
    pub fn restore(&mut self, state: &ClockState, icount: u64) {
        let counts_instructions = matches!(self.source, Source::Instructions { .. });
        *self = Self::from_state(state, counts_instructions, icount);
    }

    fn source(counts_instructions: bool, icount: u64) -> Source {
        if counts_instructions {
            Source::Instructions {
                icount_base: icount,
            }
        } else {
            Source::Host {
                since: Instant::now(),
            }
        }
    }

    /// Virtual time now, given the engine's instruction count.
    pub fn now_ns(&self, icount: u64) -> u64 {
        let run = match self.source {
            Source::Instructions { icount_base } => icount
                .saturating_sub(icount_base)
                .saturating_mul(Self::NS_PER_INSTRUCTION),
            Source::Host { since } => since.elapsed().as_nanos() as u64,
        };
        self.base_ns.saturating_add(run)
    }

    /// The instruction count at which virtual time reaches `ns` (instruction clocks
    /// only; a host clock has no such count).
    pub fn icount_at(&self, ns: u64) -> Option<u64> {
        match self.source {
            Source::Instructions { icount_base } => {
                let run = ns.saturating_sub(self.base_ns);
                Some(icount_base.saturating_add(run.div_ceil(Self::NS_PER_INSTRUCTION)))
            }
            Source::Host { .. } => None,
        }
    }

    /// The host time at which virtual time reaches `ns` (host clocks only; an
    /// instruction clock reaches it at [`Clock::icount_at`] instead).
    pub fn host_instant_at(&self, ns: u64) -> Option<Instant> {
        match self.source {
            Source::Instructions { .. } => None,
            Source::Host { since } => {
                Some(since + Duration::from_nanos(ns.saturating_sub(self.base_ns)))
            }
        }
    }

    /// Lets a halted processor's time run on to `ns`: skipped instantly under an
    /// instruction clock, slept through under the host clock unless `stop` is requested
    /// meanwhile. False if the wait was cut short.
    pub fn wait_until(&mut self, ns: u64, icount: u64, stop: &StopRequest) -> bool {
        let now = self.now_ns(icount);
        if ns <= now {
            return true;
        }
        match self.source {
            Source::Instructions { .. } => {
                self.base_ns += ns - now;
                true
            }
            Source::Host { .. } => !stop.sleep(Duration::from_nanos(ns - now)),
        }
    }

    /// Continues the same virtual time under a new engine whose instruction count is
    /// `icount` now.
    pub fn rebase(&mut self, old_icount: u64, counts_instructions: bool, icount: u64) {
        *self = Self::from_state(&self.state(old_icount), counts_instructions, icount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_time_runs_with_the_count_and_skips_halts() {
        let mut c = Clock::new(true);
        assert_eq!(c.now_ns(100), 1000);
        assert_eq!(c.icount_at(1000), Some(100));
        assert!(c.wait_until(5000, 100, &StopRequest::new()));
        assert_eq!(c.now_ns(100), 5000);
        assert_eq!(c.icount_at(6000), Some(200));
    }

    #[test]
    fn host_time_deadlines_are_host_instants() {
        let c = Clock::new(false);
        assert_eq!(c.icount_at(1000), None);
        let at = c.host_instant_at(c.now_ns(0) + 1_000_000).unwrap();
        let ahead = at.saturating_duration_since(Instant::now());
        assert!(ahead > Duration::ZERO && ahead <= Duration::from_millis(1));
        assert_eq!(Clock::new(true).host_instant_at(1000), None);
    }

    /// `state` after a trip through a snapshot format (JSON), as a restore would get it.
    fn through_json(state: &ClockState) -> ClockState {
        serde_json::from_str(&serde_json::to_string(state).unwrap()).unwrap()
    }

    #[test]
    fn a_restored_instruction_clock_runs_on_exactly() {
        let mut original = Clock::new(true);
        original.wait_until(12_345, 700, &StopRequest::new());
        let at = 1_000;
        let state = through_json(&original.state(at));
        assert_eq!(state.now_ns, 12_345 + 300 * Clock::NS_PER_INSTRUCTION);

        // A fresh engine counts from 0; one restored with the count keeps it.
        for icount in [0, at, 5_000_000] {
            let mut restored = Clock::from_state(&state, true, icount);
            let mut resumed = Clock::new(false);
            resumed.restore(&state, icount);
            let mut twin = original;
            for step in [0, 1, 17, 1_000_000] {
                assert_eq!(restored.now_ns(icount + step), twin.now_ns(at + step));
            }
            for deadline in [state.now_ns + 1, state.now_ns + 95, state.now_ns + 10_000] {
                assert_eq!(
                    restored.icount_at(deadline).map(|n| n - icount),
                    twin.icount_at(deadline).map(|n| n - at)
                );
            }
            // A halt skips the same stretch in both.
            restored.wait_until(state.now_ns + 50_000, icount + 10, &StopRequest::new());
            twin.wait_until(state.now_ns + 50_000, at + 10, &StopRequest::new());
            assert_eq!(restored.now_ns(icount + 11), twin.now_ns(at + 11));
            assert_eq!(restored.state(icount + 11), twin.state(at + 11));
            assert!(
                resumed.host_instant_at(0).is_some(),
                "restore keeps the source"
            );
        }
    }

    #[test]
    fn a_restored_host_clock_continues_from_the_saved_time() {
        let state = ClockState {
            now_ns: 3_000_000_000,
        };
        let clock = Clock::from_state(&state, false, 0);
        let now = clock.now_ns(0);
        assert!((state.now_ns..state.now_ns + 1_000_000_000).contains(&now));
        assert_eq!(clock.icount_at(now + 1), None);
    }

    #[test]
    fn rebasing_keeps_time_continuous() {
        let mut c = Clock::new(true);
        c.rebase(300, true, 0);
        assert_eq!(c.now_ns(0), 3000);
        assert_eq!(c.now_ns(1), 3010);
    }
}

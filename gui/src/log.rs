//! What the window keeps of the machine's event trace: a bounded log of recent events,
//! and the counter samples behind the rate plot.

use emu_core::trace::{Counters, Event, EventKind, EventMask};
use std::collections::VecDeque;

/// The kinds of events the trap log can filter on (the names `popek run --trace` takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Port I/O: an exit to the VMM.
    Io,
    /// MMIO: an exit to the VMM.
    Mmio,
    /// An exception delivered to the guest.
    Exception,
    /// A hardware interrupt delivered to the guest.
    Interrupt,
    /// A change of CPL.
    Ring,
    /// Any other exit (HLT, shutdown, and the VT-x model's CPUID, MSR, CR exits).
    Exit,
    /// The engine's own work: blocks translated, translations dropped, shadow-paging
    /// faults, sensitive instructions under ring compression.
    Engine,
}

impl Kind {
    /// Every kind, in the order the filters show them.
    pub const ALL: [Kind; 7] = [
        Kind::Ring,
        Kind::Exception,
        Kind::Interrupt,
        Kind::Io,
        Kind::Mmio,
        Kind::Exit,
        Kind::Engine,
    ];

    /// The trace's kind it stands for.
    pub fn mask(self) -> EventMask {
        match self {
            Kind::Io => EventMask::IO,
            Kind::Mmio => EventMask::MMIO,
            Kind::Exception => EventMask::EXCEPTIONS,
            Kind::Interrupt => EventMask::INTERRUPTS,
            Kind::Ring => EventMask::RINGS,
            Kind::Exit => EventMask::EXITS,
            Kind::Engine => EventMask::ENGINE,
        }
    }

    /// The kind of `event`: the trace files every event under one kind
    /// ([`EventKind::mask`]), and each kind here stands for one of them.
    pub fn of(event: &EventKind) -> Kind {
        let mask = event.mask();
        Kind::ALL
            .into_iter()
            .find(|k| k.mask() == mask)
            .expect("every trace kind has a filter")
    }

    /// Its name, as `--trace` spells it.
    pub fn name(self) -> &'static str {
        EventMask::NAMES
            .into_iter()
            .find_map(|(name, mask)| (mask == self.mask()).then_some(name))
            .expect("every trace kind has a name")
    }

    /// Whether the VMM (Popek's device models) handles it, rather than the guest.
    pub fn enters_vmm(self) -> bool {
        matches!(self, Kind::Io | Kind::Mmio | Kind::Exit)
    }

    /// One sentence on what happens there and what it costs.
    pub fn explanation(self) -> &'static str {
        match self {
            Kind::Io => "IN/OUT to a port: the guest stops and the VMM's device model answers; under hardware assist a VM exit and entry, about a microsecond each way",
            Kind::Mmio => "A load or store to device memory: no RAM backs it, so the access leaves the guest and the VMM decodes and emulates it",
            Kind::Exception => "The guest's own fault or trap (#PF, #GP, INT n ...) delivered through its IDT: the guest kernel handles it, no VMM work",
            Kind::Interrupt => "A device (the timer, the UART) raised a line at the PIC and the processor took it through the IDT",
            Kind::Ring => "The privilege level changed (an INT, IRET, SYSENTER or fault crossing rings): the heart of the kernel/user split",
            Kind::Engine => "The engine's own work, unseen by the guest: the translator making host code from a block or dropping it all, shadow paging filling an entry (hidden fault), reflecting a true #PF or following a page-table write (trace fault), and under --virt the VMM trapping or calling out a sensitive instruction",
            Kind::Exit => "Another exit to the VMM: HLT, a triple fault, a para-virtualized guest's hypercall, or under the VT-x model a CPUID, MSR or control-register access",
        }
    }
}

/// An event and the order it arrived in.
#[derive(Debug, Clone)]
pub struct Logged {
    /// Arrival number, from 0: the x axis of the timeline for engines that cannot count
    /// instructions.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// The latest events, at most [`EventLog::CAPACITY`].
#[derive(Debug, Default)]
pub struct EventLog {
    entries: VecDeque<Logged>,
    next: u64,
}

impl EventLog {
    /// Events kept; older ones fall out (the counters keep counting them).
    pub const CAPACITY: usize = 20_000;

    /// Appends `event`.
    pub fn push(&mut self, event: Event) {
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(Logged {
            seq: self.next,
            event,
        });
        self.next += 1;
    }

    /// The events kept, oldest first.
    pub fn entries(&self) -> &VecDeque<Logged> {
        &self.entries
    }

    /// Events ever logged, those that fell out included.
    pub fn total(&self) -> u64 {
        self.next
    }
}

/// The counters at one moment: a point of the rate plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the machine was booted.
    pub time: f64,
    /// Instructions retired.
    pub instructions: u64,
    /// Exits to the VMM, all reasons.
    pub exits: u64,
    /// Ring transitions.
    pub rings: u64,
    /// Exceptions delivered.
    pub exceptions: u64,
    /// Hardware interrupts delivered.
    pub interrupts: u64,
}

impl Sample {
    /// The counters `counters` and `instructions` at `time`.
    pub fn new(time: f64, instructions: u64, counters: &Counters) -> Sample {
        Sample {
            time,
            instructions,
            exits: counters.total_exits(),
            rings: counters.ring_transitions.values().sum(),
            exceptions: counters.exceptions.values().sum(),
            interrupts: counters.interrupts.values().sum(),
        }
    }
}

/// Samples of the last minutes, for rates.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Samples kept: a few minutes at the worker's 30 a second.
    pub const CAPACITY: usize = 6_000;

    /// Adds `sample`, unless nothing changed since the last one.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.back().is_some_and(|last| {
            (last.instructions, last.exits, last.rings)
                == (sample.instructions, sample.exits, sample.rings)
        }) {
            return;
        }
        if self.samples.len() == Self::CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> &VecDeque<Sample> {
        &self.samples
    }

    /// Per-second rates of `what` between consecutive samples, as plot points (time,
    /// rate).
    pub fn rates(&self, what: impl Fn(&Sample) -> u64) -> Vec<[f64; 2]> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .filter(|(a, b)| b.time > a.time)
            .map(|(a, b)| {
                let delta = what(b).saturating_sub(what(a)) as f64;
                [b.time, delta / (b.time - a.time)]
            })
            .collect()
    }

    /// The latest rate of `what` over about the last second.
    pub fn recent_rate(&self, what: impl Fn(&Sample) -> u64) -> Option<f64> {
        let last = self.samples.back()?;
        let first = self
            .samples
            .iter()
            .rev()
            .find(|s| last.time - s.time >= 1.0)
            .or(self.samples.front())?;
        (last.time > first.time)
            .then(|| what(last).saturating_sub(what(first)) as f64 / (last.time - first.time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trace_kind_has_one_filter_with_its_trace_name() {
        for (name, mask) in EventMask::NAMES {
            let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.mask() == mask).collect();
            assert_eq!(kinds.len(), 1, "{name}");
            assert_eq!(kinds[0].name(), name);
        }
        assert_eq!(Kind::ALL.len(), EventMask::NAMES.len());
    }
}

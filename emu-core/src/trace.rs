//! The event trace and the counters: what the GUI, the labs and the benchmarks read.
//!
//! Counters are always on and cost an array increment. The event stream is a bounded
//! ring buffer behind a mask: engines test the mask before building an event, so a trace
//! nobody watches costs one branch.

use crate::exit::{EngineEvent, ExitReason, GuestEvent};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Which kinds of events are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventMask(u32);

impl EventMask {
    /// Nothing (the default): tracing costs nothing.
    pub const NONE: EventMask = EventMask(0);
    /// Port I/O accesses.
    pub const IO: EventMask = EventMask(1 << 0);
    /// MMIO accesses.
    pub const MMIO: EventMask = EventMask(1 << 1);
    /// Exceptions.
    pub const EXCEPTIONS: EventMask = EventMask(1 << 2);
    /// Every other exit (HLT, shutdown, unsupported instruction, and under hardware
    /// assist CPUID, MSR, control-register and external-interrupt exits).
    pub const EXITS: EventMask = EventMask(1 << 3);
    /// Privilege-level changes.
    pub const RINGS: EventMask = EventMask(1 << 4);
    /// Hardware interrupts.
    pub const INTERRUPTS: EventMask = EventMask(1 << 5);
    /// What a software engine did on its own account: blocks translated, translations
    /// dropped, shadow-paging faults, sensitive instructions under ring compression.
    pub const ENGINE: EventMask = EventMask(1 << 6);
    /// Every kind.
    pub const ALL: EventMask = EventMask(0x7F);

    /// The names `--trace` accepts, with their masks.
    pub const NAMES: [(&'static str, EventMask); 7] = [
        ("io", EventMask::IO),
        ("mmio", EventMask::MMIO),
        ("exceptions", EventMask::EXCEPTIONS),
        ("interrupts", EventMask::INTERRUPTS),
        ("rings", EventMask::RINGS),
        ("exits", EventMask::EXITS),
        ("engine", EventMask::ENGINE),
    ];

    /// Parses a comma-separated list such as "io,exceptions" (or "all").
    pub fn parse(list: &str) -> Result<EventMask, String> {
        let mut mask = EventMask::NONE;
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                mask = EventMask::ALL;
                continue;
            }
            match Self::NAMES.iter().find(|(n, _)| *n == word) {
                Some((_, m)) => mask = mask.union(*m),
                None => {
                    let known: Vec<_> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                    return Err(format!(
                        "unknown trace kind `{word}` (known: {}, all)",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(mask)
    }

    /// Both masks' kinds.
    pub const fn union(self, other: EventMask) -> EventMask {
        EventMask(self.0 | other.0)
    }

    /// Whether any kind of `other` is in `self`.
    pub const fn contains(self, other: EventMask) -> bool {
        self.0 & other.0 != 0
    }
}

/// One thing that happened in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A port access.
    Io {
        /// Port.
        port: u16,
        /// OUT (true) or IN (false).
        write: bool,
        /// The value (little-endian bytes of the access).
        value: u32,
        /// Access width in bytes.
        size: u8,
    },
    /// An MMIO access.
    Mmio {
        /// Guest-physical address.
        addr: u64,
        /// Store (true) or load (false).
        write: bool,
        /// The value.
        value: u64,
        /// Access width in bytes.
        size: u8,
    },
    /// Something the guest did without an exit, as the engine reported it: an
    /// exception or a hardware interrupt delivered, a change of privilege level.
    Guest(GuestEvent),
    /// Any other exit.
    Exit(ExitReason),
    /// A hypercall, with its number and the result it returned in EAX.
    Hypercall {
        /// EAX on entry.
        nr: u32,
        /// EAX on return (negative: an error).
        result: u32,
    },
    /// An access to an MSR the VMM implements (the hypercall-page MSR), or that the
    /// engine handed to it (KVM: every MSR it does not know).
    VmmMsr {
        /// WRMSR (true) or RDMSR (false).
        write: bool,
        /// The MSR.
        index: u32,
        /// The value written or read.
        value: u64,
        /// Whether it succeeded (else #GP).
        ok: bool,
    },
    /// What the engine did on its own account (the translator, shadow paging).
    Engine(EngineEvent),
}

impl EventKind {
    /// The kind of events (as `--trace` names them) this one is recorded under.
    pub fn mask(&self) -> EventMask {
        match self {
            EventKind::Io { .. } => EventMask::IO,
            EventKind::Mmio { .. } => EventMask::MMIO,
            EventKind::Guest(GuestEvent::Exception { .. }) => EventMask::EXCEPTIONS,
            EventKind::Guest(GuestEvent::Interrupt { .. }) => EventMask::INTERRUPTS,
            EventKind::Guest(GuestEvent::RingTransition { .. }) => EventMask::RINGS,
            // A hypercall and the PV MSR are exits the guest asked for.
            EventKind::Exit(_) | EventKind::Hypercall { .. } | EventKind::VmmMsr { .. } => {
                EventMask::EXITS
            }
            EventKind::Engine(_) => EventMask::ENGINE,
        }
    }
}

/// An event with the instruction count at which it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Instructions retired before the event (where the engine counts them).
    pub icount: u64,
    /// What happened.
    pub kind: EventKind,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:>12}] ", self.icount)?;
        match &self.kind {
            EventKind::Io {
                port,
                write: true,
                value,
                size,
            } => {
                write!(f, "out port {port:#06x} <- {value:#x} ({size} bytes)")
            }
            EventKind::Io {
                port,
                write: false,
                value,
                size,
            } => {
                write!(f, "in  port {port:#06x} -> {value:#x} ({size} bytes)")
            }
            EventKind::Mmio {
                addr,
                write,
                value,
                size,
            } => {
                let dir = if *write { "store" } else { "load " };
                write!(f, "mmio {dir} {addr:#x} {value:#x} ({size} bytes)")
            }
            EventKind::Guest(GuestEvent::Exception {
                vector,
                error_code,
                rip,
            }) => {
                let e = crate::exception::Exception {
                    vector: *vector,
                    error_code: *error_code,
                };
                write!(f, "exception {e} at rip {rip:#x}")
            }
            EventKind::Guest(GuestEvent::Interrupt { vector, rip }) => {
                write!(f, "interrupt vector {vector:#04x} at rip {rip:#x}")
            }
            EventKind::Guest(GuestEvent::RingTransition { from, to, cause }) => {
                write!(f, "ring {from} -> {to}: {cause}")
            }
            // The VT-x number says which hardware exit this is, whichever engine saw it.
            EventKind::Exit(reason) => match reason.vmx_basic_reason() {
                Some(n) => write!(f, "vm-exit {} (VT-x reason {n})", reason.name()),
                None => write!(f, "exit {}", reason.name()),
            },
            EventKind::Hypercall { nr, result } => write!(
                f,
                "vm-exit hypercall {} ({nr}) -> {} (VT-x reason {})",
                crate::pv::abi::name(*nr),
                *result as i32,
                crate::exit::vmx_reason::VMCALL
            ),
            EventKind::VmmMsr {
                write,
                index,
                value,
                ok,
            } => {
                let (what, reason) = if *write {
                    ("wrmsr", crate::exit::vmx_reason::WRMSR)
                } else {
                    ("rdmsr", crate::exit::vmx_reason::RDMSR)
                };
                let fault = if *ok { "" } else { ", #GP" };
                write!(
                    f,
                    "vm-exit {what} msr {index:#x} value {value:#x}{fault} (VT-x reason {reason})"
                )
            }
            EventKind::Engine(event) => write!(f, "{event}"),
        }
    }
}

/// A callback that sees every recorded event as it happens (`popek run --trace`).
pub type EventSink = Box<dyn FnMut(&Event) + Send>;

/// The bounded event ring buffer.
pub struct Trace {
    mask: EventMask,
    events: VecDeque<Event>,
    capacity: usize,
    dropped: u64,
    sink: Option<EventSink>,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("mask", &self.mask)
            .field("len", &self.events.len())
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Trace {
    /// Default number of events kept.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A trace that records nothing until given a mask.
    pub fn new(capacity: usize) -> Self {
        Trace {
            mask: EventMask::NONE,
            events: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
            sink: None,
        }
    }

    /// Chooses what to record.
    pub fn set_mask(&mut self, mask: EventMask) {
        self.mask = mask;
    }

    /// What is recorded.
    pub fn mask(&self) -> EventMask {
        self.mask
    }

    /// Also hands every recorded event to `sink` as it happens.
    pub fn set_sink(&mut self, sink: Option<EventSink>) {
        self.sink = sink;
    }

    /// Records an event of kind `kind` if the mask wants it; `make` runs only then.
    #[inline]
    pub fn record(&mut self, kind: EventMask, make: impl FnOnce() -> Event) {
        if self.mask.contains(kind) {
            self.push(make());
        }
    }

    fn push(&mut self, event: Event) {
        if let Some(sink) = &mut self.sink {
            sink(&event);
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
    }

    /// The events kept, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Events that fell out of the ring buffer.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Reads and writes of one port or MMIO address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessCount {
    /// Loads / INs.
    pub reads: u64,
    /// Stores / OUTs.
    pub writes: u64,
}

impl AccessCount {
    /// Counts one access.
    pub fn add(&mut self, write: bool) {
        if write {
            self.writes += 1;
        } else {
            self.reads += 1;
        }
    }

    /// Both counts of `other` added to these.
    pub fn merge(&mut self, other: AccessCount) {
        self.reads += other.reads;
        self.writes += other.writes;
    }

    /// Reads and writes.
    pub fn total(&self) -> u64 {
        self.reads + self.writes
    }
}

/// Access counts by MMIO address, for at most [`AddressCounts::CAPACITY`] distinct
/// addresses (the first the guest touches); accesses to any other address are counted
/// together ([`AddressCounts::others`]). The guest chooses the addresses, so without a
/// bound a guest sweeping the address space would grow Popek's memory without end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressCounts {
    by_address: BTreeMap<u64, AccessCount>,
    others: AccessCount,
}

impl AddressCounts {
    /// How many addresses are counted apart: every register of many devices.
    pub const CAPACITY: usize = 1024;

    /// Counts one access at `addr`.
    pub fn add(&mut self, addr: u64, write: bool) {
        let full = self.by_address.len() >= Self::CAPACITY;
        match self.by_address.get_mut(&addr) {
            Some(count) => count.add(write),
            None if full => self.others.add(write),
            None => self.by_address.entry(addr).or_default().add(write),
        }
    }

    /// The accesses at `addr`, if it is counted apart.
    pub fn get(&self, addr: u64) -> Option<AccessCount> {
        self.by_address.get(&addr).copied()
    }

    /// The addresses counted apart, in ascending order, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (u64, AccessCount)> + '_ {
        self.by_address.iter().map(|(&addr, &count)| (addr, count))
    }

    /// Accesses to addresses beyond the first [`AddressCounts::CAPACITY`].
    pub fn others(&self) -> AccessCount {
        self.others
    }
}

/// Counters every engine feeds. Each is bounded whatever the guest does: ports, vectors
/// and rings by their types, MMIO addresses by [`AddressCounts::CAPACITY`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Exits by reason, indexed like [`ExitReason::ALL`].
    pub exits: [u64; ExitReason::COUNT],
    /// Port accesses by port.
    pub ports: BTreeMap<u16, AccessCount>,
    /// MMIO accesses by address.
    pub mmio: AddressCounts,
    /// Exceptions by vector.
    pub exceptions: BTreeMap<u8, u64>,
    /// Hardware interrupts by vector.
    pub interrupts: BTreeMap<u8, u64>,
    /// Privilege-level changes by (from, to).
    pub ring_transitions: BTreeMap<(u8, u8), u64>,
    /// Hypercalls by number, and event callbacks (para-virtualized guests).
    pub pv: crate::pv::PvCounters,
}

impl Counters {
    /// Exits counted under `reason`.
    pub fn exits(&self, reason: ExitReason) -> u64 {
        self.exits[reason as usize]
    }

    /// All exits.
    pub fn total_exits(&self) -> u64 {
        self.exits.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{DropCause, EngineEvent};

    #[test]
    fn engine_events_have_their_own_trace_kind() {
        let kind = EventKind::Engine(EngineEvent::TranslationsDropped {
            cause: DropCause::BufferFull,
        });
        assert_eq!(kind.mask(), EventMask::ENGINE);
        assert_eq!(EventMask::parse("engine"), Ok(EventMask::ENGINE));
        assert!(EventMask::parse("all").unwrap().contains(EventMask::ENGINE));
        assert!(!EventMask::parse("exits,io")
            .unwrap()
            .contains(EventMask::ENGINE));
        let mut trace = Trace::new(8);
        trace.set_mask(EventMask::EXITS);
        trace.record(kind.mask(), || Event {
            icount: 7,
            kind: kind.clone(),
        });
        assert_eq!(trace.events().count(), 0, "not asked for");
        trace.set_mask(EventMask::ENGINE);
        trace.record(kind.mask(), || Event { icount: 7, kind });
        let shown: Vec<String> = trace.events().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["[           7] bt: every translation dropped: the code buffer is full"]
        );
    }

    #[test]
    fn mmio_counts_stay_bounded_and_lose_no_access() {
        let mut counts = AddressCounts::default();
        let sweep = 3 * AddressCounts::CAPACITY as u64;
        for addr in 0..sweep {
            counts.add(0x1000 + addr, addr % 2 == 1);
        }
        // An address counted apart stays counted apart once the table is full.
        counts.add(0x1000, false);
        assert_eq!(counts.iter().count(), AddressCounts::CAPACITY);
        assert_eq!(
            counts.get(0x1000),
            Some(AccessCount {
                reads: 2,
                writes: 0
            })
        );
        assert_eq!(counts.get(0x1000 + sweep - 1), None);
        let apart: u64 = counts.iter().map(|(_, c)| c.total()).sum();
        assert_eq!(apart + counts.others().total(), sweep + 1);
        assert_eq!(
            counts.others().total(),
            sweep - AddressCounts::CAPACITY as u64
        );
    }
}

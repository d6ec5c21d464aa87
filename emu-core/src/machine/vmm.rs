//! The VMM: what every engine's exits reach. It hands port and MMIO accesses to the
//! board's devices, keeps virtual time, counts and traces what the guest does, and stops
//! the run where a client (Ctrl-C, a debugger) asked it to.

use crate::clock::Clock;
use crate::cpu::CpuState;
use crate::exit::{
    DebugStop, EngineEvent, ExitHandler, ExitReason, Flow, GuestEvent, InterruptPoll, StopOn,
    StopReason, VmExit,
};
use crate::memory::{CodeWatch, GuestRam, RamView};
use crate::pv::{GuestMem, HypercallTrap, Pv, PvHost};
use crate::stop::StopRequest;
use crate::trace::{Counters, Event, EventKind, EventMask, Trace};
use devices::{BusError, DeviceRequest, PcDevices, OPEN_BUS};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The VMM: handles every engine's exits with the board's devices, and counts them.
#[derive(Debug)]
pub struct Vmm {
    /// The popek-pc devices.
    pub devices: PcDevices,
    /// Counters every engine feeds.
    pub counters: Counters,
    /// The event trace.
    pub trace: Trace,
    /// Virtual time, as the devices see it.
    pub clock: Clock,
    /// Stops the run from outside (Ctrl-C, the control plane).
    stop: Arc<StopRequest>,
    /// The processor is halted, waiting for an interrupt, since a stop request ended
    /// the run during the wait.
    pub(super) halted: bool,
    /// The guest events and exits a debugger wants the run to stop at.
    pub stop_on: StopOn,
    /// What a para-virtualized guest registered, and the hypercall counters.
    pub pv: Pv,
}

impl Vmm {
    /// A VMM over a fresh board whose COM1 writes to `serial_out`.
    pub fn new(serial_out: Box<dyn Write + Send>) -> Self {
        Vmm {
            devices: PcDevices::new(serial_out),
            counters: Counters::default(),
            trace: Trace::new(Trace::DEFAULT_CAPACITY),
            clock: Clock::new(true),
            stop: Arc::new(StopRequest::new()),
            halted: false,
            stop_on: StopOn::default(),
            pv: Pv::default(),
        }
    }

    /// The stop request runs honour.
    pub fn stop_request(&self) -> Arc<StopRequest> {
        Arc::clone(&self.stop)
    }

    /// Brings the devices to the virtual time of `icount`.
    fn sync_devices(&mut self, icount: u64) -> u64 {
        let now = self.clock.now_ns(icount);
        self.devices.advance_clock(now);
        now
    }

    fn has_interrupt(&self) -> bool {
        self.devices.has_interrupt()
    }

    /// A halted CPU: with interrupts enabled, let time run on to the next interrupt;
    /// with nothing that could ever wake it, stop. A stop request cuts a wait in real
    /// time (under KVM) short: the processor stays halted, and the next run waits on.
    fn wait_for_interrupt(&mut self, interruptible: bool, icount: u64) -> Flow {
        if !interruptible {
            return Flow::Stop(StopReason::Halted);
        }
        self.sync_devices(icount);
        // A timer whose interrupt is masked may tick many times: give up after that
        // many ticks without a deliverable interrupt.
        let mut ticks = 0;
        while ticks < MAX_IDLE_TICKS {
            if self.has_interrupt() {
                return Flow::Continue;
            }
            let Some(next) = self.devices.next_timer_ns() else {
                break;
            };
            if !self.clock.wait_until(next, icount, &self.stop) {
                self.stop.take();
                self.halted = true;
                return Flow::Stop(StopReason::Paused);
            }
            self.sync_devices(icount);
            ticks += 1;
        }
        if self.has_interrupt() {
            Flow::Continue
        } else {
            Flow::Stop(StopReason::HaltedNoInterrupt { timer_ticks: ticks })
        }
    }

    /// Before a run: a processor paused while halted goes on waiting for its interrupt
    /// (the engine's state is past the HLT, as a woken processor's is). The reason the
    /// run ends, if the wait does not end in an interrupt.
    pub(super) fn resume_halt(&mut self, icount: u64) -> Option<StopReason> {
        if !std::mem::take(&mut self.halted) {
            return None;
        }
        match self.wait_for_interrupt(true, icount) {
            Flow::Continue => None,
            Flow::Stop(reason) => Some(reason),
        }
    }

    fn io_event(&mut self, icount: u64, port: u16, write: bool, data: &[u8]) {
        self.counters.ports.entry(port).or_default().add(write);
        self.trace.record(EventMask::IO, || Event {
            icount,
            kind: EventKind::Io {
                port,
                write,
                value: le_value(data) as u32,
                size: data.len() as u8,
            },
        });
    }

    fn mmio_event(&mut self, icount: u64, addr: u64, write: bool, data: &[u8]) {
        self.counters.mmio.add(addr, write);
        self.trace.record(EventMask::MMIO, || Event {
            icount,
            kind: EventKind::Mmio {
                addr,
                write,
                value: le_value(data),
                size: data.len() as u8,
            },
        });
    }
}

/// How many timer ticks a halted CPU waits for a deliverable interrupt before the machine
/// is declared stuck.
const MAX_IDLE_TICKS: u64 = 10_000;

/// Locks a device; a device that panicked while locked is still usable for reading.
fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The little-endian value of up to 8 bytes.
fn le_value(data: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = data.len().min(8);
    buf[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(buf)
}

/// What a device's answer to a write means for the run.
fn write_flow(result: Result<Option<DeviceRequest>, BusError>) -> Flow {
    match result {
        Ok(Some(DeviceRequest::Exit(status))) => Flow::Stop(StopReason::Exited(status)),
        // A write nobody claims goes nowhere, as on a real bus.
        Ok(None) | Err(_) => Flow::Continue,
    }
}

impl ExitHandler for Vmm {
    fn poll_interrupts(&mut self, icount: u64) -> InterruptPoll {
        self.sync_devices(icount);
        // A para-virtualized guest's timer is polled for like the PIT's and the APIC's.
        let next_tick = match (self.devices.next_timer_ns(), self.pv.timer_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        InterruptPoll {
            pending: self.has_interrupt(),
            next_poll: next_tick
                .and_then(|ns| self.clock.icount_at(ns))
                .unwrap_or(u64::MAX),
            next_poll_at: next_tick.and_then(|ns| self.clock.host_instant_at(ns)),
        }
    }

    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        self.devices.acknowledge()
    }

    fn apic_base_written(&mut self, value: u64) {
        self.devices.set_apic_base(value);
    }

    fn paravirtualized(&self) -> bool {
        self.pv.hypercall_page.is_some()
    }

    fn stop_request(&self) -> Option<Arc<StopRequest>> {
        Some(Arc::clone(&self.stop))
    }

    fn upcall_due(&mut self, icount: u64) -> bool {
        self.pv.timer_due(self.clock.now_ns(icount))
    }

    fn upcall(
        &mut self,
        cpu: &mut CpuState,
        ram: RamView<'_>,
        code: &CodeWatch,
        icount: u64,
    ) -> bool {
        let mem = GuestMem::new(cpu, ram, code);
        let now = self.clock.now_ns(icount);
        self.pv.upcall(cpu, &mem, now, &mut self.counters.pv)
    }

    fn notify(&mut self, event: GuestEvent, icount: u64) -> Flow {
        match event {
            GuestEvent::Exception { vector, .. } => {
                *self.counters.exceptions.entry(vector).or_default() += 1;
            }
            GuestEvent::Interrupt { vector, .. } => {
                *self.counters.interrupts.entry(vector).or_default() += 1;
            }
            GuestEvent::RingTransition { from, to, .. } => {
                *self
                    .counters
                    .ring_transitions
                    .entry((from, to))
                    .or_default() += 1;
            }
        }
        let kind = EventKind::Guest(event);
        self.trace.record(kind.mask(), || Event { icount, kind });
        if self.stop_on.matches(&event) {
            Flow::Stop(StopReason::Debug(DebugStop::Event(event)))
        } else {
            Flow::Continue
        }
    }

    fn traces_engine(&self) -> bool {
        self.trace.mask().contains(EventMask::ENGINE)
    }

    fn engine_event(&mut self, event: EngineEvent, icount: u64) {
        let kind = EventKind::Engine(event);
        self.trace
            .record(EventMask::ENGINE, || Event { icount, kind });
    }

    fn handle(&mut self, exit: VmExit<'_>, icount: u64) -> Flow {
        let reason = exit.reason();
        match self.dispatch(exit, icount) {
            Flow::Continue if self.stop_on.exit => {
                Flow::Stop(StopReason::Debug(DebugStop::Exit(reason)))
            }
            flow => flow,
        }
    }
}

impl Vmm {
    /// Counts and traces an exit and hands it to whoever handles it.
    fn dispatch(&mut self, exit: VmExit<'_>, icount: u64) -> Flow {
        let reason = exit.reason();
        self.counters.exits[reason as usize] += 1;
        // Accesses are traced with their data, under their own kinds; every other exit
        // is traced by reason.
        let access = matches!(
            reason,
            ExitReason::IoIn | ExitReason::IoOut | ExitReason::MmioRead | ExitReason::MmioWrite
        ) || matches!(exit, VmExit::Hypercall { .. } | VmExit::VmmMsr { .. });
        if !access {
            self.trace.record(EventMask::EXITS, || Event {
                icount,
                kind: EventKind::Exit(reason),
            });
        }
        match exit {
            VmExit::IoIn { port, data } => {
                self.sync_devices(icount);
                if self.devices.pio.read(port.into(), data).is_err() {
                    data.fill(OPEN_BUS);
                }
                self.io_event(icount, port, false, data);
                Flow::Continue
            }
            VmExit::IoOut { port, data } => {
                self.sync_devices(icount);
                self.io_event(icount, port, true, data);
                write_flow(self.devices.pio.write(port.into(), data))
            }
            VmExit::MmioRead { addr, data } => {
                self.sync_devices(icount);
                if self.devices.mmio.read(addr, data).is_err() {
                    data.fill(OPEN_BUS);
                }
                self.mmio_event(icount, addr, false, data);
                Flow::Continue
            }
            VmExit::MmioWrite { addr, data } => {
                self.sync_devices(icount);
                self.mmio_event(icount, addr, true, data);
                write_flow(self.devices.mmio.write(addr, data))
            }
            VmExit::Hlt { interruptible } => self.wait_for_interrupt(interruptible, icount),
            VmExit::Shutdown { cause } => Flow::Stop(StopReason::Shutdown(cause)),
            VmExit::Unsupported { rip, what } => Flow::Stop(StopReason::Unsupported { rip, what }),
            VmExit::Cpuid {
                leaf,
                subleaf,
                result,
            } => {
                // The VMM emulates CPUID, from the table KVM loads with KVM_SET_CPUID2.
                *result = crate::cpuid::cpuid_indexed(leaf, subleaf);
                Flow::Continue
            }
            // The engine completes these once the VMM returns (see `Assist::Vtx`): the
            // VMM's part is to count and trace them.
            VmExit::Msr { .. } | VmExit::CrAccess { .. } | VmExit::ExternalInterrupt { .. } => {
                Flow::Continue
            }
            VmExit::Hypercall {
                cpu,
                ram,
                code,
                flush_tlb,
            } => {
                let mem = GuestMem::new(cpu, ram, code);
                let mut host = Host {
                    clock: &mut self.clock,
                    devices: &self.devices,
                    stop: &self.stop,
                    icount,
                };
                let nr = cpu.gpr[0] as u32;
                let out = self
                    .pv
                    .hypercall(cpu, &mem, &mut host, &mut self.counters.pv);
                *flush_tlb = out.flush_tlb;
                let result = cpu.gpr[0] as u32;
                self.trace.record(EventMask::EXITS, || Event {
                    icount,
                    kind: EventKind::Hypercall { nr, result },
                });
                match out.shutdown {
                    Some(status) => Flow::Stop(StopReason::Exited(status)),
                    None => Flow::Continue,
                }
            }
            VmExit::VmmMsr {
                write,
                index,
                value,
                ok,
                ram,
                code,
            } => {
                *ok = index == crate::pv::abi::MSR_HYPERCALL_PAGE
                    && self.pv.msr(write, value, ram, code, &mut self.counters.pv);
                let (value, ok) = (*value, *ok);
                self.trace.record(EventMask::EXITS, || Event {
                    icount,
                    kind: EventKind::VmmMsr {
                        write,
                        index,
                        value,
                        ok,
                    },
                });
                Flow::Continue
            }
        }
    }
}

impl Vmm {
    /// The engine changed: the guest's hypercall stubs now trap with `trap`.
    pub fn set_hypercall_trap(&mut self, trap: HypercallTrap, ram: &GuestRam) {
        self.pv
            .set_trap(trap, ram.view(), ram.code(), &mut self.counters.pv);
    }
}

/// What hypercalls need of the VMM: its clock, COM1's output, its stop request.
struct Host<'v> {
    clock: &'v mut Clock,
    devices: &'v PcDevices,
    stop: &'v Arc<StopRequest>,
    icount: u64,
}

impl PvHost for Host<'_> {
    fn now_ns(&self) -> u64 {
        self.clock.now_ns(self.icount)
    }

    fn console(&mut self, bytes: &[u8]) {
        lock(&self.devices.serial).write_console(bytes);
    }

    /// A stop request cuts the wait short and stays pending: the engine ends the run
    /// at the boundary after the hypercall.
    fn wait_until(&mut self, ns: u64) -> bool {
        self.clock.wait_until(ns, self.icount, self.stop)
    }
}

#[cfg(test)]
mod tests;

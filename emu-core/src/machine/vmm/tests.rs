//! `Vmm::handle` fed made-up exits, as an engine would report them: each device's
//! ports, ports and MMIO nobody claims, HLT with and without a way to wake up, triple
//! faults, the debug exit, CPUID, and a debugger's stop at every exit.

use super::*;
use crate::cpu::CpuState;
use crate::exception::Exception;
use devices::{
    SharedBuffer, COM1_BASE, DEBUG_EXIT_BASE, PIC_MASTER_BASE, PIT_BASE, SYSTEM_CONTROL_PORT,
};

/// Where the test board's PIC puts IRQ 0.
const IRQ0_VECTOR: u8 = 0x20;
/// PIT channel 0, low then high byte, mode 2 (rate generator), binary.
const PIT_CHANNEL0_RATE: u8 = 0x34;
/// A PIT count: about 838 µs between timer interrupts.
const PIT_COUNT: u16 = 1000;
/// An I/O port no device of the board decodes.
const NO_DEVICE_PORT: u16 = 0x1234;
/// A guest-physical address with nothing behind it.
const NO_DEVICE_MMIO: u64 = 0xD000_0000;
/// COM1's line status register, and its bit: the transmit holding register is empty.
const COM1_LSR: u16 = COM1_BASE as u16 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Port 0x61 bits the guest sets: timer 2 gate and speaker data.
const TIMER2_GATE_SPEAKER: u8 = 0b11;

/// A VMM tracing everything, and the buffer its COM1 writes to.
fn vmm() -> (Vmm, SharedBuffer) {
    let serial = SharedBuffer::new();
    let mut vmm = Vmm::new(Box::new(serial.clone()));
    vmm.trace.set_mask(EventMask::ALL);
    (vmm, serial)
}

fn out(vmm: &mut Vmm, port: u16, data: &[u8]) -> Flow {
    out_at(vmm, 0, port, data)
}

/// An OUT after `icount` instructions.
fn out_at(vmm: &mut Vmm, icount: u64, port: u16, data: &[u8]) -> Flow {
    vmm.handle(VmExit::IoOut { port, data }, icount)
}

fn inb(vmm: &mut Vmm, port: u16) -> u8 {
    inb_at(vmm, 0, port)
}

/// An IN of a byte after `icount` instructions.
fn inb_at(vmm: &mut Vmm, icount: u64, port: u16) -> u8 {
    let mut data = [0];
    assert_eq!(
        vmm.handle(
            VmExit::IoIn {
                port,
                data: &mut data
            },
            icount
        ),
        Flow::Continue
    );
    data[0]
}

/// Initializes the master PIC (vectors from [`IRQ0_VECTOR`], 8086 mode) with `mask`.
fn init_pic(vmm: &mut Vmm, mask: u8) {
    let (command, data) = (PIC_MASTER_BASE as u16, PIC_MASTER_BASE as u16 + 1);
    out(
        vmm,
        command,
        &[devices::pic::ICW1_INIT | devices::pic::ICW1_IC4],
    );
    out(vmm, data, &[IRQ0_VECTOR]);
    out(vmm, data, &[1 << devices::pic::CASCADE_IRQ]);
    out(vmm, data, &[1]);
    out(vmm, data, &[mask]);
}

/// Starts PIT channel 0 as a periodic timer.
fn start_timer(vmm: &mut Vmm) {
    let control = PIT_BASE as u16 + devices::pit::CONTROL as u16;
    out(vmm, control, &[PIT_CHANNEL0_RATE]);
    let [low, high] = PIT_COUNT.to_le_bytes();
    out(vmm, PIT_BASE as u16, &[low]);
    out(vmm, PIT_BASE as u16, &[high]);
}

#[test]
fn com1_writes_reach_the_serial_output_and_its_status_reads_back() {
    let (mut vmm, serial) = vmm();
    assert_ne!(inb(&mut vmm, COM1_LSR) & LSR_THR_EMPTY, 0);
    for &b in b"hi" {
        assert_eq!(out(&mut vmm, COM1_BASE as u16, &[b]), Flow::Continue);
    }
    assert_eq!(serial.contents(), b"hi");
    let port = vmm.counters.ports[&(COM1_BASE as u16)];
    assert_eq!((port.reads, port.writes), (0, 2));
    assert_eq!(vmm.counters.exits(ExitReason::IoOut), 2);
    assert_eq!(vmm.counters.exits(ExitReason::IoIn), 1);
    let last = vmm.trace.events().last().expect("traced");
    assert!(matches!(
        last.kind,
        EventKind::Io {
            port: 0x3F8,
            write: true,
            value: 0x69,
            size: 1
        }
    ));
}

#[test]
fn the_pic_mask_reads_back() {
    let (mut vmm, _) = vmm();
    init_pic(&mut vmm, 0xFA);
    assert_eq!(inb(&mut vmm, PIC_MASTER_BASE as u16 + 1), 0xFA);
}

#[test]
fn a_latched_pit_count_reads_back_low_then_high() {
    let (mut vmm, _) = vmm();
    start_timer(&mut vmm);
    // The counter latch command for channel 0, 10 µs of virtual time later (about 12
    // input clocks at 1.193182 MHz, the first of which loads the count); reads later
    // still return the latched count.
    let later = 10_000 / Clock::NS_PER_INSTRUCTION;
    out_at(
        &mut vmm,
        later,
        PIT_BASE as u16 + devices::pit::CONTROL as u16,
        &[0],
    );
    let low = inb_at(&mut vmm, 2 * later, PIT_BASE as u16);
    let high = inb_at(&mut vmm, 3 * later, PIT_BASE as u16);
    let count = u16::from_le_bytes([low, high]);
    assert!(
        (PIT_COUNT - 12..PIT_COUNT).contains(&count),
        "count {count}"
    );
}

#[test]
fn port_0x61_keeps_the_bits_the_guest_sets() {
    let (mut vmm, _) = vmm();
    let port = SYSTEM_CONTROL_PORT as u16;
    out(&mut vmm, port, &[TIMER2_GATE_SPEAKER]);
    assert_eq!(
        inb(&mut vmm, port) & TIMER2_GATE_SPEAKER,
        TIMER2_GATE_SPEAKER
    );
    out(&mut vmm, port, &[0]);
    assert_eq!(inb(&mut vmm, port) & TIMER2_GATE_SPEAKER, 0);
}

#[test]
fn the_debug_exit_ends_the_run_with_the_value_written() {
    let (mut vmm, _) = vmm();
    let port = DEBUG_EXIT_BASE as u16;
    assert_eq!(
        out(&mut vmm, port, &[0x2A]),
        Flow::Stop(StopReason::Exited(0x2A))
    );
    assert_eq!(
        out(&mut vmm, port, &0x1234_5678u32.to_le_bytes()),
        Flow::Stop(StopReason::Exited(0x1234_5678))
    );
}

#[test]
fn ports_nobody_decodes_read_as_open_bus_and_swallow_writes() {
    let (mut vmm, _) = vmm();
    let mut data = [0; 2];
    let flow = vmm.handle(
        VmExit::IoIn {
            port: NO_DEVICE_PORT,
            data: &mut data,
        },
        0,
    );
    assert_eq!((flow, data), (Flow::Continue, [OPEN_BUS; 2]));
    assert_eq!(out(&mut vmm, NO_DEVICE_PORT, &[1, 2]), Flow::Continue);
    let count = vmm.counters.ports[&NO_DEVICE_PORT];
    assert_eq!((count.reads, count.writes), (1, 1));
}

#[test]
fn mmio_nobody_decodes_reads_as_open_bus_and_is_counted() {
    let (mut vmm, _) = vmm();
    let mut data = [0; 4];
    let flow = vmm.handle(
        VmExit::MmioRead {
            addr: NO_DEVICE_MMIO,
            data: &mut data,
        },
        7,
    );
    assert_eq!((flow, data), (Flow::Continue, [OPEN_BUS; 4]));
    let write = VmExit::MmioWrite {
        addr: NO_DEVICE_MMIO,
        data: &[1, 2, 3, 4],
    };
    assert_eq!(vmm.handle(write, 8), Flow::Continue);
    let count = vmm.counters.mmio.get(NO_DEVICE_MMIO).expect("counted");
    assert_eq!((count.reads, count.writes), (1, 1));
    let last = vmm.trace.events().last().expect("traced");
    assert_eq!(last.icount, 8);
    assert!(matches!(
        last.kind,
        EventKind::Mmio {
            addr: NO_DEVICE_MMIO,
            write: true,
            value: 0x0403_0201,
            size: 4
        }
    ));
}

#[test]
fn hlt_with_interrupts_disabled_stops_the_machine() {
    let (mut vmm, _) = vmm();
    let hlt = VmExit::Hlt {
        interruptible: false,
    };
    assert_eq!(vmm.handle(hlt, 0), Flow::Stop(StopReason::Halted));
    assert_eq!(vmm.counters.exits(ExitReason::Hlt), 1);
}

#[test]
fn hlt_with_interrupts_enabled_but_no_timer_stops_at_once() {
    let (mut vmm, _) = vmm();
    init_pic(&mut vmm, 0);
    let hlt = VmExit::Hlt {
        interruptible: true,
    };
    assert_eq!(
        vmm.handle(hlt, 0),
        Flow::Stop(StopReason::HaltedNoInterrupt { timer_ticks: 0 })
    );
}

#[test]
fn hlt_with_the_timer_running_waits_in_virtual_time_for_its_interrupt() {
    let (mut vmm, _) = vmm();
    init_pic(&mut vmm, !1);
    start_timer(&mut vmm);
    let before = vmm.clock.now_ns(0);
    let hlt = VmExit::Hlt {
        interruptible: true,
    };
    assert_eq!(vmm.handle(hlt, 0), Flow::Continue);
    assert!(vmm.clock.now_ns(0) > before, "virtual time moved on");
    assert!(vmm.poll_interrupts(0).pending);
    assert_eq!(vmm.acknowledge_interrupt(), Some(IRQ0_VECTOR));
}

#[test]
fn hlt_with_the_timer_masked_gives_up_after_many_ticks() {
    let (mut vmm, _) = vmm();
    init_pic(&mut vmm, 0xFF);
    start_timer(&mut vmm);
    let hlt = VmExit::Hlt {
        interruptible: true,
    };
    assert_eq!(
        vmm.handle(hlt, 0),
        Flow::Stop(StopReason::HaltedNoInterrupt {
            timer_ticks: MAX_IDLE_TICKS
        })
    );
}

#[test]
fn a_triple_fault_shuts_the_machine_down_with_its_cause() {
    let (mut vmm, _) = vmm();
    let state = CpuState {
        rip: 0x1234,
        ..CpuState::default()
    };
    let cause = (Exception::general_protection(0), Box::new(state));
    let flow = vmm.handle(
        VmExit::Shutdown {
            cause: Some(cause.clone()),
        },
        0,
    );
    assert_eq!(flow, Flow::Stop(StopReason::Shutdown(Some(cause))));
    let flow = vmm.handle(VmExit::Shutdown { cause: None }, 0);
    assert_eq!(flow, Flow::Stop(StopReason::Shutdown(None)));
    assert_eq!(vmm.counters.exits(ExitReason::Shutdown), 2);
}

#[test]
fn unsupported_instructions_stop_the_run_naming_them() {
    let (mut vmm, _) = vmm();
    let exit = VmExit::Unsupported {
        rip: 0x1000,
        what: "task switch".into(),
    };
    assert_eq!(
        vmm.handle(exit, 0),
        Flow::Stop(StopReason::Unsupported {
            rip: 0x1000,
            what: "task switch".into()
        })
    );
}

#[test]
fn cpuid_is_answered_from_popeks_table() {
    let (mut vmm, _) = vmm();
    let mut result = [0; 4];
    let exit = VmExit::Cpuid {
        leaf: 0,
        subleaf: 0,
        result: &mut result,
    };
    assert_eq!(vmm.handle(exit, 0), Flow::Continue);
    assert_eq!(result, crate::cpuid::cpuid(0));
}

#[test]
fn a_debugger_stops_the_run_after_any_exit_once_it_is_handled() {
    let (mut vmm, serial) = vmm();
    vmm.stop_on.exit = true;
    assert_eq!(
        out(&mut vmm, COM1_BASE as u16, b"x"),
        Flow::Stop(StopReason::Debug(DebugStop::Exit(ExitReason::IoOut)))
    );
    assert_eq!(serial.contents(), b"x", "the write happened first");
    // An exit that stops the run anyway says why it stopped, not the debugger.
    assert_eq!(
        out(&mut vmm, DEBUG_EXIT_BASE as u16, &[3]),
        Flow::Stop(StopReason::Exited(3))
    );
}

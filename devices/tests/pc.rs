//! The popek-pc board as an engine sees it: accesses through the buses only.

use devices::serial::{
    DATA, IER, IER_THR_EMPTY, IIR, IIR_ID_MASK, IIR_THR_EMPTY, LSR, LSR_DATA_READY, LSR_THR_EMPTY,
};
use devices::system_control::{SPEAKER_GATE, SPEAKER_OUT};
use devices::{
    BusError, DeviceRequest, PcDevices, SharedBuffer, COM1_BASE, COM1_IRQ, COM1_LEN,
    DEBUG_EXIT_BASE, DEBUG_EXIT_LEN, OPEN_BUS, PIC_LEN, PIC_MASTER_BASE, PIC_SLAVE_BASE, PIT_BASE,
    PIT_IRQ, PIT_LEN, SYSTEM_CONTROL_PORT,
};
use proptest::prelude::*;
use std::io::BufWriter;

fn board() -> (PcDevices, SharedBuffer) {
    let console = SharedBuffer::new();
    (PcDevices::new(Box::new(console.clone())), console)
}

fn inb(pc: &PcDevices, port: u64) -> u8 {
    let mut byte = [0];
    pc.pio.read(port, &mut byte).unwrap();
    byte[0]
}

fn outb(pc: &PcDevices, port: u64, value: u8) -> Option<DeviceRequest> {
    pc.pio.write(port, &[value]).unwrap()
}

#[test]
fn bytes_written_to_com1_reach_the_sink_at_once() {
    // A buffered sink shows bytes only once flushed, so this also checks that the UART
    // flushes every byte for a live console.
    let console = SharedBuffer::new();
    let pc = PcDevices::new(Box::new(BufWriter::new(console.clone())));
    assert_eq!(outb(&pc, COM1_BASE + DATA, b'h'), None);
    assert_eq!(console.contents(), b"h");
    outb(&pc, COM1_BASE + DATA, b'i');
    assert_eq!(console.take(), b"hi");
    assert_ne!(inb(&pc, COM1_BASE + LSR) & LSR_THR_EMPTY, 0);
}

#[test]
fn input_is_read_from_rbr_while_lsr_says_data_ready() {
    let (pc, _) = board();
    assert_eq!(inb(&pc, COM1_BASE + LSR) & LSR_DATA_READY, 0);

    pc.serial.lock().unwrap().enqueue_input(b"ok").unwrap();
    let mut received = Vec::new();
    while inb(&pc, COM1_BASE + LSR) & LSR_DATA_READY != 0 {
        received.push(inb(&pc, COM1_BASE + DATA));
    }
    assert_eq!(received, b"ok");
}

#[test]
fn enabling_the_thr_empty_interrupt_raises_irq_4() {
    let (pc, _) = board();
    assert_eq!(pc.irqs.take_pending(), 0);

    outb(&pc, COM1_BASE + IER, IER_THR_EMPTY);
    assert_eq!(pc.irqs.take_pending(), 1 << COM1_IRQ);
    assert_eq!(pc.irqs.raised_count(COM1_IRQ), 1);
    assert_eq!(inb(&pc, COM1_BASE + IIR) & IIR_ID_MASK, IIR_THR_EMPTY);

    // Each byte sent empties THR again, a new edge for the driver's next byte.
    outb(&pc, COM1_BASE + DATA, b'.');
    assert_eq!(pc.irqs.take_pending(), 1 << COM1_IRQ);
    assert_eq!(pc.irqs.raised_count(COM1_IRQ), 2);
}

#[test]
fn debug_exit_reports_the_written_value() {
    let (pc, _) = board();
    assert_eq!(outb(&pc, DEBUG_EXIT_BASE, 0), Some(DeviceRequest::Exit(0)));
    assert_eq!(
        pc.pio.write(DEBUG_EXIT_BASE, &0x12u32.to_le_bytes()),
        Ok(Some(DeviceRequest::Exit(0x12)))
    );
    assert_eq!(inb(&pc, DEBUG_EXIT_BASE), 0);
}

/// The PIC initialization Linux and the BIOS do: ICW1 (edge, cascade, ICW4 follows),
/// ICW2 (vector bases 0x20 and 0x28), ICW3 (slave on IR 2, slave ID 2), ICW4 (x86), then
/// the masks.
fn init_pics(pc: &PcDevices, master_mask: u8, slave_mask: u8) {
    for (base, vector, icw3, mask) in [
        (PIC_MASTER_BASE, 0x20, 1 << 2, master_mask),
        (PIC_SLAVE_BASE, 0x28, 2, slave_mask),
    ] {
        outb(pc, base, 0x11);
        outb(pc, base + 1, vector);
        outb(pc, base + 1, icw3);
        outb(pc, base + 1, 0x01);
        outb(pc, base + 1, mask);
    }
}

/// The OCW2 non-specific EOI.
const EOI: u8 = 0x20;
/// PIT counter 0 and the control word port.
const PIT_COUNTER0: u64 = PIT_BASE;
const PIT_CONTROL: u64 = PIT_BASE + 3;
/// Counter 0, low then high byte, mode 2: Linux's periodic tick.
const PIT_CH0_RATE: u8 = 0x34;
/// The divisor for 100 Hz.
const LATCH_100HZ: u16 = 11_932;

fn acknowledge(pc: &PcDevices) -> Option<u8> {
    pc.pic.lock().unwrap().acknowledge()
}

fn has_interrupt(pc: &PcDevices) -> bool {
    pc.pic.lock().unwrap().has_interrupt()
}

#[test]
fn the_timer_tick_reaches_the_cpu_as_vector_0x20() {
    let (pc, _) = board();
    init_pics(&pc, !(1 << PIT_IRQ), 0xFF);
    outb(&pc, PIT_CONTROL, PIT_CH0_RATE);
    let [low, high] = LATCH_100HZ.to_le_bytes();
    outb(&pc, PIT_COUNTER0, low);
    outb(&pc, PIT_COUNTER0, high);

    pc.advance_clock(9_000_000);
    assert!(!has_interrupt(&pc), "the first tick is 10 ms away");
    pc.advance_clock(10_001_000);
    assert!(has_interrupt(&pc));
    assert_eq!(acknowledge(&pc), Some(0x20));
    assert_eq!(pc.irqs.raised_count(PIT_IRQ), 1);

    // Ticks while the handler runs wait for its EOI, merged into one request.
    pc.advance_clock(100_000_000);
    assert!(!has_interrupt(&pc));
    outb(&pc, PIC_MASTER_BASE, EOI);
    assert_eq!(acknowledge(&pc), Some(0x20));
    outb(&pc, PIC_MASTER_BASE, EOI);
    assert_eq!(acknowledge(&pc), None);

    // A halted CPU fast-forwards from tick to tick.
    for _ in 0..5 {
        let next = pc.pit.lock().unwrap().next_irq0_ns().unwrap();
        pc.advance_clock(next - 1);
        assert!(!has_interrupt(&pc));
        pc.advance_clock(next);
        assert_eq!(acknowledge(&pc), Some(0x20));
        outb(&pc, PIC_MASTER_BASE, EOI);
    }
}

#[test]
fn pit_counts_read_through_ports_follow_the_clock() {
    let (pc, _) = board();
    outb(&pc, PIT_CONTROL, PIT_CH0_RATE);
    outb(&pc, PIT_COUNTER0, 0x00);
    outb(&pc, PIT_COUNTER0, 0x10);
    let read = |pc: &PcDevices| {
        outb(pc, PIT_CONTROL, 0x00);
        u16::from_le_bytes([inb(pc, PIT_COUNTER0), inb(pc, PIT_COUNTER0)])
    };
    // The count loads on the first clock pulse, 838 ns in; reads see the time of the
    // last advance.
    pc.advance_clock(900);
    assert_eq!(read(&pc), 0x1000);
    pc.advance_clock(1_000_000);
    // 1 ms is 1193 pulses, one of them the load.
    assert_eq!(read(&pc), 0x1000 - 1192);
    pc.advance_clock(2_000_000);
    assert_eq!(read(&pc), 0x1000 - 2385);
}

#[test]
fn com1_irq_4_reaches_the_pic() {
    let (pc, _) = board();
    init_pics(&pc, 0, 0);
    outb(&pc, COM1_BASE + IER, IER_THR_EMPTY);
    assert!(!has_interrupt(&pc), "not delivered yet");
    pc.deliver_pending_irqs();
    assert_eq!(acknowledge(&pc), Some(0x20 + COM1_IRQ));
    assert_eq!(pc.pic.lock().unwrap().state().master.isr, 1 << COM1_IRQ);
}

#[test]
fn a_slave_irq_needs_eois_through_both_ports() {
    let (pc, _) = board();
    init_pics(&pc, 0, 0);
    pc.pic.lock().unwrap().raise_irq(12);
    pc.pic.lock().unwrap().raise_irq(14);
    assert_eq!(acknowledge(&pc), Some(0x2C));
    outb(&pc, PIC_SLAVE_BASE, EOI);
    assert!(!has_interrupt(&pc));
    outb(&pc, PIC_MASTER_BASE, EOI);
    assert_eq!(acknowledge(&pc), Some(0x2E));
    // OCW3: read the ISRs.
    outb(&pc, PIC_MASTER_BASE, 0x0B);
    outb(&pc, PIC_SLAVE_BASE, 0x0B);
    assert_eq!(inb(&pc, PIC_MASTER_BASE), 1 << 2);
    assert_eq!(inb(&pc, PIC_SLAVE_BASE), 1 << 6);
    assert_eq!(inb(&pc, PIC_SLAVE_BASE + 1), 0, "the slave's IMR");
}

#[test]
fn port_0x61_gates_and_shows_pit_counter_2() {
    // Linux's TSC calibration: GATE 2 up with the speaker off, counter 2 in mode 0, then
    // poll OUT 2.
    let (pc, _) = board();
    outb(&pc, SYSTEM_CONTROL_PORT, SPEAKER_GATE);
    outb(&pc, PIT_CONTROL, 0xB0);
    outb(&pc, PIT_BASE + 2, 0xFF);
    outb(&pc, PIT_BASE + 2, 0xFF);
    pc.advance_clock(50_000_000);
    assert_eq!(inb(&pc, SYSTEM_CONTROL_PORT) & SPEAKER_OUT, 0);
    pc.advance_clock(55_000_000);
    assert_eq!(
        inb(&pc, SYSTEM_CONTROL_PORT) & (SPEAKER_GATE | SPEAKER_OUT),
        SPEAKER_GATE | SPEAKER_OUT
    );
}

#[test]
fn nothing_else_is_wired() {
    let (pc, _) = board();
    let mut data = [OPEN_BUS];
    assert_eq!(pc.pio.read(0x60, &mut data), Err(BusError::Unclaimed(0x60)));
    assert_eq!(
        pc.mmio.write(0xfed0_0000, &[0; 4]),
        Err(BusError::Unclaimed(0xfed0_0000))
    );
}

#[test]
fn the_local_apic_answers_at_its_base_and_moves_with_it() {
    let (mut pc, _) = board();
    let mut version = [0; 4];
    pc.mmio.read(0xfee0_0030, &mut version).unwrap();
    assert_eq!(u32::from_le_bytes(version), 0x0005_0014);
    // IA32_APIC_BASE: a new page, enabled, BSP.
    pc.set_apic_base(0xfed0_0000 | 1 << 11 | 1 << 8);
    assert!(pc.mmio.read(0xfee0_0030, &mut version).is_err());
    pc.mmio.read(0xfed0_0030, &mut version).unwrap();
    assert_eq!(u32::from_le_bytes(version), 0x0005_0014);
}

#[test]
fn a_self_ipi_comes_before_the_pic_and_a_closed_wire_holds_the_pic_back() {
    let (pc, _) = board();
    let write = |offset: u64, v: u32| {
        pc.mmio
            .write(0xfee0_0000 + offset, &v.to_le_bytes())
            .unwrap();
    };
    // The PIC remapped to 0x20, IRQ 0 pending from the PIT.
    for (port, v) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 4),
        (0x21, 1),
        (0x21, 0xFE),
    ] {
        outb(&pc, port, v);
    }
    outb(&pc, PIT_CONTROL, 0x34);
    outb(&pc, PIT_BASE, 100);
    outb(&pc, PIT_BASE, 0);
    pc.advance_clock(1_000_000);
    write(0xF0, 0x1FF); // software-enable the APIC
    write(0x300, 1 << 18 | 0x50); // self-IPI, vector 0x50
    assert!(pc.has_interrupt());
    assert_eq!(pc.acknowledge(), Some(0x50));
    assert_eq!(pc.acknowledge(), Some(0x20), "then the PIC through LINT0");
    write(0x350, 1 << 16 | 0x700); // mask LINT0
    pc.advance_clock(2_000_000);
    assert!(!pc.has_interrupt(), "IRQ 0 waits in the PIC");
}

/// One guest access, the front end typing, or the VMM moving time or taking an
/// interrupt.
#[derive(Debug, Clone)]
enum Op {
    PortRead { port: u64, len: usize },
    PortWrite { port: u64, data: Vec<u8> },
    MmioRead { addr: u64, len: usize },
    MmioWrite { addr: u64, data: Vec<u8> },
    Type(Vec<u8>),
    Advance(u64),
    Acknowledge,
}

/// Ports spread over the whole space, with most picks on the wired devices so their
/// register models get exercised rather than only the unclaimed path.
fn port() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..0x1_0000u64,
        COM1_BASE..COM1_BASE + COM1_LEN,
        DEBUG_EXIT_BASE..DEBUG_EXIT_BASE + DEBUG_EXIT_LEN,
        PIC_MASTER_BASE..PIC_MASTER_BASE + PIC_LEN,
        PIC_SLAVE_BASE..PIC_SLAVE_BASE + PIC_LEN,
        PIT_BASE..PIT_BASE + PIT_LEN,
        Just(SYSTEM_CONTROL_PORT),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let data = || prop::collection::vec(any::<u8>(), 0..=8);
    prop_oneof![
        (port(), 0..=8usize).prop_map(|(port, len)| Op::PortRead { port, len }),
        (port(), data()).prop_map(|(port, data)| Op::PortWrite { port, data }),
        (any::<u64>(), 0..=8usize).prop_map(|(addr, len)| Op::MmioRead { addr, len }),
        (any::<u64>(), data()).prop_map(|(addr, data)| Op::MmioWrite { addr, data }),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(Op::Type),
        // Steps from a few PIT pulses to seconds, and now and then a leap to the far
        // future.
        prop_oneof![
            8 => 0..20_000_000u64,
            1 => any::<u64>(),
        ]
        .prop_map(Op::Advance),
        Just(Op::Acknowledge),
    ]
}

/// Whether the bus must accept an access: a CPU width on a claimed port.
fn claimed(pc: &PcDevices, port: u64, len: usize) -> bool {
    [1, 2, 4, 8].contains(&len) && pc.pio.device_at(port).is_some()
}

proptest! {
    /// Whatever the guest does, interleaved with the VMM advancing time and taking
    /// interrupts, the board answers without panicking, claimed accesses succeed, only
    /// debug-exit asks to end the run, and INTR always yields a vector.
    #[test]
    fn random_accesses_never_panic(ops in prop::collection::vec(op(), 1..64)) {
        let (pc, _) = board();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::PortRead { port, len } => {
                    let mut data = vec![0; len];
                    let result = pc.pio.read(port, &mut data);
                    prop_assert_eq!(result.is_ok(), claimed(&pc, port, len));
                }
                Op::PortWrite { port, data } => {
                    let result = pc.pio.write(port, &data);
                    prop_assert_eq!(result.is_ok(), claimed(&pc, port, data.len()));
                    if let Ok(Some(DeviceRequest::Exit(_))) = result {
                        prop_assert!(
                            (DEBUG_EXIT_BASE..DEBUG_EXIT_BASE + DEBUG_EXIT_LEN).contains(&port)
                        );
                    }
                }
                Op::MmioRead { addr, len } => {
                    prop_assert!(pc.mmio.read(addr, &mut vec![0; len]).is_err());
                }
                Op::MmioWrite { addr, data } => {
                    prop_assert!(pc.mmio.write(addr, &data).is_err());
                }
                Op::Type(bytes) => {
                    // A full FIFO refusing input is fine; anything else is not.
                    let _ = pc.serial.lock().unwrap().enqueue_input(&bytes);
                }
                Op::Advance(step) => {
                    now = now.saturating_add(step);
                    pc.advance_clock(now);
                    if let Some(next) = pc.pit.lock().unwrap().next_irq0_ns() {
                        prop_assert!(next > now);
                    }
                }
                Op::Acknowledge => {
                    pc.deliver_pending_irqs();
                    let mut pic = pc.pic.lock().unwrap();
                    let intr = pic.has_interrupt();
                    let vector = pic.acknowledge();
                    prop_assert!(!intr || vector.is_some());
                }
            }
        }
    }
}

/// The ports of the interrupt hardware: both PICs, the PIT and port 0x61.
fn interrupt_port() -> impl Strategy<Value = u64> {
    prop_oneof![
        PIC_MASTER_BASE..PIC_MASTER_BASE + PIC_LEN,
        PIC_SLAVE_BASE..PIC_SLAVE_BASE + PIC_LEN,
        PIT_BASE..PIT_BASE + PIT_LEN,
        Just(SYSTEM_CONTROL_PORT),
    ]
}

/// The VMM's side of the interrupt hardware, or the guest's port traffic to it.
#[derive(Debug, Clone)]
enum IrqOp {
    Read { port: u64, len: usize },
    Write { port: u64, data: Vec<u8> },
    Advance(u64),
    Raise(u8),
    Lower(u8),
    Acknowledge,
}

fn irq_op() -> impl Strategy<Value = IrqOp> {
    let width = || prop::sample::select(vec![1usize, 2, 4]);
    prop_oneof![
        (interrupt_port(), width()).prop_map(|(port, len)| IrqOp::Read { port, len }),
        (interrupt_port(), width())
            .prop_flat_map(|(port, len)| (Just(port), prop::collection::vec(any::<u8>(), len)))
            .prop_map(|(port, data)| IrqOp::Write { port, data }),
        (0..5_000_000u64).prop_map(IrqOp::Advance),
        (0..16u8).prop_map(IrqOp::Raise),
        (0..16u8).prop_map(IrqOp::Lower),
        Just(IrqOp::Acknowledge),
    ]
}

proptest! {
    /// From an initialized, unmasked PIC pair and a running 1 kHz tick, any traffic to
    /// the interrupt hardware keeps the pair consistent: INTR always yields a vector in
    /// a programmed range, the spurious one or, for a cascade input no slave answers
    /// for, the undriven bus, and acknowledging with nothing signalled yields nothing.
    #[test]
    fn interrupt_hardware_survives_any_traffic(ops in prop::collection::vec(irq_op(), 1..200)) {
        let (pc, _) = board();
        init_pics(&pc, 0, 0);
        outb(&pc, PIT_CONTROL, PIT_CH0_RATE);
        outb(&pc, PIT_COUNTER0, 0xA9);
        outb(&pc, PIT_COUNTER0, 0x04);
        let mut now = 0u64;
        for op in ops {
            match op {
                IrqOp::Read { port, len } => pc.pio.read(port, &mut vec![0; len]).unwrap(),
                IrqOp::Write { port, data } => {
                    prop_assert_eq!(pc.pio.write(port, &data).unwrap(), None);
                }
                IrqOp::Advance(step) => {
                    now += step;
                    pc.advance_clock(now);
                }
                IrqOp::Raise(irq) => pc.pic.lock().unwrap().raise_irq(irq),
                IrqOp::Lower(irq) => pc.pic.lock().unwrap().lower_irq(irq),
                IrqOp::Acknowledge => {
                    let mut pic = pc.pic.lock().unwrap();
                    let intr = pic.has_interrupt();
                    let state = pic.state();
                    let vector = pic.acknowledge();
                    if intr {
                        let vector = vector.unwrap();
                        let in_range = |base: u8| vector & 0xF8 == base;
                        // A master whose ICW3 names an input the slave's ID does not
                        // answer for leaves the data bus undriven when it acknowledges it.
                        let wired = state.master.icw3 == 1 << 2
                            && state.slave.icw3 & 7 == 2
                            && !state.slave.single;
                        let no_slave = vector == OPEN_BUS && !wired;
                        prop_assert!(
                            in_range(state.master.vector_base)
                                || in_range(state.slave.vector_base)
                                || no_slave
                        );
                    }
                    // Once acknowledged, INTR was last signalled for what is pending now.
                    let again = pic.has_interrupt();
                    prop_assert_eq!(pic.acknowledge().is_some(), again);
                }
            }
        }
    }
}

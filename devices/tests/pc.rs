//! The popek-pc board as an engine sees it: accesses through the buses only.

use devices::serial::{
    DATA, IER, IER_THR_EMPTY, IIR, IIR_ID_MASK, IIR_THR_EMPTY, LSR, LSR_DATA_READY, LSR_THR_EMPTY,
};
use devices::{
    BusError, DeviceRequest, PcDevices, SharedBuffer, COM1_BASE, COM1_IRQ, COM1_LEN,
    DEBUG_EXIT_BASE, DEBUG_EXIT_LEN, OPEN_BUS,
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

#[test]
fn nothing_else_is_wired() {
    let (pc, _) = board();
    let mut data = [OPEN_BUS];
    assert_eq!(pc.pio.read(0x60, &mut data), Err(BusError::Unclaimed(0x60)));
    assert_eq!(
        pc.mmio.write(0xfee0_0000, &[0; 4]),
        Err(BusError::Unclaimed(0xfee0_0000))
    );
}

/// One guest access, or the front end typing.
#[derive(Debug, Clone)]
enum Op {
    PortRead { port: u64, len: usize },
    PortWrite { port: u64, data: Vec<u8> },
    MmioRead { addr: u64, len: usize },
    MmioWrite { addr: u64, data: Vec<u8> },
    Type(Vec<u8>),
}

/// Ports spread over the whole space, with most picks on the wired devices so their
/// register models get exercised rather than only the unclaimed path.
fn port() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..0x1_0000u64,
        COM1_BASE..COM1_BASE + COM1_LEN,
        DEBUG_EXIT_BASE..DEBUG_EXIT_BASE + DEBUG_EXIT_LEN,
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
    ]
}

/// Whether the bus must accept an access: a CPU width on a claimed port.
fn claimed(pc: &PcDevices, port: u64, len: usize) -> bool {
    [1, 2, 4, 8].contains(&len) && pc.pio.device_at(port).is_some()
}

proptest! {
    /// Whatever the guest does, the board answers without panicking, claimed accesses
    /// succeed and only debug-exit asks to end the run.
    #[test]
    fn random_accesses_never_panic(ops in prop::collection::vec(op(), 1..64)) {
        let (pc, _) = board();
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
            }
        }
    }
}

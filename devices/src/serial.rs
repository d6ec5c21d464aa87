//! A 16550 UART: vm-superio's register model behind a bus adapter.
//!
//! vm-superio decodes the eight registers; this file maps bus accesses onto them one byte
//! at a time, as the ISA bus does for an 8-bit device, and connects the UART's output
//! line to a byte sink and its interrupt output to an [`IrqLine`].
//!
//! The adapter also mends two places where vm-superio departs from the 16550A datasheet:
//! IIR reports the pending interrupt of highest priority (vm-superio ORs the
//! identifications of received data and THR empty into 0b110, which names a receiver
//! line status interrupt), and FCR's receiver FIFO reset empties the FIFO (vm-superio
//! ignores FCR). Its other simplifications stay: reading IIR clears every pending
//! interrupt and reading RBR clears the received-data one even with data left (the
//! datasheet keeps them until their cause is gone); the FIFO is always on (IIR bits 7..6
//! say so) and 64 bytes deep; no modem status interrupts.
//!
//! # State
//! vm-superio's [`SerialState`] holds every register and the receive FIFO;
//! [`SerialPortState`] wraps it for serde. [`SerialPort::from_state`] checks it (a
//! snapshot file may be hand-edited or corrupt) before vm-superio rebuilds the UART, and
//! keeps the rebuild from signalling the interrupts already pending again: their edges
//! reached the PIC before the snapshot, and its state has them.

use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use vm_superio::serial::{Error as UartError, NoEvents};
use vm_superio::{Serial, SerialState, Trigger};

use crate::bus::{read_byte_lanes, write_byte_lanes, BusDevice, DeviceRequest};
use crate::irq::IrqLine;

/// How many consecutive addresses the UART decodes: its eight byte-wide registers.
pub const REGISTER_COUNT: u64 = 8;

/// Data register: a write sends the byte (THR), a read takes the oldest received one
/// (RBR); while LCR's DLAB bit is set, offsets 0 and 1 are the baud divisor instead.
pub const DATA: u64 = 0;
/// Interrupt Enable Register: which conditions drive the interrupt output.
pub const IER: u64 = 1;
/// Interrupt Identification Register: which enabled condition is pending; reading it
/// acknowledges a THR-empty interrupt.
pub const IIR: u64 = 2;
/// Line Control Register: the frame format; its bit 7 (DLAB) swaps offsets 0 and 1 for
/// the baud divisor.
pub const LCR: u64 = 3;
/// LCR's divisor latch access bit.
pub const LCR_DLAB: u8 = 1 << 7;
/// Line Status Register: receive and transmit readiness.
pub const LSR: u64 = 5;

/// IER bit: interrupt when received data is waiting in RBR.
pub const IER_RX_DATA: u8 = 1 << 0;
/// IER bit: interrupt when THR is empty, i.e. ready for the next byte to send.
pub const IER_THR_EMPTY: u8 = 1 << 1;

/// IIR bit: set while no interrupt is pending (the UART's interrupt output is idle).
pub const IIR_NONE: u8 = 1 << 0;
/// IIR bits 3..1: which interrupt source is pending.
pub const IIR_ID_MASK: u8 = 0b1110;
/// IIR identification value: the pending interrupt is "THR empty".
pub const IIR_THR_EMPTY: u8 = 0b0010;
/// IIR identification value: the pending interrupt is "received data available".
pub const IIR_RX_DATA: u8 = 0b0100;

/// FIFO Control Register: write-only, at IIR's offset.
pub const FCR: u64 = IIR;
/// FCR bit: FIFOs enabled; the other bits take effect only with it set.
pub const FCR_FIFO_ENABLE: u8 = 1 << 0;
/// FCR bit: empty the receiver FIFO (self-clearing).
pub const FCR_CLEAR_RX: u8 = 1 << 1;

/// LSR bit: at least one received byte is waiting in RBR.
pub const LSR_DATA_READY: u8 = 1 << 0;
/// LSR bit: THR can take another byte.
pub const LSR_THR_EMPTY: u8 = 1 << 5;
/// LSR bit: the transmitter is idle (THR and the shift register are empty).
pub const LSR_TRANSMITTER_EMPTY: u8 = 1 << 6;

/// The IER bits a 16550A has: received data, THR empty, line status, modem status.
const IER_BITS: u8 = 0x0F;
/// The receive FIFO's size on a 16550A.
pub const FIFO_SIZE: usize = 16 * 4;

/// The register model: interrupts go to an IRQ line, events are not observed, and output
/// goes to whatever sink the front end chose.
type Uart = Serial<Interrupt, NoEvents, Box<dyn Write + Send>>;

/// The UART's interrupt output as vm-superio drives it: each trigger is a rising edge on
/// the IRQ line, except while a restore rebuilds the model from a state whose pending
/// interrupts were signalled before the snapshot.
#[derive(Debug)]
struct Interrupt {
    line: IrqLine,
    muted: Cell<bool>,
}

impl Interrupt {
    fn new(line: IrqLine, muted: bool) -> Self {
        Self {
            line,
            muted: Cell::new(muted),
        }
    }
}

impl Trigger for Interrupt {
    /// Raising a line is a bit flip that cannot fail.
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        if self.muted.get() {
            Ok(())
        } else {
            self.line.trigger()
        }
    }
}

/// serde's view of vm-superio's [`SerialState`], which does not derive serde itself;
/// serde checks at compile time that the fields match.
#[derive(Serialize, Deserialize)]
#[serde(remote = "SerialState")]
struct SerialStateDef {
    baud_divisor_low: u8,
    baud_divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    in_buffer: Vec<u8>,
}

/// The UART's registers and receive FIFO: everything a snapshot saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialPortState {
    /// vm-superio's register file and FIFO.
    #[serde(with = "SerialStateDef")]
    pub uart: SerialState,
}

/// Why a [`SerialPortState`] cannot be restored: it describes a UART vm-superio's model
/// never reaches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialStateError {
    /// The receive FIFO holds 64 bytes.
    #[error("UART: {len} bytes in a receive FIFO of {FIFO_SIZE}")]
    FifoOverflow {
        /// How many bytes the state holds.
        len: usize,
    },
    /// A 16550A has four interrupt enables.
    #[error("UART: IER {value:#04x} enables interrupts a 16550A does not have")]
    InterruptEnable {
        /// The value found.
        value: u8,
    },
    /// IIR holds the pending interrupts (received data, THR empty) or "none pending".
    #[error("UART: IIR {value:#04x} is not a set of pending interrupts")]
    InterruptIdentification {
        /// The value found.
        value: u8,
    },
    /// A received-data interrupt is pending only while there is data.
    #[error("UART: a received-data interrupt is pending with an empty receive FIFO")]
    ReceivedDataWithoutData,
    /// LSR says the transmitter is empty, and data ready exactly when the FIFO has data.
    #[error("UART: LSR {value:#04x} does not match the FIFO (expected {expected:#04x})")]
    LineStatus {
        /// The value found.
        value: u8,
        /// The value the FIFO implies.
        expected: u8,
    },
}

/// Why the UART refused input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    /// The receive FIFO lacks room for all the bytes; none were taken.
    #[error("the UART's receive FIFO has room for {free} bytes, not {wanted}")]
    FifoFull {
        /// How many bytes were offered.
        wanted: usize,
        /// How many the FIFO could still take.
        free: usize,
    },
}

/// COM1: a 16550 UART (vm-superio register model) whose transmitted bytes go to a sink
/// (stdout for the CLI, a shared buffer for the GUI and tests) and whose interrupt goes to
/// IRQ 4 of [`IrqLines`](crate::IrqLines).
///
/// Which line it raises is the [`IrqLine`] it is given, so the same model serves any COM
/// port.
pub struct SerialPort {
    uart: Uart,
    /// Bytes the guest sent while the sink failed: the guest cannot be told (a UART has
    /// no "cable unplugged" status), but the VMM can.
    lost_bytes: u64,
}

impl SerialPort {
    /// A UART in its power-on state that sends to `out` and interrupts on `irq`.
    ///
    /// `out` is flushed after every byte so a live console shows output at once.
    pub fn new(out: Box<dyn Write + Send>, irq: IrqLine) -> Self {
        Self {
            uart: Serial::new(Interrupt::new(irq, false), out),
            lost_bytes: 0,
        }
    }

    /// The UART `state` describes, sending to `out` and interrupting on `irq`. The
    /// interrupts `state` has pending are not signalled again.
    pub fn from_state(
        state: &SerialPortState,
        out: Box<dyn Write + Send>,
        irq: IrqLine,
    ) -> Result<Self, SerialStateError> {
        state.validate()?;
        let uart = Serial::from_state(&state.uart, Interrupt::new(irq, true), NoEvents, out)
            .map_err(|_| SerialStateError::FifoOverflow {
                len: state.uart.in_buffer.len(),
            })?;
        uart.interrupt_evt().muted.set(false);
        Ok(Self {
            uart,
            lost_bytes: 0,
        })
    }

    /// Puts the UART in `state`, keeping its sink, IRQ line and lost-byte count; on an
    /// error it is unchanged.
    pub fn restore(&mut self, state: &SerialPortState) -> Result<(), SerialStateError> {
        state.validate()?;
        let line = self.uart.interrupt_evt().line.clone();
        // vm-superio hands the sink back only by value: park a placeholder meanwhile.
        let sink: Box<dyn Write + Send> = Box::new(io::sink());
        let parked = Serial::new(Interrupt::new(line.clone(), true), sink);
        let out = std::mem::replace(&mut self.uart, parked).into_writer();
        let restored = Self::from_state(state, out, line)?;
        self.uart = restored.uart;
        Ok(())
    }

    /// Puts `bytes` in the receive FIFO for the guest to read from RBR, raising the
    /// received-data interrupt if the guest enabled it.
    ///
    /// All or nothing: if the FIFO lacks room for every byte it takes none, and the
    /// caller retries once the guest has read some ([`input_room`](Self::input_room)).
    /// In loopback mode the receiver listens to the transmitter only, so input is dropped.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<(), SerialError> {
        let free = self.input_room();
        let full = SerialError::FifoFull {
            wanted: bytes.len(),
            free,
        };
        if bytes.len() > free {
            return Err(full);
        }
        // With room checked, the model's only other failure is a trigger error, and an
        // IrqLine's is `Infallible`.
        self.uart.enqueue_raw_bytes(bytes).map_err(|_| full)?;
        Ok(())
    }

    /// How many more bytes the receive FIFO takes.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// The registers and receive FIFO, for snapshots and inspection.
    pub fn state(&self) -> SerialPortState {
        SerialPortState {
            uart: self.uart.state(),
        }
    }

    /// FCR's receiver reset, which vm-superio ignores: its own RBR reads empty the FIFO
    /// and clear data ready and the received-data interrupt with it. RBR is at offset 0
    /// only with DLAB clear, so DLAB is cleared meanwhile (LCR writes do nothing else).
    fn clear_receiver(&mut self) {
        let lcr = self.uart.read(LCR as u8);
        let queued = FIFO_SIZE.saturating_sub(self.input_room());
        // LCR writes cannot fail: only THR writes reach the sink or the FIFO.
        let _ = self.uart.write(LCR as u8, lcr & !LCR_DLAB);
        for _ in 0..queued {
            self.uart.read(DATA as u8);
        }
        let _ = self.uart.write(LCR as u8, lcr);
    }

    /// How many bytes the guest sent that the sink failed to take.
    pub fn lost_bytes(&self) -> u64 {
        self.lost_bytes
    }

    /// Sends `bytes` to the sink directly, past the UART's registers: the hypervisor
    /// console of a para-virtualized guest shares COM1's output, so its lines and the
    /// UART's stay in order. Bytes the sink fails to take count as lost.
    pub fn write_console(&mut self, bytes: &[u8]) {
        let out = self.uart.writer_mut();
        if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
            self.lost_bytes += bytes.len() as u64;
        }
    }
}

impl BusDevice for SerialPort {
    /// Byte lane `i` reads register `offset + i`; lanes past the register file read as an
    /// undriven bus.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_byte_lanes(offset, data, REGISTER_COUNT, |reg| {
            let value = self.uart.read(reg);
            if u64::from(reg) == IIR && value & IIR_ID_MASK == IIR_RX_DATA | IIR_THR_EMPTY {
                // Both pending: received data ranks above THR empty.
                value & !IIR_ID_MASK | IIR_RX_DATA
            } else {
                value
            }
        });
    }

    /// Byte lane `i` writes register `offset + i`; lanes past the register file are lost.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        write_byte_lanes(offset, data, REGISTER_COUNT, |reg, byte| {
            let clear_rx = FCR_FIFO_ENABLE | FCR_CLEAR_RX;
            if u64::from(reg) == FCR && byte & clear_rx == clear_rx {
                self.clear_receiver();
            }
            match self.uart.write(reg, byte) {
                Ok(()) => {}
                Err(UartError::IOError(_)) => self.lost_bytes += 1,
                // Writes never fill the FIFO (loopback drops bytes once it is full).
                Err(UartError::FullFifo) => {}
                Err(UartError::Trigger(never)) => match never {},
            }
        });
        None
    }
}

impl SerialPortState {
    /// Checks that vm-superio's model could have reached this state: it keeps IER to the
    /// 16550A's bits, IIR to the interrupts it raises, and LSR to "transmitter empty"
    /// plus data ready while the FIFO has data.
    pub fn validate(&self) -> Result<(), SerialStateError> {
        let state = &self.uart;
        let len = state.in_buffer.len();
        if len > FIFO_SIZE {
            return Err(SerialStateError::FifoOverflow { len });
        }
        if state.interrupt_enable & !IER_BITS != 0 {
            return Err(SerialStateError::InterruptEnable {
                value: state.interrupt_enable,
            });
        }
        let iir = state.interrupt_identification;
        let pending = iir & (IIR_RX_DATA | IIR_THR_EMPTY);
        if iir & !(IIR_NONE | IIR_RX_DATA | IIR_THR_EMPTY) != 0
            || (pending == 0) != (iir & IIR_NONE != 0)
        {
            return Err(SerialStateError::InterruptIdentification { value: iir });
        }
        if pending & IIR_RX_DATA != 0 && len == 0 {
            return Err(SerialStateError::ReceivedDataWithoutData);
        }
        let data_ready = if len > 0 { LSR_DATA_READY } else { 0 };
        let expected = LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY | data_ready;
        if state.line_status != expected {
            return Err(SerialStateError::LineStatus {
                value: state.line_status,
                expected,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for SerialPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialPort")
            .field("state", &self.state())
            .field("lost_bytes", &self.lost_bytes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::OPEN_BUS;
    use crate::irq::IrqLines;
    use crate::shared_buffer::SharedBuffer;
    use crate::state_test::{original_and_restored, state_proptests, Restorable};
    use proptest::prelude::*;

    fn port() -> (SerialPort, SharedBuffer, IrqLines) {
        let out = SharedBuffer::new();
        let irqs = IrqLines::new();
        let port = SerialPort::new(Box::new(out.clone()), irqs.line(4));
        (port, out, irqs)
    }

    fn read_reg(port: &mut SerialPort, reg: u64) -> u8 {
        let mut byte = [0];
        port.read(reg, &mut byte);
        byte[0]
    }

    #[test]
    fn wide_accesses_are_split_into_byte_lanes() {
        let (mut port, out, irqs) = port();
        // A word write at DATA sends the low byte and writes the high one to IER.
        port.write(DATA, &[b'x', IER_THR_EMPTY]);
        assert_eq!(out.contents(), b"x");
        assert_eq!(read_reg(&mut port, IER), IER_THR_EMPTY);
        assert_eq!(irqs.take_pending(), 1 << 4);

        // Lanes past the eight registers read as an undriven bus, whatever the width.
        let mut qword = [0; 8];
        port.read(REGISTER_COUNT - 2, &mut qword);
        assert_eq!(qword[2..], [OPEN_BUS; 6]);
        let mut far = [0; 4];
        port.read(u64::MAX, &mut far);
        assert_eq!(far, [OPEN_BUS; 4]);
        // ...and writes there go nowhere.
        port.write(u64::MAX - 1, &[1, 2, 3, 4]);
        assert_eq!(out.contents(), b"x");
    }

    #[test]
    fn input_is_all_or_nothing() {
        let (mut port, _, _) = port();
        let room = port.input_room();
        port.enqueue_input(&vec![b'a'; room - 1]).unwrap();
        assert_eq!(
            port.enqueue_input(b"bc"),
            Err(SerialError::FifoFull { wanted: 2, free: 1 })
        );
        assert_eq!(port.state().uart.in_buffer.len(), room - 1);
        port.enqueue_input(b"b").unwrap();
        assert_eq!(port.input_room(), 0);
    }

    #[test]
    fn received_data_interrupt_fires_when_enabled() {
        let (mut port, _, irqs) = port();
        port.write(IER, &[IER_RX_DATA]);
        assert_eq!(irqs.take_pending(), 0);

        port.enqueue_input(b"k").unwrap();
        assert_eq!(irqs.take_pending(), 1 << 4);
        assert_eq!(read_reg(&mut port, IIR) & IIR_ID_MASK, IIR_RX_DATA);
        assert_eq!(read_reg(&mut port, DATA), b'k');
        assert_eq!(read_reg(&mut port, IIR) & IIR_NONE, IIR_NONE);
    }

    /// A sink whose line is cut: every write fails.
    struct Unplugged;

    impl Write for Unplugged {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_the_sink_refuses_are_counted_not_fatal() {
        let mut port = SerialPort::new(Box::new(Unplugged), IrqLines::new().line(4));
        port.write(DATA, b"ab");
        assert_eq!(port.lost_bytes(), 1, "only lane 0 is THR");
        port.write(DATA, b"c");
        assert_eq!(port.lost_bytes(), 2);
        assert_ne!(read_reg(&mut port, LSR) & LSR_THR_EMPTY, 0);
    }

    #[test]
    fn state_reflects_register_writes() {
        let (mut port, _, _) = port();
        port.write(IER, &[IER_RX_DATA]);
        port.enqueue_input(b"zz").unwrap();
        let state = port.state().uart;
        assert_eq!(state.interrupt_enable, IER_RX_DATA);
        assert_eq!(state.in_buffer, b"zz");
        assert_ne!(state.line_status & LSR_DATA_READY, 0);
    }

    #[test]
    fn iir_names_received_data_over_thr_empty() {
        let (mut port, _, _) = port();
        port.write(IER, &[IER_RX_DATA | IER_THR_EMPTY]);
        port.enqueue_input(b"r").unwrap();
        assert_eq!(
            read_reg(&mut port, IIR) & (IIR_ID_MASK | IIR_NONE),
            IIR_RX_DATA
        );
    }

    #[test]
    fn fcr_empties_the_receiver_fifo() {
        let (mut port, _, _) = port();
        port.write(IER, &[IER_RX_DATA]);
        port.enqueue_input(b"stale").unwrap();
        // Without the FIFO enable bit the other FCR bits do nothing.
        port.write(FCR, &[FCR_CLEAR_RX]);
        assert_ne!(read_reg(&mut port, LSR) & LSR_DATA_READY, 0);
        // The reset works with DLAB set too, and leaves LCR as it was.
        port.write(LCR, &[LCR_DLAB]);
        port.write(FCR, &[FCR_FIFO_ENABLE | FCR_CLEAR_RX]);
        assert_eq!(read_reg(&mut port, LCR), LCR_DLAB);
        assert_eq!(read_reg(&mut port, LSR) & LSR_DATA_READY, 0);
        assert_eq!(read_reg(&mut port, IIR) & IIR_NONE, IIR_NONE);
        assert_eq!(port.input_room(), FIFO_SIZE);
    }

    /// Modem Control Register: bit 4 loops the transmitter back to the receiver.
    const MCR: u64 = 4;
    /// MCR's loopback bit.
    const MCR_LOOPBACK: u8 = 1 << 4;

    /// A UART with its sink and IRQ lines, so a test sees everything it does.
    struct Rig {
        port: SerialPort,
        out: SharedBuffer,
        irqs: IrqLines,
    }

    impl Rig {
        fn new() -> Self {
            let (port, out, irqs) = port();
            Self { port, out, irqs }
        }
    }

    /// Something the guest or the front end does to the UART.
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        Write(u64, u8),
        Read(u64),
        Input(Vec<u8>),
    }

    impl Restorable for Rig {
        type State = SerialPortState;
        type Op = Op;
        /// A read's byte (or whether input was taken), the bytes sent and the IRQ edges
        /// raised meanwhile.
        type Seen = (Option<u8>, Vec<u8>, u16);

        fn save(&self) -> SerialPortState {
            self.port.state()
        }

        fn twin(&self, state: &SerialPortState) -> Result<Self, String> {
            let (out, irqs) = (SharedBuffer::new(), IrqLines::new());
            let port = SerialPort::from_state(state, Box::new(out.clone()), irqs.line(4))
                .map_err(|e| e.to_string())?;
            Ok(Self { port, out, irqs })
        }

        fn apply(&mut self, op: &Op) -> Self::Seen {
            let seen = match op {
                Op::Write(reg, value) => {
                    self.port.write(*reg, &[*value]);
                    None
                }
                Op::Read(reg) => Some(read_reg(&mut self.port, *reg)),
                Op::Input(bytes) => Some(u8::from(self.port.enqueue_input(bytes).is_ok())),
            };
            (seen, self.out.take(), self.irqs.take_pending())
        }
    }

    /// What the guest's driver does after a restore: check why it was interrupted, drain
    /// the FIFO, send, and switch interrupts.
    fn probe() -> Vec<Op> {
        use Op::*;
        let mut ops = vec![Read(IIR), Read(LSR), Read(IIR)];
        ops.extend((0..4).flat_map(|_| [Read(LSR), Read(DATA), Read(IIR)]));
        ops.extend([
            Write(DATA, b'!'),
            Read(IIR),
            Write(IER, 0),
            Input(b"xy".to_vec()),
            Write(IER, IER_RX_DATA),
            Read(IIR),
            Read(DATA),
            Write(LCR, LCR_DLAB),
            Read(DATA),
            Read(IER),
            Write(LCR, 0),
        ]);
        ops
    }

    #[test]
    fn a_restored_uart_keeps_its_fifo_and_pending_interrupts() {
        use Op::*;
        let prefix = [
            Write(LCR, LCR_DLAB),
            Write(DATA, 0x01),
            Write(IER, 0x00),
            Write(LCR, 0x03),
            Write(7, 0x5A),
            Write(IER, IER_RX_DATA | IER_THR_EMPTY),
            Write(DATA, b'a'),
            Input(b"abc".to_vec()),
            Read(DATA),
        ];
        let mut snapshot = Rig::new();
        snapshot.run(&prefix);
        let state = snapshot.save().uart;
        assert_eq!(state.in_buffer, b"bc");
        assert_eq!(
            state.interrupt_identification, IIR_THR_EMPTY,
            "THR empty pending"
        );

        let [original, restored] = original_and_restored(Rig::new(), &prefix, &probe());
        assert_eq!(
            original.0[0],
            (Some(IIR_THR_EMPTY | 0xC0), vec![], 0),
            "no new edge"
        );
        assert_eq!(original, restored);
    }

    #[test]
    fn a_restored_uart_in_loopback_keeps_looping() {
        use Op::*;
        let prefix = [
            Write(MCR, MCR_LOOPBACK),
            Write(IER, IER_RX_DATA),
            Write(DATA, b'q'),
        ];
        let tail = [vec![Write(DATA, b'r'), Write(MCR, 0)], probe()].concat();
        let [original, restored] = original_and_restored(Rig::new(), &prefix, &tail);
        assert_eq!(original, restored);
    }

    #[test]
    fn restore_in_place_keeps_the_sink_and_the_line() {
        let (mut other, _, _) = port();
        let (mut port, out, irqs) = port();
        other.write(IER, &[IER_THR_EMPTY]);
        other.enqueue_input(b"z").unwrap();
        port.restore(&other.state()).unwrap();
        assert_eq!(port.state(), other.state());
        assert_eq!(
            irqs.take_pending(),
            0,
            "pending interrupts are not signalled again"
        );
        port.write(DATA, b"k");
        assert_eq!(out.contents(), b"k");
        assert_eq!(
            irqs.take_pending(),
            0,
            "the THR-empty interrupt was still pending"
        );
        assert_eq!(read_reg(&mut port, IIR) & IIR_ID_MASK, IIR_THR_EMPTY);
        port.write(DATA, b"l");
        assert_eq!(irqs.take_pending(), 1 << 4);
    }

    #[test]
    fn states_vm_superio_never_reaches_are_refused() {
        let (mut port, _, _) = port();
        let good = port.state();
        let refused = |change: &dyn Fn(&mut SerialState)| {
            let mut bad = good.clone();
            change(&mut bad.uart);
            let (out, irqs) = (SharedBuffer::new(), IrqLines::new());
            SerialPort::from_state(&bad, Box::new(out), irqs.line(4)).unwrap_err()
        };
        assert_eq!(
            refused(&|s| s.in_buffer = vec![0; FIFO_SIZE + 1]),
            SerialStateError::FifoOverflow { len: FIFO_SIZE + 1 }
        );
        assert_eq!(
            refused(&|s| s.interrupt_enable = 0x10),
            SerialStateError::InterruptEnable { value: 0x10 }
        );
        for iir in [0x00, 0x03, 0x08] {
            assert_eq!(
                refused(&|s| s.interrupt_identification = iir),
                SerialStateError::InterruptIdentification { value: iir }
            );
        }
        assert_eq!(
            refused(&|s| s.interrupt_identification = IIR_RX_DATA),
            SerialStateError::ReceivedDataWithoutData
        );
        assert_eq!(
            refused(&|s| s.line_status |= LSR_DATA_READY),
            SerialStateError::LineStatus {
                value: LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY | LSR_DATA_READY,
                expected: LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY
            }
        );
        // A refused restore leaves the UART as it was.
        let mut bad = good.clone();
        bad.uart.scratch = 7;
        bad.uart.interrupt_enable = 0xFF;
        assert!(port.restore(&bad).is_err());
        assert_eq!(port.state(), good);
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..REGISTER_COUNT, any::<u8>()).prop_map(|(reg, value)| Op::Write(reg, value)),
            4 => (0..REGISTER_COUNT).prop_map(Op::Read),
            1 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Op::Input),
        ]
    }

    state_proptests!(Rig::new(), op());
}

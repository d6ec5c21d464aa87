//! A 16550 UART: vm-superio's register model behind a bus adapter.
//!
//! vm-superio decodes the eight registers; this file maps bus accesses onto them one byte
//! at a time, as the ISA bus does for an 8-bit device, and connects the UART's output
//! line to a byte sink and its interrupt output to an [`IrqLine`].

use std::fmt;
use std::io::Write;

use vm_superio::serial::{Error as UartError, NoEvents};
use vm_superio::{Serial, SerialState};

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

/// LSR bit: at least one received byte is waiting in RBR.
pub const LSR_DATA_READY: u8 = 1 << 0;
/// LSR bit: THR can take another byte.
pub const LSR_THR_EMPTY: u8 = 1 << 5;

/// The register model: interrupts go to an IRQ line, events are not observed, and output
/// goes to whatever sink the front end chose.
type Uart = Serial<IrqLine, NoEvents, Box<dyn Write + Send>>;

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
            uart: Serial::new(irq, out),
            lost_bytes: 0,
        }
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
    pub fn state(&self) -> SerialState {
        self.uart.state()
    }

    /// How many bytes the guest sent that the sink failed to take.
    pub fn lost_bytes(&self) -> u64 {
        self.lost_bytes
    }
}

impl BusDevice for SerialPort {
    /// Byte lane `i` reads register `offset + i`; lanes past the register file read as an
    /// undriven bus.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_byte_lanes(offset, data, REGISTER_COUNT, |reg| self.uart.read(reg));
    }

    /// Byte lane `i` writes register `offset + i`; lanes past the register file are lost.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        write_byte_lanes(offset, data, REGISTER_COUNT, |reg, byte| {
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
    use std::io;

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
        assert_eq!(port.state().in_buffer.len(), room - 1);
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
        let state = port.state();
        assert_eq!(state.interrupt_enable, IER_RX_DATA);
        assert_eq!(state.in_buffer, b"zz");
        assert_ne!(state.line_status & LSR_DATA_READY, 0);
    }
}

//! The "popek-pc" board's legacy devices, wired on their ports.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::bus::Bus;
use crate::debug_exit::DebugExit;
use crate::irq::IrqLines;
use crate::serial::{self, SerialPort};

/// COM1's I/O base: where the BIOS, Linux and every PC OS look for the first serial port.
pub const COM1_BASE: u64 = 0x3F8;
/// COM1's port span: one port per UART register.
pub const COM1_LEN: u64 = serial::REGISTER_COUNT;
/// COM1's interrupt line on the PIC, by the same PC convention.
pub const COM1_IRQ: u8 = 4;

/// isa-debug-exit's port: the one `qemu -device isa-debug-exit,iobase=0xf4` uses, so the
/// same test images run under QEMU and Popek.
pub const DEBUG_EXIT_BASE: u64 = 0xF4;
/// isa-debug-exit's port span: a dword, as with QEMU's `iosize=0x04`.
pub const DEBUG_EXIT_LEN: u64 = 4;

/// The board's devices and the buses they are wired to.
#[derive(Debug)]
pub struct PcDevices {
    /// The port I/O bus (`in`/`out`): COM1 and isa-debug-exit.
    pub pio: Bus,
    /// The MMIO bus: no devices yet, so every access is unclaimed.
    pub mmio: Bus,
    /// COM1, also held here so the front end can feed it input and inspect it.
    pub serial: Arc<Mutex<SerialPort>>,
    /// The interrupt requests the devices raise, for the interrupt controller.
    pub irqs: IrqLines,
}

impl PcDevices {
    /// The board at power-on, with COM1's output going to `serial_out`.
    pub fn new(serial_out: Box<dyn Write + Send>) -> Self {
        let irqs = IrqLines::new();
        let serial = Arc::new(Mutex::new(SerialPort::new(serial_out, irqs.line(COM1_IRQ))));
        let mut pio = Bus::new();
        // Fixed, disjoint ranges on an empty bus: a failure is a bug in the constants
        // above, which every test that builds the board would catch.
        pio.insert(COM1_BASE, COM1_LEN, serial.clone())
            .expect("COM1 fits on the empty port bus");
        pio.insert(
            DEBUG_EXIT_BASE,
            DEBUG_EXIT_LEN,
            Arc::new(Mutex::new(DebugExit)),
        )
        .expect("isa-debug-exit does not overlap COM1");
        Self {
            pio,
            mmio: Bus::new(),
            serial,
            irqs,
        }
    }
}

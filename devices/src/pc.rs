//! The "popek-pc" board's legacy devices, wired on their ports.
//!
//! # Who calls what
//! The guest reaches every device through [`PcDevices::pio`]. The VMM, which owns virtual
//! time and the CPU's INTR pin:
//! 1. calls [`PcDevices::advance_clock`] with the current virtual time before it
//!    dispatches a port access and whenever it is about to check for interrupts, so the
//!    PIT's counters read right and its IRQ 0 edges reach the PIC;
//! 2. calls [`PcDevices::deliver_pending_irqs`] after a device access that may have
//!    raised an IRQ (`advance_clock` does it too);
//! 3. asks [`PicPair::has_interrupt`] at instruction boundaries where the guest's IF is
//!    set, and if so injects [`PicPair::acknowledge`]'s vector;
//! 4. with the CPU halted, fast-forwards virtual time to [`Pit8254::next_irq0_ns`].

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::bus::{Bus, SharedDevice};
use crate::debug_exit::DebugExit;
use crate::irq::IrqLines;
use crate::lock;
use crate::pic::{self, Chip, PicPair, PicPort};
use crate::pit::{self, Pit8254};
use crate::serial::{self, SerialPort};
use crate::system_control::{self, SystemControl};

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

/// The master 8259A's ports (command, data): IRQs 0..=7.
pub const PIC_MASTER_BASE: u64 = 0x20;
/// The slave 8259A's ports: IRQs 8..=15.
pub const PIC_SLAVE_BASE: u64 = 0xA0;
/// Each PIC's port span.
pub const PIC_LEN: u64 = pic::REGISTER_COUNT;

/// The 8254 PIT's ports: counters 0..=2, then the control word.
pub const PIT_BASE: u64 = 0x40;
/// The PIT's port span.
pub const PIT_LEN: u64 = pit::REGISTER_COUNT;
/// The IRQ counter 0's OUT drives: the system tick.
pub const PIT_IRQ: u8 = 0;

/// System control port B: NMI status/control, PIT counter 2 GATE and OUT, speaker.
pub const SYSTEM_CONTROL_PORT: u64 = 0x61;
/// Its span: one port.
pub const SYSTEM_CONTROL_LEN: u64 = system_control::REGISTER_COUNT;

/// The board's devices and the buses they are wired to.
#[derive(Debug)]
pub struct PcDevices {
    /// The port I/O bus (`in`/`out`): PIC pair, PIT, port 0x61, COM1 and isa-debug-exit.
    pub pio: Bus,
    /// The MMIO bus: no devices yet, so every access is unclaimed.
    pub mmio: Bus,
    /// COM1, also held here so the front end can feed it input and inspect it.
    pub serial: Arc<Mutex<SerialPort>>,
    /// The interrupt requests the devices raise, for the interrupt controller.
    pub irqs: IrqLines,
    /// The master and slave PIC, also held here for the VMM's interrupt acknowledge.
    pub pic: Arc<Mutex<PicPair>>,
    /// The PIT, also held here for the VMM to advance virtual time.
    pub pit: Arc<Mutex<Pit8254>>,
}

impl PcDevices {
    /// The board at power-on, with COM1's output going to `serial_out`.
    pub fn new(serial_out: Box<dyn Write + Send>) -> Self {
        let irqs = IrqLines::new();
        let serial = Arc::new(Mutex::new(SerialPort::new(serial_out, irqs.line(COM1_IRQ))));
        let pic = Arc::new(Mutex::new(PicPair::new()));
        let pit = Arc::new(Mutex::new(Pit8254::new()));
        let wiring: [(u64, u64, SharedDevice); 6] = [
            (
                PIC_MASTER_BASE,
                PIC_LEN,
                Arc::new(Mutex::new(PicPort::new(pic.clone(), Chip::Master))),
            ),
            (
                PIC_SLAVE_BASE,
                PIC_LEN,
                Arc::new(Mutex::new(PicPort::new(pic.clone(), Chip::Slave))),
            ),
            (PIT_BASE, PIT_LEN, pit.clone()),
            (
                SYSTEM_CONTROL_PORT,
                SYSTEM_CONTROL_LEN,
                Arc::new(Mutex::new(SystemControl::new(pit.clone()))),
            ),
            (COM1_BASE, COM1_LEN, serial.clone()),
            (
                DEBUG_EXIT_BASE,
                DEBUG_EXIT_LEN,
                Arc::new(Mutex::new(DebugExit)),
            ),
        ];
        let mut pio = Bus::new();
        for (base, len, dev) in wiring {
            // Fixed, disjoint ranges on an empty bus: a failure is a bug in the constants
            // above, which every test that builds the board would catch.
            pio.insert(base, len, dev)
                .expect("the board's port ranges are disjoint");
        }
        Self {
            pio,
            mmio: Bus::new(),
            serial,
            irqs,
            pic,
            pit,
        }
    }

    /// Moves the IRQ edges devices raised since the last call (COM1's IRQ 4, say) into
    /// the PIC.
    pub fn deliver_pending_irqs(&self) {
        let pending = self.irqs.take_pending();
        if pending == 0 {
            return;
        }
        let mut pic = lock(&self.pic);
        for irq in (0..pic::IRQ_COUNT).filter(|irq| pending & (1 << irq) != 0) {
            pic.raise_irq(irq);
        }
    }

    /// Advances the PIT to virtual time `now_ns` (nanoseconds since machine start),
    /// raises IRQ 0 if counter 0's OUT rose meanwhile, and delivers every pending IRQ to
    /// the PIC. Edges between two calls merge into one request, as they would in the
    /// PIC's IRR while the CPU had interrupts off.
    pub fn advance_clock(&self, now_ns: u64) {
        if lock(&self.pit).advance(now_ns) > 0 {
            self.irqs.raise(PIT_IRQ);
        }
        self.deliver_pending_irqs();
    }
}

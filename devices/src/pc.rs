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
//!
//! # State
//! [`PcDevices::state`] gathers every device's state into a [`PcState`];
//! [`PcDevices::from_state`] builds a board from one and [`PcDevices::restore`] puts an
//! existing board in one, after checking all of it. isa-debug-exit keeps no state (a
//! write is an exit request the VMM acts on at once), and the MMIO bus's ROM is the
//! machine's configuration (the image it was built with), not state.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::ata::{self, AtaControl, AtaDisk, AtaState, AtaStateError};
use crate::bus::{Bus, BusError, SharedDevice};
use crate::debug_exit::DebugExit;
use crate::disk::Disk;
use crate::irq::IrqLines;
use crate::lock;
use crate::pic::{self, Chip, PicPair, PicPairState, PicPort, PicStateError};
use crate::pit::{self, Pit8254, PitState, PitStateError};
use crate::serial::{self, SerialPort, SerialPortState, SerialStateError};
use crate::system_control::{self, SystemControl, SystemControlState, SystemControlStateError};
use crate::virtio::{
    mmio, VirtioDevice, VirtioMmio, VirtioMmioState, VirtioStateError, VirtioTransport, VirtioView,
};

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

/// The primary ATA channel's command block ports (0x1F0-0x1F7).
pub const ATA_BASE: u64 = 0x1F0;
/// Its span.
pub const ATA_LEN: u64 = ata::REGISTER_COUNT;
/// The primary channel's control block port: Alternate Status / Device Control.
pub const ATA_CONTROL_PORT: u64 = 0x3F6;
/// The primary channel's interrupt line, by PC convention.
pub const ATA_IRQ: u8 = 14;

/// Where the first virtio-mmio device's register window is; device n's is
/// [`mmio::WINDOW`] (4 KiB) further on per slot, above the largest RAM (3 GiB) and below
/// the BIOS at the top of the 4 GiB space.
pub const VIRTIO_MMIO_BASE: u64 = 0xD000_0000;
/// The IRQ of each virtio-mmio slot, in slot order: PC lines no legacy device of
/// popek-pc drives (the same slots keep the same lines whatever is attached).
pub const VIRTIO_IRQS: [u8; 4] = [5, 9, 10, 11];

/// A virtio-mmio device on the board.
#[derive(Clone)]
pub struct VirtioSlot {
    /// Its register window's base.
    pub base: u64,
    /// Its IRQ line.
    pub irq: u8,
    /// The device.
    pub device: Arc<Mutex<dyn VirtioTransport>>,
}

impl std::fmt::Debug for VirtioSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioSlot")
            .field("base", &self.base)
            .field("irq", &self.irq)
            .field("device", &lock(&self.device).name())
            .finish()
    }
}

/// Every device's state on the board: what a snapshot saves of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcState {
    /// The 8259A pair.
    pub pic: PicPairState,
    /// The 8254 and virtual time as it last saw it.
    pub pit: PitState,
    /// Port 0x61's own bits (GATE 2 is in `pit`).
    pub system_control: SystemControlState,
    /// COM1.
    pub serial: SerialPortState,
    /// IRQ edges devices raised that have not reached the PIC yet (bit n = IRQ n).
    pub pending_irqs: u16,
    /// The virtio-mmio devices, in slot order.
    #[serde(default)]
    pub virtio: Vec<VirtioMmioState>,
    /// The ATA disk, if the board has one.
    #[serde(default)]
    pub ata: Option<AtaState>,
}

/// Why a [`PcState`] cannot be restored: the device whose state is wrong says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcStateError {
    /// The PIC pair's state.
    #[error(transparent)]
    Pic(#[from] PicStateError),
    /// The PIT's state.
    #[error(transparent)]
    Pit(#[from] PitStateError),
    /// Port 0x61's state.
    #[error(transparent)]
    SystemControl(#[from] SystemControlStateError),
    /// COM1's state.
    #[error(transparent)]
    Serial(#[from] SerialStateError),
    /// Another number of virtio devices than the board has.
    #[error("the state has {found} virtio devices, the board {expected}")]
    VirtioCount {
        /// The board's.
        expected: usize,
        /// The state's.
        found: usize,
    },
    /// A virtio device's state.
    #[error(transparent)]
    Virtio(#[from] VirtioStateError),
    /// An ATA state for a board without the disk, or none for one with it.
    #[error("the state {} an ATA disk, the board {}", have(*.state), have(*.board))]
    AtaPresence {
        /// Whether the board has one.
        board: bool,
        /// Whether the state has one.
        state: bool,
    },
    /// The ATA disk's state.
    #[error(transparent)]
    Ata(#[from] AtaStateError),
}

fn have(present: bool) -> &'static str {
    if present {
        "has"
    } else {
        "has no"
    }
}

/// Why a device cannot be attached to the board.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Every virtio-mmio slot is taken.
    #[error("popek-pc has {} virtio-mmio slots, all taken", VIRTIO_IRQS.len())]
    NoVirtioSlot,
    /// The device's range is taken.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// The board's devices and the buses they are wired to.
#[derive(Debug)]
pub struct PcDevices {
    /// The port I/O bus (`in`/`out`): PIC pair, PIT, port 0x61, COM1 and isa-debug-exit.
    pub pio: Bus,
    /// The MMIO bus: the virtio-mmio devices attached (and a BIOS image, if any).
    pub mmio: Bus,
    /// The virtio-mmio devices, in slot order.
    pub virtio: Vec<VirtioSlot>,
    /// The ATA disk on the primary channel, if attached.
    pub ata: Option<Arc<Mutex<AtaDisk>>>,
    /// COM1, also held here so the front end can feed it input and inspect it.
    pub serial: Arc<Mutex<SerialPort>>,
    /// The interrupt requests the devices raise, for the interrupt controller.
    pub irqs: IrqLines,
    /// The master and slave PIC, also held here for the VMM's interrupt acknowledge.
    pub pic: Arc<Mutex<PicPair>>,
    /// The PIT, also held here for the VMM to advance virtual time.
    pub pit: Arc<Mutex<Pit8254>>,
    /// Port 0x61, also held here for snapshots.
    pub system_control: Arc<Mutex<SystemControl>>,
}

impl PcDevices {
    /// The board at power-on, with COM1's output going to `serial_out`.
    pub fn new(serial_out: Box<dyn Write + Send>) -> Self {
        let irqs = IrqLines::new();
        let serial = Arc::new(Mutex::new(SerialPort::new(serial_out, irqs.line(COM1_IRQ))));
        let pic = Arc::new(Mutex::new(PicPair::new()));
        let pit = Arc::new(Mutex::new(Pit8254::new()));
        let system_control = Arc::new(Mutex::new(SystemControl::new(pit.clone())));
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
                system_control.clone(),
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
            virtio: Vec::new(),
            ata: None,
            serial,
            irqs,
            pic,
            pit,
            system_control,
        }
    }

    /// The board `state` describes, with COM1's output going to `serial_out`.
    pub fn from_state(
        state: &PcState,
        serial_out: Box<dyn Write + Send>,
    ) -> Result<Self, PcStateError> {
        let board = Self::new(serial_out);
        board.restore(state)?;
        Ok(board)
    }

    /// Every device's state. Call it with the board at rest (no engine running), so the
    /// devices are seen at one instant.
    pub fn state(&self) -> PcState {
        PcState {
            pic: lock(&self.pic).state(),
            pit: lock(&self.pit).state(),
            system_control: lock(&self.system_control).state(),
            serial: lock(&self.serial).state(),
            pending_irqs: self.irqs.pending(),
            virtio: self
                .virtio
                .iter()
                .map(|v| lock(&v.device).state())
                .collect(),
            ata: self.ata.as_ref().map(|ata| lock(ata).state()),
        }
    }

    /// Puts every device in `state`, keeping COM1's sink. All of `state` is checked
    /// before anything changes, so on an error the board is as it was.
    pub fn restore(&self, state: &PcState) -> Result<(), PcStateError> {
        let pic = PicPair::from_state(&state.pic)?;
        let pit = Pit8254::from_state(&state.pit)?;
        SystemControl::from_state(&state.system_control, self.pit.clone())?;
        state.serial.validate()?;
        if state.virtio.len() != self.virtio.len() {
            return Err(PcStateError::VirtioCount {
                expected: self.virtio.len(),
                found: state.virtio.len(),
            });
        }
        for (slot, virtio) in self.virtio.iter().zip(&state.virtio) {
            lock(&slot.device).check_state(virtio)?;
        }
        if self.ata.is_some() != state.ata.is_some() {
            return Err(PcStateError::AtaPresence {
                board: self.ata.is_some(),
                state: state.ata.is_some(),
            });
        }
        if let (Some(ata), Some(saved)) = (&self.ata, &state.ata) {
            lock(ata).check_state(saved)?;
        }
        *lock(&self.pic) = pic;
        *lock(&self.pit) = pit;
        lock(&self.system_control).restore(&state.system_control)?;
        lock(&self.serial).restore(&state.serial)?;
        for (slot, virtio) in self.virtio.iter().zip(&state.virtio) {
            lock(&slot.device).restore(virtio)?;
        }
        if let (Some(ata), Some(saved)) = (&self.ata, &state.ata) {
            lock(ata).restore(saved)?;
        }
        self.irqs.set_pending(state.pending_irqs);
        Ok(())
    }

    /// Puts an ATA disk serving `disk` on the primary channel (0x1F0-0x1F7, 0x3F6,
    /// IRQ 14).
    pub fn attach_ata(&mut self, disk: Disk) -> Result<Arc<Mutex<AtaDisk>>, AttachError> {
        let ata = Arc::new(Mutex::new(AtaDisk::new(disk, self.irqs.line(ATA_IRQ))));
        self.pio.insert(ATA_BASE, ATA_LEN, ata.clone())?;
        self.pio.insert(
            ATA_CONTROL_PORT,
            1,
            Arc::new(Mutex::new(AtaControl(ata.clone()))),
        )?;
        self.ata = Some(ata.clone());
        Ok(ata)
    }

    /// Puts `device` in the next free virtio-mmio slot, reaching guest memory through
    /// `mem`; returns the slot.
    pub fn attach_virtio<M: vm_memory::GuestMemory + Send + 'static>(
        &mut self,
        device: Box<dyn VirtioDevice<M>>,
        mem: M,
    ) -> Result<VirtioSlot, AttachError> {
        let n = self.virtio.len();
        let irq = *VIRTIO_IRQS.get(n).ok_or(AttachError::NoVirtioSlot)?;
        let base = VIRTIO_MMIO_BASE + n as u64 * mmio::WINDOW;
        let device = Arc::new(Mutex::new(VirtioMmio::new(
            device,
            mem,
            self.irqs.line(irq),
        )));
        self.mmio.insert(base, mmio::WINDOW, device.clone())?;
        let slot = VirtioSlot { base, irq, device };
        self.virtio.push(slot.clone());
        Ok(slot)
    }

    /// The virtio devices as a Linux-style kernel command line announces them:
    /// `virtio_mmio.device=4K@0xd0000000:5`, one word per device, space-separated. QEMU's
    /// microvm machine announces its virtio-mmio devices the same way, so a guest that
    /// reads them finds its devices on both.
    pub fn virtio_cmdline(&self) -> String {
        self.virtio
            .iter()
            .map(|slot| {
                format!(
                    "virtio_mmio.device={}K@{:#x}:{}",
                    mmio::WINDOW >> 10,
                    slot.base,
                    slot.irq
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Every virtio device and its queues as they stand, in slot order (see
    /// [`crate::virtio::inspect`]): read without disturbing the guest.
    pub fn virtio_views(&self) -> Vec<VirtioView> {
        self.virtio.iter().map(|v| lock(&v.device).view()).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::DeviceRequest;
    use crate::shared_buffer::SharedBuffer;
    use crate::state_test::{original_and_restored, state_proptests, Restorable};
    use proptest::prelude::*;

    /// A board with its console, so a test sees everything COM1 sends.
    struct Rig {
        pc: PcDevices,
        console: SharedBuffer,
    }

    impl Rig {
        fn new() -> Self {
            let console = SharedBuffer::new();
            let pc = PcDevices::new(Box::new(console.clone()));
            Self { pc, console }
        }

        /// A board whose PICs the guest has initialized, so IRQs reach the CPU.
        fn initialized() -> Self {
            let mut rig = Self::new();
            rig.run(&init_pics());
            rig
        }
    }

    /// Something the guest, the VMM or the front end does to the board.
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        /// The guest reads `len` bytes at a port.
        In(u64, usize),
        /// The guest writes bytes at a port.
        Out(u64, Vec<u8>),
        /// Virtual time moves on by this many nanoseconds.
        Advance(u64),
        /// The VMM moves the raised IRQ edges into the PIC.
        Deliver,
        /// The VMM runs an interrupt acknowledge.
        Acknowledge,
        /// The front end types at COM1.
        Type(Vec<u8>),
    }

    /// What an operation shows: the bytes read, a device request, or an acknowledge's
    /// vector.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Shown {
        Nothing,
        Bytes(Vec<u8>),
        Request(Option<DeviceRequest>),
        Vector(Option<u8>),
    }

    impl Restorable for Rig {
        type State = PcState;
        type Op = Op;
        /// What the operation shows, then the console's new bytes, INTR, and the time of
        /// the next IRQ 0 edge.
        type Seen = (Shown, Vec<u8>, bool, Option<u64>);

        fn save(&self) -> PcState {
            self.pc.state()
        }

        fn twin(&self, state: &PcState) -> Result<Self, String> {
            let console = SharedBuffer::new();
            let pc = PcDevices::from_state(state, Box::new(console.clone()))
                .map_err(|e| e.to_string())?;
            Ok(Self { pc, console })
        }

        fn apply(&mut self, op: &Op) -> Self::Seen {
            let pc = &self.pc;
            let shown = match op {
                Op::In(port, len) => {
                    let mut data = vec![0; *len];
                    match pc.pio.read(*port, &mut data) {
                        Ok(()) => Shown::Bytes(data),
                        Err(_) => Shown::Nothing,
                    }
                }
                Op::Out(port, data) => pc
                    .pio
                    .write(*port, data)
                    .map_or(Shown::Nothing, Shown::Request),
                Op::Advance(ns) => {
                    let now = lock(&pc.pit).state().now_ns;
                    pc.advance_clock(now.saturating_add(*ns));
                    Shown::Nothing
                }
                Op::Deliver => {
                    pc.deliver_pending_irqs();
                    Shown::Nothing
                }
                Op::Acknowledge => Shown::Vector(lock(&pc.pic).acknowledge()),
                Op::Type(bytes) => {
                    let taken = lock(&pc.serial).enqueue_input(bytes).is_ok();
                    Shown::Bytes(vec![u8::from(taken)])
                }
            };
            (
                shown,
                self.console.take(),
                lock(&pc.pic).has_interrupt(),
                lock(&pc.pit).next_irq0_ns(),
            )
        }
    }

    /// ICW1..ICW4 and an open mask for both chips, as Linux programs them.
    fn init_pics() -> Vec<Op> {
        [(PIC_MASTER_BASE, 0x20, 1 << 2), (PIC_SLAVE_BASE, 0x28, 2)]
            .into_iter()
            .flat_map(|(base, vector, icw3)| {
                [
                    Op::Out(base, vec![0x11]),
                    Op::Out(base + 1, vec![vector]),
                    Op::Out(base + 1, vec![icw3]),
                    Op::Out(base + 1, vec![0x01]),
                    Op::Out(base + 1, vec![0x00]),
                ]
            })
            .collect()
    }

    /// A guest part-way through a run: a 1 kHz tick with one tick in service, COM1 with
    /// its interrupts on, typed input not yet delivered, a byte sent, counter 2 latched
    /// and half read, the speaker on.
    fn mid_run() -> Vec<Op> {
        use Op::*;
        let mut ops = init_pics();
        ops.extend([
            Out(PIT_BASE + 3, vec![0x34]),
            Out(PIT_BASE, vec![0xA9]),
            Out(PIT_BASE, vec![0x04]),
            Out(COM1_BASE + 1, vec![0x03]),
            Advance(1_500_000),
            Acknowledge,
            Out(PIT_BASE + 3, vec![0xB6]),
            Out(PIT_BASE + 2, vec![0x00]),
            Out(PIT_BASE + 2, vec![0x20]),
            Out(SYSTEM_CONTROL_PORT, vec![0x03]),
            Advance(300_000),
            Out(PIT_BASE + 3, vec![0x80]),
            In(PIT_BASE + 2, 1),
            Out(COM1_BASE, b"h".to_vec()),
            Type(b"in".to_vec()),
        ]);
        ops
    }

    /// What the guest and VMM do next: end the tick, take the interrupts as they come,
    /// read the rest of the latch and COM1's input, and exit.
    fn rest_of_run() -> Vec<Op> {
        use Op::*;
        let mut ops = vec![
            In(PIT_BASE + 2, 1),
            Out(PIC_MASTER_BASE, vec![0x20]),
            Deliver,
        ];
        for _ in 0..3 {
            ops.extend([
                Acknowledge,
                In(COM1_BASE + 2, 1),
                In(COM1_BASE + 5, 1),
                In(COM1_BASE, 1),
                Out(COM1_BASE, b"!".to_vec()),
                Out(PIC_MASTER_BASE, vec![0x20]),
                In(SYSTEM_CONTROL_PORT, 1),
                Advance(700_000),
            ]);
        }
        ops.push(Out(DEBUG_EXIT_BASE, vec![7]));
        ops
    }

    #[test]
    fn a_board_restored_mid_run_runs_on_as_the_original() {
        let mut snapshot = Rig::new();
        snapshot.run(&mid_run());
        let state = snapshot.save();
        assert_eq!(
            state.pending_irqs,
            1 << COM1_IRQ,
            "typed input not yet delivered"
        );
        assert_eq!(state.pic.master.isr, 1 << PIT_IRQ, "a tick in service");
        assert!(state.pit.counters[2].latched_count.is_some());
        assert_eq!(state.serial.uart.in_buffer, b"in");

        let [original, restored] = original_and_restored(Rig::new(), &mid_run(), &rest_of_run());
        let (seen, _) = &original;
        let received: Vec<u8> = rest_of_run()
            .iter()
            .zip(seen)
            .filter_map(|(op, (shown, ..))| match (op, shown) {
                (Op::In(COM1_BASE, 1), Shown::Bytes(bytes)) => Some(bytes[0]),
                _ => None,
            })
            .collect();
        assert_eq!(received, b"in\0", "COM1's input, then an empty FIFO");
        assert_eq!(
            seen.last().unwrap().0,
            Shown::Request(Some(DeviceRequest::Exit(7)))
        );
        assert_eq!(original, restored);
    }

    #[test]
    fn a_refused_state_leaves_the_board_as_it_was() {
        let rig = Rig::new();
        let mut good = Rig::new();
        good.run(&mid_run());
        let mut bad = good.save();
        bad.serial.uart.interrupt_enable = 0xF0;
        let before = rig.save();
        assert!(matches!(
            rig.pc.restore(&bad),
            Err(PcStateError::Serial(SerialStateError::InterruptEnable {
                value: 0xF0
            }))
        ));
        assert_eq!(rig.save(), before, "not even the PIC changed");
        rig.pc.restore(&good.save()).unwrap();
        assert_eq!(rig.save(), good.save());
    }

    /// A port of the board's devices, or one next to them.
    fn port() -> impl Strategy<Value = u64> {
        prop_oneof![
            PIC_MASTER_BASE..PIC_MASTER_BASE + PIC_LEN,
            PIC_SLAVE_BASE..PIC_SLAVE_BASE + PIC_LEN,
            PIT_BASE..PIT_BASE + PIT_LEN,
            Just(SYSTEM_CONTROL_PORT),
            COM1_BASE..COM1_BASE + COM1_LEN,
            DEBUG_EXIT_BASE..DEBUG_EXIT_BASE + DEBUG_EXIT_LEN + 1,
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let width = || proptest::sample::select(vec![1usize, 2, 4]);
        prop_oneof![
            4 => (port(), width()).prop_map(|(port, len)| Op::In(port, len)),
            4 => (port(), proptest::collection::vec(any::<u8>(), 1..=4))
                .prop_map(|(port, data)| Op::Out(port, data)),
            2 => (0..3_000_000u64).prop_map(Op::Advance),
            1 => Just(Op::Deliver),
            2 => Just(Op::Acknowledge),
            1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(Op::Type),
        ]
    }

    state_proptests!(Rig::initialized(), op());
}

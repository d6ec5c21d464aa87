//! The two cascaded Intel 8259A programmable interrupt controllers of a PC/AT.
//!
//! Each chip latches requests on its eight IR inputs, masks them (IMR), picks the one of
//! highest priority that beats everything in service (ISR), and answers the CPU's
//! interrupt acknowledge with a vector. The slave's INT output drives the master's IR 2,
//! so IRQs 8..=15 reach the CPU through the master.
//!
//! The model follows the datasheet for x86 mode with these simplifications:
//! - every input is edge-triggered (ICW1's LTIM is ignored): ISA lines are, and the VMM
//!   signals edges; the IRR is the edge latch, so there is no separate line level to keep;
//! - the master's IR 2 follows the slave's INT output as a level, so a slave request that
//!   vanishes before acknowledge yields the master's spurious IR 7, never the slave's;
//! - ICW1's ADI and ICW4's 8080/85, buffered and master/slave bits are ignored: they
//!   choose bus protocols and pin functions, and the chip's role is its wiring ([`Chip`]).
//!
//! # State
//! A chip's registers are a [`PicState`], plain data that serializes, and the pair's are
//! a [`PicPairState`]: [`PicPair::state`] copies them out, [`PicPair::from_state`] checks
//! them (a snapshot file may be hand-edited or corrupt) and builds a pair that behaves
//! exactly as the one they were taken from.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::bus::{read_byte_lanes, write_byte_lanes, BusDevice, DeviceRequest, OPEN_BUS};
use crate::lock;

/// How many consecutive ports a chip decodes: the command port and the data port.
pub const REGISTER_COUNT: u64 = 2;

/// Command port (A0 = 0): takes ICW1, OCW2 and OCW3; reads IRR, ISR or the poll word.
pub const COMMAND: u64 = 0;
/// Data port (A0 = 1): takes ICW2..ICW4 during initialization, then OCW1 (the IMR);
/// reads the IMR.
pub const DATA: u64 = 1;

/// Command-port bit that marks ICW1, which starts initialization.
pub const ICW1_INIT: u8 = 1 << 4;
/// ICW1 bit: an ICW4 follows.
pub const ICW1_IC4: u8 = 1 << 0;
/// ICW1 bit: single chip, no cascade, so no ICW3 follows.
pub const ICW1_SINGLE: u8 = 1 << 1;

/// ICW2 bits that give the vector base; the chip fills the low three with the IR level.
pub const ICW2_VECTOR_MASK: u8 = 0xF8;

/// ICW3 bits 2..0 on a slave: its ID, the master input it answers for on the cascade bus.
pub const ICW3_SLAVE_ID_MASK: u8 = 0x07;

/// ICW4 bit: automatic EOI, so acknowledge puts nothing in service.
pub const ICW4_AUTO_EOI: u8 = 1 << 1;
/// ICW4 bit: special fully nested mode: a master accepts a new request from a slave whose
/// IR is already in service (the slave orders its own requests).
pub const ICW4_SFNM: u8 = 1 << 4;

/// Command-port bit that, with [`ICW1_INIT`] clear, marks OCW3 rather than OCW2.
pub const OCW3_SELECT: u8 = 1 << 3;

/// OCW2 bits 7..5: the command.
pub const OCW2_COMMAND_MASK: u8 = 0xE0;
/// OCW2 bits 2..0: the IR level a specific command names.
pub const OCW2_LEVEL_MASK: u8 = 0x07;
/// OCW2 command: automatic EOI no longer rotates priorities.
pub const OCW2_CLEAR_ROTATE_AUTO_EOI: u8 = 0x00;
/// OCW2 command: end the in-service level of highest priority.
pub const OCW2_EOI: u8 = 0x20;
/// OCW2 command: end the named level.
pub const OCW2_SPECIFIC_EOI: u8 = 0x60;
/// OCW2 command: each automatic EOI makes the acknowledged level the lowest priority.
pub const OCW2_SET_ROTATE_AUTO_EOI: u8 = 0x80;
/// OCW2 command: non-specific EOI, then make the ended level the lowest priority.
pub const OCW2_ROTATE_EOI: u8 = 0xA0;
/// OCW2 command: make the named level the lowest priority.
pub const OCW2_SET_PRIORITY: u8 = 0xC0;
/// OCW2 command: specific EOI, then make the named level the lowest priority.
pub const OCW2_ROTATE_SPECIFIC_EOI: u8 = 0xE0;

/// OCW3 bit: the command port's next read is the ISR if [`OCW3_READ_REGISTER`] is set.
pub const OCW3_READ_ISR: u8 = 1 << 0;
/// OCW3 bit: change which register the command port reads ([`OCW3_READ_ISR`] picks).
pub const OCW3_READ_REGISTER: u8 = 1 << 1;
/// OCW3 bit: poll: the chip's next read, at either port, acknowledges and returns the
/// poll word.
pub const OCW3_POLL: u8 = 1 << 2;
/// OCW3 bit: the special mask mode becomes [`OCW3_SPECIAL_MASK`].
pub const OCW3_SET_SPECIAL_MASK: u8 = 1 << 6;
/// OCW3 bit: special mask mode: in-service levels block nothing, only the IMR masks.
pub const OCW3_SPECIAL_MASK: u8 = 1 << 5;

/// Poll word bit: a request was pending and is now in service; bits 2..0 give its level.
pub const POLL_PENDING: u8 = 1 << 7;

/// The IR level a chip reports when the request it signalled vanished before acknowledge.
pub const SPURIOUS_LEVEL: u8 = 7;
/// The IR level of lowest priority after initialization: IR 0 is then the highest.
const DEFAULT_LOWEST_PRIORITY: u8 = 7;
/// How many IR inputs a chip has.
const LEVELS: u8 = 8;
/// The master input the slave's INT drives.
pub const CASCADE_IRQ: u8 = 2;
/// The IRQ a device on ISA line 2 reaches: on an AT that line goes to the slave's IR 1,
/// because the master's IR 2 carries the cascade.
pub const REDIRECTED_IRQ2: u8 = 9;
/// The first IRQ on the slave.
const SLAVE_FIRST_IRQ: u8 = 8;
/// How many IRQ lines the pair takes: 0..=15.
pub const IRQ_COUNT: u8 = 16;

/// Which chip of the pair: fixed by the board's wiring (the SP/EN pin), not by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chip {
    /// IRQs 0..=7, at ports 0x20/0x21; signals the CPU.
    Master,
    /// IRQs 8..=15, at ports 0xA0/0xA1; signals the master's IR 2.
    Slave,
}

impl std::fmt::Display for Chip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Chip::Master => "master",
            Chip::Slave => "slave",
        })
    }
}

/// Which initialization word the data port takes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitStep {
    /// Initialized: the data port takes OCW1.
    Ready,
    /// ICW1 was written; ICW2 (the vector base) is next.
    Icw2,
    /// ICW3 (the cascade wiring) is next.
    Icw3,
    /// ICW4 (mode bits) is next.
    Icw4,
}

/// Why a [`PicState`] or [`PicPairState`] cannot be restored: it describes a chip no
/// sequence of port accesses produces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PicStateError {
    /// ICW2 keeps only bits 7..3 of the vector base.
    #[error("{chip} PIC: vector base {value:#04x} has bits 2..0 set")]
    VectorBase {
        /// The chip whose state is wrong.
        chip: Chip,
        /// The value found.
        value: u8,
    },
    /// Priority levels are 0..=7.
    #[error("{chip} PIC: lowest-priority level {value} is not in 0..=7")]
    LowestPriority {
        /// The chip whose state is wrong.
        chip: Chip,
        /// The value found.
        value: u8,
    },
    /// The initialization sequence waits for a word that ICW1 did not ask for (ICW3 in
    /// single mode, ICW4 without IC4).
    #[error("{chip} PIC: waits for {step:?}, which its ICW1 did not ask for")]
    InitStep {
        /// The chip whose state is wrong.
        chip: Chip,
        /// The step found.
        step: InitStep,
    },
    /// The master's IR 2 request is the slave's INT output, which the slave's own
    /// registers decide.
    #[error("master PIC: IRR bit 2 is {found}, but the slave's INT output is {expected}")]
    CascadeRequest {
        /// The bit found.
        found: bool,
        /// The slave's INT output.
        expected: bool,
    },
    /// While the pair signals INTR, it has signalled it since the last acknowledge.
    #[error("PIC pair: INTR is asserted but not recorded as signalled")]
    IntrNotSignalled,
}

/// One 8259A: its registers (the state a snapshot saves) and the logic that reads and
/// writes them.
///
/// The chip does not know its place in the pair: where the logic depends on it (the
/// cascade), [`PicPair`] passes the master's inputs that have a slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicState {
    /// Interrupt request register: latched requests not yet acknowledged (bit n = IR n).
    pub irr: u8,
    /// In-service register: acknowledged requests awaiting EOI.
    pub isr: u8,
    /// Interrupt mask register: masked inputs.
    pub imr: u8,
    /// The vector of IR 0 (ICW2, bits 2..0 clear); IR n gets `vector_base + n`.
    pub vector_base: u8,
    /// ICW3: on a master, the inputs with a slave; on a slave, bits 2..0 are its ID.
    pub icw3: u8,
    /// The IR level of lowest priority (7 unless rotated); the next one up is highest.
    pub lowest_priority: u8,
    /// Where the initialization sequence is.
    pub init: InitStep,
    /// ICW1's IC4: an ICW4 is part of the sequence.
    pub expect_icw4: bool,
    /// ICW1's SNGL: single-chip mode, no cascade and no ICW3.
    pub single: bool,
    /// ICW4's AEOI: acknowledge ends the interrupt at once.
    pub auto_eoi: bool,
    /// OCW2's rotate-in-automatic-EOI mode.
    pub rotate_on_auto_eoi: bool,
    /// ICW4's SFNM: special fully nested mode.
    pub special_fully_nested: bool,
    /// OCW3's special mask mode.
    pub special_mask: bool,
    /// OCW3's read-register select: the command port reads the ISR, not the IRR.
    pub read_isr: bool,
    /// OCW3's poll command: the chip's next read is a poll.
    pub poll: bool,
}

impl PicState {
    /// A chip at power-on. The datasheet leaves that state undefined; Popek masks every
    /// input so that nothing reaches a guest before it initializes the chip.
    fn power_on() -> Self {
        Self {
            irr: 0,
            isr: 0,
            imr: 0xFF,
            vector_base: 0,
            icw3: 0,
            lowest_priority: DEFAULT_LOWEST_PRIORITY,
            init: InitStep::Ready,
            expect_icw4: false,
            single: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            special_mask: false,
            read_isr: false,
            poll: false,
        }
    }

    /// Checks what no port access can break: the registers' own ranges and the
    /// initialization sequence's consistency.
    fn validate(&self, chip: Chip) -> Result<(), PicStateError> {
        if self.vector_base & !ICW2_VECTOR_MASK != 0 {
            return Err(PicStateError::VectorBase {
                chip,
                value: self.vector_base,
            });
        }
        if self.lowest_priority >= LEVELS {
            return Err(PicStateError::LowestPriority {
                chip,
                value: self.lowest_priority,
            });
        }
        let asked_for = match self.init {
            InitStep::Ready | InitStep::Icw2 => true,
            InitStep::Icw3 => !self.single,
            InitStep::Icw4 => self.expect_icw4,
        };
        if !asked_for {
            return Err(PicStateError::InitStep {
                chip,
                step: self.init,
            });
        }
        Ok(())
    }

    /// A read of the chip's register `reg`. A pending poll takes the read whichever port
    /// it is at: the datasheet makes the next RD pulse the poll, whatever A0 says.
    fn read(&mut self, reg: u8, cascade: u8) -> u8 {
        if self.poll {
            // A poll read is an acknowledge without INTA cycles.
            self.poll = false;
            return self
                .acknowledge(cascade)
                .map_or(0, |level| POLL_PENDING | level);
        }
        match u64::from(reg) {
            COMMAND if self.read_isr => self.isr,
            COMMAND => self.irr,
            _ => self.imr,
        }
    }

    fn write(&mut self, reg: u8, value: u8) {
        match u64::from(reg) {
            COMMAND if value & ICW1_INIT != 0 => self.icw1(value),
            COMMAND if value & OCW3_SELECT != 0 => self.ocw3(value),
            COMMAND => self.ocw2(value),
            _ => self.data(value),
        }
    }

    /// ICW1 restarts the chip: the datasheet clears the IMR, the edge latches (IRR) and
    /// the special mask, restores fixed priority and zeroes ICW4's functions. The ISR is
    /// cleared too, as QEMU does: a guest re-initializing expects no stale level to block
    /// its interrupts.
    fn icw1(&mut self, value: u8) {
        *self = Self {
            imr: 0,
            init: InitStep::Icw2,
            expect_icw4: value & ICW1_IC4 != 0,
            single: value & ICW1_SINGLE != 0,
            ..Self::power_on()
        };
    }

    /// The data port: the next initialization word, or OCW1.
    fn data(&mut self, value: u8) {
        let after_icw3 = if self.expect_icw4 {
            InitStep::Icw4
        } else {
            InitStep::Ready
        };
        self.init = match self.init {
            InitStep::Icw2 => {
                self.vector_base = value & ICW2_VECTOR_MASK;
                if self.single {
                    after_icw3
                } else {
                    InitStep::Icw3
                }
            }
            InitStep::Icw3 => {
                self.icw3 = value;
                after_icw3
            }
            InitStep::Icw4 => {
                self.auto_eoi = value & ICW4_AUTO_EOI != 0;
                self.special_fully_nested = value & ICW4_SFNM != 0;
                InitStep::Ready
            }
            InitStep::Ready => {
                self.imr = value;
                InitStep::Ready
            }
        };
    }

    fn ocw2(&mut self, value: u8) {
        let named = value & OCW2_LEVEL_MASK;
        match value & OCW2_COMMAND_MASK {
            OCW2_CLEAR_ROTATE_AUTO_EOI => self.rotate_on_auto_eoi = false,
            OCW2_SET_ROTATE_AUTO_EOI => self.rotate_on_auto_eoi = true,
            OCW2_EOI => {
                self.end_highest();
            }
            OCW2_ROTATE_EOI => {
                if let Some(level) = self.end_highest() {
                    self.lowest_priority = level;
                }
            }
            OCW2_SPECIFIC_EOI => self.isr &= !bit(named),
            OCW2_ROTATE_SPECIFIC_EOI => {
                self.isr &= !bit(named);
                self.lowest_priority = named;
            }
            OCW2_SET_PRIORITY => self.lowest_priority = named,
            // 0x40: no operation.
            _ => {}
        }
    }

    fn ocw3(&mut self, value: u8) {
        if value & OCW3_SET_SPECIAL_MASK != 0 {
            self.special_mask = value & OCW3_SPECIAL_MASK != 0;
        }
        if value & OCW3_READ_REGISTER != 0 {
            self.read_isr = value & OCW3_READ_ISR != 0;
        }
        self.poll = value & OCW3_POLL != 0;
    }

    /// Non-specific EOI: ends the in-service level of highest priority, returning it.
    fn end_highest(&mut self) -> Option<u8> {
        let level = self.highest(self.isr)?;
        self.isr &= !bit(level);
        Some(level)
    }

    /// How many levels rank above `level` in the current rotation (0: highest priority).
    fn rank(&self, level: u8) -> u8 {
        level.wrapping_sub(self.lowest_priority).wrapping_sub(1) & OCW2_LEVEL_MASK
    }

    /// The level of highest priority among `levels` (bit n = IR n).
    fn highest(&self, levels: u8) -> Option<u8> {
        (0..LEVELS)
            .map(|rank| (self.lowest_priority + 1 + rank) & OCW2_LEVEL_MASK)
            .find(|&level| levels & bit(level) != 0)
    }

    /// The request INT signals, if any: the unmasked one of highest priority, provided it
    /// outranks every level in service. `cascade` is the inputs with a slave behind them:
    /// in special fully nested mode such a level in service lets a new request of the
    /// same level through (its slave orders its own requests), though it still blocks
    /// the levels below.
    fn pending(&self, cascade: u8) -> Option<u8> {
        let mut requests = self.irr & !self.imr;
        let mut blocking = self.isr;
        if self.special_mask {
            // Only the IMR masks; a level in service cannot be requested again, though.
            requests &= !self.isr;
            blocking = 0;
        }
        let request = self.highest(requests)?;
        let nests = self.special_fully_nested && cascade & bit(request) != 0;
        match self.highest(blocking) {
            Some(served) if served == request && nests => Some(request),
            Some(served) if self.rank(served) <= self.rank(request) => None,
            _ => Some(request),
        }
    }

    /// The INTA cycle on this chip: the level it answers for, now in service unless in
    /// automatic EOI mode.
    fn acknowledge(&mut self, cascade: u8) -> Option<u8> {
        let level = self.pending(cascade)?;
        self.irr &= !bit(level);
        if !self.auto_eoi {
            self.isr |= bit(level);
        } else if self.rotate_on_auto_eoi {
            self.lowest_priority = level;
        }
        Some(level)
    }

    fn vector(&self, level: u8) -> u8 {
        self.vector_base | level
    }
}

/// The mask bit of IR `level`.
fn bit(level: u8) -> u8 {
    1 << level
}

/// Both chips' registers and the pair's INTR history: everything a snapshot saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicPairState {
    /// The master: IRQs 0..=7.
    pub master: PicState,
    /// The slave: IRQs 8..=15.
    pub slave: PicState,
    /// INTR was asserted since the last acknowledge (so an acknowledge finding no
    /// request gets the spurious vector).
    pub intr_signalled: bool,
}

/// The PC/AT's master and slave 8259A, the slave's INT on the master's IR 2.
///
/// The VMM raises device IRQs here and runs the CPU's acknowledge; the guest programs the
/// chips through two [`PicPort`]s.
#[derive(Debug, Clone)]
pub struct PicPair {
    master: PicState,
    slave: PicState,
    /// INTR was asserted since the last acknowledge, so the CPU may have seen it: an
    /// acknowledge finding no request then gets the spurious IR 7 vector, as on hardware.
    intr_signalled: bool,
}

impl Default for PicPair {
    fn default() -> Self {
        Self::new()
    }
}

impl PicPair {
    /// Both chips at power-on: all inputs masked until the guest initializes them.
    pub fn new() -> Self {
        Self {
            master: PicState::power_on(),
            slave: PicState::power_on(),
            intr_signalled: false,
        }
    }

    /// The pair `state` describes, after checking that some sequence of port accesses
    /// and IRQ edges could have produced it.
    pub fn from_state(state: &PicPairState) -> Result<Self, PicStateError> {
        state.master.validate(Chip::Master)?;
        state.slave.validate(Chip::Slave)?;
        let pair = Self {
            master: state.master,
            slave: state.slave,
            intr_signalled: state.intr_signalled,
        };
        let found = state.master.irr & bit(CASCADE_IRQ) != 0;
        let expected = pair.slave_int();
        if found != expected {
            return Err(PicStateError::CascadeRequest { found, expected });
        }
        if pair.has_interrupt() && !pair.intr_signalled {
            return Err(PicStateError::IntrNotSignalled);
        }
        Ok(pair)
    }

    /// Puts the pair in `state`; on an error the pair is unchanged.
    pub fn restore(&mut self, state: &PicPairState) -> Result<(), PicStateError> {
        *self = Self::from_state(state)?;
        Ok(())
    }

    /// Both chips' registers and the INTR history.
    pub fn state(&self) -> PicPairState {
        PicPairState {
            master: self.master,
            slave: self.slave,
            intr_signalled: self.intr_signalled,
        }
    }

    /// An edge on IRQ line 0..=15 (slave lines 8..=15): the request is latched in the IRR
    /// until acknowledged. Line 2 is the AT's redirected line and reaches IRQ 9.
    ///
    /// # Panics
    /// If `irq` is not in `0..=15`: lines are wired by the board, never chosen by the guest.
    pub fn raise_irq(&mut self, irq: u8) {
        let (chip, level) = self.input(irq);
        chip.irr |= bit(level);
        self.update();
    }

    /// Level-style lowering (for completeness; edge devices call raise only): withdraws a
    /// request not yet acknowledged.
    ///
    /// # Panics
    /// If `irq` is not in `0..=15`.
    pub fn lower_irq(&mut self, irq: u8) {
        let (chip, level) = self.input(irq);
        chip.irr &= !bit(level);
        self.update();
    }

    /// Whether INTR is asserted to the CPU (an unmasked request with priority over
    /// everything in service).
    pub fn has_interrupt(&self) -> bool {
        self.master.pending(self.cascade()).is_some()
    }

    /// The INTA cycle: the vector to deliver (moves the request into service unless
    /// auto-EOI). None if nothing is pending and nothing was signalled since the last
    /// acknowledge; if INTR was asserted but its request vanished (withdrawn or masked),
    /// the master's spurious IR 7 vector, with nothing put in service.
    ///
    /// A master input marked in ICW3 as having a slave leaves the vector to the slave
    /// whose ID matches; if none does, nothing drives the data bus and the CPU reads
    /// [`OPEN_BUS`].
    pub fn acknowledge(&mut self) -> Option<u8> {
        let signalled = std::mem::take(&mut self.intr_signalled);
        let cascade = self.cascade();
        let vector = match self.master.acknowledge(cascade) {
            Some(level) if cascade & bit(level) != 0 => Some(if self.slave_answers(level) {
                // IR 2 mirrors the slave's INT, so it has a request; if not, it would
                // answer with its own spurious level.
                let level = self.slave.acknowledge(0).unwrap_or(SPURIOUS_LEVEL);
                self.slave.vector(level)
            } else {
                OPEN_BUS
            }),
            Some(level) => Some(self.master.vector(level)),
            None => signalled.then(|| self.master.vector(SPURIOUS_LEVEL)),
        };
        self.update();
        vector
    }

    /// The guest reads `chip`'s register `reg` ([`COMMAND`] or [`DATA`]).
    fn read(&mut self, chip: Chip, reg: u8) -> u8 {
        let cascade = match chip {
            Chip::Master => self.cascade(),
            Chip::Slave => 0,
        };
        let value = self.chip(chip).read(reg, cascade);
        self.update();
        value
    }

    /// The guest writes `value` to `chip`'s register `reg`.
    fn write(&mut self, chip: Chip, reg: u8, value: u8) {
        self.chip(chip).write(reg, value);
        self.update();
    }

    fn chip(&mut self, chip: Chip) -> &mut PicState {
        match chip {
            Chip::Master => &mut self.master,
            Chip::Slave => &mut self.slave,
        }
    }

    /// The master inputs with a slave behind them (ICW3), none in single mode.
    fn cascade(&self) -> u8 {
        if self.master.single {
            0
        } else {
            self.master.icw3
        }
    }

    /// Whether the slave answers the master's acknowledge of `level`: it does when it is
    /// cascaded and its ID (ICW3) names that level, as the CAS lines carry it.
    fn slave_answers(&self, level: u8) -> bool {
        !self.slave.single && self.slave.icw3 & ICW3_SLAVE_ID_MASK == level
    }

    /// The slave's INT output, which drives the master's IR 2.
    fn slave_int(&self) -> bool {
        self.slave.pending(0).is_some()
    }

    /// The chip and input IRQ line `irq` is wired to.
    fn input(&mut self, irq: u8) -> (&mut PicState, u8) {
        assert!(
            irq < IRQ_COUNT,
            "IRQ {irq} does not exist: a PC has IRQ 0..=15"
        );
        match irq {
            CASCADE_IRQ => (&mut self.slave, REDIRECTED_IRQ2 - SLAVE_FIRST_IRQ),
            0..SLAVE_FIRST_IRQ => (&mut self.master, irq),
            _ => (&mut self.slave, irq - SLAVE_FIRST_IRQ),
        }
    }

    /// Propagates a change: the slave's INT drives the master's IR 2, and the master's
    /// INT is INTR, which the CPU may now have seen.
    fn update(&mut self) {
        if self.slave_int() {
            self.master.irr |= bit(CASCADE_IRQ);
        } else {
            self.master.irr &= !bit(CASCADE_IRQ);
        }
        self.intr_signalled |= self.has_interrupt();
    }
}
/// One chip's two ports on the bus: the pair is one device the VMM also drives directly,
/// registered twice, so each registration says which chip it decodes for.
#[derive(Debug, Clone)]
pub struct PicPort {
    pair: Arc<Mutex<PicPair>>,
    chip: Chip,
}

impl PicPort {
    /// `chip`'s command and data ports on the shared `pair`.
    pub fn new(pair: Arc<Mutex<PicPair>>, chip: Chip) -> Self {
        Self { pair, chip }
    }
}

impl BusDevice for PicPort {
    /// The 8259A has an 8-bit data bus: byte lane `i` reads register `offset + i`.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut pair = lock(&self.pair);
        read_byte_lanes(offset, data, REGISTER_COUNT, |reg| {
            pair.read(self.chip, reg)
        });
    }

    /// Byte lane `i` writes register `offset + i`; a word write at the command port is
    /// a command byte and then a data byte.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        let mut pair = lock(&self.pair);
        write_byte_lanes(offset, data, REGISTER_COUNT, |reg, value| {
            pair.write(self.chip, reg, value);
        });
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_test::{original_and_restored, state_proptests, Restorable};
    use proptest::prelude::*;

    /// The master's vector base under Linux (and in these tests).
    const MASTER_BASE: u8 = 0x20;
    /// The slave's.
    const SLAVE_BASE: u8 = 0x28;
    /// ICW1 as Linux and the BIOS write it: edge-triggered, cascade, ICW4 follows.
    const ICW1: u8 = ICW1_INIT | ICW1_IC4;
    /// ICW4 for x86 mode.
    const ICW4_X86: u8 = 1;

    /// The pair after the BIOS/Linux initialization sequence, every input unmasked;
    /// `icw4` adds mode bits.
    fn initialized(icw4: u8) -> PicPair {
        let mut pair = PicPair::new();
        for (chip, base, icw3) in [
            (Chip::Master, MASTER_BASE, bit(CASCADE_IRQ)),
            (Chip::Slave, SLAVE_BASE, CASCADE_IRQ),
        ] {
            pair.write(chip, COMMAND as u8, ICW1);
            pair.write(chip, DATA as u8, base);
            pair.write(chip, DATA as u8, icw3);
            pair.write(chip, DATA as u8, ICW4_X86 | icw4);
            pair.write(chip, DATA as u8, 0);
        }
        pair
    }

    fn command(pair: &mut PicPair, chip: Chip, value: u8) {
        pair.write(chip, COMMAND as u8, value);
    }

    fn eoi(pair: &mut PicPair, chip: Chip) {
        command(pair, chip, OCW2_EOI);
    }

    #[test]
    fn power_on_masks_everything() {
        let mut pair = PicPair::new();
        pair.raise_irq(0);
        pair.raise_irq(12);
        assert!(!pair.has_interrupt());
        assert_eq!(pair.acknowledge(), None);
        assert_eq!(pair.state().master.irr, bit(0));
        assert_eq!(pair.state().slave.irr, bit(4));
    }

    #[test]
    fn the_init_sequence_sets_vector_bases_and_masks() {
        let mut pair = initialized(0);
        pair.write(Chip::Master, DATA as u8, 0xFB);
        pair.write(Chip::Slave, DATA as u8, 0xEF);
        let state = pair.state();
        assert_eq!(state.master.vector_base, MASTER_BASE);
        assert_eq!(state.slave.vector_base, SLAVE_BASE);
        assert_eq!(state.master.init, InitStep::Ready);
        assert_eq!(pair.read(Chip::Master, DATA as u8), 0xFB);
        assert_eq!(pair.read(Chip::Slave, DATA as u8), 0xEF);
        assert!(!state.master.auto_eoi);
    }

    #[test]
    fn irq_0_gives_the_master_base_and_stays_in_service_until_eoi() {
        let mut pair = initialized(0);
        assert!(!pair.has_interrupt());
        pair.raise_irq(0);
        assert!(pair.has_interrupt());
        assert_eq!(pair.acknowledge(), Some(0x20));
        assert_eq!(pair.state().master.isr, bit(0));
        assert_eq!(pair.state().master.irr, 0);

        // The next tick waits for the EOI.
        pair.raise_irq(0);
        assert!(!pair.has_interrupt());
        eoi(&mut pair, Chip::Master);
        assert_eq!(pair.state().master.isr, 0);
        assert_eq!(pair.acknowledge(), Some(0x20));
    }

    #[test]
    fn a_slave_irq_needs_eois_on_both_chips() {
        let mut pair = initialized(0);
        pair.raise_irq(12);
        assert_eq!(pair.acknowledge(), Some(0x2C));
        assert_eq!(pair.state().master.isr, bit(CASCADE_IRQ));
        assert_eq!(pair.state().slave.isr, bit(4));

        // IRQ 13 ranks below 12 on the slave, and IRQ 3 below the cascade on the master.
        pair.raise_irq(13);
        pair.raise_irq(3);
        assert!(!pair.has_interrupt());
        eoi(&mut pair, Chip::Slave);
        assert!(
            !pair.has_interrupt(),
            "the master still has IR 2 in service"
        );
        eoi(&mut pair, Chip::Master);
        assert_eq!(pair.acknowledge(), Some(0x2D));
        eoi(&mut pair, Chip::Slave);
        eoi(&mut pair, Chip::Master);
        assert_eq!(pair.acknowledge(), Some(0x23));
    }

    #[test]
    fn higher_priority_irqs_nest_over_a_slave_in_service() {
        let mut pair = initialized(0);
        pair.raise_irq(12);
        assert_eq!(pair.acknowledge(), Some(0x2C));
        pair.raise_irq(1);
        assert_eq!(pair.acknowledge(), Some(0x21));
        assert_eq!(pair.state().master.isr, bit(1) | bit(CASCADE_IRQ));
        // A non-specific EOI ends the highest level in service: IRQ 1.
        eoi(&mut pair, Chip::Master);
        assert_eq!(pair.state().master.isr, bit(CASCADE_IRQ));
    }

    #[test]
    fn masked_irqs_stay_pending() {
        let mut pair = initialized(0);
        pair.write(Chip::Master, DATA as u8, bit(1));
        pair.raise_irq(1);
        assert!(!pair.has_interrupt());
        assert_eq!(pair.acknowledge(), None);
        assert_eq!(pair.state().master.irr, bit(1));

        // Masking the cascade input holds back every slave IRQ.
        pair.write(Chip::Master, DATA as u8, bit(1) | bit(CASCADE_IRQ));
        pair.raise_irq(8);
        assert!(!pair.has_interrupt());

        pair.write(Chip::Master, DATA as u8, 0);
        assert_eq!(pair.acknowledge(), Some(0x21));
        eoi(&mut pair, Chip::Master);
        assert_eq!(pair.acknowledge(), Some(0x28));
    }

    #[test]
    fn the_lowest_irq_wins() {
        let mut pair = initialized(0);
        for irq in [7, 14, 3, 5, 9, 1] {
            pair.raise_irq(irq);
        }
        let mut order = Vec::new();
        while let Some(vector) = pair.acknowledge() {
            order.push(vector);
            if vector >= SLAVE_BASE {
                eoi(&mut pair, Chip::Slave);
            }
            eoi(&mut pair, Chip::Master);
        }
        // The slave's IRQs rank where the cascade does: between IRQ 1 and IRQ 3.
        assert_eq!(order, [0x21, 0x29, 0x2E, 0x23, 0x25, 0x27]);
    }

    #[test]
    fn ocw3_selects_irr_or_isr_for_the_command_port() {
        let mut pair = initialized(0);
        pair.raise_irq(4);
        pair.raise_irq(6);
        assert_eq!(pair.acknowledge(), Some(0x24));
        assert_eq!(
            pair.read(Chip::Master, COMMAND as u8),
            bit(6),
            "IRR by default"
        );
        command(
            &mut pair,
            Chip::Master,
            OCW3_SELECT | OCW3_READ_REGISTER | OCW3_READ_ISR,
        );
        assert_eq!(pair.read(Chip::Master, COMMAND as u8), bit(4));
        // An OCW3 without RR keeps the selection.
        command(&mut pair, Chip::Master, OCW3_SELECT);
        assert_eq!(pair.read(Chip::Master, COMMAND as u8), bit(4));
        command(&mut pair, Chip::Master, OCW3_SELECT | OCW3_READ_REGISTER);
        assert_eq!(pair.read(Chip::Master, COMMAND as u8), bit(6));
    }

    #[test]
    fn auto_eoi_puts_nothing_in_service() {
        let mut pair = initialized(ICW4_AUTO_EOI);
        assert!(pair.state().master.auto_eoi);
        pair.raise_irq(3);
        pair.raise_irq(5);
        pair.raise_irq(10);
        assert_eq!(pair.acknowledge(), Some(0x2A));
        assert_eq!(pair.acknowledge(), Some(0x23));
        assert_eq!(pair.acknowledge(), Some(0x25));
        assert_eq!(pair.state().master.isr, 0);
        assert_eq!(pair.state().slave.isr, 0);
    }

    #[test]
    fn a_request_gone_before_acknowledge_is_spurious_irq_7() {
        let mut pair = initialized(0);
        pair.raise_irq(3);
        assert!(pair.has_interrupt());
        pair.lower_irq(3);
        assert!(!pair.has_interrupt());
        assert_eq!(pair.acknowledge(), Some(0x27));
        assert_eq!(
            pair.state().master.isr,
            0,
            "a spurious IRQ is not in service"
        );
        assert_eq!(pair.acknowledge(), None, "nothing was signalled since");

        // Masking the request after INTR rose has the same effect, also from the slave.
        pair.raise_irq(11);
        pair.write(Chip::Slave, DATA as u8, bit(3));
        assert_eq!(pair.acknowledge(), Some(0x27));
        assert_eq!(pair.state().slave.irr, bit(3));
    }

    #[test]
    fn rotation_commands_move_the_lowest_priority() {
        let mut pair = initialized(0);
        pair.raise_irq(1);
        pair.raise_irq(4);
        assert_eq!(pair.acknowledge(), Some(0x21));
        command(&mut pair, Chip::Master, OCW2_ROTATE_EOI);
        assert_eq!(pair.state().master.lowest_priority, 1);
        pair.raise_irq(1);
        // IR 2..7 now outrank IR 0 and 1.
        assert_eq!(pair.acknowledge(), Some(0x24));
        command(&mut pair, Chip::Master, OCW2_ROTATE_SPECIFIC_EOI | 4);
        assert_eq!(pair.state().master.isr, 0);
        pair.raise_irq(0);
        // Lowest is 4: IR 5, 6, 7, 0, 1 ... in that order.
        assert_eq!(pair.acknowledge(), Some(0x20));
        command(&mut pair, Chip::Master, OCW2_SPECIFIC_EOI);
        command(&mut pair, Chip::Master, OCW2_SET_PRIORITY | 7);
        pair.raise_irq(0);
        assert_eq!(pair.acknowledge(), Some(0x20));
        assert_eq!(pair.acknowledge(), None);
        assert_eq!(
            pair.state().master.irr,
            bit(1),
            "ranks below IR 0 in service"
        );
    }

    #[test]
    fn rotate_on_auto_eoi() {
        let mut pair = initialized(ICW4_AUTO_EOI);
        command(&mut pair, Chip::Master, OCW2_SET_ROTATE_AUTO_EOI);
        pair.raise_irq(3);
        assert_eq!(pair.acknowledge(), Some(0x23));
        assert_eq!(pair.state().master.lowest_priority, 3);
        command(&mut pair, Chip::Master, OCW2_CLEAR_ROTATE_AUTO_EOI);
        pair.raise_irq(5);
        assert_eq!(pair.acknowledge(), Some(0x25));
        assert_eq!(pair.state().master.lowest_priority, 3);
    }

    #[test]
    fn poll_reads_acknowledge_the_highest_request() {
        let mut pair = initialized(0);
        pair.raise_irq(6);
        command(&mut pair, Chip::Master, OCW3_SELECT | OCW3_POLL);
        assert_eq!(pair.read(Chip::Master, COMMAND as u8), POLL_PENDING | 6);
        assert_eq!(pair.state().master.isr, bit(6));
        // The poll lasts one read; with nothing pending the word is 0.
        assert_eq!(pair.read(Chip::Master, COMMAND as u8), 0);
        command(&mut pair, Chip::Master, OCW3_SELECT | OCW3_POLL);
        assert_eq!(pair.read(Chip::Master, COMMAND as u8), 0);
    }

    #[test]
    fn special_mask_mode_lets_lower_levels_through() {
        let mut pair = initialized(0);
        pair.raise_irq(3);
        assert_eq!(pair.acknowledge(), Some(0x23));
        pair.raise_irq(5);
        assert!(!pair.has_interrupt());
        // The handler masks its own level and enters special mask mode.
        pair.write(Chip::Master, DATA as u8, bit(3));
        command(
            &mut pair,
            Chip::Master,
            OCW3_SELECT | OCW3_SET_SPECIAL_MASK | OCW3_SPECIAL_MASK,
        );
        assert!(pair.state().master.special_mask);
        assert_eq!(pair.acknowledge(), Some(0x25));
        command(&mut pair, Chip::Master, OCW3_SELECT | OCW3_SET_SPECIAL_MASK);
        assert!(!pair.state().master.special_mask);
    }

    #[test]
    fn special_fully_nested_mode_lets_the_slave_nest() {
        let mut pair = initialized(ICW4_SFNM);
        pair.raise_irq(13);
        assert_eq!(pair.acknowledge(), Some(0x2D));
        pair.raise_irq(9);
        // Without SFNM the master's IR 2 in service would hold IRQ 9 back.
        assert_eq!(pair.acknowledge(), Some(0x29));
        pair.raise_irq(14);
        assert!(!pair.has_interrupt(), "the slave orders its own requests");
    }

    #[test]
    fn special_fully_nested_mode_still_nests_the_master_levels() {
        let mut pair = initialized(ICW4_SFNM);
        pair.raise_irq(13);
        assert_eq!(pair.acknowledge(), Some(0x2D));
        // The master's IR 2 in service lets only its own level through, not IR 3..7.
        pair.raise_irq(5);
        assert!(!pair.has_interrupt());
        pair.raise_irq(1);
        assert_eq!(pair.acknowledge(), Some(0x21));
    }

    #[test]
    fn a_poll_takes_the_next_read_at_either_port() {
        let mut pair = initialized(0);
        pair.write(Chip::Master, DATA as u8, 0x0F);
        pair.raise_irq(6);
        command(&mut pair, Chip::Master, OCW3_SELECT | OCW3_POLL);
        assert_eq!(pair.read(Chip::Master, DATA as u8), POLL_PENDING | 6);
        assert_eq!(pair.state().master.isr, bit(6));
        assert_eq!(
            pair.read(Chip::Master, DATA as u8),
            0x0F,
            "then the IMR again"
        );
    }

    #[test]
    fn only_the_slave_whose_id_the_master_sends_answers() {
        let mut pair = PicPair::new();
        for (chip, base, icw3) in [
            (Chip::Master, MASTER_BASE, bit(CASCADE_IRQ)),
            // This slave believes it sits on the master's IR 3.
            (Chip::Slave, SLAVE_BASE, 3),
        ] {
            pair.write(chip, COMMAND as u8, ICW1);
            pair.write(chip, DATA as u8, base);
            pair.write(chip, DATA as u8, icw3);
            pair.write(chip, DATA as u8, ICW4_X86);
        }
        pair.raise_irq(12);
        assert!(pair.has_interrupt());
        // The master sends CAS = 2 and leaves the data bus to a slave no one answers as.
        assert_eq!(pair.acknowledge(), Some(OPEN_BUS));
        assert_eq!(pair.state().master.isr, bit(CASCADE_IRQ));
        assert_eq!(pair.state().slave.isr, 0);
        assert_eq!(pair.state().slave.irr, bit(4));
    }

    #[test]
    fn a_master_without_a_slave_answers_ir_2_itself() {
        let mut pair = PicPair::new();
        command(&mut pair, Chip::Master, ICW1_INIT | ICW1_SINGLE);
        pair.write(Chip::Master, DATA as u8, 0x40);
        assert_eq!(pair.state().master.init, InitStep::Ready, "no ICW3 or ICW4");
        pair.write(Chip::Slave, COMMAND as u8, ICW1_INIT | ICW1_SINGLE);
        pair.write(Chip::Slave, DATA as u8, 0x70);
        pair.raise_irq(8);
        assert_eq!(pair.acknowledge(), Some(0x42));
        assert_eq!(pair.state().slave.isr, 0);
    }

    #[test]
    fn icw1_restarts_the_chip() {
        let mut pair = initialized(ICW4_AUTO_EOI);
        pair.raise_irq(4);
        pair.raise_irq(5);
        assert_eq!(pair.acknowledge(), Some(0x24));
        pair.write(Chip::Master, DATA as u8, 0x0F);
        command(&mut pair, Chip::Master, OCW2_SET_PRIORITY | 2);

        command(&mut pair, Chip::Master, ICW1_INIT);
        let state = pair.state().master;
        assert_eq!((state.irr, state.isr, state.imr), (0, 0, 0));
        assert_eq!(state.lowest_priority, DEFAULT_LOWEST_PRIORITY);
        assert_eq!(state.init, InitStep::Icw2);
        pair.write(Chip::Master, DATA as u8, 0x30);
        pair.write(Chip::Master, DATA as u8, bit(CASCADE_IRQ));
        assert_eq!(
            pair.state().master.init,
            InitStep::Ready,
            "no ICW4 asked for"
        );
        assert!(!pair.state().master.auto_eoi, "ICW4's functions are zeroed");
        pair.raise_irq(1);
        // The vector base keeps only bits 7..3.
        pair.write(Chip::Master, COMMAND as u8, ICW1);
        pair.write(Chip::Master, DATA as u8, 0x37);
        assert_eq!(pair.state().master.vector_base, 0x30);
    }

    #[test]
    fn line_2_is_redirected_to_irq_9() {
        let mut pair = initialized(0);
        pair.raise_irq(2);
        assert_eq!(pair.state().slave.irr, bit(1));
        assert_eq!(pair.acknowledge(), Some(0x29));
    }

    #[test]
    #[should_panic(expected = "IRQ 16 does not exist")]
    fn irqs_past_15_do_not_exist() {
        PicPair::new().raise_irq(16);
    }

    #[test]
    fn ports_split_wide_accesses_into_bytes() {
        let pair = Arc::new(Mutex::new(PicPair::new()));
        let mut master = PicPort::new(pair.clone(), Chip::Master);
        // A word write at the command port: ICW1, then ICW2 on the data port.
        master.write(COMMAND, &[ICW1_INIT | ICW1_SINGLE, 0x20]);
        master.write(DATA, &[0xAB, 0xCD]);
        let mut word = [0; 2];
        master.read(DATA, &mut word);
        assert_eq!(word, [0xAB, crate::OPEN_BUS]);
        assert_eq!(lock(&pair).state().master.vector_base, 0x20);
        assert_eq!(
            lock(&pair).state().slave.imr,
            0xFF,
            "the slave is untouched"
        );
    }

    /// Something the guest or the VMM does to the pair.
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        Write(Chip, u8, u8),
        Read(Chip, u8),
        Raise(u8),
        Lower(u8),
        Acknowledge,
    }

    /// What an operation makes visible: a read's byte or an acknowledge's vector, and
    /// INTR after it.
    pub(crate) type Seen = (Option<u8>, bool);

    impl Restorable for PicPair {
        type State = PicPairState;
        type Op = Op;
        type Seen = Seen;

        fn save(&self) -> PicPairState {
            self.state()
        }

        fn twin(&self, state: &PicPairState) -> Result<Self, String> {
            PicPair::from_state(state).map_err(|e| e.to_string())
        }

        fn apply(&mut self, op: &Op) -> Seen {
            let seen = match *op {
                Op::Write(chip, reg, value) => {
                    self.write(chip, reg, value);
                    None
                }
                Op::Read(chip, reg) => Some(self.read(chip, reg)),
                Op::Raise(irq) => {
                    self.raise_irq(irq);
                    None
                }
                Op::Lower(irq) => {
                    self.lower_irq(irq);
                    None
                }
                Op::Acknowledge => self.acknowledge(),
            };
            (seen, self.has_interrupt())
        }
    }

    /// The guest's reads and the VMM's acknowledges and INTR checks, after a restore.
    fn probe() -> Vec<Op> {
        let mut ops = vec![Op::Read(Chip::Master, COMMAND as u8), Op::Acknowledge];
        for chip in [Chip::Master, Chip::Slave] {
            ops.extend([
                Op::Write(chip, COMMAND as u8, OCW2_EOI),
                Op::Read(chip, DATA as u8),
                Op::Write(
                    chip,
                    COMMAND as u8,
                    OCW3_SELECT | OCW3_READ_REGISTER | OCW3_READ_ISR,
                ),
                Op::Read(chip, COMMAND as u8),
            ]);
        }
        ops.extend([
            Op::Raise(3),
            Op::Acknowledge,
            Op::Raise(14),
            Op::Acknowledge,
        ]);
        ops
    }

    #[test]
    fn a_restored_pair_mid_initialization_takes_the_rest_of_the_sequence() {
        use Op::*;
        // The master has taken ICW1 and ICW2, with an interrupt in service on the slave
        // from before; the slave is through.
        let prefix = [
            Raise(12),
            Acknowledge,
            Raise(1),
            Write(Chip::Master, COMMAND as u8, ICW1),
            Write(Chip::Master, DATA as u8, 0x40),
        ];
        let tail = [
            vec![
                Write(Chip::Master, DATA as u8, bit(CASCADE_IRQ)),
                Write(Chip::Master, DATA as u8, ICW4_X86 | ICW4_AUTO_EOI),
                Raise(13),
            ],
            probe(),
        ]
        .concat();
        let mut snapshot = initialized(0);
        snapshot.run(&prefix);
        assert_eq!(snapshot.state().master.init, InitStep::Icw3);
        assert_eq!(snapshot.state().slave.isr, bit(4), "IRQ 12 is in service");
        let [original, restored] = original_and_restored(initialized(0), &prefix, &tail);
        assert_eq!(original, restored);
    }

    #[test]
    fn a_restored_pair_keeps_what_is_in_service_and_a_pending_poll() {
        use Op::*;
        let prefix = [
            Write(Chip::Master, COMMAND as u8, OCW2_SET_PRIORITY | 4),
            Raise(6),
            Raise(9),
            Acknowledge,
            Raise(5),
            Write(Chip::Master, COMMAND as u8, OCW3_SELECT | OCW3_POLL),
        ];
        let [original, restored] = original_and_restored(initialized(0), &prefix, &probe());
        // The poll took the probe's first read: IR 5 ranks above IR 6 in service here.
        assert_eq!(original.0[0].0, Some(POLL_PENDING | 5));
        assert_eq!(original, restored);
    }

    #[test]
    fn a_restored_pair_remembers_intr_was_signalled() {
        use Op::*;
        // INTR rose for IRQ 5, then the guest masked it: only the spurious vector is due.
        let prefix = [Raise(5), Write(Chip::Master, DATA as u8, bit(5))];
        let [original, restored] =
            original_and_restored(initialized(0), &prefix, &[Acknowledge, Acknowledge]);
        assert_eq!(
            original.0,
            [(Some(MASTER_BASE | SPURIOUS_LEVEL), false), (None, false)]
        );
        assert_eq!(original, restored);
    }

    #[test]
    fn states_no_chip_reaches_are_refused() {
        let good = initialized(0).state();
        let mut bad = good;
        bad.master.vector_base = 0x21;
        assert_eq!(
            PicPair::from_state(&bad).unwrap_err(),
            PicStateError::VectorBase {
                chip: Chip::Master,
                value: 0x21
            }
        );
        let mut bad = good;
        bad.slave.lowest_priority = 8;
        assert!(matches!(
            PicPair::from_state(&bad),
            Err(PicStateError::LowestPriority {
                chip: Chip::Slave,
                value: 8
            })
        ));
        let mut bad = good;
        bad.master.expect_icw4 = false;
        bad.master.init = InitStep::Icw4;
        assert!(matches!(
            PicPair::from_state(&bad),
            Err(PicStateError::InitStep {
                chip: Chip::Master,
                ..
            })
        ));
        let mut bad = good;
        bad.master.irr = bit(CASCADE_IRQ);
        assert_eq!(
            PicPair::from_state(&bad).unwrap_err(),
            PicStateError::CascadeRequest {
                found: true,
                expected: false
            }
        );
        let mut bad = good;
        bad.master.irr = bit(0);
        assert_eq!(
            PicPair::from_state(&bad).unwrap_err(),
            PicStateError::IntrNotSignalled
        );
        // A refused restore leaves the pair as it was.
        let mut pair = initialized(0);
        assert!(pair.restore(&bad).is_err());
        assert_eq!(pair.state(), good);
    }

    fn op() -> impl Strategy<Value = Op> {
        let chip = prop_oneof![Just(Chip::Master), Just(Chip::Slave)];
        prop_oneof![
            4 => (chip.clone(), 0..REGISTER_COUNT as u8, any::<u8>())
                .prop_map(|(chip, reg, value)| Op::Write(chip, reg, value)),
            2 => (chip, 0..REGISTER_COUNT as u8).prop_map(|(chip, reg)| Op::Read(chip, reg)),
            3 => (0..IRQ_COUNT).prop_map(Op::Raise),
            1 => (0..IRQ_COUNT).prop_map(Op::Lower),
            2 => Just(Op::Acknowledge),
        ]
    }

    state_proptests!(initialized(0), op());
}

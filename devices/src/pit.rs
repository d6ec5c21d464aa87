//! The Intel 8254 programmable interval timer: three 16-bit down counters clocked at
//! 1.193182 MHz.
//!
//! On a PC counter 0's OUT drives IRQ 0 (the system tick), counter 1 once timed DRAM
//! refresh, and counter 2's OUT feeds the speaker, its GATE and OUT visible at port 0x61
//! ([`SystemControl`](crate::system_control::SystemControl)).
//!
//! # Time
//! The device never reads a host clock. The VMM owns virtual time and calls
//! [`Pit8254::advance`] with it (nanoseconds since machine start) before it dispatches
//! any access to the PIT's ports and whenever it checks for interrupts; the counters then
//! reflect that instant, and `advance` reports counter 0's rising edges in between.
//!
//! # Model
//! Each counter keeps the clock pulses since its counting element (CE) was last loaded
//! and computes CE and OUT from them in closed form, so advancing by a second costs as
//! much as advancing by one pulse. Counts 1 in modes 2 and 3, which the datasheet forbids
//! (their minimum is 2), run as 2; a changed count in mode 3 takes effect at the end of
//! the period rather than of the half period.
//!
//! # State
//! A counter's registers are a [`CounterState`], plain data that serializes, and the
//! PIT's a [`PitState`]: [`Pit8254::state`] copies them out, [`Pit8254::from_state`]
//! checks them (a snapshot file may be hand-edited or corrupt) and builds a PIT that
//! counts on exactly as the one they were taken from.

use serde::{Deserialize, Serialize};

use crate::bit_if;
use crate::bus::{read_byte_lanes, write_byte_lanes, BusDevice, DeviceRequest, OPEN_BUS};

/// How many consecutive ports the PIT decodes: three counters and the control word.
pub const REGISTER_COUNT: u64 = 4;
/// How many counters the PIT has.
pub const COUNTERS: usize = 3;
/// The port (offset) of the control word register; counter n is at offset n.
pub const CONTROL: u64 = 3;

/// The counter whose OUT drives IRQ 0.
pub const IRQ0_COUNTER: usize = 0;
/// The counter whose GATE and OUT are wired to port 0x61 (the speaker).
pub const SPEAKER_COUNTER: usize = 2;

/// Control word bits 7..6: the counter it programs, or [`SELECT_READ_BACK`].
pub const SELECT_SHIFT: u8 = 6;
/// Control word counter select: the read-back command.
pub const SELECT_READ_BACK: u8 = 3;
/// Control word bits 5..4: how the counter's count is read and written.
pub const ACCESS_SHIFT: u8 = 4;
/// Two-bit field mask, for counter select and access.
pub const FIELD_MASK: u8 = 0b11;
/// Control word access: the counter latch command, not an access mode.
pub const ACCESS_LATCH: u8 = 0b00;
/// Control word access: low byte only.
pub const ACCESS_LSB: u8 = 0b01;
/// Control word access: high byte only.
pub const ACCESS_MSB: u8 = 0b10;
/// Control word access: low byte, then high byte.
pub const ACCESS_WORD: u8 = 0b11;
/// Control word bits 3..1: the mode (modes 2 and 3 ignore bit 3).
pub const MODE_SHIFT: u8 = 1;
/// Mask of the mode field, after shifting.
pub const MODE_MASK: u8 = 0b111;
/// Control word bit 0: count in BCD (four decades) rather than binary.
pub const CONTROL_BCD: u8 = 1 << 0;
/// Control word bits 5..0: what the status byte reports back as programmed.
pub const PROGRAMMING_MASK: u8 = 0x3F;

/// Read-back bit: do NOT latch the selected counters' counts.
pub const READ_BACK_NO_COUNT: u8 = 1 << 5;
/// Read-back bit: do NOT latch the selected counters' status.
pub const READ_BACK_NO_STATUS: u8 = 1 << 4;
/// Read-back bit selecting counter 0; counter n is this bit shifted left by n.
pub const READ_BACK_COUNTER0: u8 = 1 << 1;

/// Status byte bit: the counter's OUT pin.
pub const STATUS_OUT: u8 = 1 << 7;
/// Status byte bit: null count: the last count written has not been loaded into CE.
pub const STATUS_NULL_COUNT: u8 = 1 << 6;

/// Binary counters count 0x0000 as 2^16.
const BINARY_RANGE: u64 = 1 << 16;
/// BCD counters count 0000 as 10^4.
const BCD_RANGE: u64 = 10_000;
/// A BCD count's decimal digits.
const BCD_DIGITS: u32 = 4;
/// The base BCD digits count in.
const DECIMAL_BASE: u64 = 10;
/// Bits per BCD digit.
const NIBBLE_BITS: u32 = 4;
/// One BCD digit's bits.
const NIBBLE_MASK: u64 = 0xF;
/// Modes 2 and 3 need a count of at least 2.
const MIN_PERIODIC_COUNT: u64 = 2;
/// Nanoseconds per second, to convert virtual time into input clock pulses.
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A counter's mode of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Mode 0: OUT goes low, then high once the count runs out (one-shot interrupt).
    InterruptOnTerminalCount,
    /// Mode 1: a GATE rising edge starts a low pulse of `count` clocks.
    HardwareOneShot,
    /// Mode 2: OUT pulses low for one clock every `count` clocks.
    RateGenerator,
    /// Mode 3: OUT is a square wave with a period of `count` clocks.
    SquareWave,
    /// Mode 4: OUT pulses low for one clock when the count written runs out.
    SoftwareStrobe,
    /// Mode 5: OUT pulses low for one clock when the count runs out after a GATE edge.
    HardwareStrobe,
}

impl Mode {
    /// Decodes control word bits 3..1 (already shifted down).
    fn from_bits(bits: u8) -> Self {
        match bits & MODE_MASK {
            0 => Self::InterruptOnTerminalCount,
            1 => Self::HardwareOneShot,
            2 | 6 => Self::RateGenerator,
            3 | 7 => Self::SquareWave,
            4 => Self::SoftwareStrobe,
            _ => Self::HardwareStrobe,
        }
    }

    /// Modes 2 and 3 reload CE from the count register at the end of every period.
    fn is_periodic(self) -> bool {
        matches!(self, Self::RateGenerator | Self::SquareWave)
    }

    /// Modes 1 and 5 start counting on a GATE rising edge rather than on a count write.
    fn is_gate_triggered(self) -> bool {
        matches!(self, Self::HardwareOneShot | Self::HardwareStrobe)
    }
}

/// How a counter's count is read and written through its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The low byte only (the high byte of a written count is 0).
    Lsb,
    /// The high byte only (the low byte of a written count is 0).
    Msb,
    /// The low byte, then the high byte.
    Word,
}

impl Access {
    /// Decodes control word bits 5..4 (already shifted down); `None` for the counter
    /// latch command, which is no access mode.
    fn from_bits(bits: u8) -> Option<Self> {
        match bits & FIELD_MASK {
            ACCESS_LATCH => None,
            ACCESS_LSB => Some(Self::Lsb),
            ACCESS_MSB => Some(Self::Msb),
            _ => Some(Self::Word),
        }
    }
}

/// Where a counter is between programming and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// No count to run: after a control word, after the first byte of a mode 0 count,
    /// or waiting for a GATE trigger.
    Idle,
    /// The count register loads into CE on the next clock pulse.
    Loading,
    /// CE counts down (while GATE allows).
    Counting,
}

/// Why a [`PitState`] cannot be restored: it describes counters no sequence of port
/// accesses, GATE edges and clock pulses produces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PitStateError {
    /// The programming is control word bits 5..0 with an access mode (bits 5..4 not 0).
    #[error("PIT counter {counter}: programming {value:#04x} is not a control word's bits 5..0 with an access mode")]
    Control {
        /// The counter whose state is wrong.
        counter: usize,
        /// The value found.
        value: u8,
    },
    /// Counters 0 and 1 have their GATE tied high on a PC.
    #[error("PIT counter {counter}: GATE is low, but the board ties it high")]
    Gate {
        /// The counter whose state is wrong.
        counter: usize,
    },
    /// Only a counter programmed for low-then-high bytes is between two bytes.
    #[error("PIT counter {counter}: half-way through a two-byte access, but programmed for single bytes")]
    ByteToggle {
        /// The counter whose state is wrong.
        counter: usize,
    },
    /// A latched status reports the counter's programming.
    #[error("PIT counter {counter}: latched status {value:#04x} does not report its programming")]
    LatchedStatus {
        /// The counter whose state is wrong.
        counter: usize,
        /// The value found.
        value: u8,
    },
    /// A BCD counter latches four decimal digits.
    #[error("PIT counter {counter}: latched count {value:#06x} is not BCD")]
    LatchedCount {
        /// The counter whose state is wrong.
        counter: usize,
        /// The value found.
        value: u16,
    },
    /// Only a written count loads or counts.
    #[error("PIT counter {counter}: {phase:?} without a count written")]
    Phase {
        /// The counter whose state is wrong.
        counter: usize,
        /// The phase found.
        phase: Phase,
    },
    /// CE holds a count of 1 to 2^16 (10^4 in BCD; at least 2 in modes 2 and 3), and a
    /// periodic mode is part-way through its period.
    #[error("PIT counter {counter}: {pulses} pulses into a count of {loaded} is not a place a {mode:?} counter can be")]
    Count {
        /// The counter whose state is wrong.
        counter: usize,
        /// Its mode.
        mode: Mode,
        /// The count CE was loaded with.
        loaded: u64,
        /// The pulses counted since.
        pulses: u64,
    },
}

/// One 8254 counter: its registers (the state a snapshot saves) and the logic that reads,
/// writes and clocks them.
///
/// CE is not kept as a number but as the pulses counted since it was loaded, from which
/// [`count`](Self::count) and [`out`](Self::out) follow in closed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    /// Control word bits 5..0 as last programmed: access (5..4), mode (3..1), BCD (0).
    /// The status byte reports them back.
    pub control: u8,
    /// The count register: the count last written (0 stands for 2^16, or 10^4 in BCD).
    pub count_register: u16,
    /// A count was written since the control word (GATE triggers need one).
    pub has_count: bool,
    /// A count was written but not yet loaded into CE (the status byte's NULL COUNT).
    pub null_count: bool,
    /// In low-then-high access, the next byte written is the high one.
    pub write_high_next: bool,
    /// In low-then-high access, the next byte read is the high one.
    pub read_high_next: bool,
    /// The output latch: a count frozen by a latch command until read out.
    pub latched_count: Option<u16>,
    /// The status byte latched by a read-back command until read.
    pub latched_status: Option<u8>,
    /// The GATE input.
    pub gate: bool,
    /// Where the counter is between programming and counting.
    pub phase: Phase,
    /// OUT while not [`Phase::Counting`].
    pub held_out: bool,
    /// Clock pulses CE has counted since its last load (within the period, in modes 2
    /// and 3).
    pub pulses: u64,
    /// The count CE was loaded with (the period, in modes 2 and 3).
    pub loaded: u64,
}

impl CounterState {
    /// A counter at power-on, which the datasheet leaves undefined: mode 0 with no count,
    /// read and written low byte then high byte, OUT low.
    fn power_on(gate: bool) -> Self {
        Self {
            control: ACCESS_WORD << ACCESS_SHIFT,
            count_register: 0,
            has_count: false,
            null_count: false,
            write_high_next: false,
            read_high_next: false,
            latched_count: None,
            latched_status: None,
            gate,
            phase: Phase::Idle,
            held_out: false,
            pulses: 0,
            loaded: BINARY_RANGE,
        }
    }

    /// The mode programmed.
    pub fn mode(&self) -> Mode {
        Mode::from_bits(self.control >> MODE_SHIFT)
    }

    /// The access programmed.
    pub fn access(&self) -> Access {
        // Validated states and the control words `program` takes always name one.
        Access::from_bits(self.control >> ACCESS_SHIFT).unwrap_or(Access::Word)
    }

    /// Whether the counter counts in BCD.
    pub fn bcd(&self) -> bool {
        self.control & CONTROL_BCD != 0
    }

    /// Checks what no sequence of accesses breaks (`counter` names it in errors).
    fn validate(&self, counter: usize) -> Result<(), PitStateError> {
        if self.control & !PROGRAMMING_MASK != 0
            || Access::from_bits(self.control >> ACCESS_SHIFT).is_none()
        {
            return Err(PitStateError::Control {
                counter,
                value: self.control,
            });
        }
        if (self.write_high_next || self.read_high_next) && self.access() != Access::Word {
            return Err(PitStateError::ByteToggle { counter });
        }
        if let Some(value) = self
            .latched_status
            .filter(|status| status & PROGRAMMING_MASK != self.control)
        {
            return Err(PitStateError::LatchedStatus { counter, value });
        }
        if let Some(value) = self
            .latched_count
            .filter(|&count| self.bcd() && !is_bcd(count))
        {
            return Err(PitStateError::LatchedCount { counter, value });
        }
        if self.phase != Phase::Idle && !self.has_count {
            return Err(PitStateError::Phase {
                counter,
                phase: self.phase,
            });
        }
        let counting = self.phase == Phase::Counting;
        let in_period = !self.mode().is_periodic()
            || (self.loaded >= MIN_PERIODIC_COUNT && self.pulses < self.loaded);
        let limit = if counting { self.range() } else { BINARY_RANGE };
        if !(1..=limit).contains(&self.loaded) || (counting && !in_period) {
            return Err(PitStateError::Count {
                counter,
                mode: self.mode(),
                loaded: self.loaded,
                pulses: self.pulses,
            });
        }
        Ok(())
    }

    /// A control word for this counter with an access mode: resets it to wait for a count.
    fn program(&mut self, control: u8) {
        let control = control & PROGRAMMING_MASK;
        *self = Self {
            control,
            count_register: self.count_register,
            null_count: true,
            gate: self.gate,
            held_out: Mode::from_bits(control >> MODE_SHIFT) != Mode::InterruptOnTerminalCount,
            pulses: self.pulses,
            loaded: self.loaded,
            ..Self::power_on(self.gate)
        };
    }

    /// The counter latch command: freezes CE for reading, unless a latched count is still
    /// unread.
    fn latch_count(&mut self) {
        self.latched_count.get_or_insert(self.count());
    }

    /// Read-back's status latch: OUT, null count and the programming.
    fn latch_status(&mut self) {
        let status = bit_if(self.out(), STATUS_OUT)
            | bit_if(self.null_count, STATUS_NULL_COUNT)
            | self.control;
        self.latched_status.get_or_insert(status);
    }

    /// A read of the counter's port: a latched status first, then the latched count or
    /// else the live one, a byte at a time as the access mode says.
    fn read(&mut self) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        let [low, high] = self
            .latched_count
            .unwrap_or_else(|| self.count())
            .to_le_bytes();
        let (byte, last) = match self.access() {
            Access::Lsb => (low, true),
            Access::Msb => (high, true),
            Access::Word if self.read_high_next => {
                self.read_high_next = false;
                (high, true)
            }
            Access::Word => {
                self.read_high_next = true;
                (low, false)
            }
        };
        if last {
            self.latched_count = None;
        }
        byte
    }

    /// A write to the counter's port: a byte of a new count.
    fn write(&mut self, byte: u8) {
        let [low, high] = self.count_register.to_le_bytes();
        let mode = self.mode();
        let count = match self.access() {
            Access::Lsb => u16::from_le_bytes([byte, 0]),
            Access::Msb => u16::from_le_bytes([0, byte]),
            Access::Word if self.write_high_next => {
                self.write_high_next = false;
                u16::from_le_bytes([low, byte])
            }
            Access::Word => {
                self.write_high_next = true;
                self.count_register = u16::from_le_bytes([byte, high]);
                if mode == Mode::InterruptOnTerminalCount {
                    // The first byte of a mode 0 count stops counting, OUT low.
                    self.phase = Phase::Idle;
                    self.held_out = false;
                }
                return;
            }
        };
        self.count_register = count;
        self.has_count = true;
        self.null_count = true;
        let load = match mode {
            Mode::InterruptOnTerminalCount | Mode::SoftwareStrobe => true,
            // A running period finishes first; the new count loads at its end.
            Mode::RateGenerator | Mode::SquareWave => self.phase == Phase::Idle,
            // These wait for a GATE trigger.
            Mode::HardwareOneShot | Mode::HardwareStrobe => false,
        };
        if load {
            self.start_loading();
        }
    }

    fn start_loading(&mut self) {
        self.held_out = self.out();
        self.phase = Phase::Loading;
    }

    /// GATE changes level: a rising edge triggers modes 1 and 5 and restarts modes 2
    /// and 3; a low GATE stops modes 0, 2, 3 and 4 from counting.
    fn set_gate(&mut self, level: bool) {
        let rising = level && !self.gate;
        self.gate = level;
        let mode = self.mode();
        if rising && self.has_count && (mode.is_gate_triggered() || mode.is_periodic()) {
            self.start_loading();
        }
    }

    /// Whether CE counts clock pulses now.
    fn counts(&self) -> bool {
        self.gate || self.mode().is_gate_triggered()
    }

    /// The count the count register stands for, as CE is loaded with it.
    fn initial_count(&self) -> u64 {
        let count = if self.bcd() {
            from_bcd(self.count_register)
        } else {
            u64::from(self.count_register)
        };
        let count = if count == 0 { self.range() } else { count };
        if self.mode().is_periodic() {
            count.max(MIN_PERIODIC_COUNT)
        } else {
            count
        }
    }

    /// How many values CE takes: it wraps from 0 to `range - 1`.
    fn range(&self) -> u64 {
        if self.bcd() {
            BCD_RANGE
        } else {
            BINARY_RANGE
        }
    }

    /// Loads CE from the count register (the clock pulse this takes does not count).
    fn load(&mut self) {
        self.loaded = self.initial_count();
        self.pulses = 0;
        self.null_count = false;
        self.phase = Phase::Counting;
    }

    /// OUT after `pulses` clock pulses of a CE loaded with `loaded`.
    fn out_at(&self, pulses: u64, loaded: u64) -> bool {
        match self.mode() {
            Mode::InterruptOnTerminalCount | Mode::HardwareOneShot => pulses >= loaded,
            // A low GATE forces OUT high at once in modes 2 and 3.
            Mode::RateGenerator => !self.gate || pulses != loaded - 1,
            Mode::SquareWave => !self.gate || pulses < loaded.div_ceil(2),
            Mode::SoftwareStrobe | Mode::HardwareStrobe => pulses != loaded,
        }
    }

    /// The OUT pin.
    pub fn out(&self) -> bool {
        match self.phase {
            Phase::Counting => self.out_at(self.pulses, self.loaded),
            Phase::Idle | Phase::Loading => self.held_out,
        }
    }

    /// CE as a read sees it: binary, or BCD digits.
    pub fn count(&self) -> u16 {
        let loaded = self.loaded;
        let value = match self.mode() {
            Mode::RateGenerator => loaded - self.pulses % loaded,
            Mode::SquareWave => {
                // CE counts down by two from the count rounded down to even, once in
                // each half of the period; an odd count's high half is a pulse longer.
                let pulses = self.pulses % loaded;
                let high = loaded.div_ceil(2);
                let into_half = if pulses < high { pulses } else { pulses - high };
                (loaded & !1) - 2 * into_half
            }
            // One-shots keep counting down after 0, wrapping around.
            _ => loaded + self.range() - self.pulses % self.range(),
        } % self.range();
        let encoded = if self.bcd() { to_bcd(value) } else { value };
        // Every value is below 2^16 (BCD: below 0x10000 as four nibbles).
        u16::try_from(encoded).unwrap_or(u16::MAX)
    }

    /// Pulses from `pulses` into a count of `loaded` until OUT next rises, if it will.
    fn edge_after(&self, pulses: u64, loaded: u64) -> Option<u64> {
        if !self.counts() {
            return None;
        }
        match self.mode() {
            Mode::RateGenerator | Mode::SquareWave => Some(loaded - pulses),
            Mode::InterruptOnTerminalCount | Mode::HardwareOneShot => {
                (pulses < loaded).then(|| loaded - pulses)
            }
            // The strobe's low pulse lasts one clock.
            Mode::SoftwareStrobe | Mode::HardwareStrobe => {
                (pulses <= loaded).then(|| loaded + 1 - pulses)
            }
        }
    }

    /// Clock pulses until OUT next rises, if it will without another write or GATE edge.
    fn pulses_to_edge(&self) -> Option<u64> {
        match self.phase {
            Phase::Idle => None,
            Phase::Loading => {
                let loaded = self.initial_count();
                if !self.held_out && self.out_at(0, loaded) {
                    Some(1)
                } else {
                    self.edge_after(0, loaded).map(|pulses| pulses + 1)
                }
            }
            Phase::Counting => self.edge_after(self.pulses, self.loaded),
        }
    }

    /// Runs `pulses` clock pulses, returning how many times OUT rose.
    fn run(&mut self, pulses: u64) -> u64 {
        match self.phase {
            Phase::Idle => 0,
            Phase::Loading if pulses > 0 => {
                let was = self.out();
                self.load();
                u64::from(!was && self.out()) + self.count_down(pulses - 1)
            }
            Phase::Loading => 0,
            Phase::Counting => self.count_down(pulses),
        }
    }

    /// Runs `pulses` clock pulses with CE loaded.
    fn count_down(&mut self, pulses: u64) -> u64 {
        let Some(edge) = self
            .edge_after(self.pulses, self.loaded)
            .filter(|&edge| edge <= pulses)
        else {
            if self.counts() {
                self.pulses = self.pulses.saturating_add(pulses);
            }
            return 0;
        };
        if self.mode().is_periodic() {
            // OUT rises as CE reloads, from a count register the guest may have changed.
            let rest = pulses - edge;
            self.loaded = self.initial_count();
            self.null_count = false;
            self.pulses = rest % self.loaded;
            1 + rest / self.loaded
        } else {
            self.pulses = self.pulses.saturating_add(pulses);
            1
        }
    }
}

/// The PIT's counters and virtual time: everything a snapshot saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    /// The virtual time of the last [`Pit8254::advance`], in nanoseconds.
    pub now_ns: u64,
    /// Counters 0, 1 and 2.
    pub counters: [CounterState; COUNTERS],
}

/// The 8254 PIT, its counters' GATEs wired as on a PC: 0 and 1 high, 2 from port 0x61.
///
/// The guest reaches it through the bus (it is its own [`BusDevice`]); the VMM holds it
/// too, to [`advance`](Self::advance) virtual time.
#[derive(Debug, Clone)]
pub struct Pit8254 {
    counters: [CounterState; COUNTERS],
    /// The virtual time of the last advance.
    now_ns: u64,
    /// Input clock pulses from machine start to `now_ns`.
    pulses: u64,
}

impl Default for Pit8254 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit8254 {
    /// The input clock: the PC's 14.31818 MHz crystal divided by 12.
    pub const FREQUENCY_HZ: u64 = 1_193_182;

    /// The PIT at virtual time 0, no counter programmed.
    pub fn new() -> Self {
        Self {
            // GATE 0 and 1 are tied high; GATE 2 follows port 0x61, low at power-on.
            counters: [
                CounterState::power_on(true),
                CounterState::power_on(true),
                CounterState::power_on(false),
            ],
            now_ns: 0,
            pulses: 0,
        }
    }

    /// Advances the counters to virtual time `now` (nanoseconds since machine start) and
    /// returns how many rising edges counter 0's output made since the last call (each
    /// one is an IRQ 0 edge for the PIC). Time never runs backwards: an earlier `now` is
    /// ignored.
    pub fn advance(&mut self, now_ns: u64) -> u32 {
        if now_ns <= self.now_ns {
            return 0;
        }
        let pulses = pulses_at(now_ns);
        let elapsed = pulses - self.pulses;
        self.now_ns = now_ns;
        self.pulses = pulses;
        let [irq0, others @ ..] = &mut self.counters;
        for counter in others {
            counter.run(elapsed);
        }
        u32::try_from(irq0.run(elapsed)).unwrap_or(u32::MAX)
    }

    /// The virtual time of counter 0's next rising edge, if it is running in a mode that
    /// produces one: lets the VMM fast-forward a halted CPU. Advancing to it reports the
    /// edge; advancing to any earlier time does not.
    pub fn next_irq0_ns(&self) -> Option<u64> {
        let pulse = self
            .pulses
            .checked_add(self.counters[IRQ0_COUNTER].pulses_to_edge()?)?;
        // The first nanosecond at which `pulses_at` reaches that pulse.
        let ns = (u128::from(pulse) * NANOS_PER_SECOND).div_ceil(u128::from(Self::FREQUENCY_HZ));
        u64::try_from(ns).ok()
    }

    /// The counters and virtual time.
    pub fn state(&self) -> PitState {
        PitState {
            now_ns: self.now_ns,
            counters: self.counters,
        }
    }

    /// The PIT `state` describes, after checking that its counters are ones some
    /// sequence of accesses, GATE edges and clock pulses could have produced on this
    /// board.
    pub fn from_state(state: &PitState) -> Result<Self, PitStateError> {
        for (counter, registers) in state.counters.iter().enumerate() {
            registers.validate(counter)?;
            if counter != SPEAKER_COUNTER && !registers.gate {
                return Err(PitStateError::Gate { counter });
            }
        }
        Ok(Self {
            counters: state.counters,
            now_ns: state.now_ns,
            pulses: pulses_at(state.now_ns),
        })
    }

    /// Puts the PIT in `state`; on an error the PIT is unchanged.
    pub fn restore(&mut self, state: &PitState) -> Result<(), PitStateError> {
        *self = Self::from_state(state)?;
        Ok(())
    }

    /// Input clock pulses since machine start, as of the last advance.
    pub(crate) fn pulses(&self) -> u64 {
        self.pulses
    }

    /// Counter 2's GATE, which port 0x61 drives.
    pub(crate) fn speaker_gate(&self) -> bool {
        self.counters[SPEAKER_COUNTER].gate
    }

    /// Sets counter 2's GATE.
    pub(crate) fn set_speaker_gate(&mut self, level: bool) {
        self.counters[SPEAKER_COUNTER].set_gate(level);
    }

    /// Counter 2's OUT, which port 0x61 shows.
    pub(crate) fn speaker_out(&self) -> bool {
        self.counters[SPEAKER_COUNTER].out()
    }

    fn write_control(&mut self, control: u8) {
        let select = control >> SELECT_SHIFT;
        if select == SELECT_READ_BACK {
            self.read_back(control);
            return;
        }
        let counter = &mut self.counters[usize::from(select)];
        match Access::from_bits(control >> ACCESS_SHIFT) {
            None => counter.latch_count(),
            Some(_) => counter.program(control),
        }
    }

    /// The read-back command: latches the count and/or status of each selected counter.
    fn read_back(&mut self, command: u8) {
        for (index, counter) in self.counters.iter_mut().enumerate() {
            if command & (READ_BACK_COUNTER0 << index) == 0 {
                continue;
            }
            if command & READ_BACK_NO_COUNT == 0 {
                counter.latch_count();
            }
            if command & READ_BACK_NO_STATUS == 0 {
                counter.latch_status();
            }
        }
    }
}

/// The value of four BCD digits. A nibble over 9 counts as its value: the datasheet
/// does not say what the chip does with one, and the guest gets some count this way.
fn from_bcd(digits: u16) -> u64 {
    (0..BCD_DIGITS).rev().fold(0, |value, digit| {
        value * DECIMAL_BASE + (u64::from(digits) >> (digit * NIBBLE_BITS) & NIBBLE_MASK)
    }) % BCD_RANGE
}

/// Whether every digit of `digits` is a decimal one.
fn is_bcd(digits: u16) -> bool {
    (0..BCD_DIGITS)
        .all(|digit| u64::from(digits) >> (digit * NIBBLE_BITS) & NIBBLE_MASK < DECIMAL_BASE)
}

/// `value` (below [`BCD_RANGE`]) as four BCD digits.
fn to_bcd(value: u64) -> u64 {
    (0..BCD_DIGITS).fold(0, |digits, digit| {
        digits | (value / DECIMAL_BASE.pow(digit) % DECIMAL_BASE) << (digit * NIBBLE_BITS)
    })
}

/// Input clock pulses from machine start to `now_ns`.
fn pulses_at(now_ns: u64) -> u64 {
    let pulses = u128::from(now_ns) * u128::from(Pit8254::FREQUENCY_HZ) / NANOS_PER_SECOND;
    // At most u64::MAX * 1.2e-3: always fits.
    u64::try_from(pulses).unwrap_or(u64::MAX)
}

impl BusDevice for Pit8254 {
    /// The 8254 has an 8-bit data bus: byte lane `i` reads register `offset + i`. The
    /// control word register cannot be read.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_byte_lanes(offset, data, REGISTER_COUNT, |reg| {
            self.counters
                .get_mut(usize::from(reg))
                .map_or(OPEN_BUS, CounterState::read)
        });
    }

    /// Byte lane `i` writes register `offset + i`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        write_byte_lanes(offset, data, REGISTER_COUNT, |reg, value| {
            match self.counters.get_mut(usize::from(reg)) {
                Some(counter) => counter.write(value),
                None => self.write_control(value),
            }
        });
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_test::{original_and_restored, state_proptests, Restorable};
    use proptest::prelude::*;

    /// Mode bits for the control word.
    const MODE_0: u8 = 0;
    const MODE_1: u8 = 1;
    const MODE_2: u8 = 2;
    const MODE_3: u8 = 3;
    const MODE_4: u8 = 4;
    /// The divisor Linux uses for a 100 Hz tick.
    const LATCH_100HZ: u16 = 11_932;

    fn control(counter: u8, access: u8, mode: u8) -> u8 {
        counter << SELECT_SHIFT | access << ACCESS_SHIFT | mode << MODE_SHIFT
    }

    /// The first virtual time at which `pulses` input clock pulses have elapsed.
    fn ns(pulses: u64) -> u64 {
        u64::try_from(
            (u128::from(pulses) * NANOS_PER_SECOND).div_ceil(u128::from(Pit8254::FREQUENCY_HZ)),
        )
        .unwrap()
    }

    fn outb(pit: &mut Pit8254, reg: u64, value: u8) {
        pit.write(reg, &[value]);
    }

    fn inb(pit: &mut Pit8254, reg: u64) -> u8 {
        let mut byte = [0];
        pit.read(reg, &mut byte);
        byte[0]
    }

    /// Programs `counter` in `mode` with a low-then-high byte `count`.
    fn program(pit: &mut Pit8254, counter: u8, mode: u8, count: u16) {
        outb(pit, CONTROL, control(counter, ACCESS_WORD, mode));
        let [low, high] = count.to_le_bytes();
        outb(pit, counter.into(), low);
        outb(pit, counter.into(), high);
    }

    fn read_word(pit: &mut Pit8254, counter: u64) -> u16 {
        u16::from_le_bytes([inb(pit, counter), inb(pit, counter)])
    }

    /// Counter `counter`'s status byte, through the read-back command.
    fn status(pit: &mut Pit8254, counter: u64) -> u8 {
        let command =
            SELECT_READ_BACK << SELECT_SHIFT | READ_BACK_NO_COUNT | READ_BACK_COUNTER0 << counter;
        outb(pit, CONTROL, command);
        inb(pit, counter)
    }

    #[test]
    fn mode_2_at_11932_ticks_at_100_hz() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_2, LATCH_100HZ);
        let first = pit.advance(1_000_000_000);
        assert!((99..=100).contains(&first), "{first} edges in one second");
        let ten = first + pit.advance(10_000_000_000);
        assert!((999..=1000).contains(&ten), "{ten} edges in ten seconds");
    }

    #[test]
    fn mode_3_at_11932_ticks_at_100_hz_with_a_square_wave() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_3, LATCH_100HZ);
        let edges = pit.advance(1_000_000_000);
        assert!((99..=100).contains(&edges), "{edges} edges in one second");

        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_3, 10);
        // Loaded at pulse 1: high for pulses 1..6, low for 6..11, rising at 11.
        let outs: Vec<bool> = (1..=11)
            .map(|pulse| {
                pit.advance(ns(pulse));
                status(&mut pit, 0) & STATUS_OUT != 0
            })
            .collect();
        assert_eq!(
            outs,
            [true, true, true, true, true, false, false, false, false, false, true]
        );
    }

    #[test]
    fn mode_3_odd_counts_stay_high_one_pulse_longer() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_3, 5);
        let outs: Vec<bool> = (1..=6)
            .map(|pulse| {
                pit.advance(ns(pulse));
                status(&mut pit, 0) & STATUS_OUT != 0
            })
            .collect();
        assert_eq!(outs, [true, true, true, false, false, true]);
    }

    #[test]
    fn mode_0_fires_exactly_once() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_0, 1000);
        assert_eq!(status(&mut pit, 0) & STATUS_OUT, 0);
        // The load takes a pulse: OUT rises N + 1 pulses after the count is written.
        assert_eq!(pit.advance(ns(1000)), 0);
        assert_eq!(pit.advance(ns(1001)), 1);
        assert_eq!(pit.advance(10_000_000_000), 0);
        assert_ne!(status(&mut pit, 0) & STATUS_OUT, 0, "OUT stays high");
        assert_eq!(pit.next_irq0_ns(), None);

        // A new count re-arms it.
        let now = pit.state().now_ns;
        let [low, high] = 500u16.to_le_bytes();
        outb(&mut pit, 0, low);
        assert_eq!(
            status(&mut pit, 0) & STATUS_OUT,
            0,
            "the first byte drops OUT"
        );
        outb(&mut pit, 0, high);
        assert_eq!(pit.advance(now + 1_000_000), 1);
        assert_eq!(pit.advance(now + 1_000_000_000), 0);
    }

    #[test]
    fn the_first_byte_of_a_mode_0_count_stops_counting() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_0, 100);
        pit.advance(ns(51));
        assert_eq!(read_word(&mut pit, 0), 50);
        outb(&mut pit, 0, 10);
        pit.advance(ns(1000));
        assert_eq!(pit.next_irq0_ns(), None);
        outb(&mut pit, 0, 0);
        assert_eq!(pit.next_irq0_ns(), Some(ns(1011)));
    }

    #[test]
    fn one_shots_keep_counting_down_and_wrap() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_0, 3);
        pit.advance(ns(6));
        assert_eq!(read_word(&mut pit, 0), 0xFFFE);
    }

    #[test]
    fn a_latched_count_holds_until_read() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_2, 50_000);
        pit.advance(ns(101));
        assert_eq!(pit.state().counters[0].count(), 49_900);
        outb(&mut pit, CONTROL, control(0, ACCESS_LATCH, 0));
        pit.advance(ns(1001));
        // A second latch before the first is read changes nothing.
        outb(&mut pit, CONTROL, control(0, ACCESS_LATCH, 0));
        assert_eq!(inb(&mut pit, 0), 49_900u16.to_le_bytes()[0]);
        pit.advance(ns(2001));
        assert_eq!(inb(&mut pit, 0), 49_900u16.to_le_bytes()[1]);
        // The latch is spent: reads follow the counter again.
        assert_eq!(read_word(&mut pit, 0), 48_000);
        assert_eq!(
            pit.state().counters[0].mode(),
            Mode::RateGenerator,
            "latching keeps the mode"
        );
    }

    #[test]
    fn lsb_only_and_msb_only_access() {
        let mut pit = Pit8254::new();
        outb(&mut pit, CONTROL, control(1, ACCESS_LSB, MODE_2));
        outb(&mut pit, 1, 0x80);
        assert_eq!(pit.state().counters[1].count_register, 0x0080);
        pit.advance(ns(17));
        assert_eq!(inb(&mut pit, 1), 0x70);
        assert_eq!(inb(&mut pit, 1), 0x70, "every read is the low byte");

        outb(&mut pit, CONTROL, control(1, ACCESS_MSB, MODE_2));
        outb(&mut pit, 1, 0x12);
        assert_eq!(pit.state().counters[1].count_register, 0x1200);
        assert_eq!(pit.state().counters[1].access(), Access::Msb);
        // The new count loads at the end of the current period.
        pit.advance(ns(17 + 0x70 + 1));
        assert_eq!(inb(&mut pit, 1), 0x11);
        assert_eq!(inb(&mut pit, 1), 0x11, "every read is the high byte");
    }

    #[test]
    fn next_irq0_ns_matches_the_edges() {
        let mut pit = Pit8254::new();
        assert_eq!(pit.next_irq0_ns(), None, "nothing programmed");
        for mode in [MODE_2, MODE_3, MODE_0, MODE_4] {
            program(&mut pit, 0, mode, 1000);
            let mut edges = 0;
            while let Some(next) = pit.next_irq0_ns() {
                assert_eq!(
                    pit.advance(next - 1),
                    0,
                    "mode {mode}: no edge before {next}"
                );
                assert_eq!(pit.advance(next), 1, "mode {mode}: an edge at {next}");
                edges += 1;
                if edges == 5 {
                    break;
                }
            }
            let expected = if mode == MODE_2 || mode == MODE_3 {
                5
            } else {
                1
            };
            assert_eq!(edges, expected, "mode {mode}");
        }
        // Mode 2's edges come every count pulses.
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_2, 1000);
        assert_eq!(pit.next_irq0_ns(), Some(ns(1001)));
        pit.advance(ns(1001));
        assert_eq!(pit.next_irq0_ns(), Some(ns(2001)));
    }

    #[test]
    fn read_back_latches_status_and_counts() {
        let mut pit = Pit8254::new();
        let mode_2 = control(0, ACCESS_WORD, MODE_2);
        program(&mut pit, 0, MODE_2, 100);
        assert_eq!(status(&mut pit, 0), STATUS_OUT | STATUS_NULL_COUNT | mode_2);
        pit.advance(ns(1));
        assert_eq!(status(&mut pit, 0), STATUS_OUT | mode_2, "loaded");
        program(&mut pit, 2, MODE_0, 100);

        // Latch count and status of counters 0 and 2: status reads first, then the count.
        pit.advance(ns(11));
        let both = SELECT_READ_BACK << SELECT_SHIFT | READ_BACK_COUNTER0 | READ_BACK_COUNTER0 << 2;
        outb(&mut pit, CONTROL, both);
        pit.advance(ns(50));
        assert_eq!(inb(&mut pit, 0), STATUS_OUT | mode_2);
        assert_eq!(read_word(&mut pit, 0), 90);
        // Counter 2's GATE is low: it loaded but does not count.
        assert_eq!(
            inb(&mut pit, 2),
            control(2, ACCESS_WORD, MODE_0) & PROGRAMMING_MASK
        );
        assert_eq!(read_word(&mut pit, 2), 100);
    }

    #[test]
    fn a_new_rate_takes_effect_at_the_end_of_the_period() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_2, 1000);
        pit.advance(ns(501));
        let [low, high] = 2000u16.to_le_bytes();
        outb(&mut pit, 0, low);
        outb(&mut pit, 0, high);
        assert!(pit.state().counters[0].null_count);
        assert_eq!(pit.next_irq0_ns(), Some(ns(1001)));
        assert_eq!(pit.advance(ns(1001)), 1);
        assert!(!pit.state().counters[0].null_count);
        assert_eq!(pit.next_irq0_ns(), Some(ns(3001)));
    }

    #[test]
    fn bcd_counts_in_decimal() {
        let mut pit = Pit8254::new();
        outb(
            &mut pit,
            CONTROL,
            control(0, ACCESS_WORD, MODE_2) | CONTROL_BCD,
        );
        outb(&mut pit, 0, 0x00);
        outb(&mut pit, 0, 0x01);
        pit.advance(ns(38));
        assert_eq!(read_word(&mut pit, 0), 0x0063);
        assert_eq!(pit.next_irq0_ns(), Some(ns(101)));
        // 0000 is 10^4 in BCD.
        outb(
            &mut pit,
            CONTROL,
            control(0, ACCESS_WORD, MODE_0) | CONTROL_BCD,
        );
        outb(&mut pit, 0, 0);
        outb(&mut pit, 0, 0);
        let now = pit.state().now_ns;
        assert_eq!(
            pit.next_irq0_ns(),
            Some(ns(38 + 10_001)).filter(|&t| t > now)
        );
    }

    #[test]
    fn a_low_gate_pauses_counter_2() {
        let mut pit = Pit8254::new();
        program(&mut pit, 2, MODE_0, 100);
        pit.advance(ns(50));
        assert_eq!(pit.state().counters[2].count(), 100, "GATE 2 starts low");
        pit.set_speaker_gate(true);
        pit.advance(ns(80));
        assert_eq!(pit.state().counters[2].count(), 70);
        pit.set_speaker_gate(false);
        pit.advance(ns(500));
        assert_eq!(pit.state().counters[2].count(), 70);
        assert!(!pit.speaker_out());
        pit.set_speaker_gate(true);
        pit.advance(ns(570));
        assert!(pit.speaker_out());
    }

    #[test]
    fn a_gate_edge_triggers_mode_1() {
        let mut pit = Pit8254::new();
        program(&mut pit, 2, MODE_1, 10);
        pit.advance(ns(100));
        assert!(pit.speaker_out(), "waits for a trigger");
        pit.set_speaker_gate(true);
        pit.advance(ns(101));
        assert!(!pit.speaker_out());
        pit.advance(ns(110));
        assert!(!pit.speaker_out());
        pit.advance(ns(111));
        assert!(pit.speaker_out());
        // Retriggering restarts the pulse.
        pit.set_speaker_gate(false);
        pit.set_speaker_gate(true);
        pit.advance(ns(115));
        assert!(!pit.speaker_out());
    }

    #[test]
    fn mode_4_strobes_once() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_4, 10);
        pit.advance(ns(11));
        assert_eq!(
            status(&mut pit, 0) & STATUS_OUT,
            0,
            "low for the one pulse at 0"
        );
        assert_eq!(pit.advance(ns(12)), 1);
        assert_ne!(status(&mut pit, 0) & STATUS_OUT, 0);
        assert_eq!(pit.advance(ns(1_000_000)), 0);
    }

    #[test]
    fn count_1_runs_as_2_in_periodic_modes() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_2, 1);
        assert_eq!(pit.advance(ns(201)), 100);
    }

    #[test]
    fn time_runs_forward_only_and_far() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_2, 2);
        pit.advance(1_000_000);
        assert_eq!(pit.advance(500_000), 0);
        assert_eq!(pit.state().now_ns, 1_000_000);
        assert_eq!(pit.advance(u64::MAX), u32::MAX);
        assert_eq!(pit.next_irq0_ns(), None, "past the end of time");
    }

    #[test]
    fn ports_decode_bytes_and_the_control_word_reads_open_bus() {
        let mut pit = Pit8254::new();
        // A word write at counter 2 writes counter 2, then the control word.
        pit.write(2, &[0x55, control(0, ACCESS_LSB, MODE_2)]);
        assert_eq!(pit.state().counters[0].access(), Access::Lsb);
        let mut data = [0; 4];
        pit.read(CONTROL, &mut data);
        assert_eq!(data, [OPEN_BUS; 4]);
    }

    /// Something the guest or the VMM does to the PIT.
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        Write(u64, u8),
        Read(u64),
        /// Virtual time moves on by this many nanoseconds.
        Advance(u64),
        /// Port 0x61 drives GATE 2.
        Gate2(bool),
    }

    /// What an operation makes visible: a read's byte or an advance's IRQ 0 edges, then
    /// the next IRQ 0 time and counter 2's OUT.
    pub(crate) type Seen = (Option<u32>, Option<u64>, bool);

    impl Restorable for Pit8254 {
        type State = PitState;
        type Op = Op;
        type Seen = Seen;

        fn save(&self) -> PitState {
            self.state()
        }

        fn twin(&self, state: &PitState) -> Result<Self, String> {
            Pit8254::from_state(state).map_err(|e| e.to_string())
        }

        fn apply(&mut self, op: &Op) -> Seen {
            let seen = match *op {
                Op::Write(reg, value) => {
                    outb(self, reg, value);
                    None
                }
                Op::Read(reg) => Some(u32::from(inb(self, reg))),
                Op::Advance(ns) => Some(self.advance(self.now_ns.saturating_add(ns))),
                Op::Gate2(level) => {
                    self.set_speaker_gate(level);
                    None
                }
            };
            (seen, self.next_irq0_ns(), self.speaker_out())
        }
    }

    /// Reads every counter's count and status, with time moving on between.
    fn probe() -> Vec<Op> {
        let mut ops = Vec::new();
        for counter in 0..COUNTERS as u64 {
            ops.extend([
                Op::Read(counter),
                Op::Read(counter),
                Op::Advance(5_000),
                Op::Write(CONTROL, status_command(counter)),
                Op::Read(counter),
                Op::Read(counter),
                Op::Advance(1_000_000),
            ]);
        }
        ops
    }

    /// Read-back of counter `counter`'s status only.
    fn status_command(counter: u64) -> u8 {
        SELECT_READ_BACK << SELECT_SHIFT | READ_BACK_NO_COUNT | READ_BACK_COUNTER0 << counter
    }

    #[test]
    fn a_restored_pit_finishes_reading_a_half_read_latch() {
        use Op::*;
        let [low, high] = LATCH_100HZ.to_le_bytes();
        let prefix = [
            Write(CONTROL, control(0, ACCESS_WORD, MODE_2)),
            Write(0, low),
            Write(0, high),
            Advance(3_000_000),
            // Latch counter 0 and read its low byte.
            Write(CONTROL, control(0, ACCESS_LATCH, 0)),
            Advance(40_000),
            Read(0),
            // Counter 2: status and count latched, a mode 0 count half written, GATE up.
            Write(CONTROL, control(2, ACCESS_WORD, MODE_0)),
            Write(2, 0x34),
            Write(2, 0x12),
            Gate2(true),
            Advance(700),
            Write(
                CONTROL,
                SELECT_READ_BACK << SELECT_SHIFT | READ_BACK_COUNTER0 << 2,
            ),
            Write(2, 0x99),
        ];
        let mut snapshot = Pit8254::new();
        snapshot.run(&prefix);
        let counters = snapshot.state().counters;
        assert!(counters[0].latched_count.is_some() && counters[0].read_high_next);
        assert!(counters[2].latched_status.is_some() && counters[2].write_high_next);

        let tail = [vec![Advance(1_000), Read(0), Write(2, 0x00)], probe()].concat();
        let [original, restored] = original_and_restored(Pit8254::new(), &prefix, &tail);
        assert_eq!(original, restored);
    }

    #[test]
    fn a_restored_pit_keeps_its_ticks_and_one_shots() {
        use Op::*;
        let prefix = [
            Write(CONTROL, control(0, ACCESS_WORD, MODE_3)),
            Write(0, 0x10),
            Write(0, 0x27),
            Write(CONTROL, control(2, ACCESS_LSB, MODE_1) | CONTROL_BCD),
            Write(2, 0x99),
            Gate2(true),
            Advance(12_345_678),
            // A new count waits for counter 0's period to end.
            Write(0, 0x00),
            Write(0, 0x01),
        ];
        let tail = [vec![Gate2(false), Gate2(true), Advance(1)], probe()].concat();
        let [original, restored] = original_and_restored(Pit8254::new(), &prefix, &tail);
        assert_eq!(original, restored);
        // The ticks went on: every Advance of a millisecond saw some.
        assert!(original
            .0
            .iter()
            .any(|&(seen, ..)| seen.is_some_and(|n| n > 1)));
    }

    #[test]
    fn states_no_pit_reaches_are_refused() {
        let mut pit = Pit8254::new();
        program(&mut pit, 0, MODE_2, 100);
        pit.advance(ns(30));
        let good = pit.state();
        let refused = |change: fn(&mut PitState)| {
            let mut bad = good;
            change(&mut bad);
            Pit8254::from_state(&bad).unwrap_err()
        };
        assert_eq!(
            refused(|s| s.counters[1].control = 0x40),
            PitStateError::Control {
                counter: 1,
                value: 0x40
            }
        );
        assert!(matches!(
            refused(|s| s.counters[1].control = 0x0E),
            PitStateError::Control { counter: 1, .. }
        ));
        assert_eq!(
            refused(|s| s.counters[0].gate = false),
            PitStateError::Gate { counter: 0 }
        );
        assert_eq!(
            refused(|s| {
                s.counters[2].control = ACCESS_LSB << ACCESS_SHIFT;
                s.counters[2].read_high_next = true;
            }),
            PitStateError::ByteToggle { counter: 2 }
        );
        assert!(matches!(
            refused(|s| s.counters[0].latched_status = Some(STATUS_OUT)),
            PitStateError::LatchedStatus { counter: 0, .. }
        ));
        assert_eq!(
            refused(|s| {
                s.counters[2].control |= CONTROL_BCD;
                s.counters[2].latched_count = Some(0x00A0);
            }),
            PitStateError::LatchedCount {
                counter: 2,
                value: 0xA0
            }
        );
        assert!(matches!(
            refused(|s| s.counters[1].phase = Phase::Loading),
            PitStateError::Phase { counter: 1, .. }
        ));
        assert!(matches!(
            refused(|s| s.counters[0].pulses = 100),
            PitStateError::Count { counter: 0, .. }
        ));
        assert!(matches!(
            refused(|s| s.counters[2].loaded = 0),
            PitStateError::Count { counter: 2, .. }
        ));
        // A refused restore leaves the PIT as it was.
        let mut bad = good;
        bad.counters[0].loaded = BINARY_RANGE + 1;
        assert!(pit.restore(&bad).is_err());
        assert_eq!(pit.state(), good);
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..REGISTER_COUNT, any::<u8>()).prop_map(|(reg, value)| Op::Write(reg, value)),
            3 => (0..REGISTER_COUNT).prop_map(Op::Read),
            3 => prop_oneof![0..20_000u64, 0..100_000_000u64].prop_map(Op::Advance),
            1 => any::<bool>().prop_map(Op::Gate2),
        ]
    }

    state_proptests!(Pit8254::new(), op());
}

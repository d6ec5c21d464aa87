//! Port 0x61, the PC/AT's "system control port B": NMI status and control, the PIT's
//! counter 2 GATE and OUT, and the speaker enable.
//!
//! No NMI source is modeled, so the status bits read 0 and the NMI enables are only
//! remembered; the speaker makes no sound. What guests need is the counter 2 wiring:
//! Linux calibrates the TSC by raising GATE 2 here and polling OUT 2.
//!
//! The port's own state is the bits a write latches ([`SystemControlState`]); GATE 2 is
//! the PIT's, and saved with it.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::bus::{read_byte_lanes, write_byte_lanes, BusDevice, DeviceRequest};
use crate::pit::Pit8254;
use crate::{bit_if, lock};

/// The port span: one register.
pub const REGISTER_COUNT: u64 = 1;

/// Read/write: the PIT's counter 2 GATE.
pub const SPEAKER_GATE: u8 = 1 << 0;
/// Read/write: speaker data enable (counter 2's OUT reaches the speaker).
pub const SPEAKER_ENABLE: u8 = 1 << 1;
/// Read/write: RAM parity (SERR#) NMIs disabled.
pub const PARITY_CHECK_DISABLE: u8 = 1 << 2;
/// Read/write: I/O channel check NMIs disabled.
pub const CHANNEL_CHECK_DISABLE: u8 = 1 << 3;
/// Read-only: toggles with every DRAM refresh request, which BIOS delay loops count.
pub const REFRESH_TOGGLE: u8 = 1 << 4;
/// Read-only: the PIT's counter 2 OUT.
pub const SPEAKER_OUT: u8 = 1 << 5;

/// The bits a write sets and a read returns as written (GATE 2 is kept by the PIT).
const LATCHED_BITS: u8 = SPEAKER_ENABLE | PARITY_CHECK_DISABLE | CHANNEL_CHECK_DISABLE;
/// PIT input clock pulses per refresh request: the count the BIOS gives counter 1
/// (about 15 µs), here derived from virtual time as no guest we run programs counter 1.
const REFRESH_PULSES: u64 = 18;

/// Port 0x61's own bits: everything a snapshot saves of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemControlState {
    /// The speaker enable and NMI enable bits as last written.
    pub latched: u8,
}

/// Why a [`SystemControlState`] cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemControlStateError {
    /// Only the speaker enable and the two NMI disables are latched.
    #[error("port 0x61: {value:#04x} latches more than the speaker enable and NMI disable bits")]
    Latched {
        /// The value found.
        value: u8,
    },
}

/// Port 0x61, sharing the PIT with the port bus and the VMM.
///
/// Reads see counter 2 as of the VMM's last [`Pit8254::advance`].
#[derive(Debug, Clone)]
pub struct SystemControl {
    pit: Arc<Mutex<Pit8254>>,
    /// The speaker enable and NMI enable bits as last written.
    latched: u8,
}

impl SystemControl {
    /// The port at power-on: GATE 2 low, speaker off, NMI sources enabled.
    pub fn new(pit: Arc<Mutex<Pit8254>>) -> Self {
        Self { pit, latched: 0 }
    }

    /// The port `state` describes, on `pit`.
    pub fn from_state(
        state: &SystemControlState,
        pit: Arc<Mutex<Pit8254>>,
    ) -> Result<Self, SystemControlStateError> {
        if state.latched & !LATCHED_BITS != 0 {
            return Err(SystemControlStateError::Latched {
                value: state.latched,
            });
        }
        Ok(Self {
            pit,
            latched: state.latched,
        })
    }

    /// Puts the port in `state`; on an error it is unchanged.
    pub fn restore(&mut self, state: &SystemControlState) -> Result<(), SystemControlStateError> {
        *self = Self::from_state(state, self.pit.clone())?;
        Ok(())
    }

    /// The bits a write latched.
    pub fn state(&self) -> SystemControlState {
        SystemControlState {
            latched: self.latched,
        }
    }

    fn value(&self) -> u8 {
        let pit = lock(&self.pit);
        let refresh = (pit.pulses() / REFRESH_PULSES) % 2 == 1;
        self.latched
            | bit_if(pit.speaker_gate(), SPEAKER_GATE)
            | bit_if(refresh, REFRESH_TOGGLE)
            | bit_if(pit.speaker_out(), SPEAKER_OUT)
    }

    fn set(&mut self, value: u8) {
        self.latched = value & LATCHED_BITS;
        lock(&self.pit).set_speaker_gate(value & SPEAKER_GATE != 0);
    }
}

impl BusDevice for SystemControl {
    /// Byte lane 0 reads the register; wider lanes read as an undriven bus.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_byte_lanes(offset, data, REGISTER_COUNT, |_| self.value());
    }

    /// Byte lane 0 writes the register; the read-only bits are ignored.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        write_byte_lanes(offset, data, REGISTER_COUNT, |_, value| self.set(value));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pit::{PitState, CONTROL, SPEAKER_COUNTER};
    use crate::state_test::{original_and_restored, state_proptests, Restorable};
    use proptest::prelude::*;

    /// Counter 2, low then high byte, mode 0: what Linux writes to calibrate the TSC.
    const CH2_MODE_0: u8 = 0xB0;

    fn port() -> (SystemControl, Arc<Mutex<Pit8254>>) {
        let pit = Arc::new(Mutex::new(Pit8254::new()));
        (SystemControl::new(pit.clone()), pit)
    }

    fn inb(port: &mut SystemControl) -> u8 {
        let mut byte = [0];
        port.read(0, &mut byte);
        byte[0]
    }

    #[test]
    fn gate_2_starts_counter_2_and_out_2_shows_its_end() {
        let (mut port, pit) = port();
        assert_eq!(inb(&mut port) & (SPEAKER_GATE | SPEAKER_OUT), 0);
        port.write(0, &[SPEAKER_GATE]);
        assert!(lock(&pit).state().counters[SPEAKER_COUNTER].gate);
        {
            let mut pit = lock(&pit);
            pit.write(CONTROL, &[CH2_MODE_0]);
            // Byte by byte: a word write would reach the control word with its high byte.
            pit.write(SPEAKER_COUNTER as u64, &[100]);
            pit.write(SPEAKER_COUNTER as u64, &[0]);
        }
        // 100 pulses after the load: 84.6 µs at 1.193182 MHz.
        lock(&pit).advance(84_000);
        assert_eq!(inb(&mut port) & SPEAKER_OUT, 0);
        lock(&pit).advance(85_000);
        assert_ne!(inb(&mut port) & SPEAKER_OUT, 0);
    }

    #[test]
    fn control_bits_read_back_and_status_bits_ignore_writes() {
        let (mut port, _) = port();
        port.write(0, &[0xFF]);
        assert_eq!(
            inb(&mut port),
            SPEAKER_GATE | SPEAKER_ENABLE | PARITY_CHECK_DISABLE | CHANNEL_CHECK_DISABLE
        );
        port.write(0, &[SPEAKER_ENABLE]);
        assert_eq!(inb(&mut port), SPEAKER_ENABLE);
        // Only one port: a word read's second lane is undriven.
        let mut word = [0; 2];
        port.read(0, &mut word);
        assert_eq!(word, [SPEAKER_ENABLE, crate::OPEN_BUS]);
    }

    #[test]
    fn the_refresh_bit_toggles_with_virtual_time() {
        let (mut port, pit) = port();
        let mut seen = Vec::new();
        for step in 1..=8 {
            // Half a refresh period (about 7.5 µs) per step.
            lock(&pit).advance(step * 7_543);
            seen.push(inb(&mut port) & REFRESH_TOGGLE != 0);
        }
        assert_eq!(seen, [false, true, true, false, false, true, true, false]);
    }

    /// Something the guest or the VMM does to the port (or the PIT behind it).
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        /// The guest writes the port.
        Write(u8),
        /// The guest reads the port.
        Read,
        /// The guest writes a PIT register.
        Pit(u64, u8),
        /// Virtual time moves on by this many nanoseconds.
        Advance(u64),
    }

    impl Restorable for SystemControl {
        type State = (SystemControlState, PitState);
        type Op = Op;
        type Seen = Option<u8>;

        fn save(&self) -> Self::State {
            (self.state(), lock(&self.pit).state())
        }

        fn twin(&self, (port, pit): &Self::State) -> Result<Self, String> {
            let pit = Pit8254::from_state(pit).map_err(|e| e.to_string())?;
            SystemControl::from_state(port, Arc::new(Mutex::new(pit))).map_err(|e| e.to_string())
        }

        fn apply(&mut self, op: &Op) -> Option<u8> {
            match *op {
                Op::Write(value) => {
                    self.write(0, &[value]);
                    None
                }
                Op::Read => Some(inb(self)),
                Op::Pit(reg, value) => {
                    lock(&self.pit).write(reg, &[value]);
                    None
                }
                Op::Advance(ns) => {
                    let mut pit = lock(&self.pit);
                    let now = pit.state().now_ns;
                    pit.advance(now.saturating_add(ns));
                    None
                }
            }
        }
    }

    #[test]
    fn a_restored_port_keeps_its_bits_and_counter_2_running() {
        use Op::*;
        let prefix = [
            Pit(CONTROL, CH2_MODE_0),
            Pit(SPEAKER_COUNTER as u64, 0x00),
            Pit(SPEAKER_COUNTER as u64, 0x10),
            Write(SPEAKER_GATE | SPEAKER_ENABLE | CHANNEL_CHECK_DISABLE),
            Advance(1_000_000),
        ];
        let tail = [
            Read,
            Advance(3_000_000),
            Read,
            Write(0),
            Read,
            Advance(7_543),
            Read,
        ];
        let [original, restored] = original_and_restored(port().0, &prefix, &tail);
        assert_ne!(
            original.0[2].unwrap() & SPEAKER_OUT,
            0,
            "OUT 2 rose after the restore"
        );
        assert_eq!(original, restored);
    }

    #[test]
    fn bits_a_write_does_not_latch_are_refused() {
        let (port, _) = port();
        let state = SystemControlState {
            latched: SPEAKER_ENABLE | SPEAKER_OUT,
        };
        assert_eq!(
            SystemControl::from_state(&state, port.pit.clone()).unwrap_err(),
            SystemControlStateError::Latched {
                value: SPEAKER_ENABLE | SPEAKER_OUT
            }
        );
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u8>().prop_map(Op::Write),
            Just(Op::Read),
            (0..crate::pit::REGISTER_COUNT, any::<u8>())
                .prop_map(|(reg, value)| Op::Pit(reg, value)),
            (0..1_000_000u64).prop_map(Op::Advance),
        ]
    }

    state_proptests!(port().0, op());
}

//! One address-decoding bus, used both for port I/O (addresses `0..=0xFFFF`) and for MMIO.
//!
//! Devices claim disjoint ranges `[base, base + len)`; an access is routed to the device
//! whose range holds its first byte, at `offset = addr - base`, so a device model only
//! ever sees offsets from its own base and can be placed anywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::lock;

/// What a read returns when no device drives the data lines: the bus's pull-up resistors
/// make every bit 1. Engines fill unclaimed reads with it.
pub const OPEN_BUS: u8 = 0xFF;

/// The access widths a CPU issues on the bus: byte, word, dword and (MMIO only) qword.
const ACCESS_SIZES: [usize; 4] = [1, 2, 4, 8];

/// A device model attached to a [`Bus`].
pub trait BusDevice: Send {
    /// Read `data.len()` bytes (1, 2, 4 or 8) at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Write at `offset`; may ask the VMM for something (e.g. end the run).
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest>;
}

/// Serves a read on a device with an 8-bit data bus and `count` byte-wide registers, as
/// the ISA bus does: a wider access becomes one byte cycle per lane, lane `i` reading
/// register `offset + i` through `read`, and lanes past the registers read as an undriven
/// bus.
pub(crate) fn read_byte_lanes(
    offset: u64,
    data: &mut [u8],
    count: u64,
    mut read: impl FnMut(u8) -> u8,
) {
    for (lane, byte) in data.iter_mut().enumerate() {
        *byte = lane_register(offset, lane, count).map_or(OPEN_BUS, &mut read);
    }
}

/// Serves a write on a device with an 8-bit data bus and `count` byte-wide registers:
/// lane `i` writes register `offset + i` through `write`, in lane order; lanes past the
/// registers are lost.
pub(crate) fn write_byte_lanes(
    offset: u64,
    data: &[u8],
    count: u64,
    mut write: impl FnMut(u8, u8),
) {
    for (lane, &byte) in data.iter().enumerate() {
        if let Some(reg) = lane_register(offset, lane, count) {
            write(reg, byte);
        }
    }
}

/// The register that byte lane `lane` of an access at `offset` hits on a device with
/// `count` registers, if any.
fn lane_register(offset: u64, lane: usize, count: u64) -> Option<u8> {
    let reg = offset.checked_add(u64::try_from(lane).ok()?)?;
    if reg < count {
        u8::try_from(reg).ok()
    } else {
        None
    }
}

/// A device as the bus holds it: shared, because the board keeps handles to some devices
/// (to feed a UART input, say) while the bus routes the guest's accesses to them.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Something a device write asks of the VMM, beyond changing the device's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The guest asked to end the run with this status (debug-exit's value).
    Exit(u32),
}

/// A half-open address range `start..end`, as claimed by a device.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BusRange {
    /// First address of the range.
    pub start: u64,
    /// First address past the range.
    pub end: u64,
}

impl fmt::Display for BusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.start, self.end)
    }
}

/// Addresses read best in hex, also in `{:?}` output such as a [`BusError`]'s.
impl fmt::Debug for BusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a bus refused a registration or an access.
///
/// The bus does not know whether it carries ports or memory; callers add that context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// A device tried to claim no addresses at all.
    #[error("range at {base:#x} is empty")]
    EmptyRange {
        /// Where the empty range was to start.
        base: u64,
    },
    /// A device's range would run past the last address.
    #[error("range {base:#x} + {len:#x} runs past the end of the address space")]
    RangeOverflow {
        /// Where the range was to start.
        base: u64,
        /// How long it was to be.
        len: u64,
    },
    /// A device tried to claim addresses another device already has.
    #[error("range {new} overlaps {existing}")]
    Overlap {
        /// The range being inserted.
        new: BusRange,
        /// The range already on the bus that it collides with.
        existing: BusRange,
    },
    /// No device claims the accessed address.
    #[error("no device at {0:#x}")]
    Unclaimed(u64),
    /// An access of a width no CPU issues; it reached no device.
    #[error("{len}-byte access at {addr:#x}: bus accesses are 1, 2, 4 or 8 bytes")]
    AccessSize {
        /// Address of the access.
        addr: u64,
        /// Its width in bytes.
        len: usize,
    },
}

/// A device's claim on the bus: the end of its range (the map key is the start) and the
/// device itself.
struct Slot {
    end: u64,
    dev: SharedDevice,
}

/// A bus routing accesses to the devices that claim the addresses.
#[derive(Default)]
pub struct Bus {
    /// Claims keyed by base address; they never overlap, so the claim that may hold an
    /// address is always the one with the greatest base at or below it.
    slots: BTreeMap<u64, Slot>,
}

impl Bus {
    /// An empty bus: every access is unclaimed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches `dev` at `base..base + len`.
    ///
    /// Refuses an empty range, one whose end does not fit in a `u64` (so address
    /// `u64::MAX` itself cannot be claimed, which no x86 physical address reaches), and
    /// one that overlaps a device already attached; ranges that merely touch are fine.
    pub fn insert(&mut self, base: u64, len: u64, dev: SharedDevice) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::EmptyRange { base });
        }
        let end = base
            .checked_add(len)
            .ok_or(BusError::RangeOverflow { base, len })?;
        // Claims are disjoint and sorted, so only the last one starting before `end` can
        // reach into the new range: every earlier one ends before that one starts.
        if let Some((&start, slot)) = self.slots.range(..end).next_back() {
            if slot.end > base {
                return Err(BusError::Overlap {
                    new: BusRange { start: base, end },
                    existing: BusRange {
                        start,
                        end: slot.end,
                    },
                });
            }
        }
        self.slots.insert(base, Slot { end, dev });
        Ok(())
    }

    /// Detaches the device whose range starts at `base`, if any (a device the guest
    /// moves, such as the local APIC, is detached and attached again).
    pub fn remove(&mut self, base: u64) -> Option<SharedDevice> {
        self.slots.remove(&base).map(|slot| slot.dev)
    }

    /// Reads `data.len()` bytes at `addr` from the device claiming it.
    ///
    /// On error `data` is untouched; the caller decides what the CPU sees (engines use
    /// [`OPEN_BUS`]).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<(), BusError> {
        let (base, dev) = self.route(addr, data.len())?;
        lock(dev).read(addr - base, data);
        Ok(())
    }

    /// Writes `data` at `addr` to the device claiming it, returning what the device asks
    /// of the VMM, if anything.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<Option<DeviceRequest>, BusError> {
        let (base, dev) = self.route(addr, data.len())?;
        Ok(lock(dev).write(addr - base, data))
    }

    /// The device claiming `addr`, with the base of its range.
    pub fn device_at(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (&base, slot) = self.slots.range(..=addr).next_back()?;
        (addr < slot.end).then_some((base, &slot.dev))
    }

    /// Checks an access's width and finds its device, so devices only ever see the widths
    /// [`BusDevice`] promises.
    fn route(&self, addr: u64, len: usize) -> Result<(u64, &SharedDevice), BusError> {
        if !ACCESS_SIZES.contains(&len) {
            return Err(BusError::AccessSize { addr, len });
        }
        self.device_at(addr).ok_or(BusError::Unclaimed(addr))
    }
}

impl fmt::Debug for Bus {
    /// Lists the claimed ranges; the devices themselves are opaque trait objects.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.slots.iter().map(|(&start, slot)| BusRange {
                start,
                end: slot.end,
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stub that records every access it gets and answers reads with `fill`.
    #[derive(Default)]
    struct Recorder {
        fill: u8,
        accesses: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.fill);
            self.accesses.push((offset, data.to_vec()));
        }

        fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
            self.accesses.push((offset, data.to_vec()));
            None
        }
    }

    fn recorder(fill: u8) -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder {
            fill,
            ..Recorder::default()
        }))
    }

    #[test]
    fn refuses_empty_overflowing_and_overlapping_ranges() {
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, recorder(0)).unwrap();

        assert_eq!(
            bus.insert(0x100, 0, recorder(0)),
            Err(BusError::EmptyRange { base: 0x100 })
        );
        assert_eq!(
            bus.insert(u64::MAX, 1, recorder(0)),
            Err(BusError::RangeOverflow {
                base: u64::MAX,
                len: 1
            })
        );
        let existing = BusRange {
            start: 0x3f8,
            end: 0x400,
        };
        for (base, len) in [
            (0x3f8, 8),
            (0x3f0, 9),
            (0x3ff, 1),
            (0x3fa, 2),
            (0x300, 0x200),
        ] {
            let err = bus.insert(base, len, recorder(0)).unwrap_err();
            assert_eq!(
                err,
                BusError::Overlap {
                    new: BusRange {
                        start: base,
                        end: base + len
                    },
                    existing
                }
            );
        }
        assert_eq!(
            bus.insert(0x3f8, 8, recorder(0)).unwrap_err().to_string(),
            "range 0x3f8..0x400 overlaps 0x3f8..0x400"
        );
    }

    #[test]
    fn adjacent_ranges_are_allowed() {
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, recorder(0)).unwrap();
        bus.insert(0x3f0, 8, recorder(0)).unwrap();
        bus.insert(0x400, 1, recorder(0)).unwrap();
        bus.insert(u64::MAX - 1, 1, recorder(0)).unwrap();
        assert_eq!(
            format!("{bus:?}"),
            "{0x3f0..0x3f8, 0x3f8..0x400, 0x400..0x401, 0xfffffffffffffffe..0xffffffffffffffff}"
        );
    }

    #[test]
    fn dispatches_by_offset_to_the_claiming_device() {
        let mut bus = Bus::new();
        let low = recorder(0x11);
        let high = recorder(0x22);
        bus.insert(0x10, 4, low.clone()).unwrap();
        bus.insert(0x14, 4, high.clone()).unwrap();

        let mut word = [0; 2];
        bus.read(0x13, &mut word).unwrap();
        assert_eq!(word, [0x11, 0x11]);
        bus.read(0x14, &mut word).unwrap();
        assert_eq!(word, [0x22, 0x22]);
        assert_eq!(bus.write(0x17, &[0xab]).unwrap(), None);

        assert_eq!(lock(&low).accesses, [(3, vec![0x11, 0x11])]);
        assert_eq!(
            lock(&high).accesses,
            [(0, vec![0x22, 0x22]), (3, vec![0xab])]
        );
    }

    #[test]
    fn passes_requests_back_to_the_caller() {
        struct Exiter;
        impl BusDevice for Exiter {
            fn read(&mut self, _offset: u64, _data: &mut [u8]) {}
            fn write(&mut self, offset: u64, _data: &[u8]) -> Option<DeviceRequest> {
                Some(DeviceRequest::Exit(offset as u32))
            }
        }
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x10, Arc::new(Mutex::new(Exiter)))
            .unwrap();
        assert_eq!(bus.write(0x1007, &[0; 4]), Ok(Some(DeviceRequest::Exit(7))));
    }

    #[test]
    fn unclaimed_accesses_are_errors_that_leave_data_alone() {
        let mut bus = Bus::new();
        bus.insert(0x10, 4, recorder(0)).unwrap();

        let mut data = [0x5a; 4];
        assert_eq!(bus.read(0x0f, &mut data), Err(BusError::Unclaimed(0x0f)));
        assert_eq!(bus.read(0x14, &mut data), Err(BusError::Unclaimed(0x14)));
        assert_eq!(data, [0x5a; 4]);
        assert_eq!(bus.write(0x20, &[1]), Err(BusError::Unclaimed(0x20)));
        assert_eq!(BusError::Unclaimed(0x20).to_string(), "no device at 0x20");
    }

    #[test]
    fn odd_widths_never_reach_a_device() {
        let mut bus = Bus::new();
        let dev = recorder(0);
        bus.insert(0x10, 4, dev.clone()).unwrap();

        for len in [0, 3, 5, 16] {
            let mut data = vec![0; len];
            assert_eq!(
                bus.read(0x10, &mut data),
                Err(BusError::AccessSize { addr: 0x10, len })
            );
            assert_eq!(
                bus.write(0x10, &data),
                Err(BusError::AccessSize { addr: 0x10, len })
            );
        }
        assert!(lock(&dev).accesses.is_empty());
    }

    #[test]
    fn device_at_finds_the_claim_and_its_base() {
        let mut bus = Bus::new();
        let dev: SharedDevice = recorder(0);
        bus.insert(0x3f8, 8, dev.clone()).unwrap();

        for addr in [0x3f8, 0x3fb, 0x3ff] {
            let (base, found) = bus.device_at(addr).unwrap();
            assert_eq!(base, 0x3f8);
            assert!(Arc::ptr_eq(found, &dev));
        }
        assert!(bus.device_at(0x3f7).is_none());
        assert!(bus.device_at(0x400).is_none());
        assert!(Bus::new().device_at(0).is_none());
    }
}

//! QEMU's firmware configuration device (fw_cfg), its traditional port interface: a
//! 16-bit selector at port 0x510 chooses an item, and byte reads of port 0x511 return the
//! item's bytes one after the other (zeros past its end). Guests written for QEMU's pc
//! machine read the CPU count and the RAM size there (QEMU's docs/specs/fw_cfg.rst).
//!
//! Popek offers the items such a guest reads first: the signature, the interface ID (the
//! port interface only: there is no DMA interface), the RAM size, the CPU counts and an
//! empty file directory. Any other selector reads as an empty item, as in QEMU.

use serde::{Deserialize, Serialize};

use crate::bus::{BusDevice, DeviceRequest, OPEN_BUS};

/// The device's ports: selector (offset 0, 16 bits) and data (offset 1, 8 bits).
pub const REGISTER_COUNT: u64 = 2;
/// Offset of the selector register.
const SELECTOR: u64 = 0;
/// Offset of the data register.
const DATA: u64 = 1;

/// Item: the signature "QEMU".
pub const SIGNATURE: u16 = 0x0000;
/// Item: the interface ID, bit 0 = the traditional port interface.
pub const ID: u16 = 0x0001;
/// Item: the machine's UUID (16 bytes; all zeros here).
pub const UUID: u16 = 0x0002;
/// Item: RAM size in bytes (64-bit little-endian).
pub const RAM_SIZE: u16 = 0x0003;
/// Item: the number of processors (16-bit little-endian).
pub const NB_CPUS: u16 = 0x0005;
/// Item: the highest number of processors (16-bit little-endian).
pub const MAX_CPUS: u16 = 0x000F;
/// Item: the file directory (a 32-bit big-endian count, then the entries).
pub const FILE_DIR: u16 = 0x0019;
/// ID bit 0: the traditional port interface is there.
const ID_TRADITIONAL: u32 = 1;
/// Popek's machine has one processor.
const CPUS: u16 = 1;

/// What the guest chose and how far it has read: what a snapshot keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FwCfgState {
    /// The item selected.
    pub selector: u16,
    /// The next byte of it the data port returns.
    pub offset: u32,
}

/// The fw_cfg device of a machine with `ram_size` bytes of RAM.
#[derive(Debug)]
pub struct FwCfg {
    ram_size: u64,
    state: FwCfgState,
}

impl FwCfg {
    /// The device of a machine with `ram_size` bytes of RAM, item 0 selected.
    pub fn new(ram_size: u64) -> Self {
        FwCfg {
            ram_size,
            state: FwCfgState::default(),
        }
    }

    /// The machine's RAM size, which the board learns once RAM exists.
    pub fn set_ram_size(&mut self, ram_size: u64) {
        self.ram_size = ram_size;
    }

    /// Selector and read position.
    pub fn state(&self) -> FwCfgState {
        self.state
    }

    /// Puts the device in `state` (every selector and offset is valid).
    pub fn restore(&mut self, state: &FwCfgState) {
        self.state = *state;
    }

    /// The bytes of item `selector`.
    fn item(&self, selector: u16) -> Vec<u8> {
        match selector {
            SIGNATURE => b"QEMU".to_vec(),
            ID => ID_TRADITIONAL.to_le_bytes().to_vec(),
            UUID => vec![0; 16],
            RAM_SIZE => self.ram_size.to_le_bytes().to_vec(),
            NB_CPUS | MAX_CPUS => CPUS.to_le_bytes().to_vec(),
            FILE_DIR => 0u32.to_be_bytes().to_vec(),
            _ => Vec::new(),
        }
    }
}

impl BusDevice for FwCfg {
    /// Byte reads of the data port; the selector port reads as an undriven bus.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset != DATA {
            data.fill(OPEN_BUS);
            return;
        }
        let item = self.item(self.state.selector);
        for byte in data.iter_mut() {
            *byte = usize::try_from(self.state.offset)
                .ok()
                .and_then(|i| item.get(i))
                .copied()
                .unwrap_or(0);
            self.state.offset = self.state.offset.saturating_add(1);
        }
    }

    /// A 16-bit write of the selector chooses an item and rewinds it; writes to the data
    /// port are ignored (as by QEMU since 2.4).
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        if offset == SELECTOR && data.len() == 2 {
            self.state = FwCfgState {
                selector: u16::from_le_bytes([data[0], data[1]]),
                offset: 0,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(dev: &mut FwCfg, selector: u16, len: usize) -> Vec<u8> {
        dev.write(SELECTOR, &selector.to_le_bytes());
        (0..len)
            .map(|_| {
                let mut b = [0];
                dev.read(DATA, &mut b);
                b[0]
            })
            .collect()
    }

    #[test]
    fn the_items_a_qemu_guest_reads_first() {
        let mut dev = FwCfg::new(64 << 20);
        assert_eq!(read_item(&mut dev, SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&mut dev, ID, 4), [1, 0, 0, 0]);
        assert_eq!(read_item(&mut dev, NB_CPUS, 2), [1, 0]);
        assert_eq!(read_item(&mut dev, MAX_CPUS, 2), [1, 0]);
        assert_eq!(
            read_item(&mut dev, RAM_SIZE, 8),
            (64u64 << 20).to_le_bytes()
        );
        assert_eq!(read_item(&mut dev, FILE_DIR, 4), [0; 4]);
        assert_eq!(
            read_item(&mut dev, 0x1234, 2),
            [0, 0],
            "an unknown item is empty"
        );
        assert_eq!(
            read_item(&mut dev, SIGNATURE, 6),
            b"QEMU\0\0",
            "zeros past the end"
        );
    }

    #[test]
    fn reselecting_rewinds_and_the_state_keeps_the_position() {
        let mut dev = FwCfg::new(1 << 20);
        assert_eq!(read_item(&mut dev, SIGNATURE, 2), b"QE");
        let state = dev.state();
        let mut twin = FwCfg::new(1 << 20);
        twin.restore(&state);
        let mut b = [0; 2];
        twin.read(DATA, &mut b);
        assert_eq!(&b, b"MU");
        assert_eq!(read_item(&mut dev, SIGNATURE, 1), b"Q");
        let mut sel = [0; 2];
        dev.read(SELECTOR, &mut sel);
        assert_eq!(sel, [OPEN_BUS; 2]);
    }
}

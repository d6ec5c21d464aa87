//! QEMU's isa-debug-exit: how a test guest ends the run with a status.

use crate::bus::{BusDevice, DeviceRequest};

/// The widest value the device latches: QEMU's isa-debug-exit takes 1- to 4-byte writes.
const VALUE_BYTES: usize = 4;

/// What every read returns: the device has no state to report.
const READ_VALUE: u8 = 0;

/// QEMU's isa-debug-exit: a write of value v (the access's width, little-endian) asks to
/// end the run; QEMU's process exits with (v << 1) | 1, Popek reports v. Reads return 0.
///
/// The device decodes no registers, so a write anywhere in its range exits, as in QEMU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DebugExit;

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(READ_VALUE);
    }

    /// Bytes past the fourth (a qword MMIO write) are beyond what the device latches and
    /// are dropped; an empty write carries no value and asks for nothing.
    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        if data.is_empty() {
            return None;
        }
        let mut value = [0; VALUE_BYTES];
        let width = data.len().min(VALUE_BYTES);
        value[..width].copy_from_slice(&data[..width]);
        Some(DeviceRequest::Exit(u32::from_le_bytes(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_asks_to_exit_with_its_little_endian_value() {
        let mut dev = DebugExit;
        assert_eq!(dev.write(0, &[0]), Some(DeviceRequest::Exit(0)));
        assert_eq!(
            dev.write(0, &0x12u32.to_le_bytes()),
            Some(DeviceRequest::Exit(0x12))
        );
        assert_eq!(
            dev.write(1, &[0x34, 0x12]),
            Some(DeviceRequest::Exit(0x1234))
        );
        assert_eq!(
            dev.write(0, &0x1_dead_beef_u64.to_le_bytes()),
            Some(DeviceRequest::Exit(0xdead_beef))
        );
        assert_eq!(dev.write(0, &[]), None);
    }

    #[test]
    fn reads_return_zero() {
        let mut data = [0xaa; 4];
        DebugExit.read(0, &mut data);
        assert_eq!(data, [0; 4]);
    }
}

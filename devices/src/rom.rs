//! Read-only memory on the MMIO bus: the BIOS image at the top of the 4 GiB space, where
//! the processor fetches its first instruction after reset.

use crate::bus::{BusDevice, DeviceRequest};
use std::sync::Arc;

/// A read-only image. Writes are ignored, as a ROM ignores them.
#[derive(Debug, Clone)]
pub struct Rom {
    image: Arc<[u8]>,
}

impl Rom {
    /// A ROM holding `image`.
    pub fn new(image: Arc<[u8]>) -> Self {
        Rom { image }
    }

    /// The image's size in bytes.
    pub fn len(&self) -> usize {
        self.image.len()
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.image.is_empty()
    }
}

impl BusDevice for Rom {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *byte = at
                .and_then(|a| self.image.get(a))
                .copied()
                .unwrap_or(crate::bus::OPEN_BUS);
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> Option<DeviceRequest> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_image_and_ignores_writes() {
        let mut rom = Rom::new(Arc::from(&[1u8, 2, 3, 4][..]));
        let mut buf = [0u8; 2];
        rom.read(1, &mut buf);
        assert_eq!(buf, [2, 3]);
        assert_eq!(rom.write(0, &[9]), None);
        rom.read(0, &mut buf);
        assert_eq!(buf, [1, 2]);
        // Past the end reads as open bus.
        rom.read(3, &mut buf);
        assert_eq!(buf, [4, 0xFF]);
    }
}

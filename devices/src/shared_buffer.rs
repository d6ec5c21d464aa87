//! An in-memory byte sink that several owners can read while a device writes to it.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::lock;

/// A cloneable in-memory byte sink (`Arc<Mutex<Vec<u8>>>`) implementing [`Write`], for
/// tests and the GUI's live console: hand one clone to the device, keep another to read.
#[derive(Debug, Clone, Default)]
pub struct SharedBuffer {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl SharedBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far and not yet taken.
    pub fn contents(&self) -> Vec<u8> {
        lock(&self.bytes).clone()
    }

    /// Everything written so far and not yet taken, leaving the buffer empty, so a console
    /// can consume output incrementally.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *lock(&self.bytes))
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.bytes).extend_from_slice(buf);
        Ok(buf.len())
    }

    /// Bytes are visible to readers as soon as `write` returns; there is nothing to flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_buffer() {
        let reader = SharedBuffer::new();
        let mut writer = reader.clone();
        writer.write_all(b"abc").unwrap();
        assert_eq!(reader.contents(), b"abc");
        assert_eq!(reader.take(), b"abc");
        writer.write_all(b"d").unwrap();
        assert_eq!(reader.take(), b"d");
        assert!(reader.contents().is_empty());
    }
}

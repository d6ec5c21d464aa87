//! The storage behind Popek's disks: a disk image file, or memory when no file is given.
//!
//! Both the ATA PIO disk and virtio-blk sit on a [`Disk`], so the two devices compare on
//! the same storage. A file-backed disk writes straight through to the file with
//! positioned writes (no cache of its own): once a guest write has completed, its data is
//! in the host kernel's page cache and survives the Popek process being killed; a flush
//! (`CACHE FLUSH`, `VIRTIO_BLK_T_FLUSH`) asks the kernel to put it on stable storage too.
//! The image's contents are the disk's medium, not device state: snapshots leave them
//! alone, as QEMU's do.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes per sector, for both ATA and virtio-blk.
pub const SECTOR_SIZE: u64 = 512;

/// The largest disk Popek serves: 28-bit LBA's reach, the ATA commands it implements.
pub const MAX_DISK_BYTES: u64 = (1 << 28) * SECTOR_SIZE;

/// Why a disk cannot be created or opened (an error of the person running Popek).
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image file cannot be opened read-write.
    #[error("cannot open disk image {path}: {source}")]
    Open {
        /// The path given.
        path: String,
        /// What the host said.
        source: std::io::Error,
    },
    /// The image's size is not whole sectors, is zero, or is beyond 28-bit LBA.
    #[error("disk image {path} is {bytes} bytes: a disk is a non-zero multiple of 512 bytes, at most 128 GiB")]
    Size {
        /// The path given.
        path: String,
        /// Its size.
        bytes: u64,
    },
}

/// Why a guest's disk access failed: the device reports it to the guest as an I/O error.
#[derive(Debug, thiserror::Error)]
pub enum DiskIoError {
    /// The access runs past the end of the disk.
    #[error("access at byte {offset} + {len} is past the disk's end")]
    OutOfRange {
        /// Where it starts.
        offset: u64,
        /// How long it is.
        len: usize,
    },
    /// The host refused the read, write or sync.
    #[error("host I/O error: {0}")]
    Host(#[from] std::io::Error),
}

/// Where a disk's sectors live.
#[derive(Debug)]
enum Medium {
    /// In memory, gone when the machine goes.
    Memory(Vec<u8>),
    /// In an image file, written through.
    File(File),
}

/// A disk: whole sectors, in memory or in an image file.
#[derive(Debug)]
pub struct Disk {
    medium: Medium,
    bytes: u64,
    /// The serial number devices report (ATA IDENTIFY words 10-19, virtio-blk GET_ID).
    serial: String,
}

impl Disk {
    /// A zeroed disk of `sectors` sectors in memory.
    ///
    /// # Panics
    /// If `sectors` is zero or past [`MAX_DISK_BYTES`]: the machine's builder chooses it.
    pub fn memory(sectors: u64) -> Self {
        let bytes = sectors * SECTOR_SIZE;
        assert!(
            sectors > 0 && bytes <= MAX_DISK_BYTES,
            "a memory disk of {sectors} sectors"
        );
        Disk {
            medium: Medium::Memory(vec![0; bytes as usize]),
            bytes,
            serial: "POPEK-MEMDISK".into(),
        }
    }

    /// The image file at `path`, opened for reading and writing.
    pub fn open(path: &Path) -> Result<Self, DiskError> {
        let shown = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| DiskError::Open {
                path: shown.clone(),
                source,
            })?;
        let bytes = file
            .metadata()
            .map_err(|source| DiskError::Open {
                path: shown.clone(),
                source,
            })?
            .len();
        if bytes == 0 || !bytes.is_multiple_of(SECTOR_SIZE) || bytes > MAX_DISK_BYTES {
            return Err(DiskError::Size { path: shown, bytes });
        }
        Ok(Disk {
            medium: Medium::File(file),
            bytes,
            serial: "POPEK-IMAGE".into(),
        })
    }

    /// The disk's size in sectors.
    pub fn sectors(&self) -> u64 {
        self.bytes / SECTOR_SIZE
    }

    /// The serial number devices report: ASCII, at most 20 characters.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Checks that `[offset, offset + len)` lies on the disk.
    fn check(&self, offset: u64, len: usize) -> Result<usize, DiskIoError> {
        offset
            .checked_add(len as u64)
            .filter(|&end| end <= self.bytes)
            .map(|_| offset as usize)
            .ok_or(DiskIoError::OutOfRange { offset, len })
    }

    /// Reads `buf.len()` bytes at byte `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskIoError> {
        let at = self.check(offset, buf.len())?;
        match &self.medium {
            Medium::Memory(bytes) => buf.copy_from_slice(&bytes[at..at + buf.len()]),
            Medium::File(file) => file.read_exact_at(buf, offset)?,
        }
        Ok(())
    }

    /// Writes `data` at byte `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskIoError> {
        let at = self.check(offset, data.len())?;
        match &mut self.medium {
            Medium::Memory(bytes) => bytes[at..at + data.len()].copy_from_slice(data),
            Medium::File(file) => file.write_all_at(data, offset)?,
        }
        Ok(())
    }

    /// Puts every completed write on stable storage.
    pub fn flush(&mut self) -> Result<(), DiskIoError> {
        match &mut self.medium {
            Medium::Memory(_) => Ok(()),
            Medium::File(file) => Ok(file.sync_data()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_disks_read_back_and_refuse_the_end() {
        let mut disk = Disk::memory(2);
        assert_eq!(disk.sectors(), 2);
        disk.write(510, b"abcd").unwrap();
        let mut buf = [0; 4];
        disk.read(510, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
        assert!(matches!(
            disk.write(1022, b"abc"),
            Err(DiskIoError::OutOfRange {
                offset: 1022,
                len: 3
            })
        ));
        assert!(disk.read(u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn image_files_are_written_through() {
        let path = std::env::temp_dir().join(format!("popek-disk-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 1024]).unwrap();
        let mut disk = Disk::open(&path).unwrap();
        disk.write(512, b"sector one").unwrap();
        disk.flush().unwrap();
        let on_file = std::fs::read(&path).unwrap();
        assert_eq!(&on_file[512..522], b"sector one");
        std::fs::write(&path, vec![0u8; 1000]).unwrap();
        let err = Disk::open(&path).unwrap_err().to_string();
        assert!(err.contains("1000 bytes"), "{err}");
        std::fs::remove_file(&path).unwrap();
        assert!(Disk::open(&path).is_err());
    }
}

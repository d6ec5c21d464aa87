//! A legacy ATA disk driven by programmed I/O: the primary IDE channel's master drive,
//! the emulated device on the other side of the virtio comparison.
//!
//! Every 16 bits the guest moves go through the data port, one I/O exit each: that is the
//! cost virtio-blk's one notification per request removes. The model follows ATA/ATAPI-6:
//! the command block at 0x1F0-0x1F7, the control block (alternate status, device
//! control) at 0x3F6, IRQ 14, 28-bit LBA and CHS addressing, and the commands a PIO
//! driver needs: IDENTIFY DEVICE, READ/WRITE SECTORS, READ/WRITE MULTIPLE, SET MULTIPLE
//! MODE and FLUSH CACHE. Commands run to completion when written (the drive is never
//! seen BSY). Anything else, or a command the drive cannot carry out, ends with ERR in
//! the status register and ABRT (or IDNF, UNC) in the error register, and is counted.
//! No device 1 is present: with it selected, the registers read as 0.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::bus::{read_byte_lanes, write_byte_lanes, BusDevice, DeviceRequest};
use crate::disk::{Disk, SECTOR_SIZE};
use crate::irq::IrqLine;
use crate::lock;

/// The command block's ports (data, error/features, sector count, LBA low/mid/high,
/// device, status/command).
pub const REGISTER_COUNT: u64 = 8;

// Command block registers, by offset from the base.
/// Data: 16 bits at a time (8 or 32 also work, byte by byte).
const DATA: u8 = 0;
/// Error (read) / Features (write).
const ERROR: u8 = 1;
/// Sector count: sectors to transfer, 0 meaning 256.
const SECTOR_COUNT: u8 = 2;
/// LBA bits 0-7 (CHS: sector number).
const LBA_LOW: u8 = 3;
/// LBA bits 8-15 (CHS: cylinder low).
const LBA_MID: u8 = 4;
/// LBA bits 16-23 (CHS: cylinder high).
const LBA_HIGH: u8 = 5;
/// Device: bit 6 LBA mode, bit 4 device 1, bits 0-3 LBA bits 24-27 (CHS: head).
const DEVICE: u8 = 6;
/// Status (read; acknowledges the interrupt) / Command (write).
const STATUS: u8 = 7;

// Status bits.
/// The drive is busy (never seen here: commands complete when written).
const BSY: u8 = 0x80;
/// The drive is ready for commands.
const DRDY: u8 = 0x40;
/// Seek complete (obsolete, but set by drives and tested by old drivers).
const DSC: u8 = 0x10;
/// Data request: the data port is ready for the next word.
const DRQ: u8 = 0x08;
/// The last command failed; the error register says why.
const ERR: u8 = 0x01;

// Error bits.
/// The command was aborted: unknown, or invalid parameters.
const ABRT: u8 = 0x04;
/// The sector was not found: past the end of the disk.
const IDNF: u8 = 0x10;
/// Uncorrectable data error: the image could not be read or written.
const UNC: u8 = 0x40;

// Device register bits.
/// LBA addressing (else CHS).
const DEV_LBA: u8 = 0x40;
/// Device 1 selected.
const DEV_1: u8 = 0x10;

// Device control bits (port 0x3F6, write).
/// nIEN: the drive raises no interrupts.
const NIEN: u8 = 0x02;
/// SRST: software reset.
const SRST: u8 = 0x04;

// Commands.
/// READ SECTORS (and its "without retry" form 0x21).
const CMD_READ_SECTORS: u8 = 0x20;
const CMD_READ_SECTORS_NORETRY: u8 = 0x21;
/// WRITE SECTORS (and 0x31).
const CMD_WRITE_SECTORS: u8 = 0x30;
const CMD_WRITE_SECTORS_NORETRY: u8 = 0x31;
/// READ MULTIPLE: an interrupt per block of `multiple` sectors.
const CMD_READ_MULTIPLE: u8 = 0xC4;
/// WRITE MULTIPLE.
const CMD_WRITE_MULTIPLE: u8 = 0xC5;
/// SET MULTIPLE MODE: sectors per block, from the sector count register.
const CMD_SET_MULTIPLE: u8 = 0xC6;
/// FLUSH CACHE.
const CMD_FLUSH_CACHE: u8 = 0xE7;
/// IDENTIFY DEVICE: 256 words describing the drive.
const CMD_IDENTIFY: u8 = 0xEC;

/// The largest block READ/WRITE MULTIPLE allow (IDENTIFY word 47).
pub const MAX_MULTIPLE: u8 = 16;
/// CHS geometry reported and used for CHS addressing.
const HEADS: u64 = 16;
const SECTORS_PER_TRACK: u64 = 63;
/// The most sectors 28-bit LBA addresses.
const LBA28_SECTORS: u64 = 1 << 28;

/// A data transfer in progress: a block in the buffer moving through the data port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The guest writes the data (else reads it).
    pub write: bool,
    /// The disk sector the buffer's block starts at.
    pub lba: u64,
    /// Sectors left, the buffer's block included.
    pub remaining: u32,
    /// Sectors per block (1 for READ/WRITE SECTORS, the multiple count for MULTIPLE).
    pub block: u32,
}

/// What the drive did, for the counters students compare with virtio's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtaCounters {
    /// Guest accesses to the data port.
    pub data_accesses: u64,
    /// Guest accesses to every other register.
    pub register_accesses: u64,
    /// Commands written.
    pub commands: u64,
    /// Commands that ended with ERR.
    pub errors: u64,
    /// Interrupts raised.
    pub interrupts: u64,
    /// Bytes moved between the data port and the disk.
    pub bytes: u64,
}

/// The drive's state, for snapshots (the image is the medium, not state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtaState {
    /// Features (written) register.
    pub features: u8,
    /// Sector count.
    pub sector_count: u8,
    /// LBA low, mid, high.
    pub lba: [u8; 3],
    /// Device register.
    pub device: u8,
    /// Status.
    pub status: u8,
    /// Error.
    pub error: u8,
    /// Device control.
    pub control: u8,
    /// The drive's interrupt output (INTRQ), cleared by reading Status.
    pub intrq: bool,
    /// Sectors per block for READ/WRITE MULTIPLE (0: not set).
    pub multiple: u8,
    /// The transfer in progress.
    pub transfer: Option<Transfer>,
    /// The block in the buffer.
    pub buffer: Vec<u8>,
    /// How far the data port is into it.
    pub position: usize,
}

/// Why an [`AtaState`] cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtaStateError {
    /// The buffer and transfer disagree.
    #[error("ATA state: buffer of {len} bytes at position {position} does not fit the transfer")]
    Buffer {
        /// The buffer's length.
        len: usize,
        /// The position.
        position: usize,
    },
    /// A multiple count the drive does not allow.
    #[error("ATA state: multiple count {0}")]
    Multiple(u8),
}

/// The ATA disk.
#[derive(Debug)]
pub struct AtaDisk {
    disk: Disk,
    irq: IrqLine,
    state: AtaState,
    counters: AtaCounters,
}

impl AtaDisk {
    /// A drive serving `disk`, interrupting on `irq`, as after power-on.
    pub fn new(disk: Disk, irq: IrqLine) -> Self {
        AtaDisk {
            disk,
            irq,
            state: power_on(),
            counters: AtaCounters::default(),
        }
    }

    /// What the drive did so far.
    pub fn counters(&self) -> AtaCounters {
        self.counters
    }

    /// The drive's state.
    pub fn state(&self) -> AtaState {
        self.state.clone()
    }

    /// Checks `state` against this drive's disk without taking it.
    pub fn check_state(&self, state: &AtaState) -> Result<(), AtaStateError> {
        if state.multiple > MAX_MULTIPLE
            || !(state.multiple == 0 || state.multiple.is_power_of_two())
        {
            return Err(AtaStateError::Multiple(state.multiple));
        }
        let fits = match state.transfer {
            None => state.buffer.is_empty() && state.position == 0,
            Some(t) => {
                let block = u64::from(t.block.min(t.remaining)) * SECTOR_SIZE;
                t.block > 0
                    && t.block <= 256
                    && (1..=256).contains(&t.remaining)
                    && t.lba
                        .checked_add(u64::from(t.remaining))
                        .is_some_and(|end| end <= self.disk.sectors())
                    && state.buffer.len() as u64 == block
                    && state.position < state.buffer.len()
            }
        };
        if !fits {
            return Err(AtaStateError::Buffer {
                len: state.buffer.len(),
                position: state.position,
            });
        }
        Ok(())
    }

    /// Takes `state`, after checking it.
    pub fn restore(&mut self, state: &AtaState) -> Result<(), AtaStateError> {
        self.check_state(state)?;
        self.state = state.clone();
        Ok(())
    }

    fn device_1(&self) -> bool {
        self.state.device & DEV_1 != 0
    }

    /// INTRQ: asserted, and an edge on the IRQ line unless the guest set nIEN.
    fn interrupt(&mut self) {
        self.state.intrq = true;
        if self.state.control & NIEN == 0 {
            self.counters.interrupts += 1;
            // Raising a line is an atomic bit flip that cannot fail.
            let _ = vm_superio::Trigger::trigger(&self.irq);
        }
    }

    /// Ends the command with an error.
    fn fail(&mut self, error: u8) {
        self.counters.errors += 1;
        self.state.transfer = None;
        self.state.buffer.clear();
        self.state.position = 0;
        self.state.error = error;
        self.state.status = DRDY | DSC | ERR;
        self.interrupt();
    }

    /// Ends the command successfully.
    fn succeed(&mut self, interrupt: bool) {
        self.state.transfer = None;
        self.state.buffer.clear();
        self.state.position = 0;
        self.state.error = 0;
        self.state.status = DRDY | DSC;
        if interrupt {
            self.interrupt();
        }
    }

    /// The first sector and the count the command block names, if they lie on the disk.
    fn target(&self) -> Option<(u64, u32)> {
        let s = &self.state;
        let count = if s.sector_count == 0 {
            256
        } else {
            u32::from(s.sector_count)
        };
        let lba = if s.device & DEV_LBA != 0 {
            u64::from(s.device & 0x0F) << 24
                | u64::from(s.lba[2]) << 16
                | u64::from(s.lba[1]) << 8
                | u64::from(s.lba[0])
        } else {
            let cylinder = u64::from(s.lba[2]) << 8 | u64::from(s.lba[1]);
            let head = u64::from(s.device & 0x0F);
            let sector = u64::from(s.lba[0]).checked_sub(1)?;
            if sector >= SECTORS_PER_TRACK {
                return None;
            }
            (cylinder * HEADS + head) * SECTORS_PER_TRACK + sector
        };
        (lba + u64::from(count) <= self.disk.sectors()).then_some((lba, count))
    }

    fn command(&mut self, command: u8) {
        self.counters.commands += 1;
        if self.device_1() {
            // No device 1: nobody executes the command.
            return;
        }
        self.state.intrq = false;
        match command {
            CMD_READ_SECTORS | CMD_READ_SECTORS_NORETRY => self.start(false, 1),
            CMD_WRITE_SECTORS | CMD_WRITE_SECTORS_NORETRY => self.start(true, 1),
            CMD_READ_MULTIPLE | CMD_WRITE_MULTIPLE if self.state.multiple == 0 => self.fail(ABRT),
            CMD_READ_MULTIPLE => self.start(false, u32::from(self.state.multiple)),
            CMD_WRITE_MULTIPLE => self.start(true, u32::from(self.state.multiple)),
            CMD_SET_MULTIPLE => {
                let n = self.state.sector_count;
                if n == 0 || n > MAX_MULTIPLE || !n.is_power_of_two() {
                    self.fail(ABRT);
                } else {
                    self.state.multiple = n;
                    self.succeed(true);
                }
            }
            CMD_FLUSH_CACHE => match self.disk.flush() {
                Ok(()) => self.succeed(true),
                Err(_) => self.fail(ABRT),
            },
            CMD_IDENTIFY => {
                self.state.buffer = self.identify();
                self.state.position = 0;
                self.state.transfer = Some(Transfer {
                    write: false,
                    lba: 0,
                    remaining: 1,
                    block: 1,
                });
                self.state.status = DRDY | DSC | DRQ;
                self.interrupt();
            }
            _ => self.fail(ABRT),
        }
    }

    /// Starts a data transfer of `block` sectors per DRQ block.
    fn start(&mut self, write: bool, block: u32) {
        let Some((lba, remaining)) = self.target() else {
            return self.fail(IDNF | ABRT);
        };
        self.state.transfer = Some(Transfer {
            write,
            lba,
            remaining,
            block,
        });
        // A write's first block is requested at once, without an interrupt; a read's
        // is announced by one when the data is there.
        self.next_block(!write);
    }

    /// Sets up the buffer for the transfer's next block and raises DRQ.
    fn next_block(&mut self, interrupt: bool) {
        let Some(t) = self.state.transfer else { return };
        let len = (t.block.min(t.remaining) as u64 * SECTOR_SIZE) as usize;
        let mut buffer = vec![0; len];
        if !t.write && self.disk.read(t.lba * SECTOR_SIZE, &mut buffer).is_err() {
            return self.fail(UNC | ABRT);
        }
        self.state.buffer = buffer;
        self.state.position = 0;
        self.state.status = DRDY | DSC | DRQ;
        if interrupt {
            self.interrupt();
        }
    }

    /// The buffer's block has been moved through the data port.
    fn block_done(&mut self) {
        let Some(mut t) = self.state.transfer else {
            return;
        };
        if t.write
            && self
                .disk
                .write(t.lba * SECTOR_SIZE, &self.state.buffer)
                .is_err()
        {
            return self.fail(UNC | ABRT);
        }
        self.counters.bytes += self.state.buffer.len() as u64;
        let n = t.block.min(t.remaining);
        t.remaining -= n;
        t.lba += u64::from(n);
        if t.remaining == 0 {
            // A read ends quietly after its last word; a write's end is announced.
            self.succeed(t.write);
        } else {
            self.state.transfer = Some(t);
            self.next_block(true);
        }
    }

    /// One byte through the data port: the byte read, or the byte written.
    fn data_byte(&mut self, write: Option<u8>) -> u8 {
        let Some(t) = self.state.transfer else {
            return 0xFF;
        };
        if t.write != write.is_some() || self.state.status & DRQ == 0 {
            return 0xFF;
        }
        let at = self.state.position;
        let byte = match write {
            Some(b) => {
                self.state.buffer[at] = b;
                b
            }
            None => self.state.buffer[at],
        };
        self.state.position += 1;
        if self.state.position == self.state.buffer.len() {
            self.block_done();
        }
        byte
    }

    /// The 256 IDENTIFY DEVICE words.
    fn identify(&self) -> Vec<u8> {
        let sectors = self.disk.sectors().min(LBA28_SECTORS - 1);
        let cylinders = (sectors / (HEADS * SECTORS_PER_TRACK)).clamp(1, 16383);
        let chs = cylinders * HEADS * SECTORS_PER_TRACK;
        let mut w = [0u16; 256];
        w[0] = 0x0040; // fixed disk
        w[1] = cylinders as u16;
        w[3] = HEADS as u16;
        w[6] = SECTORS_PER_TRACK as u16;
        ata_string(&mut w[10..20], self.disk.serial());
        ata_string(&mut w[23..27], "0.1");
        ata_string(&mut w[27..47], "POPEK ATA PIO DISK");
        w[47] = 0x8000 | u16::from(MAX_MULTIPLE);
        w[49] = 1 << 9; // LBA supported
        w[53] = 1; // words 54-58 are valid
        w[54] = cylinders as u16;
        w[55] = HEADS as u16;
        w[56] = SECTORS_PER_TRACK as u16;
        w[57] = chs as u16;
        w[58] = (chs >> 16) as u16;
        if self.state.multiple != 0 {
            w[59] = 0x0100 | u16::from(self.state.multiple);
        }
        w[60] = sectors as u16;
        w[61] = (sectors >> 16) as u16;
        w[80] = 0x007E; // ATA-1 to ATA-6
        w[83] = 1 << 14 | 1 << 12; // FLUSH CACHE supported
        w[84] = 1 << 14;
        w[86] = 1 << 12; // FLUSH CACHE enabled
        w[87] = 1 << 14;
        w.iter().flat_map(|word| word.to_le_bytes()).collect()
    }

    fn read_register(&mut self, reg: u8) -> u8 {
        if self.device_1() {
            return 0;
        }
        let s = &mut self.state;
        match reg {
            ERROR => s.error,
            SECTOR_COUNT => s.sector_count,
            LBA_LOW => s.lba[0],
            LBA_MID => s.lba[1],
            LBA_HIGH => s.lba[2],
            DEVICE => s.device | 0xA0,
            STATUS => {
                // Reading Status acknowledges the interrupt.
                s.intrq = false;
                s.status
            }
            // The data port is served apart (a byte lane of a wide access lands here).
            _ => 0xFF,
        }
    }

    fn write_register(&mut self, reg: u8, value: u8) {
        let s = &mut self.state;
        match reg {
            ERROR => s.features = value,
            SECTOR_COUNT => s.sector_count = value,
            LBA_LOW => s.lba[0] = value,
            LBA_MID => s.lba[1] = value,
            LBA_HIGH => s.lba[2] = value,
            DEVICE => s.device = value,
            STATUS => self.command(value),
            _ => {}
        }
    }

    /// Alternate Status: Status without acknowledging the interrupt.
    fn alternate_status(&self) -> u8 {
        if self.device_1() {
            0
        } else {
            self.state.status & !BSY
        }
    }

    /// Device control: nIEN, and SRST, which ends any command and puts the drive
    /// back as after power-on (keeping the multiple count, as drives do).
    fn device_control(&mut self, value: u8) {
        if value & SRST != 0 && self.state.control & SRST == 0 {
            let multiple = self.state.multiple;
            self.state = power_on();
            self.state.multiple = multiple;
        }
        self.state.control = value;
    }
}

/// The registers after power-on or a reset: the ATA signature of a disk (sector count
/// 1, LBA 1, 0, 0), diagnostic code 1 ("no error") in Error, the drive ready.
fn power_on() -> AtaState {
    AtaState {
        features: 0,
        sector_count: 1,
        lba: [1, 0, 0],
        device: 0,
        status: DRDY | DSC,
        error: 1,
        control: 0,
        intrq: false,
        multiple: 0,
        transfer: None,
        buffer: Vec::new(),
        position: 0,
    }
}

/// Writes `text` into IDENTIFY words as ATA strings are kept: two characters per word,
/// the first in the high byte, padded with spaces.
fn ata_string(words: &mut [u16], text: &str) {
    let mut bytes = text.bytes().chain(std::iter::repeat(b' '));
    for word in words {
        let hi = bytes.next().unwrap_or(b' ');
        let lo = bytes.next().unwrap_or(b' ');
        *word = u16::from_be_bytes([hi, lo]);
    }
}

impl BusDevice for AtaDisk {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == u64::from(DATA) {
            self.counters.data_accesses += 1;
            for byte in data.iter_mut() {
                *byte = self.data_byte(None);
            }
            return;
        }
        self.counters.register_accesses += 1;
        read_byte_lanes(offset, data, REGISTER_COUNT, |reg| self.read_register(reg));
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        if offset == u64::from(DATA) {
            self.counters.data_accesses += 1;
            for &byte in data {
                self.data_byte(Some(byte));
            }
            return None;
        }
        self.counters.register_accesses += 1;
        write_byte_lanes(offset, data, REGISTER_COUNT, |reg, v| {
            self.write_register(reg, v)
        });
        None
    }
}

/// The control block port (0x3F6): Alternate Status and Device Control of the same drive.
#[derive(Debug)]
pub struct AtaControl(pub Arc<Mutex<AtaDisk>>);

impl BusDevice for AtaControl {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let mut ata = lock(&self.0);
        ata.counters.register_accesses += 1;
        let status = ata.alternate_status();
        read_byte_lanes(0, data, 1, |_| status);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<DeviceRequest> {
        let mut ata = lock(&self.0);
        ata.counters.register_accesses += 1;
        if let Some(&value) = data.first() {
            ata.device_control(value);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::IrqLines;
    use crate::state_test::{state_proptests, Restorable};
    use proptest::prelude::*;

    /// A drive on a memory disk, with its IRQ lines.
    struct Rig {
        ata: AtaDisk,
        irqs: IrqLines,
    }

    impl Rig {
        fn new(sectors: u64) -> Self {
            let irqs = IrqLines::new();
            let ata = AtaDisk::new(Disk::memory(sectors), irqs.line(14));
            Rig { ata, irqs }
        }

        fn out(&mut self, reg: u8, value: u8) {
            self.ata.write(u64::from(reg), &[value]);
        }

        fn inb(&mut self, reg: u8) -> u8 {
            let mut b = [0];
            self.ata.read(u64::from(reg), &mut b);
            b[0]
        }

        fn command(&mut self, command: u8, lba: u32, count: u8) {
            self.out(SECTOR_COUNT, count);
            self.out(LBA_LOW, lba as u8);
            self.out(LBA_MID, (lba >> 8) as u8);
            self.out(LBA_HIGH, (lba >> 16) as u8);
            self.out(DEVICE, DEV_LBA | ((lba >> 24) as u8 & 0xF));
            self.out(STATUS, command);
        }

        fn read_words(&mut self, n: usize) -> Vec<u8> {
            let mut out = Vec::new();
            for _ in 0..n {
                let mut w = [0; 2];
                self.ata.read(0, &mut w);
                out.extend(w);
            }
            out
        }

        fn write_words(&mut self, data: &[u8]) {
            for w in data.chunks(2) {
                self.ata.write(0, w);
            }
        }
    }

    #[test]
    fn identify_describes_the_disk() {
        let mut r = Rig::new(1000);
        r.command(CMD_IDENTIFY, 0, 0);
        assert_eq!(r.inb(STATUS), DRDY | DSC | DRQ);
        assert_eq!(r.irqs.take_pending(), 1 << 14);
        let id = r.read_words(256);
        let word = |i: usize| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]);
        assert_eq!(word(0), 0x0040);
        assert_eq!(u32::from(word(60)) | u32::from(word(61)) << 16, 1000);
        assert_eq!(&id[54..63], b"OPEP KTA ", "model, byte-swapped words");
        assert_eq!(word(47), 0x8010);
        assert_ne!(word(83) & 1 << 12, 0, "FLUSH CACHE");
        assert_eq!(r.inb(STATUS), DRDY | DSC, "DRQ drops after the last word");
    }

    #[test]
    fn sectors_written_read_back_one_interrupt_per_block() {
        let mut r = Rig::new(64);
        let data: Vec<u8> = (0..4 * 512).map(|i| (i * 13 % 251) as u8).collect();
        r.command(CMD_WRITE_SECTORS, 10, 4);
        assert_eq!(
            r.irqs.take_pending(),
            0,
            "no interrupt before the first block"
        );
        r.write_words(&data);
        assert_eq!(r.ata.counters().interrupts, 4);
        assert_eq!(r.inb(STATUS), DRDY | DSC);

        r.command(CMD_SET_MULTIPLE, 0, 2);
        assert_eq!(r.inb(STATUS), DRDY | DSC);
        r.command(CMD_READ_MULTIPLE, 10, 4);
        let back = r.read_words(4 * 256);
        assert_eq!(back, data);
        assert_eq!(
            r.ata.counters().interrupts,
            4 + 1 + 2,
            "SET MULTIPLE, 2 blocks"
        );

        r.command(CMD_WRITE_MULTIPLE, 20, 3);
        r.write_words(&data[..3 * 512]);
        r.command(CMD_READ_SECTORS, 22, 1);
        assert_eq!(r.read_words(256), &data[1024..1536]);
        r.command(CMD_FLUSH_CACHE, 0, 0);
        assert_eq!(r.inb(STATUS), DRDY | DSC);
        assert_eq!(r.ata.counters().errors, 0);
        assert_eq!(r.ata.counters().bytes, 4 * 512 * 2 + 3 * 512 + 512);
    }

    #[test]
    fn malformed_commands_set_err() {
        let mut r = Rig::new(64);
        let cases: [(&str, u8, u32, u8, u8); 5] = [
            ("past the end", CMD_READ_SECTORS, 63, 2, IDNF | ABRT),
            ("unknown command", 0x55, 0, 1, ABRT),
            ("multiple not set", CMD_READ_MULTIPLE, 0, 1, ABRT),
            ("multiple not a power of two", CMD_SET_MULTIPLE, 0, 3, ABRT),
            ("multiple too big", CMD_SET_MULTIPLE, 0, 32, ABRT),
        ];
        for (i, (name, command, lba, count, error)) in cases.into_iter().enumerate() {
            r.command(command, lba, count);
            assert_eq!(r.inb(STATUS), DRDY | DSC | ERR, "{name}");
            assert_eq!(r.inb(ERROR), error, "{name}");
            assert_eq!(r.ata.counters().errors, i as u64 + 1, "{name}");
        }
        // CHS sector 0 does not exist.
        r.out(LBA_LOW, 0);
        r.out(DEVICE, 0);
        r.out(STATUS, CMD_READ_SECTORS);
        assert_eq!(r.inb(STATUS) & ERR, ERR);
    }

    #[test]
    fn device_1_is_absent_and_srst_resets() {
        let mut r = Rig::new(8);
        r.out(DEVICE, DEV_1);
        assert_eq!(r.inb(STATUS), 0);
        r.out(STATUS, CMD_IDENTIFY);
        assert_eq!(r.ata.counters().interrupts, 0);
        r.out(DEVICE, 0);
        r.command(CMD_READ_SECTORS, 0, 2);
        let mut control = AtaControl(Arc::new(Mutex::new(r.ata)));
        control.write(0, &[SRST]);
        control.write(0, &[0]);
        let mut status = [0];
        control.read(0, &mut status);
        assert_eq!(status, [DRDY | DSC]);
        assert_eq!(lock(&control.0).state().transfer, None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        In(u8, usize),
        Out(u8, Vec<u8>),
        Command(u8, u32, u8),
        Control(u8),
    }

    impl Restorable for Rig {
        type State = AtaState;
        type Op = Op;
        type Seen = (Vec<u8>, u16);

        fn save(&self) -> AtaState {
            self.ata.state()
        }

        fn twin(&self, state: &AtaState) -> Result<Self, String> {
            // The medium is not state: the twin gets a copy of it.
            let sectors = self.ata.disk.sectors();
            let mut copy = vec![0; (sectors * SECTOR_SIZE) as usize];
            self.ata
                .disk
                .read(0, &mut copy)
                .map_err(|e| e.to_string())?;
            let mut twin = Rig::new(sectors);
            twin.ata.disk.write(0, &copy).map_err(|e| e.to_string())?;
            twin.ata.restore(state).map_err(|e| e.to_string())?;
            Ok(twin)
        }

        fn apply(&mut self, op: &Op) -> Self::Seen {
            let bytes = match op {
                Op::In(reg, len) => {
                    let mut data = vec![0; *len];
                    self.ata.read(u64::from(*reg), &mut data);
                    data
                }
                Op::Out(reg, data) => {
                    self.ata.write(u64::from(*reg), data);
                    Vec::new()
                }
                Op::Command(command, lba, count) => {
                    self.command(*command, *lba, *count);
                    Vec::new()
                }
                Op::Control(value) => {
                    self.ata.device_control(*value);
                    Vec::new()
                }
            };
            (bytes, self.irqs.take_pending())
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        let command = proptest::sample::select(vec![
            CMD_READ_SECTORS,
            CMD_WRITE_SECTORS,
            CMD_READ_MULTIPLE,
            CMD_WRITE_MULTIPLE,
            CMD_SET_MULTIPLE,
            CMD_FLUSH_CACHE,
            CMD_IDENTIFY,
            0x00,
            0xFF,
        ]);
        prop_oneof![
            4 => (0..8u8, proptest::sample::select(vec![1usize, 2, 4])).prop_map(|(r, l)| Op::In(r, l)),
            4 => (0..8u8, proptest::collection::vec(any::<u8>(), 1..=4)).prop_map(|(r, d)| Op::Out(r, d)),
            3 => (command, 0..80u32, any::<u8>()).prop_map(|(c, l, n)| Op::Command(c, l, n)),
            1 => any::<u8>().prop_map(Op::Control),
        ]
    }

    proptest! {
        /// Garbage commands and register writes: no panic, every failed command counted.
        #[test]
        fn garbage_never_panics_and_errors_are_counted(ops in proptest::collection::vec(op(), 0..200)) {
            let mut r = Rig::new(64);
            let mut failed = 0;
            for op in &ops {
                let before = r.ata.counters().errors;
                r.apply(op);
                if r.ata.state().status & ERR != 0 && r.ata.counters().errors > before {
                    failed += 1;
                }
            }
            prop_assert_eq!(r.ata.counters().errors, failed);
        }
    }

    state_proptests!(Rig::new(64), op());
}

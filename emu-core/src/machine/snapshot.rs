//! Saving a paused machine's whole state and restoring it into a fresh one: the CPU, guest
//! RAM, every device and the virtual clock, so that the restored machine carries on
//! exactly as the original would have.
//!
//! A snapshot holds state, not configuration: it restores into a machine built the same
//! way (the same RAM size, the same BIOS image if there is one). Its serde form is the
//! file format the coming snapshot command writes; [`SNAPSHOT_VERSION`] names it, and a
//! snapshot of another version is refused. Everything in it is checked on restore, as it
//! may come from a hand-edited or damaged file.

use super::{Machine, MachineError};
use crate::clock::ClockState;
use crate::cpu::CpuState;
use crate::memory::{MemoryError, PAGE_SIZE};
use crate::pv::Pv;
use devices::PcState;
use serde::{Deserialize, Serialize};

/// The version of the snapshot format this Popek writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// One page of guest RAM that is not all zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamPage {
    /// Guest-physical page number.
    pub page: u64,
    /// Its [`PAGE_SIZE`] bytes.
    pub bytes: Vec<u8>,
}

/// A paused machine's whole state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`] when it was taken.
    pub version: u32,
    /// The processor, at an instruction boundary (interrupt shadow, pending event and
    /// halted state included).
    pub cpu: CpuState,
    /// Guest instructions retired since the machine was built.
    pub instructions: u64,
    /// Virtual time.
    pub clock: ClockState,
    /// Every device on the board.
    pub devices: PcState,
    /// RAM size in bytes.
    pub ram_size: u64,
    /// The pages of RAM that are not all zeros, in ascending order.
    pub ram: Vec<RamPage>,
    /// What a para-virtualized guest registered with the VMM (absent in snapshots of
    /// Popek versions without para-virtualization: nothing registered).
    #[serde(default)]
    pub pv: Pv,
}

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Written by another version of Popek's format.
    #[error(
        "snapshot format version {found} is not the version this Popek reads ({SNAPSHOT_VERSION})"
    )]
    Version {
        /// The version in the snapshot.
        found: u32,
    },
    /// The machine has another amount of RAM.
    #[error("the snapshot has {snapshot} bytes of RAM, the machine {machine}")]
    RamSize {
        /// In the snapshot.
        snapshot: u64,
        /// In the machine.
        machine: u64,
    },
    /// A RAM page outside RAM, of the wrong size, or out of order.
    #[error("RAM page {page:#x} of the snapshot is malformed ({why})")]
    BadPage {
        /// The page number.
        page: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// A device state the devices refuse.
    #[error(transparent)]
    Devices(#[from] devices::PcStateError),
    /// A para-virtualization page outside RAM or not page aligned.
    #[error("the snapshot's {what} page {addr:#x} is not a page of RAM")]
    PvPage {
        /// Which page ("hypercall", "shared-info").
        what: &'static str,
        /// Its guest-physical address.
        addr: u64,
    },
    /// The engine refuses the CPU state, or memory could not be written.
    #[error(transparent)]
    Machine(#[from] MachineError),
}

impl From<MemoryError> for SnapshotError {
    fn from(e: MemoryError) -> Self {
        SnapshotError::Machine(e.into())
    }
}

impl Machine {
    /// The whole state of the paused machine.
    pub fn save(&self) -> Result<Snapshot, MachineError> {
        let ram = self
            .ram
            .as_slice()
            .chunks_exact(PAGE_SIZE)
            .enumerate()
            .filter(|(_, bytes)| bytes.iter().any(|&b| b != 0))
            .map(|(page, bytes)| RamPage {
                page: page as u64,
                bytes: bytes.to_vec(),
            })
            .collect();
        Ok(Snapshot {
            version: SNAPSHOT_VERSION,
            cpu: self.cpu_state()?,
            instructions: self.instructions_retired(),
            clock: self.vmm.clock.state(self.engine.instructions_retired()),
            devices: self.vmm.devices.state(),
            ram_size: self.ram.size() as u64,
            ram,
            pv: self.vmm.pv.clone(),
        })
    }

    /// Puts the machine in the state `snapshot` holds. Everything is checked before the
    /// machine changes, except what only the engine can judge (a CPU state KVM refuses
    /// leaves the machine's RAM and devices restored and the engine unable to run).
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: snapshot.version,
            });
        }
        let size = self.ram.size() as u64;
        if snapshot.ram_size != size {
            return Err(SnapshotError::RamSize {
                snapshot: snapshot.ram_size,
                machine: size,
            });
        }
        let mut last = None;
        for p in &snapshot.ram {
            let bad = |why| SnapshotError::BadPage { page: p.page, why };
            if p.bytes.len() != PAGE_SIZE {
                return Err(bad("not one page long"));
            }
            if p.page >= size / PAGE_SIZE as u64 {
                return Err(bad("outside RAM"));
            }
            if last.is_some_and(|l| l >= p.page) {
                return Err(bad("not in ascending order"));
            }
            last = Some(p.page);
        }
        let pv = &snapshot.pv;
        for (what, page) in [
            ("hypercall", pv.hypercall_page),
            ("shared-info", pv.shared_info),
        ] {
            let Some(addr) = page else { continue };
            let in_ram = addr
                .checked_add(PAGE_SIZE as u64)
                .is_some_and(|end| end <= size);
            if !addr.is_multiple_of(PAGE_SIZE as u64) || !in_ram {
                return Err(SnapshotError::PvPage { what, addr });
            }
        }
        // Validates every device before changing any.
        self.vmm.devices.restore(&snapshot.devices)?;
        self.set_cpu_state(&snapshot.cpu)?;
        self.ram.as_mut_slice().fill(0);
        for p in &snapshot.ram {
            self.ram.write(p.page * PAGE_SIZE as u64, &p.bytes)?;
        }
        let icount = self.engine.instructions_retired();
        self.vmm.clock.restore(&snapshot.clock, icount);
        self.retired_before = snapshot.instructions.wrapping_sub(icount);
        // The stubs in the restored RAM trap the saved machine's way: make them this
        // engine's.
        self.vmm.pv = Pv {
            trap: None,
            ..snapshot.pv.clone()
        };
        self.vmm
            .set_hypercall_trap(self.engine.hypercall_trap(), &self.ram);
        Ok(())
    }
}

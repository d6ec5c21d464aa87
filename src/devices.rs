//! `popek run --device ...`: the disk, console and network devices a run attaches, and
//! the report that compares what moving data through them cost.

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use devices::virtio::blk::VirtioBlk;
use devices::virtio::console::VirtioConsole;
use devices::virtio::net::VirtioNet;
use devices::Disk;
use emu_core::machine::{Machine, RunOutcome};
use std::io::Write;
use std::path::Path;

/// What `--device` attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The legacy ATA PIO disk on the primary IDE channel (0x1F0, IRQ 14).
    Ata,
    /// A virtio-blk disk on the next free virtio-mmio slot.
    Virtio,
    /// A virtio-net loopback: every frame the guest sends comes back to it.
    Net,
    /// A virtio-console whose output goes to stdout with COM1's.
    Console,
}

/// The size of the disk a run gets without `--disk`: enough for the `disk` ROM's
/// largest `mib=`, in memory pages the host only touches when the guest does.
pub const MEMORY_DISK_SECTORS: u64 = (64 << 20) / devices::SECTOR_SIZE;

/// The disk: the image at `path`, or [`MEMORY_DISK_SECTORS`] of memory.
fn disk(path: Option<&Path>) -> Result<Disk> {
    match path {
        Some(path) => Ok(Disk::open(path)?),
        None => Ok(Disk::memory(MEMORY_DISK_SECTORS)),
    }
}

/// Attaches what `--device` and `--disk` ask for, before the ROM is loaded (which
/// announces the virtio devices on its command line).
pub fn attach(
    machine: &mut Machine,
    wanted: &[DeviceArg],
    image: Option<&Path>,
    console: &dyn Fn() -> Box<dyn Write + Send>,
) -> Result<()> {
    if image.is_some()
        && !wanted
            .iter()
            .any(|d| matches!(d, DeviceArg::Ata | DeviceArg::Virtio))
    {
        bail!("--disk: no disk device to put the image in (add --device ata or --device virtio)");
    }
    let disks = wanted
        .iter()
        .filter(|d| matches!(d, DeviceArg::Ata | DeviceArg::Virtio))
        .count();
    if disks > 1 {
        bail!("--device: one disk device per run (ata or virtio), so both see the same image");
    }
    for device in wanted {
        match device {
            DeviceArg::Ata => {
                machine.attach_ata(disk(image)?).context("--device ata")?;
            }
            DeviceArg::Virtio => {
                machine
                    .attach_virtio(Box::new(VirtioBlk::new(disk(image)?)))
                    .context("--device virtio")?;
            }
            DeviceArg::Net => {
                machine
                    .attach_virtio(Box::new(VirtioNet::new()))
                    .context("--device net")?;
            }
            DeviceArg::Console => {
                machine
                    .attach_virtio(Box::new(VirtioConsole::new(console())))
                    .context("--device console")?;
            }
        }
    }
    Ok(())
}

/// What each attached device did, and what it cost per KiB and per MiB it moved: the
/// report `--device` prints after the run, one block per device.
pub fn report(machine: &Machine, outcome: &RunOutcome) -> Option<String> {
    let devices = &machine.vmm.devices;
    let mut blocks = Vec::new();
    if let Some(ata) = &devices.ata {
        let c = ata.lock().unwrap_or_else(|e| e.into_inner()).counters();
        blocks.push(block(
            machine,
            outcome,
            "ata pio",
            c.bytes,
            c.data_accesses + c.register_accesses,
            format!(
                "commands      {}\ninterrupts    {}\ndata port     {} accesses\nerrors        {}\n",
                c.commands, c.interrupts, c.data_accesses, c.errors
            ),
        ));
    }
    for slot in &devices.virtio {
        let dev = slot.device.lock().unwrap_or_else(|e| e.into_inner());
        let c = dev.counters();
        blocks.push(block(
            machine,
            outcome,
            dev.name(),
            c.bytes,
            c.register_reads + c.register_writes,
            format!(
                "notifications {}\ninterrupts    {}\nused buffers  {}\nerrors        {} (driver), {} (requests)\n",
                c.notifications, c.interrupts, c.used_buffers, c.errors, c.request_errors
            ),
        ));
    }
    (!blocks.is_empty()).then(|| blocks.join("\n"))
}

/// One device's block of the report. VMM entries are the whole run's exits, whatever
/// device caused them.
fn block(
    machine: &Machine,
    outcome: &RunOutcome,
    name: &str,
    bytes: u64,
    accesses: u64,
    notes: String,
) -> String {
    let entries = machine.vmm.counters.total_exits();
    let kib = bytes as f64 / 1024.0;
    let per_kib = |n: u64| if kib > 0.0 { n as f64 / kib } else { 0.0 };
    let cpu_ms = outcome.host_cpu.as_secs_f64() * 1e3;
    let per_mib = if kib > 0.0 {
        cpu_ms / (kib / 1024.0)
    } else {
        0.0
    };
    format!(
        "device        {name}\nmoved         {bytes} bytes ({kib:.0} KiB)\n\
         vmm entries   {entries} ({:.3} per KiB)\n\
         device regs   {accesses} accesses ({:.3} per KiB)\n{notes}\
         host cpu      {cpu_ms:.3} ms ({per_mib:.3} ms per MiB)\n",
        per_kib(entries),
        per_kib(accesses),
    )
}

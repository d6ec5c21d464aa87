//! Command-line syntax.

use crate::devices::DeviceArg;
use crate::engine::EngineChoice;
use crate::output::errln;
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for bad input from the user (clap uses the same).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when stdout or stderr cannot be written (sysexits' EX_IOERR).
pub const EXIT_OUTPUT: u8 = 74;
/// Exit status when the instruction budget ran out (as timeout(1) does).
pub const EXIT_BUDGET: u8 = 124;
/// Exit status when the guest crashed: triple fault, unsupported
/// instruction, or a halt nothing can wake.
pub const EXIT_GUEST_CRASH: u8 = 125;
/// Exit status after Ctrl-C, as a shell reports a process SIGINT killed: 128 + 2.
pub const EXIT_INTERRUPTED: u8 = 128 + 2;
/// Exit status when the reader of stdout or stderr went away, as a shell reports a
/// process SIGPIPE killed: 128 + 13.
pub const EXIT_BROKEN_PIPE: u8 = 128 + 13;

/// Reports a command-line error of clap's in one line, `popek: error: ...`, with exit
/// status [`EXIT_USAGE`]; `--help` and `--version` print as usual and succeed.
pub fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Help and version go to stdout; clap's exit status says whether that worked.
        let printed = e.print().is_ok();
        return if printed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_OUTPUT)
        };
    }
    let _ = errln!("popek: error: {}", one_line(&e));
    ExitCode::from(EXIT_USAGE)
}

/// Clap's message without its usage text: the first paragraph and any tip, on one line.
fn one_line(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "no command given: run, roms, bench or gui (see `popek --help`)".into();
    }
    let text = e.to_string();
    let mut paragraphs = text
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "));
    let first = paragraphs.next().unwrap_or_default();
    let mut line = first.strip_prefix("error: ").unwrap_or(&first).to_string();
    for tip in paragraphs.filter(|p| p.starts_with("tip: ")) {
        line += &format!(" ({tip})");
    }
    line
}

/// Popek: a teaching x86 emulator, hypervisor and debugger.
#[derive(Parser, Debug)]
#[command(name = "popek", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a Multiboot ROM and run it; its serial output goes to stdout and its
    /// debug-exit value becomes the exit status.
    Run(RunArgs),
    /// List the embedded test ROMs, or write them out as ELF files.
    Roms(RomsArgs),
    /// Measure the interpreter's speed, against QEMU TCG when QEMU is installed, and
    /// KVM's (ring 3 against native, ring 0, port-I/O exits) where /dev/kvm is usable.
    Bench(BenchArgs),
    /// Open the desktop GUI: registers, disassembly, memory, the ring picture, the trap
    /// log and the serial console of a ROM as it runs (needs an X11 display).
    Gui(GuiArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// An embedded ROM name (see `popek roms`) or the path of a Multiboot ELF file.
    pub rom: OsString,
    /// The Multiboot command line after the ROM name (as QEMU's -append).
    #[arg(long, default_value = "")]
    pub append: String,
    /// A Multiboot boot module, FILE with its arguments ARGS (QEMU's -initrd for a
    /// Multiboot kernel); repeat for more. The kernel finds each in the Multiboot
    /// module list with the string "FILE ARGS".
    #[arg(long, value_name = "FILE[,ARGS]")]
    pub module: Vec<String>,
    /// The engine that runs the guest: the interpreter, KVM (the host's processor through
    /// /dev/kvm; the run fails where it is not available), auto (KVM where available,
    /// else the interpreter), or bt (the binary translator).
    #[arg(long, value_enum, default_value_t = EngineChoice::Interp)]
    pub engine: EngineChoice,
    /// End the run after this many guest instructions (interpreter and bt: KVM cannot
    /// count them).
    #[arg(long, value_name = "N")]
    pub max_instructions: Option<u64>,
    /// Print counters (instructions, exits by reason, port accesses, time) to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Print more about the run to stderr: where KVM shows the guest CPUID leaves
    /// different from Popek's table.
    #[arg(long, short)]
    pub verbose: bool,
    /// Print events to stderr as they happen: a comma-separated list of io, mmio,
    /// exceptions, interrupts, rings, exits, engine (the translator's blocks and
    /// flushes, shadow-paging faults, sensitive instructions under --virt), or all.
    #[arg(long, value_name = "KINDS")]
    pub trace: Option<String>,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub ram: usize,
    /// The ROM file is a BIOS image (a multiple of 64 KiB) started from the reset vector
    /// F000:FFF0, not a Multiboot kernel. Embedded ROMs know which they are.
    #[arg(long)]
    pub bios: bool,
    /// The interpreter's VMM policy: none (trap and emulate) or vtx (a model of VT-x
    /// hardware assist: CPUID, MSR, control-register and external-interrupt exits too,
    /// counted by --stats and shown by --trace exits).
    #[arg(long, value_enum, default_value_t = AssistArg::None)]
    pub assist: AssistArg,
    /// With --engine bt: run the guest kernel deprivileged (ring compression, as a
    /// model): trap (trap-and-emulate only; sensitive unprivileged instructions give
    /// the real CPU's answers) or full (the translator rewrites them into VMM
    /// call-outs). --stats counts the traps and call-outs by instruction.
    #[arg(long, value_enum, default_value_t = VirtArg::None)]
    pub virt: VirtArg,
    /// With --engine bt: after the run, print the guest block that starts at this
    /// address (EIP, hex with 0x or decimal) beside the host code made from it.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub show_translation: Option<u64>,
    /// Let gdb debug the guest: listen on ADDR (default 127.0.0.1:1234; port 0 picks a
    /// free one, printed on stderr) and wait for gdb before the first instruction.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:1234")]
    pub gdb: Option<String>,
    /// With --gdb: what the guest does when gdb's connection breaks without a detach:
    /// pause until gdb connects again, or run on.
    #[arg(long, value_enum, default_value_t = GdbDisconnect::Pause, value_name = "WHAT")]
    pub gdb_disconnect: GdbDisconnect,
    /// Attach a device (repeatable): the ATA PIO disk (ata), a virtio-blk disk (virtio),
    /// a virtio-net loopback (net), a virtio-console writing to stdout (console). A
    /// report of what each cost (VMM entries per KiB, notifications, interrupts, host
    /// CPU time per MiB) follows the run on stderr.
    #[arg(long, value_enum, value_name = "DEVICE")]
    pub device: Vec<DeviceArg>,
    /// The disk image file the disk device serves (written through; flushes sync it).
    /// Without it the disk is 64 MiB of memory.
    #[arg(long, value_name = "IMAGE")]
    pub disk: Option<PathBuf>,
}

/// An address: hex with a 0x prefix, or decimal.
fn parse_address(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not an address (hex with 0x, or decimal)"))
}

/// `--virt`: how the translator runs the guest kernel.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtArg {
    /// At ring 0: plain binary translation.
    None,
    /// Deprivileged, trap and emulate only.
    Trap,
    /// Deprivileged, full virtualization.
    Full,
}

impl From<VirtArg> for emu_core::bt::virt::Virt {
    fn from(v: VirtArg) -> Self {
        match v {
            VirtArg::None => Self::None,
            VirtArg::Trap => Self::Trap,
            VirtArg::Full => Self::Full,
        }
    }
}

/// `--gdb-disconnect`: what a guest does when gdb goes away.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GdbDisconnect {
    /// Pause until the next gdb connects.
    Pause,
    /// Run on without a debugger.
    Run,
}

impl From<GdbDisconnect> for popek_gdb::OnDisconnect {
    fn from(d: GdbDisconnect) -> Self {
        match d {
            GdbDisconnect::Pause => Self::Pause,
            GdbDisconnect::Run => Self::Run,
        }
    }
}

/// `--assist`: which VMM policy the interpreter plays.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssistArg {
    /// Trap and emulate.
    None,
    /// VT-x hardware assist.
    Vtx,
}

impl From<AssistArg> for emu_core::interp::Assist {
    fn from(a: AssistArg) -> Self {
        match a {
            AssistArg::None => Self::None,
            AssistArg::Vtx => Self::Vtx,
        }
    }
}

#[derive(Args, Debug)]
pub struct RomsArgs {
    /// Write every embedded ROM to DIR: NAME.elf for Multiboot kernels, NAME.bin for BIOS
    /// images.
    #[arg(long, value_name = "DIR")]
    pub extract: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Iterations of the `loop` ROM's two-instruction loop.
    #[arg(long, default_value_t = 100_000_000)]
    pub iters: u64,
    /// Skip the QEMU comparisons even when QEMU is installed.
    #[arg(long)]
    pub no_qemu: bool,
    /// Skip the KVM figures even where /dev/kvm is usable.
    #[arg(long)]
    pub no_kvm: bool,
    /// Print only the nanobenchmark table (the `nano` ROM's operations under every
    /// engine).
    #[arg(long)]
    pub nano: bool,
    /// Iterations of each nanobenchmark operation (default: grown until each run is
    /// long enough to time).
    #[arg(long, value_name = "N")]
    pub nano_iters: Option<u32>,
}

#[derive(Args, Debug)]
pub struct GuiArgs {
    /// A ROM to load at once: an embedded ROM name (see `popek roms`) or the path of a
    /// Multiboot ELF file. Without it, pick one in the window.
    pub rom: Option<OsString>,
    /// The engine the ROM is loaded on (the window can switch): as `popek run --engine`.
    #[arg(long, value_enum, default_value_t = EngineChoice::Interp)]
    pub engine: EngineChoice,
    /// The interpreter's VMM policy, as `popek run --assist`.
    #[arg(long, value_enum, default_value_t = AssistArg::None)]
    pub assist: AssistArg,
    /// Start running the ROM at once.
    #[arg(long)]
    pub run: bool,
    /// Open the Compare tab and run the ROM to its end under every engine.
    #[arg(long)]
    pub compare: bool,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub ram: usize,
    /// Attach a device (repeatable), as `popek run --device`: ata, virtio, net, console
    /// (a virtio-console's output is not shown in the window yet). The Virtio tab shows
    /// the virtio devices' queues.
    #[arg(long, value_enum, value_name = "DEVICE")]
    pub device: Vec<DeviceArg>,
    /// The disk image the disk device serves, as `popek run --disk`.
    #[arg(long, value_name = "IMAGE")]
    pub disk: Option<PathBuf>,
    /// Run until the guest (and the comparison, with --compare) ends, save a PNG
    /// screenshot of the window to this file and close it (for documentation and tests).
    #[arg(long, value_name = "PNG")]
    pub screenshot: Option<PathBuf>,
}

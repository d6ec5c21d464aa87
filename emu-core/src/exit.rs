//! What an engine asks of the VMM, and why a run ends.
//!
//! Every engine (interpreter, KVM, later the binary translator) reports the same exits
//! through one function, [`ExitHandler::handle`], so exits are counted and dispatched to
//! the devices in one place, and a test can feed it made-up exits.

use crate::cpu::CpuState;
use crate::exception::Exception;
use crate::memory::{CodeWatch, RamView};
use crate::stop::StopRequest;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// Something the vCPU needs from the VMM. Data buffers are borrowed from the engine: the
/// handler fills them for reads.
#[derive(Debug)]
pub enum VmExit<'a> {
    /// IN from a port; the handler fills `data` (1, 2 or 4 bytes).
    IoIn {
        /// Port number.
        port: u16,
        /// Where the value read goes.
        data: &'a mut [u8],
    },
    /// OUT to a port.
    IoOut {
        /// Port number.
        port: u16,
        /// The bytes written.
        data: &'a [u8],
    },
    /// A load from a guest-physical address that is not RAM.
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Where the value read goes.
        data: &'a mut [u8],
    },
    /// A store to a guest-physical address that is not RAM.
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// The bytes written.
        data: &'a [u8],
    },
    /// HLT: the vCPU waits for an interrupt. `interruptible` is EFLAGS.IF: with IF clear
    /// nothing but an NMI could wake it.
    Hlt {
        /// EFLAGS.IF at the HLT.
        interruptible: bool,
    },
    /// Triple fault: the processor shuts down. Where the engine knows, `cause` says
    /// which exception could not be delivered, and the state when it was raised.
    Shutdown {
        /// The undeliverable exception and the state at its instruction.
        cause: Option<(Exception, Box<CpuState>)>,
    },
    /// An instruction Popek does not implement (not the same as an invalid one).
    Unsupported {
        /// Guest RIP of the instruction.
        rip: u64,
        /// Its disassembly.
        what: String,
    },
    /// CPUID (hardware assist only: VT-x always exits on it). The VMM answers it, filling
    /// `result` with EAX, EBX, ECX, EDX.
    Cpuid {
        /// EAX: the leaf.
        leaf: u32,
        /// ECX: the sub-leaf.
        subleaf: u32,
        /// The answer.
        result: &'a mut [u32; 4],
    },
    /// RDMSR or WRMSR (hardware assist only).
    Msr {
        /// WRMSR (true) or RDMSR (false).
        write: bool,
        /// ECX: the MSR.
        index: u32,
        /// EDX:EAX for WRMSR; 0 for RDMSR, whose value the MSR emulation supplies.
        value: u64,
    },
    /// MOV to or from CR0, CR3, CR4 or CR8, CLTS or LMSW (hardware assist only).
    CrAccess {
        /// The control register.
        cr: u8,
        /// A write (MOV to CR, CLTS, LMSW) or a read (MOV from CR).
        write: bool,
    },
    /// The processor took an interrupt from the interrupt controller (hardware assist
    /// only); the engine delivers it to the guest once the VMM returns.
    ExternalInterrupt {
        /// The vector the interrupt controller supplied.
        vector: u8,
    },
    /// A hypercall (`docs/guest-abi.md`): the guest ran the trap instruction of a stub in
    /// its hypercall page. The engine hands over the state at the boundary after the
    /// trap; the VMM reads the number and arguments from it, does the work in guest RAM,
    /// puts the result in EAX (and may redirect RIP to the event callback), and the
    /// engine resumes from the state as the VMM left it.
    Hypercall {
        /// The vCPU state after the trap instruction, for the VMM to read and change.
        cpu: &'a mut CpuState,
        /// Guest RAM.
        ram: RamView<'a>,
        /// Which RAM holds decoded code: the VMM reports its writes there.
        code: &'a CodeWatch,
        /// Set by the VMM when it changed paging (page tables, CR3, CR0): the engine
        /// drops its cached translations.
        flush_tlb: &'a mut bool,
    },
    /// RDMSR or WRMSR of an MSR the VMM implements itself (Popek's hypercall-page MSR),
    /// from any engine. The VMM reads or writes `value`; it clears `ok` to make the
    /// instruction raise #GP(0).
    VmmMsr {
        /// WRMSR (true) or RDMSR (false).
        write: bool,
        /// ECX: the MSR.
        index: u32,
        /// EDX:EAX written, or where the value read goes.
        value: &'a mut u64,
        /// Whether the access succeeds.
        ok: &'a mut bool,
        /// Guest RAM, which the hypercall-page MSR fills.
        ram: RamView<'a>,
        /// Which RAM holds decoded code.
        code: &'a CodeWatch,
    },
}

/// VT-x basic exit reasons (Intel SDM Vol. 3, Appendix C), the number in bits 15:0 of
/// the VMCS exit-reason field.
pub mod vmx_reason {
    /// An external interrupt arrived while the guest ran.
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    /// The guest triple-faulted.
    pub const TRIPLE_FAULT: u16 = 2;
    /// The guest executed CPUID.
    pub const CPUID: u16 = 10;
    /// The guest executed HLT.
    pub const HLT: u16 = 12;
    /// MOV to/from CR0, CR3, CR4, CR8, CLTS or LMSW.
    pub const CR_ACCESS: u16 = 28;
    /// IN, OUT, INS or OUTS.
    pub const IO_INSTRUCTION: u16 = 30;
    /// The guest executed RDMSR.
    pub const RDMSR: u16 = 31;
    /// The guest executed WRMSR.
    pub const WRMSR: u16 = 32;
    /// The guest executed VMCALL: a hypercall.
    pub const VMCALL: u16 = 18;
    /// A guest-physical access that EPT does not map: how MMIO reaches the VMM.
    pub const EPT_VIOLATION: u16 = 48;
}

/// Exit reasons, for counting. One per [`VmExit`] variant, except that MSR accesses count
/// as reads and writes apart, as VT-x reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitReason {
    /// IN.
    IoIn,
    /// OUT.
    IoOut,
    /// MMIO load.
    MmioRead,
    /// MMIO store.
    MmioWrite,
    /// HLT.
    Hlt,
    /// Triple fault.
    Shutdown,
    /// Unsupported instruction.
    Unsupported,
    /// CPUID.
    Cpuid,
    /// RDMSR.
    Rdmsr,
    /// WRMSR.
    Wrmsr,
    /// Control-register access.
    CrAccess,
    /// External interrupt.
    ExternalInterrupt,
    /// Hypercall (whatever trap instruction the engine's stubs use), and accesses to
    /// the hypercall-page MSR.
    Hypercall,
}

impl ExitReason {
    /// How many reasons there are (the size of a per-reason counter array).
    pub const COUNT: usize = 13;
    /// Every reason, in counter order.
    pub const ALL: [ExitReason; Self::COUNT] = [
        ExitReason::IoIn,
        ExitReason::IoOut,
        ExitReason::MmioRead,
        ExitReason::MmioWrite,
        ExitReason::Hlt,
        ExitReason::Shutdown,
        ExitReason::Unsupported,
        ExitReason::Cpuid,
        ExitReason::Rdmsr,
        ExitReason::Wrmsr,
        ExitReason::CrAccess,
        ExitReason::ExternalInterrupt,
        ExitReason::Hypercall,
    ];

    /// Short name used in statistics and traces.
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::IoIn => "io-in",
            ExitReason::IoOut => "io-out",
            ExitReason::MmioRead => "mmio-read",
            ExitReason::MmioWrite => "mmio-write",
            ExitReason::Hlt => "hlt",
            ExitReason::Shutdown => "shutdown",
            ExitReason::Unsupported => "unsupported",
            ExitReason::Cpuid => "cpuid",
            ExitReason::Rdmsr => "rdmsr",
            ExitReason::Wrmsr => "wrmsr",
            ExitReason::CrAccess => "cr-access",
            ExitReason::ExternalInterrupt => "external-interrupt",
            ExitReason::Hypercall => "hypercall",
        }
    }

    /// The VT-x basic exit reason this corresponds to; None for an unsupported
    /// instruction, which is Popek's limitation, not the processor's.
    pub fn vmx_basic_reason(self) -> Option<u16> {
        Some(match self {
            ExitReason::IoIn | ExitReason::IoOut => vmx_reason::IO_INSTRUCTION,
            ExitReason::MmioRead | ExitReason::MmioWrite => vmx_reason::EPT_VIOLATION,
            ExitReason::Hlt => vmx_reason::HLT,
            ExitReason::Shutdown => vmx_reason::TRIPLE_FAULT,
            ExitReason::Unsupported => return None,
            ExitReason::Cpuid => vmx_reason::CPUID,
            ExitReason::Rdmsr => vmx_reason::RDMSR,
            ExitReason::Wrmsr => vmx_reason::WRMSR,
            ExitReason::CrAccess => vmx_reason::CR_ACCESS,
            ExitReason::ExternalInterrupt => vmx_reason::EXTERNAL_INTERRUPT,
            ExitReason::Hypercall => vmx_reason::VMCALL,
        })
    }

    /// Whether only the interpreter's VT-x model reports it. On a KVM host these exits
    /// happen too, but KVM handles them inside the kernel, so Popek's user-space VMM never
    /// sees them; the other reasons reach it from either engine.
    pub fn vtx_only(self) -> bool {
        matches!(
            self,
            ExitReason::Cpuid
                | ExitReason::Rdmsr
                | ExitReason::Wrmsr
                | ExitReason::CrAccess
                | ExitReason::ExternalInterrupt
        )
    }
}

impl VmExit<'_> {
    /// The reason this exit is counted under.
    pub fn reason(&self) -> ExitReason {
        match self {
            VmExit::IoIn { .. } => ExitReason::IoIn,
            VmExit::IoOut { .. } => ExitReason::IoOut,
            VmExit::MmioRead { .. } => ExitReason::MmioRead,
            VmExit::MmioWrite { .. } => ExitReason::MmioWrite,
            VmExit::Hlt { .. } => ExitReason::Hlt,
            VmExit::Shutdown { .. } => ExitReason::Shutdown,
            VmExit::Unsupported { .. } => ExitReason::Unsupported,
            VmExit::Cpuid { .. } => ExitReason::Cpuid,
            VmExit::Msr { write: false, .. } => ExitReason::Rdmsr,
            VmExit::Msr { write: true, .. } => ExitReason::Wrmsr,
            VmExit::CrAccess { .. } => ExitReason::CrAccess,
            VmExit::ExternalInterrupt { .. } => ExitReason::ExternalInterrupt,
            VmExit::Hypercall { .. } => ExitReason::Hypercall,
            // The para-virtualization interface, like the stubs it fills in.
            VmExit::VmmMsr { index, .. } if *index == crate::pv::abi::MSR_HYPERCALL_PAGE => {
                ExitReason::Hypercall
            }
            VmExit::VmmMsr { write: false, .. } => ExitReason::Rdmsr,
            VmExit::VmmMsr { write: true, .. } => ExitReason::Wrmsr,
        }
    }
}

/// What the engine does after the VMM handled an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Resume the guest.
    Continue,
    /// End the run (after completing the current instruction) for this reason.
    Stop(StopReason),
}

/// Why a run of the machine ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote this value to the debug-exit port.
    Exited(u32),
    /// The guest halted with interrupts disabled (EFLAGS.IF clear): only an NMI, which
    /// popek-pc never raises, could wake it.
    Halted,
    /// The guest halted with interrupts enabled, but no interrupt can reach the
    /// processor: no timer is programmed and no device has one pending
    /// (`timer_ticks` = 0), or the timer ticked `timer_ticks` times while its interrupt
    /// stayed masked or unacknowledged at the PIC.
    HaltedNoInterrupt {
        /// Timer ticks waited for in vain.
        timer_ticks: u64,
    },
    /// A stop was requested ([`StopRequest`]): the run ended at
    /// an instruction boundary, and the next run continues from there.
    Paused,
    /// Triple fault, with the exception that could not be delivered where known.
    Shutdown(Option<(Exception, Box<CpuState>)>),
    /// An instruction Popek does not implement.
    Unsupported {
        /// Guest RIP.
        rip: u64,
        /// Disassembly of the instruction.
        what: String,
    },
    /// The instruction budget (`--max-instructions`) was used up.
    Budget,
    /// The engine itself failed (e.g. KVM refused to run the vCPU).
    EngineFailure(String),
    /// A debugger's breakpoint, watchpoint or stop condition: the machine is paused at
    /// an instruction boundary and can go on.
    Debug(DebugStop),
}

/// Why a run stopped for the debugger (gdb, the GUI, a lab).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugStop {
    /// A breakpoint at this linear address: RIP is at it, and it has not run.
    Breakpoint {
        /// Linear address of the instruction.
        addr: u64,
    },
    /// A watchpoint: the instruction that made the access completed, and RIP is at the
    /// next one.
    Watchpoint {
        /// Linear address of the access.
        addr: u64,
        /// Bytes accessed.
        len: u64,
        /// A write (true) or a read.
        write: bool,
    },
    /// A guest event the run was asked to stop at (see [`StopOn`]), after it happened:
    /// an exception or interrupt was delivered, or the ring changed, and RIP is at the
    /// first instruction of the new context.
    Event(GuestEvent),
    /// A VM exit the run was asked to stop at, after the VMM handled it.
    Exit(ExitReason),
}

impl fmt::Display for DebugStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DebugStop::Breakpoint { addr } => write!(f, "breakpoint at {addr:#x}"),
            DebugStop::Watchpoint { addr, len, write } => write!(
                f,
                "watchpoint: {} of {len} bytes at {addr:#x}",
                if *write { "write" } else { "read" }
            ),
            DebugStop::Event(GuestEvent::Exception { vector, rip, .. }) => {
                let e = Exception {
                    vector: *vector,
                    error_code: None,
                };
                write!(f, "exception {e} raised at rip {rip:#x}")
            }
            DebugStop::Event(GuestEvent::Interrupt { vector, rip }) => {
                write!(f, "interrupt {vector:#04x} taken at rip {rip:#x}")
            }
            DebugStop::Event(GuestEvent::RingTransition { from, to, cause }) => {
                write!(f, "ring {from} -> {to}: {cause}")
            }
            DebugStop::Exit(reason) => write!(f, "vm exit: {}", reason.name()),
        }
    }
}

/// The guest events a run stops at, besides breakpoints and watchpoints: "run until the
/// next ring change / exception / interrupt / exit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopOn {
    /// A change of CPL.
    pub ring_change: bool,
    /// An exception delivered to the guest.
    pub exception: bool,
    /// A hardware interrupt delivered to the guest.
    pub interrupt: bool,
    /// A VM exit (port I/O, MMIO, HLT, ...).
    pub exit: bool,
}

impl StopOn {
    /// Whether the run stops at `event`.
    pub fn matches(&self, event: &GuestEvent) -> bool {
        match event {
            GuestEvent::Exception { .. } => self.exception,
            GuestEvent::Interrupt { .. } => self.interrupt,
            GuestEvent::RingTransition { .. } => self.ring_change,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Exited(v) => write!(f, "guest exited with status {v}"),
            StopReason::Halted => {
                write!(
                    f,
                    "guest halted with interrupts disabled and nothing to wake it"
                )
            }
            StopReason::HaltedNoInterrupt { timer_ticks: 0 } => write!(
                f,
                "guest halted with interrupts enabled, but nothing can raise one: \
                 no timer is programmed and no device has an interrupt pending"
            ),
            StopReason::HaltedNoInterrupt { timer_ticks } => write!(
                f,
                "guest halted with interrupts enabled, but no interrupt reached the \
                 processor in {timer_ticks} timer ticks (masked, or never acknowledged \
                 with an EOI, at the PIC)"
            ),
            StopReason::Paused => write!(f, "stopped on request"),
            StopReason::Shutdown(None) => write!(f, "triple fault: the processor shut down"),
            StopReason::Shutdown(Some((exception, state))) => write!(
                f,
                "triple fault: {exception} at rip {:#x} could not be delivered \
                 (check the IDT, its descriptors and the stack)\n{}",
                state.rip,
                state.dump()
            ),
            StopReason::Unsupported { rip, what } => {
                write!(f, "unsupported instruction `{what}` at rip {rip:#x}")
            }
            StopReason::Budget => write!(f, "instruction budget used up"),
            StopReason::EngineFailure(why) => write!(f, "engine failure: {why}"),
            StopReason::Debug(stop) => write!(f, "stopped for the debugger: {stop}"),
        }
    }
}

/// Why the privilege level changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingCause {
    /// An exception was delivered.
    Exception(u8),
    /// A hardware interrupt was delivered.
    Interrupt(u8),
    /// INT n, INT3 or INTO.
    SoftwareInterrupt(u8),
    /// IRET.
    Iret,
    /// A far CALL through a call gate.
    CallGate,
    /// A far RET to an outer ring.
    FarReturn,
    /// SYSENTER.
    Sysenter,
    /// SYSEXIT.
    Sysexit,
    /// SYSCALL.
    Syscall,
    /// SYSRET.
    Sysret,
}

impl fmt::Display for RingCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingCause::Exception(v) => {
                let e = Exception {
                    vector: *v,
                    error_code: None,
                };
                write!(f, "exception {}", e.mnemonic())
            }
            RingCause::Interrupt(v) => write!(f, "interrupt {v:#04x}"),
            RingCause::SoftwareInterrupt(v) => write!(f, "int {v:#04x}"),
            RingCause::Iret => write!(f, "iret"),
            RingCause::CallGate => write!(f, "call gate"),
            RingCause::FarReturn => write!(f, "far return"),
            RingCause::Sysenter => write!(f, "sysenter"),
            RingCause::Sysexit => write!(f, "sysexit"),
            RingCause::Syscall => write!(f, "syscall"),
            RingCause::Sysret => write!(f, "sysret"),
        }
    }
}

/// Things the guest did that are not exits (no VMM work) but that counters and traces
/// follow: engines that can see them report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEvent {
    /// An exception was delivered through the IDT.
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, where the vector has one.
        error_code: Option<u32>,
        /// RIP of the instruction it was raised at.
        rip: u64,
    },
    /// A hardware interrupt was delivered.
    Interrupt {
        /// Vector.
        vector: u8,
        /// RIP it interrupted.
        rip: u64,
    },
    /// The CPL changed.
    RingTransition {
        /// The old CPL.
        from: u8,
        /// The new CPL.
        to: u8,
        /// Why.
        cause: RingCause,
    },
}

/// What a software engine did on its own account, which the guest cannot see: the
/// translator's work and, under ring compression, the VMM's. Only traced (`--trace
/// engine`); the engine counts it itself ([`crate::engine::Engine::counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineEvent {
    /// A guest block was translated into host code.
    BlockTranslated {
        /// Guest RIP of its first instruction.
        rip: u64,
        /// Guest instructions in it.
        instructions: u32,
        /// Bytes of host code made from it (out-of-line paths included).
        host_bytes: u32,
    },
    /// Every translation was dropped.
    TranslationsDropped {
        /// Why.
        cause: DropCause,
    },
    /// Shadow paging took a fault on its shadow tables.
    ShadowFault {
        /// Which kind.
        kind: ShadowFaultKind,
        /// The linear address accessed (hidden and true faults), or the guest-physical
        /// address of the page-table page written (trace faults).
        addr: u64,
    },
    /// Under ring compression, the deprivileged guest kernel ran a sensitive
    /// instruction.
    Sensitive {
        /// Its guest RIP.
        rip: u64,
        /// The instruction.
        mnemonic: iced_x86::Mnemonic,
        /// What the VMM did about it.
        handling: SensitiveHandling,
    },
}

/// Why the translator dropped every translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// Guest code it was made from was written (by the guest, a device or a debugger).
    CodeWritten,
    /// The code buffer was full.
    BufferFull,
}

/// The kinds of shadow-paging faults (see [`crate::x86::spt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowFaultKind {
    /// The guest's tables allowed the access: the VMM filled the shadow entry, unseen.
    Hidden,
    /// The guest's tables forbid the access: the #PF is reflected to the guest.
    True,
    /// The guest wrote a traced page-table page: the shadow entries derived from it
    /// were dropped. (Writes to one page in one block are one event.)
    Trace,
}

/// What the VMM does with a sensitive instruction of a deprivileged guest kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensitiveHandling {
    /// It faults at ring 1: the VMM traps it and emulates it.
    Trap,
    /// It does not fault: the translator rewrote it into a VMM call-out (`--virt full`).
    Callout,
    /// It does not fault and ran unseen, giving the real CPU's answer (`--virt trap`).
    Unseen,
}

impl fmt::Display for EngineEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineEvent::BlockTranslated {
                rip,
                instructions,
                host_bytes,
            } => {
                let s = if *instructions == 1 { "" } else { "s" };
                write!(
                    f,
                    "bt: block at rip {rip:#x} translated: {instructions} instruction{s}, \
                     {host_bytes} bytes of host code"
                )
            }
            EngineEvent::TranslationsDropped { cause } => {
                let why = match cause {
                    DropCause::CodeWritten => "guest code was written",
                    DropCause::BufferFull => "the code buffer is full",
                };
                write!(f, "bt: every translation dropped: {why}")
            }
            EngineEvent::ShadowFault { kind, addr } => match kind {
                ShadowFaultKind::Hidden => {
                    write!(
                        f,
                        "shadow paging: hidden fault at {addr:#x} (shadow filled)"
                    )
                }
                ShadowFaultKind::True => write!(
                    f,
                    "shadow paging: true fault at {addr:#x} (reflected to the guest)"
                ),
                ShadowFaultKind::Trace => write!(
                    f,
                    "shadow paging: trace fault: page table at physical {addr:#x} written"
                ),
            },
            EngineEvent::Sensitive {
                rip,
                mnemonic,
                handling,
            } => {
                let what = match handling {
                    SensitiveHandling::Trap => "trap (emulated by the VMM)",
                    SensitiveHandling::Callout => "VMM call-out (rewritten)",
                    SensitiveHandling::Unseen => "unseen (real CPU's answer)",
                };
                let name = format!("{mnemonic:?}").to_lowercase();
                write!(f, "virt: {name} at rip {rip:#x}: {what}")
            }
        }
    }
}

/// What the interrupt controller says when polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterruptPoll {
    /// INTR is asserted: a maskable interrupt waits to be acknowledged.
    pub pending: bool,
    /// The instruction count by which the engine should poll again even if nothing
    /// else happens (a timer deadline); `u64::MAX` when nothing is scheduled.
    pub next_poll: u64,
    /// The same deadline as a host time, for engines that cannot count instructions
    /// (KVM), whose virtual time is host time: they arm a host timer for it. `None` when
    /// nothing is scheduled, or when virtual time counts instructions.
    pub next_poll_at: Option<Instant>,
}

/// The VMM side of the exit interface.
pub trait ExitHandler {
    /// Handles one exit: dispatches to devices, counts it, decides whether to go on.
    /// `icount` is the number of guest instructions retired before the exit (0 for
    /// engines that cannot count them).
    fn handle(&mut self, exit: VmExit<'_>, icount: u64) -> Flow;

    /// Counts and traces something the guest did without an exit; a debugger waiting
    /// for it stops the run once it has happened.
    fn notify(&mut self, _event: GuestEvent, _icount: u64) -> Flow {
        Flow::Continue
    }

    /// Whether [`ExitHandler::engine_event`] records anything: an engine that must
    /// gather events at a cost (shadow paging) asks once per run.
    fn traces_engine(&self) -> bool {
        false
    }

    /// Traces something the engine did on its own account.
    fn engine_event(&mut self, _event: EngineEvent, _icount: u64) {}

    /// Brings the devices to the virtual time of `icount` and says whether an interrupt
    /// is pending. A machine without an interrupt controller never has one.
    fn poll_interrupts(&mut self, _icount: u64) -> InterruptPoll {
        InterruptPoll {
            pending: false,
            next_poll: u64::MAX,
            next_poll_at: None,
        }
    }

    /// The interrupt-acknowledge cycle: the vector of the pending interrupt, now in
    /// service, or None if it went away.
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        None
    }

    /// Para-virtualization: whether the guest's one-shot timer has expired, so that an
    /// event waits for its callback. Cheap: engines ask at every interrupt poll, and
    /// call [`ExitHandler::upcall`] when it says yes.
    fn upcall_due(&mut self, _icount: u64) -> bool {
        false
    }

    /// Para-virtualization: marks the expired timer's event pending and, if the guest's
    /// kernel is running (CPL 0) with events unmasked, enters its event callback in
    /// `cpu`, the state at an instruction boundary, as a hypercall's return would.
    /// Whether it entered the callback.
    fn upcall(
        &mut self,
        _cpu: &mut CpuState,
        _ram: RamView<'_>,
        _code: &CodeWatch,
        _icount: u64,
    ) -> bool {
        false
    }

    /// The request to stop this run from outside, if the handler has one: the engine
    /// takes it ([`StopRequest::take`]) at instruction boundaries and, if it needs a kick
    /// to look in time, installs one ([`StopRequest::install_kick`]) while it runs; a
    /// run that honours it ends with [`StopReason::Paused`].
    fn stop_request(&self) -> Option<Arc<StopRequest>> {
        None
    }

    /// The processor wrote IA32_APIC_BASE (a value it accepted): the local APIC, a
    /// device on the bus, follows its base and global enable.
    fn apic_base_written(&mut self, _value: u64) {}

    /// Whether the guest is para-virtualized (it registered a hypercall page): only then
    /// is VMCALL a hypercall; elsewhere it raises #UD, as on a processor that CPUID
    /// describes without VMX.
    fn paravirtualized(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_vtx_basic_exit_reason() {
        // Intel SDM Vol. 3, Appendix C, written out rather than through the constants.
        let table = [
            (ExitReason::IoIn, Some(30)),
            (ExitReason::IoOut, Some(30)),
            (ExitReason::MmioRead, Some(48)),
            (ExitReason::MmioWrite, Some(48)),
            (ExitReason::Hlt, Some(12)),
            (ExitReason::Shutdown, Some(2)),
            (ExitReason::Unsupported, None),
            (ExitReason::Cpuid, Some(10)),
            (ExitReason::Rdmsr, Some(31)),
            (ExitReason::Wrmsr, Some(32)),
            (ExitReason::CrAccess, Some(28)),
            (ExitReason::ExternalInterrupt, Some(1)),
            (ExitReason::Hypercall, Some(18)),
        ];
        assert_eq!(table.len(), ExitReason::COUNT);
        for (reason, number) in table {
            assert_eq!(reason.vmx_basic_reason(), number, "{}", reason.name());
        }
    }

    #[test]
    fn all_lists_every_reason_once_in_counter_order() {
        for (i, reason) in ExitReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{}", reason.name());
        }
        let mut names: Vec<_> = ExitReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ExitReason::COUNT, "names are distinct");
    }

    #[test]
    fn only_exits_kvm_keeps_in_the_kernel_are_vtx_only() {
        let vtx_only: Vec<_> = ExitReason::ALL
            .into_iter()
            .filter(|r| r.vtx_only())
            .collect();
        assert_eq!(
            vtx_only,
            [
                ExitReason::Cpuid,
                ExitReason::Rdmsr,
                ExitReason::Wrmsr,
                ExitReason::CrAccess,
                ExitReason::ExternalInterrupt
            ]
        );
    }

    #[test]
    fn msr_exits_count_reads_and_writes_apart() {
        let exit = |write| VmExit::Msr {
            write,
            index: 0x174,
            value: 0,
        };
        assert_eq!(exit(false).reason(), ExitReason::Rdmsr);
        assert_eq!(exit(true).reason(), ExitReason::Wrmsr);
    }
}

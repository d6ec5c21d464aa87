//! The KVM engine: runs the guest natively on the host CPU through /dev/kvm.
//!
//! It shares everything else with the interpreter: the same guest RAM (registered with KVM
//! as memory slot 0, so guest stores land directly in [`GuestRam`]), the same CPUID table,
//! and the same [`ExitHandler`], to which every KVM exit that needs the VMM (port I/O,
//! MMIO, HLT, triple fault) is handed as a [`VmExit`]. So devices, counters and traces
//! behave the same under both engines, and a paused machine can move between them.
//!
//! Interrupts come from the same PIC and PIT: before each entry the engine polls the
//! handler ([`ExitHandler::poll_interrupts`]) and injects a pending interrupt with
//! KVM_INTERRUPT when the guest can take it, or asks KVM for an exit as soon as it can
//! (an interrupt window). Under KVM virtual time is host time, so a guest that runs
//! without exits is kicked out of KVM_RUN by a host timer at the PIT's next deadline (see
//! `kick`). The interrupt-window and kick exits are the engine's own business: they do
//! not reach the handler and are not counted, as the interpreter has neither.
//!
//! A stop requested from another thread ([`ExitHandler::stop_request`], e.g. Ctrl-C) gets
//! the vCPU out the same way: while the engine runs, the request's kick sends the kick
//! signal to the vCPU thread; the request is taken before each entry, and the run ends
//! with [`StopReason::Paused`] once KVM has completed the instruction in progress.
//!
//! What KVM cannot do like the interpreter:
//! - it does not count instructions (the budget is not enforced, see [`KvmEngine`]);
//! - exceptions the guest cannot handle end in a triple fault ([`StopReason::Shutdown`])
//!   rather than a [`VmExit::Exception`], because the CPU delivers them through the
//!   guest's IDT without asking the VMM; and the state at the fault is lost (KVM on AMD
//!   resets the vCPU on shutdown);
//! - on hosts whose KVM emulates ring-0 guest code instead of running it (PVM, e.g. when
//!   Popek itself runs in a cloud VM without nested virtualization), an instruction KVM's
//!   emulator does not implement (INT n in protected mode, for one) ends the run with
//!   [`StopReason::EngineFailure`] "instruction emulation failed", and the guest may see
//!   some CPUID leaves differently (see [`KvmEngine::cpuid_deviations`]).

mod debug;
mod kick;
mod state;

use debug::{DebugHit, GuestDebug};
use emu_core::cpu::{dr6, CpuState};
use emu_core::cpuid;
use emu_core::engine::{DebugConfig, Engine, EngineError};
use emu_core::exit::{ExitHandler, Flow, GuestEvent, StopReason, VmExit};
use emu_core::memory::GuestRam;
use emu_core::pv::{abi as pv, HypercallTrap};
use emu_core::stop::StopRequest;
use kick::Kicker;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debug_exit_arch, kvm_enable_cap, kvm_interrupt,
    kvm_userspace_memory_region, kvm_xsave, CpuId, Msrs, KVMIO, KVM_API_VERSION,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd};
use state::{KvmState, MSR_INDICES};
use std::fmt;
use std::os::fd::AsRawFd;
use std::time::Instant;
use thiserror::Error;

/// Guest-physical address of the three pages Intel's VMX needs for the real-mode TSS of
/// its virtual-8086 emulation (KVM_SET_TSS_ADDRESS; AMD ignores it). It must not overlap
/// RAM or a device: just below the top 256 KiB of the 4 GiB space, as QEMU and Firecracker
/// place it, far above the 3 GiB RAM limit and where popek-pc maps nothing.
const TSS_ADDRESS: usize = 0xFFFB_D000;

/// The memory slot guest RAM occupies.
const RAM_SLOT: u32 = 0;

/// The only vCPU: popek-pc is a uniprocessor.
const VCPU_ID: u64 = 0;

/// The "write" direction of an ioctl number (`_IOC_WRITE`): the kernel reads the argument.
const IOC_WRITE: libc::c_ulong = 1;
/// Where an ioctl number keeps its direction, argument size and type (`_IOC_*SHIFT`).
const IOC_DIR_SHIFT: u32 = 30;
const IOC_SIZE_SHIFT: u32 = 16;
const IOC_TYPE_SHIFT: u32 = 8;
/// KVM_INTERRUPT's number within the KVM ioctls.
const KVM_INTERRUPT_NR: libc::c_ulong = 0x86;
/// `_IOW(KVMIO, 0x86, struct kvm_interrupt)`: queues an external interrupt for a vCPU
/// whose interrupt controller lives in user space, as popek-pc's PIC does. kvm-ioctls
/// does not wrap it.
const KVM_INTERRUPT: libc::c_ulong = (IOC_WRITE << IOC_DIR_SHIFT)
    | ((std::mem::size_of::<kvm_interrupt>() as libc::c_ulong) << IOC_SIZE_SHIFT)
    | ((KVMIO as libc::c_ulong) << IOC_TYPE_SHIFT)
    | KVM_INTERRUPT_NR;

/// Errors setting up the KVM engine.
#[derive(Debug, Error)]
pub enum KvmError {
    /// /dev/kvm is missing, or this user may not open it.
    #[error("/dev/kvm not available: {0}")]
    Unavailable(kvm_ioctls::Error),
    /// The kernel speaks another KVM API than the stable one kvm-ioctls is written for.
    #[error("KVM API version {0} is not the supported version {KVM_API_VERSION}")]
    ApiVersion(i32),
    /// An ioctl setting up the VM or vCPU failed.
    #[error("KVM {step} failed: {source}")]
    Setup {
        /// What was being set up.
        step: &'static str,
        /// The kernel's error.
        source: kvm_ioctls::Error,
    },
    /// The new vCPU's state cannot be read, so it could not be handed to another engine.
    #[error("KVM cannot read the vCPU state: {0}")]
    State(String),
}

/// Opens /dev/kvm with the API version this engine is written for.
fn open_kvm() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(KvmError::Unavailable)?;
    match kvm.get_api_version() {
        v if v == KVM_API_VERSION as i32 => Ok(kvm),
        v => Err(KvmError::ApiVersion(v)),
    }
}

/// Whether this host can run the KVM engine — /dev/kvm opens and speaks the stable
/// API — and if not, why.
pub fn check_kvm() -> Result<(), KvmError> {
    open_kvm().map(drop)
}

/// Whether this host can run the KVM engine (see [`check_kvm`]). For tests and
/// `--engine auto`.
pub fn kvm_available() -> bool {
    check_kvm().is_ok()
}

/// Shorthand for the `map_err` of each setup ioctl.
fn setup(step: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Setup { step, source }
}

/// Shorthand for the `map_err` of each state-transfer ioctl: its name and the error.
fn failed(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> String {
    move |e| format!("{ioctl}: {e}")
}

/// The shared CPUID table ([`emu_core::cpuid`]) as KVM_SET_CPUID2 takes it.
///
/// It is loaded as it is, with nothing of the host's, so the guest sees the same processor
/// as under the interpreter. Standard KVM (kvm_intel, kvm_amd) needs no bit of its own in
/// it: features it does not find here it refuses the guest (e.g. CR4 bits whose feature is
/// not listed), as the interpreter does. What remains different is KVM's doing, and
/// recorded rather than papered over:
/// - a leaf above the highest one listed returns the highest basic leaf (Intel's rule,
///   which KVM applies to every vendor but AMD and Hygon) where the interpreter returns
///   zeros;
/// - some KVM modules cannot hide the host's features from the guest and install their own
///   values: PVM (kvm_pvm, which runs guests without hardware virtualization) replaces
///   leaf 1 ECX/EDX with the host's and adds leaf 0xD. [`KvmEngine::cpuid_deviations`]
///   lists whatever the vCPU reports differently from the table.
fn cpuid_table() -> CpuId {
    let entries: Vec<kvm_cpuid_entry2> = cpuid::LEAVES
        .iter()
        .chain(&cpuid::HYPERVISOR_LEAVES)
        .map(|&leaf| {
            let [eax, ebx, ecx, edx] = cpuid::cpuid(leaf);
            kvm_cpuid_entry2 {
                function: leaf,
                eax,
                ebx,
                ecx,
                edx,
                // Index 0 and no KVM_CPUID_FLAG_SIGNIFCANT_INDEX: no leaf has sub-leaves.
                ..Default::default()
            }
        })
        .collect();
    CpuId::from_entries(&entries).expect("the table is checked to fit KVM's at compile time")
}

// KVM_SET_CPUID2 takes at most this many entries; `cpuid_table` relies on it.
const _: () =
    assert!(cpuid::LEAVES.len() + cpuid::HYPERVISOR_LEAVES.len() <= KVM_MAX_CPUID_ENTRIES);

/// A CPUID leaf the vCPU reports differently from the shared table, because the host's
/// KVM installed its own values (see [`KvmEngine::cpuid_deviations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuidDeviation {
    /// The leaf (EAX input).
    pub leaf: u32,
    /// The sub-leaf (ECX input).
    pub index: u32,
    /// EAX, EBX, ECX, EDX as the shared table (and so the interpreter) answers.
    pub table: [u32; 4],
    /// EAX, EBX, ECX, EDX as the guest sees them under KVM.
    pub kvm: [u32; 4],
}

impl fmt::Display for CpuidDeviation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let regs = |r: &[u32; 4]| format!("{:08x} {:08x} {:08x} {:08x}", r[0], r[1], r[2], r[3]);
        write!(
            f,
            "CPUID leaf {:#x}.{}: KVM reports {}, the table {}",
            self.leaf,
            self.index,
            regs(&self.kvm),
            regs(&self.table)
        )
    }
}

/// The leaves of `installed` (what KVM_GET_CPUID2 returns) that differ from the table.
fn cpuid_deviations(installed: &CpuId) -> Vec<CpuidDeviation> {
    installed
        .as_slice()
        .iter()
        .filter_map(|e| {
            let kvm = [e.eax, e.ebx, e.ecx, e.edx];
            // The interpreter ignores the sub-leaf, so the table answers every index alike.
            let table = cpuid::cpuid(e.function);
            (kvm != table).then_some(CpuidDeviation {
                leaf: e.function,
                index: e.index,
                table,
                kvm,
            })
        })
        .collect()
}

/// How one KVM_RUN ended.
enum Entry {
    /// An exit went to the VMM, which answered this.
    Handled(Flow),
    /// KVM_RUN returned EINTR: a signal, or `immediate_exit` after finishing pending I/O.
    Interrupted,
    /// KVM_RUN asked to be called again (EAGAIN, or an exit with nothing for the VMM).
    Retry,
    /// The guest ran a hypercall stub's trap (an OUT to the hypercall port): the VMM
    /// handles it once the OUT is complete.
    Hypercall,
    /// The vCPU cannot go on.
    Failed(String),
    /// A debug exit: a single step, a breakpoint or a watchpoint of the debugger's.
    Debug(kvm_debug_exit_arch),
}

/// The KVM engine: one VM with guest RAM as its only memory slot and one vCPU.
///
/// **Instruction budget.** KVM cannot count retired instructions, so this engine ignores
/// the `budget` of [`Engine::run`], reports `false` from [`Engine::counts_instructions`],
/// and passes 0 as the icount of every exit; a run ends only when the exit handler stops
/// it (debug-exit, HLT, triple fault, ...) or at a breakpoint or watchpoint.
/// [`Engine::step`] is exact: it runs one instruction per KVM_RUN
/// (KVM_GUESTDBG_SINGLESTEP), and those are the instructions
/// [`Engine::instructions_retired`] counts.
///
/// **Stops are at instruction boundaries.** When the handler stops a run, the engine first
/// lets KVM finish the instruction that exited (the register load of an IN or MMIO read,
/// the RIP advance past an OUT), so [`Engine::state`] after [`Engine::run`] is always that
/// of a clean instruction boundary, ready to move to another engine.
#[derive(Debug)]
pub struct KvmEngine {
    vcpu: VcpuFd,
    /// Host address and size of the RAM registered as the memory slot, to check that
    /// [`Engine::run`] is given that RAM.
    ram_host: (u64, u64),
    /// Why KVM refused the last [`Engine::set_state`] (the trait cannot return it): the
    /// next run reports it instead of running a vCPU in some other state.
    rejected_state: Option<String>,
    /// Where the vCPU's CPUID differs from the shared table.
    cpuid_deviations: Vec<CpuidDeviation>,
    /// The debugger's breakpoints and watchpoints, as debug registers.
    debug: GuestDebug,
    /// Whether KVM_SET_GUEST_DEBUG last enabled anything (so it must be cleared).
    debug_on: bool,
    /// Instructions run by single steps: the only ones KVM can count.
    stepped: u64,
    /// KVM hands RDMSR/WRMSR of MSRs it does not know to Popek
    /// (KVM_CAP_X86_USER_SPACE_MSR), so the hypercall-page MSR works.
    user_msrs: bool,
}

impl KvmEngine {
    /// Creates a VM whose memory is `ram`, with one vCPU reporting the shared CPUID table.
    /// Give it a state with [`Engine::set_state`] before running it.
    ///
    /// **Contract:** `ram` is the RAM this engine's [`Engine::run`] will be given. KVM
    /// maps its host memory into the guest and keeps the mapping for the life of the VM,
    /// but only the guest touches it, and only inside KVM_RUN, which `run` issues after
    /// checking that it holds `&mut` of a [`GuestRam`] at that very host address and size.
    /// A `Machine` keeps the pair together: it owns both and always hands the engine its
    /// own RAM.
    pub fn new(ram: &GuestRam) -> Result<KvmEngine, KvmError> {
        let vm = open_kvm()?.create_vm().map_err(setup("create VM"))?;
        // KVM_SET_XSAVE reads as much as this says (0 before Linux 5.17: kvm_xsave's size).
        let xsave_size = vm.check_extension_int(Cap::Xsave2);
        if usize::try_from(xsave_size).unwrap_or(usize::MAX) > std::mem::size_of::<kvm_xsave>() {
            return Err(KvmError::State(format!(
                "the XSAVE area is {xsave_size} bytes, more than kvm_xsave holds"
            )));
        }
        vm.set_tss_address(TSS_ADDRESS)
            .map_err(setup("set TSS address"))?;
        let ram_host = ram.host_range();
        let region = kvm_userspace_memory_region {
            slot: RAM_SLOT,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram_host.1,
            userspace_addr: ram_host.0,
        };
        // SAFETY: the region is `ram`'s whole mapping: `memory_size` bytes of readable and
        // writable anonymous memory at `userspace_addr`, owned by its GuestMemoryMmap. KVM
        // accesses it only for the guest, inside KVM_RUN (this VM enables no feature, such
        // as kvmclock, that would have KVM write guest memory on its own), and `run` calls
        // KVM_RUN only inside `Machine::run`, which holds the machine (and so its RAM)
        // exclusively: no Rust reference into the guest's bytes exists while the guest
        // writes them, and the devices reach them only through vm-memory's raw accessors,
        // between exits, on this thread — the protocol GuestRam documents. Should the
        // RAM be unmapped while the VM still exists, the kernel drops the guest's view of
        // it along with the host's (KVM's MMU notifiers), and `run` refuses to start
        // without a GuestRam at this range, so the guest never reaches freed memory.
        unsafe { vm.set_user_memory_region(region) }.map_err(setup("register guest RAM"))?;
        // RDMSR/WRMSR of MSRs KVM does not know come out to Popek, which implements the
        // hypercall-page MSR. Without the capability the guest gets #GP for it, as for
        // any unknown MSR.
        let user_msrs = vm.check_extension_int(Cap::X86UserSpaceMsr) > 0
            && vm
                .enable_cap(&kvm_enable_cap {
                    cap: kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
                    args: [
                        u64::from(kvm_bindings::KVM_MSR_EXIT_REASON_UNKNOWN),
                        0,
                        0,
                        0,
                    ],
                    ..Default::default()
                })
                .is_ok();
        let vcpu = vm.create_vcpu(VCPU_ID).map_err(setup("create vCPU"))?;
        // CPUID first: KVM validates CR4 and EFER in KVM_SET_SREGS against it.
        vcpu.set_cpuid2(&cpuid_table())
            .map_err(setup("set CPUID"))?;
        let installed = vcpu
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(setup("read back CPUID"))?;
        // The vCPU keeps the VM alive in the kernel; the VM fd itself is no longer needed.
        let engine = KvmEngine {
            vcpu,
            ram_host,
            rejected_state: None,
            cpuid_deviations: cpuid_deviations(&installed),
            debug: GuestDebug::default(),
            debug_on: false,
            stepped: 0,
            user_msrs,
        };
        // Every ioctl `state` needs works now, so it will later: `state` cannot fail.
        engine.read_state().map_err(KvmError::State)?;
        Ok(engine)
    }

    /// The CPUID leaves the guest sees differently from the shared table (empty on a
    /// standard KVM), for a front end to warn about: a guest may find features there that
    /// the interpreter does not implement.
    pub fn cpuid_deviations(&self) -> &[CpuidDeviation] {
        &self.cpuid_deviations
    }

    /// Whether the guest can register a hypercall page: this KVM hands the accesses to
    /// MSRs it does not know to Popek.
    pub fn has_hypercall_msr(&self) -> bool {
        self.user_msrs
    }

    /// Runs the vCPU once and hands the exit, if it is one for the VMM, to `exits`.
    fn enter(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler) -> Entry {
        // Port I/O is taken apart after the match: its slice borrows the vCPU, and the
        // element size of a string I/O (INS/OUTS) is only in the kvm_run structure.
        let (port, ptr, len, is_in) = match self.vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => (port, data.as_mut_ptr(), data.len(), true),
            Ok(VcpuExit::IoOut(port, data)) if is_hypercall(port, data) => return Entry::Hypercall,
            Ok(VcpuExit::IoOut(port, data)) => (port, data.as_ptr().cast_mut(), data.len(), false),
            Ok(VcpuExit::X86Rdmsr(msr)) => {
                let mut ok = false;
                let exit = VmExit::VmmMsr {
                    write: false,
                    index: msr.index,
                    value: msr.data,
                    ok: &mut ok,
                    ram: ram.view(),
                    code: ram.code(),
                };
                let flow = exits.handle(exit, 0);
                *msr.error = u8::from(!ok);
                return Entry::Handled(flow);
            }
            Ok(VcpuExit::X86Wrmsr(msr)) => {
                let (mut value, mut ok) = (msr.data, false);
                let exit = VmExit::VmmMsr {
                    write: true,
                    index: msr.index,
                    value: &mut value,
                    ok: &mut ok,
                    ram: ram.view(),
                    code: ram.code(),
                };
                let flow = exits.handle(exit, 0);
                *msr.error = u8::from(!ok);
                return Entry::Handled(flow);
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                return Entry::Handled(exits.handle(VmExit::MmioRead { addr, data }, 0))
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                return Entry::Handled(exits.handle(VmExit::MmioWrite { addr, data }, 0))
            }
            Ok(VcpuExit::Hlt) => {
                let interruptible = self.vcpu.get_kvm_run().if_flag != 0;
                return Entry::Handled(exits.handle(VmExit::Hlt { interruptible }, 0));
            }
            Ok(VcpuExit::Shutdown) => {
                return Entry::Handled(exits.handle(VmExit::Shutdown { cause: None }, 0))
            }
            // A host interrupt ended the run; the guest has nothing for us.
            Ok(VcpuExit::Intr) => return Entry::Retry,
            // The guest can take the interrupt it could not before: the next entry
            // injects it.
            Ok(VcpuExit::IrqWindowOpen) => return Entry::Retry,
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Entry::Failed(format!(
                    "KVM could not enter the guest on cpu {cpu} \
                     (hardware entry failure reason {reason:#x})"
                ))
            }
            Ok(VcpuExit::InternalError) => return Entry::Failed(self.internal_error()),
            Ok(VcpuExit::Debug(arch)) => return Entry::Debug(arch),
            Ok(other) => return Entry::Failed(format!("unexpected KVM exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR => return Entry::Interrupted,
            Err(e) if e.errno() == libc::EAGAIN => return Entry::Retry,
            Err(e) => return Entry::Failed(format!("KVM_RUN failed: {e}")),
        };
        let io = {
            // SAFETY: KVM_RUN returned an I/O exit (kvm-ioctls built the IoIn/IoOut above
            // from this very field), so `io` is the union member the kernel filled in.
            unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.io }
        };
        // SAFETY: `ptr` and `len` describe the data slice kvm-ioctls made for this exit, in
        // the vCPU's kvm_run mapping, which lives as long as `self.vcpu`. That slice and
        // the `kvm_run` reference above are both dead, and the vCPU is not run again while
        // this slice lives, so it is the only reference to those bytes.
        let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        // A string I/O carries `count` elements of `size` bytes; the VMM sees each as the
        // single access the interpreter would report for it.
        let mut flow = Flow::Continue;
        // (`size` is 1, 2 or 4; `max` only keeps a zero from a broken kernel from panicking.)
        for element in data.chunks_mut(usize::from(io.size).max(1)) {
            let exit = if is_in {
                VmExit::IoIn {
                    port,
                    data: element,
                }
            } else {
                VmExit::IoOut {
                    port,
                    data: element,
                }
            };
            let answer = exits.handle(exit, 0);
            // Every element was executed by the guest, so each reaches the devices; the
            // first request to stop wins.
            if flow == Flow::Continue {
                flow = answer;
            }
        }
        Entry::Handled(flow)
    }

    /// Describes a KVM_EXIT_INTERNAL_ERROR, e.g. an instruction KVM failed to emulate.
    fn internal_error(&mut self) -> String {
        // SAFETY: called right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, for which
        // the kernel fills the `internal` member of the union.
        let suberror = unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
        let what = match suberror {
            kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "instruction emulation failed",
            kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering another",
            kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
            kvm_bindings::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected exit reason",
            _ => "unknown suberror",
        };
        let rip = self
            .vcpu
            .get_regs()
            .map_or_else(|e| format!("unknown ({e})"), |r| format!("{:#x}", r.rip));
        format!("KVM internal error {suberror} ({what}) at rip {rip}")
    }
}

/// Whether an OUT is a hypercall stub's trap: `out HYPERCALL_PORT, eax`.
fn is_hypercall(port: u16, data: &[u8]) -> bool {
    port == u16::from(pv::HYPERCALL_PORT) && data.len() == 4
}

impl KvmEngine {
    /// A hypercall: completes the OUT (KVM steps past it on the next KVM_RUN, which
    /// with `immediate_exit` set returns at once without entering the guest), then
    /// hands the state at that boundary to the VMM and loads what it made of it: the
    /// registers alone when nothing else changed, as for most calls.
    fn hypercall(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler) -> Result<Flow, String> {
        self.vcpu.set_kvm_immediate_exit(1);
        let completed = match self.vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(format!("KVM_RUN completing a hypercall: {e}")),
            Ok(exit) => Err(format!("KVM exit {exit:?} completing a hypercall")),
        };
        self.vcpu.set_kvm_immediate_exit(0);
        completed?;
        // What a hypercall reads and writes: registers, segments, descriptor tables,
        // control registers and EFER. Two ioctls, not the six of the whole state.
        let regs = self.vcpu.get_regs().map_err(failed("KVM_GET_REGS"))?;
        let sregs = self.vcpu.get_sregs().map_err(failed("KVM_GET_SREGS"))?;
        let mut state = state::from_kvm(&KvmState {
            regs,
            sregs,
            msrs: state::msr_requests(),
            debugregs: Default::default(),
            fxsave: [0; emu_core::cpu::fxsave::SIZE],
            events: Default::default(),
        });
        let before = state.clone();
        let mut flush_tlb = false;
        let flow = exits.handle(
            VmExit::Hypercall {
                cpu: &mut state,
                ram: ram.view(),
                code: ram.code(),
                flush_tlb: &mut flush_tlb,
            },
            0,
        );
        let mut rest = state.clone();
        rest.gpr = before.gpr;
        rest.rip = before.rip;
        if rest != before {
            // Paging or IDTR changed. KVM reloads its MMU with the new CR3 and CR0: no
            // TLB to flush by hand.
            let k = state::to_kvm(&state, sregs);
            self.vcpu
                .set_sregs(&k.sregs)
                .map_err(failed("KVM_SET_SREGS"))?;
        }
        let mut regs = regs;
        state::put_gprs(&mut regs, &state);
        self.vcpu.set_regs(&regs).map_err(failed("KVM_SET_REGS"))?;
        Ok(flow)
    }

    /// Reads every register [`CpuState`] holds from the vCPU.
    fn read_state(&self) -> Result<KvmState, String> {
        let mut msrs =
            Msrs::from_entries(&state::msr_requests()).map_err(|e| format!("MSR list: {e:?}"))?;
        let read = self
            .vcpu
            .get_msrs(&mut msrs)
            .map_err(failed("KVM_GET_MSRS"))?;
        if let Some(index) = MSR_INDICES.get(read) {
            return Err(format!("KVM_GET_MSRS: KVM cannot read MSR {index:#x}"));
        }
        Ok(KvmState {
            regs: self.vcpu.get_regs().map_err(failed("KVM_GET_REGS"))?,
            sregs: self.vcpu.get_sregs().map_err(failed("KVM_GET_SREGS"))?,
            msrs: msrs
                .as_slice()
                .try_into()
                .map_err(|_| "KVM_GET_MSRS: wrong entry count".to_string())?,
            debugregs: self
                .vcpu
                .get_debug_regs()
                .map_err(failed("KVM_GET_DEBUGREGS"))?,
            fxsave: state::fxsave_of(&self.vcpu.get_xsave().map_err(failed("KVM_GET_XSAVE"))?),
            events: self
                .vcpu
                .get_vcpu_events()
                .map_err(failed("KVM_GET_VCPU_EVENTS"))?,
        })
    }

    /// Loads `state` into the vCPU, its interrupt shadow and pending event included.
    fn write_state(&mut self, state: &CpuState) -> Result<(), String> {
        let sregs = self.vcpu.get_sregs().map_err(failed("KVM_GET_SREGS"))?;
        let k = state::to_kvm(state, sregs);
        // System registers first: how KVM holds RFLAGS depends on the mode they set (VMX
        // without unrestricted guest runs real mode as virtual-8086 mode).
        self.vcpu
            .set_sregs(&k.sregs)
            .map_err(failed("KVM_SET_SREGS"))?;
        self.vcpu
            .set_regs(&k.regs)
            .map_err(failed("KVM_SET_REGS"))?;
        let msrs = Msrs::from_entries(&k.msrs).map_err(|e| format!("MSR list: {e:?}"))?;
        let written = self.vcpu.set_msrs(&msrs).map_err(failed("KVM_SET_MSRS"))?;
        if let Some(entry) = k.msrs.get(written) {
            return Err(format!(
                "KVM_SET_MSRS: KVM refused MSR {:#x} = {:#x}",
                entry.index, entry.data
            ));
        }
        self.vcpu
            .set_debug_regs(&k.debugregs)
            .map_err(failed("KVM_SET_DEBUGREGS"))?;
        let mut xsave = self.vcpu.get_xsave().map_err(failed("KVM_GET_XSAVE"))?;
        state::put_fxsave(&mut xsave, &k.fxsave);
        // SAFETY: `xsave` is the whole area KVM_SET_XSAVE reads: `new` checked that the
        // guest's XSAVE area fits the 4096-byte kvm_xsave (KVM_CAP_XSAVE2), which holds
        // because Popek never asks for dynamically enabled XSAVE features (AMX).
        unsafe { self.vcpu.set_xsave(&xsave) }.map_err(failed("KVM_SET_XSAVE"))?;
        self.vcpu
            .set_vcpu_events(&k.events)
            .map_err(failed("KVM_SET_VCPU_EVENTS"))
    }

    /// Queues `vector` for delivery at the next entry (KVM_INTERRUPT).
    fn inject(&self, vector: u8) -> Result<(), String> {
        let irq = kvm_interrupt { irq: vector.into() };
        // SAFETY: KVM_INTERRUPT reads one kvm_interrupt through the pointer, which is
        // valid for the call, from a live vCPU fd this engine owns.
        let rc = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_INTERRUPT, &irq) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "KVM_INTERRUPT {vector:#x}: {}",
                std::io::Error::last_os_error()
            ))
        }
    }

    /// Before an entry: brings the devices up to date and injects the interrupt the PIC
    /// has pending if the guest can take it now, or asks KVM to exit as soon as it can
    /// (the interrupt window: IF set and no STI/MOV SS shadow). Returns when the next
    /// timer interrupt is due.
    fn deliver_interrupts(
        &mut self,
        exits: &mut dyn ExitHandler,
    ) -> Result<Option<Instant>, String> {
        let poll = exits.poll_interrupts(0);
        let mut pending = poll.pending;
        // What KVM said at the last exit (cleared by `set_state`, which makes it stale).
        let run = self.vcpu.get_kvm_run();
        if pending && run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
            if let Some(vector) = exits.acknowledge_interrupt() {
                let rip = self.vcpu.get_regs().map_err(failed("KVM_GET_REGS"))?.rip;
                exits.notify(GuestEvent::Interrupt { vector, rip }, 0);
                self.inject(vector)?;
            }
            // KVM takes one interrupt an entry: another one waits for the window.
            pending = exits.poll_interrupts(0).pending;
        }
        self.vcpu.get_kvm_run().request_interrupt_window = u8::from(pending);
        Ok(poll.next_poll_at)
    }

    /// The kicker of this run, created the first time one is needed.
    fn kicker<'k>(&mut self, kicker: &'k mut Option<Kicker>) -> std::io::Result<&'k mut Kicker> {
        match kicker {
            Some(k) => Ok(k),
            None => Ok(kicker.insert(Kicker::new(
                &raw mut self.vcpu.get_kvm_run().immediate_exit,
            )?)),
        }
    }

    /// Arms the kick timer for `deadline`, creating it the first time one is due.
    fn arm_kick(
        &mut self,
        kicker: &mut Option<Kicker>,
        deadline: Option<Instant>,
    ) -> std::io::Result<()> {
        if kicker.is_none() && deadline.is_none() {
            return Ok(());
        }
        self.kicker(kicker)?.arm(deadline)
    }

    /// The body of [`Engine::run`]: enters the guest until a stop, completing the
    /// exiting instruction first.
    fn run_until_stop(
        &mut self,
        ram: &GuestRam,
        exits: &mut dyn ExitHandler,
        kicker: &mut Option<Kicker>,
        stop_request: Option<&StopRequest>,
        mut steps: Option<u64>,
    ) -> StopReason {
        let mut stop = None;
        loop {
            // Once stopping, the next entry only completes the exiting instruction: no
            // interrupt may start (the state handed over could not say it is pending).
            if stop.is_none() {
                if stop_request.is_some_and(StopRequest::take) {
                    // Asked to stop from outside: like an exit whose handler said stop,
                    // the entry below only completes an instruction that exited.
                    stop = Some(StopReason::Paused);
                    self.vcpu.set_kvm_immediate_exit(1);
                } else {
                    let deadline = match self.deliver_interrupts(exits) {
                        Ok(deadline) => deadline,
                        Err(why) => return StopReason::EngineFailure(why),
                    };
                    if let Err(e) = self.arm_kick(kicker, deadline) {
                        return StopReason::EngineFailure(format!(
                            "cannot arm the kick timer: {e}"
                        ));
                    }
                }
            }
            match self.enter(ram, exits) {
                Entry::Handled(Flow::Continue) | Entry::Retry => {}
                Entry::Hypercall => match self.hypercall(ram, exits) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop(reason)) => {
                        // The OUT is complete: nothing is left to finish.
                        return stop.unwrap_or(reason);
                    }
                    Err(why) => return StopReason::EngineFailure(why),
                },
                Entry::Handled(Flow::Stop(reason)) => {
                    if stop.is_none() {
                        stop = Some(reason);
                        // The exiting instruction is not finished yet: KVM completes an IN
                        // or MMIO load, or steps past an OUT, on the next KVM_RUN. With
                        // immediate_exit set, that KVM_RUN does just this and returns EINTR
                        // without entering the guest. Exits it still raises (the second
                        // half of an MMIO access split across pages) are the same
                        // instruction's and go to the handler as usual.
                        self.vcpu.set_kvm_immediate_exit(1);
                    }
                }
                Entry::Interrupted => {
                    if let Some(reason) = stop {
                        return reason;
                    }
                    // The kick (or another signal for this thread): clear it before
                    // polling again, so a kick that comes later still stops the next
                    // KVM_RUN, and one that came earlier is covered by that poll.
                    self.vcpu.set_kvm_immediate_exit(0);
                }
                Entry::Failed(why) => return StopReason::EngineFailure(why),
                Entry::Debug(arch) => {
                    let mut reason = None;
                    if let Some(left) = steps.as_mut().filter(|_| arch.dr6 & dr6::BS != 0) {
                        self.stepped += 1;
                        *left -= 1;
                        if *left == 0 {
                            reason = Some(StopReason::Budget);
                        }
                    }
                    if let DebugHit::Stop(hit) = self.debug.hit(&arch) {
                        reason = Some(StopReason::Debug(hit));
                    }
                    if let (None, Some(reason)) = (&stop, reason) {
                        stop = Some(reason);
                        self.vcpu.set_kvm_immediate_exit(1);
                    }
                }
            }
        }
    }

    /// [`Engine::run`] (`steps` None) or [`Engine::step`].
    fn run_or_step(
        &mut self,
        ram: &GuestRam,
        exits: &mut dyn ExitHandler,
        mut steps: Option<u64>,
    ) -> StopReason {
        if let Some(why) = self.rejected_state.take() {
            return StopReason::EngineFailure(why);
        }
        if ram.host_range() != self.ram_host {
            return StopReason::EngineFailure(
                "the guest RAM given to the KVM engine is not the RAM it was created for".into(),
            );
        }
        if steps == Some(0) {
            return StopReason::Budget;
        }
        // The first instruction of a run is exempt from breakpoints, so that a run
        // resumed at one moves on: it is stepped with them off.
        match self.at_breakpoint() {
            Ok(false) => {}
            Ok(true) => {
                let stop = self.run_watched(ram, exits, Some(1), false);
                if stop != StopReason::Budget {
                    return stop;
                }
                if let Some(left) = &mut steps {
                    *left -= 1;
                    if *left == 0 {
                        return stop;
                    }
                }
            }
            Err(why) => return StopReason::EngineFailure(why),
        }
        self.run_watched(ram, exits, steps, true)
    }

    /// Runs `steps` single steps (or free, with None), with the debugger's
    /// breakpoints and watchpoints armed if `armed`, until a stop.
    fn run_watched(
        &mut self,
        ram: &GuestRam,
        exits: &mut dyn ExitHandler,
        steps: Option<u64>,
        armed: bool,
    ) -> StopReason {
        if let Err(why) = self.apply_debug(steps.is_some(), armed) {
            return StopReason::EngineFailure(why);
        }
        let mut kicker = None;
        let stop_request = exits.stop_request();
        let stop = match &stop_request {
            // A stop request kicks the vCPU with the same signal as the timer: the handler
            // must be installed and pointed at this vCPU before the kick is.
            Some(request) => match self.kicker(&mut kicker) {
                Ok(k) => {
                    let _kick = request.install_kick(k.kick_this_thread());
                    self.run_until_stop(ram, exits, &mut kicker, Some(request), steps)
                }
                Err(e) => StopReason::EngineFailure(format!("cannot set up the vCPU kick: {e}")),
            },
            None => self.run_until_stop(ram, exits, &mut kicker, None, steps),
        };
        // The kick and the timer go first, so no kick comes after the flag is cleared for
        // the next run.
        drop(kicker);
        self.vcpu.set_kvm_immediate_exit(0);
        stop
    }

    /// Tells KVM whether to single-step the next entries and whether the debugger's
    /// slots are armed.
    fn apply_debug(&mut self, step: bool, armed: bool) -> Result<(), String> {
        let armed = armed && !self.debug.is_empty();
        let on = step || armed;
        if on || self.debug_on {
            self.vcpu
                .set_guest_debug(&self.debug.control(step, armed))
                .map_err(|e| format!("KVM_SET_GUEST_DEBUG failed: {e}"))?;
        }
        self.debug_on = on;
        Ok(())
    }

    /// Whether a breakpoint of the debugger's is at the current instruction.
    fn at_breakpoint(&self) -> Result<bool, String> {
        if self.debug.is_empty() {
            return Ok(false);
        }
        let regs = self.vcpu.get_regs().map_err(failed("KVM_GET_REGS"))?;
        let sregs = self.vcpu.get_sregs().map_err(failed("KVM_GET_SREGS"))?;
        Ok(self.debug.breaks_at(sregs.cs.base.wrapping_add(regs.rip)))
    }
}

impl Engine for KvmEngine {
    fn name(&self) -> &'static str {
        "kvm"
    }

    /// Runs until the exit handler stops the run, or a breakpoint or watchpoint.
    /// `budget` is ignored: see [`KvmEngine`].
    fn run(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler, _budget: u64) -> StopReason {
        self.run_or_step(ram, exits, None)
    }

    /// Single-steps `n` instructions (KVM_GUESTDBG_SINGLESTEP), one KVM_RUN each.
    fn step(&mut self, ram: &GuestRam, exits: &mut dyn ExitHandler, n: u64) -> StopReason {
        self.run_or_step(ram, exits, Some(n))
    }

    /// # Panics
    /// If KVM cannot read the vCPU's registers, which [`KvmEngine::new`] checked it can:
    /// only a vCPU fd gone bad would.
    fn state(&self) -> Result<CpuState, EngineError> {
        self.read_state()
            .map(|k| state::from_kvm(&k))
            .map_err(|reason| EngineError::Host {
                engine: "kvm",
                what: "read the vCPU state".into(),
                reason,
            })
    }

    fn set_state(&mut self, state: &CpuState) -> Result<(), EngineError> {
        let result = self.write_state(state);
        // Whether the guest could take an interrupt was KVM's answer for the old state;
        // until the next exit answers afresh, interrupts wait for a window exit.
        self.vcpu.get_kvm_run().ready_for_interrupt_injection = 0;
        let Err(reason) = result else {
            self.rejected_state = None;
            return Ok(());
        };
        let dump = format!("{reason}\n{}", state.dump());
        // The vCPU may hold part of the state: it must not run until a state is taken.
        self.rejected_state = Some(format!("KVM rejected the CPU state: {dump}"));
        Err(EngineError::StateRejected {
            engine: "kvm",
            reason: dump,
        })
    }

    /// Popek's breakpoints and watchpoints go to the debug registers KVM keeps for the
    /// host (see the `debug` module): at most four, watched ranges of 1, 2, 4 or 8
    /// aligned bytes.
    fn set_debug(&mut self, debug: &DebugConfig) -> Result<(), EngineError> {
        let new = GuestDebug::new(debug)?;
        if !new.is_empty() || self.debug_on {
            self.vcpu
                .set_guest_debug(&new.control(false, true))
                .map_err(|e| EngineError::Host {
                    engine: "kvm",
                    what: "set breakpoints (KVM_SET_GUEST_DEBUG)".into(),
                    reason: e.to_string(),
                })?;
            self.debug_on = !new.is_empty();
        }
        self.debug = new;
        Ok(())
    }

    /// The instructions single steps ran: KVM counts no others.
    fn instructions_retired(&self) -> u64 {
        self.stepped
    }

    /// [`Engine::step`] single-steps, so it is exact.
    fn can_step(&self) -> bool {
        true
    }

    fn counts_instructions(&self) -> bool {
        false
    }

    /// VMCALL never reaches user space under KVM (the host kernel handles it): the
    /// stubs trap with an OUT to the hypercall port, an I/O exit that does.
    fn hypercall_trap(&self) -> HypercallTrap {
        HypercallTrap::PortOut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_dev_kvm_says_so() {
        let err = KvmError::Unavailable(kvm_ioctls::Error::new(libc::ENOENT));
        assert_eq!(
            err.to_string(),
            "/dev/kvm not available: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn deviations_list_changed_and_added_leaves_only() {
        let mut entries = cpuid_table().as_slice().to_vec();
        entries[1].edx |= 1 << 23; // MMX, which the table does not offer
        entries.push(kvm_cpuid_entry2 {
            function: 0xD,
            index: 1,
            eax: 7,
            ..Default::default()
        });
        let installed = CpuId::from_entries(&entries).unwrap();
        let found = cpuid_deviations(&installed);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].leaf, cpuid::LEAF_FEATURES);
        assert_eq!(found[0].table, cpuid::cpuid(cpuid::LEAF_FEATURES));
        assert_eq!(found[0].kvm[3], cpuid::FEATURES_EDX | 1 << 23);
        assert_eq!((found[1].leaf, found[1].index), (0xD, 1));
        assert_eq!(found[1].table, [0; 4]);
        assert!(cpuid_deviations(&cpuid_table()).is_empty());
    }
}

//! The numbers of Popek's para-virtualization ABI, as `docs/guest-abi.md` documents them
//! and `test-roms/guest/lib/popek_pv.h` spells them for guests. A change here is a
//! change of the ABI: the three must agree.

/// CPUID leaf: the highest hypervisor leaf in EAX, the signature in EBX, ECX, EDX.
pub const LEAF_SIGNATURE: u32 = 0x4000_0000;
/// CPUID leaf: EAX = ABI version, EBX = hypercall-page MSR, ECX = number of hypercalls.
pub const LEAF_INTERFACE: u32 = 0x4000_0001;
/// The signature, in EBX, ECX, EDX order.
pub const SIGNATURE: &[u8; 12] = b"PopekPopekVM";
/// The ABI version leaf [`LEAF_INTERFACE`] reports.
pub const VERSION: u32 = 1;

/// The MSR a guest writes the guest-physical address of a free page to (page aligned,
/// inside RAM); the VMM fills it with the hypercall stubs. Writing 0 forgets the page.
/// Outside the ranges Intel, AMD, Hyper-V (0x4000_0000) and KVM (0x4B56_4D00) use.
pub const MSR_HYPERCALL_PAGE: u32 = 0x504F_5000;

/// Bytes per stub in the hypercall page: stub `n` starts at `n * STUB_SIZE`.
pub const STUB_SIZE: usize = 32;
/// Where in the hypercall page the VMM keeps the IDT it builds from the trap table.
pub const IDT_OFFSET: u64 = 0x800;
/// Bytes of that IDT: 256 eight-byte gates.
pub const IDT_SIZE: u64 = 256 * 8;

/// The port whose OUT the KVM stubs use as their trap (see [`super::HypercallTrap`]).
pub const HYPERCALL_PORT: u8 = 0xE5;

// ---- hypercall numbers (EAX) ----

/// Console write (EBX = linear address, ECX = length): the bytes go to the console;
/// returns the length.
pub const HC_CONSOLE_WRITE: u32 = 0;
/// Shutdown (EBX = status): the run ends as a debug-exit write of the status would.
pub const HC_SHUTDOWN: u32 = 1;
/// Scheduler (EBX = [`SCHED_YIELD`] or [`SCHED_BLOCK`]).
pub const HC_SCHED_OP: u32 = 2;
/// One-shot timer (EBX = low, ECX = high 32 bits of a delay in nanoseconds; 0
/// cancels): when it expires, [`EVENT_TIMER`] becomes pending.
pub const HC_SET_TIMER: u32 = 3;
/// Batched page-table update (EBX = linear address of an array of [`MmuUpdate`]
/// entries, ECX = count): validated whole, applied whole or not at all; flushes the TLB.
pub const HC_MMU_UPDATE: u32 = 4;
/// Trap-table registration (EBX = linear address of an array of [`TrapInfo`]
/// entries, ECX = count): the VMM builds the IDT from it and loads IDTR.
pub const HC_SET_TRAP_TABLE: u32 = 5;
/// Event callback registration (EBX = linear address of the callback; 0 = none).
pub const HC_SET_CALLBACK: u32 = 6;
/// Shared-info page registration (EBX = guest-physical address of a page).
pub const HC_SHARED_INFO: u32 = 7;
/// Page-table base (EBX = guest-physical address of a page directory): validated like
/// an update of every entry, then loaded into CR3 with paging (and CR0.WP) turned on.
pub const HC_MMU_BASE: u32 = 8;
/// How many hypercalls there are (numbers 0 to `HC_COUNT - 1`).
pub const HC_COUNT: u32 = 9;

/// [`HC_SCHED_OP`]: give up the processor; returns at once.
pub const SCHED_YIELD: u32 = 0;
/// [`HC_SCHED_OP`]: unmask events and wait until one is pending.
pub const SCHED_BLOCK: u32 = 1;

// ---- errors (EAX, negated) ----

/// The caller is not the guest kernel (CPL > 0).
pub const EPERM: i32 = 1;
/// Something the call needs is not registered yet (shared-info or hypercall page).
pub const ENOENT: i32 = 2;
/// A page-table update would map memory outside guest RAM, or give ring 3 a page the
/// VMM relies on.
pub const EACCES: i32 = 13;
/// A pointer argument is not mapped, or not in RAM.
pub const EFAULT: i32 = 14;
/// An argument is malformed.
pub const EINVAL: i32 = 22;
/// Blocking with nothing that could ever wake the guest.
pub const EDEADLK: i32 = 35;
/// No such hypercall, or not in the guest's current mode.
pub const ENOSYS: i32 = 38;

// ---- shared-info page ----

/// Shared info: u32, nonzero while events are masked (the virtual interrupt flag,
/// inverted; written by the guest instead of CLI/STI, set by the VMM when it enters the
/// callback).
pub const SHARED_EVENTS_MASKED: u64 = 0;
/// Shared info: u32 bitmap of pending events (set by the VMM, cleared by the guest).
pub const SHARED_EVENTS_PENDING: u64 = 4;
/// Shared info: u64 virtual time in nanoseconds at the last VMM entry.
pub const SHARED_TIME_NS: u64 = 8;
/// Event bit: the one-shot timer expired.
pub const EVENT_TIMER: u32 = 1 << 0;

// ---- structures ----

/// Bytes of one [`HC_MMU_UPDATE`] entry: u64 guest-physical address of the entry, u64
/// new value.
pub const MMU_UPDATE_SIZE: u64 = 16;
/// The most entries one [`HC_MMU_UPDATE`] takes.
pub const MMU_UPDATE_MAX: u32 = 512;
/// Bytes of one [`HC_SET_TRAP_TABLE`] entry: u8 vector, u8 flags, u16 code selector,
/// u32 handler offset.
pub const TRAP_INFO_SIZE: u64 = 8;
/// Trap flags: the DPL of the gate (bits 0-1): which rings may reach it with INT n.
pub const TRAP_DPL_MASK: u8 = 0x3;
/// Trap flags: a trap gate (interrupts stay enabled); otherwise an interrupt gate.
pub const TRAP_KEEP_IF: u8 = 0x4;
/// The most bytes one [`HC_CONSOLE_WRITE`] prints.
pub const CONSOLE_WRITE_MAX: u32 = 4096;

/// One [`HC_MMU_UPDATE`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmuUpdate {
    /// Guest-physical address of the page-table entry.
    pub ptr: u64,
    /// Its new value.
    pub val: u64,
}

/// One [`HC_SET_TRAP_TABLE`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrapInfo {
    /// The vector.
    pub vector: u8,
    /// [`TRAP_DPL_MASK`] and [`TRAP_KEEP_IF`].
    pub flags: u8,
    /// The handler's code selector: a present ring-0 code segment.
    pub cs: u16,
    /// The handler's offset in that segment.
    pub handler: u32,
}

/// The name of hypercall `nr`, for statistics and traces.
pub fn name(nr: u32) -> &'static str {
    match nr {
        HC_CONSOLE_WRITE => "console-write",
        HC_SHUTDOWN => "shutdown",
        HC_SCHED_OP => "sched-op",
        HC_SET_TIMER => "set-timer",
        HC_MMU_UPDATE => "mmu-update",
        HC_SET_TRAP_TABLE => "set-trap-table",
        HC_SET_CALLBACK => "set-callback",
        HC_SHARED_INFO => "shared-info",
        HC_MMU_BASE => "mmu-base",
        _ => "unknown",
    }
}

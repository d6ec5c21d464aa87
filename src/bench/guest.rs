//! The guests of the KVM benchmarks: a counted loop in ring 0 or ring 3, in 32-bit
//! protected mode or 64-bit long mode, built here as Multiboot images, so the very same
//! file runs under Popek and under `qemu-system-x86_64 -kernel`.
//!
//! The image is a flat binary with a Multiboot header using the "a.out kludge" (the
//! header gives the load and entry addresses, so no ELF is needed):
//!
//! | offset  | holds |
//! |---------|-------|
//! | 0       | the Multiboot header |
//! | 0x20    | the 32-bit prologue: GDT, stack, a start marker on COM1, and for ring 3 the drop to ring 3; or, for long mode, the switch to it |
//! | 0x80    | long mode only: the 64-bit prologue: TSS, the start marker, and for ring 3 the drop to ring 3 |
//! | 0x100   | the loop, then `out 0xF4, eax` with EAX = 0: debug-exit, status 0 (64-bit ring 3: SYSCALL first) |
//! | 0x140   | long mode only: where SYSCALL enters ring 0, to exit |
//! | 0x180   | the GDTR pseudo-descriptor, then the GDT |
//! | 0x200   | long mode only: the TSS and its I/O permission bitmap |
//! | 0x1000  | long mode only: the page tables (PML4, PDPT, page directory) |
//!
//! Everything ring 0 does is kept to a few instructions, because KVM may emulate ring-0
//! code (PVM does, at about a microsecond an instruction): the page tables, GDT and TSS
//! are data in the image rather than built by the guest.
//!
//! No IDT: interrupts stay disabled and the loop raises no exception, so the guest never
//! needs one; anything unexpected ends in a triple fault, which the benchmark reports as
//! a failed run.

use emu_core::cpu::{cr0, cr4, efer, msr, rflags};
use emu_core::pv::abi as pv;
use iced_x86::code_asm::*;

/// Where a Multiboot kernel is loaded: 1 MiB.
const LOAD_AT: u32 = 0x10_0000;
/// The Multiboot v1 header magic.
const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;
/// Multiboot header flag: the address fields are valid (the "a.out kludge").
const MULTIBOOT_AOUT_KLUDGE: u32 = 1 << 16;
/// The header: magic, flags, checksum, then header, load, load-end, BSS-end and entry
/// addresses.
const HEADER_SIZE: u32 = 32;
/// Where each part of the image starts (see the module documentation).
const PROLOGUE_AT: u32 = LOAD_AT + HEADER_SIZE;
const PROLOGUE64_AT: u32 = LOAD_AT + 0x80;
const LOOP_AT: u32 = LOAD_AT + 0x100;
const SYSCALL_AT: u32 = LOAD_AT + 0x140;
const GDTR_AT: u32 = LOAD_AT + 0x180;
const GDT_AT: u32 = GDTR_AT + 8;
const TSS_AT: u32 = LOAD_AT + 0x200;
const PML4_AT: u32 = LOAD_AT + 0x1000;
const PDPT_AT: u32 = PML4_AT + PAGE_SIZE;
const PD_AT: u32 = PDPT_AT + PAGE_SIZE;
/// A page table's size (and alignment).
const PAGE_SIZE: u32 = 0x1000;
/// The GDT of protected mode, in the layout SYSEXIT assumes (user code and data 16 and
/// 24 bytes above the kernel code): null, then flat 4 GiB 32-bit segments — kernel code
/// (0x08, the selector Multiboot leaves in CS), kernel data (0x10), user code (0x18),
/// user data (0x20).
const GDT32: [u64; 5] = [
    0,
    0x00CF_9A00_0000_FFFF,
    0x00CF_9200_0000_FFFF,
    0x00CF_FA00_0000_FFFF,
    0x00CF_F200_0000_FFFF,
];
/// The kernel code selector: in protected mode the one IA32_SYSENTER_CS holds for
/// SYSEXIT, in long mode the 64-bit one SYSCALL loads.
const KERNEL_CS: u32 = 0x08;
/// The GDT of long mode, in the layout SYSCALL and SYSRET assume (kernel data 8 bytes
/// above the kernel code; user data and 64-bit user code 8 and 16 bytes above
/// [`SYSRET_BASE`]): null, 64-bit kernel code (0x08), kernel data (0x10, the selector
/// Multiboot leaves in the data registers), user data (0x18), 64-bit user code (0x20),
/// then the TSS's 16-byte descriptor (0x28).
const GDT64: [u64; 7] = [
    0,
    0x00AF_9A00_0000_FFFF,
    0x00CF_9200_0000_FFFF,
    0x00CF_F200_0000_FFFF,
    0x00AF_FA00_0000_FFFF,
    TSS_DESCRIPTOR_LOW,
    0, // the TSS's base above 4 GiB
];
/// The selector base SYSRET adds 8 (for SS) and 16 (for the 64-bit CS) to, in STAR.
const SYSRET_BASE: u32 = 0x10;
/// The TSS selector.
const TSS_SELECTOR: u32 = 0x28;
/// A 64-bit TSS's size, without an I/O permission bitmap.
const TSS_SIZE: u32 = 104;
/// Where the TSS's I/O-bitmap offset field is.
const TSS_IOMAP_FIELD: usize = 102;
/// The ports the I/O permission bitmap lets the guest use: all below 0x400, which covers
/// every port it writes. Ring 3 has IOPL 3, so a processor never reads the bitmap; but
/// PVM, which runs long mode's code on the host's ring 3 and emulates its OUTs, checks
/// the bitmap regardless of IOPL (seen on this project's host: an OUT to a port outside
/// it faults, even in ring 0 after SYSCALL).
const IO_BITMAP_PORTS: u32 = 0x400;
const IO_BITMAP_SIZE: u32 = IO_BITMAP_PORTS / 8;
/// The TSS's limit: the bitmap is followed by a byte of all ones, which the processor
/// may read with the last byte of the bitmap (SDM vol. 1, "I/O Permission Bit Map").
const TSS_LIMIT: u32 = TSS_SIZE + IO_BITMAP_SIZE;
/// The low half of the TSS descriptor: base [`TSS_AT`], limit, type 9 (available 64-bit
/// TSS), present.
const TSS_DESCRIPTOR_LOW: u64 = TSS_LIMIT as u64
    | ((TSS_AT as u64 & 0xFF_FFFF) << 16)
    | (0x89 << 40)
    | ((TSS_AT as u64 >> 24) << 56);
/// STAR's upper half, as WRMSR takes it in EDX: the SYSRET selector base above the
/// SYSCALL one.
const STAR_HIGH: u32 = (SYSRET_BASE << 16) | KERNEL_CS;
/// Page-table entry bits: present, writable, user-accessible (the whole map is, so ring
/// 3 reaches its loop), and in a page directory entry a 2 MiB page.
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PDE_LARGE: u64 = 1 << 7;
const PTE_TABLE: u64 = PTE_PRESENT | PTE_WRITABLE | PTE_USER;
/// The page tables: the PML4's and the PDPT's first entries lead to the page directory,
/// whose first entry identity-maps the first 2 MiB, which hold all the guest touches: its
/// image (it uses no stack).
const PAGE_TABLES: [(u32, u64); 3] = [
    (PML4_AT, PDPT_AT as u64 | PTE_TABLE),
    (PDPT_AT, PD_AT as u64 | PTE_TABLE),
    (PD_AT, PTE_TABLE | PDE_LARGE),
];
/// Stacks, in conventional memory below the image.
const KERNEL_STACK: u32 = 0x9_0000;
const USER_STACK: u32 = 0x8_0000;
/// The port the port-I/O loop writes: the POST-code port, which nothing on popek-pc
/// claims (QEMU's PC has a dummy device there that ignores writes).
pub const UNCLAIMED_PORT: u16 = 0x80;
/// isa-debug-exit's port, on popek-pc and in QEMU with `-device isa-debug-exit,iobase=0xf4`.
const DEBUG_EXIT_PORT: u8 = devices::DEBUG_EXIT_BASE as u8;
/// COM1's transmit register.
const COM1_DATA: u16 = devices::COM1_BASE as u16;
/// What the guest writes to COM1 as its loop starts, so a timer outside can leave the
/// VMM's start-up out.
pub const START_MARKER: u8 = b'>';

/// The processor mode the loop runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 32-bit protected mode without paging, where Multiboot leaves the guest.
    Protected,
    /// 64-bit long mode, with identity-mapping page tables.
    Long,
}

impl Mode {
    /// The code's width, for labels and the assembler.
    pub fn bits(self) -> u32 {
        match self {
            Mode::Protected => 32,
            Mode::Long => 64,
        }
    }
}

/// Where the loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    /// Ring 0, where Multiboot leaves the guest.
    Kernel,
    /// Ring 3, entered with SYSEXIT in protected mode (which KVM's instruction emulator
    /// implements, unlike a protected-mode IRET) and SYSRET in long mode.
    User,
}

impl Ring {
    /// The privilege level, for labels.
    pub fn level(self) -> u8 {
        match self {
            Ring::Kernel => 0,
            Ring::User => 3,
        }
    }
}

/// What one iteration of the loop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `dec ecx; jnz`: two instructions of computation.
    Compute,
    /// `out dx, al; dec ecx; jnz`: one port-I/O exit to the VMM.
    PortIo,
    /// `xor ebx, ebx; call STUB; dec ecx; jnz`: one hypercall (SCHED_YIELD, which does
    /// nothing) through the hypercall page the guest registers before the loop. 32-bit
    /// ring 0 only: hypercalls are the kernel's.
    Hypercall,
}

/// Where the hypercall loop's page of stubs goes: free RAM below the stacks.
const HYPERCALL_PAGE: u32 = 0x6_0000;

/// Instructions per iteration of [`Body::Compute`].
pub const COMPUTE_INSNS: u64 = 2;

/// A Multiboot image that runs `iterations` (at least 1) iterations of `body` in `mode`
/// and `ring`, then exits with status 0.
pub fn loop_image(mode: Mode, ring: Ring, body: Body, iterations: u32) -> Vec<u8> {
    assert!(iterations > 0, "DEC/JNZ would make 0 iterations 2^32");
    assert!(
        body != Body::Hypercall || (mode, ring) == (Mode::Protected, Ring::Kernel),
        "hypercalls are made by a 32-bit kernel"
    );
    let gdt: &[u64] = match mode {
        Mode::Protected => &GDT32,
        Mode::Long => &GDT64,
    };
    let end = match mode {
        Mode::Protected => GDT_AT + 8 * gdt.len() as u32,
        Mode::Long => PD_AT + PAGE_SIZE,
    };
    let mut image = multiboot_header(end);
    place(
        &mut image,
        PROLOGUE_AT,
        &assemble(32, PROLOGUE_AT, |a| prologue(a, mode, ring)),
    );
    if mode == Mode::Long {
        place(
            &mut image,
            PROLOGUE64_AT,
            &assemble(64, PROLOGUE64_AT, |a| prologue64(a, ring)),
        );
    }
    place(
        &mut image,
        LOOP_AT,
        &assemble(mode.bits(), LOOP_AT, |a| {
            counted_loop(a, body, iterations)?;
            if (mode, ring) == (Mode::Long, Ring::User) {
                // The exit works from ring 3 too (IOPL 3), but the round trip through
                // ring 0 is what a 64-bit user program's exit looks like.
                a.syscall()
            } else {
                debug_exit(a)
            }
        }),
    );
    if mode == Mode::Long {
        place(
            &mut image,
            SYSCALL_AT,
            &assemble(64, SYSCALL_AT, debug_exit),
        );
    }
    let limit = (8 * gdt.len() - 1) as u16;
    let gdtr = [&limit.to_le_bytes()[..], &GDT_AT.to_le_bytes()].concat();
    place(&mut image, GDTR_AT, &gdtr);
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    place(&mut image, GDT_AT, &gdt_bytes);
    if mode == Mode::Long {
        // The stack pointers stay zero: no interrupt or exception enters ring 0. The
        // bitmap follows the TSS and lets every port of IO_BITMAP_PORTS through.
        let mut tss = vec![0; (TSS_LIMIT + 1) as usize];
        tss[TSS_IOMAP_FIELD..TSS_IOMAP_FIELD + 2].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
        tss[TSS_LIMIT as usize] = 0xFF;
        place(&mut image, TSS_AT, &tss);
        for (at, entry) in PAGE_TABLES {
            place(&mut image, at, &entry.to_le_bytes());
        }
        image.resize((end - LOAD_AT) as usize, 0);
    }
    image
}

/// The Multiboot header of an image whose bytes end at guest address `end`.
fn multiboot_header(end: u32) -> Vec<u8> {
    let flags = MULTIBOOT_AOUT_KLUDGE;
    let checksum = 0u32.wrapping_sub(MULTIBOOT_MAGIC).wrapping_sub(flags);
    // Header, load, load-end, BSS-end (no BSS) and entry addresses.
    [
        MULTIBOOT_MAGIC,
        flags,
        checksum,
        LOAD_AT,
        LOAD_AT,
        end,
        end,
        PROLOGUE_AT,
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect()
}

/// Copies `bytes` into `image` at guest address `at`, which must lie past what the image
/// holds so far (each part fits in its slot).
fn place(image: &mut Vec<u8>, at: u32, bytes: &[u8]) {
    let offset = (at - LOAD_AT) as usize;
    assert!(
        image.len() <= offset,
        "the part before {at:#x} overflows its slot"
    );
    image.resize(offset, 0);
    image.extend_from_slice(bytes);
}

/// `bits`-bit code emitted by `emit`, assembled at `ip`.
fn assemble(
    bits: u32,
    ip: u32,
    emit: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).expect("a 32- or 64-bit assembler");
    emit(&mut a).expect("the benchmark guest assembles");
    a.assemble(ip.into()).expect("the benchmark guest encodes")
}

/// Multiboot's entry, in 32-bit protected mode. It loads the GDT, then:
/// - for a protected-mode loop, sets up a stack, writes [`START_MARKER`] and goes to the
///   loop: in ring 0 with a jump, in ring 3 with SYSEXIT (IOPL 3 first, so the loop and
///   the exit may use OUT);
/// - for long mode, switches to it the way the SDM describes (PAE, the PML4, EFER.LME —
///   with SCE, for SYSCALL and SYSRET — then paging, which activates long mode) and
///   jumps into the 64-bit code segment. It needs no stack.
fn prologue(a: &mut CodeAssembler, mode: Mode, ring: Ring) -> Result<(), IcedError> {
    a.lgdt(ptr(u64::from(GDTR_AT)))?;
    match (mode, ring) {
        (Mode::Protected, Ring::Kernel) => {
            a.mov(esp, KERNEL_STACK)?;
            start_marker(a)?;
            a.jmp(u64::from(LOOP_AT))
        }
        (Mode::Protected, Ring::User) => {
            a.mov(esp, KERNEL_STACK)?;
            start_marker(a)?;
            a.mov(ecx, msr::SYSENTER_CS)?;
            a.mov(eax, KERNEL_CS)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.pushfd()?;
            a.or(dword_ptr(esp), rflags::IOPL as u32)?;
            a.popfd()?;
            a.mov(ecx, USER_STACK)?;
            a.mov(edx, LOOP_AT)?;
            a.sysexit()
        }
        (Mode::Long, _) => {
            a.mov(eax, cr4::PAE as u32)?;
            a.mov(cr4, eax)?;
            a.mov(eax, PML4_AT)?;
            a.mov(cr3, eax)?;
            a.mov(ecx, msr::EFER)?;
            a.mov(eax, (efer::LME | efer::SCE) as u32)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.mov(eax, cr0)?;
            a.or(eax, cr0::PG as u32)?;
            a.mov(cr0, eax)?;
            a.jmp_far(KERNEL_CS as u16, PROLOGUE64_AT)
        }
    }
}

/// Long mode's 64-bit prologue: loads TR (hardware virtualization will not enter a
/// long-mode guest whose TR is not a 64-bit TSS, Multiboot leaves TR unset, and PVM
/// needs the TSS's I/O permission bitmap), writes [`START_MARKER`], then goes to the
/// loop: in ring 0 with a jump, in ring 3 with SYSRET (with IOPL 3, so the port-I/O loop
/// may use OUT), after pointing STAR and LSTAR at the selectors and the exit for the
/// SYSCALL back.
fn prologue64(a: &mut CodeAssembler, ring: Ring) -> Result<(), IcedError> {
    a.mov(eax, TSS_SELECTOR)?;
    a.ltr(ax)?;
    start_marker(a)?;
    match ring {
        Ring::Kernel => a.jmp(u64::from(LOOP_AT)),
        Ring::User => {
            a.mov(ecx, msr::STAR)?;
            a.xor(eax, eax)?;
            a.mov(edx, STAR_HIGH)?;
            a.wrmsr()?;
            a.mov(ecx, msr::LSTAR)?;
            a.mov(eax, SYSCALL_AT)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.mov(ecx, LOOP_AT)?;
            a.mov(r11d, (rflags::FIXED | rflags::IOPL) as u32)?;
            a.sysretq()
        }
    }
}

/// [`START_MARKER`] on COM1, in 32- or 64-bit code.
fn start_marker(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(dx, u32::from(COM1_DATA))?;
    a.mov(al, u32::from(START_MARKER))?;
    a.out(dx, al)
}

/// `iterations` iterations of `body`. The same code in 32- and 64-bit mode (where `dec
/// ecx` has another encoding, but the same effect).
fn counted_loop(a: &mut CodeAssembler, body: Body, iterations: u32) -> Result<(), IcedError> {
    let mut top = a.create_label();
    if body == Body::Hypercall {
        a.mov(ecx, pv::MSR_HYPERCALL_PAGE)?;
        a.mov(eax, HYPERCALL_PAGE)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
    }
    a.mov(ecx, iterations)?;
    a.mov(dx, u32::from(UNCLAIMED_PORT))?;
    a.set_label(&mut top)?;
    match body {
        Body::Compute => {}
        Body::PortIo => a.out(dx, al)?,
        Body::Hypercall => {
            a.xor(ebx, ebx)?; // SCHED_YIELD
            let stub = HYPERCALL_PAGE + pv::HC_SCHED_OP * pv::STUB_SIZE as u32;
            a.call(u64::from(stub))?;
        }
    }
    a.dec(ecx)?;
    a.jnz(top)
}

/// Debug-exit with status 0.
fn debug_exit(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.xor(eax, eax)?;
    a.out(i32::from(DEBUG_EXIT_PORT), eax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine;
    use crate::rom::RomImage;
    use crate::run::boot;
    use emu_core::exit::StopReason;
    use test_roms::Boot;

    /// Far more than 1000 iterations and the prologues take: a guest stuck in a loop
    /// fails rather than hangs.
    const MAX_INSTRUCTIONS: u64 = 1_000_000;

    #[test]
    fn the_image_has_a_multiboot_header_giving_its_addresses() {
        let image = loop_image(Mode::Protected, Ring::User, Body::PortIo, 5);
        let word = |i: usize| u32::from_le_bytes(image[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(word(0), MULTIBOOT_MAGIC);
        assert_eq!(word(0).wrapping_add(word(1)).wrapping_add(word(2)), 0);
        assert_eq!((word(3), word(4)), (LOAD_AT, LOAD_AT));
        assert_eq!(
            word(5) - word(4),
            image.len() as u32,
            "the whole file is loaded"
        );
        assert_eq!(word(7), PROLOGUE_AT);
        let gdt_at = (GDT_AT - LOAD_AT) as usize;
        assert_eq!(image[gdt_at + 8..gdt_at + 16], GDT32[1].to_le_bytes());
    }

    /// Every variant runs to its clean exit under the interpreter, so the images are
    /// right before KVM (or a host's emulation of them) is involved.
    #[test]
    fn every_variant_exits_cleanly_under_the_interpreter() {
        for mode in [Mode::Protected, Mode::Long] {
            for ring in [Ring::Kernel, Ring::User] {
                for body in [Body::Compute, Body::PortIo, Body::Hypercall] {
                    if body == Body::Hypercall && (mode, ring) != (Mode::Protected, Ring::Kernel) {
                        continue;
                    }
                    let rom = RomImage {
                        name: "bench".into(),
                        image: loop_image(mode, ring, body, 1000).into(),
                        boot: Boot::Multiboot,
                    };
                    let mut machine = boot(
                        &rom,
                        "",
                        4,
                        Box::new(std::io::sink()),
                        engine::interpreter(),
                    )
                    .expect("the image loads");
                    let outcome = machine.run(MAX_INSTRUCTIONS);
                    assert_eq!(
                        outcome.stop,
                        StopReason::Exited(0),
                        "{}-bit ring {} {body:?}",
                        mode.bits(),
                        ring.level()
                    );
                }
            }
        }
    }
}

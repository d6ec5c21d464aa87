//! The guests of the KVM benchmarks: a counted loop in ring 0 or ring 3, built here as
//! Multiboot images, so the very same file runs under Popek and under
//! `qemu-system-x86_64 -kernel`.
//!
//! The image is a flat binary with a Multiboot header using the "a.out kludge" (the
//! header gives the load and entry addresses, so no ELF is needed):
//!
//! | offset  | holds |
//! |---------|-------|
//! | 0       | the Multiboot header |
//! | 0x20    | the ring-0 prologue: stack, GDT, and for ring 3 the drop to ring 3 |
//! | 0x100   | a start marker on COM1, the loop, then `out 0xF4, eax` with EAX = 0: debug-exit, status 0 |
//! | 0x180   | the GDTR pseudo-descriptor, then the GDT |
//!
//! No IDT and no TSS: interrupts stay disabled and the loop raises no exception, so
//! the guest never needs them; anything unexpected ends in a triple fault, which the
//! benchmark reports as a failed run.

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
const LOOP_AT: u32 = LOAD_AT + 0x100;
const GDTR_AT: u32 = LOAD_AT + 0x180;
const GDT_AT: u32 = GDTR_AT + 8;
/// The GDT, in the layout SYSEXIT assumes (user code and data 16 and 24 bytes above the
/// kernel code): null, then flat 4 GiB 32-bit segments — kernel code (0x08, the
/// selector Multiboot leaves in CS), kernel data (0x10), user code (0x18), user data
/// (0x20).
const GDT: [u64; 5] = [
    0,
    0x00CF_9A00_0000_FFFF,
    0x00CF_9200_0000_FFFF,
    0x00CF_FA00_0000_FFFF,
    0x00CF_F200_0000_FFFF,
];
/// The kernel code selector, which IA32_SYSENTER_CS holds for SYSEXIT.
const KERNEL_CS: u32 = 0x08;
/// IA32_SYSENTER_CS.
const MSR_SYSENTER_CS: u32 = 0x174;
/// Stacks, in conventional memory below the image.
const KERNEL_STACK: u32 = 0x9_0000;
const USER_STACK: u32 = 0x8_0000;
/// EFLAGS.IOPL = 3: ring 3 may use IN and OUT, for the port-I/O loop and the exit.
const EFLAGS_IOPL3: u32 = 3 << 12;
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

/// Where the loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    /// Ring 0, where Multiboot leaves the guest.
    Kernel,
    /// Ring 3, entered with SYSEXIT (which KVM's instruction emulator implements, unlike
    /// a protected-mode IRET).
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
}

/// Instructions per iteration of [`Body::Compute`].
pub const COMPUTE_INSNS: u64 = 2;

/// A Multiboot image that runs `iterations` (at least 1) iterations of `body` in
/// `ring`, then exits with status 0.
pub fn loop_image(ring: Ring, body: Body, iterations: u32) -> Vec<u8> {
    assert!(iterations > 0, "DEC/JNZ would make 0 iterations 2^32");
    let mut image = multiboot_header(GDT_AT + 8 * GDT.len() as u32);
    place(
        &mut image,
        PROLOGUE_AT,
        &assemble(PROLOGUE_AT, |a| prologue(a, ring)),
    );
    place(
        &mut image,
        LOOP_AT,
        &assemble(LOOP_AT, |a| counted_loop(a, body, iterations)),
    );
    let limit = (8 * GDT.len() - 1) as u16;
    let gdtr = [&limit.to_le_bytes()[..], &GDT_AT.to_le_bytes()].concat();
    place(&mut image, GDTR_AT, &gdtr);
    let gdt: Vec<u8> = GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    place(&mut image, GDT_AT, &gdt);
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

/// 32-bit code emitted by `emit`, assembled at `ip`.
fn assemble(ip: u32, emit: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).expect("32-bit assembler");
    emit(&mut a).expect("the benchmark guest assembles");
    a.assemble(ip.into()).expect("the benchmark guest encodes")
}

/// Sets up a stack and the GDT, and goes to the loop: in ring 0 with a jump, in ring 3
/// with SYSEXIT (IOPL 3 first, so the loop and the exit may use OUT).
fn prologue(a: &mut CodeAssembler, ring: Ring) -> Result<(), IcedError> {
    a.mov(esp, KERNEL_STACK)?;
    a.lgdt(ptr(u64::from(GDTR_AT)))?;
    match ring {
        Ring::Kernel => a.jmp(u64::from(LOOP_AT)),
        Ring::User => {
            a.mov(ecx, MSR_SYSENTER_CS)?;
            a.mov(eax, KERNEL_CS)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.pushfd()?;
            a.or(dword_ptr(esp), EFLAGS_IOPL3)?;
            a.popfd()?;
            a.mov(ecx, USER_STACK)?;
            a.mov(edx, LOOP_AT)?;
            a.sysexit()
        }
    }
}

/// [`START_MARKER`] on COM1, `iterations` iterations of `body`, then debug-exit with
/// status 0.
fn counted_loop(a: &mut CodeAssembler, body: Body, iterations: u32) -> Result<(), IcedError> {
    let mut top = a.create_label();
    a.mov(dx, u32::from(COM1_DATA))?;
    a.mov(al, u32::from(START_MARKER))?;
    a.out(dx, al)?;
    a.mov(ecx, iterations)?;
    a.mov(dx, u32::from(UNCLAIMED_PORT))?;
    a.set_label(&mut top)?;
    if body == Body::PortIo {
        a.out(dx, al)?;
    }
    a.dec(ecx)?;
    a.jnz(top)?;
    a.xor(eax, eax)?;
    a.out(i32::from(DEBUG_EXIT_PORT), eax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_has_a_multiboot_header_giving_its_addresses() {
        let image = loop_image(Ring::User, Body::PortIo, 5);
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
        assert_eq!(image[gdt_at + 8..gdt_at + 16], GDT[1].to_le_bytes());
    }
}

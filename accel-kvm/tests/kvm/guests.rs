//! The test guests, hand-assembled. Each is small: under nested virtualization every
//! guest instruction may cost the host most of a microsecond.
//!
//! Guests whose final state two engines compare make sure the last instruction that
//! writes the flags defines all of them (CMP), since the interpreter and the hardware may
//! differ in the flags an instruction leaves undefined.

use crate::common::*;
use emu_core::cpuid;
use iced_x86::code_asm::*;

/// What [`hello`] prints.
pub const HELLO_TEXT: &[u8] = b"Hello from the KVM engine\n";
/// [`hello`]'s exit status.
pub const HELLO_STATUS: u32 = 42;

/// Prints [`HELLO_TEXT`] on COM1 and exits with [`HELLO_STATUS`].
pub fn hello() -> Guest {
    assemble(|a| {
        let mut putc = a.create_label();
        a.mov(esp, STACK_TOP)?;
        emit_print(a, putc, HELLO_TEXT)?;
        a.mov(eax, HELLO_STATUS)?;
        emit_exit_with_eax(a)?;
        emit_putc(a, &mut putc)?;
        Ok(vec![])
    })
}

/// [`summer`] adds 1..=SUM_TO.
pub const SUM_TO: u32 = 2000;
/// [`summer`] prints a letter every this many additions.
pub const LETTER_EVERY: u32 = 100;
/// [`summer`]'s result and exit status.
pub const SUM: u32 = SUM_TO * (SUM_TO + 1) / 2;
/// What [`summer`] prints: one letter per [`LETTER_EVERY`] additions, then a newline.
pub const SUMMER_TEXT: &[u8] = b"ABCDEFGHIJKLMNOPQRST\n";

/// Sums 1..=[`SUM_TO`] into EAX, printing a letter every [`LETTER_EVERY`] additions, and
/// exits with the sum: about 10,000 instructions with port I/O spread through them.
pub fn summer() -> Guest {
    assemble(|a| {
        let mut putc = a.create_label();
        let mut top = a.create_label();
        let mut next = a.create_label();
        a.mov(esp, STACK_TOP)?;
        a.xor(eax, eax)?;
        a.mov(ecx, 1)?;
        a.mov(edi, LETTER_EVERY)?;
        a.mov(ebp, u32::from(SUMMER_TEXT[0]))?;
        a.set_label(&mut top)?;
        a.add(eax, ecx)?;
        a.dec(edi)?;
        a.jnz(next)?;
        a.mov(edi, LETTER_EVERY)?;
        a.push(eax)?;
        a.mov(ebx, ebp)?;
        a.call(putc)?;
        a.pop(eax)?;
        a.inc(ebp)?;
        a.set_label(&mut next)?;
        a.inc(ecx)?;
        a.cmp(ecx, SUM_TO + 1)?;
        a.jne(top)?;
        a.push(eax)?;
        emit_print(a, putc, b"\n")?;
        a.pop(eax)?;
        a.cmp(eax, SUM)?;
        emit_exit_with_eax(a)?;
        emit_putc(a, &mut putc)?;
        Ok(vec![])
    })
}

/// A port nothing on popek-pc answers (the POST-code port).
pub const UNCLAIMED_PORT: u16 = 0x80;

/// A bit of everything an engine must agree on: MMIO to nowhere (write and read), IN from
/// an unclaimed port, the CPUID vendor string (printed), stack and arithmetic with carries;
/// exits with a value computed from all of it.
pub fn assorted() -> Guest {
    assemble(|a| {
        let mut putc = a.create_label();
        let mut vendor = a.create_label();
        a.mov(esp, STACK_TOP)?;
        a.mov(dword_ptr(MMIO_NOWHERE), 0x1234_5678)?;
        a.mov(esi, dword_ptr(MMIO_NOWHERE))?;
        a.mov(dx, u32::from(UNCLAIMED_PORT))?;
        a.in_(al, dx)?;
        a.movzx(edi, al)?;
        // The vendor string lies in EBX, EDX, ECX: push them so it reads in order.
        a.mov(eax, cpuid::LEAF_VENDOR)?;
        a.cpuid()?;
        a.push(ecx)?;
        a.push(edx)?;
        a.push(ebx)?;
        a.mov(ebp, esp)?;
        a.mov(ecx, cpuid::VENDOR.len() as u32)?;
        a.set_label(&mut vendor)?;
        a.mov(bl, byte_ptr(ebp))?;
        a.call(putc)?;
        a.inc(ebp)?;
        a.dec(ecx)?;
        a.jnz(vendor)?;
        emit_print(a, putc, b"\n")?;
        a.pop(ebx)?;
        a.pop(edx)?;
        a.pop(ecx)?;
        a.mov(eax, 0x8765_4321u32)?;
        a.xor(eax, ecx)?;
        a.neg(eax)?;
        a.add(eax, esi)?;
        a.adc(eax, edi)?;
        a.sub(eax, 0x7FFF_FFFF)?;
        a.sbb(eax, edx)?;
        a.cmp(eax, ebx)?;
        emit_exit_with_eax(a)?;
        emit_putc(a, &mut putc)?;
        Ok(vec![])
    })
}

/// Where [`cpuid_dump`] stores the registers of each leaf of [`cpuid::LEAVES`], 16 bytes
/// (EAX, EBX, ECX, EDX) a leaf.
pub const CPUID_DUMP: u32 = 0x8000;

/// Executes CPUID for every leaf of the shared table, stores the results at
/// [`CPUID_DUMP`], and halts.
pub fn cpuid_dump() -> Guest {
    assemble(|a| {
        a.mov(edi, CPUID_DUMP)?;
        for leaf in cpuid::LEAVES {
            a.mov(eax, leaf)?;
            a.xor(ecx, ecx)?;
            a.cpuid()?;
            a.mov(dword_ptr(edi), eax)?;
            a.mov(dword_ptr(edi + 4), ebx)?;
            a.mov(dword_ptr(edi + 8), ecx)?;
            a.mov(dword_ptr(edi + 12), edx)?;
            a.add(edi, 16)?;
        }
        a.hlt()?;
        Ok(vec![])
    })
}

/// What [`halts`] leaves in EAX.
pub const HALT_EAX: u32 = 7;

/// Sets EAX to [`HALT_EAX`] and halts; the label is the address after the HLT.
pub fn halts() -> Guest {
    assemble(|a| {
        let mut after = a.create_label();
        a.mov(eax, HALT_EAX)?;
        a.hlt()?;
        a.set_label(&mut after)?;
        a.nop()?;
        Ok(vec![after])
    })
}

/// Where [`triple_fault`] finds its IDT pseudo-descriptor (16-bit limit, 32-bit base):
/// in RAM nothing writes, so both are 0.
pub const EMPTY_IDT_DESCRIPTOR: u32 = 0x7000;

/// Loads an IDT with limit 0 and raises #UD: the CPU cannot deliver it, nor the #GP that
/// follows, nor the double fault — a triple fault.
///
/// UD2 rather than INT3: where KVM emulates ring-0 guest code instead of running it
/// (PVM, on this project's hosts), its instruction emulator has no protected-mode INT n
/// and the run ends in an internal error instead, while a #UD is delivered like any
/// exception.
pub fn triple_fault() -> Guest {
    assemble(|a| {
        a.lidt(ptr(EMPTY_IDT_DESCRIPTOR))?;
        a.ud2()?;
        Ok(vec![])
    })
}

/// EAX before [`reads`]' IN: only AL may change.
pub const READS_EAX: u32 = 0x1122_3344;

/// An IN from COM1's LSR, then a 32-bit MMIO load from nowhere, then HLT. The labels are
/// the addresses after the IN and after the load.
pub fn reads() -> Guest {
    assemble(|a| {
        let mut after_in = a.create_label();
        let mut after_load = a.create_label();
        a.mov(eax, READS_EAX)?;
        a.mov(dx, u32::from(COM1_LSR))?;
        a.in_(al, dx)?;
        a.set_label(&mut after_in)?;
        a.mov(ebx, dword_ptr(MMIO_NOWHERE))?;
        a.set_label(&mut after_load)?;
        a.hlt()?;
        Ok(vec![after_in, after_load])
    })
}

/// How many iterations [`out_loop`] makes.
pub const OUT_LOOP_COUNT: u32 = 100_000;

/// [`OUT_LOOP_COUNT`] iterations of DEC/JNZ, each with an OUT to an unclaimed port if
/// `with_out`, then HLT: the difference of the two is the cost of the port-I/O exits.
pub fn out_loop(with_out: bool) -> Guest {
    assemble(|a| {
        let mut top = a.create_label();
        a.mov(ecx, OUT_LOOP_COUNT)?;
        a.mov(dx, u32::from(UNCLAIMED_PORT))?;
        a.set_label(&mut top)?;
        if with_out {
            a.out(dx, al)?;
        }
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()?;
        Ok(vec![])
    })
}

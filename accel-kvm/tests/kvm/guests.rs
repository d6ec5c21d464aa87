//! The test guests, hand-assembled. Each is small: under nested virtualization every
//! guest instruction may cost the host most of a microsecond.
//!
//! Guests whose final state two engines compare make sure the last instruction that
//! writes the flags defines all of them (CMP), since the interpreter and the hardware may
//! differ in the flags an instruction leaves undefined.

use crate::common::*;
use emu_core::cpu::{fxsave, CpuState, DescriptorTable};
use emu_core::cpuid;
use emu_core::memory::GuestRam;
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

/// Where the timer guests keep their tick count.
pub const TICKS: u64 = 0x0F00;
/// Where [`install_descriptor_tables`] puts the GDT and the IDT.
const GDT_AT: u64 = 0x1000;
const IDT_AT: u64 = 0x2000;
/// Flat 4 GiB descriptors, 32-bit, DPL 0: execute/read code and read/write data, the
/// segments Multiboot leaves loaded as selectors 0x08 and 0x10.
const FLAT_CODE: u64 = 0x00CF_9A00_0000_FFFF;
const FLAT_DATA: u64 = 0x00CF_9200_0000_FFFF;
/// Selector of [`FLAT_CODE`].
const CODE_SELECTOR: u64 = 0x08;
/// A present 32-bit interrupt gate, DPL 0 (bits 40-47 of the gate descriptor).
const INTERRUPT_GATE: u64 = 0x8E;
/// The vector the master PIC is programmed to give IRQ 0 (the first after the
/// exceptions), and the slave's base.
pub const TIMER_VECTOR: u8 = 0x20;
const SLAVE_VECTORS: u8 = 0x28;
/// PIC programming: ICW1 (edge-triggered, cascade, ICW4 follows), ICW3 (the slave on
/// IRQ 2), ICW4 (8086 mode), the masks (only IRQ 0 on the master, the slave all masked).
const ICW1: u8 = devices::pic::ICW1_INIT | devices::pic::ICW1_IC4;
const ICW3_MASTER: u8 = 1 << devices::pic::CASCADE_IRQ;
const ICW3_SLAVE: u8 = devices::pic::CASCADE_IRQ;
const ICW4_8086: u8 = 1;
const MASK_ALL_BUT_IRQ0: u8 = 0xFE;
const MASK_ALL: u8 = 0xFF;
const PIC_MASTER_CMD: u16 = devices::PIC_MASTER_BASE as u16;
const PIC_SLAVE_CMD: u16 = devices::PIC_SLAVE_BASE as u16;
/// PIT control word: counter 0, low then high byte, mode 2 (rate generator), binary.
const PIT_CH0_RATE: u8 = 0x34;
const PIT_CH0: u16 = devices::PIT_BASE as u16;
const PIT_CONTROL: u16 = PIT_CH0 + devices::pit::CONTROL as u16;
/// [`timer`]'s tick rate: 100 Hz, a PC's classic HZ.
pub const TIMER_HZ: u64 = 100;
/// Ticks [`timer`] waits for in HLT, then in total (the rest spinning).
pub const HLT_TICKS: u32 = 3;
pub const ALL_TICKS: u32 = 5;
/// What [`timer`] prints.
pub const TIMER_TEXT: &[u8] = b"timer: 3 ticks in HLT, 5 in all\n";

/// Emits `out port, value` through AL.
fn outb(a: &mut CodeAssembler, port: u16, value: u8) -> Result<(), IcedError> {
    a.mov(al, u32::from(value))?;
    a.out(i32::from(port), al)
}

/// Programs the PIT for [`TIMER_HZ`] ticks on IRQ 0, which the PIC delivers as
/// [`TIMER_VECTOR`] to a handler (the label) that counts them at [`TICKS`]; waits for
/// [`HLT_TICKS`] of them with `sti; hlt`, then spins until [`ALL_TICKS`] (so only a host
/// timer can bring the ticks to a guest that makes no exits), prints [`TIMER_TEXT`] and
/// exits with 0. Ring 0 throughout, and few instructions but for the spinning. It needs
/// the tables of [`install_descriptor_tables`]. The handler returns with POPFD and RET:
/// see `emit_tick_handler`.
pub fn timer() -> Guest {
    assemble(|a| {
        let mut putc = a.create_label();
        let mut handler = a.create_label();
        let mut halt = a.create_label();
        let mut spin = a.create_label();
        a.mov(esp, STACK_TOP)?;
        let reload = (devices::Pit8254::FREQUENCY_HZ / TIMER_HZ) as u16;
        emit_timer_setup(a, reload, MASK_ALL_BUT_IRQ0)?;
        a.sti()?;
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.cmp(dword_ptr(TICKS), HLT_TICKS)?;
        a.jb(halt)?;
        a.set_label(&mut spin)?;
        a.cmp(dword_ptr(TICKS), ALL_TICKS)?;
        a.jb(spin)?;
        a.cli()?;
        emit_print(a, putc, TIMER_TEXT)?;
        a.xor(eax, eax)?;
        emit_exit_with_eax(a)?;
        emit_tick_handler(a, &mut handler)?;
        emit_putc(a, &mut putc)?;
        Ok(vec![handler])
    })
}

/// The PIT's slowest rate: a reload value of 0 counts 2^16 input clocks, 55 ms a tick.
pub const SLOWEST_TICK_MS: u64 = 55;

/// Programs the PIT for its slowest rate ([`SLOWEST_TICK_MS`]), halts with interrupts
/// enabled, and exits with the tick count: 1, woken by the first tick, or, with
/// `masked`, never (IRQ 0 stays masked at the PIC). Needs [`install_descriptor_tables`]
/// for the handler, the first label returned; the second is the instruction after HLT.
pub fn halt_for_tick(masked: bool) -> Guest {
    assemble(|a| {
        let mut handler = a.create_label();
        let mut woken = a.create_label();
        a.mov(esp, STACK_TOP)?;
        emit_timer_setup(a, 0, if masked { MASK_ALL } else { MASK_ALL_BUT_IRQ0 })?;
        a.sti()?;
        a.hlt()?;
        a.set_label(&mut woken)?;
        a.cli()?;
        a.mov(eax, dword_ptr(TICKS))?;
        emit_exit_with_eax(a)?;
        emit_tick_handler(a, &mut handler)?;
        Ok(vec![handler, woken])
    })
}

/// Zeroes the tick count at [`TICKS`], programs the PICs to deliver IRQ 0 as
/// [`TIMER_VECTOR`] (the master's interrupt mask `master_mask`, the slave's all masked)
/// and the PIT to raise it every `reload` input clocks (0: 2^16).
fn emit_timer_setup(a: &mut CodeAssembler, reload: u16, master_mask: u8) -> Result<(), IcedError> {
    a.mov(dword_ptr(TICKS), 0)?;
    for (cmd, vectors, icw3, mask) in [
        (PIC_MASTER_CMD, TIMER_VECTOR, ICW3_MASTER, master_mask),
        (PIC_SLAVE_CMD, SLAVE_VECTORS, ICW3_SLAVE, MASK_ALL),
    ] {
        outb(a, cmd, ICW1)?;
        for data in [vectors, icw3, ICW4_8086, mask] {
            outb(a, cmd + 1, data)?;
        }
    }
    let [low, high] = reload.to_le_bytes();
    outb(a, PIT_CONTROL, PIT_CH0_RATE)?;
    outb(a, PIT_CH0, low)?;
    outb(a, PIT_CH0, high)
}

/// Emits the timer's interrupt handler at `handler`: counts the tick at [`TICKS`] and
/// sends the PIC its EOI.
fn emit_tick_handler(a: &mut CodeAssembler, handler: &mut CodeLabel) -> Result<(), IcedError> {
    a.set_label(handler)?;
    a.inc(dword_ptr(TICKS))?;
    a.push(eax)?;
    outb(a, PIC_MASTER_CMD, devices::pic::OCW2_EOI)?;
    a.pop(eax)?;
    // IRET's work without IRET, which KVM's instruction emulator lacks in protected
    // mode (and it emulates all ring-0 code on hosts like PVM): restore EFLAGS from
    // the frame, then return and drop CS and EFLAGS. A tick that comes between the
    // two nests harmlessly below the frame.
    a.push(dword_ptr(esp + 8))?;
    a.popfd()?;
    a.ret_1(8)
}

/// Writes a GDT with the segments Multiboot leaves loaded (which interrupt delivery and
/// IRET reload CS from) and an IDT whose entry `vector` is an interrupt gate to
/// `handler`, and points GDTR and IDTR at them, as a loader could: the guest need not
/// run LGDT and LIDT.
pub fn install_descriptor_tables(
    ram: &mut GuestRam,
    state: &mut CpuState,
    vector: u8,
    handler: u64,
) {
    let mut put = |at: u64, descriptor: u64| {
        let at = at as usize;
        ram.as_mut_slice()[at..at + 8].copy_from_slice(&descriptor.to_le_bytes());
    };
    let gdt = [0, FLAT_CODE, FLAT_DATA];
    for (i, &descriptor) in gdt.iter().enumerate() {
        put(GDT_AT + 8 * i as u64, descriptor);
    }
    let gate = (handler & 0xFFFF)
        | CODE_SELECTOR << 16
        | INTERRUPT_GATE << 40
        | (handler & 0xFFFF_0000) << 32;
    put(IDT_AT + 8 * u64::from(vector), gate);
    state.gdtr = DescriptorTable {
        base: GDT_AT,
        limit: (8 * gdt.len() - 1) as u16,
    };
    state.idtr = DescriptorTable {
        base: IDT_AT,
        limit: 8 * (u16::from(vector) + 1) - 1,
    };
}

/// Where [`registers`] stores IA32_SYSENTER_ESP's low dword and DR1.
pub const REGISTERS_DUMP: u64 = 0x0B00;
/// Where [`registers`] stores its FXSAVE image (16-byte aligned, as FXSAVE wants).
pub const FXSAVE_AT: u64 = 0x0C00;
/// What [`registers`] loads into MXCSR and IA32_SYSENTER_EIP before it halts.
pub const NEW_MXCSR: u32 = 0x1F80 | 0x8000; // flush-to-zero set
pub const NEW_SYSENTER_EIP: u32 = 0x0010_4000;
/// IA32_SYSENTER_ESP and IA32_SYSENTER_EIP.
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;

/// Stores registers that travel outside `kvm_regs`/`kvm_sregs` (an MSR and a debug
/// register at [`REGISTERS_DUMP`], the x87/SSE state with FXSAVE at [`FXSAVE_AT`]), then
/// loads MXCSR (FXRSTOR of the image with [`NEW_MXCSR`]) and an MSR, and halts: what
/// the guest sees of `set_state`, and `state` of what it did. Needs CR4.OSFXSR.
/// (FXSAVE rather than STMXCSR and MOVD: KVM's instruction emulator, which runs ring 0
/// on hosts like PVM, has the former but not the latter.)
pub fn registers() -> Guest {
    assemble(|a| {
        a.mov(ecx, MSR_SYSENTER_ESP)?;
        a.rdmsr()?;
        a.mov(dword_ptr(REGISTERS_DUMP), eax)?;
        a.mov(eax, dr1)?;
        a.mov(dword_ptr(REGISTERS_DUMP + 4), eax)?;
        a.fxsave(ptr(FXSAVE_AT))?;
        // A second image, the first kept for the test, to load the new MXCSR from.
        let scratch = FXSAVE_AT + fxsave::SIZE as u64;
        a.fxsave(ptr(scratch))?;
        a.mov(dword_ptr(scratch + fxsave::MXCSR as u64), NEW_MXCSR)?;
        a.fxrstor(ptr(scratch))?;
        a.mov(ecx, MSR_SYSENTER_EIP)?;
        a.mov(eax, NEW_SYSENTER_EIP)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.hlt()?;
        Ok(vec![])
    })
}

// trap.c - the C side of trap32.S (the handler hook, IDT set-up), and the
// 32-bit code that fills a long-mode IDT for long64.S.
#include "cpu.h"
#include "popek.h"

void (*trap32_handler)(struct trap_frame *f) = trap32_unexpected;

void trap32_unexpected(struct trap_frame *f)
{
	serial_puts("FAIL unexpected-trap: vector ");
	print_hex32(f->vector);
	serial_puts(" error ");
	print_hex32(f->error);
	serial_puts(" cs ");
	print_hex32(f->cs & SEL_MASK);
	serial_puts(" eip ");
	print_hex32(f->eip);
	if (f->vector == VEC_PF) {
		serial_puts(" cr2 ");
		print_hex32(read_cr2());
	}
	serial_putc('\n');
	popek_exit(1);
}

volatile struct trap_record trap32_last = { TRAP_NONE, 0 };

void trap32_record(struct trap_frame *f)
{
	trap32_last.vector = f->vector;
	trap32_last.eip = f->eip;
	f->eip = f->edi;
}

void trap32_install(struct gate32 *idt)
{
	// Interrupt gates clear IF, so a handler is never interrupted by an
	// IRQ before it has looked at the frame.
	for (unsigned v = 0; v < IDT_VECTORS; v++)
		idt32_set(idt, v, TRAP32_STUB(v), SEL_KCODE32, GATE_INT,
			  DPL_KERNEL);
	idt32_load(idt);
}

void trap64_fill(struct gate64 *idt)
{
	for (unsigned v = 0; v < IDT_VECTORS; v++)
		idt64_set(idt, v, TRAP64_STUB(v), SEL_KCODE64, GATE_INT,
			  DPL_KERNEL, 0);
}

// io.c - COM1 output and the debug-exit port, the I/O every ROM needs.
// The host-check harness swaps this file for one that uses Linux syscalls.
#include "popek.h"
#include "x86.h"

void (*serial_putc_hook)(char c);
void (*popek_exit_hook)(int status);

void serial_putc(char c)
{
	if (serial_putc_hook) {
		serial_putc_hook(c);
		return;
	}
	// A real 16550 drops bytes written while the THR is still busy.
	while (!(inb(UART_LSR) & UART_LSR_THRE))
		;
	outb(UART_THR, (uint8_t)c);
}

void popek_exit(int status)
{
	if (popek_exit_hook)
		popek_exit_hook(status);
	// The device is 4 bytes wide, so one outl carries the whole status.
	outl(DEBUG_EXIT_PORT, (uint32_t)status);
	// Without a debug-exit device the write is ignored: park the CPU.
	for (;;)
		__asm__ volatile("cli; hlt");
}

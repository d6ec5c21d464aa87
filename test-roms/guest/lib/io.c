// io.c - the only library file that touches I/O ports: COM1 and debug-exit.
// The host-check harness swaps this file for one that uses Linux syscalls.
#include "popek.h"

#define COM1_BASE 0x3F8			// I/O base of the first PC serial port
#define UART_THR (COM1_BASE + 0)	// 16550 transmit holding register
#define UART_LSR (COM1_BASE + 5)	// 16550 line status register
#define UART_LSR_THRE 0x20		// LSR bit: THR empty, ready for a byte
#define DEBUG_EXIT_PORT 0xF4		// isa-debug-exit device (iobase=0xf4)

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

void serial_putc(char c)
{
	// A real 16550 drops bytes written while the THR is still busy.
	while (!(inb(UART_LSR) & UART_LSR_THRE))
		;
	outb(UART_THR, (uint8_t)c);
}

void popek_exit(int status)
{
	// The device is 4 bytes wide, so one outl carries the whole status.
	outl(DEBUG_EXIT_PORT, (uint32_t)status);
	// Without a debug-exit device the write is ignored: park the CPU.
	for (;;)
		__asm__ volatile("cli; hlt");
}

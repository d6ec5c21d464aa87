// print.c - strings and numbers over serial_putc (machine-independent).
#include "popek.h"

void serial_puts(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

void print_hex32(uint32_t v)
{
	serial_puts("0x");
	for (int shift = 28; shift >= 0; shift -= 4)
		serial_putc("0123456789abcdef"[(v >> shift) & 0xF]);
}

void print_udec(uint32_t v)
{
	char buf[10];	// 4294967295 has ten digits
	int n = 0;

	do {
		buf[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		serial_putc(buf[--n]);
}

void print_dec(int32_t v)
{
	if (v < 0) {
		serial_putc('-');
		// Negate in unsigned arithmetic so INT32_MIN does not overflow.
		print_udec(0u - (uint32_t)v);
	} else {
		print_udec((uint32_t)v);
	}
}

// rom: runs iters=N (default 50000000) iterations of a two-instruction loop
//
// A speed benchmark: the guest executes 2*N instructions plus a small fixed
// overhead, so instructions per second can be compared against QEMU.
#include "popek.h"

#define DEFAULT_ITERS 50000000ul	// about a second under fast emulation

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	unsigned long n = cmdline_ulong(mbi, "iters", DEFAULT_ITERS);
	unsigned long count = n;

	(void)magic;
	// Hand-written so the count is exact whatever gcc does; the test
	// guards N = 0, which `dec` would turn into 2^32 iterations.
	__asm__ volatile("test %0, %0\n\t"
			 "jz 2f\n"
			 "1:\tdec %0\n\t"
			 "jnz 1b\n"
			 "2:"
			 : "+c"(count)
			 :
			 : "cc");
	serial_puts("loop: done ");
	print_udec(n);
	serial_putc('\n');
	return 0;
}

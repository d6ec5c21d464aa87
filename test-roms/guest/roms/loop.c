// rom: runs iters=N (default 50000000) iterations of a two-instruction loop (paging=1: with paging on)
//
// A speed benchmark: the guest executes 2*N instructions plus a small fixed
// overhead, so instructions per second can be compared against QEMU. With
// paging=1 on the command line the loop runs with 32-bit paging enabled
// (identity-mapped), to show what address translation costs an emulator.
#include "popek.h"
#include "cpu.h"

#define DEFAULT_ITERS 50000000ul	// about a second under fast emulation

static uint32_t page_dir[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));
static uint32_t page_table[PT32_ENTRIES] __attribute__((aligned(PAGE_SIZE)));

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	unsigned long n = cmdline_ulong(mbi, "iters", DEFAULT_ITERS);
	unsigned long count = n;

	(void)magic;
	if (cmdline_ulong(mbi, "paging", 0)) {
		// The first 4 MiB hold the kernel, its stack and the Multiboot
		// information; mapping them one to one changes no address.
		paging32_identity(page_dir, page_table, PTE_P | PTE_RW);
		paging32_enable(page_dir);
		serial_puts("loop: paging on\n");
	}
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

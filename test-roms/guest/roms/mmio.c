// rom: stores to count=N (default 4096) distinct MMIO addresses where no device answers, then exits 0
//
// A guest that sweeps the physical address space past RAM, as a buggy
// driver or a hostile guest may: every store is an MMIO exit to an
// address nothing decodes, which a PC ignores. Whatever the guest
// touches, the VMM's counters must stay bounded, and `--stats` short.
#include "popek.h"

// Above the largest RAM popek-pc offers (3 GiB) and below the BIOS and
// the PC's fixed devices at the top of the 4 GiB space.
#define SWEEP_BASE 0xC0000000ul
#define SWEEP_END 0xFE000000ul
#define STRIDE 4

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	unsigned long n = cmdline_ulong(mbi, "count", 4096);
	unsigned long most = (SWEEP_END - SWEEP_BASE) / STRIDE;

	(void)magic;
	if (n > most)
		n = most;
	for (unsigned long i = 0; i < n; i++)
		*(volatile uint32_t *)(SWEEP_BASE + i * STRIDE) = i;
	serial_puts("mmio: ");
	print_udec(n);
	serial_puts(" stores past RAM\n");
	return 0;
}

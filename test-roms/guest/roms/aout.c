// rom: boots through the Multiboot a.out kludge, prints a line and exits 0
// rom-boot: aout-kludge
//
// build.rs reads the rom-boot line above and builds boot.S with
// POPEK_AOUT_KLUDGE, so the header carries load addresses and the loader
// must copy the file as a flat image instead of following the ELF headers.
#include "popek.h"

#define DATA_CANARY 0x600DF00Du	// any value that fresh (zeroed) RAM lacks

// Sits in .data, the last bytes below load_end_addr: if the loader copied
// too little of the file, this reads as zero instead.
static volatile uint32_t canary = DATA_CANARY;

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)mbi;
	if (magic != MULTIBOOT_BOOTLOADER_MAGIC || canary != DATA_CANARY) {
		serial_puts("aout: bad boot state\n");
		return 1;
	}
	serial_puts("aout: booted via the a.out kludge\n");
	return 0;
}

// rom: prints a greeting over COM1 and exits 0
//
// The smallest useful guest: if this prints, the loader, the UART and the
// debug-exit device all work.
#include "popek.h"

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	(void)mbi;
	serial_puts("Hello from a Popek guest!\n");
	// Both the loader's handshake and the library's formatting are
	// machine-independent, so this line is the same under every VMM.
	serial_puts("hello: multiboot magic ");
	print_hex32(magic);
	serial_puts(", 6 * -7 = ");
	print_dec(6 * -7);
	serial_putc('\n');
	return magic == MULTIBOOT_BOOTLOADER_MAGIC ? 0 : 1;
}

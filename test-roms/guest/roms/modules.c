// rom: Multiboot boot modules: the module list, and nothing overlapping the kernel
//
// Prints what the loader's Multiboot information says about the boot
// modules (QEMU's -initrd, Popek's --module): how many, each one's string,
// size and first bytes.  Checks that every module starts on a page (the
// header asks for it), and that neither the modules nor the information
// structure and its strings overlap the kernel's image.
#include "popek.h"

#define MBI_FLAG_MODS (1u << 3)
#define PAGE_MASK 0xFFFu
#define SHOWN_BYTES 8
#define MAX_STRING 200

// The module list entries the MBI's mods_addr points at.
struct mb_module {
	uint32_t start, end, string, reserved;
};

// The MBI fields past struct multiboot_info that this ROM reads.
struct mbi_mods {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
	uint32_t mods_count, mods_addr;
};

extern char __image_start[], __bss_end[];

static int in_kernel(uint32_t start, uint32_t end)
{
	return start < (uint32_t)(uintptr_t)__bss_end && end > (uint32_t)(uintptr_t)__image_start;
}

static uint32_t string_end(uint32_t s)
{
	const char *p = (const char *)(uintptr_t)s;
	uint32_t n = 0;

	while (n < MAX_STRING && p[n])
		n++;
	return s + n + 1;
}

int main(uint32_t magic, const struct multiboot_info *info)
{
	const struct mbi_mods *mbi = (const struct mbi_mods *)info;
	uint32_t mbi_at = (uint32_t)(uintptr_t)info;

	check_eq("multiboot-magic", magic, MULTIBOOT_BOOTLOADER_MAGIC);
	check_true("mbi-clear-of-the-kernel",
		   !in_kernel(mbi_at, mbi_at + sizeof *mbi) &&
		   !in_kernel(mbi->cmdline, string_end(mbi->cmdline)),
		   "the MBI or the command line lies in the kernel");
	uint32_t count = (mbi->flags & MBI_FLAG_MODS) ? mbi->mods_count : 0;
	serial_puts("modules: ");
	print_udec(count);
	serial_puts("\n");
	const struct mb_module *mods = (const struct mb_module *)(uintptr_t)mbi->mods_addr;
	for (uint32_t i = 0; i < count; i++) {
		const struct mb_module *m = &mods[i];
		const uint8_t *bytes = (const uint8_t *)(uintptr_t)m->start;

		serial_puts("module ");
		print_udec(i);
		serial_puts(": \"");
		serial_puts((const char *)(uintptr_t)m->string);
		serial_puts("\" ");
		print_udec(m->end - m->start);
		serial_puts(" bytes:");
		for (uint32_t b = 0; b < SHOWN_BYTES && m->start + b < m->end; b++) {
			serial_puts(" ");
			print_hex32(bytes[b]);
		}
		serial_puts("\n");
		check_true("module-on-a-page", (m->start & PAGE_MASK) == 0, "not page-aligned");
		check_true("module-clear-of-the-kernel",
			   !in_kernel(m->start, m->end) && !in_kernel(m->string, string_end(m->string)) &&
			   !in_kernel((uint32_t)(uintptr_t)m, (uint32_t)(uintptr_t)(m + 1)),
			   "the module, its string or its entry lies in the kernel");
	}
	return check_failures ? 1 : 0;
}

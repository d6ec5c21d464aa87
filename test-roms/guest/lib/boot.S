# boot.S - Multiboot v1 header and entry point shared by every Popek test ROM.
#
# A Multiboot loader enters _start in 32-bit protected mode with flat
# segments, paging and interrupts off, EAX = 0x2BADB002 and EBX = the
# physical address of the Multiboot information structure.  ESP is undefined.
#
# Built with -DPOPEK_AOUT_KLUDGE (for ROMs that ask for it in their source),
# the header also carries the load addresses, so the loader ignores the ELF
# program headers and copies the file as a flat image instead.

#define MB_HEADER_MAGIC 0x1BADB002	/* Multiboot v1 header magic */
#define MB_PAGE_ALIGN (1 << 0)		/* flag: page-align boot modules */
#define MB_MEMORY_INFO (1 << 1)		/* flag: fill in mem_lower/mem_upper */
#define MB_AOUT_KLUDGE (1 << 16)	/* flag: header has load addresses */
#define STACK_SIZE 16384		/* bytes of stack for main */

#ifdef POPEK_AOUT_KLUDGE
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO | MB_AOUT_KLUDGE)
#else
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO)
#endif

	# link.ld puts this section first; loaders scan the first 8 KiB of
	# the file for the magic on a 4-byte boundary.
	.section .multiboot, "a"
	.align 4
multiboot_header:
	.long MB_HEADER_MAGIC
	.long MB_FLAGS
	.long -(MB_HEADER_MAGIC + MB_FLAGS)	# the three words sum to 0
#ifdef POPEK_AOUT_KLUDGE
	.long multiboot_header	# header_addr: where this header is loaded
	.long __image_start	# load_addr: file bytes load from here...
	.long __data_end	# load_end_addr: ...up to here
	.long __bss_end		# bss_end_addr: zeroed up to here
	.long _start		# entry_addr
#endif

	.text
	.globl _start
_start:
	# Leave room for main's two arguments so ESP is 16-byte aligned at
	# the call, as the i386 System V ABI expects.
	mov $stack_top - 8, %esp
	# The ABI also requires DF clear on function entry.
	cld
	push %ebx		# mbi
	push %eax		# magic
	call main
	push %eax
	call popek_exit

	.bss
	.align 16
stack:
	.skip STACK_SIZE
stack_top:

// host.c - runs the arith ROM as a 32-bit Linux program on the host CPU.
//
// Stands in for lib/io.c and lib/boot.S: output goes to stdout through the
// write system call and popek_exit becomes the exit system call.  This is
// how arith's expected values were checked against real hardware.
#include "popek.h"

#define SYS_EXIT 1		// i386 Linux system call numbers (int 0x80)
#define SYS_WRITE 4
#define STDOUT 1		// file descriptor

void serial_putc(char c)
{
	int ret;

	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "0"(SYS_WRITE), "b"(STDOUT), "c"(&c), "d"(1)
			 : "memory");
	(void)ret;
}

void popek_exit(int status)
{
	__asm__ volatile("int $0x80" : : "a"(SYS_EXIT), "b"(status));
	__builtin_unreachable();
}

void host_start(void) __attribute__((noreturn, used));
void host_start(void)
{
	// There is no Multiboot loader here, so no magic and no command line.
	popek_exit(main(0, 0));
}

// Linux enters a static executable here with a 16-byte aligned stack.
__asm__(".globl _start\n_start:\n\tcall host_start\n");

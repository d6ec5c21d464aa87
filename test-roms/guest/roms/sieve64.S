# rom: rounds=N (default 1) sieves of Eratosthenes over 64 KiB in 64-bit mode, then prints the primes found (a 64-bit compute benchmark)
#
# The `sieve` ROM's work in 64-bit code: byte stores and loads with a
# stride, a tight inner loop and a call per round, on 64-bit registers
# (the round counter and the result in R12 and R8, as a compiler would
# keep values across a call).  The 32-bit part reads the command line and
# enters long mode as `longmode` does (lib/desc.c's GDT, lib/paging.c's
# identity map); the 64-bit part is assembly, since gcc -m32 cannot
# compile C to 64-bit code.
#include "cpu.h"

#define LIMIT 65536
#define PRIMES 6542		/* below LIMIT */
#define IDENTITY_SPAN 0x400000	/* map the low 4 MiB */
#define STACK_SIZE 4096

# ---- 32-bit protected mode: the command line, then long mode -------------
	.code32
	.section .text.sieve64_32, "ax"
	.globl main
main:
	mov 8(%esp), %eax	# the Multiboot information
	push $1			# rounds by default
	push $str_rounds
	push %eax
	call cmdline_ulong
	add $12, %esp
	mov %eax, rounds

	push $TSS64_SIZE
	push $tss64
	call gdt_init
	add $8, %esp
	push $0			# leaf flags (uint64_t): high half
	push $(PTE_P | PTE_RW)
	push $IDENTITY_SPAN
	push $page_tables
	call paging64_identity
	add $16, %esp

	push $0			# no CR0 bits beyond PG
	push $page_tables
	call long_mode_enable
	add $8, %esp
	ljmp $SEL_KCODE64, $long_entry

# ---- 64-bit mode ----------------------------------------------------------
	.code64
	.section .text.sieve64, "ax"
long_entry:
	mov $stack_top, %esp	# a 32-bit move zeroes the upper half
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov rounds(%rip), %r12d
	xor %r8d, %r8d		# primes found by the last round
	test %r12, %r12
	jz 2f
1:	call sieve
	mov %rax, %r8
	dec %r12
	jnz 1b
2:	lea str_head(%rip), %rdi
	call puts64
	mov %r8, %rdi
	call puthex64
	lea str_tail(%rip), %rdi
	call puts64
	# Exit status 0 if the sieve found every prime (or ran no round).
	xor %edi, %edi
	cmp $PRIMES, %r8
	je 3f
	cmpl $0, rounds(%rip)
	je 3f
	mov $1, %edi
3:	call exit64

# sieve: RAX = the primes below LIMIT, marking the composites in `composite`.
sieve:
	mov $composite, %esi
	xor %eax, %eax
1:	movb $0, (%rsi,%rax)
	inc %rax
	cmp $LIMIT, %rax
	jb 1b
	xor %eax, %eax		# primes so far
	mov $2, %edx		# i
2:	cmpb $0, (%rsi,%rdx)
	jne 4f
	inc %rax
	lea (%rdx,%rdx), %rcx	# j = 2i, 3i, ...
3:	cmp $LIMIT, %rcx
	jae 4f
	movb $1, (%rsi,%rcx)
	add %rdx, %rcx
	jmp 3b
4:	inc %rdx
	cmp $LIMIT, %rdx
	jb 2b
	ret

# ---- Data -------------------------------------------------------------------
	.section .rodata.sieve64, "a"
str_rounds: .asciz "rounds"
str_head: .asciz "sieve64: "
str_tail: .asciz " primes below 65536\n"

	.section .bss.sieve64, "aw", @nobits
	.balign PAGE_SIZE
page_tables: .skip PAGING64_SIZE	# struct paging64
tss64: .skip TSS64_SIZE
rounds: .skip 4
	.balign 16
	.skip STACK_SIZE
stack_top:
composite: .skip LIMIT
